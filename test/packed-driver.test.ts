// The guest-side driver's half of virtio 1.x packed virtqueues (2.8), checked
// descriptor by descriptor in guest memory. No device runs here: PackedDevice
// below plays the device side as the spec lays it out (2.8.1, 2.8.6, 2.8.7,
// 2.8.10, 2.8.22), written from the spec and not from the driver, on the same
// guest memory.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { GuestMemory } from '../src/virtio/guest-memory';
import { GuestAllocator } from '../src/virtio/driver/guest-allocator';
import {
  PackedQueueDriver, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_USED, VIRTQ_DESC_F_WRITE,
} from '../src/virtio/driver/packed-queue-driver';
import { PACKED_RING_BASE_FRESH, decodePackedRingBase, encodePackedRingBase } from '../src/virtio/ring-base';
import type { VirtqueueDriver, VirtqueueLayout } from '../src/virtio/driver/virtqueue-driver';
import { SplitQueueDriver } from '../src/virtio/driver/split-queue-driver';
import { VirtioNetDriver, type VirtioNetFeatures } from '../src/virtio/driver/net-driver';
import { ControlQueueDriver } from '../src/virtio/driver/control-queue-driver';
import { VirtioNetGuest } from '../src/virtio/driver/guest';
import { decodeNetHdr, encodeNetHdr } from '../src/virtio/driver/net-header';
import { STATUS_FEATURES_OK } from '../src/virtio/device-status';
import * as F from '../src/virtio/features';
import type { VirtioNetDevice } from '../src/virtio/net-device';
import { prng } from '../harness/prng';

const MiB = 1024 * 1024;
const hasCode = (code: string) => (e: unknown): boolean => (e as { code?: string }).code === code;

interface PackedDesc { addr: number; len: number; id: number; flags: number }

/** pvirtq_desc (2.8.13) at `index` of the table at `table`: le64 addr, le32 len, le16 id, le16 flags. */
function readDesc(memory: GuestMemory, table: number, index: number): PackedDesc {
  const v = memory.view(table + 16 * index, 16);
  return { addr: v.getUint32(0, true) + v.getUint32(4, true) * 2 ** 32, len: v.getUint32(8, true), id: v.getUint16(12, true), flags: v.getUint16(14, true) };
}

/** The AVAIL/USED bits of an available descriptor in a lap with wrap counter `wrap` (2.8.1). */
const availBits = (wrap: number): number => (wrap ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED);

interface Chain {
  id: number;
  /** Ring descriptors the chain took: how far its used descriptor skips (2.8.6). */
  descriptors: number;
  /** Where they are in the ring. */
  positions: number[];
  indirect: boolean;
  segments: { addr: number; len: number; writable: boolean }[];
  /** The ring descriptors as read. */
  ring: PackedDesc[];
}

/** The device side of a packed ring, by the spec; it checks what it reads as a strict device would. */
class PackedDevice {
  lastAvail = 0;
  availWrap = 1;
  used = 0;
  usedWrap = 1;

  constructor(readonly memory: GuestMemory, readonly layout: VirtqueueLayout) {}

  desc(index: number): PackedDesc {
    return readDesc(this.memory, this.layout.descAddr, index);
  }

  /** 2.8.1: available for a lap with wrap counter `wrap`: AVAIL equal to it, USED not. */
  static isAvailable(flags: number, wrap: number): boolean {
    return ((flags & VIRTQ_DESC_F_AVAIL) !== 0) === (wrap === 1) && ((flags & VIRTQ_DESC_F_USED) !== 0) !== (wrap === 1);
  }

  /** The next available chain (2.8.2, 2.8.6), or undefined; every descriptor of it must be available for its own lap. */
  pop(): Chain | undefined {
    if (!PackedDevice.isAvailable(this.desc(this.lastAvail).flags, this.availWrap)) return undefined;
    let position = this.lastAvail;
    let wrap = this.availWrap;
    const ring: PackedDesc[] = [];
    const positions: number[] = [];
    for (;;) {
      const d = this.desc(position);
      assert.ok(PackedDevice.isAvailable(d.flags, wrap), `descriptor ${position} of the chain is available for wrap ${wrap} (flags 0x${d.flags.toString(16)})`);
      ring.push(d);
      positions.push(position);
      if (++position === this.layout.size) {
        position = 0;
        wrap ^= 1;
      }
      if (!(d.flags & VIRTQ_DESC_F_NEXT)) break;
      assert.ok(ring.length < this.layout.size, 'a chain no longer than the queue');
    }
    this.lastAvail = position;
    this.availWrap = wrap;
    const head = ring[0]!;
    const indirect = (head.flags & VIRTQ_DESC_F_INDIRECT) !== 0;
    let segments: Chain['segments'];
    if (indirect) {
      assert.is(ring.length, 1, '2.8.19: no INDIRECT in a list linked by NEXT');
      assert.is(head.len % 16, 0);
      segments = Array.from({ length: head.len / 16 }, (_, i) => {
        const d = readDesc(this.memory, head.addr, i);
        return { addr: d.addr, len: d.len, writable: (d.flags & VIRTQ_DESC_F_WRITE) !== 0 };
      });
    } else {
      segments = ring.map((d) => ({ addr: d.addr, len: d.len, writable: (d.flags & VIRTQ_DESC_F_WRITE) !== 0 }));
    }
    // 2.8.6: the buffer id is in the last descriptor of the list.
    return { id: ring[ring.length - 1]!.id, descriptors: ring.length, positions, indirect, segments, ring };
  }

  /** Every available chain. */
  popAll(): Chain[] {
    const chains: Chain[] = [];
    for (let c = this.pop(); c; c = this.pop()) chains.push(c);
    return chains;
  }

  /**
   * 2.8.22 from the device's side: a used descriptor at the used position, AVAIL = USED = the
   * device's wrap counter, WRITE when it wrote (default: when len > 0); then skip the chain.
   */
  push(chain: Pick<Chain, 'id' | 'descriptors'>, len: number, options: { write?: boolean } = {}): void {
    const v = this.memory.view(this.layout.descAddr + 16 * this.used, 16);
    v.setUint32(8, len, true);
    v.setUint16(12, chain.id, true);
    const write = options.write ?? len > 0;
    v.setUint16(14, (this.usedWrap ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0) | (write ? VIRTQ_DESC_F_WRITE : 0), true);
    this.used += chain.descriptors;
    if (this.used >= this.layout.size) {
      this.used -= this.layout.size;
      this.usedWrap ^= 1;
    }
  }

  /** The Device Event Suppression area (usedAddr): le16 off_wrap, le16 flags (2.8.14). */
  setEvent(flags: number, offset = 0, wrap = 0): void {
    const v = this.memory.view(this.layout.usedAddr, 4);
    v.setUint16(0, offset | (wrap << 15), true);
    v.setUint16(2, flags, true);
  }

