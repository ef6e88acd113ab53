import { makeError } from '../../errors';
import type { EventFd } from '../eventfd';
import { DriverSignals } from './driver-signals';
import type { GuestMemory } from '../guest-memory';
import type { GuestAllocator } from './guest-allocator';
import { PACKED_RING_BASE_FRESH, encodePackedRingBase, type PackedRingPosition } from '../ring-base';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from './split-queue-driver';
import {
  MAX_QUEUE_SIZE, checkChain, vringNeedEvent, type Segment, type UsedBuffer, type VirtqueueDriver, type VirtqueueLayout, type VirtqueueOptions,
} from './virtqueue-driver';

// virtio 1.x 2.8 "Packed Virtqueues". NEXT, WRITE and INDIRECT keep their split
// ring values (2.8.3, 2.8.6, 2.8.7); AVAIL and USED are new (2.8.1).
export { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE };
export const VIRTQ_DESC_F_AVAIL = 1 << 7;
export const VIRTQ_DESC_F_USED = 1 << 15;

// 2.8.10: the Descriptor Ring Change Event Flags of an event suppression structure.
export const RING_EVENT_FLAGS_ENABLE = 0;
export const RING_EVENT_FLAGS_DISABLE = 1;
/** Only with VIRTIO_F_EVENT_IDX: an event at the descriptor named by off_wrap. */
export const RING_EVENT_FLAGS_DESC = 2;

/** 2.8.14: bit 15 of an event suppression structure's off_wrap word is the wrap counter. */
const EVENT_WRAP_SHIFT = 15;

export interface PackedQueueOptions extends VirtqueueOptions {
  /** Queue Size: 1..32768, not necessarily a power of 2 (2.8.10.1). */
  size: number;
}

const DESC_SIZE = 16;
/** A descriptor's le16 flags, as a u16 word index within its descriptor (byte offset 14). */
const FLAGS_WORD = 7;

const ID_FREE = 0;
const ID_ADDED = 1;
const ID_PUBLISHED = 2;

const hostIsLittleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const le16 = (value: number): number => (hostIsLittleEndian ? value : ((value & 0xff) << 8) | ((value >> 8) & 0xff));
const le32 = (value: number): number =>
  hostIsLittleEndian ? value : (((value & 0xff) << 24) | ((value & 0xff00) << 8) | ((value >>> 8) & 0xff00) | (value >>> 24)) >>> 0;

/**
 * The driver side of one packed virtqueue (virtio 1.x, 2.8), in guest memory
 * that a device thread reads and writes concurrently. Behaves at its public
 * interface exactly as SplitQueueDriver does; `layout` names the Driver Event
 * Suppression area as availAddr and the Device Event Suppression area as
 * usedAddr, as transports carry them.
 *
 * The device shares the one descriptor ring with the driver: descriptor flags
 * are read and written through Atomics on a u16 view. A seq-cst store of a
 * chain's first flags word is the release barrier 2.8.21.1.1 asks for before
 * exposing the chain; a seq-cst store followed by a seq-cst load is the full
 * barrier 2.8.21.3.1 asks for before reading the device's event suppression;
 * a seq-cst load of a used descriptor's flags orders the reads of its id and
 * len after it (2.8.22).
 */
export class PackedQueueDriver<T> implements VirtqueueDriver<T> {
  readonly packed = true;
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
  /** Driver Event Suppression: the driver writes it, the device reads it (2.8.10). */
  readonly #driverAreaAddr: number;
  /** Device Event Suppression: the device writes it, the driver reads it (2.8.10). */
  readonly #deviceAreaAddr: number;
  #ring!: DataView;
  /** The descriptor ring as u16 words, for atomic access to each descriptor's flags. */
  #ring16!: Uint16Array;
  /** Driver Event Suppression as [off_wrap, flags]. */
  #driverEvent16!: Uint16Array;
  /** Device Event Suppression as one u32 word, read whole so off_wrap and flags are one snapshot. */
  #deviceEvent32!: Uint32Array;

