// The issue's targets, as ratios between rows of the same run (and the idle,
// latency and memory bounds): how each is computed, and how its figure reads.
import { backendLabel, caseLabel, firstLine, rowLabel } from './labels';
import type { Backend, Direction, FrameKind, IdleResult, LatencyResult, MemoryResult, Row, Target } from './results';
import { findRow, ratio, usable, type Metric } from './rows';
import { mb, times } from './text-format';

interface RowRef {
  backend: Backend;
  dir: Direction;
  frame: FrameKind;
  queues: number;
}

/** Why a row cannot be used ('not run', 'failed: ...'), or undefined when it can. */
function unusableReason(rows: readonly Row[], ref: RowRef): string | undefined {
  const r = findRow(rows, ref.backend, ref.dir, ref.frame, ref.queues);
  if (!r) return 'not run';
  if (r.error !== undefined) return `failed: ${firstLine(r.error)}`;
  if (!usable(r)) return 'has no rate';
  return undefined;
}

function metricText(value: number, metric: Metric): string {
  return metric === 'mpps' ? `${value.toFixed(3)} Mpps` : `${value.toFixed(2)} Gbit/s`;
}

function ratioTarget(rows: readonly Row[], name: string, threshold: number, num: RowRef, den: RowRef, metric: Metric, informational = false): Target {
  const want = `>= ${Number.isInteger(threshold) ? threshold.toFixed(1) : String(threshold)}x`;
  const base: Target = { name, want, threshold, unit: 'x', detail: '', ...(informational ? { informational } : {}) };
  // The name already says which case: the reference's case is repeated only where it differs (GSO against 1500 B).
  const sameCase = num.dir === den.dir && num.frame === den.frame && num.queues === den.queues;
  const label = (r: RowRef): string => (sameCase ? backendLabel(r.backend, r.dir) : rowLabel(r));
  const problems: { who: string[]; why: string }[] = [];
  for (const ref of [num, den]) {
    const why = unusableReason(rows, ref);
    if (why === undefined) continue;
    // Both rows failing the same way (DPDK missing) is said once.
    const same = problems.find((p) => p.why === why);
    if (same) same.who.push(label(ref));
    else problems.push({ who: [label(ref)], why });
  }
  if (problems.length > 0) return { ...base, detail: problems.map((p) => `${p.who.join(' and ')}: ${p.why}`).join('; ') };
  const a = findRow(rows, num.backend, num.dir, num.frame, num.queues)![metric]!;
  const b = findRow(rows, den.backend, den.dir, den.frame, den.queues)![metric]!;
  const figures = `${label(num)} ${metricText(a, metric)} / ${label(den)} ${metricText(b, metric)}`;
  const measured = ratio(a, b);
  // A reference that moved nothing gives no ratio: the comparison is not meaningful.
  if (measured === undefined) return { ...base, detail: `${figures}: the reference moved nothing, no ratio` };
  return { ...base, measured, met: measured >= threshold, detail: figures };
}

/** The issue's targets, computed from rows of this run only. 1 queue pair is the headline; 2 pairs are added where both rows exist. */
export function evaluateTargets(rows: Row[], latency: LatencyResult, idle: IdleResult, memory: MemoryResult): Target[] {
  const targets: Target[] = [];
  const both = (a: RowRef, b: RowRef): boolean =>
    findRow(rows, a.backend, a.dir, a.frame, a.queues) !== undefined && findRow(rows, b.backend, b.dir, b.frame, b.queues) !== undefined;
  const pair = (name: (q: number) => string, threshold: number, num: Omit<RowRef, 'queues'>, den: Omit<RowRef, 'queues'>, metric: Metric, informational = false): void => {
    for (const queues of [1, 2]) {
      const n = { ...num, queues };
      const d = { ...den, queues };
      if (queues > 1 && !both(n, d)) continue;
      targets.push(ratioTarget(rows, name(queues), threshold, n, d, metric, informational));
    }
  };

  for (const frame of [64, 1500]) {
    const c = (q: number): string => caseLabel('g2h', frame, q);
    pair((q) => `${c(q)}: daemon vs testpmd, Mpps`, 1.25, { backend: 'daemon', dir: 'g2h', frame }, { backend: 'testpmd', dir: 'g2h', frame }, 'mpps');
    pair((q) => `${c(q)}: embedded vs raw write() loop, Mpps`, 1.0, { backend: 'embedded', dir: 'g2h', frame }, { backend: 'raw', dir: 'g2h', frame }, 'mpps');
    pair((q) => `${c(q)}: daemon vs raw write() loop, Mpps`, 1.0, { backend: 'daemon', dir: 'g2h', frame }, { backend: 'raw', dir: 'g2h', frame }, 'mpps', true);
  }
  {
    const c = (q: number): string => caseLabel('h2g', 64, q);
    pair((q) => `${c(q)}: daemon vs testpmd, Mpps`, 1.0, { backend: 'daemon', dir: 'h2g', frame: 64 }, { backend: 'testpmd', dir: 'h2g', frame: 64 }, 'mpps');
    pair((q) => `${c(q)}: embedded vs raw read() loop, Mpps`, 1.0, { backend: 'embedded', dir: 'h2g', frame: 64 }, { backend: 'raw', dir: 'h2g', frame: 64 }, 'mpps');
  }
  // testpmd's tap path carries no GSO: the issue's reference is its 1500 B rate.
  pair((q) => `${caseLabel('g2h', 'gso', q)}: embedded vs testpmd 1500 B, Gbit/s`, 3,
    { backend: 'embedded', dir: 'g2h', frame: 'gso' }, { backend: 'testpmd', dir: 'g2h', frame: 1500 }, 'gbps');

  targets.push(idleTarget(idle), latencyTarget(latency), memoryTarget(memory));
  return targets;
}

