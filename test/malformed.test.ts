// A guest that writes malformed virtqueues (virtio 1.x 2.7) must break only the
// queue it wrote: the device reports a 'queue-error' naming the problem, marks
// that one queue broken, touches nothing outside guest memory, and the other
// queue pair keeps passing traffic both ways. Each case writes raw descriptors
// and ring entries into guest memory on pair 0 of a 2-pair data path.
import dgram from 'node:dgram';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { GuestAllocator } from '../src/virtio/driver/guest-allocator';
import type { GuestMemory } from '../src/virtio/guest-memory';
import { VirtioNetDriver, type VirtioNetFeatures } from '../src/virtio/driver/net-driver';
import { QueuePair, type QueueErrorEvent } from '../src/virtio/queue-pair';
import { GUEST_IP, HOST_IP, withDataPath, type DataPath } from './helpers/datapath';
import { GUEST_MAC, ethernet, ipv4, parseUdp, pattern, udp } from '../harness/packets';
import { DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, DESC_SIZE, RawRing, writeDescs, type RawDesc } from './helpers/raw-ring';
import { sleep, until } from '../harness/wait';
import { assertPrivateNetns } from './helpers/system';
import { sendTo } from './helpers/device';

assertPrivateNetns();

const QUEUE_SIZE = 64;
const HDR_SIZE = 12;
const RX_BUFFER = 2048;
/** Generous: a stop that hangs hangs forever, a slow one under load takes a few ms. */
const STOP_MS = 1000;

let nextPort = 7100;
const ports = (): number => (nextPort += 2);

function guestUdp(dp: DataPath, srcPort: number, dstPort: number, payload: Buffer): Buffer {
  return ethernet(dp.hostMac, GUEST_MAC, 0x0800, ipv4(GUEST_IP, HOST_IP, 17, udp(GUEST_IP, HOST_IP, srcPort, dstPort, payload)));
}

/** Leaves exactly tap queue `keep` attached, so every host-to-guest frame goes through it. */
function onlyTapQueue(dp: DataPath, keep: number): void {
  dp.tap.queues.forEach((q, i) => {
    if (i === keep && !q.attached) q.attach();
    if (i !== keep && q.attached) q.detach();
  });
}

interface Traffic {
  send(pair: number, frame: Buffer): Promise<void>;
  receive(pair: number, port: number, timeoutMs: number): Promise<Buffer | undefined>;
}

function driverTraffic(driver: VirtioNetDriver): Traffic {
  return {
    send: (pair, frame) => driver.send(pair, frame),
    async receive(pair, port, timeoutMs) {
      const end = Date.now() + timeoutMs;
      while (Date.now() < end) {
        for (const r of await driver.receive(pair, { timeoutMs: 100 })) {
          const u = parseUdp(r.frame);
          if (u && u.dstPort === port) return u.payload;
        }
      }
      return undefined;
    },
  };
}

/**
 * One datagram from the driver on `pair` to a socket on HOST_IP, and one from
 * the namespace to GUEST_IP received on `pair` (its tap queue alone attached).
 */
async function assertPasses(dp: DataPath, traffic: Traffic, pair: number, tapQueue: number): Promise<void> {
  const port = ports();
  const host = dgram.createSocket('udp4');
  const got: Buffer[] = [];
  host.on('message', (m) => got.push(m));
  try {
    await new Promise<void>((resolve) => host.bind(port, HOST_IP, resolve));
    const out = pattern(300, port);
    await traffic.send(pair, guestUdp(dp, 4000, port, out));
    await until(`guest-to-host datagram on pair ${pair}`, () => got.some((m) => m.equals(out)));

    onlyTapQueue(dp, tapQueue);
    const back = pattern(400, port + 1);
    let received: Buffer | undefined;
    // Resent until it arrives: nothing should be lost, but a retry costs nothing when it is not.
    for (let attempt = 0; attempt < 10 && !received; attempt++) {
      await sendTo(host, back, port + 1, GUEST_IP);
      received = await traffic.receive(pair, port + 1, 300);
    }
    assert.ok(received, `host-to-guest datagram on pair ${pair}`);
    assert.ok(received!.equals(back), 'host-to-guest payload is byte-exact');
  } finally {
    host.close();
  }
}

