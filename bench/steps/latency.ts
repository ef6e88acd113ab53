// The round trips: the raw loop's and the embedded path's ping-pong (one child each),
// and the daemon's through virtio_user again with busy polling. (testpmd's and the
// daemon's plain ping-pongs run with their throughput cases: frontendSteps.)
import { withTimeout } from '../../harness/wait';
import { GUEST_CPU, type PingResult } from '../case';
import { runCase } from '../lib/case-runner';
import { BUSY_POLL_US, frontendPing, startDaemonBackend, withOwnDaemon } from '../lib/frontend-backends';
import type { Step, StepContext } from './step';

export function latencySteps(context: StepContext): Step[] {
  const { o, want, caseTimeout, dpdkMissing } = context;
  const { latency } = context.results;
  const stepsList: Step[] = [];
  if (want('latency ping-pong')) {
    stepsList.push({
      label: 'ping-pong: raw loop, then vhost-tap embedded',
      run: async () => {
        for (const kind of ['raw-ping', 'emb-ping'] as const) {
          try {
            // Both ping-pongs on one CPU: on this kind of VM a wakeup across vCPUs costs tens of
            // microseconds and the scheduler's placement swings p50 from 30 to 400 us (measured).
            const r = await runCase<PingResult>(context.casesNetns(), { kind, count: 3000, intervalUs: 100 }, 45_000, String(GUEST_CPU));
            if (kind === 'raw-ping') latency.raw = r.rtt;
            else latency.embedded = r.rtt;
          } catch (error) {
            latency.errors.push(`${kind}: ${(error as Error).message}`);
          }
        }
      },
    });
  }

  // The daemon once more, asked to spin after work (vhost-net's busyloop_timeout) for longer than
  // the gap between pings: what polling buys a ping-pong, next to testpmd, which always polls.
  const busyPollLabel = `vhost-tap daemon --busy-poll-us ${BUSY_POLL_US} latency ping-pong through virtio_user icmpecho`;
  if (want(busyPollLabel)) {
    stepsList.push({
      label: busyPollLabel,
      run: () => withOwnDaemon(dpdkMissing, () => startDaemonBackend(1, 'vtd0', ['--busy-poll-us', String(BUSY_POLL_US)]), async (ctx) => {
        latency.daemonBusyPoll = await withTimeout(frontendPing(ctx, o.quick ? 500 : 2000), caseTimeout, 'ping through the frontend');
        latency.daemonBusyPollUs = BUSY_POLL_US;
      }, (message) => latency.errors.push(`daemon --busy-poll-us ${BUSY_POLL_US} ping: ${message}`)),
    });
  }
  return stepsList;
}
