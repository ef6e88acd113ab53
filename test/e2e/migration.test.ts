// Live migration end to end (issue 11): a real guest under QEMU/TCG moves between
// two QEMUs, each on its own tap of one bridge, while traffic runs; every test runs
// once per backend:
//   tap        QEMU's own tap backend: the reference, which migrates today;
//   vhost-tap  a `vhost-tap serve` daemon per side. Until the daemon offers dirty
//              logging (VHOST_F_LOG_ALL, VHOST_USER_PROTOCOL_F_LOG_SHMFD) QEMU refuses
//              to migrate, and these fail with QEMU's "Migration disabled: vhost-user
//              backend lacks VHOST_USER_PROTOCOL_F_LOG_SHMFD feature".
// Knobs (environment): MIGRATION_BACKENDS=vhost-tap (or tap; default both) runs one
// backend's variants only; MIGRATION_ONLY=REGEXP the tests whose name matches;
// MIGRATION_SMP=N gives the guest N vCPUs (default 1: see migrationSmp()).
import path from 'node:path';
import fs from 'node:fs';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { sleep, until } from '../../harness/wait';
import { assertPrivateNetns } from '../helpers/system';
import { parseIperf3 } from '../../harness/qemu-guest';
import { requireTools } from '../../harness/tools';
import { GUEST_IP, GUEST_MAC, HOST_IP, MigratingGuest, formatMigration, formatRate, startPing, withTopology, writeRandomFile, type MigrationBackend, type MigrationStats, type MigrationTopology, type PingReply } from '../../harness/migration';

assertPrivateNetns();

const ALL_BACKENDS: MigrationBackend[] = ['tap', 'vhost-tap'];
const BACKENDS = (process.env.MIGRATION_BACKENDS ?? ALL_BACKENDS.join(','))
  .split(',').map((b) => b.trim()).filter(Boolean) as MigrationBackend[];
for (const b of BACKENDS) {
  if (!ALL_BACKENDS.includes(b)) throw new Error(`MIGRATION_BACKENDS: unknown backend "${b}" (expected ${ALL_BACKENDS.join(', ')})`);
}

/** MIGRATION_ONLY=REGEXP: only the tests whose name matches (e.g. 'sha256' or 'repeated'). */
const ONLY = process.env.MIGRATION_ONLY ? new RegExp(process.env.MIGRATION_ONLY) : undefined;
function migrationTest(name: string, body: () => Promise<void>): void {
  if (!ONLY || ONLY.test(name)) test(name, body);
}


const HTTP_PORT = 8000;

/** When ping -D printed its last reply. */
function lastReplyAt(output: string): number {
  const all = [...output.matchAll(/^\[(\d+\.\d+)\] \d+ bytes from/gm)];
  return all.length ? Number(all[all.length - 1]![1]) * 1000 : 0;
}

/** The longest time between two consecutive ping replies, ms. */
function longestGap(replies: PingReply[]): number {
  let gap = 0;
  for (let i = 1; i < replies.length; i++) gap = Math.max(gap, replies[i]!.at - replies[i - 1]!.at);
  return gap;
}

function seconds(since: number): string {
  return `${((Date.now() - since) / 1000).toFixed(1)} s`;
}

/** Throughput in the `window` ms before the migration, during it, and in the `window` ms after it. */
function aroundMigration(topology: MigrationTopology, m: MigrationStats, window: number): string {
  return `before ${formatRate(topology.rate(m.startedAt - window, m.startedAt))}; ` +
    `during ${formatRate(topology.rate(m.startedAt, m.completedAt))}; ` +
    `after ${formatRate(topology.rate(m.completedAt, m.completedAt + window))}`;
}

