// `vhost-tap serve` end to end: the daemon in a network namespace of its own with
// a 4-queue tap (10.0.2.1/24), QEMU (TCG) as the vhost-user frontend with a
// 4-queue virtio-net-pci NIC, a real Debian guest (10.0.2.2/24) on it. The same
// harness as the reference backends (harness.test.ts), with testpmd swapped for
// the daemon.
import fs from 'node:fs';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { native } from '../../src/native';
import { FLAG_NEED_REPLY, HEADER_SIZE, ProtocolFeature, Request, VHOST_USER_VERSION } from '../../src/vhost-user/protocol';
import { waitReadable } from '../../src/virtio/eventfd';
import { sleep, readUntil } from '../../harness/wait';
import { assertPrivateNetns } from '../helpers/system';
import { assertReleased, gbps, hostToGuest as hostToGuestAt, idleResources, says, seconds, serveOnce, startDaemon, type Daemon } from '../../harness/daemon';
import { Netns } from '../../harness/netns';
import { ensureGuest, parseIperf3, startGuest, type RunningGuest } from '../../harness/qemu-guest';
import { requireTools, tail } from '../../harness/tools';
import { prng } from '../../harness/prng';

assertPrivateNetns();

const QUEUES = 4;
const HOST = '10.0.2.1';
const GUEST = '10.0.2.2';

/** The tools every test here needs; a clear failure (with the packages to install) if one is missing. */
function requireAll(): void {
  requireTools('qemu-system-x86_64', 'iperf3', 'ip', 'setpriv');
  ensureGuest();
}

/**
 * A namespace with the daemon serving a 4-queue tap at 10.0.2.1/24 and an
 * iperf3 server; `body` runs the guests. The daemon is stopped (exit code 0
 * checked) when the body succeeds; everything is torn down in any case.
 */
async function withDaemon(prefix: string, body: (ns: Netns, daemon: Daemon) => Promise<void>, via: 'exec' | 'flag' = 'exec'): Promise<void> {
  requireAll();
  const ns = Netns.create(prefix);
  try {
    const daemon = await startDaemon(ns, { tap: 'vtd0', queues: QUEUES, hostIp: `${HOST}/24`, via });
    ns.spawn('iperf3', ['-s']);
    const tap = daemon.tapState();
    assert.equal([tap.numQueues, tap.numDisabled], [1, QUEUES - 1], 'before any frontend: 1 tap queue attached, 3 detached');
    try {
      await body(ns, daemon);
    } catch (error) {
      (error as Error).message += `\n--- daemon log ---\n${tail(daemon.log(), 25)}`;
      throw error;
    }
    assert.ok(daemon.alive(), 'the daemon is still running at the end of the test');
    await daemon.stop();
  } finally {
    ns.delete();
  }
}

function guestOn(ns: Netns, daemon: Daemon, commands: string, timeoutMs = 90_000): RunningGuest {
  return startGuest({
    netns: ns,
    netdev: { kind: 'vhost-user', socket: daemon.socket, queues: QUEUES },
    guestIp: `${GUEST}/24`,
    commands,
    timeoutMs,
  });
}

/** iperf3 from the namespace to the guest's server (host -> guest); the receiver's Gbit/s. */
function hostToGuest(ns: Netns, guest: RunningGuest, args: string[], what: string): Promise<number> {
  return hostToGuestAt(ns, guest, GUEST, args, what);
}

/* ------------------------------------------------------------------ tests */

