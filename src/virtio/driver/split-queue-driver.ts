import { makeError } from '../../errors';
import type { EventFd } from '../eventfd';
import { DriverSignals } from './driver-signals';
import type { GuestMemory } from '../guest-memory';
import type { GuestAllocator } from './guest-allocator';
import {
  MAX_QUEUE_SIZE, checkChain, vringNeedEvent, type Segment, type UsedBuffer, type VirtqueueDriver, type VirtqueueLayout, type VirtqueueOptions,
} from './virtqueue-driver';

export { MAX_QUEUE_SIZE, vringNeedEvent };
export type { Segment, UsedBuffer };

// virtio 1.x, 2.7.5 / 2.7.6 / 2.7.8: descriptor, available-ring and used-ring flags.
export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
export const VIRTQ_USED_F_NO_NOTIFY = 1;

const DESC_SIZE = 16;
const USED_ELEM_SIZE = 8;

export interface SplitQueueOptions extends VirtqueueOptions {
  /** Queue Size: a power of 2, 1..32768 (2.7). */
  size: number;
}

/** A split ring's descriptor table, available ring and used ring. */
export type SplitQueueLayout = VirtqueueLayout;

const HEAD_FREE = 0;
const HEAD_ADDED = 1;
const HEAD_PUBLISHED = 2;

const hostIsLittleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const le16 = (value: number): number => (hostIsLittleEndian ? value : ((value & 0xff) << 8) | ((value >> 8) & 0xff));

/**
 * The driver side of one split virtqueue (virtio 1.x, 2.7), in guest memory that
 * a device thread reads and writes concurrently.
 *
 * Fields the device writes (used ring, avail_event, used flags) are read from
 * guest memory on every use, never cached. The ring indices and event words go
 * through Atomics: a seq-cst store followed by a seq-cst load is the full barrier
 * the spec requires between publishing avail->idx and reading avail_event (and
 * between writing used_event and re-reading used->idx), which plain stores would
 * not give even on x86.
 */
export class SplitQueueDriver<T> implements VirtqueueDriver<T> {
  readonly packed = false;
  #memory: GuestMemory;
  readonly size: number;
  readonly eventIdx: boolean;
  readonly indirectDesc: boolean;
  readonly maxIndirectSegments: number;
  readonly checkUsedLen: boolean;
  /** The kick and call eventfds, and waiting on the call. */
  readonly #signals: DriverSignals;

  /** Driver to device: "new buffers are available". */
  get kickEvent(): EventFd {
    return this.#signals.kickEvent;
  }

  /** Device to driver: "buffers were used" (the used buffer notification). */
  get callEvent(): EventFd {
    return this.#signals.callEvent;
  }

  readonly #allocator: GuestAllocator;
  readonly #descAddr: number;
  readonly #availAddr: number;
  readonly #usedAddr: number;
  #desc!: DataView;
  #availRing!: DataView;
  /** avail: [flags, idx, ring[size], used_event] as u16 words, for atomic access. */
  #avail16!: Uint16Array;
  /** used: [flags, idx] then, at word 2 + 4*size, avail_event. */
  #used16!: Uint16Array;
  #usedRing!: DataView;

  // Driver-private bookkeeping, kept out of guest memory so a device scribbling
  // on the descriptor table cannot corrupt the free list.
  readonly #nextFree: Uint16Array;
  #freeHead = 0;
  #numFree: number;
  readonly #headState: Uint8Array;
  readonly #chainLength: Uint16Array;
  readonly #writableBytes: Float64Array;
  readonly #tokens: (T | undefined)[];
  readonly #indirectTables: Float64Array;
  #pending: number[] = [];
  #inFlight = 0;

  #availIdx = 0;
  #lastUsedIdx = 0;
  #callsEnabled = true;
  #broken: string | undefined;

