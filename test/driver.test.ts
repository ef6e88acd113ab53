// The guest-side driver's half of virtio 1.x (2.7 split virtqueues, 5.1 net),
// checked byte by byte in guest memory. No device runs here: where a device
// would act, the test writes the used ring itself, as the spec lays it out.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { GuestMemory } from '../src/virtio/guest-memory';
import { GuestAllocator } from '../src/virtio/driver/guest-allocator';
import {
  SplitQueueDriver, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, vringNeedEvent,
  type SplitQueueLayout,
} from '../src/virtio/driver/split-queue-driver';
import {
  VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_TCPV4, decodeNetHdr, encodeNetHdr,
} from '../src/virtio/driver/net-header';
import { VirtioNetDriver, type VirtioNetFeatures } from '../src/virtio/driver/net-driver';

const MiB = 1024 * 1024;
const hasCode = (code: string) => (e: unknown): boolean => (e as { code?: string }).code === code;

interface Desc { addr: number; len: number; flags: number; next: number }

/** What a device reads: descriptor `index` of the table at `table`. */
function readDesc(memory: GuestMemory, table: number, index: number): Desc {
  const v = memory.view(table + 16 * index, 16);
  return { addr: v.getUint32(0, true) + v.getUint32(4, true) * 2 ** 32, len: v.getUint32(8, true), flags: v.getUint16(12, true), next: v.getUint16(14, true) };
}

/** The chain at `head`, followed as a device would (through an indirect table if there is one). */
function readChain(memory: GuestMemory, layout: SplitQueueLayout, head: number): { segments: Desc[]; indirect: boolean } {
  const first = readDesc(memory, layout.descAddr, head);
  const indirect = (first.flags & VIRTQ_DESC_F_INDIRECT) !== 0;
  const table = indirect ? first.addr : layout.descAddr;
  const segments: Desc[] = [];
  let index = indirect ? 0 : head;
  for (;;) {
    const d = readDesc(memory, table, index);
    segments.push(d);
    if (!(d.flags & VIRTQ_DESC_F_NEXT)) break;
    index = d.next;
  }
  return { segments, indirect };
}

const availIdx = (m: GuestMemory, l: SplitQueueLayout) => m.view(l.availAddr + 2, 2).getUint16(0, true);
const availFlags = (m: GuestMemory, l: SplitQueueLayout) => m.view(l.availAddr, 2).getUint16(0, true);
const availEntry = (m: GuestMemory, l: SplitQueueLayout, i: number) => m.view(l.availAddr + 4 + 2 * (i % l.size), 2).getUint16(0, true);
const usedEvent = (m: GuestMemory, l: SplitQueueLayout) => m.view(l.availAddr + 4 + 2 * l.size, 2).getUint16(0, true);
const setUsedFlags = (m: GuestMemory, l: SplitQueueLayout, v: number) => m.view(l.usedAddr, 2).setUint16(0, v, true);
const setAvailEvent = (m: GuestMemory, l: SplitQueueLayout, v: number) => m.view(l.usedAddr + 4 + 8 * l.size, 2).setUint16(0, v, true);

/** Device side of 2.7.8: write used elements, then used->idx. */
function pushUsed(m: GuestMemory, l: SplitQueueLayout, entries: { id: number; len: number }[]): void {
  const idxView = m.view(l.usedAddr + 2, 2);
  let idx = idxView.getUint16(0, true);
  for (const { id, len } of entries) {
    const elem = m.view(l.usedAddr + 4 + 8 * (idx % l.size), 8);
    elem.setUint32(0, id, true);
    elem.setUint32(4, len, true);
    idx = (idx + 1) & 0xffff;
  }
  idxView.setUint16(0, idx, true);
}

function withQueue(size: number, opts: { eventIdx?: boolean; indirectDesc?: boolean }, body: (q: SplitQueueDriver<string>, m: GuestMemory) => void | Promise<void>): () => Promise<void> {
  return async () => {
    const memory = GuestMemory.allocate(4 * MiB);
    const queue = new SplitQueueDriver<string>(memory, new GuestAllocator(memory, 0x1000), { size, eventIdx: opts.eventIdx ?? false, indirectDesc: opts.indirectDesc ?? false });
    try {
      await body(queue, memory);
    } finally {
      queue.close();
      memory.close();
    }
  };
}