function idleTarget(idle: IdleResult): Target {
  const base: Target = { name: `no traffic: daemon CPU, connected and idle for ${idle.seconds} s`, want: '<= 1% of a core', threshold: 0.01, unit: 'core', detail: '' };
  if (idle.cpuSeconds === undefined || !Number.isFinite(idle.cpuSeconds) || !(idle.seconds > 0)) {
    return { ...base, detail: idleProblem(idle) };
  }
  const measured = idle.cpuSeconds / idle.seconds;
  // /proc/<pid>/stat counts 10 ms ticks: one stray tick over a short window is already a fraction of a percent.
  return { ...base, measured, met: measured <= base.threshold, detail: `${idle.cpuSeconds.toFixed(3)} CPU s in ${idle.seconds} s (10 ms resolution)` };
}

export function idleProblem(idle: IdleResult): string {
  if (idle.error !== undefined) return `failed: ${firstLine(idle.error)}`;
  // processCpuSeconds gives NaN for a process that is gone.
  return idle.cpuSeconds === undefined ? 'not run' : 'no CPU figure (the daemon was gone when sampled)';
}

function latencyTarget(latency: LatencyResult): Target {
  const base: Target = { name: 'round trip added over the raw loop at p50 (embedded - raw)', want: '< 20 us', threshold: 20, unit: 'us', detail: '' };
  const { raw, embedded } = latency;
  if (!raw || !embedded || !Number.isFinite(raw.p50Us) || !Number.isFinite(embedded.p50Us)) {
    const missing = [!raw ? 'raw' : '', !embedded ? 'embedded' : ''].filter(Boolean).join(' and ') || 'a p50';
    const errors = latency.errors.map(firstLine).join('; ');
    return { ...base, detail: `no ${missing} ping-pong result${errors ? `: ${errors}` : ' (not run)'}` };
  }
  const measured = embedded.p50Us - raw.p50Us;
  const lost = raw.lost + embedded.lost > 0 ? `; lost: raw ${raw.lost} of ${raw.count}, embedded ${embedded.lost} of ${embedded.count}` : '';
  return {
    ...base, measured, met: measured < base.threshold,
    detail: `p50 embedded ${embedded.p50Us.toFixed(1)} us - raw ${raw.p50Us.toFixed(1)} us (p99 ${embedded.p99Us.toFixed(1)} vs ${raw.p99Us.toFixed(1)} us)${lost}`,
  };
}

export function mappingCount(m: MemoryResult['mappings']): number | undefined {
  return m === undefined ? undefined : typeof m === 'number' ? m : m.length;
}

function memoryTarget(memory: MemoryResult): Target {
  const base: Target = {
    name: `memory: daemon RSS beyond guest memory, ${memory.queuePairs} pairs x ${memory.ringSize} entries`, want: '< 64 MB', threshold: 64, unit: 'MB', detail: '',
  };
  if (memory.netMb === undefined || !Number.isFinite(memory.netMb)) {
    return { ...base, detail: memory.error !== undefined ? `failed: ${firstLine(memory.error)}` : 'not run' };
  }
  const parts = [`RSS ${mb(memory.rssMb)} - guest memory ${mb(memory.guestMb)} = ${mb(memory.netMb)}`];
  if (memory.baselineRssMb !== undefined) parts.push(`before the frontend connected ${mb(memory.baselineRssMb)}`);
  const n = mappingCount(memory.mappings);
  // No guest mapping found means smaps did not show the frontend's memory: the figure would then include nothing to subtract.
  if (n === 0 || memory.guestMb === 0) parts.push('no guest memory mapping found in smaps');
  else if (n !== undefined) parts.push(`${n} guest mapping${n === 1 ? '' : 's'}`);
  return { ...base, measured: memory.netMb, met: memory.netMb < base.threshold, detail: parts.join('; ') };
}

export function measuredText(t: Target): string {
  if (t.measured === undefined) return '-';
  switch (t.unit) {
    case 'x':
      return times(t.measured);
    case 'us':
      return `${t.measured.toFixed(1)} us`;
    case 'MB':
      return `${t.measured.toFixed(1)} MB`;
    case 'core':
      return `${(t.measured * 100).toFixed(2)}%`;
  }
}

export function targetStatus(t: Target): string {
  if (t.met === undefined) return 'not measured';
  if (t.informational) return 'info';
  return t.met ? 'met' : 'NOT met';
}
