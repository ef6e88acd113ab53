// A real guest (QEMU, iperf3 both ways, 1 pair) through the daemon, then through
// QEMU's own tap backend (vhost=off).
import { addTap, bootGuest, parseIperf3 } from '../../harness/qemu-guest';
import { tail } from '../../harness/tools';
import { newNetns } from '../lib/bench-netns';
import { startDaemonBackend, type BackendCtx } from '../lib/frontend-backends';
import type { Options } from '../lib/options';
import type { GuestResult } from '../lib/report';
import { guestSteps } from './guest-step';
import type { Step, StepContext } from './step';

/** What the section may take: with less than that left of the budget it is skipped. */
const REAL_GUEST_SECONDS = 90;

export function realGuestSteps(context: StepContext): Step[] {
  const { guest } = context.results;
  return guestSteps(context, {
    label: 'real guest: iperf3 through vhost-tap, then through QEMU tap', seconds: REAL_GUEST_SECONDS, sayNeed: false, result: guest,
    run: () => realGuest(guest, context.o),
  });
}

async function realGuest(result: GuestResult, o: Options): Promise<void> {
  const secs = o.quick ? 2 : 4;
  const commands = `iperf3 -c 10.78.0.1 -t ${secs} | tail -4; iperf3 -c 10.78.0.1 -t ${secs} -R | tail -4`;
  const parse = (output: string): { g2hGbps?: number; h2gGbps?: number } => {
    // In order: the guest sends, then (-R) receives; `| tail -4` drops the "Reverse mode" line.
    const [g2h, h2g] = parseIperf3(output);
    return { g2hGbps: g2h?.receiverGbps ?? g2h?.senderGbps, h2gGbps: h2g?.receiverGbps ?? h2g?.senderGbps };
  };
  // vhost-tap daemon
  let ctx: BackendCtx | undefined;
  try {
    ctx = await startDaemonBackend(1, 'vtg0');
    ctx.ns.exec('ip', ['addr', 'replace', '10.78.0.1/24', 'dev', 'vtg0']);
    ctx.ns.spawn('iperf3', ['-s'], { stdio: 'ignore' });
    const r = await bootGuest({ netns: ctx.ns, netdev: { kind: 'vhost-user', socket: ctx.socket, queues: 1 }, guestIp: '10.78.0.2/24', commands, timeoutMs: 120_000 });
    result.vhostTap = parse(r.output);
    if (result.vhostTap.g2hGbps === undefined) result.errors.push(`vhost-tap guest: no iperf3 result: ${tail(r.output, 6)}`);
  } catch (error) {
    result.errors.push(`vhost-tap guest: ${(error as Error).message}`);
  } finally {
    await ctx?.stop();
  }
  // QEMU's own tap backend
  const ns = newNetns();
  try {
    addTap(ns, { ifname: 'tapq0', hostIp: '10.78.0.1/24', queues: 1 });
    ns.spawn('iperf3', ['-s'], { stdio: 'ignore' });
    const r = await bootGuest({ netns: ns, netdev: { kind: 'tap', ifname: 'tapq0', queues: 1 }, guestIp: '10.78.0.2/24', commands, timeoutMs: 120_000 });
    result.qemuTap = parse(r.output);
    if (result.qemuTap.g2hGbps === undefined) result.errors.push(`QEMU tap guest: no iperf3 result: ${tail(r.output, 6)}`);
  } catch (error) {
    result.errors.push(`QEMU tap guest: ${(error as Error).message}`);
  } finally {
    ns.delete();
  }
}