test('daemon: the guest pings the host, the host reaches the guest, iperf3 both ways (4 queues offered, 2 used)', async () => {
  const t0 = Date.now();
  await withDaemon('e2ed1', async (ns, daemon) => {
    const guest = guestOn(ns, daemon,
      `ping -c 3 -W 2 ${HOST} && iperf3 -c ${HOST} -t 3 -P 2 | tail -5 && iperf3 -c ${HOST} -t 3 -P 2 -R | tail -5 && ` +
      serveOnce('your turn'));
    await guest.waitForOutput('GUEST: your turn', 75_000);
    // checked while the guest waits for the host's iperf3 (it powers off right after)
    const active = daemon.events('queue-pairs-changed').at(-1);
    assert.is(active?.active, 2, 'the guest (2 vCPUs) runs 2 of the 4 queue pairs');
    assert.is(daemon.tapState().numDisabled, 2, 'tap: 2 queues detached while 2 pairs run');
    const hostInitiated = await hostToGuest(ns, guest, ['-t', '2'], 'host-initiated');
    const { output, rc, exitCode } = await guest.exited;
    assert.match(output, /GUEST: ready .*combined=2\/4/, `the guest should see 4 queue pairs and use 2${says(output)}`);
    assert.match(output, /3 packets transmitted, 3 packets received/, `guest -> host ping failed${says(output)}`);
    const runs = parseIperf3(output);
    assert.is(runs.length, 2, `two iperf3 runs expected${says(output)}`);
    const [up, down] = runs;
    assert.ok(up!.receiverGbps! > 0 && up!.senderGbps! > 0, `no guest -> host throughput${says(output)}`);
    assert.ok(down!.receiverGbps! > 0 && down!.senderGbps! > 0, `no host -> guest throughput${says(output)}`);
    console.log(`    vhost-tap serve: iperf3 guest -> host (2 streams) ${gbps(up!.receiverGbps)}, host -> guest (-R, 2 streams) ${gbps(down!.receiverGbps)}, ` +
      `host -> guest (host's client, 1 stream) ${gbps(hostInitiated)}`);
    assert.is(rc, 0, `guest commands failed${says(output)}`);
    assert.is(exitCode, 0);
  });
  console.log(`    (${seconds(t0)})`);
});

test('daemon: ethtool -L combined 1, 4, 2: the tap follows (numdisabled 4 - N) and traffic flows both ways after each', async () => {
  const t0 = Date.now();
  await withDaemon('e2ed2', async (ns, daemon) => {
    // After each change: the guest pings the host, then serves one iperf3 test,
    // which the host runs once it has checked the tap and pinged the guest.
    const guest = guestOn(ns, daemon,
      `st() { ethtool -L eth0 combined $1 || return 1; ping -c 2 -W 2 ${HOST} > /dev/null || { echo GUEST: no ping after $1; return 2; }; ` +
      `${serveOnce('MARK-$1')}; }; st 1 && st 4 && st 2 && ethtool -l eth0 | grep Combined`);
    let from = 0;
    const figures: string[] = [];
    for (const n of [1, 4, 2]) {
      await guest.waitForOutput(`GUEST: MARK-${n}`, 75_000);
      const line = await daemon.waitFor('queue-pairs-changed', { from, where: (l) => l.active === n, timeoutMs: 5_000 });
      assert.is(line.numDisabled, QUEUES - n, `log: ${JSON.stringify(line)}`);
      from = daemon.mark();
      const tap = daemon.tapState();
      assert.equal([tap.numQueues, tap.numDisabled], [n, QUEUES - n], `combined ${n}: the tap has ${n} queues attached, ${QUEUES - n} detached`);
      figures.push(`${n}: ${gbps(await hostToGuest(ns, guest, ['-t', '1', '-P', String(n)], `combined ${n}`))}`);
    }
    const { output, rc } = await guest.exited;
    assert.is(rc, 0, `guest commands failed${says(output)}`);
    assert.match(output, /Combined:\s+4\nCombined:\s+2\n/, `ethtool -l should say 2 of 4${says(output)}`);
    console.log(`    vhost-tap serve: iperf3 host -> guest (N streams) after combined N = ${figures.join(', ')}`);
  });
  console.log(`    (${seconds(t0)})`);
});

test('daemon: QEMU powers off: disconnect logged, everything released, a second QEMU run on the same socket pings', async () => {
  const t0 = Date.now();
  await withDaemon('e2ed3', async (ns, daemon) => {
    const idle = await idleResources(daemon);
    for (const round of [1, 2]) {
      const from = daemon.mark();
      const guest = guestOn(ns, daemon, `ping -c 3 -W 2 ${HOST} && ${serveOnce('running')}`, 60_000);
      await guest.waitForOutput('GUEST: running', 50_000);
      const busy = daemon.resources();
      assert.is(daemon.tapState().numDisabled, 2, `run ${round}: 2 pairs in use`);
      assert.ok(busy.threads >= idle.threads + 2, `run ${round}: a worker thread per active pair (${busy.threads} threads, ${idle.threads} idle)`);
      await hostToGuest(ns, guest, ['-n', '1M'], `run ${round}`);
      const { output, rc, exitCode } = await guest.exited;
      assert.match(output, /3 packets transmitted, 3 packets received/, `run ${round}: the guest's ping failed${says(output)}`);
      assert.is(rc, 0, `run ${round}: guest commands failed${says(output)}`);
      assert.is(exitCode, 0);
      const connected = daemon.events('connected', from);
      assert.is(connected.length, 1, `run ${round}: one connection`);
      assert.is(connected[0]!.connection, round, `run ${round}: the daemon's connection #${round}`);
      await daemon.waitFor('disconnected', { from, timeoutMs: 5_000 });
      await assertReleased(daemon, idle, `after run ${round}`);
    }
    assert.equal(daemon.events('starting').length, 1, 'one daemon process all along');
  });
  console.log(`    (${seconds(t0)})`);
});