  /** The Driver Event Suppression area (availAddr), as the device reads it. */
  driverEvent(): { offset: number; wrap: number; flags: number } {
    const v = this.memory.view(this.layout.availAddr, 4);
    const offWrap = v.getUint16(0, true);
    return { offset: offWrap & 0x7fff, wrap: offWrap >> 15, flags: v.getUint16(2, true) };
  }
}

type Options = { eventIdx?: boolean; indirectDesc?: boolean; checkUsedLen?: boolean };

function withQueue(size: number, opts: Options, body: (q: PackedQueueDriver<string>, d: PackedDevice, m: GuestMemory) => void | Promise<void>): () => Promise<void> {
  return async () => {
    const memory = GuestMemory.allocate(4 * MiB);
    const queue = new PackedQueueDriver<string>(memory, new GuestAllocator(memory, 0x1000), {
      size, eventIdx: opts.eventIdx ?? false, indirectDesc: opts.indirectDesc ?? false, ...(opts.checkUsedLen !== undefined ? { checkUsedLen: opts.checkUsedLen } : {}),
    });
    try {
      await body(queue, new PackedDevice(memory, queue.layout), memory);
    } finally {
      queue.close();
      memory.close();
    }
  };
}

const one = (addr = 0x1000, writable = false) => [{ addr, len: 64, writable }];

/** A small deterministic PRNG (mulberry32), so a failing sequence can be replayed. */
test('ring layout: 16*N descriptor ring 16-aligned, two 4-byte areas 4-aligned, zeroed, any size 1..32768', () => {
  const memory = GuestMemory.allocate(2 * MiB);
  try {
    // An odd base forces the allocator to align every part.
    const allocator = new GuestAllocator(memory, 1);
    let end = 1;
    for (const size of [1, 3, 5, 7, 256, 1000, 32768]) {
      memory.bytes(0, memory.size).fill(0xa5);
      const q = new PackedQueueDriver<number>(memory, allocator, { size, eventIdx: false, indirectDesc: false });
      const l = q.layout;
      assert.is(q.packed, true);
      assert.is(l.size, size);
      assert.is(l.descAddr % 16, 0, `ring of ${size}`);
      assert.is(l.availAddr % 4, 0, `driver area of ${size}`);
      assert.is(l.usedAddr % 4, 0, `device area of ${size}`);
      assert.ok(l.descAddr >= end);
      assert.ok(l.availAddr >= l.descAddr + 16 * size);
      assert.ok(l.usedAddr >= l.availAddr + 4);
      end = l.usedAddr + 4;
      assert.ok(memory.bytes(l.descAddr, 16 * size).every((b) => b === 0), '2.8.13: the descriptor ring is zero-initialized');
      assert.ok(memory.bytes(l.availAddr, 4).every((b) => b === 0), 'driver area: ENABLE, offset 0');
      assert.ok(memory.bytes(l.usedAddr, 4).every((b) => b === 0));
      assert.is(q.numFree, size);
      assert.is(q.inFlight, 0);
      assert.equal(q.nextAvail, { index: 0, wrap: 1 });
      assert.equal(q.nextUsed, { index: 0, wrap: 1 });
      assert.is(q.ringBase, PACKED_RING_BASE_FRESH);
      q.close();
    }
    for (const size of [0, 32769, 1.5, -4]) {
      assert.throws(() => new PackedQueueDriver<number>(memory, allocator, { size, eventIdx: false, indirectDesc: false }), hasCode('EINVAL'), `size ${size}`);
    }
    assert.throws(() => new PackedQueueDriver<number>(memory, allocator, { size: 4, eventIdx: false, indirectDesc: true, maxIndirectSegments: 5 }), hasCode('EINVAL'));
    // With event idx, calls start enabled for the first used descriptor: DESC at offset 0, wrap 1.
    const q = new PackedQueueDriver<number>(memory, allocator, { size: 3, eventIdx: true, indirectDesc: false });
    assert.equal(new PackedDevice(memory, q.layout).driverEvent(), { offset: 0, wrap: 1, flags: RING_EVENT_FLAGS_DESC });
    q.close();
  } finally {
    memory.close();
  }
});

test('both drivers implement one interface; the split one says packed = false', () => {
  const memory = GuestMemory.allocate(MiB);
  try {
    const allocator = new GuestAllocator(memory);
    const queues: VirtqueueDriver<number>[] = [
      new SplitQueueDriver<number>(memory, allocator, { size: 4, eventIdx: false, indirectDesc: false }),
      new PackedQueueDriver<number>(memory, allocator, { size: 4, eventIdx: false, indirectDesc: false }),
    ];
    assert.equal(queues.map((q) => q.packed), [false, true]);
    for (const q of queues) {
      assert.ok(q.add(one(), 7));
      assert.is(q.inFlight, 1);
      q.close();
      assert.is(q.closed, true);
    }
  } finally {
    memory.close();
  }
});

test('add + publish: le64 addr, len, id in every descriptor, NEXT/WRITE/AVAIL/USED flags; the first flags only at publish', withQueue(8, {}, (q, d) => {
  const segments = [
    { addr: 0x1_2345_6780, len: 12, writable: false },
    { addr: 0x2000, len: 100, writable: false },
    { addr: 0x3000, len: 1500, writable: true },
  ];
  assert.ok(q.add(segments, 'first'));
  assert.is(q.numFree, 5);
  assert.is(q.inFlight, 1);
  // Not visible before publish: the first descriptor's flags still say "not available" ...
  assert.is(d.desc(0).flags, 0);
  assert.is(d.pop(), undefined);
  assert.equal(q.nextAvail, { index: 0, wrap: 1 }, 'nothing made available yet');
  // ... while the rest of the list is written out already (2.8.21.1: the first goes last).
  assert.is(d.desc(1).flags, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_AVAIL);
  assert.is(d.desc(2).flags, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_AVAIL);
  assert.ok(q.publish(), 'the device event flags are ENABLE (0)');
  assert.equal(d.desc(0), { addr: 0x1_2345_6780, len: 12, id: 0, flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_AVAIL });
  assert.equal(d.desc(1), { addr: 0x2000, len: 100, id: 0, flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_AVAIL });
  assert.equal(d.desc(2), { addr: 0x3000, len: 1500, id: 0, flags: VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_AVAIL });
  const first = d.pop()!;
  assert.equal(first.segments, segments);
  assert.equal(first.positions, [0, 1, 2]);
  assert.equal(q.nextAvail, { index: 3, wrap: 1 });

  // Two more chains published together: both visible, distinct ids, ring order kept.
  assert.ok(q.add([{ addr: 0x4000, len: 64, writable: true }], 'second'));
  assert.ok(q.add([{ addr: 0x5000, len: 64, writable: false }, { addr: 0x6000, len: 64, writable: true }], 'third'));
  assert.is(q.numFree, 2);
  assert.is(d.pop(), undefined, 'added, not published');
  q.publish();
  const [second, third, ...none] = d.popAll();
  assert.is(none.length, 0);
  assert.equal(second!.segments, [{ addr: 0x4000, len: 64, writable: true }]);
  assert.equal(third!.ring.map((x) => x.flags), [VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_AVAIL]);
  assert.equal(third!.ring.map((x) => x.id), [third!.id, third!.id]);
  assert.is(new Set([first.id, second!.id, third!.id]).size, 3);
  // Nothing added: nothing to publish, no kick.
  assert.is(q.publish(), false);
  // 3 segments with 2 free descriptors: refused, state untouched.
  assert.is(q.add(segments, 'too long'), false);
  assert.is(q.numFree, 2);
  assert.is(q.inFlight, 3);
  assert.equal(q.nextAvail, { index: 6, wrap: 1 });
}));

