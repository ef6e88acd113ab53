// DPDK's net_virtio_user as the vhost-user frontend of `vhost-tap serve`, with
// packed virtqueues (packed_vq=1, VIRTIO_F_RING_PACKED) and, for comparison,
// without (issue 14): no VM, testpmd's virtio PMD plays the guest driver.
//
//   txonly  testpmd sends frames through the daemon: the tap's kernel counters
//           (rx_packets: frames the daemon wrote to it) see every one testpmd
//           reports sent.
//   rxonly  the namespace's stack sends UDP datagrams to a static neighbour behind
//           the tap: testpmd's rx counter sees every frame the daemon read from it
//           (the tap's tx_packets), and that is nearly all that were sent.
//
// With 1 and 2 queue pairs. The daemon's "features" log line must have bit 34 set
// exactly when packed_vq=1: the virtio_user side really runs packed rings.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { startFrontend, type Frontend } from '../../harness/virtio-user';
import { diffCounters, linkCounters, type LinkCounters } from '../../harness/proc';
import { sleep } from '../../harness/wait';
import { assertPrivateNetns } from '../helpers/system';
import { startDaemon, type Daemon } from '../../harness/daemon';
import { Netns } from '../../harness/netns';
import { requireTools, tail } from '../../harness/tools';

assertPrivateNetns();

const TAP = 'vtu0';
const HOST = '10.79.0.1';
const GUEST = '10.79.0.2';
const GUEST_MAC = '52:54:00:79:00:02';
/** VIRTIO_F_RING_PACKED */
const RING_PACKED_BIT = 34n;
/** txonly: how long testpmd sends. */
const TX_MS = 700;
/** rxonly: datagrams the host side sends, over FLOWS source ports (the tap spreads flows over its queues). */
const RX_DATAGRAMS = 20_000;
const FLOWS = 16;

/** testpmd with the virtio_user PMD; a clear failure naming Debian's packages if it is not installed. */
function requireDpdk(): void {
  requireTools('ip', 'setpriv');
  try {
    requireTools('dpdk-testpmd');
  } catch (error) {
    throw new Error(`${(error as Error).message.split(':')[0]}: DPDK's testpmd with the virtio_user PMD is needed: ` +
      'apt-get install -y --no-install-recommends dpdk dpdk-dev librte-net-virtio23 librte-mempool-ring23');
  }
}

/** Per-queue packet counters of port 0 (`show port xstats 0`: rx_q0_packets, tx_q1_packets...). */
async function queueCounters(fe: Frontend): Promise<Record<string, number>> {
  const text = await fe.commands(['show port xstats 0']);
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/\b([rt]x_q\d+)_good_packets:\s*(\d+)/g)) out[m[1]!] = Number(m[2]);
  return out;
}

async function portStats(fe: Frontend): Promise<{ rx: number; tx: number }> {
  const s = await fe.portStats();
  if (!s) throw new Error(`no port stats from testpmd:\n${tail(fe.log(), 15)}`);
  return s;
}

/** Polls the tap's counters until `ok` or timeoutMs; returns the last difference from `from`. */
async function tapUntil(ns: Netns, from: LinkCounters, ok: (d: LinkCounters) => boolean, timeoutMs = 5_000): Promise<LinkCounters> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const d = diffCounters(from, linkCounters(TAP, ns.name));
    if (ok(d) || Date.now() > end) return d;
    await sleep(50);
  }
}

