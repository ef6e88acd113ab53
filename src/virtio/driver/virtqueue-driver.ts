import { makeError } from '../../errors';
import type { EventFd } from '../eventfd';
import type { GuestMemory } from '../guest-memory';

// What every guest-side virtqueue driver offers, whatever its ring layout: the
// split ring (virtio 1.x 2.7, SplitQueueDriver) or the packed ring (2.8,
// PackedQueueDriver). The net and control queue drivers take this shape only,
// so they run over either layout unchanged.

/** Queue Size limit of both layouts (2.7: split; 2.8: "up to 2^15 entries"). */
export const MAX_QUEUE_SIZE = 32768;

/**
 * vring_need_event (2.7.10): has `eventIdx` been crossed going from `oldIdx` to
 * `newIdx`, in 16-bit modular arithmetic? The packed ring (2.8.10) uses it too,
 * on ring offsets with the wrap counter folded in (see PackedQueueDriver.publish).
 */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

/** One buffer of a descriptor chain. */
export interface Segment {
  addr: number;
  len: number;
  /** Device-writable (VIRTQ_DESC_F_WRITE); these must come after every readable one. */
  writable: boolean;
}

/** The chain's token and what the device reported for it. */
export interface UsedBuffer<T> {
  token: T;
  /** Bytes the device wrote into the chain's writable part. */
  len: number;
}

/**
 * Where a virtqueue's three parts are, as a transport hands them to the device
 * (vhost-user SET_VRING_ADDR's desc/avail/used, virtio-pci's
 * queue_desc/queue_driver/queue_device).
 *
 * Split ring (2.7): the descriptor table, available ring and used ring.
 * Packed ring (2.8): the descriptor ring, the Driver Event Suppression area
 * (in `availAddr`: the "driver area") and the Device Event Suppression area
 * (in `usedAddr`: the "device area").
 */
export interface VirtqueueLayout {
  size: number;
  descAddr: number;
  availAddr: number;
  usedAddr: number;
}

/** What a queue's constructor takes, for either layout. */
export interface VirtqueueOptions {
  /** Queue Size: 1..32768; a power of 2 for a split ring (2.7), any size for a packed ring (2.8.10.1). */
  size: number;
  /** VIRTIO_F_EVENT_IDX negotiated: event indices replace plain enable/disable flags. */
  eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC negotiated. */
  indirectDesc: boolean;
  /** Capacity of each indirect table. Default min(size, 64); never above size (2.7.5.3.1, 2.8.17). */
  maxIndirectSegments?: number;
  /**
   * Reject a used `len` above the chain's device-writable bytes (2.7.8, 2.8.4:
   * len is what the device wrote). Default true; off for legacy transmit queues,
   * whose used length the driver SHOULD ignore (5.1.6 legacy).
   */
  checkUsedLen?: boolean;
}

/**
 * The driver side of one virtqueue in guest memory that a device thread reads
 * and writes concurrently. SplitQueueDriver and PackedQueueDriver implement it
 * with the same behaviour at this interface: only `packed` and `layout`'s
 * meaning tell them apart.
 */
export interface VirtqueueDriver<T> {
  /** true for the packed layout (VIRTIO_F_RING_PACKED, 2.8), false for split (2.7). */
  readonly packed: boolean;
  readonly size: number;
  readonly eventIdx: boolean;
  readonly indirectDesc: boolean;
  readonly maxIndirectSegments: number;
  readonly checkUsedLen: boolean;
  /** Driver to device: "new buffers are available". */
  readonly kickEvent: EventFd;
  /** Device to driver: "buffers were used" (the used buffer notification). */
  readonly callEvent: EventFd;
  readonly memory: GuestMemory;
  /**
   * The guest's RAM moved (a live migration in a harness): go on with the same
   * rings, buffers and bookkeeping at the same guest-physical addresses in
   * `memory`, which holds a copy of the old contents.
   */
  moveTo(memory: GuestMemory): void;
  readonly layout: VirtqueueLayout;
  /** Free descriptors in the ring (split: in the table). */
  readonly numFree: number;
  /** Chains added and not yet returned by takeUsed (published or not). */
  readonly inFlight: number;
  /** Times kick() signalled the device. */
  readonly kicks: number;
  /** Whether the device has returned buffers that takeUsed has not reaped yet. */
  readonly hasUsed: boolean;
  /**
   * Puts one chain in the ring, not yet visible to the device (see publish).
   * Returns false when there are not enough free descriptors.
   */
  add(segments: readonly Segment[], token: T, options?: { indirect?: boolean }): boolean;
  /** Makes the added chains visible to the device; returns whether the device asked to be notified. */
  publish(): boolean;
  /** Notifies the device (signals the kick eventfd), whether or not it asked. */
  kick(): void;
  /** publish(), then kick() only if the device asked for it. */
  publishAndKick(): void;
  /** Reaps the chains the device has used, in the order the device used them. EPROTO on a device bug. */
  takeUsed(): UsedBuffer<T>[];
  /** Asks the device not to send used buffer notifications (a hint). */
  disableCalls(): void;
  /** Asks for a notification at the next used buffer; true if used buffers are already pending (do not sleep). */
  enableCalls(): boolean;
  /** Resolves true as soon as used buffers are pending, false after `timeoutMs`. Leaves notifications enabled. */
  waitUsed(timeoutMs: number): Promise<boolean>;
  /** Closes the eventfds (after a waitUsed in progress has resolved false). */
  close(): void;
  readonly closed: boolean;
}

/**
 * Checks a chain a driver is about to add (the rules both layouts share: 2.7.4.2 /
 * 2.8.17, 2.7.5.3.1 / 2.8.19) and returns its device-writable bytes.
 */
export function checkChain(segments: readonly Segment[], queue: { size: number; indirectDesc: boolean; maxIndirectSegments: number }, indirect: boolean): number {
  if (!Array.isArray(segments) || segments.length === 0) throw makeError('EINVAL', 'a descriptor chain needs at least one segment');
  if (segments.length > queue.size) {
    throw makeError('E2BIG', `a chain of ${segments.length} descriptors is longer than the queue size ${queue.size}`);
  }
  if (indirect && !queue.indirectDesc) throw makeError('EINVAL', 'indirect descriptors were not negotiated (VIRTIO_F_INDIRECT_DESC) for this queue');
  if (indirect && segments.length > queue.maxIndirectSegments) {
    throw makeError('E2BIG', `${segments.length} segments do not fit this queue's indirect tables of ${queue.maxIndirectSegments}`);
  }
  let writableBytes = 0;
  let sawWritable = false;
  segments.forEach((s, i) => {
    if (!Number.isSafeInteger(s.addr) || s.addr < 0) throw makeError('EINVAL', `segment ${i}: addr must be a non-negative integer, got ${s.addr}`);
    if (!Number.isInteger(s.len) || s.len < 0 || s.len > 0xffffffff) throw makeError('EINVAL', `segment ${i}: len must be a u32, got ${s.len}`);
    // Device-readable descriptors all come before device-writable ones.
    if (sawWritable && !s.writable) throw makeError('EINVAL', `segment ${i} is device-readable after a device-writable one: readable segments must come first`);
    if (s.writable) {
      sawWritable = true;
      writableBytes += s.len;
    }
  });
  return writableBytes;
}
