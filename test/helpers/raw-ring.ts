// Writing split virtqueue structures straight into guest memory, bypassing the
// driver's checks, so tests can hand the device rings a buggy or hostile guest
// would write (virtio 1.x 2.7). Little-endian throughout; the index fields go
// through Atomics so the device thread sees the ring entries before the index.
// Atomics store host-endian words: like the device, this assumes a little-endian host.
import type { EventFd } from '../../src/virtio/eventfd';
import type { GuestMemory } from '../../src/virtio/guest-memory';

export const DESC_F_NEXT = 1;
export const DESC_F_WRITE = 2;
export const DESC_F_INDIRECT = 4;
export const DESC_SIZE = 16;

export interface RawDesc {
  addr: number | bigint;
  len: number;
  flags?: number;
  next?: number;
}

export interface RingLayout {
  size: number;
  descAddr: number;
  availAddr: number;
  usedAddr: number;
}

/** Writes descriptors at `gpa` (a descriptor table or an indirect table). */
export function writeDescs(memory: GuestMemory, gpa: number, descs: readonly RawDesc[], first = 0): void {
  const view = memory.view(gpa + DESC_SIZE * first, DESC_SIZE * descs.length);
  descs.forEach((d, i) => {
    view.setBigUint64(DESC_SIZE * i, BigInt(d.addr), true);
    view.setUint32(DESC_SIZE * i + 8, d.len >>> 0, true);
    view.setUint16(DESC_SIZE * i + 12, d.flags ?? 0, true);
    view.setUint16(DESC_SIZE * i + 14, d.next ?? 0, true);
  });
}

/** The guest's side of one split virtqueue, raw: no free list, no checks. */
export class RawRing {
  readonly memory: GuestMemory;
  readonly layout: RingLayout;
  readonly #kick: EventFd;
  readonly #availRing: DataView;
  /** avail: [flags, idx, ring[size], used_event] as u16 words. */
  readonly #avail16: Uint16Array;
  readonly #used16: Uint16Array;

  constructor(memory: GuestMemory, layout: RingLayout, kick: EventFd) {
    this.memory = memory;
    this.layout = layout;
    this.#kick = kick;
    this.#availRing = memory.view(layout.availAddr + 4, 2 * layout.size);
    const avail = memory.bytes(layout.availAddr, 6 + 2 * layout.size);
    this.#avail16 = new Uint16Array(avail.buffer, avail.byteOffset, avail.length >> 1);
    const used = memory.bytes(layout.usedAddr, 6 + 8 * layout.size);
    this.#used16 = new Uint16Array(used.buffer, used.byteOffset, used.length >> 1);
  }

  get size(): number {
    return this.layout.size;
  }

  /** avail->idx as the device reads it. */
  get availIdx(): number {
    return Atomics.load(this.#avail16, 1);
  }

  set availIdx(value: number) {
    Atomics.store(this.#avail16, 1, value & 0xffff);
  }

  /** used->idx, as the device last published it. */
  get usedIdx(): number {
    return Atomics.load(this.#used16, 1);
  }

  /** Writes descriptors into the ring's own table, from index `first`. */
  writeDescs(first: number, descs: readonly RawDesc[]): void {
    writeDescs(this.memory, this.layout.descAddr, descs, first);
  }

  /** Sets available ring entry `slot` (0..size-1) to `head`, which may be anything a u16 holds. */
  setSlot(slot: number, head: number): void {
    this.#availRing.setUint16(2 * slot, head & 0xffff, true);
  }

  /** Points every slot of the available ring at `head`: whatever the device pops next is that chain. */
  fillSlots(head: number): void {
    for (let slot = 0; slot < this.size; slot++) this.setSlot(slot, head);
  }

  /** Makes `heads` available after what is there: ring entries first, then avail->idx. */
  push(...heads: number[]): void {
    let idx = this.availIdx;
    for (const head of heads) {
      this.setSlot(idx % this.size, head);
      idx = (idx + 1) & 0xffff;
    }
    this.availIdx = idx;
  }

  /** Signals the kick eventfd. */
  kick(): void {
    this.#kick.signal();
  }
}
