// The device side of packed virtqueues (virtio 1.2 2.8, VIRTIO_F_RING_PACKED)
// in the native data path, driven by a raw guest that writes descriptors by
// hand: what the device reads (chains, indirect tables, wrap counters over many
// laps of rings whose size is not a power of two), what it writes back (used
// descriptors with the buffer ID, skipping a chain's slots, AVAIL == USED ==
// its wrap counter, WRITE when it wrote), event suppression both ways, the ring
// base it stops at, and every malformed shape breaking only its own queue.
import dgram from 'node:dgram';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { Tap } from '../src';
import { EventFd } from '../src/virtio/eventfd';
import { GuestMemory } from '../src/virtio/guest-memory';
import { QueuePair, type QueueErrorEvent, type VirtqueueConfig } from '../src/virtio/queue-pair';
import { GUEST_MAC, ethernet, ipv4, parseUdp, pattern, udp } from '../harness/packets';
import {
  EVENT_FLAGS_DESC, EVENT_FLAGS_DISABLE, EVENT_FLAGS_ENABLE, PACKED_DESC_F_AVAIL, PACKED_DESC_F_INDIRECT, PACKED_DESC_F_NEXT,
  PACKED_DESC_F_USED, PACKED_DESC_F_WRITE, RawPackedRing, writePackedTable, type PackedLayout, type RawPackedDesc,
} from './helpers/raw-packed-ring';
import { sleep, until } from '../harness/wait';
import { assertPrivateNetns, run, uniqueName } from './helpers/system';
import { sendTo } from './helpers/device';

assertPrivateNetns();

const HOST_IP = '10.6.1.1';
const GUEST_IP = '10.6.1.2';
const HDR = 12;
const MEMORY = 4 << 20;
/** Guest memory no ring uses: buffers and indirect tables go here. */
const BUFFERS = 0x100000;

let nextPort = 7600;

interface Rig {
  memory: GuestMemory;
  tap: Tap;
  hostMac: Buffer;
  rx: RawPackedRing;
  tx: RawPackedRing;
  rxKick: EventFd;
  txKick: EventFd;
  rxCall: EventFd;
  txCall: EventFd;
  pair: QueuePair;
  errors: QueueErrorEvent[];
  /** A UDP socket on the host side and what it received. */
  host: dgram.Socket;
  got: Buffer[];
  port: number;
  /** Next free byte of the buffer area. */
  alloc(bytes: number, align?: number): number;
}

interface RigOptions {
  size?: number;
  eventIdx?: boolean;
  indirectDesc?: boolean;
  mergeableRx?: boolean;
  txBase?: number;
  rxBase?: number;
}

function layoutAt(gpa: number, size: number): PackedLayout {
  const ringBytes = 16 * size;
  return { size, descAddr: gpa, availAddr: gpa + ringBytes, usedAddr: gpa + ringBytes + 4 };
}

function ringConfig(layout: PackedLayout, kick: EventFd, call: EventFd, o: RigOptions, base: number | undefined): VirtqueueConfig {
  return {
    ...layout, packed: true, kickFd: kick.fd, callFd: call.fd, eventIdx: o.eventIdx ?? true, indirectDesc: o.indirectDesc ?? true,
    ...(base !== undefined ? { lastAvailIdx: base } : {}),
  };
}

async function withRig(o: RigOptions, body: (rig: Rig) => Promise<void>): Promise<void> {
  const size = o.size ?? 5;
  const memory = GuestMemory.allocate(MEMORY);
  const tap = Tap.create({ name: uniqueName('vpk'), queues: 1, vnetHdrSize: HDR });
  const events = [EventFd.create(), EventFd.create(), EventFd.create(), EventFd.create()] as const;
  const [rxKick, txKick, rxCall, txCall] = events;
  const host = dgram.createSocket('udp4');
  let pair: QueuePair | undefined;
  try {
    tap.setOffload({});
    run('ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', tap.name]);
    run('ip', ['neigh', 'replace', GUEST_IP, 'lladdr', '52:54:00:12:34:56', 'dev', tap.name, 'nud', 'permanent']);
    const rxLayout = layoutAt(0x1000, size);
    const txLayout = layoutAt(0x80000, size);
    const rx = new RawPackedRing(memory, rxLayout);
    const tx = new RawPackedRing(memory, txLayout);
    const errors: QueueErrorEvent[] = [];
    pair = new QueuePair({
      memory, tapQueue: tap.queues[0]!, hdrSize: HDR, mergeableRx: o.mergeableRx ?? false,
      rx: ringConfig(rxLayout, rxKick, rxCall, o, o.rxBase), tx: ringConfig(txLayout, txKick, txCall, o, o.txBase),
    });
    pair.on('queue-error', (e) => errors.push(e));
    pair.start();
    const port = (nextPort += 2);
    const got: Buffer[] = [];
    host.on('message', (m) => got.push(m));
    await new Promise<void>((resolve) => host.bind(port, HOST_IP, resolve));
    let free = BUFFERS;
    const alloc = (bytes: number, align = 16): number => {
      free = Math.ceil(free / align) * align;
      const at = free;
      free += bytes;
      return at;
    };
    const hostMac = Buffer.from(tap.mac().split(':').map((h) => parseInt(h, 16)));
    await body({ memory, tap, hostMac, rx, tx, rxKick, txKick, rxCall, txCall, pair, errors, host, got, port, alloc });
  } finally {
    pair?.stop();
    host.close();
    for (const e of events) e.close();
    tap.close();
    memory.close();
  }
}