  // Per buffer id (2.8.21.1, "get the next free buffer id"), kept out of guest
  // memory so a device scribbling on the ring cannot corrupt them.
  readonly #freeIds: Uint16Array;
  #freeIdCount: number;
  readonly #idState: Uint8Array;
  /** Ring descriptors the id's chain took (1 for an indirect chain): how far its used descriptor skips (2.8.6). */
  readonly #chainLength: Uint16Array;
  readonly #writableBytes: Float64Array;
  readonly #tokens: (T | undefined)[];
  readonly #indirectTables: Float64Array;
  /** Where the chain's first descriptor is, and the flags publish() stores there last. */
  readonly #headPosition: Uint16Array;
  readonly #headFlags: Uint16Array;
  /** Ids added and not yet published, in ring order. */
  #pending: number[] = [];
  #pendingDescriptors = 0;
  #numFree: number;
  #inFlight = 0;

  // 2.8.1: the Driver Ring Wrap Counter goes with the next descriptor add() writes;
  // the published position is the next descriptor not yet made available.
  #nextAvail = 0;
  #availWrap = 1;
  #publishedAvail = 0;
  #publishedWrap = 1;
  // 2.8.22: where the driver looks for the next used descriptor, and the wrap counter it must carry.
  #nextUsed = 0;
  #usedWrap = 1;

  #callsEnabled = true;
  #broken: string | undefined;

  constructor(memory: GuestMemory, allocator: GuestAllocator, options: PackedQueueOptions) {
    const { size, eventIdx, indirectDesc } = options;
    // 2.8: "up to 2^15 entries"; 2.8.10.1: the Queue Size need not be a power of 2.
    if (!Number.isInteger(size) || size < 1 || size > MAX_QUEUE_SIZE) {
      throw makeError('EINVAL', `packed queue size must be an integer in 1..${MAX_QUEUE_SIZE}, got ${size}`);
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

    // 2.8.10.1: descriptor ring 16-aligned, 16*size bytes; each event suppression area 4-aligned, 4 bytes.
    // The allocator zeroes them: 2.8.13 "The descriptor ring is zero-initialized".
    this.#descAddr = allocator.alloc(DESC_SIZE * size, 16);
    this.#driverAreaAddr = allocator.alloc(4, 4);
    this.#deviceAreaAddr = allocator.alloc(4, 4);
    this.#mapRings(memory);

    // Ids are handed out lowest first, like the split driver's heads.
    this.#freeIds = new Uint16Array(size);
    for (let i = 0; i < size; i++) this.#freeIds[i] = size - 1 - i;
    this.#freeIdCount = size;
    this.#numFree = size;
    this.#idState = new Uint8Array(size);
    this.#chainLength = new Uint16Array(size);
    this.#writableBytes = new Float64Array(size);
    this.#tokens = new Array<T | undefined>(size).fill(undefined);
    this.#indirectTables = new Float64Array(size).fill(-1);
    this.#headPosition = new Uint16Array(size);
    this.#headFlags = new Uint16Array(size);
    // Calls start enabled: with event idx, that is "at the first used descriptor" (offset 0, wrap 1).
    this.#writeDriverEvent();

    this.#signals = new DriverSignals();
  }

  get memory(): GuestMemory {
    return this.#memory;
  }

  /**
   * The guest's RAM moved (a live migration in a harness): go on with the same
   * ring, buffers and bookkeeping at the same guest-physical addresses in
   * `memory`, which holds a copy of the old contents.
   */
  moveTo(memory: GuestMemory): void {
    this.#mapRings(memory);
    this.#memory = memory;
  }

  #mapRings(memory: GuestMemory): void {
    this.#ring = memory.view(this.#descAddr, DESC_SIZE * this.size);
    this.#ring16 = new Uint16Array(...alignedBuffer(memory, this.#descAddr, DESC_SIZE * this.size, 2));
    this.#driverEvent16 = new Uint16Array(...alignedBuffer(memory, this.#driverAreaAddr, 4, 2));
    this.#deviceEvent32 = new Uint32Array(...alignedBuffer(memory, this.#deviceAreaAddr, 4, 4));
  }