test('add refuses readable after writable, empty chains, chains longer than the queue, bad fields', withQueue(5, {}, (q) => {
  assert.throws(() => q.add([{ addr: 0x1000, len: 4, writable: true }, { addr: 0x2000, len: 4, writable: false }], 'x'), hasCode('EINVAL'));
  assert.throws(() => q.add([], 'x'), hasCode('EINVAL'));
  assert.throws(() => q.add(Array.from({ length: 6 }, () => ({ addr: 0, len: 1, writable: false })), 'x'), hasCode('E2BIG'));
  assert.throws(() => q.add([{ addr: -1, len: 4, writable: false }], 'x'), hasCode('EINVAL'));
  assert.throws(() => q.add([{ addr: 0, len: 2 ** 32, writable: false }], 'x'), hasCode('EINVAL'));
  assert.throws(() => q.add([{ addr: 0, len: 4, writable: false }], 'x', { indirect: true }), hasCode('EINVAL'));
  assert.is(q.numFree, 5);
  assert.is(q.inFlight, 0);
  // A whole-ring chain of a non-power-of-2 size is fine.
  assert.ok(q.add(Array.from({ length: 5 }, (_, i) => ({ addr: 0x1000 * (i + 1), len: 1, writable: false })), 'whole'));
  assert.is(q.numFree, 0);
}));

test('indirect: one ring descriptor with INDIRECT only, len 16*n, the table with WRITE only, reused per buffer id', withQueue(4, { indirectDesc: true }, (q, d, m) => {
  const segments = [
    { addr: 0x10000, len: 12, writable: false },
    { addr: 0x20000, len: 2048, writable: true },
    { addr: 0x30000, len: 2048, writable: true },
  ];
  assert.ok(q.add(segments, 'ind', { indirect: true }));
  assert.is(q.numFree, 3);
  q.publish();
  const chain = d.pop()!;
  const ring = chain.ring[0]!;
  assert.is(ring.flags, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_AVAIL, '2.8.7: INDIRECT, no WRITE, no NEXT');
  assert.is(ring.len, 48);
  assert.is(ring.addr % 16, 0);
  assert.ok(chain.indirect);
  assert.equal(chain.segments, segments);
  assert.equal([0, 1, 2].map((i) => readDesc(m, ring.addr, i).flags), [0, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_WRITE], '2.8.7: only WRITE in the table');
  // All four descriptors can carry indirect chains; the fifth has none left.
  for (let i = 0; i < 3; i++) assert.ok(q.add(segments, `more${i}`, { indirect: true }));
  assert.is(q.add(segments, 'full', { indirect: true }), false);
  q.publish();
  assert.is(d.popAll().length, 3);
  // The used chain's table is reused for the next chain with the same id, not reallocated.
  d.push(chain, 100);
  assert.equal(q.takeUsed(), [{ token: 'ind', len: 100 }]);
  assert.ok(q.add(segments.slice(0, 2), 'again', { indirect: true }));
  q.publish();
  const again = d.pop()!;
  assert.is(again.id, chain.id);
  assert.equal(again.positions, [0]);
  assert.is(again.ring[0]!.addr, ring.addr);
  assert.is(again.ring[0]!.len, 32);
  // Second lap: the driver's wrap counter is 0, so AVAIL is clear and USED set.
  assert.is(again.ring[0]!.flags, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_USED);
  assert.equal(again.segments, segments.slice(0, 2));
}));

for (const size of [5, 7]) {
  test(`wrap-around over many laps of a ${size}-descriptor ring: chains across the end carry each lap's wrap counter`, withQueue(size, {}, (q, d) => {
    let total = 0;
    let crossings = 0;
    const position = (n: number) => ({ index: n % size, wrap: (Math.floor(n / size) % 2 === 0 ? 1 : 0) as 0 | 1 });
    for (let round = 0; round < 12 * size; round++) {
      const length = 1 + (round % 3);
      const segments = Array.from({ length }, (_, i) => ({ addr: 0x1000 * (i + 1), len: 10 + i, writable: i === length - 1 }));
      assert.ok(q.add(segments, `t${round}`), `round ${round}`);
      assert.ok(q.publish());
      const chain = d.pop()!;
      assert.ok(chain, `round ${round}: the device finds the chain`);
      assert.equal(chain.segments, segments);
      if (chain.positions[chain.positions.length - 1]! < chain.positions[0]!) {
        crossings++;
        // The part after the ring's end is in the next lap, with the toggled wrap counter (2.8.1).
        const after = chain.positions.findIndex((p) => p === 0);
        assert.is(chain.ring[0]!.flags & (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED), availBits(position(total).wrap));
        assert.is(chain.ring[after]!.flags & (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED), availBits(position(total).wrap ^ 1));
      }
      total += length;
      assert.equal(q.nextAvail, position(total));
      assert.is(q.hasUsed, false);
      d.push(chain, 10 + length - 1);
      assert.is(q.hasUsed, true);
      assert.equal(q.takeUsed(), [{ token: `t${round}`, len: 10 + length - 1 }]);
      assert.is(q.hasUsed, false);
      assert.equal(q.nextUsed, position(total));
      assert.is(q.numFree, size);
    }
    assert.ok(crossings >= 3, `chains crossed the ring's end ${crossings} times`);
    assert.ok(total / size >= 20, 'twenty laps and more: both wrap counters toggled many times');
  }));
}