interface Scratch {
  /** 16-aligned guest memory no ring or buffer uses (withDataPath leaves 1 MiB spare at the end). */
  scratch: number;
  /** Bytes of guest memory: the first address outside it. */
  memSize: number;
}

interface Case {
  name: string;
  queue: 'tx' | 'rx';
  features?: Partial<VirtioNetFeatures>;
  rxBufferSize?: number;
  /** Default QUEUE_SIZE. */
  queueSize?: number;
  message: RegExp;
  /** Writes the malformed input on pair 0's `queue` (for tx: and makes it available). */
  write(ring: RawRing, s: Scratch): void;
}

// Tx: descriptors go in the top slots of pair 0's transmit table, which the
// driver never used, and the head is made available and kicked.
const TOP = QUEUE_SIZE - 1;
const txChain = (descs: Parameters<RawRing['writeDescs']>[1]) => (ring: RawRing): void => {
  const first = ring.size - descs.length;
  ring.writeDescs(first, descs);
  ring.push(first);
};

// Rx: the driver posted every descriptor; the worker holds one chain already.
// Rewrite descriptor D and point every available entry at it, so the next chain
// the worker pops (after the next frame) is the malformed one.
const RX_HEAD = TOP;
const rxChain = (descs: (s: Scratch) => Parameters<RawRing['writeDescs']>[1]) => (ring: RawRing, s: Scratch): void => {
  const d = descs(s);
  ring.writeDescs(RX_HEAD - d.length + 1, d);
  ring.fillSlots(RX_HEAD - d.length + 1);
};

/** Writes an indirect table of `n` chained descriptors at `gpa`; returns the descriptor that refers to it. */
function indirectTable(memory: GuestMemory, gpa: number, n: number, desc: (i: number) => { addr: number; len: number; flags?: number }): RawDesc {
  writeDescs(memory, gpa, Array.from({ length: n }, (_, i) => {
    const d = desc(i);
    return { ...d, flags: (d.flags ?? 0) | (i < n - 1 ? DESC_F_NEXT : 0), next: i + 1 };
  }));
  return { addr: gpa, len: DESC_SIZE * n, flags: DESC_F_INDIRECT };
}

