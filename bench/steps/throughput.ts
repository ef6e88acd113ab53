// The throughput cases: the raw tap loops and the embedded data path, each case in a
// child of its own, and testpmd and the daemon behind DPDK's virtio_user frontend
// (with the ping-pong through each of them).
import { withTimeout } from '../../harness/wait';
import type { Measurement, ThroughputSpec } from '../case';
import { runCase } from '../lib/case-runner';
import {
  frontendCase, frontendPing, startDaemonBackend, startTestpmdBackend, type BackendCtx,
} from '../lib/frontend-backends';
import { backendLabel, baseBackend, frameLabel, ringOf, type Backend, type Direction, type FrameKind } from '../lib/report';
import type { Step, StepContext } from './step';

interface ThroughputCase {
  dir: Direction;
  frame: FrameKind;
  queues: number;
}

/** Every throughput case, in the order they run: 1 pair then 2, guest->host (64 B, 1500 B, GSO) then host->guest (64 B, 1500 B). */
const THROUGHPUT_CASES: readonly ThroughputCase[] = [1, 2].flatMap((queues) => [
  ...([64, 1500, 'gso'] as FrameKind[]).map((frame) => ({ dir: 'g2h' as const, frame, queues })),
  ...[64, 1500].map((frame) => ({ dir: 'h2g' as const, frame, queues })),
]);

/**
 * A throughput step's label, what --only matches. The embedded path and the daemon end with their ring
 * layout: --only 'packed' (or 'split') picks one, and a pattern for a case ('vhost-tap daemon guest->host
 * 64 B 1q') picks both, one beside the other. The embedded path with the steering program ends with
 * ', steering program': --only 'embedded .*2q' picks it with the embedded rows it is compared with,
 * --only 'steering' alone (and the queue-count changes).
 */
function label(b: Backend, dir: Direction, frame: FrameKind, q: number): string {
  const ring = ringOf(b);
  return `${backendLabel(baseBackend(b), dir)} ${dir === 'g2h' ? 'guest->host' : 'host->guest'} ${frameLabel(frame)} ${q}q${ring ? ` ${ring}` : ''}` +
    `${b === 'embedded-steering' ? ', steering program' : ''}`;
}

/** The cases that also run over packed rings: informational, 1 pair, within the time budget. */
function packedCase(t: { frame: FrameKind; queues: number }): boolean {
  return t.queues === 1 && t.frame !== 'gso';
}

/**
 * The cases that also run with the tap steering program (issue 12): 2 pairs, where tun hashes every
 * frame without it; both directions (its saving is in the workers' writes, its own cost in the
 * host sender's transmit); 1500 B only, the issue's case: the hash reads headers, whatever the
 * frame's size, and the full run has no time for more. Informational.
 */
function steeringCase(t: { frame: FrameKind; queues: number }): boolean {
  return t.queues === 2 && t.frame === 1500;
}

/** The raw loops and the embedded path (split, packed, with the steering program), one child per window. */
export function tapLoopSteps(context: StepContext): Step[] {
  const { o, want, caseTimeout } = context;
  const record = context.results.record.bind(context.results);
  const stepsList: Step[] = [];
  const throughput = THROUGHPUT_CASES;
  // raw and embedded (split, then packed where it runs) back to back for each case, `repeat` times: the
  // same background load for the rows compared.
  for (const t of throughput) {
    const backends: readonly Backend[] = [
      'raw', 'embedded', ...(packedCase(t) ? ['embedded-packed' as const] : []), ...(steeringCase(t) ? ['embedded-steering' as const] : []),
    ];
    for (const b of Array.from({ length: o.repeat }, () => backends).flat()) {
      const l = label(b, t.dir, t.frame, t.queues);
      if (!want(l)) continue;
      stepsList.push({
        label: l,
        run: () => record(b, t.dir, t.frame, t.queues, () => {
          const kind = `${b === 'raw' ? 'raw' : 'emb'}-${t.dir === 'g2h' ? 'tx' : 'rx'}` as ThroughputSpec['kind'];
          const spec: ThroughputSpec = {
            kind, frame: t.frame, queues: t.queues, warmup: o.warmup, seconds: o.seconds, flows: 8, ...(b === 'embedded-packed' ? { ring: 'packed' as const } : {}),
            ...(b === 'embedded-steering' ? { steering: true } : {}),
          };
          return runCase<Measurement>(context.casesNetns(), spec, caseTimeout);
        }),
      });
    }
  }
  return stepsList;
}

/** testpmd and the daemon behind virtio_user: each backend started once for its cases, and the ping-pong through it. */
export function frontendSteps(context: StepContext): Step[] {
  const { o, want, caseTimeout, dpdkMissing } = context;
  const { latency } = context.results;
  const record = context.results.record.bind(context.results);
  const stepsList: Step[] = [];
  const throughput = THROUGHPUT_CASES;
  // testpmd and the daemon: one backend per queue count, one frontend per case (testpmd's tap path carries no GSO);
  // the daemon once more behind a frontend with packed rings, right after the same cases with split ones.
  const frontendBackends: { b: 'testpmd' | 'daemon' | 'daemon-packed'; queues: number }[] = [
    { b: 'testpmd', queues: 1 }, { b: 'testpmd', queues: 2 }, { b: 'daemon', queues: 1 }, { b: 'daemon-packed', queues: 1 }, { b: 'daemon', queues: 2 },
  ];
  for (const { b, queues } of frontendBackends) {
    let ctx: BackendCtx | undefined;
    const cases = throughput
      .filter((t) => t.queues === queues && t.frame !== 'gso' && (b !== 'daemon-packed' || packedCase(t)) && want(label(b, t.dir, t.frame, t.queues)))
      .flatMap((t) => Array.from({ length: o.repeat }, () => t));
    const backend = async (): Promise<BackendCtx> => {
      if (dpdkMissing) throw new Error(dpdkMissing);
      return (ctx ??= await (b === 'testpmd' ? startTestpmdBackend(queues) : startDaemonBackend(queues, 'vtd0', [], b === 'daemon-packed')));
    };
    const distrust = async (): Promise<void> => {
      // A backend that failed once is not trusted for the next case: start a fresh one.
      await ctx?.stop().catch(() => {});
      ctx = undefined;
    };
    const steps: Step[] = cases.map((t) => ({
      label: label(b, t.dir, t.frame, t.queues),
      run: () => record(b, t.dir, t.frame, queues, async () => {
        const c = await backend();
        try {
          return await withTimeout(frontendCase(c, t.dir, t.frame as number, o), caseTimeout, 'frontend case');
        } catch (error) {
          await distrust();
          throw error;
        }
      }),
    }));
    const pingLabel = `${backendLabel(b, 'g2h')} latency ping-pong through virtio_user icmpecho`;
    if (queues === 1 && b !== 'daemon-packed' && want(pingLabel)) {
      steps.push({
        label: pingLabel,
        run: async () => {
          try {
            latency[b] = await withTimeout(frontendPing(await backend(), o.quick ? 500 : 2000), caseTimeout, 'ping through the frontend');
          } catch (error) {
            latency.errors.push(`${b} ping: ${(error as Error).message}`);
            await distrust();
          }
        },
      });
    }
    steps.forEach((step, i) => stepsList.push(i < steps.length - 1 ? step : {
      label: step.label,
      run: async () => {
        try {
          await step.run();
        } finally {
          await ctx?.stop();
          ctx = undefined;
        }
      },
    }));
  }
  return stepsList;
}
