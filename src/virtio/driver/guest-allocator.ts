import { makeError } from '../../errors';
import type { GuestMemory } from '../guest-memory';

/**
 * A bump allocator over guest-physical addresses, for the rings and buffers a
 * guest driver places in guest memory. Nothing is ever freed: callers allocate
 * their pools once and recycle them, so memory use stays bounded by design.
 */
export class GuestAllocator {
  readonly memory: GuestMemory;
  readonly base: number;
  readonly limit: number;
  #next: number;

  /**
   * Hands out [base, limit). Defaults cover all of guest memory. Blocks never
   * straddle a gap between regions, because the device translates one buffer
   * through one region and so does `GuestMemory.bytes`.
   */
  constructor(memory: GuestMemory, base?: number, limit?: number) {
    const regions = [...memory.regions].sort((a, b) => a.guestPhysAddr - b.guestPhysAddr);
    const first = regions[0]!;
    const last = regions[regions.length - 1]!;
    this.memory = memory;
    this.base = base ?? first.guestPhysAddr;
    this.limit = limit ?? last.guestPhysAddr + last.size;
    if (!Number.isSafeInteger(this.base) || !Number.isSafeInteger(this.limit) || this.base < 0 || this.limit < this.base) {
      throw makeError('EINVAL', `allocator range must be integers with 0 <= base <= limit, got [${this.base}, ${this.limit})`);
    }
    this.#next = this.base;
  }

  /** The next free guest-physical address (before alignment). */
  get next(): number {
    return this.#next;
  }

  /** Bytes still free above `next`, ignoring gaps between regions. */
  get remaining(): number {
    return this.limit - this.#next;
  }

  /**
   * Returns the guest-physical address of `size` zeroed bytes aligned to `align`
   * (a power of two). Zeroed because guest memory may come from a VMM with stale
   * contents, and a ring must start out all zeros.
   */
  alloc(size: number, align: number): number {
    if (!Number.isSafeInteger(size) || size <= 0) throw makeError('EINVAL', `allocation size must be a positive integer, got ${size}`);
    if (!Number.isSafeInteger(align) || align <= 0 || (align & (align - 1)) !== 0 || align > 2 ** 30) {
      throw makeError('EINVAL', `alignment must be a power of two up to 2^30, got ${align}`);
    }
    let candidate = alignUp(this.#next, align);
    for (;;) {
      if (candidate + size > this.limit) {
        throw makeError('ENOMEM', `guest memory exhausted: ${size} bytes (align ${align}) do not fit below 0x${this.limit.toString(16)}; ${this.remaining} bytes left — allocate more guest memory`);
      }
      const region = this.memory.regions.find((r) => candidate >= r.guestPhysAddr && candidate < r.guestPhysAddr + r.size);
      if (region && candidate + size <= region.guestPhysAddr + region.size) break;
      // In a gap, or the block would run past its region's end: move on to the next region.
      const following = this.memory.regions
        .filter((r) => r.guestPhysAddr > candidate)
        .reduce<number | undefined>((lowest, r) => (lowest === undefined || r.guestPhysAddr < lowest ? r.guestPhysAddr : lowest), undefined);
      if (following === undefined) candidate = this.limit + 1;
      else candidate = alignUp(following, align);
    }
    this.#next = candidate + size;
    this.memory.bytes(candidate, size).fill(0);
    return candidate;
  }
}

export function alignUp(value: number, align: number): number {
  return Math.ceil(value / align) * align;
}
