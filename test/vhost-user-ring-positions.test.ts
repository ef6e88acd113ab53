// The ring state file (src/vhost-user/ring-positions.ts, VhostUserServer's
// ringPositionsPath): packed rings keep no index in guest memory, so after the
// daemon restarts QEMU sends the base it sent when the rings first started
// (0x80008000 for a fresh ring), long stale. The new server must resume each
// packed ring where the old one left it, and only then: not for a frontend that
// knows better (GET_VRING_BASE), not for other memory, not from a file that is
// not ours, never for split rings. The "daemon" here is a VhostUserServer and a
// VirtioNetDevice in this process, stopped and made anew on the same tap,
// socket and file, as a restart does (nothing is said to the frontend first).
import dgram from 'node:dgram';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { Tap } from '../src';
import { errorCode } from '../src/errors';
import { EventFd } from '../src/virtio/eventfd';
import type { PackedQueueDriver } from '../src/virtio/driver/packed-queue-driver';
import { PACKED_RING_BASE_FRESH, encodePackedRingBase, type PackedRingPosition } from '../src/virtio/ring-base';
import { VirtioNetDevice } from '../src/virtio/net-device';
import { VhostUserServer } from '../src/vhost-user/server';
import { GUEST_IP, HOST_IP } from './helpers/datapath';
import { GUEST_MAC, ethernet, ipv4, parseUdp, pattern, udp } from '../harness/packets';
import { sleep, until } from '../harness/wait';
import { assertPrivateNetns, fdCount, run, uniqueName } from './helpers/system';
import { VhostUserFrontend, VhostUserGuest, packedUsedEnd, type GuestOptions } from './helpers/vhost-user-frontend';
import { hostSocket } from './helpers/device';

assertPrivateNetns();

const GUEST_MAC_STRING = '52:54:00:12:34:56';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vhost-user-rings-'));
/** The file: a 64-byte header ('vhost-tap rings1' first), then 48 bytes per ring; 32 KiB in all. */
const MAGIC = 'vhost-tap rings1';
const FILE_BYTES = 32768;
const HEADER_BYTES = 64;
const RECORD_BYTES = 48;
const FRESH = PACKED_RING_BASE_FRESH;
/** A queue size that is no power of 2 (2.8.10.1), small enough for the traffic to wrap the rings. */
const PACKED: GuestOptions = { features: { ringPacked: true }, queueSize: 48 };

const hex = (n: number): string => `0x${n.toString(16)}`;
const packedBase = (p: PackedRingPosition): number => encodePackedRingBase(p, p);

interface LogEntry {
  event: string;
  fields: Record<string, unknown>;
}

/** A server and its device: what one run of the daemon is. */
interface Daemon {
  device: VirtioNetDevice;
  server: VhostUserServer;
  logs: LogEntry[];
  events(name: string): Record<string, unknown>[];
}

interface Rig {
  tap: Tap;
  hostMac: Buffer;
  socket: string;
  file: string;
  /** A new daemon on the tap, the socket and the ring state file (or `file`). */
  start(file?: string): Daemon;
  /** The daemon goes away as a restart makes it: no GET_VRING_BASE first. */
  stop(d: Daemon): Promise<void>;
  connect(): VhostUserFrontend;
}

