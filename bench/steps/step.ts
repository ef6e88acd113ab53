// What the run's steps share: one step is a label on the progress line and what it
// runs; every step reads the options and writes its figures into the run's results.
import type { Netns } from '../../harness/netns';
import type { Measurement } from '../case';
import type { Options } from '../lib/options';
import {
  finishRow, type Backend, type Direction, type FrameKind, type GuestResult, type IdleResult, type LatencyResult, type MemoryResult,
  type MigrationResult, type Row, type SwitchLossResult,
} from '../lib/report';

export interface Step {
  label: string;
  run(): Promise<void>;
}

/** Everything a run measured so far: what the report is made of. */
export class RunResults {
  readonly rows: Row[] = [];
  readonly latency: LatencyResult = { errors: [] };
  readonly idle: IdleResult = { seconds: 2 };
  readonly memory: MemoryResult = { queuePairs: 8, ringSize: 1024 };
  readonly guest: GuestResult = { errors: [] };
  readonly migration: MigrationResult = { accel: 'tcg', errors: [] };
  readonly switchLoss: SwitchLossResult = { errors: [] };
  /** The row the last record() made, for the progress output; taken by takeLastRecorded(). */
  #lastRecorded: Row | undefined;

  /** Measures one window of a case into its row; a repeated case keeps its best window, and every window's rate for the record. */
  async record(b: Backend, dir: Direction, frame: FrameKind, queues: number, fn: () => Promise<Measurement>): Promise<void> {
    const rows = this.rows;
    const row: Row = { backend: b, dir, frame, queues };
    try {
      Object.assign(row, await fn());
      finishRow(row);
    } catch (error) {
      row.error = (error as Error).message;
    }
    this.#lastRecorded = row;
    const index = rows.findIndex((r) => r.backend === b && r.dir === dir && r.frame === frame && r.queues === queues);
    const earlier = index >= 0 ? rows[index]! : undefined;
    const samples = [...((earlier?.detail?.mppsSamples as number[] | undefined) ?? (earlier?.mpps !== undefined ? [earlier.mpps] : [])), ...(row.mpps !== undefined ? [row.mpps] : [])];
    const best = !earlier || (earlier.error !== undefined && row.error === undefined) || (row.mpps ?? -1) > (earlier.mpps ?? -1) ? row : earlier;
    if (best.error === undefined) best.detail = { ...best.detail, mppsSamples: samples };
    if (index >= 0) rows[index] = best;
    else rows.push(best);
  }

  takeLastRecorded(): Row | undefined {
    const last = this.#lastRecorded;
    this.#lastRecorded = undefined;
    return last;
  }
}

/** What every step planner is given. */
export interface StepContext {
  o: Options;
  /** Whether --only lets a step with this label run. */
  want(label: string): boolean;
  /** How long one throughput case may take, warm-up and start-up included. */
  caseTimeout: number;
  /** Why the DPDK cases cannot run (dpdk-testpmd missing), or undefined. */
  dpdkMissing: string | undefined;
  /** The namespace the raw loops' and the embedded path's children run in, made on first use. */
  casesNetns(): Netns;
  results: RunResults;
}