test('ring layout: 16/2/4 alignment, 16*N, 6+2*N and 6+8*N bytes, zeroed, no overlap, for several sizes', () => {
  const memory = GuestMemory.allocate(1.5 * MiB);
  try {
    // An odd base forces the allocator to align every part.
    const allocator = new GuestAllocator(memory, 1);
    let end = 1;
    for (const size of [1, 2, 4, 256, 1024, 32768]) {
      memory.bytes(0, memory.size).fill(0xa5);
      const q = new SplitQueueDriver<number>(memory, allocator, { size, eventIdx: true, indirectDesc: false });
      const l = q.layout;
      assert.is(l.size, size);
      assert.is(l.descAddr % 16, 0, `desc of ${size}`);
      assert.is(l.availAddr % 2, 0, `avail of ${size}`);
      assert.is(l.usedAddr % 4, 0, `used of ${size}`);
      assert.ok(l.descAddr >= end);
      assert.ok(l.availAddr >= l.descAddr + 16 * size);
      assert.ok(l.usedAddr >= l.availAddr + 6 + 2 * size);
      end = l.usedAddr + 6 + 8 * size;
      assert.ok(memory.bytes(l.descAddr, 16 * size).every((b) => b === 0));
      assert.ok(memory.bytes(l.availAddr, 6 + 2 * size).every((b) => b === 0));
      assert.ok(memory.bytes(l.usedAddr, 6 + 8 * size).every((b) => b === 0));
      assert.is(q.numFree, size);
      assert.is(q.inFlight, 0);
      q.close();
    }
    assert.throws(() => new SplitQueueDriver<number>(memory, allocator, { size: 32768, eventIdx: false, indirectDesc: false }), hasCode('ENOMEM'));
    for (const size of [0, 3, 65536, 1.5]) {
      assert.throws(() => new SplitQueueDriver<number>(memory, allocator, { size, eventIdx: false, indirectDesc: false }), hasCode('EINVAL'));
    }
  } finally {
    memory.close();
  }
});

test('allocator: aligned, zeroed, never across a region boundary, ENOMEM when full', () => {
  const memory = GuestMemory.allocate(8192);
  try {
    const a = new GuestAllocator(memory, 0, 8192);
    assert.is(a.alloc(3, 1), 0);
    assert.is(a.alloc(8, 64), 64);
    memory.bytes(128, 64).fill(1);
    const z = a.alloc(64, 64);
    assert.is(z, 128);
    assert.ok(memory.bytes(z, 64).every((b) => b === 0));
    assert.throws(() => a.alloc(8192, 8), hasCode('ENOMEM'));
    assert.throws(() => a.alloc(8, 3), hasCode('EINVAL'));
    assert.is(a.alloc(8192 - 192, 1), 192);
    assert.throws(() => a.alloc(1, 1), hasCode('ENOMEM'));
  } finally {
    memory.close();
  }
});

test('add + publish: descriptor fields (le64 addr, le32 len, NEXT/WRITE flags, next) and the avail ring', withQueue(8, {}, (q, m) => {
  const l = q.layout;
  const segments = [
    { addr: 0x1_2345_6780, len: 12, writable: false },
    { addr: 0x2000, len: 100, writable: false },
    { addr: 0x3000, len: 1500, writable: true },
  ];
  assert.ok(q.add(segments, 'first'));
  assert.is(q.numFree, 5);
  assert.is(q.inFlight, 1);
  // Not visible before publish.
  assert.is(availIdx(m, l), 0);
  assert.ok(q.publish());
  assert.is(availIdx(m, l), 1);
  const head = availEntry(m, l, 0);
  const d0 = readDesc(m, l.descAddr, head);
  assert.equal(d0, { addr: 0x1_2345_6780, len: 12, flags: VIRTQ_DESC_F_NEXT, next: d0.next });
  const d1 = readDesc(m, l.descAddr, d0.next);
  assert.equal(d1, { addr: 0x2000, len: 100, flags: VIRTQ_DESC_F_NEXT, next: d1.next });
  const d2 = readDesc(m, l.descAddr, d1.next);
  assert.is(d2.addr, 0x3000);
  assert.is(d2.len, 1500);
  assert.is(d2.flags, VIRTQ_DESC_F_WRITE);
  assert.is(new Set([head, d0.next, d1.next]).size, 3);

  // Two more chains published together: both ring entries, then idx 3.
  assert.ok(q.add([{ addr: 0x4000, len: 64, writable: true }], 'second'));
  assert.ok(q.add([{ addr: 0x5000, len: 64, writable: false }, { addr: 0x6000, len: 64, writable: true }], 'third'));
  assert.is(q.numFree, 2);
  q.publish();
  assert.is(availIdx(m, l), 3);
  assert.equal(readChain(m, l, availEntry(m, l, 1)).segments.map((s) => [s.addr, s.flags]), [[0x4000, VIRTQ_DESC_F_WRITE]]);
  assert.equal(readChain(m, l, availEntry(m, l, 2)).segments.map((s) => [s.addr, s.flags]), [[0x5000, VIRTQ_DESC_F_NEXT], [0x6000, VIRTQ_DESC_F_WRITE]]);
  // Nothing added: nothing to publish, no kick.
  assert.is(q.publish(), false);
  // 3 segments with 2 free descriptors: refused, state untouched.
  assert.is(q.add(segments, 'too long'), false);
  assert.is(q.numFree, 2);
  assert.is(q.inFlight, 3);
}));