const cases: Case[] = [
  {
    name: 'tx: a descriptor address outside guest memory',
    queue: 'tx',
    message: /^descriptor buffer 0x[0-9a-f]+\+200 is outside guest memory$/,
    write: (ring, s) => txChain([{ addr: s.memSize + 0x100000, len: 200 }])(ring),
  },
  {
    name: 'tx: a descriptor far outside (addr near 2^64, where addr+len wraps)',
    queue: 'tx',
    message: /^descriptor buffer 0xfffffffffffffff0\+4096 is outside guest memory$/,
    write: (ring) => txChain([{ addr: 0xfffffffffffffff0n, len: 4096 }])(ring),
  },
  {
    name: 'tx: a descriptor whose addr+len runs past the end of guest memory',
    queue: 'tx',
    message: /is outside guest memory$/,
    write: (ring, s) => txChain([{ addr: s.memSize - 64, len: 128 }])(ring),
  },
  {
    name: 'tx: a chain that loops (next points back), longer than the queue',
    queue: 'tx',
    message: /^descriptor chain is longer than its table or loops$/,
    write: (ring, s) => {
      ring.writeDescs(TOP - 1, [
        { addr: s.scratch, len: 64, flags: DESC_F_NEXT, next: TOP },
        { addr: s.scratch + 64, len: 64, flags: DESC_F_NEXT, next: TOP - 1 },
      ]);
      ring.push(TOP - 1);
    },
  },
  {
    name: 'tx: a write-only descriptor in a transmit chain',
    queue: 'tx',
    message: /^write-only descriptor in a transmit chain$/,
    write: (ring, s) => txChain([{ addr: s.scratch, len: 64, flags: DESC_F_NEXT, next: TOP }, { addr: s.scratch + 64, len: 64, flags: DESC_F_WRITE }])(ring),
  },
  {
    name: 'tx: an indirect table inside an indirect table',
    queue: 'tx',
    features: { indirectDesc: true },
    message: /^indirect descriptor inside an indirect table$/,
    write: (ring, s) => {
      writeDescs(ring.memory, s.scratch, [{ addr: s.scratch + 256, len: 32, flags: DESC_F_INDIRECT }]);
      writeDescs(ring.memory, s.scratch + 256, [{ addr: s.scratch + 1024, len: 64, flags: DESC_F_NEXT, next: 1 }, { addr: s.scratch + 2048, len: 64 }]);
      txChain([{ addr: s.scratch, len: 16, flags: DESC_F_INDIRECT }])(ring);
    },
  },
  {
    name: 'tx: an indirect table whose length is not a multiple of 16',
    queue: 'tx',
    features: { indirectDesc: true },
    message: /^indirect table length 24 is not a multiple of 16/,
    write: (ring, s) => {
      writeDescs(ring.memory, s.scratch, [{ addr: s.scratch + 1024, len: 64 }, { addr: s.scratch + 2048, len: 64 }]);
      txChain([{ addr: s.scratch, len: 24, flags: DESC_F_INDIRECT }])(ring);
    },
  },
  {
    name: 'tx: an indirect descriptor when indirect descriptors were not negotiated',
    queue: 'tx',
    message: /^indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC$/,
    write: (ring, s) => {
      writeDescs(ring.memory, s.scratch, [{ addr: s.scratch + 1024, len: 64 }]);
      txChain([{ addr: s.scratch, len: 16, flags: DESC_F_INDIRECT }])(ring);
    },
  },
  {
    name: 'tx: an indirect table outside guest memory',
    queue: 'tx',
    features: { indirectDesc: true },
    message: /^indirect table is not inside guest memory$/,
    // 16-aligned, starting inside guest memory and ending past it.
    write: (ring, s) => txChain([{ addr: Math.floor(s.memSize / 16) * 16 - 32, len: 64, flags: DESC_F_INDIRECT }])(ring),
  },
  {
    name: 'tx: an indirect descriptor that also has NEXT',
    queue: 'tx',
    features: { indirectDesc: true },
    message: /^indirect descriptor with the NEXT flag$/,
    write: (ring, s) => {
      writeDescs(ring.memory, s.scratch, [{ addr: s.scratch + 1024, len: 64 }]);
      txChain([{ addr: s.scratch, len: 16, flags: DESC_F_INDIRECT | DESC_F_NEXT, next: TOP }])(ring);
    },
  },
  {
    name: 'tx: a chain of more segments than one writev takes (an indirect table of 1025)',
    queue: 'tx',
    features: { indirectDesc: true },
    queueSize: 2048,
    message: /^transmit chain has more than 1024 segments$/,
    write: (ring, s) => txChain([indirectTable(ring.memory, s.scratch, 1025, (i) => ({ addr: s.scratch + 32768 + 16 * i, len: 16 }))])(ring),
  },
  {
    // virtio 1.2 2.7.5.3.1. Zero-length descriptors take no iovec, so only the table's
    // size bounds the walk: 65536 of them cost ~0.5 ms of worker CPU per chain.
    name: 'tx: an indirect table of more descriptors than the queue size (zero-length ones)',
    queue: 'tx',
    features: { indirectDesc: true },
    message: new RegExp(`^indirect table of ${QUEUE_SIZE + 1} descriptors is larger than the queue size ${QUEUE_SIZE}$`),
    write: (ring, s) => txChain([indirectTable(ring.memory, s.scratch, QUEUE_SIZE + 1, (i) => ({ addr: s.scratch, len: i < QUEUE_SIZE ? 0 : 64 }))])(ring),
  },
  {
    // virtio 1.2 2.7.5.1; a used element's len is 32 bits. Each descriptor is inside
    // guest memory (they overlap), the chain's total is not.
    name: 'tx: a chain longer than 2^32 bytes in total',
    queue: 'tx',
    queueSize: 2048,
    message: /^descriptor chain is longer than 2\^32 bytes$/,
    write: (ring, s) => {
      const len = 1 << 23;
      assert.ok(s.memSize >= len, `guest memory of ${s.memSize} bytes holds an 8 MiB descriptor`);
      const n = Math.floor(2 ** 32 / len) + 1;
      txChain(Array.from({ length: n }, (_, i) => ({
        addr: 0, len, flags: i < n - 1 ? DESC_F_NEXT : 0, next: ring.size - n + i + 1,
      })))(ring);
    },
  },
  {
    name: 'tx: an available index that jumps by more than the queue size',
    queue: 'tx',
    message: new RegExp(`^available index jumped by ${QUEUE_SIZE + 1}, more than the queue size ${QUEUE_SIZE}$`),
    write: (ring, s) => {
      ring.writeDescs(0, [{ addr: s.scratch, len: 64 }]);
      ring.fillSlots(0);
      ring.availIdx = ring.availIdx + QUEUE_SIZE + 1;
    },
  },
  {
    name: 'tx: an available ring entry naming a head >= queue size',
    queue: 'tx',
    message: new RegExp(`^available ring names descriptor ${QUEUE_SIZE + 3} of ${QUEUE_SIZE}$`),
    write: (ring) => ring.push(QUEUE_SIZE + 3),
  },
  {
    name: 'tx: next past the end of the descriptor table',
    queue: 'tx',
    message: new RegExp(`^descriptor next ${QUEUE_SIZE + 6} is past its table$`),
    write: (ring, s) => txChain([{ addr: s.scratch, len: 64, flags: DESC_F_NEXT, next: QUEUE_SIZE + 6 }])(ring),
  },
  {
    name: 'rx: a descriptor address outside guest memory',
    queue: 'rx',
    message: /^descriptor buffer 0x[0-9a-f]+\+2048 is outside guest memory$/,
    write: rxChain((s) => [{ addr: s.memSize + 0x200000, len: RX_BUFFER, flags: DESC_F_WRITE }]),
  },
  {
    name: 'rx: an indirect table of more descriptors than the queue size',
    queue: 'rx',
    features: { indirectDesc: true },
    message: new RegExp(`^indirect table of ${QUEUE_SIZE + 1} descriptors is larger than the queue size ${QUEUE_SIZE}$`),
    write: (ring, s) => rxChain(() => [indirectTable(ring.memory, s.scratch, QUEUE_SIZE + 1, (i) => ({ addr: s.scratch + 4096 + 64 * i, len: 64, flags: DESC_F_WRITE }))])(ring, s),
  },
  {
    name: 'rx: a read-only descriptor in a receive chain',
    queue: 'rx',
    message: /^read-only descriptor in a receive chain$/,
    write: rxChain((s) => [{ addr: s.scratch, len: RX_BUFFER, flags: 0 }]),
  },
  {
    name: 'rx: a chain that loops',
    queue: 'rx',
    message: /^descriptor chain is longer than its table or loops$/,
    write: rxChain((s) => [
      { addr: s.scratch, len: 1024, flags: DESC_F_WRITE | DESC_F_NEXT, next: RX_HEAD },
      { addr: s.scratch + 1024, len: 1024, flags: DESC_F_WRITE | DESC_F_NEXT, next: RX_HEAD - 1 },
    ]),
  },
  {
    name: 'rx: an available ring entry naming a head >= queue size',
    queue: 'rx',
    message: new RegExp(`^available ring names descriptor ${QUEUE_SIZE} of ${QUEUE_SIZE}$`),
    write: (ring) => ring.fillSlots(QUEUE_SIZE),
  },
  {
    name: 'rx: an available index that jumps by more than the queue size',
    queue: 'rx',
    message: new RegExp(`^available index jumped by \\d+, more than the queue size ${QUEUE_SIZE}$`),
    // The worker's position is somewhere in 1..size: 2^15 ahead of the driver's index is too far from any of them.
    write: (ring) => {
      ring.availIdx = ring.availIdx + 0x8000;
    },
  },
  {
    name: 'rx with MRG_RXBUF (several chains held): a descriptor outside guest memory',
    queue: 'rx',
    features: { mergeableRx: true },
    rxBufferSize: 512,
    message: /^descriptor buffer 0x[0-9a-f]+\+512 is outside guest memory$/,
    write: rxChain((s) => [{ addr: s.memSize, len: 512, flags: DESC_F_WRITE }]),
  },
  {
    name: 'rx with MRG_RXBUF (several chains held): a buffer smaller than the vnet header',
    queue: 'rx',
    features: { mergeableRx: true },
    rxBufferSize: 512,
    message: new RegExp(`^receive buffer of 11 bytes cannot hold the ${HDR_SIZE}-byte header$`),
    write: rxChain((s) => [
      { addr: s.scratch, len: 5, flags: DESC_F_WRITE | DESC_F_NEXT, next: RX_HEAD },
      { addr: s.scratch + 64, len: 6, flags: DESC_F_WRITE },
    ]),
  },
  {
    name: 'rx: a buffer smaller than the vnet header',
    queue: 'rx',
    message: new RegExp(`^receive buffer of 4 bytes cannot hold the ${HDR_SIZE}-byte header$`),
    write: rxChain((s) => [{ addr: s.scratch, len: 4, flags: DESC_F_WRITE }]),
  },
];

