// Rows and the cases they belong to: which backends there are, a row's derived
// rates, finding a case's row, and the cases a set of rows covers in reading order.
import type { Backend, Direction, FrameKind, Row } from './results';

/** The main table's columns, the chart's bars and every target: split rings only. */
export const BACKENDS: readonly Backend[] = ['raw', 'embedded', 'testpmd', 'daemon'];
/** The backends that have a packed-ring counterpart, and it. */
export const PACKED_PAIRS: readonly { split: Backend; packed: Backend }[] = [
  { split: 'embedded', packed: 'embedded-packed' },
  { split: 'daemon', packed: 'daemon-packed' },
];

/** The virtqueue layout a backend's rows ran, where the backend drives virtqueues at all (raw and testpmd's tap side do not). */
export function ringOf(b: Backend): 'split' | 'packed' | undefined {
  if (b === 'embedded-packed' || b === 'daemon-packed') return 'packed';
  return b === 'embedded' || b === 'daemon' || b === 'embedded-steering' ? 'split' : undefined;
}

/** The backend whose path a row ran, whatever its ring layout or steering: embedded-packed -> embedded. */
export function baseBackend(b: Backend): Backend {
  return b === 'embedded-packed' || b === 'embedded-steering' ? 'embedded' : b === 'daemon-packed' ? 'daemon' : b;
}

export const DIRECTIONS: readonly Direction[] = ['g2h', 'h2g'];

/** Fills the derived fields; a row whose counts cannot give a rate gets an error instead, so every row has either mpps/gbps or error. */
export function finishRow(row: Row): Row {
  const { packets, bytes, seconds, cpuSeconds } = row;
  if (packets === undefined || !Number.isFinite(packets) || seconds === undefined || !Number.isFinite(seconds) || seconds <= 0) {
    row.error ??= `no usable measurement (packets ${String(packets)}, seconds ${String(seconds)})`;
    return row;
  }
  row.mpps = packets / seconds / 1e6;
  row.gbps = bytes !== undefined && Number.isFinite(bytes) ? (bytes * 8) / seconds / 1e9 : 0;
  if (cpuSeconds !== undefined && Number.isFinite(cpuSeconds)) {
    row.cpuCores = cpuSeconds / seconds;
    // Zero packets: the per-packet cost is undefined, not infinite.
    if (packets > 0) row.cpuSecondsPerMpkt = cpuSeconds / (packets / 1e6);
  }
  return row;
}

/** The row of a case, errored or not; the last one if a case was recorded twice. */
export function findRow(rows: readonly Row[], backend: Backend, dir: Direction, frame: FrameKind, queues: number): Row | undefined {
  let found: Row | undefined;
  for (const r of rows) if (r.backend === backend && r.dir === dir && r.frame === frame && r.queues === queues) found = r;
  return found;
}

export function usable(r: Row | undefined): r is Row & { mpps: number; gbps: number } {
  return r !== undefined && r.error === undefined && r.mpps !== undefined && Number.isFinite(r.mpps) && r.gbps !== undefined && Number.isFinite(r.gbps);
}

export function ratio(a: number | undefined, b: number | undefined): number | undefined {
  return a !== undefined && b !== undefined && Number.isFinite(a) && Number.isFinite(b) && b > 0 ? a / b : undefined;
}

function frameOrder(f: FrameKind): number {
  return f === 'gso' ? Number.MAX_SAFE_INTEGER : f;
}

/** A case: what a row measured, whichever backend ran it. */
export interface CaseKey {
  dir: Direction;
  frame: FrameKind;
  queues: number;
}

/** The cases present in the rows, in reading order: direction, queue pairs, frame size. */
export function casesOf(rows: readonly Row[]): CaseKey[] {
  const cases: CaseKey[] = [];
  for (const r of rows) {
    if (!cases.some((c) => c.dir === r.dir && c.frame === r.frame && c.queues === r.queues)) cases.push({ dir: r.dir, frame: r.frame, queues: r.queues });
  }
  return cases.sort((a, b) => DIRECTIONS.indexOf(a.dir) - DIRECTIONS.indexOf(b.dir) || a.queues - b.queues || frameOrder(a.frame) - frameOrder(b.frame));
}

/** The two rates a row has. */
export type Metric = 'mpps' | 'gbps';