test('daemon (started with --netns): QEMU SIGKILLed mid-transfer; the daemon survives and serves the next QEMU', async () => {
  const t0 = Date.now();
  await withDaemon('e2ed4', async (ns, daemon) => {
    const idle = await idleResources(daemon);
    const from = daemon.mark();
    const guest = guestOn(ns, daemon, 'iperf3 -s -D && sleep 0.5 && echo GUEST: iperf3 server up && sleep 600', 90_000);
    await guest.waitForOutput('GUEST: iperf3 server up', 50_000);
    const client = ns.spawn('iperf3', ['-c', GUEST, '-t', '30', '-P', '2', '-i', '0.5', '--forceflush']);
    let progress = '';
    client.stdout!.setEncoding('utf8').on('data', (d: string) => (progress += d));
    try {
      const deadline = Date.now() + 15_000;
      while (!/sec\s+[\d.]+\s+[KMG]?Bytes\s+[\d.]+\s+[KMG]?bits\/sec/.test(progress) && Date.now() < deadline) await sleep(100);
      assert.match(progress, /bits\/sec/, `the transfer never got going:\n${progress}`);
      await sleep(1_000); // well into it
      const exit = await guest.kill('SIGKILL');
      assert.is(exit.signal, 'SIGKILL');
      console.log(`    vhost-tap serve: host -> guest transfer before the kill: ${progress.match(/[\d.]+ [KMG]?bits\/sec/g)?.slice(-1)[0] ?? '?'}`);
    } finally {
      try {
        process.kill(-client.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    const gone = await daemon.waitFor(['disconnected', 'connection-error'], { from, timeoutMs: 5_000 });
    await sleep(500);
    assert.ok(daemon.alive(), `the daemon died with QEMU (last line ${JSON.stringify(gone)})`);
    assert.is(daemon.events('fatal').length + daemon.events('connection-crashed').length, 0, 'no fatal or crashed connection');
    await assertReleased(daemon, idle, 'after QEMU was killed');

    const next = daemon.mark();
    const { output, rc } = await guestOn(ns, daemon, `ping -c 3 -W 2 ${HOST}`, 60_000).exited;
    assert.match(output, /3 packets transmitted, 3 packets received/, `the next QEMU could not ping${says(output)}`);
    assert.is(rc, 0, says(output));
    assert.is(daemon.events('connected', next).length, 1, 'the next QEMU is a new connection');
  }, 'flag');
  console.log(`    (${seconds(t0)})`);
});

/* ------------------------------------------------------------------- fuzz */

/** mulberry32: a small seeded PRNG, so a failing run can be replayed with DAEMON_FUZZ_SEED. */
const USER_BASE = 0x7f00_0000_0000n;
const FUZZ_MEM = 1 << 20;

interface FuzzMessage {
  bytes: Buffer;
  fds: number[];
  /** Close our end right after sending (a truncated message: the daemon must see EOF, not wait). */
  hangUp: boolean;
}

function fuzzer(seed: number): { next(): FuzzMessage; closeFds(fds: number[]): void } {
  const rand = prng(seed);
  const int = (n: number): number => Math.floor(rand() * n);
  const pick = <T>(items: readonly T[]): T => items[int(items.length)]!;
  const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => int(256)));
  const requests = Object.values(Request).filter((v): v is number => typeof v === 'number');
  const ring = (): number => (rand() < 0.85 ? int(2 * QUEUES) : pick([2 * QUEUES, 255, 0xffff, 0xffffffff]));
  const addr = (): bigint => (rand() < 0.8 ? USER_BASE + BigInt(int(FUZZ_MEM)) : BigInt(int(0x7fffffff)) * BigInt(int(0x7fffffff)));
  const u64 = (v: bigint): Buffer => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, v));
    return b;
  };
  const state = (index: number, num: number): Buffer => {
    const b = Buffer.alloc(8);
    b.writeUInt32LE(index >>> 0, 0);
    b.writeUInt32LE(num >>> 0, 4);
    return b;
  };
  const memfd = (): number => {
    const fd = native.memfdCreate('fuzz', FUZZ_MEM);
    if (rand() < 0.5) fs.writeSync(fd, bytes(4096), 0, 4096, int(FUZZ_MEM - 4096)); // garbage rings
    return fd;
  };
  const region = (): Buffer => {
    const b = Buffer.alloc(32);
    b.writeBigUInt64LE(BigInt(rand() < 0.8 ? 0 : int(1 << 30)), 0);
    b.writeBigUInt64LE(BigInt(rand() < 0.8 ? FUZZ_MEM : pick([0, 1, FUZZ_MEM * 2, 0xffffffff])), 8);
    b.writeBigUInt64LE(USER_BASE, 16);
    b.writeBigUInt64LE(BigInt(rand() < 0.9 ? 0 : pick([4096, FUZZ_MEM, 0xfffffffff000])), 24);
    return b;
  };
  /** A well-formed payload (and the fds that go with it) for a request, with random values. */
  const structured = (request: number): { payload: Buffer; fds: number[] } => {
    switch (request) {
      case Request.SET_FEATURES:
        return { payload: u64(rand() < 0.7 ? 0x1_4000_8000n | (1n << 30n) | (1n << 22n) : BigInt(int(0x7fffffff)) << BigInt(int(33))), fds: [] };
      case Request.SET_PROTOCOL_FEATURES:
        return { payload: u64(rand() < 0.8 ? (1n << BigInt(ProtocolFeature.REPLY_ACK)) | (1n << BigInt(ProtocolFeature.MQ)) : BigInt(int(0xffffff))), fds: [] };
      case Request.SET_MEM_TABLE: {
        const n = rand() < 0.8 ? 1 : int(10);
        const head = Buffer.alloc(8);
        head.writeUInt32LE(n, 0);
        const fds = Array.from({ length: rand() < 0.85 ? Math.min(n, 8) : int(4) }, memfd);
        return { payload: Buffer.concat([head, ...Array.from({ length: Math.min(n, 8) }, region)]), fds };
      }
      case Request.ADD_MEM_REG:
      case Request.REM_MEM_REG:
        return { payload: Buffer.concat([Buffer.alloc(8), region()]), fds: request === Request.ADD_MEM_REG || rand() < 0.3 ? [memfd()] : [] };
      case Request.SET_VRING_NUM:
        return { payload: state(ring(), rand() < 0.7 ? pick([64, 128, 256]) : int(70000)), fds: [] };
      case Request.SET_VRING_BASE:
      case Request.GET_VRING_BASE:
      case Request.SET_VRING_ENABLE:
        return { payload: state(ring(), rand() < 0.7 ? int(2) : int(0x20000)), fds: [] };
      case Request.SET_VRING_ADDR: {
        const b = Buffer.alloc(40);
        b.writeUInt32LE(ring(), 0);
        b.writeUInt32LE(int(2), 4);
        b.writeBigUInt64LE(addr(), 8);
        b.writeBigUInt64LE(addr(), 16);
        b.writeBigUInt64LE(addr(), 24);
        return { payload: b, fds: [] };
      }
      case Request.SET_VRING_KICK:
      case Request.SET_VRING_CALL:
      case Request.SET_VRING_ERR: {
        const noFd = rand() < 0.15;
        const fds = noFd ? [] : [native.eventfdCreate()];
        if (fds.length && rand() < 0.5) native.eventfdWrite(fds[0]!); // a kick waiting
        return { payload: u64(BigInt(ring()) | (noFd ? 0x100n : 0n)), fds };
      }
      case Request.GET_CONFIG:
      case Request.SET_CONFIG: {
        const size = rand() < 0.8 ? int(16) : int(300);
        const b = Buffer.alloc(12 + size);
        b.writeUInt32LE(int(20), 0);
        b.writeUInt32LE(rand() < 0.9 ? size : int(1000), 4);
        return { payload: b, fds: [] };
      }
      case Request.SET_STATUS:
        return { payload: u64(BigInt(pick([0, 1, 3, 11, 15, 0x40, 0x80, int(256)]))), fds: [] };
      default:
        return { payload: rand() < 0.5 ? Buffer.alloc(0) : u64(BigInt(int(0xffff))), fds: [] };
    }
  };
  return {
    next(): FuzzMessage {
      const roll = rand();
      let request = pick(requests);
      let flags = VHOST_USER_VERSION | (rand() < 0.5 ? FLAG_NEED_REPLY : 0);
      let { payload, fds } = structured(request);
      let size = payload.length;
      let hangUp = false;
      if (roll < 0.15) {
        // random request number, flags, payload
        request = rand() < 0.5 ? int(64) : int(0x100000000);
        flags = rand() < 0.7 ? flags : int(0x100000000);
        payload = bytes(rand() < 0.9 ? int(64) : int(600));
        size = rand() < 0.9 ? payload.length : int(0x100000000);
        hangUp = size !== payload.length;
      } else if (roll < 0.25) {
        // a well-formed request with a payload of the wrong size
        payload = rand() < 0.5 ? payload.subarray(0, int(payload.length + 1)) : Buffer.concat([payload, bytes(1 + int(16))]);
        size = payload.length;
      } else if (roll < 0.32) {
        // truncated: the header promises more than comes, then the frontend hangs up
        size = payload.length + 1 + int(64);
        hangUp = true;
      } else if (roll < 0.35) {
        // a header cut short
        const header = Buffer.alloc(HEADER_SIZE);
        header.writeUInt32LE(request, 0);
        return { bytes: header.subarray(0, 1 + int(HEADER_SIZE - 1)), fds, hangUp: true };
      } else if (roll < 0.42) {
        // the right request with too many or too few fds
        if (fds.length && rand() < 0.5) fds = fds.slice(1);
        else fds = [...fds, ...Array.from({ length: 1 + int(3) }, () => native.eventfdCreate())];
      }
      const header = Buffer.alloc(HEADER_SIZE);
      header.writeUInt32LE(request >>> 0, 0);
      header.writeUInt32LE(flags >>> 0, 4);
      header.writeUInt32LE(size >>> 0, 8);
      return { bytes: Buffer.concat([header, payload]), fds, hangUp };
    },
    closeFds(fds: number[]): void {
      for (const fd of fds) {
        try {
          native.closeFd(fd);
        } catch {
          // already closed
        }
      }
    },
  };
}

