import { errorCode, makeError } from '../errors';
import { native, type NativeGuestMemory } from '../native';

/** One region of guest-physical memory backed by an fd: the shape of vhost's SET_MEM_TABLE entries. */
export interface GuestMemoryRegion {
  /** Guest-physical address of the region's first byte. */
  guestPhysAddr: number;
  /** Length in bytes. */
  size: number;
  /** File (memfd, hugetlbfs, shared file) holding the region; mapped MAP_SHARED, so the VMM and we see the same bytes. */
  fd: number;
  /** Offset of the region in the file. Default 0. */
  offset?: number;
}

/**
 * Guest memory mapped into this process. The native data path translates every
 * guest address through it with bounds checks; JS sees each region as an
 * ArrayBuffer on the same pages (no copy).
 */
export class GuestMemory {
  readonly regions: readonly Required<GuestMemoryRegion>[];
  /** @internal the native map, shared with the data path workers */
  readonly native: NativeGuestMemory;
  readonly #ownedFds: number[];
  readonly #buffers: ArrayBuffer[] = [];
  #closed = false;

  private constructor(regions: readonly Required<GuestMemoryRegion>[], nativeMemory: NativeGuestMemory, ownedFds: number[]) {
    this.regions = regions;
    this.native = nativeMemory;
    this.#ownedFds = ownedFds;
  }

  /**
   * Maps regions handed over by a VMM. The fds stay the caller's: they may be
   * closed once this returns (the mappings stay).
   */
  static fromRegions(regions: readonly GuestMemoryRegion[]): GuestMemory {
    if (!Array.isArray(regions) || regions.length === 0) throw makeError('EINVAL', 'guest memory needs at least one region { guestPhysAddr, size, fd }');
    const full = regions.map((r, i) => {
      for (const key of ['guestPhysAddr', 'size', 'fd'] as const) {
        if (!Number.isSafeInteger(r[key]) || r[key] < 0) throw makeError('EINVAL', `region ${i}: ${key} must be a non-negative integer`);
      }
      return { guestPhysAddr: r.guestPhysAddr, size: r.size, fd: r.fd, offset: r.offset ?? 0 };
    });
    try {
      return new GuestMemory(full, new native.NativeGuestMemory(full), []);
    } catch (error) {
      throw makeError(errorCode(error) ?? 'EINVAL', `${(error as Error).message}: check the regions' sizes, offsets and fds`, error);
    }
  }

  /** Makes `size` bytes of memfd-backed guest memory at guest-physical address `guestPhysAddr` (default 0). */
  static allocate(size: number, guestPhysAddr = 0): GuestMemory {
    if (!Number.isSafeInteger(size) || size <= 0) throw makeError('EINVAL', `guest memory size must be a positive integer, got ${size}`);
    const fd = native.memfdCreate('vhost-tap-guest', size);
    try {
      const region = { guestPhysAddr, size, fd, offset: 0 };
      return new GuestMemory([region], new native.NativeGuestMemory([region]), [fd]);
    } catch (error) {
      native.closeFd(fd);
      throw makeError(errorCode(error) ?? 'ENOMEM', `could not map ${size} bytes of guest memory: ${(error as Error).message}`, error);
    }
  }

  /** Region `index` as an ArrayBuffer on the guest's pages. It stays valid (and mapped) as long as it is referenced. */
  buffer(index = 0): ArrayBuffer {
    this.assertOpen();
    if (!this.#buffers[index]) this.#buffers[index] = this.native.buffer(index);
    return this.#buffers[index]!;
  }

  /** The bytes [gpa, gpa + length) as a view, if they lie in one region; EFAULT otherwise. */
  bytes(gpa: number, length: number): Uint8Array {
    const { index, offset } = this.locate(gpa, length);
    return new Uint8Array(this.buffer(index), offset, length);
  }

  /** A DataView on [gpa, gpa + length), little-endian accessors being what virtio 1.x uses. */
  view(gpa: number, length: number): DataView {
    const { index, offset } = this.locate(gpa, length);
    return new DataView(this.buffer(index), offset, length);
  }

  /** Total bytes of guest memory. */
  get size(): number {
    return this.regions.reduce((sum, r) => sum + r.size, 0);
  }

  /** Releases this handle's mapping (workers and buffers still in use keep theirs) and the fds it made. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.native.close();
    this.#buffers.length = 0;
    for (const fd of this.#ownedFds) native.closeFd(fd);
  }

  get closed(): boolean {
    return this.#closed;
  }

  private locate(gpa: number, length: number): { index: number; offset: number } {
    this.assertOpen();
    if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(length) || gpa < 0 || length < 0) {
      throw makeError('EINVAL', `guest address range must be non-negative integers, got ${gpa} + ${length}`);
    }
    const index = this.regions.findIndex((r) => gpa >= r.guestPhysAddr && gpa + length <= r.guestPhysAddr + r.size);
    if (index < 0) throw makeError('EFAULT', `guest range 0x${gpa.toString(16)}+${length} is not inside one region of guest memory`);
    return { index, offset: gpa - this.regions[index]!.guestPhysAddr };
  }

  private assertOpen(): void {
    if (this.#closed) throw makeError('EBADF', 'guest memory is closed');
  }
}
