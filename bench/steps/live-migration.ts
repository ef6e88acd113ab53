// One live migration per backend (informational, TCG): through vhost-tap daemons, then QEMU's tap.
import * as mig from '../../harness/migration';
import { sleep } from '../../harness/wait';
import type { Options } from '../lib/options';
import { lineStart } from '../lib/progress';
import type { MigrationResult, MigrationRun, MigrationWindow } from '../lib/report';
import { guestSteps } from './guest-step';
import type { Step, StepContext } from './step';

export function liveMigrationSteps(context: StepContext): Step[] {
  const { migration } = context.results;
  return guestSteps(context, {
    label: MIGRATION_LABEL, seconds: MIGRATION_SECONDS, sayNeed: true, result: migration, run: () => liveMigration(migration, context.o),
  });
}

// No 'daemon' in the label: --only 'vhost-tap daemon' picks the daemon's throughput rows, not two guests under TCG.
const MIGRATION_LABEL = 'live migration (TCG): a guest under iperf3 both ways moved a -> b, through vhost-tap, then through QEMU tap';
/** What the section may take (both backends, boot to cleanup; 42 s measured on a loaded 2-vCPU VM): less than that left of the budget skips it. */
const MIGRATION_SECONDS = 90;

/**
 * Issue 11's figures, for orientation (the guest runs under TCG): the test harness's
 * topology (a bridge, one tap per side) with each backend in turn; the guest streams
 * iperf3 both ways to the host, is migrated a -> b once, and QEMU's query-migrate
 * gives total time, downtime and what was sent; the bridge's byte counters give the
 * throughput in a window before `migrate`, during the migration and in a window after.
 */
async function liveMigration(result: MigrationResult, o: Options): Promise<void> {
  const t0 = Date.now();
  const windowMs = o.quick ? 2_000 : 3_000;
  Object.assign(result, { vcpus: mig.migrationSmp(), queues: 2, windowMs });
  const backends = [['vhost-tap', 'vhostTap', 'vhost-tap'], ['tap', 'qemuTap', 'QEMU tap']] as const;
  for (const [backend, key, name] of backends) {
    try {
      await mig.withTopology('vtbench', { backend, queues: result.queues }, async (topology, track) => {
        await topology.startServer('iperf3 server (guest -> host)', 'iperf3', ['-s', '-p', '5201', '--forceflush'], /listening/);
        await topology.startServer('iperf3 server (host -> guest)', 'iperf3', ['-s', '-p', '5202', '--forceflush'], /listening/);
        const [a, b] = topology.sides;
        const guest = track(new mig.MigratingGuest(topology, {
          commands: `iperf3 -c ${mig.HOST_IP} -p 5201 -t 600 > /dev/null 2>&1 & iperf3 -c ${mig.HOST_IP} -p 5202 -t 600 -R > /dev/null 2>&1 & ` +
            'sleep 1; echo GUEST: streaming; sleep 600',
          timeoutMs: 180_000,
        }));
        await guest.boot(a!);
        await guest.waitForConsole('GUEST: streaming', 60_000);
        await sleep(windowMs + 1_000); // the streams past their start, and a whole window of them
        const m = await guest.migrateTo(b!);
        await sleep(windowMs + 500); // the bridge's sampler ticks every 200 ms
        const rate = (from: number, to: number): MigrationWindow => {
          const r = topology.rate(from, to);
          return { g2hMbps: r.guestToHostMbps, h2gMbps: r.hostToGuestMbps, seconds: r.seconds };
        };
        const run: MigrationRun = {
          totalMs: m.totalTimeMs, downtimeMs: m.downtimeMs, setupMs: m.setupTimeMs, sentMiB: m.ramTransferred / 2 ** 20, dirtySyncs: m.dirtySyncCount,
          before: rate(m.startedAt - windowMs, m.startedAt), during: rate(m.startedAt, m.completedAt), after: rate(m.completedAt, m.completedAt + windowMs),
        };
        result[key] = run;
        process.stdout.write(`${lineStart()}        ${name}: ${mig.formatMigration(m)}\n`);
        // A stream that did not come back is the migration's failure, not a slow window.
        const stopped = (['g2hMbps', 'h2gMbps'] as const).filter((k) => !(run.after[k] >= 1));
        if (stopped.length > 0) {
          result.errors.push(`${name}: ${stopped.map((k) => (k === 'g2hMbps' ? 'guest->host' : 'host->guest')).join(' and ')} iperf3 did not go on after the migration ` +
            `(${stopped.map((k) => run.after[k].toFixed(1)).join(', ')} Mbit/s in the ${windowMs / 1000} s after it)`);
        }
        await guest.kill();
      });
    } catch (error) {
      // withTopology appends every QEMU's and daemon's log tail: the head says what went wrong, the rest is kept for the record.
      result.errors.push(`${name}: ${(error as Error).message.split('\n').slice(0, 40).join('\n')}`);
    }
  }
  result.elapsedSeconds = Math.round((Date.now() - t0) / 1000);
}