test('add refuses readable after writable, empty chains, chains longer than the queue, bad fields', withQueue(4, {}, (q) => {
  assert.throws(() => q.add([{ addr: 0x1000, len: 4, writable: true }, { addr: 0x2000, len: 4, writable: false }], 'x'), hasCode('EINVAL'));
  assert.throws(() => q.add([], 'x'), hasCode('EINVAL'));
  assert.throws(() => q.add(Array.from({ length: 5 }, () => ({ addr: 0, len: 1, writable: false })), 'x'), hasCode('E2BIG'));
  assert.throws(() => q.add([{ addr: -1, len: 4, writable: false }], 'x'), hasCode('EINVAL'));
  assert.throws(() => q.add([{ addr: 0, len: 2 ** 32, writable: false }], 'x'), hasCode('EINVAL'));
  assert.throws(() => q.add([{ addr: 0, len: 4, writable: false }], 'x', { indirect: true }), hasCode('EINVAL'));
  assert.is(q.numFree, 4);
  assert.is(q.inFlight, 0);
}));

test('indirect chain: one ring descriptor with INDIRECT only and len 16*n, the table chained from index 0', withQueue(4, { indirectDesc: true }, (q, m) => {
  const l = q.layout;
  const segments = [
    { addr: 0x10000, len: 12, writable: false },
    { addr: 0x20000, len: 2048, writable: true },
    { addr: 0x30000, len: 2048, writable: true },
  ];
  assert.ok(q.add(segments, 'ind', { indirect: true }));
  assert.is(q.numFree, 3);
  q.publish();
  const head = availEntry(m, l, 0);
  const ring = readDesc(m, l.descAddr, head);
  assert.is(ring.flags, VIRTQ_DESC_F_INDIRECT);
  assert.is(ring.len, 48);
  assert.is(ring.addr % 16, 0);
  assert.equal(readDesc(m, ring.addr, 0), { addr: 0x10000, len: 12, flags: VIRTQ_DESC_F_NEXT, next: 1 });
  assert.equal(readDesc(m, ring.addr, 1), { addr: 0x20000, len: 2048, flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, next: 2 });
  assert.equal(readDesc(m, ring.addr, 2), { addr: 0x30000, len: 2048, flags: VIRTQ_DESC_F_WRITE, next: 0 });
  // All four descriptors can carry indirect chains; the fifth has none left.
  for (let i = 0; i < 3; i++) assert.ok(q.add(segments, `more${i}`, { indirect: true }));
  assert.is(q.add(segments, 'full', { indirect: true }), false);
  q.publish();
  // The used chain's table is reused for the next chain on the same head, not reallocated.
  pushUsed(m, l, [{ id: head, len: 100 }]);
  assert.equal(q.takeUsed(), [{ token: 'ind', len: 100 }]);
  assert.ok(q.add(segments.slice(0, 2), 'again', { indirect: true }));
  q.publish();
  const again = readDesc(m, l.descAddr, availEntry(m, l, 4));
  assert.is(again.addr, ring.addr);
  assert.is(again.len, 32);
  assert.equal(readChain(m, l, availEntry(m, l, 4)).segments.length, 2);
}));