for (const backend of BACKENDS) {
  migrationTest(`migration (${backend}): the guest downloads 256 MiB of random data from the host while it migrates; its sha256 is the file's`, async () => {
    const t0 = Date.now();
    await withTopology('mig1', { backend }, async (topology, track) => {
      const www = topology.ns.path('www');
      fs.mkdirSync(www);
      const size = 256 * 2 ** 20;
      const expected = writeRandomFile(path.join(www, 'blob'), size);
      const http = await topology.startHttpServer(www, HTTP_PORT);
      const [a, b] = topology.sides;
      const guest = track(new MigratingGuest(topology, {
        commands: `S=$({ wget -q -O - http://${HOST_IP}:${HTTP_PORT}/blob; echo $? > /tmp/wrc; } | sha256sum); ` +
          `echo GUEST: sha256 $S wget=$(cat /tmp/wrc)`,
        timeoutMs: 90_000,
      }));
      await guest.boot(a!);
      await guest.waitForConsole('GUEST: ready', 30_000);
      const started = Date.now();
      await until('the guest\'s download reaching 32 MB', () => topology.bytesToGuest(started) > 32e6, 30_000);
      const m = await guest.migrateTo(b!);
      assert.not.match(http.output(), /sent \/blob/, 'the download was still going when the migration completed (else it proves nothing): make the file bigger');
      const [, sum, wrc] = await guest.waitForConsole(/GUEST: sha256 ([0-9a-f]{64}) +- wget=(\d+)/, 60_000);
      assert.is(wrc, '0', 'wget exits 0');
      assert.is(sum, expected, 'the sha256 the guest computed is the file\'s');
      const { rc } = await guest.finished();
      assert.is(rc, 0);
      console.log(`    ${backend}: ${formatMigration(m)}`);
      console.log(`    ${backend}: ${aroundMigration(topology, m, 3_000)}`);
    });
    console.log(`    (${seconds(t0)})`);
  });
}

// Split rings with both backends; packed rings (packed=on) with vhost-tap, where the device's
// ring state moves only through GET_VRING_BASE / SET_VRING_BASE's packed encoding.
const RING_CASES: { backend: MigrationBackend; packed: boolean }[] = [
  ...BACKENDS.map((backend) => ({ backend, packed: false })),
  ...BACKENDS.filter((b) => b === 'vhost-tap').map((backend) => ({ backend, packed: true })),
];