/** A guest-to-host UDP frame with its (all-zero) virtio_net_hdr, written into guest memory at a fresh place. */
function txFrame(rig: Rig, payload: Buffer): { hdr: number; frame: number; frameLen: number; whole: number } {
  const frame = ethernet(rig.hostMac, GUEST_MAC, 0x0800, ipv4(GUEST_IP, HOST_IP, 17, udp(GUEST_IP, HOST_IP, 4000, rig.port, payload)));
  const at = rig.alloc(HDR + frame.length);
  rig.memory.bytes(at, HDR).fill(0);
  rig.memory.bytes(at + HDR, frame.length).set(frame);
  return { hdr: at, frame: at + HDR, frameLen: frame.length, whole: HDR + frame.length };
}

test('tx: single descriptors, header + frame chains and indirect tables over 8 laps of a 5-slot ring; used descriptors echo any buffer ID and skip each chain', async () => {
  await withRig({ size: 5 }, async (rig) => {
    const slotsOf = new Map<number, number>();
    const sent: Buffer[] = [];
    for (let k = 0; k < 20; k++) {
      const payload = pattern(100 + k, k);
      const f = txFrame(rig, payload);
      const id = 40000 + k; // 2.8: nothing bounds a Buffer ID; the device only echoes it
      let descs: RawPackedDesc[];
      if (k % 3 === 0) descs = [{ addr: f.hdr, len: f.whole, id }];
      else if (k % 3 === 1) descs = [{ addr: f.hdr, len: HDR }, { addr: f.frame, len: f.frameLen, id }];
      else {
        const table = rig.alloc(32);
        writePackedTable(rig.memory, table, [{ addr: f.hdr, len: HDR }, { addr: f.frame, len: f.frameLen }]);
        descs = [{ addr: table, len: 32, flags: PACKED_DESC_F_INDIRECT, id }];
      }
      slotsOf.set(id, rig.tx.post(descs));
      sent.push(payload);
      rig.txKick.signal();
      await until(`used descriptor for frame ${k}`, () => rig.tx.peekUsed() !== undefined);
      const wrap = rig.tx.usedWrap;
      const used = rig.tx.takeUsed((i) => slotsOf.get(i) ?? 1)!;
      assert.is(used.id, id, `frame ${k}: the buffer ID comes back`);
      assert.is(used.flags & (PACKED_DESC_F_AVAIL | PACKED_DESC_F_USED), wrap ? PACKED_DESC_F_AVAIL | PACKED_DESC_F_USED : 0, 'AVAIL == USED == the used wrap counter');
      assert.is(used.flags & PACKED_DESC_F_WRITE, 0, 'nothing written into a transmit buffer: no WRITE');
    }
    await until('every frame at the host', () => rig.got.length === sent.length);
    rig.got.forEach((m, i) => assert.ok(m.equals(sent[i]!), `datagram ${i} byte-exact and in order`));
    assert.is(rig.tx.nextUsed, rig.tx.next, 'the device used exactly the slots made available');
    assert.is(rig.tx.usedWrap, rig.tx.wrap);
    assert.equal(rig.errors, []);
    assert.is(rig.pair.stats().tx.packets, 20);
  });
});