test('out-of-order completion: used descriptors in completion order, each skipping its chain, any order of ids', withQueue(8, {}, (q, d) => {
  q.add([{ addr: 0x1000, len: 10, writable: false }, { addr: 0x2000, len: 500, writable: true }], 'A');
  q.add([{ addr: 0x3000, len: 300, writable: true }], 'B');
  q.add([{ addr: 0x4000, len: 10, writable: false }, { addr: 0x5000, len: 10, writable: false }, { addr: 0x6000, len: 700, writable: true }], 'C');
  q.publish();
  const [a, b, c] = d.popAll();
  assert.equal([a!.positions, b!.positions, c!.positions], [[0, 1], [2], [3, 4, 5]]);
  d.push(c!, 700);
  d.push(a!, 20);
  d.push(b!, 0, { write: false });
  // The device wrote them where its used position was: 0, then 0 + 3, then 3 + 2.
  assert.equal([d.desc(0).id, d.desc(3).id, d.desc(5).id], [c!.id, a!.id, b!.id]);
  assert.equal(q.takeUsed(), [{ token: 'C', len: 700 }, { token: 'A', len: 20 }, { token: 'B', len: 0 }]);
  assert.is(q.numFree, 8);
  assert.is(q.inFlight, 0);
  assert.equal(q.nextUsed, { index: 6, wrap: 1 });

  // Part of a batch completes, the rest later; the ring goes on past its end.
  q.add(one(0x7000, true), 'D');
  q.add(one(0x8000, true), 'E');
  q.add([{ addr: 0x9000, len: 64, writable: true }, { addr: 0xa000, len: 64, writable: true }], 'F');
  q.publish();
  const [dd, e, f] = d.popAll();
  assert.equal(f!.positions, [0, 1], 'F starts the second lap');
  d.push(e!, 5);
  assert.equal(q.takeUsed(), [{ token: 'E', len: 5 }]);
  assert.is(q.hasUsed, false);
  assert.is(q.numFree, 8 - 3);
  d.push(f!, 128);
  d.push(dd!, 64);
  assert.equal(q.takeUsed(), [{ token: 'F', len: 128 }, { token: 'D', len: 64 }]);
  assert.equal(q.nextUsed, { index: 2, wrap: 0 });
  assert.equal(q.takeUsed(), []);
}));

test('random adds, indirect or not, and completions in random order over many laps: every token once, the counts right', withQueue(7, { indirectDesc: true }, (q, d) => {
  const random = prng(0x5eed);
  interface Posted { token: string; descriptors: number; writableBytes: number }
  const outstanding = new Map<string, Posted>();
  const added: Posted[] = []; // added, not yet published, in ring order
  const published: Posted[] = []; // published, not yet read by the device, in ring order
  const processing: { chain: Chain; buffer: Posted }[] = []; // read by the device, not yet used
  let completed: { token: string; len: number }[] = []; // used, in the order the device wrote them
  let next = 0;
  let returned = 0;
  let descriptorsPublished = 0;
  for (let step = 0; step < 6000; step++) {
    const action = random();
    if (action < 0.35) {
      const length = 1 + Math.floor(random() * 3);
      const indirect = random() < 0.3;
      const writable = Math.floor(random() * (length + 1));
      const segments = Array.from({ length }, (_, i) => ({ addr: 0x1000 * (i + 1), len: 100 + i, writable: i >= length - writable }));
      const buffer = { token: `t${next}`, descriptors: indirect ? 1 : length, writableBytes: segments.filter((s) => s.writable).reduce((n, s) => n + s.len, 0) };
      const free = q.numFree;
      if (q.add(segments, buffer.token, { indirect })) {
        next++;
        outstanding.set(buffer.token, buffer);
        added.push(buffer);
      } else {
        assert.ok(buffer.descriptors > free, `step ${step}: add refuses only for want of descriptors`);
      }
    } else if (action < 0.5) {
      q.publish();
      descriptorsPublished += added.reduce((n, b) => n + b.descriptors, 0);
      published.push(...added.splice(0));
    } else if (action < 0.7) {
      for (const chain of d.popAll()) {
        const buffer = published.shift()!;
        assert.ok(buffer, `step ${step}: the device read only what was published`);
        assert.is(chain.descriptors, buffer.descriptors);
        processing.push({ chain, buffer });
      }
      assert.is(published.length, 0, `step ${step}: the device read everything published`);
    } else if (action < 0.9) {
      if (processing.length === 0) continue;
      const [{ chain, buffer }] = processing.splice(Math.floor(random() * processing.length), 1) as [{ chain: Chain; buffer: Posted }];
      const len = Math.floor(random() * (buffer.writableBytes + 1));
      d.push(chain, len);
      completed.push({ token: buffer.token, len });
    } else {
      const used = q.takeUsed();
      assert.equal(used, completed, `step ${step}: what the device used, in its order`);
      completed = [];
      for (const { token } of used) {
        assert.ok(outstanding.delete(token), `${token} came back once`);
        returned++;
      }
    }
    const inRing = [...outstanding.values()].reduce((n, b) => n + b.descriptors, 0);
    assert.is(q.numFree, 7 - inRing, `step ${step}: free descriptors`);
    assert.is(q.inFlight, outstanding.size, `step ${step}: in flight`);
  }
  assert.ok(returned > 500, `${returned} buffers went round`);
  assert.ok(descriptorsPublished / 7 > 40, `${descriptorsPublished} descriptors: many laps`);
}));

test('publish without event idx: ENABLE kicks, DISABLE does not, DESC (not negotiated) and reserved values kick', withQueue(8, {}, (q, d) => {
  const add = (token: string) => q.add(one(), token);
  add('a');
  assert.is(q.publish(), true, 'ENABLE (0)');
  d.setEvent(RING_EVENT_FLAGS_DISABLE);
  add('b');
  assert.is(q.publish(), false, 'DISABLE');
  d.setEvent(RING_EVENT_FLAGS_DESC, 7, 1);
  add('c');
  assert.is(q.publish(), true, 'DESC without VIRTIO_F_EVENT_IDX: notify');
  d.setEvent(3);
  add('d');
  assert.is(q.publish(), true, 'reserved flags 3: notify');
  // publishAndKick signals the kick eventfd only when the device asked.
  d.setEvent(RING_EVENT_FLAGS_DISABLE);
  add('e');
  q.publishAndKick();
  assert.is(q.kickEvent.take(), 0);
  assert.is(q.kicks, 0);
  d.setEvent(RING_EVENT_FLAGS_ENABLE);
  add('f');
  q.publishAndKick();
  assert.is(q.kickEvent.take(), 1);
  assert.is(q.kicks, 1);
}));