function scratchOf(dp: DataPath): Scratch {
  const memSize = dp.memory.size;
  return { memSize, scratch: Math.floor((memSize - 65536) / 4096) * 4096 };
}

function ringOf(dp: DataPath, pair: number, queue: 'rx' | 'tx'): RawRing {
  const q = queue === 'rx' ? dp.driver.rxQueue(pair) : dp.driver.txQueue(pair);
  return new RawRing(dp.memory, q.layout, q.kickEvent);
}

/** Writes the case's input on pair 0 and makes the worker look at it; resolves with pair 0's events. */
async function breakPair0(dp: DataPath, c: Case, events: QueueErrorEvent[]): Promise<void> {
  const ring = ringOf(dp, 0, c.queue);
  c.write(ring, scratchOf(dp));
  if (c.queue === 'tx') {
    ring.kick();
  } else {
    // The worker pops the next rx chain once a frame fills the one it holds:
    // steer host-to-guest frames to tap queue 0 and send until it breaks.
    onlyTapQueue(dp, 0);
    const socket = dgram.createSocket('udp4');
    try {
      const end = Date.now() + 3000;
      while (events.length === 0 && Date.now() < end) {
        await sendTo(socket, pattern(100, 1), 9, GUEST_IP);
        await sleep(20);
      }
    } finally {
      socket.close();
    }
  }
  await until(`a queue-error on pair 0 (${c.name})`, () => events.length > 0);
}