for (const { backend, packed } of RING_CASES) {
  const rings = packed ? ', packed rings' : '';
  migrationTest(`migration (${backend}${rings}): iperf3 streams both ways survive it; a host ping goes on, and after a quiet migration the bridge learns the new port by announce`, async () => {
    const t0 = Date.now();
    await withTopology('mig2', { backend }, async (topology, track) => {
      requireTools('iperf3', 'ping');
      await topology.startServer('iperf3 server (guest -> host)', 'iperf3', ['-s', '-1', '-p', '5201', '--forceflush'], /listening/);
      await topology.startServer('iperf3 server (host -> guest)', 'iperf3', ['-s', '-1', '-p', '5202', '--forceflush'], /listening/);
      const [a, b] = topology.sides;
      const guest = track(new MigratingGuest(topology, {
        commands: `iperf3 -c ${HOST_IP} -p 5201 -t 14 > /tmp/up 2>&1 & U=$!; iperf3 -c ${HOST_IP} -p 5202 -t 14 -R > /tmp/dn 2>&1 & D=$!; ` +
          'sleep 1; echo GUEST: streaming; wait $U; u=$?; wait $D; d=$?; tail -4 /tmp/up; tail -4 /tmp/dn; ' +
          // then nothing from the guest: only an announce can tell the bridge where it went
          'echo GUEST: iperf3 up=$u down=$d; sleep 600',
        timeoutMs: 90_000,
        ...(packed ? { device: { packed: 'on' } } : {}),
      }));
      await guest.boot(a!);
      await guest.waitForConsole('GUEST: streaming', 40_000);
      if (packed) {
        const bits = await topology.sides[0]!.daemon!.waitFor('features', { timeoutMs: 5_000 });
        assert.ok((BigInt(String(bits.features)) >> 34n) & 1n, `the guest negotiated VIRTIO_F_RING_PACKED (daemon: ${String(bits.features)})`);
      }
      const ping = startPing(topology, GUEST_IP);
      await sleep(3_000);
      const busy = await guest.migrateTo(b!);
      const [, upRc, downRc] = await guest.waitForConsole(/GUEST: iperf3 up=(\d+) down=(\d+)/, 40_000);
      const runs = parseIperf3(guest.console);
      assert.is(upRc, '0', 'the guest -> host iperf3 stream survived the migration');
      assert.is(downRc, '0', 'the host -> guest (-R) iperf3 stream survived the migration');
      assert.is(runs.length, 2, 'both iperf3 runs printed their summary');
      assert.ok(runs.every((r) => r.receiverGbps! > 0), 'both streams moved data');
      const afterBusy = topology.rate(busy.completedAt, busy.completedAt + 3_000);
      assert.ok(afterBusy.guestToHostMbps > 1 && afterBusy.hostToGuestMbps > 1, `both streams went on after the migration: ${formatRate(afterBusy)}`);

      // the quiet migration: the source stays up on the bridge, as a real source host's port would
      await sleep(1_000);
      const quiet = await guest.migrateTo(a!, { keepSource: true });
      await until(`the bridge learning that ${GUEST_MAC} is behind ${a!.tap} now (RARP or the guest's announce)`, () => topology.portOf(GUEST_MAC) === a!.tap, 5_000);
      const learnedAfter = Date.now() - quiet.completedAt;
      await until('a host ping answered by the guest on its new QEMU', () => lastReplyAt(ping.output()) > quiet.completedAt, 5_000);
      await guest.quitKeptSources();
      const pings = await ping.stop();
      const afterFirst = pings.replies.filter((r) => r.at > busy.completedAt);
      assert.ok(afterFirst.length > 0, 'the ping went on after the first migration');
      await guest.kill();

      console.log(`    ${backend}${rings}: busy ${formatMigration(busy)}`);
      console.log(`    ${backend}${rings}: ${aroundMigration(topology, busy, 3_000)}`);
      console.log(`    ${backend}${rings}: iperf3 over the whole run: guest -> host ${runs[0]!.receiverGbps!.toFixed(3)} Gbit/s, host -> guest ${runs[1]!.receiverGbps!.toFixed(3)} Gbit/s`);
      console.log(`    ${backend}: quiet ${formatMigration(quiet)}; bridge learned the new port ${learnedAfter} ms after it`);
      console.log(`    ${backend}: ping: ${pings.received}/${pings.transmitted} answered; longest gap ${longestGap(pings.replies)} ms`);
    });
    console.log(`    (${seconds(t0)})`);
  });
}

