// The end-to-end harness checked against reference backends: QEMU's own tap
// backend and DPDK testpmd over vhost-user. A real Debian guest (virtio_net) boots
// under QEMU/TCG in a network namespace of its own. The vhost-user daemon's tests
// reuse all of this and swap testpmd for `vhost-tap serve`.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { assertPrivateNetns } from '../helpers/system';
import { Netns } from '../../harness/netns';
import { addTap, bootGuest, ensureGuest, guestCmdline, parseIperf3, startGuest } from '../../harness/qemu-guest';
import { requireTools } from '../../harness/tools';
import { startTestpmd, testpmdPortStats } from '../../harness/testpmd';

assertPrivateNetns();

/** The guest's output, in assertion messages. */
function says(output: string): string {
  return `\n--- guest output ---\n${output.trimEnd()}\n---`;
}

function seconds(since: number): string {
  return `${((Date.now() - since) / 1000).toFixed(1)} s`;
}

/** `GUEST: ready uptime=2.21s`: how long the guest kernel took to bring eth0 up. */
function uptime(output: string): string {
  return /GUEST: ready uptime=([\d.]+s)/.exec(output)?.[1] ?? '?';
}

const CLIENT_P2 = `Connecting to host 10.0.0.1, port 5201
[  5] local 10.0.0.2 port 40000 connected to 10.0.0.1 port 5201
[  7] local 10.0.0.2 port 40002 connected to 10.0.0.1 port 5201
[ ID] Interval           Transfer     Bitrate         Retr  Cwnd
[  5]   0.00-1.00   sec   120 MBytes  1.01 Gbits/sec    0    512 KBytes
[SUM]   0.00-1.00   sec   240 MBytes  2.02 Gbits/sec    0
- - - - - - - - - - - - - - - - - - - - - - - - -
[ ID] Interval           Transfer     Bitrate         Retr
[  5]   0.00-2.00   sec   250 MBytes  1.05 Gbits/sec    0             sender
[  5]   0.00-2.01   sec   249 MBytes  1.04 Gbits/sec                  receiver
[  7]   0.00-2.00   sec   240 MBytes  1.00 Gbits/sec    3             sender
[  7]   0.00-2.01   sec   239 MBytes   998 Mbits/sec                  receiver
[SUM]   0.00-2.00   sec   490 MBytes  2.05 Gbits/sec    3             sender
[SUM]   0.00-2.01   sec   488 MBytes  2.04 Gbits/sec                  receiver

iperf Done.
`;
// `iperf3 -c ... -R | tail -4` in the guest: only the last lines survive
const CLIENT_R_TAIL = `[  5]   0.00-2.00   sec   200 MBytes   839 Mbits/sec    0             sender
[  5]   0.00-2.00   sec   199 MBytes   835 Mbits/sec                  receiver

iperf Done.
`;

test('parseIperf3: final sender/receiver Gbit/s per run, [SUM] for -P > 1, tail-cut runs', () => {
  const runs = parseIperf3(`GUEST: ready\n${CLIENT_P2}${CLIENT_R_TAIL}GUEST: done rc=0\n`);
  assert.is(runs.length, 2);
  assert.equal(runs[0], { senderGbps: 2.05, receiverGbps: 2.04, streams: 2, reverse: false });
  assert.is(runs[1]!.streams, 1);
  assert.ok(Math.abs(runs[1]!.senderGbps! - 0.839) < 1e-9);
  assert.ok(Math.abs(runs[1]!.receiverGbps! - 0.835) < 1e-9);
  assert.equal(parseIperf3('iperf3: error - unable to connect to server: Connection refused\n'), []);
});

test('guest commands: `"`, newlines and a kernel command line over 2047 bytes are refused before QEMU starts', () => {
  assert.throws(() => guestCmdline('10.0.0.2/24', 'echo "hi"'), /cannot contain `"`/);
  assert.throws(() => guestCmdline('10.0.0.2/24', 'echo a\necho b'), /newlines/);
  assert.throws(() => guestCmdline('10.0.0.2/24', `echo ${'x'.repeat(2048)}`), /at most 2047/);
  assert.match(guestCmdline('10.0.0.2', "echo 'hi'"), /gip=10\.0\.0\.2\/24 gcmd="echo 'hi'"$/);
});