test('publish without event idx: kick unless the device set VIRTQ_USED_F_NO_NOTIFY', withQueue(8, {}, (q, m) => {
  const l = q.layout;
  q.add([{ addr: 0x1000, len: 1, writable: false }], 'a');
  assert.is(q.publish(), true);
  setUsedFlags(m, l, 1);
  q.add([{ addr: 0x1000, len: 1, writable: false }], 'b');
  assert.is(q.publish(), false);
  setUsedFlags(m, l, 0);
  q.add([{ addr: 0x1000, len: 1, writable: false }], 'c');
  assert.is(q.publish(), true);
  // publishAndKick signals the kick eventfd only when the device asked.
  q.kickEvent.take();
  setUsedFlags(m, l, 1);
  q.add([{ addr: 0x1000, len: 1, writable: false }], 'd');
  q.publishAndKick();
  assert.is(q.kickEvent.take(), 0);
  setUsedFlags(m, l, 0);
  q.add([{ addr: 0x1000, len: 1, writable: false }], 'e');
  q.publishAndKick();
  assert.is(q.kickEvent.take(), 1);
  assert.is(q.kicks, 1);
}));

test('publish with event idx: kick when avail->idx crosses avail_event, and used->flags is ignored', withQueue(8, { eventIdx: true }, (q, m) => {
  const l = q.layout;
  const one = (token: string) => q.add([{ addr: 0x1000, len: 1, writable: false }], token);
  setUsedFlags(m, l, 1); // must not matter with event idx
  one('a');
  assert.is(q.publish(), true, 'avail_event 0, idx 0 -> 1');
  one('b');
  assert.is(q.publish(), false, 'avail_event 0, idx 1 -> 2');
  setAvailEvent(m, l, 3);
  one('c');
  assert.is(q.publish(), false, 'avail_event 3, idx 2 -> 3');
  one('d');
  one('e');
  assert.is(q.publish(), true, 'avail_event 3, idx 3 -> 5');
  setAvailEvent(m, l, 10);
  one('f');
  assert.is(q.publish(), false, 'avail_event 10, idx 5 -> 6');
  // vring_need_event across the 16-bit wrap.
  assert.is(vringNeedEvent(0xffff, 0, 0xfffe), true);
  assert.is(vringNeedEvent(0xffff, 0xffff, 0xfffe), false);
  assert.is(vringNeedEvent(0, 2, 0xffff), true);
  assert.is(vringNeedEvent(5, 2, 0xffff), false);
}));

test('takeUsed: tokens and lens in used-ring order, descriptors back on the free list, ring wrap', withQueue(4, {}, (q, m) => {
  const l = q.layout;
  for (let round = 0; round < 40; round++) {
    assert.ok(q.add([{ addr: 0x1000, len: 10, writable: false }, { addr: 0x2000, len: 500, writable: true }], `a${round}`));
    assert.ok(q.add([{ addr: 0x3000, len: 700, writable: true }, { addr: 0x4000, len: 300, writable: true }], `b${round}`));
    assert.is(q.numFree, 0);
    q.publish();
    const heads = [availEntry(m, l, 2 * round), availEntry(m, l, 2 * round + 1)];
    assert.equal(q.takeUsed(), []);
    // The device completes them out of order.
    pushUsed(m, l, [{ id: heads[1]!, len: 1000 }, { id: heads[0]!, len: 17 }]);
    assert.is(q.hasUsed, true);
    assert.equal(q.takeUsed(), [{ token: `b${round}`, len: 1000 }, { token: `a${round}`, len: 17 }]);
    assert.is(q.numFree, 4);
    assert.is(q.inFlight, 0);
    assert.is(q.hasUsed, false);
  }
  assert.is(availIdx(m, l), 80);
}));

for (const [what, entry] of [
  ['an id beyond the queue', (head: number) => ({ id: head + 100, len: 0 })],
  ['a descriptor inside a chain, not its head', (head: number, m: GuestMemory, l: SplitQueueLayout) => ({ id: readDesc(m, l.descAddr, head).next, len: 0 })],
  ['a len beyond the chain\'s writable bytes', (head: number) => ({ id: head, len: 501 })],
] as const) {
  test(`takeUsed: ${what} is a device bug (EPROTO), and the queue stays broken`, withQueue(8, {}, (q, m) => {
    const l = q.layout;
    q.add([{ addr: 0x1000, len: 10, writable: false }, { addr: 0x2000, len: 500, writable: true }], 'a');
    q.publish();
    pushUsed(m, l, [entry(availEntry(m, l, 0), m, l)]);
    assert.throws(() => q.takeUsed(), hasCode('EPROTO'));
    assert.throws(() => q.add([{ addr: 0, len: 1, writable: false }], 'b'), hasCode('EPROTO'));
  }));
}