function listen(pair: QueuePair): QueueErrorEvent[] {
  const events: QueueErrorEvent[] = [];
  pair.on('queue-error', (e) => events.push(e));
  return events;
}

function timedStop(pair: QueuePair): number {
  const start = performance.now();
  pair.stop();
  return performance.now() - start;
}

const dataPathOptions = (features?: Partial<VirtioNetFeatures>, rxBufferSize = RX_BUFFER, queueSize = QUEUE_SIZE) => ({
  pairs: 2,
  queueSize,
  rxBufferSize,
  ...(features ? { features } : {}),
});

for (const c of cases) {
  test(c.name, async () => {
    await withDataPath(dataPathOptions(c.features, c.rxBufferSize, c.queueSize), async (dp) => {
      const [pair0, pair1] = dp.pairs as [QueuePair, QueuePair];
      const events0 = listen(pair0);
      const events1 = listen(pair1);

      await breakPair0(dp, c, events0);
      assert.is(events0[0]!.queue, c.queue, `event names the ${c.queue} queue`);
      assert.match(events0[0]!.message, c.message);

      const s0 = pair0.stats();
      assert.is(s0.txBroken, c.queue === 'tx', 'txBroken of pair 0');
      assert.is(s0.rxBroken, c.queue === 'rx', 'rxBroken of pair 0');
      assert.is(s0[c.queue].errors, 1);
      assert.ok(pair0.running, 'the broken pair\'s worker thread is still there');
      assert.ok(process.kill(process.pid, 0), 'the process is alive');

      // More input on the broken queue changes nothing.
      ringOf(dp, 0, c.queue).kick();

      await assertPasses(dp, driverTraffic(dp.driver), 1, 1);

      const s1 = pair1.stats();
      assert.is(s1.txBroken, false);
      assert.is(s1.rxBroken, false);
      assert.is(events1.length, 0, JSON.stringify(events1));
      assert.is(events0.length, 1, JSON.stringify(events0));
      assert.ok(s1.tx.packets >= 1 && s1.rx.packets >= 1, 'pair 1 moved frames both ways');

      const stop0 = timedStop(pair0);
      assert.ok(stop0 < STOP_MS, `stopping the broken pair took ${stop0.toFixed(0)} ms`);
      const stop1 = timedStop(pair1);
      assert.ok(stop1 < STOP_MS, `stopping the healthy pair took ${stop1.toFixed(0)} ms`);
      assert.is(dp.errors.length, 1);
    });
  });
}