test('QEMU tap backend (2 queues): the guest pings the host, ethtool -L 1 -> 2, iperf3 guest -> host', async () => {
  requireTools('qemu-system-x86_64', 'iperf3', 'ip', 'setpriv');
  const guestDir = ensureGuest();
  const t0 = Date.now();
  const ns = Netns.create('e2etap');
  try {
    addTap(ns, { ifname: 'tapg0', hostIp: '10.0.0.1/24', queues: 2 });
    ns.spawn('iperf3', ['-s']);
    const { output, rc, exitCode } = await bootGuest({
      netns: ns,
      netdev: { kind: 'tap', ifname: 'tapg0', queues: 2 },
      guestIp: '10.0.0.2/24',
      commands: 'ping -c 3 -W 2 10.0.0.1 && ethtool -L eth0 combined 1 && ethtool -l eth0 | tail -2 && ' +
        'ethtool -L eth0 combined 2 && ethtool -l eth0 | tail -2 && iperf3 -c 10.0.0.1 -t 2 -P 2 | tail -5',
      timeoutMs: 50_000,
    });
    assert.ok(output.includes('GUEST: ready'), `no "GUEST: ready" (guest in ${guestDir})${says(output)}`);
    assert.match(output, /combined=2\/2/, `the guest should start with 2 of 2 queue pairs${says(output)}`);
    assert.match(output, /64 bytes from 10\.0\.0\.1/, `no ping reply${says(output)}`);
    assert.match(output, /3 packets transmitted, 3 packets received/, `ping lost replies${says(output)}`);
    assert.match(output, /Combined:\s+1\n[^]*Combined:\s+2\n/, `ethtool -L did not take effect${says(output)}`);
    const [run] = parseIperf3(output);
    assert.ok(run && run.senderGbps! > 0 && run.receiverGbps! > 0, `no iperf3 result${says(output)}`);
    console.log(`    tap backend: guest ready at uptime ${uptime(output)}, iperf3 guest -> host (2 streams) ${run!.receiverGbps!.toFixed(2)} Gbit/s, ${seconds(t0)}`);
    assert.is(rc, 0, `guest commands failed${says(output)}`);
    assert.is(exitCode, 0);
  } finally {
    ns.delete();
  }
});

