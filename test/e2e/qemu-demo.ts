// `npm run example:qemu`: the vhost-user daemon serving a real QEMU guest.
//
// In a private network namespace (and a private /run/netns), `vhost-tap serve`
// makes a 4-queue tap vtd0 (10.0.2.1/24); QEMU (TCG) boots the Debian test guest
// (scripts/build-guest.sh) with a 4-queue virtio-net NIC on the daemon's socket;
// the guest (10.0.2.2/24) pings the host and runs iperf3 both ways against the
// host's iperf3 server. Needs root, qemu-system-x86 and iperf3.
import { spawnSync } from 'node:child_process';

import { startDaemon } from '../../harness/daemon';
import { Netns } from '../../harness/netns';
import { ensureGuest, parseIperf3, startGuest } from '../../harness/qemu-guest';
import { requireTools } from '../../harness/tools';

const MARK = 'VHOST_TAP_EXAMPLE_QEMU';

/** Re-runs this script under unshare (net + mount namespaces); returns in the child. */
function enterPrivateNamespaces(): void {
  if (process.env[MARK] === '1') return;
  if (process.getuid?.() !== 0) {
    console.error('This example creates a tap and network namespaces: run it as root.');
    process.exit(1);
  }
  const script = 'mkdir -p /run/netns && mount -t tmpfs tmpfs /run/netns && mount -t sysfs sysfs /sys && ' +
    'ip link set lo up && exec "$0" "$@"';
  const child = spawnSync('unshare', ['--net', '--mount', '--propagation', 'private', '--', 'sh', '-c', script,
    process.execPath, ...process.execArgv, ...process.argv.slice(1)], { stdio: 'inherit', env: { ...process.env, [MARK]: '1' } });
  if (child.error) {
    console.error(`could not start unshare: ${child.error.message}`);
    process.exit(1);
  }
  process.exit(child.status ?? 1);
}

async function main(): Promise<void> {
  enterPrivateNamespaces();
  requireTools('qemu-system-x86_64', 'iperf3', 'ip', 'setpriv');
  console.log('building (or reusing) the test guest...');
  ensureGuest();
  const ns = Netns.create('example');
  try {
    const daemon = await startDaemon(ns, { tap: 'vtd0', queues: 4, hostIp: '10.0.2.1/24' });
    console.log(`daemon: listening on ${daemon.socket}, tap vtd0 10.0.2.1/24, ${daemon.tapState().numQueues} of 4 tap queues attached`);
    ns.spawn('iperf3', ['-s']);
    const t0 = Date.now();
    const guest = startGuest({
      netns: ns,
      netdev: { kind: 'vhost-user', socket: daemon.socket, queues: 4 },
      guestIp: '10.0.2.2/24',
      commands: 'ping -c 3 -W 2 10.0.2.1 | tail -2 && iperf3 -c 10.0.2.1 -t 3 -P 2 | tail -5 && iperf3 -c 10.0.2.1 -t 3 -P 2 -R | tail -5',
      timeoutMs: 120_000,
    });
    await guest.waitForOutput('GUEST: ready', 60_000);
    const pairs = daemon.events('queue-pairs-changed').at(-1);
    console.log(`guest: up in ${((Date.now() - t0) / 1000).toFixed(1)} s; ${String(pairs?.active ?? 1)} queue pairs in use, ` +
      `tap numdisabled ${daemon.tapState().numDisabled}`);
    const { output, rc } = await guest.exited;
    const ping = /(\d+) packets transmitted, (\d+) packets received.*\n.*round-trip min\/avg\/max = ([\d.\/]+) ms/.exec(output);
    console.log(ping ? `ping guest -> host: ${ping[2]}/${ping[1]} replies, rtt min/avg/max ${ping[3]} ms` : 'ping: no result');
    const [up, down] = parseIperf3(output);
    const fmt = (g?: number): string => (g === undefined ? '?' : `${g.toFixed(2)} Gbit/s`);
    console.log(`iperf3 guest -> host (2 streams): ${fmt(up?.receiverGbps)}`);
    console.log(`iperf3 host -> guest (2 streams, -R): ${fmt(down?.receiverGbps)}`);
    await daemon.waitFor('disconnected', { timeoutMs: 5_000 }).catch(() => undefined);
    console.log(`QEMU exited; daemon: ${daemon.events('disconnected').length} disconnect logged, tap numdisabled ${daemon.tapState().numDisabled}`);
    await daemon.stop();
    console.log('daemon: stopped (exit 0)');
    if (rc !== 0) {
      console.error(`the guest's commands failed (rc ${String(rc)}):\n${output}`);
      process.exitCode = 1;
    }
  } finally {
    ns.delete();
  }
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