test('publish with event idx: kick when the descriptors just made available include off_wrap, on both sides of the wrap', withQueue(5, { eventIdx: true }, (q, d) => {
  /** Adds `n` one-descriptor chains, publishes, then lets the device use them all and reaps them. */
  let serial = 0;
  const run = (n: number): boolean => {
    for (let i = 0; i < n; i++) assert.ok(q.add(one(), `r${serial++}`));
    const kick = q.publish();
    const chains = d.popAll();
    assert.is(chains.length, n);
    for (const c of chains) d.push(c, 0);
    assert.is(q.takeUsed().length, n);
    return kick;
  };
  d.setEvent(RING_EVENT_FLAGS_DESC, 0, 1);
  assert.is(run(1), true, 'event (0, wrap 1); published 0');
  assert.is(run(1), false, 'event (0, wrap 1); published 1');
  d.setEvent(RING_EVENT_FLAGS_DESC, 3, 1);
  assert.is(run(1), false, 'event (3, wrap 1); published 2');
  assert.is(run(2), true, 'event (3, wrap 1); published 3, 4');
  assert.equal(q.nextAvail, { index: 0, wrap: 0 });
  assert.is(run(3), false, 'event (3, wrap 1) is a lap behind now; published 0-2 of wrap 0');
  assert.equal(q.nextAvail, { index: 3, wrap: 0 });
  d.setEvent(RING_EVENT_FLAGS_DESC, 1, 1);
  assert.is(run(4), true, 'event (1, wrap 1), the next lap; published 3, 4 of wrap 0 and 0, 1 of wrap 1');
  d.setEvent(RING_EVENT_FLAGS_DESC, 3, 0);
  assert.equal(q.nextAvail, { index: 2, wrap: 1 });
  assert.is(run(2), false, 'event (3, wrap 0), behind; published 2, 3 of wrap 1');
  d.setEvent(RING_EVENT_FLAGS_DESC, 4, 1);
  assert.is(run(3), true, 'event (4, wrap 1), the batch\'s first; published 4 of wrap 1, 0, 1 of wrap 0');
  d.setEvent(RING_EVENT_FLAGS_DESC, 4, 1);
  assert.equal(q.nextAvail, { index: 2, wrap: 0 });
  assert.is(run(1), false, 'event (4, wrap 1) just behind the lap\'s start');
  d.setEvent(RING_EVENT_FLAGS_DESC, 0, 1);
  assert.is(run(4), true, 'event (0, wrap 1), inside the batch: published 3, 4 of wrap 0, 0, 1 of wrap 1');
  d.setEvent(RING_EVENT_FLAGS_DESC, 1, 0);
  assert.equal(q.nextAvail, { index: 2, wrap: 1 });
  assert.is(run(5), true, 'a whole ring at once reaches (1, wrap 0)');
  // Flags still rule with event idx.
  d.setEvent(RING_EVENT_FLAGS_DISABLE, 2, 0);
  assert.is(run(1), false, 'DISABLE with event idx');
  d.setEvent(RING_EVENT_FLAGS_ENABLE, 4, 1);
  assert.is(run(1), true, 'ENABLE with event idx');
}));

test('call suppression without event idx: ENABLE and DISABLE in the driver area; enableCalls says when used ones wait', withQueue(4, {}, (q, d) => {
  q.disableCalls();
  assert.equal(d.driverEvent(), { offset: 0, wrap: 0, flags: RING_EVENT_FLAGS_DISABLE });
  assert.is(q.enableCalls(), false);
  assert.equal(d.driverEvent(), { offset: 0, wrap: 0, flags: RING_EVENT_FLAGS_ENABLE });
  q.add(one(0x1000, true), 'a');
  q.publish();
  d.push(d.pop()!, 3);
  q.disableCalls();
  assert.is(q.enableCalls(), true, 'a used descriptor is pending: the caller must not sleep');
  assert.equal(q.takeUsed(), [{ token: 'a', len: 3 }]);
  assert.equal(d.driverEvent(), { offset: 0, wrap: 0, flags: RING_EVENT_FLAGS_ENABLE }, 'no offset without event idx');
}));

test('call suppression with event idx: DESC at the next used position and wrap, DISABLE while off', withQueue(4, { eventIdx: true }, (q, d) => {
  const cycle = (token: string) => {
    q.add(one(0x1000, true), token);
    q.publish();
    d.push(d.pop()!, 1);
    return q.takeUsed();
  };
  for (let i = 0; i < 3; i++) cycle(`t${i}`);
  assert.equal(d.driverEvent(), { offset: 3, wrap: 1, flags: RING_EVENT_FLAGS_DESC }, 'takeUsed keeps the event at the next used descriptor');
  q.disableCalls();
  assert.is(d.driverEvent().flags, RING_EVENT_FLAGS_DISABLE);
  // Reaping while calls are off does not turn them back on.
  assert.equal(cycle('quiet'), [{ token: 'quiet', len: 1 }]);
  assert.is(d.driverEvent().flags, RING_EVENT_FLAGS_DISABLE);
  assert.is(q.enableCalls(), false);
  assert.equal(d.driverEvent(), { offset: 0, wrap: 0, flags: RING_EVENT_FLAGS_DESC }, 'the next used descriptor is in the second lap');
  cycle('t4');
  assert.equal(d.driverEvent(), { offset: 1, wrap: 0, flags: RING_EVENT_FLAGS_DESC });
  q.add(one(0x1000, true), 'late');
  q.publish();
  d.push(d.pop()!, 1);
  assert.is(q.enableCalls(), true);
}));

const broken = (q: PackedQueueDriver<string>) => {
  assert.throws(() => q.takeUsed(), hasCode('EPROTO'));
  assert.throws(() => q.add(one(), 'after'), hasCode('EPROTO'));
  assert.throws(() => q.publish(), hasCode('EPROTO'));
};

for (const [what, used, message] of [
  ['an id beyond the queue', (a: Chain) => [{ id: a.id + 8, descriptors: 2 }], /buffer id 8/],
  ['an id that is free', () => [{ id: 5, descriptors: 1 }], /buffer id 5, which is not an outstanding/],
  ['an id added but not published', (_a: Chain, pendingId: number) => [{ id: pendingId, descriptors: 1 }], /buffer id 1, which is not an outstanding/],
  ['the same id twice in one batch', (a: Chain) => [a, a], /buffer id 0, which is not an outstanding/],
] as const) {
  test(`takeUsed: ${what} is a device bug (EPROTO), nothing is freed, and the queue stays broken`, withQueue(8, {}, (q, d) => {
    q.add([{ addr: 0x1000, len: 10, writable: false }, { addr: 0x2000, len: 500, writable: true }], 'a');
    q.publish();
    q.add(one(), 'pending');
    const a = d.pop()!;
    assert.is(a.id, 0);
    for (const u of used(a, 1)) d.push(u, 0);
    try {
      q.takeUsed();
      assert.unreachable('takeUsed should throw');
    } catch (error) {
      assert.ok(hasCode('EPROTO')(error));
      assert.match((error as Error).message, message);
    }
    assert.is(q.inFlight, 2);
    assert.is(q.numFree, 5);
    broken(q);
  }));
}

