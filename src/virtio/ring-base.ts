// Where a device resumes a ring (vhost SET_VRING_BASE / GET_VRING_BASE), for both
// layouts: a split ring's 16-bit last avail index, or a packed ring's two
// positions with their wrap counters in one u32. Shared by the device side
// (QueuePair, VirtioNetDevice, the vhost-user session) and the guest-side driver.
import { makeError } from '../errors';

/** Entries a virtqueue may have (2.7, 2.8). */
const MAX_QUEUE_SIZE = 32768;

/**
 * The ring base a device starts a fresh packed ring from, in vhost-user's
 * encoding (SET_VRING_BASE / GET_VRING_BASE "descriptor indices for packed
 * virtqueues", as QEMU's virtio_queue_packed_get_last_avail_idx builds it):
 *
 *   bits 0-14   the next descriptor the device will read (last avail index)
 *   bit 15      the device's avail wrap counter
 *   bits 16-30  the next descriptor the device will write used (used index)
 *   bit 31      the device's used wrap counter
 *
 * Both wrap counters start at 1 (2.8.1), both indices at 0.
 */
export const PACKED_RING_BASE_FRESH = 0x8000_8000;

/** A place in a packed ring: a descriptor offset and the ring wrap counter of the lap it is in (2.8.1). */
export interface PackedRingPosition {
  index: number;
  wrap: 0 | 1;
}

/** `lastAvail` and `used` in vhost-user's packed ring base encoding (see PACKED_RING_BASE_FRESH). */
export function encodePackedRingBase(lastAvail: PackedRingPosition, used: PackedRingPosition): number {
  for (const [what, p] of [['lastAvail', lastAvail], ['used', used]] as const) {
    if (!Number.isInteger(p.index) || p.index < 0 || p.index >= MAX_QUEUE_SIZE || (p.wrap !== 0 && p.wrap !== 1)) {
      throw makeError('EINVAL', `${what} must be an index in 0..${MAX_QUEUE_SIZE - 1} and a wrap counter of 0 or 1`);
    }
  }
  return ((lastAvail.index | (lastAvail.wrap << 15)) | ((used.index | (used.wrap << 15)) << 16)) >>> 0;
}

/** The inverse of encodePackedRingBase. */
export function decodePackedRingBase(base: number): { lastAvail: PackedRingPosition; used: PackedRingPosition } {
  if (!Number.isInteger(base) || base < 0 || base > 0xffff_ffff) throw makeError('EINVAL', `a packed ring base is a u32, got ${base}`);
  const half = (word: number): PackedRingPosition => ({ index: word & 0x7fff, wrap: (word >> 15) as 0 | 1 });
  return { lastAvail: half(base & 0xffff), used: half(base >>> 16) };
}

/** Where a ring that never ran starts: 0 for a split ring, PACKED_RING_BASE_FRESH for a packed one. */
export function freshRingBase(packed: boolean): number {
  return packed ? PACKED_RING_BASE_FRESH : 0;
}