/** The start of a real session (features, memory, rings of pair 0 with garbage in them, enabled): the fuzz then hits a running device. */
function sessionPrefix(rand: () => number): FuzzMessage[] {
  const msg = (request: number, payload: Buffer, fds: number[] = []): FuzzMessage => {
    const header = Buffer.alloc(HEADER_SIZE);
    header.writeUInt32LE(request, 0);
    header.writeUInt32LE(VHOST_USER_VERSION, 4);
    header.writeUInt32LE(payload.length, 8);
    return { bytes: Buffer.concat([header, payload]), fds, hangUp: false };
  };
  const u64 = (v: bigint): Buffer => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(v);
    return b;
  };
  const mem = native.memfdCreate('fuzz-session', FUZZ_MEM);
  const garbage = Buffer.from(Array.from({ length: 65536 }, () => Math.floor(rand() * 256)));
  fs.writeSync(mem, garbage, 0, garbage.length, 0);
  const table = Buffer.alloc(8 + 32);
  table.writeUInt32LE(1, 0);
  table.writeBigUInt64LE(0n, 8);
  table.writeBigUInt64LE(BigInt(FUZZ_MEM), 16);
  table.writeBigUInt64LE(USER_BASE, 24);
  const out = [
    msg(Request.GET_FEATURES, Buffer.alloc(0)),
    msg(Request.SET_PROTOCOL_FEATURES, u64(1n << BigInt(ProtocolFeature.MQ))),
    msg(Request.SET_FEATURES, u64((1n << 32n) | (1n << 15n) | (1n << 30n))),
    msg(Request.SET_MEM_TABLE, table, [mem]),
  ];
  for (const index of [0, 1]) {
    const vr = Buffer.alloc(40);
    vr.writeUInt32LE(index, 0);
    vr.writeBigUInt64LE(USER_BASE + BigInt(index * 16384), 8);
    vr.writeBigUInt64LE(USER_BASE + BigInt(index * 16384 + 8192), 16);
    vr.writeBigUInt64LE(USER_BASE + BigInt(index * 16384 + 4096), 24);
    const num = Buffer.alloc(8);
    num.writeUInt32LE(index, 0);
    num.writeUInt32LE(256, 4);
    const kick = native.eventfdCreate();
    native.eventfdWrite(kick);
    out.push(msg(Request.SET_VRING_NUM, num), msg(Request.SET_VRING_ADDR, vr), msg(Request.SET_VRING_KICK, u64(BigInt(index)), [kick]),
      msg(Request.SET_VRING_CALL, u64(BigInt(index)), [native.eventfdCreate()]));
  }
  const enable = (index: number): Buffer => {
    const b = Buffer.alloc(8);
    b.writeUInt32LE(index, 0);
    b.writeUInt32LE(1, 4);
    return b;
  };
  out.push(msg(Request.SET_VRING_ENABLE, enable(0)), msg(Request.SET_VRING_ENABLE, enable(1)));
  return out;
}