test('recovery by reset: a new QueuePair with fresh rings on the broken pair\'s tap queue passes traffic', async () => {
  await withDataPath(dataPathOptions(), async (dp) => {
    const events0 = listen(dp.pairs[0]!);
    await breakPair0(dp, cases[0]!, events0);
    assert.ok(dp.pairs[0]!.stats().txBroken);
    const stopMs = timedStop(dp.pairs[0]!);
    assert.ok(stopMs < STOP_MS, `stop took ${stopMs.toFixed(0)} ms`);

    // Fresh rings and buffers in the spare megabyte at the end of the same guest memory: a device reset.
    const base = Math.ceil((dp.memory.size - (1 << 20)) / 4096) * 4096;
    const allocator = new GuestAllocator(dp.memory, base, dp.memory.size);
    const features: VirtioNetFeatures = { version1: true, mergeableRx: false, eventIdx: true, indirectDesc: false };
    const driver = VirtioNetDriver.create({
      memory: dp.memory, allocator, queuePairs: 1, queueSize: 16, features, rxBufferSize: RX_BUFFER, txBufferSize: RX_BUFFER,
    });
    let pair: QueuePair | undefined;
    try {
      const { rx, tx } = driver.queueConfig(0);
      pair = new QueuePair({ memory: dp.memory, tapQueue: dp.tap.queues[0]!, hdrSize: HDR_SIZE, mergeableRx: false, rx, tx });
      const events = listen(pair);
      pair.start();
      driver.fillRx(0);

      await assertPasses(dp, driverTraffic(driver), 0, 0);
      const s = pair.stats();
      assert.is(s.txBroken, false);
      assert.is(s.rxBroken, false);
      assert.is(events.length, 0, JSON.stringify(events));
      // The untouched pair still works too.
      await assertPasses(dp, driverTraffic(dp.driver), 1, 1);
      const ms = timedStop(pair);
      assert.ok(ms < STOP_MS, `stop took ${ms.toFixed(0)} ms`);
    } finally {
      pair?.stop();
      driver.close();
    }
  });
});

test.run();