test('takeUsed: the same head twice, a never-published head, or more used entries than outstanding are EPROTO', async () => {
  for (const scenario of ['twice', 'unpublished', 'too many'] as const) {
    await withQueue(8, {}, (q, m) => {
      const l = q.layout;
      q.add([{ addr: 0x1000, len: 10, writable: true }], 'a');
      q.add([{ addr: 0x1000, len: 10, writable: true }], 'b');
      q.publish();
      const head = availEntry(m, l, 0);
      if (scenario === 'twice') pushUsed(m, l, [{ id: head, len: 1 }, { id: head, len: 1 }]);
      if (scenario === 'unpublished') {
        q.add([{ addr: 0x1000, len: 10, writable: true }], 'c');
        pushUsed(m, l, [{ id: availEntry(m, l, 1) + 1, len: 1 }]);
      }
      if (scenario === 'too many') pushUsed(m, l, [{ id: head, len: 1 }, { id: availEntry(m, l, 1), len: 1 }, { id: 7, len: 1 }]);
      assert.throws(() => q.takeUsed(), hasCode('EPROTO'), scenario);
    })();
  }
});

test('call suppression without event idx: VIRTQ_AVAIL_F_NO_INTERRUPT in avail->flags', withQueue(4, {}, (q, m) => {
  const l = q.layout;
  q.disableCalls();
  assert.is(availFlags(m, l), 1);
  assert.is(q.enableCalls(), false);
  assert.is(availFlags(m, l), 0);
  q.add([{ addr: 0x1000, len: 10, writable: true }], 'a');
  q.publish();
  pushUsed(m, l, [{ id: availEntry(m, l, 0), len: 3 }]);
  q.disableCalls();
  assert.is(q.enableCalls(), true, 'a used entry is pending: the caller must not sleep');
  assert.is(usedEvent(m, l), 0);
}));

test('call suppression with event idx: used_event is the next used idx to notify for; flags stay 0', withQueue(4, { eventIdx: true }, (q, m) => {
  const l = q.layout;
  for (let i = 0; i < 3; i++) {
    q.add([{ addr: 0x1000, len: 10, writable: true }], `t${i}`);
    q.publish();
    pushUsed(m, l, [{ id: availEntry(m, l, i), len: 1 }]);
    q.takeUsed();
  }
  // Enabled: takeUsed keeps used_event at the last seen used idx (notify on the next entry).
  assert.is(usedEvent(m, l), 3);
  q.disableCalls();
  assert.is(availFlags(m, l), 0);
  assert.is(usedEvent(m, l), 2, 'parked one behind: crossed only after a 2^16 wrap');
  assert.is(vringNeedEvent(usedEvent(m, l), 4, 3), false);
  assert.is(q.enableCalls(), false);
  assert.is(usedEvent(m, l), 3);
  assert.is(vringNeedEvent(usedEvent(m, l), 4, 3), true);
  q.add([{ addr: 0x1000, len: 10, writable: true }], 'late');
  q.publish();
  pushUsed(m, l, [{ id: availEntry(m, l, 3), len: 1 }]);
  assert.is(q.enableCalls(), true);
}));

test('waitUsed: resolves on the call eventfd once used entries are there, false on timeout', withQueue(4, {}, async (q, m) => {
  const l = q.layout;
  q.add([{ addr: 0x1000, len: 10, writable: true }], 'a');
  q.publish();
  const started = Date.now();
  assert.is(await q.waitUsed(50), false);
  assert.ok(Date.now() - started >= 45);
  setTimeout(() => {
    pushUsed(m, l, [{ id: availEntry(m, l, 0), len: 4 }]);
    q.callEvent.signal();
  }, 20);
  assert.is(await q.waitUsed(2000), true);
  assert.equal(q.takeUsed(), [{ token: 'a', len: 4 }]);
}));