  constructor(memory: GuestMemory, allocator: GuestAllocator, options: SplitQueueOptions) {
    const { size, eventIdx, indirectDesc } = options;
    if (!Number.isInteger(size) || size < 1 || size > MAX_QUEUE_SIZE || (size & (size - 1)) !== 0) {
      throw makeError('EINVAL', `queue size must be a power of 2 in 1..${MAX_QUEUE_SIZE}, got ${size}`);
    }
    const maxIndirect = options.maxIndirectSegments ?? Math.min(size, 64);
    if (!Number.isInteger(maxIndirect) || maxIndirect < 1 || maxIndirect > size) {
      throw makeError('EINVAL', `maxIndirectSegments must be in 1..${size} (a chain may not be longer than the queue), got ${maxIndirect}`);
    }
    this.#memory = memory;
    this.size = size;
    this.eventIdx = eventIdx;
    this.indirectDesc = indirectDesc;
    this.maxIndirectSegments = maxIndirect;
    this.checkUsedLen = options.checkUsedLen ?? true;
    this.#allocator = allocator;

    // 2.7: descriptor table 16-aligned, available ring 2-aligned, used ring 4-aligned.
    const availBytes = 6 + 2 * size;
    const usedBytes = 6 + USED_ELEM_SIZE * size;
    this.#descAddr = allocator.alloc(DESC_SIZE * size, 16);
    this.#availAddr = allocator.alloc(availBytes, 2);
    this.#usedAddr = allocator.alloc(usedBytes, 4);
    this.#mapRings(memory);

    this.#nextFree = new Uint16Array(size);
    for (let i = 0; i < size; i++) this.#nextFree[i] = (i + 1) % size;
    this.#numFree = size;
    this.#headState = new Uint8Array(size);
    this.#chainLength = new Uint16Array(size);
    this.#writableBytes = new Float64Array(size);
    this.#tokens = new Array<T | undefined>(size).fill(undefined);
    this.#indirectTables = new Float64Array(size).fill(-1);

    this.#signals = new DriverSignals();
  }

  get memory(): GuestMemory {
    return this.#memory;
  }

  /**
   * The guest's RAM moved (a live migration in a harness): go on with the same
   * rings, buffers and bookkeeping at the same guest-physical addresses in
   * `memory`, which holds a copy of the old contents.
   */
  moveTo(memory: GuestMemory): void {
    this.#mapRings(memory);
    this.#memory = memory;
  }