  /** descAddr: the descriptor ring; availAddr: the driver area; usedAddr: the device area. */
  get layout(): VirtqueueLayout {
    return { size: this.size, descAddr: this.#descAddr, availAddr: this.#driverAreaAddr, usedAddr: this.#deviceAreaAddr };
  }

  /** Free descriptors in the ring. */
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

  /**
   * The next descriptor not yet made available to the device, and the Driver
   * Ring Wrap Counter it will be made available with (2.8.1; what 2.8.16 calls
   * next_off / next_wrap). Chains added but not published lie beyond it.
   */
  get nextAvail(): PackedRingPosition {
    return { index: this.#publishedAvail, wrap: this.#publishedWrap as 0 | 1 };
  }

  /** The descriptor where the driver expects the next used descriptor, and the wrap counter it must carry (2.8.22). */
  get nextUsed(): PackedRingPosition {
    return { index: this.#nextUsed, wrap: this.#usedWrap as 0 | 1 };
  }

  /**
   * The vhost-user ring base (PACKED_RING_BASE_FRESH's encoding) a device would
   * resume from if it had read every descriptor made available and the driver had
   * reaped every used one: nextAvail and nextUsed. PACKED_RING_BASE_FRESH for a
   * fresh ring; only meaningful while nothing is in flight.
   */
  get ringBase(): number {
    return encodePackedRingBase(this.nextAvail, this.nextUsed);
  }

  /** Whether the device has returned buffers that takeUsed has not reaped yet. */
  get hasUsed(): boolean {
    return this.#isUsed(this.#loadFlags(this.#nextUsed), this.#usedWrap);
  }

  /**
   * Puts one chain in the ring, not yet visible to the device: every descriptor
   * is written but the first one's flags (see publish). Returns false when
   * there are not enough free descriptors.
   */
  add(segments: readonly Segment[], token: T, options?: { indirect?: boolean }): boolean {
    this.#assertUsable();
    const indirect = options?.indirect ?? false;
    const writableBytes = checkChain(segments, this, indirect);

    // 2.8.17: room for the whole list before its first descriptor is made available.
    const needed = indirect ? 1 : segments.length;
    if (needed > this.#numFree) return false;
    // Every chain takes at least one descriptor, so ids in use never outnumber descriptors in use.
    if (this.#freeIdCount === 0) throw makeError('EIO', 'no free buffer id with free descriptors left (driver bug)');
    const id = this.#freeIds[--this.#freeIdCount]!;

    const headPosition = this.#nextAvail;
    let headFlags: number;
    if (indirect) {
      // Allocated at an id's first indirect use and kept: at most size tables ever exist.
      if (this.#indirectTables[id]! < 0) this.#indirectTables[id] = this.#allocator.alloc(DESC_SIZE * this.maxIndirectSegments, 16);
      const table = this.#indirectTables[id]!;
      const view = this.#memory.view(table, DESC_SIZE * segments.length);
      // 2.8.7: in the table only WRITE is meaningful (and the id is ignored); entries follow each other, no NEXT.
      segments.forEach((s, i) => writeDesc(view, i, s.addr, s.len, 0, s.writable ? VIRTQ_DESC_F_WRITE : 0));
      // 2.8.7: the ring descriptor has INDIRECT only (WRITE is reserved there, NEXT is forbidden by 2.8.19);
      // addr and len are the table's.
      headFlags = VIRTQ_DESC_F_INDIRECT | this.#availUsedBits();
      writeDesc(this.#ring, headPosition, table, DESC_SIZE * segments.length, id, undefined);
      this.#advanceAvail();
    } else {
      headFlags = 0;
      segments.forEach((s, i) => {
        const last = i === segments.length - 1;
        // 2.8.6: NEXT on all but the last, and AVAIL/USED/WRITE right on every descriptor of the list:
        // AVAIL/USED follow the wrap counter of the lap each descriptor is in, so a chain that runs
        // past the ring's end carries the toggled counter after it.
        const flags = (last ? 0 : VIRTQ_DESC_F_NEXT) | (s.writable ? VIRTQ_DESC_F_WRITE : 0) | this.#availUsedBits();
        // 2.8.6 puts the buffer id in the last descriptor; 2.8.21.1 sets d.id in every one, and so does
        // Linux: every descriptor gets it, which serves a device reading either.
        // The first descriptor's flags wait for publish(); the others may go now, since the device
        // reads no further than a first descriptor that is not yet available (2.8.2).
        if (i === 0) {
          headFlags = flags;
          writeDesc(this.#ring, this.#nextAvail, s.addr, s.len, id, undefined);
        } else {
          writeDesc(this.#ring, this.#nextAvail, s.addr, s.len, id, flags);
        }
        this.#advanceAvail();
      });
    }
    this.#numFree -= needed;
    this.#pendingDescriptors += needed;
    this.#chainLength[id] = needed;
    this.#writableBytes[id] = writableBytes;
    this.#tokens[id] = token;
    this.#headPosition[id] = headPosition;
    this.#headFlags[id] = headFlags;
    this.#idState[id] = ID_ADDED;
    this.#pending.push(id);
    this.#inFlight++;
    return true;
  }

  /**
   * Makes the added chains available in ring order, each by storing its first
   * descriptor's flags last (2.8.6, 2.8.21.1). Returns whether the device asked
   * to be notified (2.8.10, 2.8.21.2): not when its event suppression flags say
   * DISABLE; with event idx and DESC, only if the descriptors just made
   * available include the one its off_wrap names; otherwise yes.
   */
  publish(): boolean {
    this.#assertUsable();
    if (this.#pending.length === 0) return false;
    for (const id of this.#pending) {
      Atomics.store(this.#ring16, (DESC_SIZE / 2) * this.#headPosition[id]! + FLAGS_WORD, le16(this.#headFlags[id]!));
      this.#idState[id] = ID_PUBLISHED;
    }
    const added = this.#pendingDescriptors;
    this.#pending = [];
    this.#pendingDescriptors = 0;
    this.#publishedAvail = this.#nextAvail;
    this.#publishedWrap = this.#availWrap;

    // 2.8.21.3.1: a full barrier between exposing the flags and reading the Device Area
    // (the seq-cst store above, then this seq-cst load); one u32 load, so off_wrap and flags
    // are the device's at one instant.
    const snapshot = le32(Atomics.load(this.#deviceEvent32, 0));
    const offWrap = snapshot & 0xffff;
    const eventFlags = (snapshot >>> 16) & 0x3; // 2.8.14: desc_event_flags is the low 2 bits
    if (eventFlags === RING_EVENT_FLAGS_DISABLE) return false;
    // DESC is valid only with event idx (2.8.10); a device that sets it without, or sets the
    // reserved value 3, gets notified: a spare notification is harmless, a missing one is not.
    if (eventFlags !== RING_EVENT_FLAGS_DESC || !this.eventIdx) return true;

    // As Linux's virtqueue_kick_prepare_packed: positions on a line that runs on across the
    // ring's end (16-bit modular, as vring_need_event takes them). new is the published end,
    // old is new less the descriptors just published; an event offset whose wrap counter is
    // not the current one is in the previous lap, size descriptors further back.
    const newIdx = this.#publishedAvail;
    const oldIdx = (newIdx - added) & 0xffff;
    let eventIdx = offWrap & 0x7fff;
    if (offWrap >> EVENT_WRAP_SHIFT !== this.#publishedWrap) eventIdx -= this.size;
    return vringNeedEvent(eventIdx & 0xffff, newIdx, oldIdx);
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
   * Reaps the chains the device has used since the last call, in the order it
   * wrote their used descriptors (any order of ids: 2.8.12 lets the device
   * complete out of order), and frees their descriptors and ids. A used
   * descriptor naming an id that is not outstanding (beyond the queue, free,
   * not yet published, or twice) or a len beyond the chain's writable bytes is
   * a device bug: EPROTO, and the queue is marked broken (nothing is freed for
   * the bad batch).
   */
  takeUsed(): UsedBuffer<T>[] {
    this.#assertUsable();
    let position = this.#nextUsed;
    let wrap = this.#usedWrap;
    const ids: number[] = [];
    const lens: number[] = [];
    const seen = new Set<number>();
    // Each round takes a distinct published id, so this ends within size rounds.
    for (;;) {
      // 2.8.22: the acquire load of flags orders the reads of id and len after it.
      const flags = this.#loadFlags(position);
      if (!this.#isUsed(flags, wrap)) break;
      const id = this.#ring.getUint16(DESC_SIZE * position + 12, true);
      const writtenLen = this.#ring.getUint32(DESC_SIZE * position + 8, true);
      if (id >= this.size || this.#idState[id] !== ID_PUBLISHED || seen.has(id)) {
        this.#fail(`the used descriptor at offset ${position} (wrap ${wrap}) has buffer id ${id}, which is not an outstanding buffer`);
      }
      // 2.8.4: a used descriptor's len is reserved, and ignored by drivers, unless it has WRITE
      // (2.8.3: "whether any data has been written by the device").
      const len = flags & VIRTQ_DESC_F_WRITE ? writtenLen : 0;
      if (this.checkUsedLen && len > this.#writableBytes[id]!) {
        this.#fail(`the used descriptor for buffer id ${id} says ${len} bytes written, but the chain has only ${this.#writableBytes[id]} device-writable bytes`);
      }
      seen.add(id);
      ids.push(id);
      lens.push(len);
      // 2.8.6: the device skips the rest of the chain's descriptors; so does the driver.
      position += this.#chainLength[id]!;
      if (position >= this.size) {
        position -= this.size;
        wrap ^= 1;
      }
    }
    if (ids.length === 0) return [];
    const used: UsedBuffer<T>[] = [];
    ids.forEach((id, i) => {
      used.push({ token: this.#tokens[id] as T, len: lens[i]! });
      this.#freeId(id);
    });
    this.#nextUsed = position;
    this.#usedWrap = wrap;
    // Keep the driver's event offset current, as it must name the descriptor we want a call for.
    if (this.eventIdx && this.#callsEnabled) this.#writeDriverEvent();
    return used;
  }

  /**
   * Asks the device not to send used buffer notifications (a hint, 2.8.10):
   * RING_EVENT_FLAGS_DISABLE in the Driver Event Suppression flags.
   */
  disableCalls(): void {
    this.#callsEnabled = false;
    this.#writeDriverEvent();
  }

  /**
   * Asks for a notification at the next used buffer (ENABLE, or with event idx
   * DESC at nextUsed); returns true if used buffers are already pending, in
   * which case none may come and the caller must not sleep.
   */
  enableCalls(): boolean {
    this.#callsEnabled = true;
    this.#writeDriverEvent();
    // The seq-cst stores in writeDriverEvent, then the seq-cst load in hasUsed: the full
    // barrier that keeps a used descriptor written meanwhile from going unnoticed (2.8.22).
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

  /** 2.8.1: an available descriptor has AVAIL equal to the driver's wrap counter and USED its inverse. */
  #availUsedBits(): number {
    return this.#availWrap ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
  }

  /** 2.8.21.1: the next descriptor, toggling the Driver Ring Wrap Counter after the ring's last one. */
  #advanceAvail(): void {
    if (++this.#nextAvail === this.size) {
      this.#nextAvail = 0;
      this.#availWrap ^= 1;
    }
  }

  #loadFlags(position: number): number {
    return le16(Atomics.load(this.#ring16, (DESC_SIZE / 2) * position + FLAGS_WORD));
  }

  /**
   * 2.8.1: a used descriptor has AVAIL and USED equal, to the device's wrap counter, which is the
   * one the driver expects at its used position. Anything else there (an available descriptor,
   * a used one of the previous lap, the zeroed ring of the first) is not used yet.
   */
  #isUsed(flags: number, wrap: number): boolean {
    const avail = (flags & VIRTQ_DESC_F_AVAIL) !== 0 ? 1 : 0;
    const used = (flags & VIRTQ_DESC_F_USED) !== 0 ? 1 : 0;
    return avail === wrap && used === wrap;
  }

  /**
   * The Driver Event Suppression area (2.8.10): DISABLE while calls are off; ENABLE
   * while on, or with event idx DESC naming nextUsed, the next used descriptor wanted.
   * off_wrap goes first, so the device never reads DESC with a stale offset.
   */
  #writeDriverEvent(): void {
    if (!this.#callsEnabled) {
      Atomics.store(this.#driverEvent16, 1, le16(RING_EVENT_FLAGS_DISABLE));
    } else if (this.eventIdx) {
      Atomics.store(this.#driverEvent16, 0, le16(this.#nextUsed | (this.#usedWrap << EVENT_WRAP_SHIFT)));
      Atomics.store(this.#driverEvent16, 1, le16(RING_EVENT_FLAGS_DESC));
    } else {
      Atomics.store(this.#driverEvent16, 1, le16(RING_EVENT_FLAGS_ENABLE));
    }
  }

  #freeId(id: number): void {
    this.#freeIds[this.#freeIdCount++] = id;
    this.#numFree += this.#chainLength[id]!;
    this.#idState[id] = ID_FREE;
    this.#tokens[id] = undefined;
    this.#inFlight--;
  }

  #fail(message: string): never {
    this.#broken = message;
    throw makeError('EPROTO', `device bug on packed virtqueue at 0x${this.#descAddr.toString(16)}: ${message}`);
  }

  #assertUsable(): void {
    if (this.#signals.closed) throw makeError('EBADF', 'virtqueue is closed');
    if (this.#broken !== undefined) throw makeError('EPROTO', `virtqueue is broken after a device bug: ${this.#broken}`);
  }
}

/** Writes a pvirtq_desc (2.8.13); `flags` undefined leaves the flags word as it is. */
function writeDesc(table: DataView, index: number, addr: number, len: number, id: number, flags: number | undefined): void {
  const at = DESC_SIZE * index;
  // addr is a le64; split it so no BigInt is needed for addresses below 2^53.
  table.setUint32(at, addr % 0x1_0000_0000, true);
  table.setUint32(at + 4, Math.floor(addr / 0x1_0000_0000), true);
  table.setUint32(at + 8, len, true);
  table.setUint16(at + 12, id, true);
  if (flags !== undefined) table.setUint16(at + 14, flags, true);
}

/** [buffer, byteOffset, length] of `bytes` guest bytes as `wordBytes`-byte words, for Atomics. */
function alignedBuffer(memory: GuestMemory, gpa: number, bytes: number, wordBytes: 2 | 4): [ArrayBufferLike, number, number] {
  const view = memory.bytes(gpa, bytes);
  if (view.byteOffset % wordBytes !== 0) throw makeError('EINVAL', `guest address 0x${gpa.toString(16)} is not ${wordBytes}-aligned within its region's mapping`);
  return [view.buffer, view.byteOffset, bytes / wordBytes];
}
