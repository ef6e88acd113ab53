import type { RttSummary } from './results';

/** p50/p99/... of round trips given in microseconds (the same nearest rank as the native loops use). */
export function summarizeRtts(rttsUs: readonly number[], lost: number): RttSummary {
  const sorted = [...rttsUs].sort((a, b) => a - b);
  const pct = (p: number): number => (sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor(p * (sorted.length - 1) + 0.5))]!);
  return { count: sorted.length, lost, minUs: pct(0), p50Us: pct(0.5), p90Us: pct(0.9), p99Us: pct(0.99), maxUs: pct(1) };
}