test('tx: a batch posted at once is completed in order, the first used descriptor made visible last', async () => {
  await withRig({ size: 7 }, async (rig) => {
    const slotsOf = new Map<number, number>();
    for (let lap = 0; lap < 4; lap++) {
      // 3 chains: 2 + 1 + 2 slots = 5 of 7, so laps start at different slots.
      for (let c = 0; c < 3; c++) {
        const f = txFrame(rig, pattern(64, lap * 3 + c));
        const id = lap * 3 + c;
        const descs: RawPackedDesc[] = c === 1 ? [{ addr: f.hdr, len: f.whole, id }] : [{ addr: f.hdr, len: HDR }, { addr: f.frame, len: f.frameLen, id }];
        slotsOf.set(id, rig.tx.post(descs));
      }
      rig.txKick.signal();
      const ids: number[] = [];
      await until(`lap ${lap} used`, () => {
        for (let u = rig.tx.takeUsed((i) => slotsOf.get(i)!); u; u = rig.tx.takeUsed((i) => slotsOf.get(i)!)) ids.push(u.id);
        return ids.length === 3;
      });
      assert.equal(ids, [lap * 3, lap * 3 + 1, lap * 3 + 2]);
    }
    await until('12 datagrams', () => rig.got.length === 12);
    assert.equal(rig.errors, []);
  });
});

test('rx: frames land in posted buffers, used descriptors say how many bytes with WRITE set, num_buffers is 1; mergeable: a frame spans chains', async () => {
  for (const mergeableRx of [false, true]) {
    await withRig({ size: 6, mergeableRx }, async (rig) => {
      const buffers: number[] = [];
      // Without MRG_RXBUF each chain holds a whole frame: a header and a frame buffer.
      // With it, small single buffers of 128 bytes, so a 300-byte frame takes three.
      const post = (id: number): void => {
        if (mergeableRx) {
          const b = rig.alloc(128);
          buffers[id] = b;
          rig.rx.post([{ addr: b, len: 128, flags: PACKED_DESC_F_WRITE, id }]);
        } else {
          const b = rig.alloc(2048);
          buffers[id] = b;
          rig.rx.post([{ addr: b, len: HDR, flags: PACKED_DESC_F_WRITE }, { addr: b + HDR, len: 2048 - HDR, flags: PACKED_DESC_F_WRITE, id }]);
        }
      };
      const slots = mergeableRx ? 1 : 2;
      let nextId = 0;
      for (let i = 0; i < 6 / slots; i++) post(nextId++);
      rig.rxKick.signal();
      // Frames as the guest assembles them: num_buffers (in the first buffer's header) buffers each.
      let partial: { buffers: Buffer[]; numBuffers: number } | undefined;
      const frames: { whole: Buffer; numBuffers: number }[] = [];
      const reap = (): void => {
        for (let u = rig.rx.takeUsed(() => slots); u; u = rig.rx.takeUsed(() => slots)) {
          assert.ok(u.flags & PACKED_DESC_F_WRITE, 'WRITE: the device wrote len bytes');
          const data = Buffer.from(rig.memory.bytes(buffers[u.id]!, u.len));
          partial ??= { buffers: [], numBuffers: data.readUInt16LE(10) };
          partial.buffers.push(data);
          if (partial.buffers.length === partial.numBuffers) {
            frames.push({ whole: Buffer.concat(partial.buffers), numBuffers: partial.numBuffers });
            partial = undefined;
          }
          post(nextId++); // a new buffer for each one used
          rig.rxKick.signal();
        }
      };
      for (let k = 0; k < 5; k++) {
        const port = 9000 + k;
        const payload = pattern(mergeableRx ? 300 : 500, k);
        await sendTo(rig.host, payload, port, GUEST_IP);
        let mine: { whole: Buffer; numBuffers: number } | undefined;
        await until(`frame ${k} in the guest`, () => {
          reap();
          mine = frames.find((f) => parseUdp(f.whole.subarray(HDR))?.dstPort === port);
          return mine !== undefined;
        });
        const parsed = parseUdp(mine!.whole.subarray(HDR))!;
        assert.ok(parsed.payload.equals(payload), 'payload byte-exact');
        assert.is(mine!.numBuffers, mergeableRx ? 3 : 1, 'num_buffers');
      }
      assert.equal(rig.errors, []);
    });
  }
});