test('close during waitUsed: the wait resolves false, then the eventfds close; later use is EBADF', async () => {
  const memory = GuestMemory.allocate(MiB);
  try {
    const q = new SplitQueueDriver<string>(memory, new GuestAllocator(memory), { size: 4, eventIdx: false, indirectDesc: false });
    const waiting = q.waitUsed(5000);
    setTimeout(() => q.close(), 10);
    const started = Date.now();
    assert.is(await waiting, false);
    assert.ok(Date.now() - started < 1000);
    assert.throws(() => q.callEvent.fd, hasCode('EBADF'));
    assert.throws(() => q.add([{ addr: 0, len: 1, writable: false }], 'x'), hasCode('EBADF'));
    await new Promise((resolve) => setTimeout(resolve, 50));
  } finally {
    memory.close();
  }
});

test('net header: encode/decode, 10 and 12 bytes, little-endian, numBuffers 1 for 10 bytes', () => {
  const hdr = { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN, hdrLen: 0x0136, gsoSize: 1448, csumStart: 34, csumOffset: 16, numBuffers: 3 };
  const twelve = encodeNetHdr(hdr, 12);
  assert.equal([...twelve], [1, 0x81, 0x36, 0x01, 0xa8, 0x05, 34, 0, 16, 0, 3, 0]);
  assert.equal(decodeNetHdr(twelve, 12), hdr);
  const ten = encodeNetHdr({ ...hdr, numBuffers: 0 }, 10);
  assert.is(ten.length, 10);
  assert.equal(decodeNetHdr(ten, 10), { ...hdr, numBuffers: 1 });
  assert.equal([...encodeNetHdr({}, 12)], new Array(12).fill(0));
  assert.throws(() => encodeNetHdr({ numBuffers: 2 }, 10), hasCode('EINVAL'));
  assert.throws(() => encodeNetHdr({ flags: 256 }, 12), hasCode('EINVAL'));
  assert.throws(() => encodeNetHdr({ gsoSize: 65536 }, 12), hasCode('EINVAL'));
  assert.throws(() => decodeNetHdr(new Uint8Array(11), 12), hasCode('EINVAL'));
});

const modern: VirtioNetFeatures = { version1: true, mergeableRx: false, eventIdx: false, indirectDesc: false };

function withNet(options: Partial<Parameters<typeof VirtioNetDriver.create>[0]>, body: (net: VirtioNetDriver, m: GuestMemory) => void | Promise<void>): () => Promise<void> {
  return async () => {
    const memory = GuestMemory.allocate(16 * MiB);
    const net = VirtioNetDriver.create({ memory, queuePairs: 2, queueSize: 8, features: modern, rxBufferSize: 2048, txBufferSize: 2048, ...options });
    try {
      await body(net, memory);
    } finally {
      net.close();
      memory.close();
    }
  };
}

test('net driver: header size per 5.1.6, queue pairs as virtqueues 2i and 2i+1, queueConfig', async () => {
  const memory = GuestMemory.allocate(64 * MiB);
  try {
    const sizes = [
      [{ version1: false, mergeableRx: false }, 10],
      [{ version1: false, mergeableRx: true }, 12],
      [{ version1: true, mergeableRx: false }, 12],
    ] as const;
    for (const [f, size] of sizes) {
      const net = VirtioNetDriver.create({ memory, allocator: new GuestAllocator(memory), queuePairs: 1, queueSize: 4, features: { ...modern, ...f } });
      assert.is(net.hdrSize, size);
      assert.ok(net.rxBufferSize >= (f.mergeableRx ? 1536 : 65562 + 12));
      net.close();
    }
  } finally {
    memory.close();
  }
  await withNet({ features: { ...modern, eventIdx: true } }, (net) => {
    const c0 = net.queueConfig(0);
    const c1 = net.queueConfig(1);
    assert.equal(c0.rx, { ...net.rxQueue(0).layout, kickFd: net.rxQueue(0).kickEvent.fd, callFd: net.rxQueue(0).callEvent.fd, eventIdx: true, indirectDesc: false });
    assert.is(c0.tx.descAddr, net.txQueue(0).layout.descAddr);
    assert.is(new Set([c0.rx.kickFd, c0.rx.callFd, c0.tx.kickFd, c0.tx.callFd, c1.rx.kickFd, c1.tx.callFd]).size, 6);
    assert.throws(() => net.rxQueue(2), hasCode('EINVAL'));
  })();
});