test('takeUsed: a len beyond the chain\'s writable bytes is EPROTO; checkUsedLen false lets it through', async () => {
  await withQueue(8, {}, (q, d) => {
    q.add([{ addr: 0x1000, len: 10, writable: false }, { addr: 0x2000, len: 500, writable: true }], 'a');
    q.publish();
    d.push(d.pop()!, 501);
    assert.throws(() => q.takeUsed(), (e: unknown) => hasCode('EPROTO')(e) && /501 bytes written, but the chain has only 500/.test((e as Error).message));
    broken(q);
  })();
  await withQueue(8, { checkUsedLen: false }, (q, d) => {
    q.add([{ addr: 0x1000, len: 10, writable: false }], 'tx');
    q.publish();
    d.push(d.pop()!, 4000);
    assert.equal(q.takeUsed(), [{ token: 'tx', len: 4000 }]);
  })();
});

test('takeUsed: a used descriptor without WRITE has a reserved len, ignored (2.8.4): reported 0, never checked', withQueue(8, {}, (q, d) => {
  q.add([{ addr: 0x1000, len: 10, writable: false }, { addr: 0x2000, len: 500, writable: true }], 'a');
  q.add([{ addr: 0x1000, len: 10, writable: false }], 'b');
  q.publish();
  const [a, b] = d.popAll();
  d.push(a!, 0xffff_ffff, { write: false });
  d.push(b!, 77, { write: false });
  assert.equal(q.takeUsed(), [{ token: 'a', len: 0 }, { token: 'b', len: 0 }]);
}));

test('hasUsed: only a descriptor with AVAIL = USED = the driver\'s used wrap counter at its used position', withQueue(3, {}, (q, d, m) => {
  q.add(one(), 'a');
  q.publish();
  const a = d.pop()!;
  const flags = m.view(q.layout.descAddr + 14, 2);
  // Available (AVAIL=1, USED=0) and half-written (USED only) are not used; AVAIL=USED=0 is a lap-0 used one.
  for (const f of [VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED, 0]) {
    flags.setUint16(0, f, true);
    assert.is(q.hasUsed, false, `flags 0x${f.toString(16)}`);
    assert.equal(q.takeUsed(), []);
  }
  d.push(a, 0);
  assert.is(q.hasUsed, true);
  assert.equal(q.takeUsed(), [{ token: 'a', len: 0 }]);
  assert.is(q.hasUsed, false, 'the same descriptor, once reaped, is not seen again');
}));

test('waitUsed: resolves on the call eventfd once a used descriptor is there, false on timeout', withQueue(4, {}, async (q, d) => {
  q.add(one(0x1000, true), 'a');
  q.publish();
  const chain = d.pop()!;
  const started = Date.now();
  assert.is(await q.waitUsed(50), false);
  assert.ok(Date.now() - started >= 45);
  setTimeout(() => {
    d.push(chain, 4);
    q.callEvent.signal();
  }, 20);
  assert.is(await q.waitUsed(2000), true);
  assert.equal(q.takeUsed(), [{ token: 'a', len: 4 }]);
}));

test('close during waitUsed: the wait resolves false, then the eventfds close; later use is EBADF', async () => {
  const memory = GuestMemory.allocate(MiB);
  try {
    const q = new PackedQueueDriver<string>(memory, new GuestAllocator(memory), { size: 5, eventIdx: false, indirectDesc: false });
    const waiting = q.waitUsed(5000);
    setTimeout(() => q.close(), 10);
    const started = Date.now();
    assert.is(await waiting, false);
    assert.ok(Date.now() - started < 1000);
    assert.is(q.closed, true);
    assert.throws(() => q.callEvent.fd, hasCode('EBADF'));
    assert.throws(() => q.add(one(), 'x'), hasCode('EBADF'));
    await new Promise((resolve) => setTimeout(resolve, 50));
  } finally {
    memory.close();
  }
});

test('moveTo: the ring goes on in the new memory at the same addresses; the old memory is left alone', async () => {
  const before = GuestMemory.allocate(MiB);
  const after = GuestMemory.allocate(MiB);
  try {
    const q = new PackedQueueDriver<string>(before, new GuestAllocator(before), { size: 3, eventIdx: true, indirectDesc: true });
    const l = q.layout;
    q.add(one(0x8000, true), 'a');
    q.add([{ addr: 0x9000, len: 8, writable: false }, { addr: 0xa000, len: 8, writable: true }], 'b', { indirect: true });
    q.publish();
    // Migrate: copy the guest's RAM, then the driver follows it.
    after.bytes(0, after.size).set(before.bytes(0, before.size));
    q.moveTo(after);
    assert.is(q.memory, after);
    const snapshot = Buffer.from(before.bytes(0, before.size));
    const device = new PackedDevice(after, l);
    const [a, b] = device.popAll();
    assert.equal(b!.segments, [{ addr: 0x9000, len: 8, writable: false }, { addr: 0xa000, len: 8, writable: true }], 'the indirect table came along');
    device.push(b!, 8);
    device.push(a!, 64);
    assert.equal(q.takeUsed(), [{ token: 'b', len: 8 }, { token: 'a', len: 64 }]);
    q.add(one(0xb000), 'c');
    q.add(one(0xc000), 'd');
    q.publish();
    assert.equal(device.popAll().map((c) => c.segments[0]!.addr), [0xb000, 0xc000], 'd crossed the ring\'s end in the new memory');
    assert.equal(device.driverEvent(), { offset: 2, wrap: 1, flags: RING_EVENT_FLAGS_DESC });
    assert.ok(Buffer.from(before.bytes(0, before.size)).equals(snapshot), 'nothing was written to the old memory after the move');
    q.close();
  } finally {
    before.close();
    after.close();
  }
});

test('vhost-user ring base for packed rings: avail index and wrap in the low half, used in the high half', withQueue(5, {}, (q, d) => {
  assert.is(PACKED_RING_BASE_FRESH, 0x80008000);
  assert.is(encodePackedRingBase({ index: 0, wrap: 1 }, { index: 0, wrap: 1 }), 0x80008000);
  assert.is(encodePackedRingBase({ index: 5, wrap: 0 }, { index: 32767, wrap: 1 }), 0xffff0005);
  assert.is(encodePackedRingBase({ index: 0x1234, wrap: 1 }, { index: 3, wrap: 0 }), 0x0003_9234);
  assert.equal(decodePackedRingBase(0x0003_9234), { lastAvail: { index: 0x1234, wrap: 1 }, used: { index: 3, wrap: 0 } });
  assert.equal(decodePackedRingBase(PACKED_RING_BASE_FRESH), { lastAvail: { index: 0, wrap: 1 }, used: { index: 0, wrap: 1 } });
  assert.throws(() => encodePackedRingBase({ index: 32768, wrap: 0 }, { index: 0, wrap: 0 }), hasCode('EINVAL'));
  assert.throws(() => encodePackedRingBase({ index: 0, wrap: 2 as 0 }, { index: 0, wrap: 0 }), hasCode('EINVAL'));
  assert.throws(() => decodePackedRingBase(2 ** 32), hasCode('EINVAL'));
  // Seven descriptors made available, used and reaped on a ring of five: both positions at 2, lap 2.
  for (const n of [3, 2, 2]) {
    for (let i = 0; i < n; i++) q.add(one(), 'x');
    q.publish();
    for (const c of d.popAll()) d.push(c, 0);
    q.takeUsed();
  }
  assert.equal(q.nextAvail, { index: 2, wrap: 0 });
  assert.equal(q.nextUsed, { index: 2, wrap: 0 });
  assert.is(q.ringBase, 0x0002_0002);
  assert.equal([d.lastAvail, d.availWrap, d.used, d.usedWrap], [2, 0, 2, 0], 'what the device itself got to');
}));