test('event suppression: with event idx the device asks for a kick at its next slot; calls follow the driver\'s DISABLE, ENABLE and DESC', async () => {
  await withRig({ size: 5, eventIdx: true }, async (rig) => {
    const send = async (k: number): Promise<void> => {
      const f = txFrame(rig, pattern(64, k));
      rig.tx.post([{ addr: f.hdr, len: f.whole, id: k }]);
      rig.txKick.signal();
      await until(`frame ${k} used`, () => rig.tx.peekUsed() !== undefined);
      rig.tx.takeUsed(() => 1);
      await sleep(20); // the worker goes back to sleep and writes its wish
    };
    rig.tx.setDriverEvent(EVENT_FLAGS_DISABLE);
    rig.txCall.take();
    await send(0);
    assert.is(rig.txCall.take(), 0, 'DISABLE: no call');
    const e = rig.tx.deviceEvent();
    assert.is(e.flags, EVENT_FLAGS_DESC, 'idle with event idx: DESC');
    assert.is(e.offWrap, rig.tx.next | (rig.tx.wrap ? 0x8000 : 0), 'the next slot it will read, with the wrap counter');

    rig.tx.setDriverEvent(EVENT_FLAGS_ENABLE);
    await send(1);
    assert.ok(rig.txCall.take() > 0, 'ENABLE: a call');

    // DESC at a slot two ahead: the next completion does not reach it, the one after does.
    for (let k = 2; k < 12; k++) {
      const target = (rig.tx.nextUsed + 1) % 5;
      const wrap = rig.tx.nextUsed + 1 >= 5 ? !rig.tx.usedWrap : rig.tx.usedWrap;
      rig.tx.setDriverEvent(EVENT_FLAGS_DESC, target | (wrap ? 0x8000 : 0));
      await send(k * 2);
      assert.is(rig.txCall.take(), 0, `lap position ${k}: the event slot is not used yet`);
      await send(k * 2 + 1);
      assert.ok(rig.txCall.take() > 0, `lap position ${k}: the event slot was used: a call`);
    }
    assert.equal(rig.errors, []);
  });
  await withRig({ size: 5, eventIdx: false }, async (rig) => {
    const f = txFrame(rig, pattern(64, 1));
    rig.tx.post([{ addr: f.hdr, len: f.whole, id: 1 }]);
    rig.txKick.signal();
    await until('used', () => rig.tx.peekUsed() !== undefined);
    await sleep(20);
    assert.is(rig.tx.deviceEvent().flags, EVENT_FLAGS_ENABLE, 'idle without event idx: ENABLE');
  });
});

test('stop gives the ring base in vhost-user\'s packed encoding; a new pair resumes there mid-lap', async () => {
  let base = 0;
  let rxBase = 0;
  let ring: { next: number; wrap: boolean } | undefined;
  let memoryCopy: Buffer | undefined;
  await withRig({ size: 5 }, async (rig) => {
    for (let k = 0; k < 7; k++) {
      // At most a ring's worth outstanding: 4, then 3 more once those are used.
      if (k === 4) {
        await until('4 datagrams', () => rig.got.length === 4);
        while (rig.tx.takeUsed(() => 1));
      }
      const f = txFrame(rig, pattern(80, k));
      rig.tx.post([{ addr: f.hdr, len: f.whole, id: k }]);
      rig.txKick.signal();
    }
    await until('7 datagrams', () => rig.got.length === 7);
    while (rig.tx.takeUsed(() => 1));
    const position = rig.pair.stop();
    base = position.txLastAvailIdx;
    rxBase = position.rxLastAvailIdx;
    ring = { next: rig.tx.next, wrap: rig.tx.wrap };
    memoryCopy = Buffer.from(rig.memory.bytes(0, MEMORY));
  });
  assert.is(base, (2 | 0x0000 | ((2 | 0x0000) << 16)) >>> 0, '7 slots of 5: slot 2 in the second lap (wrap 0), used the same');
  assert.is(rxBase, 0x80008000, 'an rx ring that never ran');
  await withRig({ size: 5, txBase: base }, async (rig) => {
    rig.memory.bytes(0, MEMORY).set(memoryCopy!);
    Object.assign(rig.tx, { next: ring!.next, wrap: ring!.wrap, nextUsed: ring!.next, usedWrap: ring!.wrap });
    for (let k = 0; k < 6; k++) {
      const f = txFrame(rig, pattern(90, 100 + k));
      rig.tx.post([{ addr: f.hdr, len: f.whole, id: 100 + k }]);
      rig.txKick.signal();
      await until(`resumed frame ${k}`, () => rig.tx.peekUsed() !== undefined);
      assert.is(rig.tx.takeUsed(() => 1)!.id, 100 + k);
    }
    assert.equal(rig.errors, []);
  });
});

interface Malformed {
  name: string;
  message: RegExp;
  options?: RigOptions;
  queue?: 'tx' | 'rx';
  write(rig: Rig): void;
}