test('daemon: a few hundred random, malformed and truncated vhost-user messages (with and without fds); then QEMU connects and pings', async () => {
  const t0 = Date.now();
  await withDaemon('e2ed5', async (ns, daemon) => {
    const idle = await idleResources(daemon);
    const seed = Number(process.env.DAEMON_FUZZ_SEED ?? Date.now() % 0x7fffffff);
    const fuzz = fuzzer(seed);
    const rand = prng(seed ^ 0x5eed);
    const MESSAGES = Number(process.env.DAEMON_FUZZ_MESSAGES ?? 400);
    const fuzzFrom = daemon.mark();
    let fd = -1;
    let connections = 0;
    let closedByDaemon = 0;
    let replies = 0;
    const hangUp = (): void => {
      if (fd >= 0) native.closeFd(fd);
      fd = -1;
    };
    /** Reads whatever the daemon sent; false once it closed the connection. */
    const drain = async (waitMs: number): Promise<boolean> => {
      if (!(await waitReadable(fd, waitMs))) return true;
      for (;;) {
        try {
          const got = native.recvSome(fd, 1, 8);
          fuzz.closeFds(got.fds);
          if (got.end) return false;
          if (got.data.length === 0) return true;
          replies++;
        } catch (error) {
          const code = (error as { code?: string }).code;
          if (code === 'ETIMEDOUT' || code === 'EAGAIN') return true;
          if (code === 'ECONNRESET' || code === 'EPIPE') return false;
          throw error;
        }
      }
    };
    try {
      let queue: FuzzMessage[] = [];
      for (let i = 0; i < MESSAGES; i++) {
        if (fd < 0) {
          fd = native.unixConnect(daemon.socket, 'stream');
          connections++;
          // every other connection starts like a real session, so the fuzz also meets running workers
          if (connections % 2 === 0) queue = sessionPrefix(rand);
        }
        const message = queue.shift() ?? fuzz.next();
        let sent = true;
        try {
          native.sendFds(fd, message.fds, message.bytes);
        } catch (error) {
          const code = (error as { code?: string }).code;
          if (code !== 'EPIPE' && code !== 'ECONNRESET') throw error;
          sent = false;
        }
        fuzz.closeFds(message.fds); // the daemon has its own copies
        if (!sent) {
          closedByDaemon++;
          hangUp();
          queue = [];
          continue;
        }
        if (message.hangUp) {
          hangUp();
          queue = [];
          continue;
        }
        if (!(await drain(queue.length ? 20 : 5))) {
          closedByDaemon++;
          hangUp();
          queue = [];
        }
        if (!daemon.alive()) break;
      }
    } finally {
      hangUp();
    }
    console.log(`    fuzz (DAEMON_FUZZ_SEED=${seed}): ${MESSAGES} messages over ${connections} connections, ` +
      `${closedByDaemon} closed by the daemon, ${replies} replies; daemon log: ${daemon.events('bad-message').length} bad-message, ` +
      `${daemon.events('request-failed').length} request-failed, ${daemon.events('queue-error').length} queue-error`);
    assert.ok(daemon.alive(), `the daemon died under the fuzz (seed ${seed})`);
    const crashes = [...daemon.events('fatal'), ...daemon.events('connection-crashed')];
    assert.is(crashes.length, 0, `the fuzz crashed a connection (seed ${seed}): ${JSON.stringify(crashes[0])}`);
    await assertReleased(daemon, idle, `after the fuzz (seed ${seed})`);

    // The daemon's log reaches us through a pipe: its line for the last fuzz connection may
    // still be on the way, and must not be counted as QEMU's below.
    await readUntil(() => daemon.events('connected', fuzzFrom).length, (n) => n >= connections);
    const from = daemon.mark();
    const { output, rc } = await guestOn(ns, daemon, `ping -c 3 -W 2 ${HOST}`, 60_000).exited;
    assert.match(output, /3 packets transmitted, 3 packets received/, `QEMU after the fuzz could not ping (seed ${seed})${says(output)}`);
    assert.is(rc, 0, says(output));
    assert.is(daemon.events('connected', from).length, 1);
  });
  console.log(`    (${seconds(t0)})`);
});

test.run();