// ---- the net, control queue and guest drivers over packed rings ----

const modern: VirtioNetFeatures = { version1: true, mergeableRx: false, eventIdx: false, indirectDesc: false };

function withNet(options: Partial<Parameters<typeof VirtioNetDriver.create>[0]>, body: (net: VirtioNetDriver, m: GuestMemory) => void | Promise<void>): () => Promise<void> {
  return async () => {
    const memory = GuestMemory.allocate(16 * MiB);
    const net = VirtioNetDriver.create({ memory, queuePairs: 2, queueSize: 5, features: { ...modern, ringPacked: true }, rxBufferSize: 2048, txBufferSize: 2048, ...options });
    try {
      await body(net, memory);
    } finally {
      net.close();
      memory.close();
    }
  };
}

test('net driver: ringPacked builds packed queues of any size; queueConfig carries packed and the fresh ring base', withNet({ features: { ...modern, eventIdx: true, ringPacked: true } }, (net) => {
  for (const pair of [0, 1]) {
    assert.is(net.rxQueue(pair).packed, true);
    assert.is(net.txQueue(pair).packed, true);
    assert.is(net.rxQueue(pair).size, 5);
  }
  const c0 = net.queueConfig(0);
  assert.equal(c0.rx, {
    ...net.rxQueue(0).layout, kickFd: net.rxQueue(0).kickEvent.fd, callFd: net.rxQueue(0).callEvent.fd,
    eventIdx: true, indirectDesc: false, packed: true, lastAvailIdx: 0x80008000,
  });
  assert.is(c0.tx.lastAvailIdx, PACKED_RING_BASE_FRESH);
  // The tx queue starts with calls off, as the split one does.
  assert.is(new PackedDevice(net.memory, net.txQueue(0).layout).driverEvent().flags, RING_EVENT_FLAGS_DISABLE);
}));

test('net driver: split stays the default, with its description unchanged and power-of-2 sizes', async () => {
  const memory = GuestMemory.allocate(16 * MiB);
  try {
    const net = VirtioNetDriver.create({ memory, queuePairs: 1, queueSize: 4, features: modern, rxBufferSize: 2048, txBufferSize: 2048 });
    assert.is(net.rxQueue(0).packed, false);
    assert.ok(net.rxQueue(0) instanceof SplitQueueDriver);
    assert.equal(Object.keys(net.queueConfig(0).rx).sort(), ['availAddr', 'callFd', 'descAddr', 'eventIdx', 'indirectDesc', 'kickFd', 'size', 'usedAddr']);
    net.close();
    const explicit = VirtioNetDriver.create({ memory, allocator: new GuestAllocator(memory, 8 * MiB), queuePairs: 1, queueSize: 4, features: { ...modern, ringPacked: false } });
    assert.is(explicit.txQueue(0).packed, false);
    explicit.close();
    assert.throws(() => VirtioNetDriver.create({ memory, queuePairs: 1, queueSize: 5, features: modern }), hasCode('EINVAL'));
  } finally {
    memory.close();
  }
});

