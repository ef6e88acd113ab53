// Fuzzing the vhost-user backend's message handling: 2000 random messages
// (random and valid request codes, random flags, random and plausible payloads,
// truncated messages, eventfds and memfds riding along) on new or reused
// connections against one in-process server. And what a hostile frontend does:
// messages delivered in pieces (some slower than the server's message
// deadline), fds of the wrong kind where eventfds belong (memfds, pipes,
// sockets, /dev/null), eventfds at the edge of overflow or blocking, and the
// guest's own memory removed and added back under running rings. The process
// must neither crash nor hang, every fd it received must be closed once the
// connections are gone, and a well-behaved frontend must get a working device
// afterwards.
//
// Reproduce a failure with VHOST_USER_FUZZ_SEED=<seed printed on failure>.
import dgram from 'node:dgram';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { Tap } from '../src';
import { native } from '../src/native';
import { FLAG_NEED_REPLY, Request, encodeMessage } from '../src/vhost-user/protocol';
import { VhostUserServer } from '../src/vhost-user/server';
import { SUPPORTED_PROTOCOL_FEATURES } from '../src/vhost-user/session';
import { EventFd } from '../src/virtio/eventfd';
import { VirtioNetDevice } from '../src/virtio/net-device';
import { GUEST_IP, HOST_IP } from './helpers/datapath';
import { GUEST_MAC, ethernet, ipv4, parseUdp, pattern, udp } from '../harness/packets';
import { sleep } from '../harness/wait';
import { assertPrivateNetns, fdCount, run, uniqueName } from './helpers/system';
import { PROTOCOL_PROTOCOL_FEATURES, USER_BASE, VhostUserFrontend, VhostUserGuest, encodeSingleRegion } from './helpers/vhost-user-frontend';
import { prng } from '../harness/prng';

assertPrivateNetns();

const SEED = process.env.VHOST_USER_FUZZ_SEED !== undefined ? Number(process.env.VHOST_USER_FUZZ_SEED) >>> 0 : (Date.now() ^ (process.pid << 16)) >>> 0;
const MESSAGES = 2000;
const TIME_LIMIT_MS = 30_000;
const PING_TIMEOUT_MS = 3000;
/** The server's message deadline here: short, so that the messages sent slower than it cost little time. */
const MESSAGE_DEADLINE_MS = 200;
/** VHOST_USER_FUZZ_TRACE=1 prints every message before it is sent (synchronously: the last line survives a hang). */
const TRACE = process.env.VHOST_USER_FUZZ_TRACE === '1';

/** mulberry32: small, fast, and the same sequence for the same seed. */
/**
 * A watchdog on its own thread: if the event loop is wedged (a blocking call
 * that never returns), no timer of ours can fire, so it prints the seed and
 * aborts the process.
 */
function watchdog(ms: number, seed: number): { online: Promise<void>; cancel(): Promise<void> } {
  const shared = new SharedArrayBuffer(4);
  const worker = new Worker(`
    const { workerData } = require('node:worker_threads');
    const flag = new Int32Array(workerData.shared);
    if (Atomics.wait(flag, 0, 0, workerData.ms) === 'timed-out') {
      require('node:fs').writeSync(2, '\\nvhost-user fuzz: the process made no progress for ' + workerData.ms + ' ms (seed ' + workerData.seed + '): aborting\\n');
      process.kill(process.pid, 'SIGABRT');
    }
  `, { eval: true, workerData: { shared, ms, seed } });
  worker.unref();
  return {
    online: new Promise((resolve) => worker.once('online', () => resolve())),
    // Resolves once its thread is gone, so that the tests after this one count threads and fds without it.
    cancel: () => {
      const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
      worker.ref(); // until it has gone
      const flag = new Int32Array(shared);
      Atomics.store(flag, 0, 1);
      Atomics.notify(flag, 0);
      return exited;
    },
  };
}

const REQUESTS = Object.values(Request).filter((v): v is number => typeof v === 'number');