/** Sends `count` UDP datagrams (18 B payload: 60 B frames) to GUEST from inside the namespace, `flows` source ports, each send awaited. */
async function sendDatagrams(ns: Netns, count: number, flows: number): Promise<void> {
  const script = `
    const dgram = require('node:dgram');
    const [dst, count, flows] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
    const socks = Array.from({ length: flows }, () => dgram.createSocket('udp4'));
    const payload = Buffer.alloc(18, 0x5a);
    (async () => {
      for (const [i, s] of socks.entries()) await new Promise((r) => s.bind(20000 + i, r));
      for (let i = 0; i < count; i++) {
        await new Promise((resolve, reject) => socks[i % flows].send(payload, 9, dst, (e) => (e ? reject(e) : resolve())));
      }
      for (const s of socks) s.close();
    })().catch((e) => { console.error(e); process.exit(1); });`;
  const r = await ns.run(process.execPath, ['-e', script, GUEST, String(count), String(flows)], { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`the UDP sender failed (${r.code ?? r.signal}): ${tail(r.stdout + r.stderr, 5)}`);
}

function lineErrors(daemon: Daemon, from: number): string[] {
  return daemon.lines.slice(from)
    .filter((l) => ['request-failed', 'queue-error', 'protocol-error', 'connection-error', 'bad-message', 'fatal'].includes(l.event))
    .map((l) => JSON.stringify(l));
}

for (const packed of [true, false]) {
  for (const queues of [1, 2]) {
    const what = `virtio_user ${packed ? 'packed_vq=1' : 'split (packed_vq=0)'}, ${queues} queue pair${queues > 1 ? 's' : ''}`;
    test(`daemon + DPDK ${what}: txonly frames reach the tap, rxonly frames from the tap reach testpmd`, async () => {
      requireDpdk();
      const ns = Netns.create('e2evu');
      let fe: Frontend | undefined;
      let daemon: Daemon | undefined;
      try {
        ns.exec('sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
        // 2 pairs offered: with 1 the frontend leaves the second one alone.
        daemon = await startDaemon(ns, { tap: TAP, queues: 2, hostIp: `${HOST}/24` });
        ns.exec('ip', ['neigh', 'replace', GUEST, 'lladdr', GUEST_MAC, 'dev', TAP, 'nud', 'permanent']);
        // Room in the tap's queues for every datagram of the rxonly phase: on a loaded 2-CPU
        // machine (testpmd busy-polls one) the daemon may not run for tens of milliseconds,
        // and the default 1000 frames overflow; what is tested is that nothing read is lost.
        ns.exec('ip', ['link', 'set', TAP, 'txqueuelen', String(2 * RX_DATAGRAMS)]);
        const from = daemon.mark();
        fe = startFrontend(ns, { socket: daemon.socket, queues, mode: 'io', packed, autoStart: false });
        await fe.ready();

        // What was negotiated: bit 34 set exactly when packed_vq=1.
        const features = await daemon.waitFor('features', { from });
        const bits = BigInt(String(features.features));
        assert.is((bits >> RING_PACKED_BIT) & 1n, packed ? 1n : 0n,
          `${what}: negotiated features ${String(features.features)} ${packed ? 'lack' : 'have'} VIRTIO_F_RING_PACKED (bit 34)`);
        await daemon.waitFor('memory', { from });
        if (queues > 1) await daemon.waitFor('queue-pairs', { from, where: (l) => l.active === queues });

        // txonly: every frame testpmd says it sent is counted by the tap.
        const q0 = await queueCounters(fe);
        const t0 = await portStats(fe);
        const l0 = linkCounters(TAP, ns.name);
        await fe.forward('txonly', 64);
        await sleep(TX_MS);
        await fe.commands(['stop']);
        const t1 = await portStats(fe);
        const sent = t1.tx - t0.tx;
        assert.ok(sent > 1000, `${what}: testpmd sent only ${sent} frames in ${TX_MS} ms:\n${tail(fe.log(), 10)}`);
        const tx = await tapUntil(ns, l0, (d) => d.rxPackets >= sent);
        assert.ok(tx.rxPackets >= sent, `${what}: testpmd sent ${sent} frames, the tap received ${tx.rxPackets} (dropped ${tx.rxDropped})`);

        // rxonly: what the tap hands the daemon reaches testpmd.
        await fe.forward('rxonly');
        const r0 = await portStats(fe);
        const l1 = linkCounters(TAP, ns.name);
        await sendDatagrams(ns, RX_DATAGRAMS, FLOWS);
        const handed = await tapUntil(ns, l1, (d) => d.txPackets + d.txDropped >= RX_DATAGRAMS, 10_000);
        let received = 0;
        const end = Date.now() + 5_000;
        while (Date.now() < end) {
          received = (await portStats(fe)).rx - r0.rx;
          if (received >= handed.txPackets) break;
          await sleep(100);
        }
        await fe.commands(['stop']);
        assert.equal([handed.txPackets, handed.txDropped], [RX_DATAGRAMS, 0],
          `${what}: the tap handed the daemon ${handed.txPackets} of ${RX_DATAGRAMS} frames, dropped ${handed.txDropped}`);
        assert.ok(received >= handed.txPackets, `${what}: the tap handed the daemon ${handed.txPackets} frames, testpmd received ${received}`);

        // Every ring in use carried frames.
        const q1 = await queueCounters(fe);
        for (let q = 0; q < queues; q++) {
          for (const dir of ['tx', 'rx']) {
            const key = `${dir}_q${q}`;
            assert.ok((q1[key] ?? 0) > (q0[key] ?? 0), `${what}: queue ${q} carried no ${dir} frames (${key} ${q0[key]} -> ${q1[key]})`);
          }
        }
        assert.equal(lineErrors(daemon, from), [], `${what}: the daemon logged errors`);
        assert.ok(daemon.alive(), `${what}: the daemon is still running`);
        await fe.stop();
        await daemon.waitFor('disconnected', { from });
        assert.equal(lineErrors(daemon, from), [], `${what}: the daemon logged errors`);
        await daemon.stop();
      } catch (error) {
        if (daemon) (error as Error).message += `\n--- daemon log ---\n${tail(daemon.log(), 20)}`;
        if (fe) (error as Error).message += `\n--- testpmd ---\n${tail(fe.log(), 20)}`;
        throw error;
      } finally {
        await fe?.stop();
        ns.delete();
      }
    });
  }
}

test.run();