  #mapRings(memory: GuestMemory): void {
    const availBytes = 6 + 2 * this.size;
    const usedBytes = 6 + USED_ELEM_SIZE * this.size;
    this.#desc = memory.view(this.#descAddr, DESC_SIZE * this.size);
    this.#availRing = memory.view(this.#availAddr + 4, 2 * this.size);
    this.#avail16 = wordView(memory, this.#availAddr, availBytes);
    // The used ring's trailing u16 sits at 4 + 8*size, so a u16 view of 6 + 8*size bytes covers it.
    this.#used16 = wordView(memory, this.#usedAddr, usedBytes);
    this.#usedRing = memory.view(this.#usedAddr + 4, USED_ELEM_SIZE * this.size);
  }

  get layout(): SplitQueueLayout {
    return { size: this.size, descAddr: this.#descAddr, availAddr: this.#availAddr, usedAddr: this.#usedAddr };
  }

  /** Free descriptors in the table. */
  get numFree(): number {
    return this.#numFree;
  }

  /** Chains added and not yet returned by takeUsed (published or not). */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Times kick() signalled the device. */
  get kicks(): number {
    return this.#signals.kicks;
  }

  /** Whether the device has returned buffers that takeUsed has not reaped yet. */
  get hasUsed(): boolean {
    return this.#readUsedIdx() !== this.#lastUsedIdx;
  }

  /**
   * Puts one chain in the descriptor table (not yet visible to the device: see
   * publish). Returns false when there are not enough free descriptors.
   */
  add(segments: readonly Segment[], token: T, options?: { indirect?: boolean }): boolean {
    this.#assertUsable();
    const indirect = options?.indirect ?? false;
    const writableBytes = checkChain(segments, this, indirect);

    const needed = indirect ? 1 : segments.length;
    if (needed > this.#numFree) return false;

    const head = this.#freeHead;
    if (indirect) {
      // Allocated at a head's first indirect use and kept: at most size tables ever exist.
      if (this.#indirectTables[head]! < 0) this.#indirectTables[head] = this.#allocator.alloc(DESC_SIZE * this.maxIndirectSegments, 16);
      const table = this.#indirectTables[head]!;
      const view = this.#memory.view(table, DESC_SIZE * segments.length);
      segments.forEach((s, i) => {
        const last = i === segments.length - 1;
        writeDesc(view, i, s.addr, s.len, (last ? 0 : VIRTQ_DESC_F_NEXT) | (s.writable ? VIRTQ_DESC_F_WRITE : 0), last ? 0 : i + 1);
      });
      // 2.7.5.3.1: INDIRECT without NEXT or WRITE; len is the table's size in bytes.
      writeDesc(this.#desc, head, table, DESC_SIZE * segments.length, VIRTQ_DESC_F_INDIRECT, 0);
      this.#freeHead = this.#nextFree[head]!;
    } else {
      let index = head;
      segments.forEach((s, i) => {
        const last = i === segments.length - 1;
        const next = this.#nextFree[index]!;
        writeDesc(this.#desc, index, s.addr, s.len, (last ? 0 : VIRTQ_DESC_F_NEXT) | (s.writable ? VIRTQ_DESC_F_WRITE : 0), last ? 0 : next);
        index = next;
      });
      this.#freeHead = index;
    }
    this.#numFree -= needed;
    this.#chainLength[head] = needed;
    this.#writableBytes[head] = writableBytes;
    this.#tokens[head] = token;
    this.#headState[head] = HEAD_ADDED;
    this.#pending.push(head);
    this.#inFlight++;
    return true;
  }

  /**
   * Makes the added chains visible: ring entries first, then avail->idx. Returns
   * whether the device asked to be notified (2.7.10): with event idx, whether the
   * new idx crossed avail_event; without, unless the device set NO_NOTIFY.
   */
  publish(): boolean {
    this.#assertUsable();
    if (this.#pending.length === 0) return false;
    const oldIdx = this.#availIdx;
    for (const head of this.#pending) {
      this.#availRing.setUint16(2 * (this.#availIdx % this.size), head, true);
      this.#availIdx = (this.#availIdx + 1) & 0xffff;
      this.#headState[head] = HEAD_PUBLISHED;
    }
    this.#pending = [];
    const newIdx = this.#availIdx;
    Atomics.store(this.#avail16, 1, le16(newIdx));
    if (this.eventIdx) return vringNeedEvent(le16(Atomics.load(this.#used16, 2 + 4 * this.size)), newIdx, oldIdx);
    return (le16(Atomics.load(this.#used16, 0)) & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  /** Notifies the device (signals the kick eventfd), whether or not it asked. */
  kick(): void {
    this.#signals.kick();
  }

  /** publish(), then kick() only if the device asked for it. */
  publishAndKick(): void {
    if (this.publish()) this.kick();
  }

  /**
   * Reaps the chains the device has used since the last call, in used-ring order,
   * and frees their descriptors. A used entry naming a descriptor that is not an
   * outstanding head, more used entries than buffers made available, or a len
   * beyond the chain's writable bytes is a device bug: EPROTO, and the queue is
   * marked broken (nothing is freed for the bad batch).
   */
  takeUsed(): UsedBuffer<T>[] {
    this.#assertUsable();
    const usedIdx = this.#readUsedIdx();
    const count = (usedIdx - this.#lastUsedIdx) & 0xffff;
    if (count === 0) return [];
    const published = this.#inFlight - this.#pending.length;
    if (count > published) {
      this.#fail(`the device moved used->idx from ${this.#lastUsedIdx} to ${usedIdx}: ${count} used entries, but only ${published} buffers are outstanding`);
    }
    const heads: number[] = [];
    const lens: number[] = [];
    const seen = new Set<number>();
    for (let i = 0; i < count; i++) {
      const slot = (this.#lastUsedIdx + i) % this.size;
      const id = this.#usedRing.getUint32(USED_ELEM_SIZE * slot, true);
      const len = this.#usedRing.getUint32(USED_ELEM_SIZE * slot + 4, true);
      if (id >= this.size || this.#headState[id] !== HEAD_PUBLISHED || seen.has(id)) {
        this.#fail(`used ring entry ${(this.#lastUsedIdx + i) & 0xffff} has id ${id}, which is not an outstanding descriptor chain head`);
      }
      if (this.checkUsedLen && len > this.#writableBytes[id]!) {
        this.#fail(`used ring entry for head ${id} says ${len} bytes written, but the chain has only ${this.#writableBytes[id]} device-writable bytes`);
      }
      seen.add(id);
      heads.push(id);
      lens.push(len);
    }
    const used: UsedBuffer<T>[] = [];
    heads.forEach((head, i) => {
      used.push({ token: this.#tokens[head] as T, len: lens[i]! });
      this.#freeChain(head);
    });
    this.#lastUsedIdx = usedIdx;
    // Keep the device's used_event current, as it must name the entry we want a call for.
    if (this.eventIdx) this.#writeUsedEvent();
    return used;
  }

  /**
   * Asks the device not to send used buffer notifications (a hint, 2.7.7): sets
   * NO_INTERRUPT, or with event idx parks used_event just behind the last seen
   * used idx, so it is crossed only after a full 2^16 wrap.
   */
  disableCalls(): void {
    this.#callsEnabled = false;
    if (this.eventIdx) this.#writeUsedEvent();
    else Atomics.store(this.#avail16, 0, le16(VIRTQ_AVAIL_F_NO_INTERRUPT));
  }

  /**
   * Asks for a notification at the next used buffer; returns true if used
   * buffers are already pending, in which case none may come and the caller must
   * not sleep.
   */
  enableCalls(): boolean {
    this.#callsEnabled = true;
    if (this.eventIdx) this.#writeUsedEvent();
    else Atomics.store(this.#avail16, 0, 0);
    return this.hasUsed;
  }

  /**
   * Resolves true as soon as used buffers are pending, false after `timeoutMs`.
   * Leaves notifications enabled. Waits on the call eventfd off the event loop.
   */
  async waitUsed(timeoutMs: number): Promise<boolean> {
    this.#assertUsable();
    return this.#signals.waitUntil(() => this.enableCalls(), timeoutMs);
  }

  /**
   * Closes the eventfds. A waitUsed in progress resolves false first: closing an
   * eventfd under a pending EventFd.wait would leave its timer reading a closed fd.
   */
  close(): void {
    this.#signals.close();
  }

  get closed(): boolean {
    return this.#signals.closed;
  }

  #readUsedIdx(): number {
    return le16(Atomics.load(this.#used16, 1));
  }

  #writeUsedEvent(): void {
    const value = this.#callsEnabled ? this.#lastUsedIdx : (this.#lastUsedIdx - 1) & 0xffff;
    Atomics.store(this.#avail16, 2 + this.size, le16(value));
  }

  #freeChain(head: number): void {
    let last = head;
    for (let i = 1; i < this.#chainLength[head]!; i++) last = this.#nextFree[last]!;
    this.#nextFree[last] = this.#freeHead;
    this.#freeHead = head;
    this.#numFree += this.#chainLength[head]!;
    this.#headState[head] = HEAD_FREE;
    this.#tokens[head] = undefined;
    this.#inFlight--;
  }

  #fail(message: string): never {
    this.#broken = message;
    throw makeError('EPROTO', `device bug on virtqueue at 0x${this.#descAddr.toString(16)}: ${message}`);
  }

  #assertUsable(): void {
    if (this.#signals.closed) throw makeError('EBADF', 'virtqueue is closed');
    if (this.#broken !== undefined) throw makeError('EPROTO', `virtqueue is broken after a device bug: ${this.#broken}`);
  }
}

function writeDesc(table: DataView, index: number, addr: number, len: number, flags: number, next: number): void {
  const at = DESC_SIZE * index;
  // addr is a le64; split it so no BigInt is needed for addresses below 2^53.
  table.setUint32(at, addr % 0x1_0000_0000, true);
  table.setUint32(at + 4, Math.floor(addr / 0x1_0000_0000), true);
  table.setUint32(at + 8, len, true);
  table.setUint16(at + 12, flags, true);
  table.setUint16(at + 14, next, true);
}

/** u16 words over guest bytes, for Atomics; the ring alignment makes the offset even. */
function wordView(memory: GuestMemory, gpa: number, length: number): Uint16Array {
  const bytes = memory.bytes(gpa, length);
  if (bytes.byteOffset % 2 !== 0) throw makeError('EINVAL', `guest address 0x${gpa.toString(16)} is not 2-aligned within its region's mapping`);
  return new Uint16Array(bytes.buffer, bytes.byteOffset, length >> 1);
}