const malformed: Malformed[] = [
  {
    name: 'a chain whose second descriptor is not available (its AVAIL/USED do not match the wrap counter)',
    message: /^descriptor 1 of a chain is not available/,
    write: (rig) => {
      const f = txFrame(rig, pattern(64, 1));
      rig.tx.post([{ addr: f.hdr, len: HDR, flags: PACKED_DESC_F_NEXT }, { addr: f.frame, len: f.frameLen, rawFlags: PACKED_DESC_F_USED, id: 1 }]);
    },
  },
  {
    name: 'a chain that runs around the whole ring (NEXT on every descriptor)',
    message: /^descriptor 5 of a chain is not available/,
    write: (rig) => {
      const f = txFrame(rig, pattern(64, 1));
      rig.tx.post(Array.from({ length: 5 }, () => ({ addr: f.hdr, len: 8, flags: PACKED_DESC_F_NEXT, rawFlags: PACKED_DESC_F_NEXT | PACKED_DESC_F_AVAIL })));
    },
  },
  {
    name: 'an indirect descriptor with NEXT',
    message: /^indirect descriptor in a chain of ring descriptors$/,
    write: (rig) => {
      const table = rig.alloc(16);
      writePackedTable(rig.memory, table, [{ addr: rig.alloc(64), len: 64 }]);
      const f = txFrame(rig, pattern(64, 1));
      rig.tx.post([{ addr: table, len: 16, flags: PACKED_DESC_F_INDIRECT | PACKED_DESC_F_NEXT }, { addr: f.hdr, len: f.whole }]);
    },
  },
  {
    name: 'an indirect descriptor second in a chain',
    message: /^indirect descriptor in a chain of ring descriptors$/,
    write: (rig) => {
      const table = rig.alloc(16);
      writePackedTable(rig.memory, table, [{ addr: rig.alloc(64), len: 64 }]);
      const f = txFrame(rig, pattern(64, 1));
      rig.tx.post([{ addr: f.hdr, len: HDR }, { addr: table, len: 16, flags: PACKED_DESC_F_INDIRECT }]);
    },
  },
  {
    name: 'an indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC',
    options: { indirectDesc: false },
    message: /^indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC$/,
    write: (rig) => {
      const table = rig.alloc(16);
      writePackedTable(rig.memory, table, [{ addr: rig.alloc(64), len: 64 }]);
      rig.tx.post([{ addr: table, len: 16, flags: PACKED_DESC_F_INDIRECT }]);
    },
  },
  {
    name: 'an indirect table length that is not a multiple of 16',
    message: /^indirect table length 24 is not a multiple of 16$/,
    write: (rig) => rig.tx.post([{ addr: rig.alloc(32), len: 24, flags: PACKED_DESC_F_INDIRECT }]),
  },
  {
    name: 'an indirect table of more descriptors than the queue size',
    message: /^indirect table of 6 descriptors is larger than the queue size 5$/,
    write: (rig) => {
      const table = rig.alloc(96);
      writePackedTable(rig.memory, table, Array.from({ length: 6 }, () => ({ addr: table, len: 0 })));
      rig.tx.post([{ addr: table, len: 96, flags: PACKED_DESC_F_INDIRECT }]);
    },
  },
  {
    name: 'an indirect table that is not 16-byte aligned',
    message: /^indirect table is not 16-byte aligned$/,
    write: (rig) => rig.tx.post([{ addr: rig.alloc(64) + 8, len: 32, flags: PACKED_DESC_F_INDIRECT }]),
  },
  {
    name: 'an indirect table outside guest memory',
    message: /^indirect table is not inside guest memory$/,
    write: (rig) => rig.tx.post([{ addr: MEMORY - 16, len: 32, flags: PACKED_DESC_F_INDIRECT }]),
  },
  {
    name: 'a write-only descriptor in a transmit chain',
    message: /^write-only descriptor in a transmit chain$/,
    write: (rig) => {
      const f = txFrame(rig, pattern(64, 1));
      rig.tx.post([{ addr: f.hdr, len: HDR }, { addr: f.frame, len: f.frameLen, flags: PACKED_DESC_F_WRITE }]);
    },
  },
  {
    name: 'a write-only entry in an indirect transmit table',
    message: /^write-only descriptor in a transmit chain$/,
    write: (rig) => {
      const table = rig.alloc(32);
      writePackedTable(rig.memory, table, [{ addr: rig.alloc(64), len: 64 }, { addr: rig.alloc(64), len: 64, flags: PACKED_DESC_F_WRITE }]);
      rig.tx.post([{ addr: table, len: 32, flags: PACKED_DESC_F_INDIRECT }]);
    },
  },
  {
    name: 'a buffer past the end of guest memory',
    message: /^descriptor buffer 0x[0-9a-f]+\+128 is outside guest memory$/,
    write: (rig) => rig.tx.post([{ addr: MEMORY - 64, len: 128 }]),
  },
  {
    name: 'a buffer near 2^64 (addr + len wraps)',
    message: /^descriptor buffer 0xfffffffffffffff0\+4096 is outside guest memory$/,
    write: (rig) => rig.tx.post([{ addr: 0xfffffffffffffff0n, len: 4096 }]),
  },
  {
    name: 'rx: a read-only descriptor in a receive chain',
    queue: 'rx',
    message: /^read-only descriptor in a receive chain$/,
    write: (rig) => rig.rx.post([{ addr: rig.alloc(2048), len: 2048 }]),
  },
];

