// Frames lost per queue-count change (informational, TCG): the daemon with and without
// its steering program, then QEMU's tap.
import { QUEUES as SWITCH_QUEUES, switchOnDaemon, switchOnQemuTap, type SwitchParams, type SwitchRun } from '../../harness/switch-loss';
import type { Options } from '../lib/options';
import { lineStart } from '../lib/progress';
import type { SwitchLossResult, SwitchLossRun } from '../lib/report';
import { guestSteps } from './guest-step';
import type { Step, StepContext } from './step';

export function queueCountChangeSteps(context: StepContext): Step[] {
  const { switchLoss } = context.results;
  return guestSteps(context, {
    label: SWITCH_LOSS_LABEL, seconds: SWITCH_LOSS_SECONDS, sayNeed: true, result: switchLoss, run: () => queueCountChanges(switchLoss, context.o),
  });
}

// No 'daemon' in the label either (see MIGRATION_LABEL); 'steering' in it: --only steering picks this and the 2-pair steering rows.
const SWITCH_LOSS_LABEL = 'queue-count changes (TCG): a guest under UDP changes its pairs, through vhost-tap with and without the steering program, then QEMU tap';
/** What the section may take (three guests, boot to cleanup; ~20 s each measured on a loaded 2-vCPU VM): less than that left of the budget skips it. */
const SWITCH_LOSS_SECONDS = 80;

/**
 * Issue 12's figure: frames lost per queue-count change, with and without the steering
 * program, next to QEMU's own tap backend, with test/e2e/lossless-switch.test.ts's
 * harness (harness/switch-loss.ts), fewer changes. The e2e test's rate: half of what
 * the guest was seen to keep up with; a baseline without changes says whether it did.
 */
async function queueCountChanges(result: SwitchLossResult, o: Options): Promise<void> {
  const t0 = Date.now();
  const params: SwitchParams = { flows: 16, rate: 8000, changes: o.quick ? 10 : 20, baselineMs: 2_000, prefix: 'vtbench' };
  Object.assign(result, { rate: params.rate, flows: params.flows, changes: params.changes, queues: SWITCH_QUEUES });
  const summary = (r: SwitchRun): SwitchLossRun => ({
    changes: r.changes, sent: r.sw.sent, lost: r.sw.lost, outOfOrder: r.sw.outOfOrder.reduce((a, b) => a + b, 0), tapDrops: r.sw.tapDrops,
    baselineSent: r.base.sent, baselineLost: r.base.lost,
  });
  const runs = [
    ['vhostTap', 'vhost-tap, steering program', () => switchOnDaemon(true, params)],
    ['vhostTapNoSteering', 'vhost-tap --no-steering', () => switchOnDaemon(false, params)],
    ['qemuTap', 'QEMU tap', () => switchOnQemuTap(params)],
  ] as const;
  for (const [key, name, run] of runs) {
    try {
      const r = await run();
      if (key === 'vhostTap' && !r.steering?.active) throw new Error(`the daemon did not load its steering program: ${r.steering?.reason ?? 'no steering log line'}`);
      result[key] = summary(r);
      const s = result[key]!;
      process.stdout.write(`${lineStart()}        ${name}: ${s.lost} lost of ${s.sent} over ${s.changes} changes (baseline: ${s.baselineLost} lost of ${s.baselineSent})\n`);
    } catch (error) {
      result.errors.push(`${name}: ${(error as Error).message.split('\n').slice(0, 20).join('\n')}`);
    }
  }
  result.elapsedSeconds = Math.round((Date.now() - t0) / 1000);
}