/** What a frontend may pass where an fd goes: eventfds as they should be and as they should not, and other files. */
type FdKind = 'eventfd' | 'memfd' | 'pipe' | 'socket' | 'devnull' | 'overflowing-eventfd' | 'blocking-eventfd';

interface FuzzMessage {
  request: number;
  flags: number;
  payload: Buffer;
  /** Fds to create and send with it. */
  fds: { kind: FdKind; size: number }[];
  truncate?: 'header' | 'payload';
  /** Sent in this many pieces (the fds with the first), with pauses in between; a pause past the deadline gets the connection dropped. */
  slow?: { pieces: number; pauseMs: number };
}

/** Where a ring's eventfd goes: mostly an eventfd, else anything else a frontend might send. */
const RING_FD_KINDS: readonly FdKind[] = ['memfd', 'pipe', 'socket', 'devnull', 'overflowing-eventfd', 'blocking-eventfd'];

class Generator {
  constructor(readonly r: () => number, private readonly offeredFeatures: bigint) {}

  int(min: number, max: number): number {
    return min + Math.floor(this.r() * (max - min + 1));
  }

  chance(p: number): boolean {
    return this.r() < p;
  }

  pick<T>(list: readonly T[]): T {
    return list[Math.floor(this.r() * list.length)]!;
  }

  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = Math.floor(this.r() * 256);
    return b;
  }

  u64(): bigint {
    return (BigInt(this.int(0, 0xffffffff)) << 32n) | BigInt(this.int(0, 0xffffffff));
  }

  ringIndex(): number {
    return this.chance(0.9) ? this.int(0, 5) : this.int(0, 0xffffffff);
  }

  u64Payload(value: bigint): Buffer {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, value));
    return b;
  }

  vringState(index: number, num: number): Buffer {
    const b = Buffer.alloc(8);
    b.writeUInt32LE(index >>> 0, 0);
    b.writeUInt32LE(num >>> 0, 4);
    return b;
  }

  region(): { payload: Buffer; memfd: { kind: 'memfd'; size: number } } {
    const size = this.chance(0.9) ? this.int(1, 4) * 0x10000 : this.int(1, 0xfffff);
    const offset = this.pick([0, 0, 0x10000, this.int(0, 0x40000)]);
    const gpa = this.chance(0.9) ? this.int(0, 63) * 0x100000 : this.int(0, 0xffffffff) * 4096;
    const b = Buffer.alloc(32);
    b.writeBigUInt64LE(BigInt(gpa), 0);
    b.writeBigUInt64LE(this.chance(0.95) ? BigInt(size) : this.u64(), 8);
    b.writeBigUInt64LE(this.chance(0.9) ? USER_BASE + BigInt(gpa) : this.u64(), 16);
    b.writeBigUInt64LE(BigInt(offset), 24);
    const fileSize = this.chance(0.8) ? offset + size : this.int(1, offset + size);
    return { payload: b, memfd: { kind: 'memfd', size: Math.max(4096, fileSize) } };
  }

  /** A payload shaped like the request's (with a chance of being wrong). */
  plausible(request: number): { payload: Buffer; fds: FuzzMessage['fds'] } {
    const none = { fds: [] as FuzzMessage['fds'] };
    switch (request) {
      case Request.SET_FEATURES:
        return { payload: this.u64Payload((this.offeredFeatures & this.u64()) | (this.chance(0.7) ? PROTOCOL_PROTOCOL_FEATURES : 0n) | (this.chance(0.05) ? this.u64() : 0n)), ...none };
      case Request.SET_PROTOCOL_FEATURES:
        return { payload: this.u64Payload(this.chance(0.9) ? SUPPORTED_PROTOCOL_FEATURES & this.u64() : this.u64()), ...none };
      case Request.SET_STATUS:
        return { payload: this.u64Payload(this.chance(0.2) ? 0n : BigInt(this.int(0, 255))), ...none };
      case Request.SET_LOG_BASE:
        return { payload: this.u64Payload(this.u64()), ...none };
      case Request.SET_VRING_NUM:
        return { payload: this.vringState(this.ringIndex(), this.pick([1, 2, 4, 8, 16, 64, 256, 1024, 32768, 0, 3, 65536])), ...none };
      case Request.SET_VRING_BASE:
        return { payload: this.vringState(this.ringIndex(), this.chance(0.8) ? this.int(0, 0xffff) : this.int(0, 0xffffffff)), ...none };
      case Request.GET_VRING_BASE:
        return { payload: this.vringState(this.ringIndex(), 0), ...none };
      case Request.SET_VRING_ENABLE:
        return { payload: this.vringState(this.ringIndex(), this.pick([0, 1, 1, 2])), ...none };
      case Request.SET_VRING_ADDR: {
        const b = Buffer.alloc(40);
        b.writeUInt32LE(this.ringIndex() >>> 0, 0);
        b.writeUInt32LE(this.chance(0.9) ? 0 : this.int(0, 0xffffffff), 4);
        for (const off of [8, 16, 24]) b.writeBigUInt64LE(this.chance(0.9) ? USER_BASE + BigInt(this.int(0, 0x3fffff) & ~15) : this.u64(), off);
        b.writeBigUInt64LE(this.chance(0.9) ? 0n : this.u64(), 32);
        return { payload: b, ...none };
      }
      case Request.SET_VRING_KICK:
      case Request.SET_VRING_CALL:
      case Request.SET_VRING_ERR: {
        const noFd = this.chance(0.15);
        const value = BigInt(this.ringIndex() & 0xff) | (noFd ? 0x100n : 0n);
        const count = this.chance(0.85) ? (noFd ? 0 : 1) : this.int(0, 3);
        return { payload: this.u64Payload(value), fds: Array.from({ length: count }, () => ({ kind: this.chance(0.75) ? 'eventfd' : this.pick(RING_FD_KINDS), size: 4096 })) };
      }
      case Request.SET_MEM_TABLE: {
        const n = this.chance(0.95) ? this.int(1, 3) : this.pick([0, 9]);
        const head = Buffer.alloc(8);
        head.writeUInt32LE(n, 0);
        const regions = Array.from({ length: Math.min(n, 8) }, () => this.region());
        let fds: FuzzMessage['fds'] = regions.map((r) => r.memfd);
        if (this.chance(0.1)) fds = fds.slice(0, this.int(0, fds.length));
        if (this.chance(0.05)) fds = fds.map(() => ({ kind: 'eventfd', size: 0 }));
        return { payload: Buffer.concat([head, ...regions.map((r) => r.payload)]), fds };
      }
      case Request.ADD_MEM_REG:
      case Request.REM_MEM_REG: {
        const r = this.region();
        const withFd = request === Request.ADD_MEM_REG ? this.chance(0.9) : this.chance(0.3);
        return { payload: Buffer.concat([Buffer.alloc(8), r.payload]), fds: withFd ? [r.memfd] : [] };
      }
      case Request.GET_CONFIG:
      case Request.SET_CONFIG: {
        const size = this.int(0, this.chance(0.9) ? 24 : 300);
        const b = Buffer.alloc(12);
        b.writeUInt32LE(this.int(0, this.chance(0.9) ? 32 : 0xffffffff), 0);
        b.writeUInt32LE(this.chance(0.9) ? size : this.int(0, 0xffffffff), 4);
        b.writeUInt32LE(this.int(0, 3), 8);
        return { payload: Buffer.concat([b, this.bytes(this.chance(0.9) ? size : this.int(0, 40))]), ...none };
      }
      default:
        return { payload: this.chance(0.8) ? Buffer.alloc(0) : this.bytes(this.int(1, 16)), ...none };
    }
  }

  message(): FuzzMessage {
    const structured = this.chance(0.7);
    const request = structured ? this.pick(REQUESTS) : this.int(0, 60);
    const flags = this.chance(0.9) ? 1 | (this.chance(0.75) ? FLAG_NEED_REPLY : 0) : this.int(0, 0xffffffff);
    let payload: Buffer;
    let fds: FuzzMessage['fds'];
    if (structured) {
      ({ payload, fds } = this.plausible(request));
    } else {
      payload = this.bytes(this.int(0, 300));
      fds = [];
    }
    if (fds.length === 0 && this.chance(0.15)) {
      fds = Array.from({ length: this.int(1, 3) }, () => (this.chance(0.5) ? { kind: 'eventfd' as const, size: 0 } : { kind: 'memfd' as const, size: this.int(1, 64) * 4096 }));
    }
    const t = this.r();
    const truncate = t < 0.03 ? 'header' : t < 0.06 && payload.length > 0 ? 'payload' : undefined;
    // Slow: mostly within the deadline, now and then past it.
    const s = this.r();
    const slow = truncate || s >= 0.05 ? undefined : { pieces: this.int(2, 4), pauseMs: s < 0.004 ? MESSAGE_DEADLINE_MS + 50 : this.int(1, 15) };
    return { request, flags, payload, fds, ...(truncate ? { truncate } : {}), ...(slow ? { slow } : {}) };
  }
}