for (const c of malformed) {
  test(`malformed packed ring: ${c.name} breaks that queue only`, async () => {
    await withRig({ size: 5, ...c.options }, async (rig) => {
      const queue = c.queue ?? 'tx';
      c.write(rig);
      (queue === 'tx' ? rig.txKick : rig.rxKick).signal();
      await until('the queue error', () => rig.errors.length > 0);
      assert.is(rig.errors[0]!.queue, queue);
      assert.match(rig.errors[0]!.message, c.message);
      assert.ok(queue === 'tx' ? rig.pair.stats().txBroken : rig.pair.stats().rxBroken, `${queue} is broken`);
      if (queue === 'tx') {
        // The other queue of the pair goes on: a frame from the host still arrives.
        const b = rig.alloc(2048);
        rig.rx.post([{ addr: b, len: 2048, flags: PACKED_DESC_F_WRITE, id: 7 }]);
        rig.rxKick.signal();
        await sleep(10);
        let arrived = false;
        for (let attempt = 0; attempt < 20 && !arrived; attempt++) {
          await sendTo(rig.host, pattern(200, attempt), 9100, GUEST_IP);
          await sleep(20);
          arrived = rig.rx.peekUsed() !== undefined;
        }
        assert.ok(arrived, 'rx still delivers');
        assert.is(rig.rx.peekUsed()!.id, 7);
      }
      assert.is(rig.errors.length, 1, 'one error, once');
    });
  });
}

test('a packed ring that cannot start: a base past the ring, misaligned areas, areas outside memory (EINVAL, nothing left running)', async () => {
  const memory = GuestMemory.allocate(1 << 20);
  const tap = Tap.create({ name: uniqueName('vpk'), queues: 1, vnetHdrSize: HDR });
  const kick = EventFd.create();
  try {
    const ok = layoutAt(0x1000, 5);
    const attempt = (tx: Partial<VirtqueueConfig>): Error | undefined => {
      const pair = new QueuePair({
        memory, tapQueue: tap.queues[0]!, hdrSize: HDR, mergeableRx: false,
        rx: { ...layoutAt(0x8000, 5), packed: true, kickFd: kick.fd }, tx: { ...ok, packed: true, kickFd: kick.fd, ...tx },
      });
      try {
        pair.start();
      } catch (error) {
        return error as Error;
      } finally {
        pair.stop();
      }
      return undefined;
    };
    assert.match(attempt({ lastAvailIdx: 5 })?.message ?? '', /ring base 0x00000005 names a slot past the ring of 5/);
    assert.match(attempt({ lastAvailIdx: 0x80058000 })?.message ?? '', /names a slot past the ring/);
    assert.match(attempt({ availAddr: ok.availAddr + 2 })?.message ?? '', /misaligned/);
    assert.match(attempt({ usedAddr: (1 << 20) - 2 })?.message ?? '', /misaligned|not inside guest memory/);
    assert.match(attempt({ usedAddr: 1 << 20 })?.message ?? '', /device event suppression area is not inside guest memory/);
    assert.throws(() => attempt({ size: 32769 }), /size must be an integer from 1 to 32768/);
    assert.is(attempt({ size: 5, lastAvailIdx: 0x80048004 }), undefined, 'slot 4 of 5, both wraps 1: fine');
    assert.match(attempt({ packed: false })?.message ?? '', /power of two/, 'the same 5-slot ring as a split one: refused');
  } finally {
    kick.close();
    tap.close();
    memory.close();
  }
});

test.run();
