// The steps that boot QEMU guests (under TCG here, so slow): each is skipped, with
// why, when too little of the time budget is left or QEMU, iperf3 or the guest is missing.
import { ensureGuest } from '../../harness/qemu-guest';
import { requireTools } from '../../harness/tools';
import { started } from '../lib/progress';
import type { Step, StepContext } from './step';

export interface GuestStepOptions {
  label: string;
  /** What the step may take: with less than that left of the budget it is skipped. */
  seconds: number;
  /** Whether the skip message says what the step may need. */
  sayNeed: boolean;
  /** Where the reason for a skip goes. */
  result: { skipped?: string };
  run(): Promise<void>;
}

/** The step, unless --no-guest or --only leaves it out. */
export function guestSteps(context: StepContext, g: GuestStepOptions): Step[] {
  const { o } = context;
  if (!o.guest || !context.want(g.label)) return [];
  return [{
    label: g.label,
    run: async () => {
      const used = (Date.now() - started) / 1000;
      if (used > o.budgetSeconds - g.seconds) {
        g.result.skipped = `time budget: ${Math.round(used)} s used of ${o.budgetSeconds}${g.sayNeed ? `, the section may need ${g.seconds} s` : ''}`;
        return;
      }
      try {
        requireTools('qemu-system-x86_64', 'iperf3');
        ensureGuest();
      } catch (error) {
        g.result.skipped = (error as Error).message.split('\n')[0];
        return;
      }
      await g.run();
    },
  }];
}