/** This process's open fds and what they are, for a leak report. */
function openFds(): string[] {
  return fs.readdirSync('/proc/self/fd').map((fd) => {
    try {
      return `${fd}=${fs.readlinkSync(`/proc/self/fd/${fd}`)}`;
    } catch {
      return `${fd}=?`;
    }
  });
}

/** An fd of that kind to send, and every fd made for it (to close once sent). */
function makeFd(spec: { kind: FdKind; size: number }, fifo: string): { send: number; made: number[] } {
  const one = (fd: number): { send: number; made: number[] } => ({ send: fd, made: [fd] });
  switch (spec.kind) {
    case 'eventfd':
      return one(native.eventfdCreate());
    case 'memfd':
      return one(native.memfdCreate('fuzz', Math.max(4096, spec.size)));
    case 'pipe':
      return one(fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK));
    case 'socket': {
      const pair = native.socketPair('stream');
      return { send: pair[0], made: pair };
    }
    case 'devnull':
      return one(fs.openSync('/dev/null', 'r+'));
    case 'overflowing-eventfd':
      return one(native.eventfdCreate(0xfffffffffffffffen, false));
    case 'blocking-eventfd':
      return one(native.eventfdCreate(0n, false));
  }
}

/**
 * GET_CONFIG with a nonce in its flags (the backend echoes them): once its reply
 * is back, the backend has handled everything sent before. False if the backend
 * closed the connection instead.
 */