for (const backend of BACKENDS) {
  migrationTest(`migration (${backend}): repeated a -> b -> a -> b with iperf3 both ways busy; after each, ethtool -L moves the destination tap's numdisabled`, async () => {
    const t0 = Date.now();
    await withTopology('mig3', { backend }, async (topology, track) => {
      requireTools('iperf3');
      const www = topology.ns.path('www');
      fs.mkdirSync(www);
      await topology.startHttpServer(www, HTTP_PORT);
      await topology.startServer('iperf3 server (guest -> host)', 'iperf3', ['-s', '-p', '5201', '--forceflush'], /listening/);
      await topology.startServer('iperf3 server (host -> guest)', 'iperf3', ['-s', '-p', '5202', '--forceflush'], /listening/);
      const queues = topology.queues;
      const hops = 3;
      // Streams for the whole test; after migration i the guest waits for the host's go-i,
      // sets combined to 2, 1, 2... and says so; at the end it checks both streams still run.
      const guest = track(new MigratingGuest(topology, {
        commands: `iperf3 -c ${HOST_IP} -p 5201 -t 600 > /tmp/up 2>&1 & U=$!; iperf3 -c ${HOST_IP} -p 5202 -t 600 -R > /tmp/dn 2>&1 & D=$!; ` +
          `go() { until wget -q -O /dev/null http://${HOST_IP}:${HTTP_PORT}/go-$1 2>/dev/null; do sleep 0.2; done; }; ` +
          'sleep 1; echo GUEST: streaming; ' +
          `for i in $(seq 1 ${hops}); do go $i; n=$((2 - (i + 1) % 2)); ethtool -L eth0 combined $n || exit 1; echo GUEST: combined-$i=$n; done; ` +
          'go end; kill -0 $U && kill -0 $D && echo GUEST: both streams alive; kill $U $D; echo GUEST: up; tail -3 /tmp/up; echo GUEST: down; tail -3 /tmp/dn',
        timeoutMs: 150_000,
      }));
      const [a, b] = topology.sides;
      await guest.boot(a!);
      const [, combined] = await guest.waitForConsole(/GUEST: ready .* combined=(\d+)\//, 40_000);
      await guest.waitForConsole('GUEST: streaming', 30_000);
      let active = Number(combined);
      /** Waits for the tap of the side running the guest to have queues - pairs queues detached. */
      const tapFollows = (pairs: number, what: string): Promise<void> =>
        until(`${what}: the tap ${guest.side.tap} to have ${queues - pairs} of ${queues} queues detached (${pairs} pairs in use)`,
          () => guest.side.tapState().numDisabled === queues - pairs, 5_000)
          .catch((error: Error) => {
            throw new Error(`${error.message}; it has ${JSON.stringify(guest.side.tapState())}`);
          });
      const reports: string[] = [];
      for (let hop = 1; hop <= hops; hop++) {
        await sleep(2_000); // traffic before
        const m = await guest.migrateTo(guest.side === a ? b! : a!);
        // the destination took over the guest's queue pairs as they were
        await tapFollows(active, `hop ${hop}, right after the migration`);
        await sleep(2_000); // traffic after
        reports.push(`hop ${hop} ${formatMigration(m)}\n      ${aroundMigration(topology, m, 2_000)}`);
        const after = topology.rate(m.completedAt, m.completedAt + 2_000);
        assert.ok(after.guestToHostMbps > 1 && after.hostToGuestMbps > 1, `hop ${hop}: both streams went on after the migration: ${formatRate(after)}`);
        fs.writeFileSync(path.join(www, `go-${hop}`), 'go');
        const [, n] = await guest.waitForConsole(new RegExp(`GUEST: combined-${hop}=(\\d+)`), 20_000);
        active = Number(n);
        await tapFollows(active, `hop ${hop}, after ethtool -L combined ${active} on the destination`);
      }
      fs.writeFileSync(path.join(www, 'go-end'), 'go');
      const { rc, console: out } = await guest.finished();
      assert.match(out, /GUEST: both streams alive/, 'both iperf3 streams lived through every migration');
      assert.is(rc, 0);
      console.log(`    ${backend}: ${reports.join('\n    ')}`);
    });
    console.log(`    (${seconds(t0)})`);
  });
}

for (const backend of BACKENDS) {
  migrationTest(`migration (${backend}): after each of 3 migrations with iperf3 both ways busy, the destination's RAM is the source's, page for page`, async () => {
    const t0 = Date.now();
    await withTopology('mig4', { backend }, async (topology, track) => {
      requireTools('iperf3');
      await topology.startServer('iperf3 server (guest -> host)', 'iperf3', ['-s', '-p', '5201', '--forceflush'], /listening/);
      await topology.startServer('iperf3 server (host -> guest)', 'iperf3', ['-s', '-p', '5202', '--forceflush'], /listening/);
      const guest = track(new MigratingGuest(topology, {
        commands: `iperf3 -c ${HOST_IP} -p 5201 -t 600 > /dev/null 2>&1 & iperf3 -c ${HOST_IP} -p 5202 -t 600 -R > /dev/null 2>&1 & ` +
          'sleep 1; echo GUEST: streaming; sleep 600',
        timeoutMs: 120_000,
        // The destination waits paused while the harness compares (migrateTo rejects on a difference).
        verifyRam: true,
      }));
      const [a, b] = topology.sides;
      await guest.boot(a!);
      await guest.waitForConsole('GUEST: streaming', 40_000);
      const reports: string[] = [];
      for (let hop = 1; hop <= 3; hop++) {
        await sleep(2_000);
        reports.push(`hop ${hop} ${formatMigration(await guest.migrateTo(guest.side === a ? b! : a!))}`);
      }
      await guest.kill();
      console.log(`    ${backend}: ${reports.join('\n    ')}`);
    });
    console.log(`    (${seconds(t0)})`);
  });
}

test.run();