test('net driver: fillRx posts every buffer as device-writable chains of rxSegments descriptors, once', withNet({ rxSegments: 3 }, (net, m) => {
  const rx = net.rxQueue(0);
  const l = rx.layout;
  // 8 descriptors / 3 per chain: 2 chains.
  assert.is(net.fillRx(0), 2);
  assert.is(net.fillRx(0), 0);
  assert.is(availIdx(m, l), 2);
  const chain = readChain(m, l, availEntry(m, l, 0)).segments;
  assert.equal(chain.map((d) => d.len), [683, 683, 682]);
  assert.ok(chain.every((d) => d.flags & VIRTQ_DESC_F_WRITE));
  assert.is(chain[1]!.addr, chain[0]!.addr + 683);
  assert.is(net.stats(0).kicks, 1);
}));

test('net driver: send writes header + frame into one readable descriptor, reapTx frees it', withNet({}, async (net, m) => {
  const tx = net.txQueue(1);
  const l = tx.layout;
  const frame = Buffer.from('ffffffffffff525400123456080045000000', 'hex');
  await net.send(1, frame, { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, csumStart: 34, csumOffset: 6 });
  assert.is(availIdx(m, l), 1);
  const [d, ...rest] = readChain(m, l, availEntry(m, l, 0)).segments;
  assert.is(rest.length, 0);
  assert.is(d!.flags, 0);
  assert.is(d!.len, 12 + frame.length);
  const bytes = Buffer.from(m.bytes(d!.addr, d!.len));
  assert.equal(decodeNetHdr(bytes, 12), { flags: 1, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 34, csumOffset: 6, numBuffers: 0 });
  assert.ok(bytes.subarray(12).equals(frame));
  assert.equal(net.stats(1), { txFrames: 1, txBytes: frame.length, rxFrames: 0, rxBytes: 0, kicks: 1 });
  pushUsed(m, l, [{ id: availEntry(m, l, 0), len: 0 }]);
  assert.is(net.reapTx(1), 1);
  assert.is(tx.inFlight, 0);
}));

test('net driver: txSplitHeader puts the header alone, indirect when negotiated; sendBatch publishes once', withNet({ txSplitHeader: true, features: { ...modern, indirectDesc: true } }, async (net, m) => {
  const l = net.txQueue(0).layout;
  const frames = Array.from({ length: 5 }, (_, i) => ({ frame: Buffer.alloc(60 + i, i) }));
  await net.sendBatch(0, frames);
  assert.is(availIdx(m, l), 5);
  assert.is(net.stats(0).kicks, 1);
  for (let i = 0; i < 5; i++) {
    const { segments, indirect } = readChain(m, l, availEntry(m, l, i));
    assert.ok(indirect);
    assert.equal(segments.map((s) => s.len), [12, 60 + i]);
    assert.is(segments[1]!.addr, segments[0]!.addr + 12);
    assert.ok(Buffer.from(m.bytes(segments[1]!.addr, 60 + i)).equals(frames[i]!.frame));
  }
}));

test('net driver: send waits for the device when the tx ring is full, then ETIMEDOUT', withNet({ queueSize: 2, timeoutMs: 100 }, async (net, m) => {
  const l = net.txQueue(0).layout;
  await net.sendBatch(0, [{ frame: Buffer.alloc(60) }, { frame: Buffer.alloc(60) }]);
  // The device completes one 30 ms later: the third send goes out.
  setTimeout(() => {
    pushUsed(m, l, [{ id: availEntry(m, l, 0), len: 0 }]);
    net.txQueue(0).callEvent.signal();
  }, 30);
  await net.send(0, Buffer.alloc(60, 3));
  assert.is(availIdx(m, l), 3);
  await net.send(0, Buffer.alloc(60)).then(() => assert.unreachable('should time out'), (e: unknown) => assert.ok(hasCode('ETIMEDOUT')(e)));
  await net.send(0, Buffer.alloc(4096)).then(() => assert.unreachable('too big'), (e: unknown) => assert.ok(hasCode('EMSGSIZE')(e)));
}));

/** Device side of rx: writes header + data into the chain at ring slot `slot`, returns its head. */
function deliver(m: GuestMemory, l: SplitQueueLayout, slot: number, bytes: Uint8Array): number {
  const head = availEntry(m, l, slot);
  let offset = 0;
  for (const d of readChain(m, l, head).segments) {
    const n = Math.min(d.len, bytes.length - offset);
    m.bytes(d.addr, n).set(bytes.subarray(offset, offset + n));
    offset += n;
  }
  return head;
}

