// The terminal report of a run, as npm run bench prints it: the throughput tables,
// then one section per other measurement, the targets and the notes.
import type { Report } from './results';
import {
  guestSection, idleSection, latencySection, memorySection, migrationSection, profileSection, switchLossSection, targetsSection,
} from './result-sections';
import { WIDTH, wrap } from './text-format';
import { throughputTable } from './throughput-table';

export function renderTable(report: Report): string {
  const out: string[] = [];
  throughputTable(report.rows, out);
  latencySection(report.latency, out);
  idleSection(report.idle, out);
  memorySection(report.memory, out);
  guestSection(report.guest, out);
  migrationSection(report.migration, out);
  switchLossSection(report.switchLoss, out);
  profileSection(report.rows, out);
  targetsSection(report.targets, out);
  if (report.notes.length > 0) {
    out.push('', 'notes:');
    for (const n of report.notes) out.push(...wrap(n, WIDTH, '- ', '  '));
  }
  return out.join('\n');
}