test('QEMU tap backend: host -> guest iperf3 into the guest\'s iperf3 -s, then QEMU killed mid-transfer (startGuest)', async () => {
  requireTools('qemu-system-x86_64', 'iperf3', 'ip', 'setpriv');
  ensureGuest();
  const t0 = Date.now();
  const ns = Netns.create('e2ekill');
  try {
    addTap(ns, { ifname: 'tapg0', hostIp: '10.0.0.1/24', queues: 2 });
    const guest = startGuest({
      netns: ns,
      netdev: { kind: 'tap', ifname: 'tapg0', queues: 2 },
      guestIp: '10.0.0.2/24',
      commands: 'iperf3 -s -D && sleep 0.5 && echo GUEST: iperf3 server up && sleep 600',
      timeoutMs: 55_000,
    });
    await guest.waitForOutput('GUEST: iperf3 server up', 30_000);
    const client = await ns.run('iperf3', ['-c', '10.0.0.2', '-t', '2', '-P', '2'], { timeoutMs: 20_000 });
    assert.is(client.code, 0, `host iperf3 client failed:\n${client.stdout}${client.stderr}${says(guest.output)}`);
    const [run] = parseIperf3(client.stdout);
    assert.ok(run && run.receiverGbps! > 0, `no iperf3 result:\n${client.stdout}`);
    console.log(`    tap backend: iperf3 host -> guest, 2 streams: ${run!.receiverGbps!.toFixed(2)} Gbit/s`);

    // a long transfer, then the VMM dies under it
    // The guest's iperf3 -s serves one client at a time and, under TCG, can still be
    // closing the first run: a client that hears "busy" exits, and is started again.
    let progress = '';
    const deadline = Date.now() + 20_000;
    while (!/sec\s+[\d.]+\s+[KMG]?Bytes/.test(progress) && Date.now() < deadline) {
      const long = ns.spawn('iperf3', ['-c', '10.0.0.2', '-t', '30', '-i', '0.5', '--forceflush']);
      let exited = false;
      long.once('exit', () => (exited = true));
      long.stdout!.setEncoding('utf8').on('data', (d: string) => (progress += d));
      long.stderr!.setEncoding('utf8').on('data', (d: string) => (progress += d));
      while (!exited && !/sec\s+[\d.]+\s+[KMG]?Bytes/.test(progress) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      if (exited) await new Promise((r) => setTimeout(r, 500));
    }
    assert.match(progress, /bits\/sec/, `the long transfer never got going:\n${progress}`);
    const killedAt = Date.now();
    const exit = await guest.kill();
    assert.ok(Date.now() - killedAt < 5_000, 'QEMU took more than 5 s to die of SIGKILL');
    assert.is(exit.signal, 'SIGKILL');
    assert.is(exit.rc, null, `the guest should not have finished${says(exit.output)}`);
    assert.ok(exit.output.includes('GUEST: iperf3 server up'));
    console.log(`    tap backend: QEMU killed mid-transfer, gone in ${Date.now() - killedAt} ms; test ${seconds(t0)}`);
  } finally {
    ns.delete();
  }
});

test('DPDK testpmd vhost-user backend (2 queues): the guest pings 10.0.1.1, ethtool -L 1 -> 2, iperf3 guest -> host', async () => {
  requireTools('qemu-system-x86_64', 'dpdk-testpmd', 'iperf3', 'ip', 'setpriv');
  ensureGuest();
  const t0 = Date.now();
  const ns = Netns.create('e2evhu');
  let backend: Awaited<ReturnType<typeof startTestpmd>> | undefined;
  try {
    backend = await startTestpmd(ns, { socket: ns.path('vhu.sock'), queues: 2, hostIp: '10.0.1.1/24' });
    ns.spawn('iperf3', ['-s']);
    const { output, rc, exitCode } = await bootGuest({
      netns: ns,
      netdev: { kind: 'vhost-user', socket: backend.socket, queues: 2 },
      guestIp: '10.0.1.2/24',
      commands: 'ping -c 3 -W 2 10.0.1.1 && ethtool -L eth0 combined 1 && ethtool -l eth0 | tail -2 && ' +
        'ethtool -L eth0 combined 2 && ethtool -l eth0 | tail -2 && iperf3 -c 10.0.1.1 -t 2 -P 2 | tail -5',
      timeoutMs: 50_000,
    });
    const log = await backend.stop();
    const stats = testpmdPortStats(log);
    assert.match(output, /combined=2\/2/, `the guest should start with 2 of 2 queue pairs${says(output)}`);
    assert.match(output, /3 packets transmitted, 3 packets received/, `ping through testpmd failed${says(output)}`);
    assert.match(output, /Combined:\s+1\n[^]*Combined:\s+2\n/, `ethtool -L did not take effect${says(output)}`);
    const [run] = parseIperf3(output);
    assert.ok(run && run.receiverGbps! > 0, `no iperf3 result${says(output)}`);
    console.log(`    testpmd vhost-user backend: guest ready at uptime ${uptime(output)}, iperf3 guest -> host (2 streams) ` +
      `${run!.receiverGbps!.toFixed(2)} Gbit/s; port 0 (vhost) rx ${stats[0]?.rx} tx ${stats[0]?.tx}, ` +
      `port 1 (tap) rx ${stats[1]?.rx} tx ${stats[1]?.tx}; ${seconds(t0)}`);
    assert.ok((stats[0]?.rx ?? 0) > 0 && (stats[1]?.rx ?? 0) > 0, `testpmd forwarded nothing:\n${log}`);
    assert.is(rc, 0, `guest commands failed${says(output)}`);
    assert.is(exitCode, 0);
  } finally {
    await backend?.stop();
    ns.delete();
  }
});

test.run();