test('net driver: receive strips the header, refills, keeps order; EPROTO on short len or num_buffers != 1', withNet({ rxSegments: 2 }, async (net, m) => {
  const l = net.rxQueue(0).layout;
  assert.is(net.fillRx(0), 4);
  const frames = [Buffer.alloc(1000, 1), Buffer.alloc(1500, 2)];
  const heads = frames.map((f, i) => deliver(m, l, i, Buffer.concat([encodeNetHdr({ numBuffers: 1, flags: 2 }, 12), f])));
  pushUsed(m, l, heads.map((id, i) => ({ id, len: 12 + frames[i]!.length })));
  const got = await net.receive(0, { timeoutMs: 10 });
  assert.is(got.length, 2);
  assert.ok(got[0]!.frame.equals(frames[0]!));
  assert.ok(got[1]!.frame.equals(frames[1]!));
  assert.is(got[1]!.hdr.flags, 2);
  assert.is(got[0]!.buffers, 1);
  assert.is(availIdx(m, l), 6, 'both buffers re-posted');
  assert.equal(await net.receive(0, { timeoutMs: 20 }), []);
  assert.equal(net.stats(0), { txFrames: 0, txBytes: 0, rxFrames: 2, rxBytes: 2500, kicks: 2 });

  pushUsed(m, l, [{ id: deliver(m, l, 2, encodeNetHdr({ numBuffers: 0 }, 12)), len: 12 }]);
  await net.receive(0).then(() => assert.unreachable(), (e: unknown) => assert.ok(hasCode('EPROTO')(e)));
  pushUsed(m, l, [{ id: availEntry(m, l, 3), len: 5 }]);
  await net.receive(0).then(() => assert.unreachable(), (e: unknown) => assert.ok(hasCode('EPROTO')(e)));
}));

test('net driver: mergeable rx assembles num_buffers entries, across receive calls too', withNet({ rxBufferSize: 1536, features: { ...modern, mergeableRx: true } }, async (net, m) => {
  const l = net.rxQueue(1).layout;
  net.fillRx(1);
  const frame = Buffer.from(Array.from({ length: 4000 }, (_, i) => i & 0xff));
  const whole = Buffer.concat([encodeNetHdr({ numBuffers: 3 }, 12), frame]);
  const heads = [0, 1, 2].map((i) => deliver(m, l, i, whole.subarray(1536 * i, 1536 * (i + 1))));
  pushUsed(m, l, [{ id: heads[0]!, len: 1536 }, { id: heads[1]!, len: 1536 }]);
  assert.equal(await net.receive(1, { timeoutMs: 10 }), [], 'two of three buffers: not a frame yet');
  pushUsed(m, l, [{ id: heads[2]!, len: whole.length - 2 * 1536 }]);
  const [got, ...none] = await net.receive(1, { timeoutMs: 10 });
  assert.is(none.length, 0);
  assert.is(got!.buffers, 3);
  assert.is(got!.hdr.numBuffers, 3);
  assert.ok(got!.frame.equals(frame));

  // A non-last buffer that is not full, and num_buffers beyond the posted buffers, are device bugs.
  const h1 = deliver(m, l, 3, encodeNetHdr({ numBuffers: 2 }, 12));
  pushUsed(m, l, [{ id: h1, len: 100 }, { id: availEntry(m, l, 4), len: 100 }]);
  await net.receive(1).then(() => assert.unreachable(), (e: unknown) => assert.ok(hasCode('EPROTO')(e)));
  const h2 = deliver(m, l, 5, encodeNetHdr({ numBuffers: 9 }, 12));
  pushUsed(m, l, [{ id: h2, len: 1536 }]);
  await net.receive(1).then(() => assert.unreachable(), (e: unknown) => assert.ok(hasCode('EPROTO')(e)));
}));

test('net driver: memoryNeeded bounds what create allocates; ENOMEM in too little memory', () => {
  const options = { queuePairs: 2, queueSize: 64, features: { ...modern, indirectDesc: true }, rxSegments: 4 };
  const needed = VirtioNetDriver.memoryNeeded(options);
  const memory = GuestMemory.allocate(needed);
  try {
    const allocator = new GuestAllocator(memory);
    VirtioNetDriver.create({ memory, allocator, ...options }).close();
    assert.ok(allocator.next <= needed);
    assert.throws(() => VirtioNetDriver.create({ memory, allocator, ...options }), hasCode('ENOMEM'));
  } finally {
    memory.close();
  }
});

test.run();
