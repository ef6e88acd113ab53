// The README's "Performance" block of a run (node dist/bench/readme.js).
import type { Report } from './results';
import { renderTable } from './table';
import { measuredText, targetStatus } from './targets';

/**
 * The README's "Performance" block for a run: the machine (with what a system call
 * costs there, which the ratios against the raw loops follow), the chart, the table
 * as the terminal showed it, and the issue's targets as a Markdown table.
 */
export function renderMarkdown(report: Report): string {
  const m = report.machine;
  const date = report.startedAt.replace('T', ' ').replace(/:\d\d\.\d+Z$/, ' UTC');
  const known = (x: unknown): x is string | number => (typeof x === 'string' && x !== '') || typeof x === 'number';
  const machine = [
    `${String(m.cpus ?? '?')} x ${String(m.cpuModel ?? 'CPU')}`,
    known(m.kernel) ? `Linux ${m.kernel}` : undefined,
    known(m.memoryGb) ? `${m.memoryGb} GB` : undefined,
    known(m.dpdk) ? `DPDK ${m.dpdk}` : undefined,
    known(m.qemu) ? String(m.qemu) : undefined,
  ].filter((x) => x !== undefined).join(', ');
  const syscall = known(m.syscallNs)
    ? `; a system call costs ${m.syscallNs} ns here${known(m.meltdown) ? ` (${m.meltdown})` : ''}`
    : '';
  const c = report.config;
  const out: string[] = [];
  out.push(`Taken ${date} on ${machine}${syscall}; ${report.elapsedSeconds} s, best of ${String(c.repeat ?? '?')} windows of ${String(c.seconds ?? '?')} s per case.`);
  out.push('', '![bench chart](bench/results/latest.svg)', '', '```');
  const text = renderTable({ ...report, targets: [], notes: [] }).split('\n');
  // The empty targets section's header line closes the rendering: the targets follow as a table.
  while (text.length > 0 && !text[text.length - 1]!.startsWith('targets (')) text.pop();
  text.pop();
  while (text.length > 0 && text[text.length - 1]!.trim() === '') text.pop();
  out.push(...text, '```', '');
  const counted = report.targets.filter((t) => !t.informational);
  const met = counted.filter((t) => t.met === true).length;
  out.push(`The issue's targets, as ratios between rows of this run: ${met} of ${counted.length} met.`, '');
  out.push('| target | want | measured | |', '|---|---|---|---|');
  for (const t of counted) out.push(`| ${t.name} | ${t.want} | ${measuredText(t)} | ${targetStatus(t)} |`);
  return out.join('\n');
}