test('net driver over packed rings: send writes header + frame, the device reads it, reapTx frees it', withNet({}, async (net, m) => {
  const tx = net.txQueue(1);
  const device = new PackedDevice(m, tx.layout);
  const frame = Buffer.from('ffffffffffff525400123456080045000000', 'hex');
  await net.send(1, frame, { flags: 1, csumStart: 34, csumOffset: 6 });
  const [chain, ...none] = device.popAll();
  assert.is(none.length, 0);
  assert.equal(chain!.ring.map((x) => x.flags), [VIRTQ_DESC_F_AVAIL]);
  const bytes = Buffer.from(m.bytes(chain!.segments[0]!.addr, chain!.segments[0]!.len));
  assert.is(bytes.length, 12 + frame.length);
  assert.equal(decodeNetHdr(bytes, 12), { flags: 1, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 34, csumOffset: 6, numBuffers: 0 });
  assert.ok(bytes.subarray(12).equals(frame));
  assert.is(net.stats(1).kicks, 1);
  device.push(chain!, 0, { write: false });
  assert.is(net.reapTx(1), 1);
  assert.is(tx.inFlight, 0);
  // More frames than the ring holds: send waits for the device, which completes them out of order.
  const frames = Array.from({ length: 8 }, (_, i) => ({ frame: Buffer.alloc(60 + i, i) }));
  const sending = net.sendBatch(1, frames);
  const seen: Buffer[] = [];
  for (let spins = 0; seen.length < 8 && spins < 200; spins++) {
    const chains = device.popAll().reverse();
    for (const c of chains) {
      seen.push(Buffer.from(m.bytes(c.segments[0]!.addr + 12, c.segments[0]!.len - 12)));
      device.push(c, 0, { write: false });
    }
    if (chains.length > 0) tx.callEvent.signal();
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  await sending;
  assert.equal(seen.map((b) => b.length).sort(), frames.map((f) => f.frame.length).sort());
}));

test('net driver over packed rings: fillRx posts writable chains; receive reassembles what the device delivers', withNet({ rxSegments: 2 }, async (net, m) => {
  const rx = net.rxQueue(0);
  const device = new PackedDevice(m, rx.layout);
  // 5 descriptors / 2 per chain: 2 chains.
  assert.is(net.fillRx(0), 2);
  const chains = device.popAll();
  assert.is(chains.length, 2);
  assert.ok(chains.every((c) => c.segments.length === 2 && c.segments.every((s) => s.writable)));
  assert.equal(chains[0]!.segments.map((s) => s.len), [1024, 1024]);
  const frames = [Buffer.alloc(1500, 1), Buffer.alloc(300, 2)];
  // The device fills the second chain first.
  for (const [chain, frame] of [[chains[1]!, frames[0]!], [chains[0]!, frames[1]!]] as const) {
    const whole = Buffer.concat([encodeNetHdr({ numBuffers: 1 }, 12), frame]);
    let offset = 0;
    for (const s of chain.segments) {
      const n = Math.min(s.len, whole.length - offset);
      m.bytes(s.addr, n).set(whole.subarray(offset, offset + n));
      offset += n;
    }
    device.push(chain, whole.length);
  }
  const got = await net.receive(0, { timeoutMs: 100 });
  assert.equal(got.map((f) => f.frame.length), [1500, 300]);
  assert.ok(got[0]!.frame.equals(frames[0]!));
  assert.ok(got[1]!.frame.equals(frames[1]!));
  assert.is(device.popAll().length, 2, 'both buffers re-posted');
}));

test('net driver over packed rings: memoryNeeded bounds what create allocates', () => {
  const options = { queuePairs: 2, queueSize: 100, features: { ...modern, indirectDesc: true, ringPacked: true }, rxSegments: 4, rxBufferSize: 2048, txBufferSize: 2048 };
  const needed = VirtioNetDriver.memoryNeeded(options);
  const at128 = (ringPacked: boolean) => VirtioNetDriver.memoryNeeded({ ...options, queueSize: 128, features: { ...options.features, ringPacked } });
  assert.ok(at128(true) < at128(false), 'a packed ring is smaller than a split one');
  const memory = GuestMemory.allocate(needed);
  try {
    const allocator = new GuestAllocator(memory);
    const net = VirtioNetDriver.create({ memory, allocator, ...options });
    // Posting every rx buffer allocates every rx indirect table.
    assert.is(net.fillRx(0) + net.fillRx(1), 200);
    net.close();
    assert.ok(allocator.next <= needed, `${allocator.next} <= ${needed}`);
    assert.throws(() => VirtioNetDriver.create({ memory, allocator, ...options }), hasCode('ENOMEM'));
  } finally {
    memory.close();
  }
});

test('control queue driver over a packed ring: request readable, ack writable, the device\'s ack comes back', async () => {
  const memory = GuestMemory.allocate(MiB);
  const control = new ControlQueueDriver(memory, new GuestAllocator(memory), { size: 64, eventIdx: true, indirectDesc: false, packed: true });
  try {
    assert.is(control.queue.packed, true);
    const device = new PackedDevice(memory, control.queue.layout);
    const answer = control.setQueuePairs(3);
    // command() queues its chain a tick later, behind any command in progress.
    await new Promise((resolve) => setImmediate(resolve));
    const chain = device.pop()!;
    assert.ok(chain, 'the command was made available');
    assert.equal(chain.segments.map((s) => s.writable), [false, true]);
    assert.equal([...memory.bytes(chain.segments[0]!.addr, chain.segments[0]!.len)], [4, 0, 3, 0], 'VIRTIO_NET_CTRL_MQ, VQ_PAIRS_SET, 3');
    memory.bytes(chain.segments[1]!.addr, 1)[0] = 0;
    device.push(chain, 1);
    control.queue.callEvent.signal();
    assert.is(await answer, 0);
  } finally {
    control.close();
    memory.close();
  }
});

/** Just enough of VirtioNetDevice for VirtioNetGuest.bringUp, recording what the guest hands it. */
function fakeDevice(offered: bigint) {
  const calls: { base: [number, number][]; addresses: [number, VirtqueueLayout][]; sizes: [number, number][]; features: bigint[] } = { base: [], addresses: [], sizes: [], features: [] };
  let status = 0;
  const device = {
    offeredFeatures: offered,
    maxQueuePairs: 1,
    get status() { return status; },
    writeStatus(value: number) { status = value; },
    setDriverFeatures(features: bigint) { calls.features.push(features); },
    setMemory() {},
    setQueueSize(index: number, size: number) { calls.sizes.push([index, size]); },
    setQueueBase(index: number, base: number) { calls.base.push([index, base]); },
    setQueueAddresses(index: number, q: VirtqueueLayout) { calls.addresses.push([index, { size: q.size, descAddr: q.descAddr, availAddr: q.availAddr, usedAddr: q.usedAddr }]); },
    setQueueKick() {},
    setQueueCall() {},
    enableQueue() {},
  };
  return { device: device as unknown as VirtioNetDevice, calls };
}

test('guest bring-up: RING_PACKED negotiated only with ringPacked and only if offered; packed rings get their base', () => {
  const memory = GuestMemory.allocate(64 * MiB);
  const offered = F.featureBit(F.VIRTIO_F_VERSION_1) | F.featureBit(F.VIRTIO_NET_F_CTRL_VQ) | F.featureBit(F.VIRTIO_RING_F_EVENT_IDX) | F.featureBit(F.VIRTIO_F_RING_PACKED);
  try {
    const packed = fakeDevice(offered);
    const guest = VirtioNetGuest.bringUp({ device: packed.device, memory, ringPacked: true, queueSize: 100, rxBufferSize: 2048, txBufferSize: 2048 });
    assert.ok(F.hasFeature(guest.features, F.VIRTIO_F_RING_PACKED));
    assert.is(packed.calls.features[0], offered);
    assert.is(guest.driver.features.ringPacked, true);
    assert.ok(guest.driver.rxQueue(0).packed && guest.driver.txQueue(0).packed && guest.control!.queue.packed);
    assert.equal(packed.calls.base, [[0, 0x80008000], [1, 0x80008000], [2, 0x80008000]], 'rx, tx and control start at the fresh packed base');
    assert.equal(packed.calls.sizes, [[0, 100], [1, 100], [2, 64]]);
    assert.equal(packed.calls.addresses.map(([i]) => i), [0, 1, 2]);
    assert.equal(packed.calls.addresses[0]![1], guest.driver.rxQueue(0).layout, 'the driver and device areas as availAddr and usedAddr');
    assert.equal(packed.calls.addresses[2]![1], guest.control!.queue.layout);
    assert.ok(packed.device.status & STATUS_FEATURES_OK);
    guest.close();

    // Offered, not asked for (even though wantFeatures, by default, is everything offered): split.
    const split = fakeDevice(offered);
    const plain = VirtioNetGuest.bringUp({ device: split.device, memory, rxBufferSize: 2048, txBufferSize: 2048 });
    assert.not.ok(F.hasFeature(plain.features, F.VIRTIO_F_RING_PACKED));
    assert.is(split.calls.features[0], offered & ~F.featureBit(F.VIRTIO_F_RING_PACKED));
    assert.is(plain.driver.rxQueue(0).packed, false);
    assert.is(plain.control!.queue.packed, false);
    assert.equal(split.calls.base, [], 'a split ring keeps the device\'s default base, as before');
    assert.is(plain.driver.features.ringPacked, undefined, 'the split features keep their shape');
    plain.close();

    // Asked for, not offered: split.
    const old = fakeDevice(offered & ~F.featureBit(F.VIRTIO_F_RING_PACKED));
    const fallback = VirtioNetGuest.bringUp({ device: old.device, memory, ringPacked: true, rxBufferSize: 2048, txBufferSize: 2048 });
    assert.is(fallback.driver.rxQueue(0).packed, false);
    assert.equal(old.calls.base, []);
    fallback.close();
  } finally {
    memory.close();
  }
});

test.run();