async function withRig(pairs: number, body: (rig: Rig) => Promise<void>): Promise<void> {
  const warm = EventFd.create(); // the fd poller exists before anyone counts
  await warm.wait(1);
  warm.close();
  const tap = Tap.create({ name: uniqueName('vrp'), queues: pairs });
  const dir = fs.mkdtempSync(path.join(tmp, 'rig-'));
  const socket = path.join(dir, 'sock');
  const file = path.join(dir, 'rings');
  const running = new Set<Daemon>();
  const stop = async (d: Daemon): Promise<void> => {
    running.delete(d);
    await d.server.stop();
    d.device.close();
  };
  try {
    run('ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', tap.name]);
    run('ip', ['neigh', 'replace', GUEST_IP, 'lladdr', GUEST_MAC_STRING, 'dev', tap.name, 'nud', 'permanent']);
    const [link] = JSON.parse(run('ip', ['-j', 'link', 'show', 'dev', tap.name])) as { address: string }[];
    const hostMac = Buffer.from(link!.address.split(':').map((h) => parseInt(h, 16)));
    await body({
      tap, hostMac, socket, file,
      start: (at = file) => {
        const logs: LogEntry[] = [];
        const device = new VirtioNetDevice({ tap, controlQueue: 'frontend', mac: GUEST_MAC_STRING });
        const server = new VhostUserServer({ device, socketPath: socket, ringPositionsPath: at, log: (event, fields) => logs.push({ event, fields: fields ?? {} }) });
        try {
          server.start();
        } catch (error) {
          device.close();
          throw error;
        }
        const d: Daemon = { device, server, logs, events: (name) => logs.filter((l) => l.event === name).map((l) => l.fields) };
        running.add(d);
        return d;
      },
      stop,
      connect: () => VhostUserFrontend.connect(socket),
    });
  } finally {
    for (const d of running) await stop(d);
    tap.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Nothing went wrong in this daemon's sessions. */
function noFailures(d: Daemon): void {
  const bad = d.logs.filter((l) => ['request-failed', 'connection-crashed', 'restore-failed'].includes(l.event));
  assert.equal(bad, [], 'no request failed');
  assert.ok(d.device.stats().pairs.every((p) => !p.rxBroken && !p.txBroken), 'no ring broken');
}

/** The ring-resumed lines, as [ring, given, base]. */
function resumed(d: Daemon): [number, string, string][] {
  return d.events('ring-resumed').map((f) => [Number(f.ring), String(f.given), String(f.base)] as [number, string, string]).sort((a, b) => a[0] - b[0]);
}

function guestFrame(hostMac: Buffer, srcPort: number, dstPort: number, payload: Buffer): Buffer {
  return ethernet(hostMac, GUEST_MAC, 0x0800, ipv4(GUEST_IP, HOST_IP, 17, udp(GUEST_IP, HOST_IP, srcPort, dstPort, payload, 'full')));
}

interface HostSocket {
  port: number;
  received: Buffer[];
  close(): void;
}

/** Datagrams from one socket of the host to `port` of the guest: one flow, so one queue pair, in order. */
async function toGuest(port: number, payloads: readonly Buffer[]): Promise<void> {
  const socket = dgram.createSocket('udp4');
  try {
    for (const p of payloads) await new Promise<void>((resolve, reject) => socket.send(p, port, GUEST_IP, (e) => (e ? reject(e) : resolve())));
  } finally {
    socket.close();
  }
}

/** What reaches the guest on any of its pairs for `port`, until `count` of them came (or `timeoutMs`). */
async function receiveOn(guest: VhostUserGuest, port: number, count: number, timeoutMs = 3000): Promise<Buffer[]> {
  const got: Buffer[] = [];
  const end = Date.now() + timeoutMs;
  while (got.length < count && Date.now() < end) {
    for (let pair = 0; pair < guest.driver.queuePairs; pair++) {
      for (const r of await guest.driver.receive(pair, { timeoutMs: 10 })) {
        const u = parseUdp(r.frame);
        if (u?.dstPort === port) got.push(u.payload);
      }
    }
  }
  return got;
}

/** `count` frames from the guest on `pair` arrive at the host byte-exact, in order, once (`host` may already hold `already`). */
async function guestToHost(rig: Rig, guest: VhostUserGuest, host: HostSocket, pair: number, count: number, seed: number): Promise<void> {
  const already = host.received.length;
  const payloads = Array.from({ length: count }, (_, i) => pattern(60 + ((i * 37) % 900), seed + i));
  // In bursts the host socket's receive buffer holds.
  for (let at = 0; at < count; at += 40) {
    const burst = payloads.slice(at, at + 40);
    await guest.driver.sendBatch(pair, burst.map((p) => ({ frame: guestFrame(rig.hostMac, 4000 + pair, host.port, p) })));
    await until(`${at + burst.length} of ${count} frames from pair ${pair} at the host`, () => host.received.length >= already + at + burst.length);
  }
  await sleep(20);
  assert.is(host.received.length, already + count, 'no frame sent twice');
  assert.equal(host.received.slice(already), payloads, `pair ${pair}: every frame, in order`);
}

/** `count` flows from the host, each once and byte-exact at the guest (on whichever pair the tap puts it). */
async function hostToGuest(guest: VhostUserGuest, basePort: number, count: number): Promise<void> {
  const sender = dgram.createSocket('udp4');
  const got = new Map<number, Buffer>();
  try {
    for (let i = 0; i < count; i++) {
      await new Promise<void>((resolve, reject) => sender.send(pattern(30 + 23 * i, basePort + i), basePort + i, GUEST_IP, (e) => (e ? reject(e) : resolve())));
    }
    const end = Date.now() + 3000;
    while (got.size < count && Date.now() < end) {
      for (let pair = 0; pair < guest.driver.queuePairs; pair++) {
        for (const r of await guest.driver.receive(pair, { timeoutMs: 10 })) {
          const u = parseUdp(r.frame);
          if (!u || u.dstPort < basePort || u.dstPort >= basePort + count) continue;
          assert.not.ok(got.has(u.dstPort), `flow ${u.dstPort} delivered twice`);
          got.set(u.dstPort, u.payload);
        }
      }
    }
  } finally {
    sender.close();
  }
  assert.is(got.size, count, `${got.size} of ${count} flows reached the guest`);
  for (const [port, payload] of got) assert.ok(payload.equals(pattern(30 + 23 * (port - basePort), port)), `flow ${port}: payload differs`);
}

/** The guest's driver starts over in the same memory (a device reset): fresh rings, zeroed, at the same addresses. */
function resetGuest(guest: VhostUserGuest, pairs: number, options: GuestOptions): VhostUserGuest {
  const addresses = (g: VhostUserGuest): number[] => [...Array(pairs).keys()].flatMap((p) => [g.driver.queueConfig(p).rx.descAddr, g.driver.queueConfig(p).tx.descAddr]);
  const before = addresses(guest);
  guest.driver.close();
  const again = VhostUserGuest.inMemory(guest.memory, pairs, options);
  assert.equal(addresses(again), before, 'the rings are where they were');
  return again;
}

function readFile(file: string): Buffer {
  return fs.readFileSync(file);
}

/** Every ring record of the file is zero: none used. */
function noRecords(file: string, what: string): void {
  const bytes = readFile(file);
  assert.is(bytes.length, FILE_BYTES, `${what}: the file is 32 KiB`);
  assert.is(bytes.subarray(0, MAGIC.length).toString('latin1'), MAGIC, `${what}: our header`);
  assert.ok(bytes.subarray(HEADER_BYTES).every((b) => b === 0), `${what}: no ring recorded`);
}

// ---------------------------------------------------------------------------

test('a daemon restarted under a running packed guest (no GET_VRING_BASE): the stale bases QEMU sends again are replaced by the positions in the ring state file, and traffic goes on both ways, nothing lost or repeated', async () => {
  await withRig(2, async (rig) => {
    const guest = VhostUserGuest.create(2, PACKED);
    const host = await hostSocket(5500);
    let d = rig.start();
    let fe = rig.connect();
    try {
      await fe.startDevice(2, { guest });
      assert.equal(resumed(d), [], 'a first start resumes nothing');
      // Enough traffic to take the tx rings past their end (wrap counter 0) and the rx rings around.
      await guestToHost(rig, guest, host, 0, 70, 100);
      await guestToHost(rig, guest, host, 1, 30, 200);
      await hostToGuest(guest, 6500, 60);
      // In flight across the restart: frames the device put in an rx ring and the guest has not taken.
      const held = Array.from({ length: 6 }, (_, i) => pattern(77, 900 + i));
      await toGuest(5599, held);
      const unreaped = (): number => [0, 1].reduce((n, pair) => n + packedUsedEnd(guest.memory, guest.driver.rxQueue(pair)).unreaped, 0);
      await until('the frames in the rx ring', () => unreaped() >= held.length);
      noFailures(d);

      // The daemon goes: QEMU sees the socket close and can ask nothing.
      await rig.stop(d);
      fe.close();
      // Where the old daemon left each ring, read in the ring itself.
      const at = [0, 1].flatMap((pair) => [guest.driver.rxQueue(pair), guest.driver.txQueue(pair)].map((q) => packedUsedEnd(guest.memory, q).position));
      for (const pair of [0, 1]) {
        assert.equal(at[2 * pair + 1], (guest.driver.txQueue(pair) as PackedQueueDriver<number>).nextAvail, `pair ${pair}: the old daemon completed every tx chain`);
      }
      assert.equal(at[1], { index: 70 - 48, wrap: 0 }, 'tx 0 wrapped');
      // While it is down, the guest sends more: the frames wait in the tx rings.
      const waiting = [0, 1].map((pair) => Array.from({ length: 4 }, (_, i) => pattern(90, 700 + 10 * pair + i)));
      for (const pair of [0, 1]) await guest.driver.sendBatch(pair, waiting[pair]!.map((p) => ({ frame: guestFrame(rig.hostMac, 4000 + pair, 5500, p) })));
      await sleep(20);
      assert.is(host.received.length, 100, 'nothing moves without a daemon');

      // The new daemon; QEMU sends the bases it sent when the rings started.
      d = rig.start();
      fe = rig.connect();
      await fe.startDevice(2, { guest, bases: [FRESH, FRESH, FRESH, FRESH], enableFirst: true });
      assert.equal(resumed(d), at.map((p, ring) => [ring, hex(FRESH), hex(packedBase(p))]), 'every ring resumed from the file, where the old daemon left it');
      // The frames sent while it was down: once each, in order per pair.
      await until('the frames that waited', () => host.received.length >= 108);
      await sleep(50);
      assert.is(host.received.length, 108, 'none sent twice');
      const after = host.received.slice(100).map((b) => b.toString('hex')).sort();
      assert.equal(after, waiting.flat().map((b) => b.toString('hex')).sort());
      for (const pair of [0, 1]) {
        const sent = host.received.slice(100).filter((b) => waiting[pair]!.some((w) => w.equals(b)));
        assert.equal(sent, waiting[pair], `pair ${pair}: in order`);
      }
      // The frames in flight at the restart: once each, in order.
      assert.equal(await receiveOn(guest, 5599, held.length), held);
      // And on: both ways, the rings around again.
      await guestToHost(rig, guest, host, 0, 60, 300);
      await guestToHost(rig, guest, host, 1, 60, 400);
      await hostToGuest(guest, 6600, 60);
      assert.is((await receiveOn(guest, 5599, 1, 100)).length, 0, 'nothing delivered twice');
      noFailures(d);
    } finally {
      fe.close();
      host.close();
      guest.close();
    }
  });
});

test('a restart after a vm stop and cont: the base QEMU got from GET_VRING_BASE and sent at cont, stale again, is replaced too', async () => {
  await withRig(1, async (rig) => {
    const guest = VhostUserGuest.create(1, PACKED);
    const host = await hostSocket(5510);
    let d = rig.start();
    let fe = rig.connect();
    try {
      await fe.startDevice(1, { guest });
      await guestToHost(rig, guest, host, 0, 20, 100);
      await hostToGuest(guest, 6510, 10);
      const bases = await fe.stopDevice(1);
      await fe.startDevice(1, { guest, bases });
      await guestToHost(rig, guest, host, 0, 40, 200);
      await hostToGuest(guest, 6520, 30);
      await rig.stop(d);
      fe.close();
      const at = [guest.driver.rxQueue(0), guest.driver.txQueue(0)].map((q) => packedUsedEnd(guest.memory, q).position);
      d = rig.start();
      fe = rig.connect();
      await fe.startDevice(1, { guest, bases });
      assert.equal(resumed(d), at.map((p, ring) => [ring, hex(bases[ring]!), hex(packedBase(p))]));
      await guestToHost(rig, guest, host, 0, 30, 300);
      await hostToGuest(guest, 6560, 30);
      noFailures(d);
    } finally {
      fe.close();
      host.close();
      guest.close();
    }
  });
});

test('a frontend that got GET_VRING_BASE is not overridden: a fresh base for rings the guest then reset, and the base it got, are taken as given after a restart', async () => {
  await withRig(1, async (rig) => {
    let guest = VhostUserGuest.create(1, PACKED);
    const host = await hostSocket(5520);
    let d = rig.start();
    let fe = rig.connect();
    try {
      await fe.startDevice(1, { guest });
      await guestToHost(rig, guest, host, 0, 70, 100);
      await hostToGuest(guest, 6530, 30);
      // vm stop: QEMU learns where the rings are (GET_VRING_BASE). Then the guest resets its
      // device: fresh rings in the same memory at the same addresses, and QEMU sends a fresh
      // ring's base, 0x80008000, the very base the file recorded when these rings started. The
      // daemon restarting meanwhile must not resume the old positions on the new rings.
      await fe.stopDevice(1);
      await rig.stop(d);
      fe.close();
      guest = resetGuest(guest, 1, PACKED);
      d = rig.start();
      fe = rig.connect();
      await fe.startDevice(1, { guest });
      assert.equal(resumed(d), [], 'a ring the frontend knows about is never resumed from the file');
      await guestToHost(rig, guest, host, 0, 70, 200);
      await hostToGuest(guest, 6570, 30);
      noFailures(d);

      // vm stop, and the daemon restarts: QEMU sends the bases it got, where the rings are.
      const bases = await fe.stopDevice(1);
      for (const base of bases) assert.is(base >>> 16, base & 0xffff, `base ${hex(base)}: used == avail`);
      assert.is(bases[1], packedBase({ index: 70 - 48, wrap: 0 }));
      await rig.stop(d);
      fe.close();
      await guest.driver.send(0, guestFrame(rig.hostMac, 4000, 5520, pattern(100, 1)));
      d = rig.start();
      fe = rig.connect();
      await fe.startDevice(1, { guest, bases });
      assert.equal(resumed(d), [], 'the bases QEMU got are where the rings are');
      await until('the frame sent while stopped', () => host.received.length === 141);
      await guestToHost(rig, guest, host, 0, 60, 300);
      await hostToGuest(guest, 6600, 60);
      noFailures(d);
    } finally {
      fe.close();
      host.close();
      guest.close();
    }
  });
});

test('a restart with a different guest memory (another memfd, the rings at the same addresses): nothing resumed from the file', async () => {
  await withRig(1, async (rig) => {
    const first = VhostUserGuest.create(1, PACKED);
    let second: VhostUserGuest | undefined;
    const host = await hostSocket(5530);
    let d = rig.start();
    let fe = rig.connect();
    try {
      await fe.startDevice(1, { guest: first });
      await guestToHost(rig, first, host, 0, 70, 100);
      await hostToGuest(first, 6530, 30);
      await rig.stop(d);
      fe.close();
      // Another VM (or this one's memory made anew) with the same layout: the same ring
      // addresses and sizes, the same stale base; only the memory file differs.
      second = VhostUserGuest.create(1, PACKED);
      assert.is(second.driver.queueConfig(0).rx.descAddr, first.driver.queueConfig(0).rx.descAddr);
      assert.is(second.driver.queueConfig(0).tx.descAddr, first.driver.queueConfig(0).tx.descAddr);
      assert.is.not(fs.fstatSync(second.memory.regions[0]!.fd).ino, fs.fstatSync(first.memory.regions[0]!.fd).ino);
      d = rig.start();
      fe = rig.connect();
      await fe.startDevice(1, { guest: second });
      assert.equal(resumed(d), [], 'not this memory\'s rings');
      await guestToHost(rig, second, host, 0, 60, 200);
      await hostToGuest(second, 6600, 60);
      noFailures(d);
    } finally {
      fe.close();
      host.close();
      first.close();
      second?.close();
    }
  });
});

test('a file at the path that is not ours is started afresh: something else, or ours cut short or with its header damaged, whose records would otherwise be resumed', async () => {
  await withRig(1, async (rig) => {
    // Someone else's file.
    fs.writeFileSync(rig.file, 'not a ring state file\n'.repeat(100));
    await rig.stop(rig.start());
    noRecords(rig.file, 'a foreign file');

    // Records a restart would resume (a packed guest stopped without GET_VRING_BASE), in a file
    // cut short, and in one whose header is damaged.
    let guest = VhostUserGuest.create(1, PACKED);
    const host = await hostSocket(5540);
    let d = rig.start();
    let fe = rig.connect();
    try {
      await fe.startDevice(1, { guest });
      await guestToHost(rig, guest, host, 0, 70, 100);
      await hostToGuest(guest, 6540, 30);
      await rig.stop(d);
      fe.close();
      const bytes = readFile(rig.file);
      assert.ok(bytes.subarray(HEADER_BYTES, HEADER_BYTES + 2 * RECORD_BYTES).some((b) => b !== 0), 'the rings were recorded');
      fs.truncateSync(rig.file, 1000); // the records of rings 0 and 1 are still there
      await rig.stop(rig.start());
      noRecords(rig.file, 'a file cut short');
      fs.writeFileSync(rig.file, bytes);
      const fd = fs.openSync(rig.file, 'r+');
      try {
        fs.writeSync(fd, Buffer.from('X'), 0, 1, 0);
      } finally {
        fs.closeSync(fd);
      }
      // The guest reset its rings meanwhile (fresh ones at the same addresses, base 0x80008000):
      // resuming the old records would leave it without a network.
      guest = resetGuest(guest, 1, PACKED);
      d = rig.start();
      noRecords(rig.file, 'our file with its header damaged');
      fe = rig.connect();
      await fe.startDevice(1, { guest });
      assert.equal(resumed(d), []);
      await guestToHost(rig, guest, host, 0, 60, 200);
      await hostToGuest(guest, 6600, 60);
      noFailures(d);
    } finally {
      fe.close();
      host.close();
      guest.close();
    }
  });
});

test('records naming a slot past the ring (a damaged file) are not resumed: the given base is taken', async () => {
  await withRig(1, async (rig) => {
    let guest = VhostUserGuest.create(1, PACKED);
    const host = await hostSocket(5550);
    let d = rig.start();
    let fe = rig.connect();
    try {
      await fe.startDevice(1, { guest });
      await guestToHost(rig, guest, host, 0, 20, 100);
      await hostToGuest(guest, 6550, 20);
      await rig.stop(d);
      fe.close();
      // Each ring's record: position and pending position (u32 at 0 and 4) past the ring's 48 slots.
      const fd = fs.openSync(rig.file, 'r+');
      try {
        for (const [ring, slot] of [[0, 48], [1, 0x7fff]] as const) {
          const word = Buffer.alloc(8);
          word.writeUInt32LE(slot | 0x8000, 0);
          word.writeUInt32LE(slot | 0x8000, 4);
          fs.writeSync(fd, word, 0, 8, HEADER_BYTES + RECORD_BYTES * ring);
        }
      } finally {
        fs.closeSync(fd);
      }
      guest = resetGuest(guest, 1, PACKED);
      d = rig.start();
      fe = rig.connect();
      await fe.startDevice(1, { guest });
      assert.equal(resumed(d), []);
      await guestToHost(rig, guest, host, 0, 60, 200);
      await hostToGuest(guest, 6600, 60);
      noFailures(d);
    } finally {
      fe.close();
      host.close();
      guest.close();
    }
  });
});

test('a ringPositionsPath that cannot be used (a directory, a missing directory, a fifo, a symbolic link) makes start() fail with a coded error, and changes nothing', async () => {
  await withRig(1, async (rig) => {
    const dir = path.join(path.dirname(rig.file), 'a-directory');
    fs.mkdirSync(dir);
    const fifo = path.join(path.dirname(rig.file), 'a-fifo');
    run('mkfifo', [fifo]);
    const target = path.join(path.dirname(rig.file), 'a-target');
    fs.writeFileSync(target, 'left alone');
    const link = path.join(path.dirname(rig.file), 'a-symlink');
    fs.symlinkSync(target, link);
    const cases = [
      ['a directory', dir], ['a path in a missing directory', path.join(dir, 'missing', 'rings')], ['a fifo', fifo], ['a symbolic link', link],
    ] as const;
    for (const [what, file] of cases) {
      const fds = fdCount();
      let thrown: unknown;
      try {
        rig.start(file);
      } catch (error) {
        thrown = error;
      }
      assert.ok(thrown instanceof Error, `${what}: start() throws`);
      assert.match(errorCode(thrown) ?? '', /^E[A-Z]+$/, `${what}: a coded error: ${String(errorCode(thrown))}`);
      assert.ok((thrown as Error).message.includes(file), `${what}: the message names the path: ${(thrown as Error).message}`);
      assert.not.ok(fs.existsSync(rig.socket), `${what}: no socket listening`);
      assert.equal(fs.readdirSync(dir), [], `${what}: nothing made in the directory`);
      assert.is(fdCount(), fds, `${what}: no fd kept`);
    }
    assert.ok(fs.statSync(fifo).isFIFO(), 'the fifo is still one');
    assert.is(fs.readFileSync(target, 'utf8'), 'left alone', 'the file the link points to is untouched');
    // The same server, given a path it can use, then serves.
    const d = rig.start();
    const fe = rig.connect();
    try {
      assert.is((await fe.init()).queues, 1);
    } finally {
      fe.close();
    }
    await rig.stop(d);
  });
});

test('split rings with a ring state file: nothing recorded, and after a restart they resume from the used indices as before', async () => {
  await withRig(1, async (rig) => {
    const guest = VhostUserGuest.create(1, { timeoutMs: 2000 });
    const host = await hostSocket(5560);
    let d = rig.start();
    let fe = rig.connect();
    try {
      await fe.startDevice(1, { guest });
      await guestToHost(rig, guest, host, 0, 70, 100);
      await hostToGuest(guest, 6560, 30);
      await rig.stop(d);
      fe.close();
      noRecords(rig.file, 'split rings');
      await guest.driver.send(0, guestFrame(rig.hostMac, 4000, 5560, pattern(100, 1)));
      d = rig.start();
      fe = rig.connect();
      await fe.startDevice(1, { guest, resume: true });
      assert.equal(resumed(d), []);
      await until('the frame sent while the daemon was away', () => host.received.length === 71);
      await guestToHost(rig, guest, host, 0, 300, 200);
      await hostToGuest(guest, 6600, 60);
      noRecords(rig.file, 'split rings, after the restart');
      noFailures(d);
    } finally {
      fe.close();
      host.close();
      guest.close();
    }
  });
});

test.after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

test.run();