async function ping(fe: VhostUserFrontend, nonce: number): Promise<boolean> {
  const request = Buffer.alloc(12 + 6);
  request.writeUInt32LE(0, 0);
  request.writeUInt32LE(6, 4);
  request.writeUInt32LE(nonce, 8);
  if (!fe.send(Request.GET_CONFIG, request, { flags: 1 })) return false;
  for (;;) {
    const reply = await fe.readMessage(PING_TIMEOUT_MS);
    if (!reply) return false;
    if (reply.request === Request.GET_CONFIG && reply.payload.length === 18 && reply.payload.readUInt32LE(8) === nonce) {
      assert.ok(reply.payload.subarray(12).equals(GUEST_MAC), 'the ping reply carries the MAC');
      return true;
    }
  }
}

test(`2000 random messages (seed ${SEED}): no crash, no hang, no fd leaked, and the device still works`, async () => {
  const dog = watchdog(TIME_LIMIT_MS + 15_000, SEED);
  const tap = Tap.create({ name: uniqueName('vvf'), queues: 2 });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhost-user-fuzz-'));
  const socket = path.join(dir, 'fuzz.sock');
  const logs: { event: string; fields?: Record<string, unknown> }[] = [];
  const problems: unknown[] = [];
  const onProblem = (e: unknown): void => {
    problems.push(e);
  };
  process.on('unhandledRejection', onProblem);
  process.on('uncaughtException', onProblem);
  const device = new VirtioNetDevice({ tap, controlQueue: 'frontend', mac: '52:54:00:12:34:56' });
  const server = new VhostUserServer({
    device, socketPath: socket, messageDeadlineMs: MESSAGE_DEADLINE_MS, log: (event, fields) => logs.push({ event, ...(fields ? { fields } : {}) }),
  });
  const fifo = path.join(dir, 'fifo');
  let conn: VhostUserFrontend | undefined;
  let guest: VhostUserGuest | undefined;
  const counts = { connections: 0, started: 0, closedByServer: 0, truncated: 0, withFds: 0, fdsSent: 0, slow: 0, slowPastDeadline: 0, memoryCycles: 0 };
  // Rings and buffers that fuzzed connections start the device on, with rx buffers posted.
  const fuzzGuest = VhostUserGuest.create(2, { queueSize: 16 });
  const flood = dgram.createSocket('udp4');
  try {
    run('ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', tap.name]);
    run('ip', ['neigh', 'replace', GUEST_IP, 'lladdr', '52:54:00:12:34:56', 'dev', tap.name, 'nud', 'permanent']);
    run('mkfifo', [fifo]); // each open of it is a pipe fd to pass where an eventfd belongs
    server.start();
    const warm = EventFd.create();
    await warm.wait(1);
    warm.close();
    await fs.promises.stat('/');
    await new Promise<void>((resolve) => flood.bind(0, HOST_IP, resolve)); // its fd exists from here on
    await dog.online; // and the watchdog thread's event loop has its fds
    const fdsBefore = fdCount();
    const openBefore = openFds();
    const r = prng(SEED);
    const gen = new Generator(r, device.offeredFeatures | PROTOCOL_PROTOCOL_FEATURES);
    const deadline = Date.now() + TIME_LIMIT_MS;
    let nonce = 1;
    let firstLeak: { beforeMessage: number; fds: number; open: string[] } | undefined;
    let connStarted = false;
    const [guestRegion] = fuzzGuest.regions();

    const fuzz = async (): Promise<void> => {
      for (let i = 0; i < MESSAGES; i++) {
        if (Date.now() > deadline) throw new Error(`the fuzz loop ran out of time at message ${i} of ${MESSAGES}`);
        let opened = false;
        let started = false;
        if (!conn || conn.peerClosed || gen.chance(0.03)) {
          opened = true;
          conn?.close();
          // The server takes one connection at a time with a backlog of 1, and a unix
          // connect() blocks while the backlog is full: with the server in this very
          // process that would be a deadlock. Connect once it has let go of the last one.
          const settle = Date.now() + PING_TIMEOUT_MS;
          while (server.connected || server.served < counts.connections) {
            if (Date.now() > settle) throw new Error(`message ${i}: the server did not release connection ${counts.connections} within ${PING_TIMEOUT_MS} ms`);
            await sleep(1);
          }
          // Nothing is connected: every fd of the connections so far must be closed already.
          if (firstLeak === undefined && fdCount() !== fdsBefore) {
            const now = openFds();
            firstLeak = { beforeMessage: i, fds: fdCount() - fdsBefore, open: now.filter((f) => !openBefore.includes(f)) };
          }
          conn = VhostUserFrontend.connect(socket);
          counts.connections++;
          const opening = gen.r();
          connStarted = false;
          if (opening < 0.15) {
            // A running device to fuzz: QEMU's whole start sequence on the fuzz guest's rings.
            await conn.startDevice(2, { guest: fuzzGuest });
            counts.started++;
            started = true;
            connStarted = true;
          } else if (opening < 0.75) {
            // A handshake, so that deeper states are reached: protocol features (mostly with REPLY_ACK), then features.
            const protocol = (SUPPORTED_PROTOCOL_FEATURES & gen.u64()) | (gen.chance(0.8) ? 1n << 3n : 0n);
            conn.send(Request.SET_PROTOCOL_FEATURES, gen.u64Payload(protocol), { flags: 1 });
            conn.send(Request.SET_FEATURES, gen.u64Payload((device.offeredFeatures & gen.u64()) | PROTOCOL_PROTOCOL_FEATURES), { flags: 1 });
          }
        }
        if (connStarted && gen.chance(0.05)) {
          // The rings' memory taken away under them (they wait), and mostly given back (they resume).
          const back = gen.chance(0.7);
          if (TRACE) fs.writeSync(2, `#${i} REM_MEM_REG of the guest's memory${back ? ', ADD_MEM_REG of it again' : ''}\n`);
          counts.memoryCycles++;
          conn.send(Request.REM_MEM_REG, encodeSingleRegion(guestRegion!), { flags: 1 | FLAG_NEED_REPLY });
          if (back) conn.send(Request.ADD_MEM_REG, encodeSingleRegion(guestRegion!), { flags: 1 | FLAG_NEED_REPLY, fds: [guestRegion!.fd] });
          assert.ok(await ping(conn, nonce++), `message ${i}: removing and adding memory ended the connection`);
          continue;
        }
        const m = gen.message();
        if (TRACE) {
          fs.writeSync(2, `#${i} ${opened ? `(new connection ${counts.connections}${started ? ', started' : ''}) ` : ''}request ${m.request} flags 0x${m.flags.toString(16)} payload ${m.payload.toString('hex')} fds ${JSON.stringify(m.fds)}${m.truncate ? ` truncated (${m.truncate})` : ''}${m.slow ? ` in ${m.slow.pieces} pieces, ${m.slow.pauseMs} ms apart` : ''}\n`);
        }
        const made = m.fds.map((spec) => makeFd(spec, fifo));
        const fds = made.map((f) => f.send);
        if (fds.length > 0) counts.withFds++;
        counts.fdsSent += fds.length;
        const bytes = encodeMessage(m.request, m.flags, m.payload);
        try {
          if (m.truncate === 'header') {
            conn.sendRaw(bytes.subarray(0, gen.int(1, 11)), fds);
          } else if (m.truncate === 'payload') {
            conn.sendRaw(bytes.subarray(0, 12 + gen.int(0, m.payload.length - 1)), fds);
          } else if (m.slow) {
            // Pieces cut anywhere (inside the header too), the fds with the first.
            counts.slow++;
            if (m.slow.pauseMs > MESSAGE_DEADLINE_MS) counts.slowPastDeadline++;
            const cuts = [...new Set(Array.from({ length: m.slow.pieces - 1 }, () => gen.int(1, bytes.length - 1)))].sort((a, b) => a - b);
            let from = 0;
            for (const to of [...cuts, bytes.length]) {
              if (!conn.sendRaw(bytes.subarray(from, to), from === 0 ? fds : [])) break;
              from = to;
              if (to < bytes.length) await sleep(m.slow.pauseMs);
            }
          } else {
            conn.sendRaw(bytes, fds);
          }
        } finally {
          for (const fd of made.flatMap((f) => f.made)) native.closeFd(fd);
        }
        if (m.truncate) {
          counts.truncated++;
          conn.close();
          conn = undefined;
          continue;
        }
        let alive: boolean;
        try {
          alive = await ping(conn, nonce++);
        } catch (error) {
          throw new Error(`message ${i} (request ${m.request}, flags 0x${m.flags.toString(16)}, ${m.payload.length} bytes, ${m.fds.length} fds): ${(error as Error).message}`);
        }
        if (!alive) {
          counts.closedByServer++;
          conn.close();
          conn = undefined;
        }
      }
    };
    // Frames keep coming in from the namespace while the messages change the device under them.
    const floodTimer = setInterval(() => {
      for (let k = 0; k < 4; k++) flood.send(pattern(200, k), 7500 + k, GUEST_IP);
    }, 3);
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        fuzz(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no end within ${TIME_LIMIT_MS + 5000} ms`)), TIME_LIMIT_MS + 5000);
        }),
      ]);
    } finally {
      clearTimeout(timer);
      clearInterval(floodTimer);
    }
    conn?.close();
    conn = undefined;
    if (TRACE) {
      const histogram: Record<string, number> = {};
      for (const l of logs) histogram[l.event] = (histogram[l.event] ?? 0) + 1;
      fs.writeSync(2, `${JSON.stringify(counts)}\n${JSON.stringify(histogram)}\n`);
    }
    const end = Date.now() + 5000;
    while ((server.connected || fdCount() !== fdsBefore) && Date.now() < end) await sleep(10);
    assert.not.ok(server.connected, 'the last connection was released');
    assert.is(firstLeak, undefined, `fds left open once the server let go of a connection: ${JSON.stringify(firstLeak)}`);
    assert.is(fdCount(), fdsBefore, `every fd received was closed (${counts.fdsSent} sent in ${counts.withFds} messages)`);
    assert.equal(problems, [], 'no uncaught exception or unhandled rejection');
    assert.is(logs.filter((l) => l.event === 'connection-crashed').length, 0, JSON.stringify(logs.filter((l) => l.event === 'connection-crashed')));
    assert.ok(counts.connections > 10 && counts.started > 5 && counts.closedByServer > 10 && counts.truncated > 10, JSON.stringify(counts));
    assert.ok(counts.slow > 20 && counts.memoryCycles > 3, `the hostile shapes were tried: ${JSON.stringify(counts)}`);

    // A well-behaved frontend now: 2 pairs, traffic both ways.
    const fe = VhostUserFrontend.connect(socket);
    conn = fe;
    guest = await fe.startDevice(2);
    const hostMac = Buffer.from(tap.mac().split(':').map((h) => parseInt(h, 16)));
    const host = dgram.createSocket('udp4');
    const received: Buffer[] = [];
    host.on('message', (msg) => received.push(msg));
    await new Promise<void>((resolve) => host.bind(5990, HOST_IP, resolve));
    try {
      for (const pair of [0, 1]) {
        await guest.driver.send(pair, ethernet(hostMac, GUEST_MAC, 0x0800, ipv4(GUEST_IP, HOST_IP, 17, udp(GUEST_IP, HOST_IP, 4000, 5990, pattern(500, pair), 'full'))));
      }
      const until = Date.now() + 5000;
      while (received.length < 2 && Date.now() < until) await sleep(5);
      assert.is(received.length, 2, 'guest to host on both pairs');
      assert.ok(received.some((b) => b.equals(pattern(500, 0))) && received.some((b) => b.equals(pattern(500, 1))));
      for (let port = 6990; port < 7022; port++) await new Promise<void>((resolve, reject) => host.send(pattern(100, port), port, GUEST_IP, (e) => (e ? reject(e) : resolve())));
      const got = new Set<number>();
      const stop = Date.now() + 5000;
      const g = guest;
      await Promise.all([0, 1].map(async (pair) => {
        while (got.size < 32 && Date.now() < stop) {
          for (const f of await g.driver.receive(pair, { timeoutMs: 50 })) {
            const u = parseUdp(f.frame);
            if (u && u.dstPort >= 6990 && u.dstPort < 7022 && u.payload.equals(pattern(100, u.dstPort))) got.add(u.dstPort);
          }
        }
      }));
      assert.is(got.size, 32, 'host to guest, byte-exact');
    } finally {
      host.close();
    }
  } catch (error) {
    console.error(`\nvhost-user fuzz failed with seed ${SEED} (rerun with VHOST_USER_FUZZ_SEED=${SEED}); ${JSON.stringify(counts)}`);
    throw error;
  } finally {
    conn?.close();
    const end = Date.now() + 5000;
    while (server.connected && Date.now() < end) await sleep(10);
    guest?.close();
    fuzzGuest.close();
    flood.close();
    await server.stop();
    device.close();
    tap.close();
    fs.rmSync(dir, { recursive: true, force: true });
    process.off('unhandledRejection', onProblem);
    process.off('uncaughtException', onProblem);
    await dog.cancel();
  }
});

test.run();
