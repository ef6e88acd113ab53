// The dirty page log of live migration (QEMU docs/interop/vhost-user.rst,
// "Migration"): one bit per 4 KiB page of guest-physical address space, which
// the data path sets for every byte it writes into guest memory (received
// frames and their headers, used ring entries, used->idx, avail_event), so the
// VMM knows which pages to send again.
import { errorCode, makeError } from '../errors';
import { native, type NativeDirtyLog, type NativeDirtyLogSlot } from '../native';

/** VHOST_LOG_PAGE: the guest memory one bit of the log stands for. */
export const DIRTY_LOG_PAGE_SIZE = 4096;

/** Bytes of log that cover `guestBytes` of guest-physical address space (from 0). */
export function dirtyLogBytes(guestBytes: number): number {
  return Math.max(1, Math.ceil(guestBytes / DIRTY_LOG_PAGE_SIZE / 8));
}

/** One bitmap, mapped shared: the VMM reads (and clears) what the data path sets. */
export class DirtyLog {
  /** @internal the native mapping, handed to the device's queues */
  readonly native: NativeDirtyLog;
  /** The memfd behind allocate()'s bitmap (the VMM may map it too); undefined for fromFd(). */
  readonly fd: number | undefined;
  #closed = false;

  private constructor(nativeLog: NativeDirtyLog, fd: number | undefined) {
    this.native = nativeLog;
    this.fd = fd;
  }

  /** A zeroed bitmap covering guest-physical addresses [0, guestBytes), in a sealed memfd of its own. */
  static allocate(guestBytes: number): DirtyLog {
    if (!Number.isSafeInteger(guestBytes) || guestBytes <= 0) throw makeError('EINVAL', `guestBytes must be a positive integer, got ${guestBytes}`);
    const bytes = dirtyLogBytes(guestBytes);
    const fd = native.memfdCreate('vhost-tap-dirty-log', bytes);
    try {
      return new DirtyLog(new native.NativeDirtyLog(fd, bytes, 0), fd);
    } catch (error) {
      native.closeFd(fd);
      throw makeError(errorCode(error) ?? 'ENOMEM', `could not map a dirty log of ${bytes} bytes: ${(error as Error).message}`, error);
    }
  }

  /**
   * Maps `size` bytes of log `offset` bytes into the file `fd` (vhost-user's
   * SET_LOG_BASE shape). The fd stays the caller's and may be closed once this returns.
   */
  static fromFd(fd: number, size: number | bigint, offset: number | bigint = 0): DirtyLog {
    try {
      return new DirtyLog(new native.NativeDirtyLog(fd, size, offset), undefined);
    } catch (error) {
      throw makeError(errorCode(error) ?? 'EINVAL', `${(error as Error).message}: give a log fd that can be mapped shared, sized for the guest's memory`, error);
    }
  }

  /** Size of the bitmap in bytes; it covers bytes * 8 * 4 KiB of guest memory. */
  get bytes(): number {
    return this.native.bytes();
  }

  /** Marks that fell beyond the end of the log (it is too small for the guest's memory). */
  get outOfRange(): number {
    return this.native.outOfRange();
  }

  /** A copy of the bitmap; with clear (the default), the bits are taken, atomically, so none set meanwhile is lost. */
  collect(clear = true): Buffer {
    this.#assertOpen();
    return this.native.collect(clear);
  }

  /** The guest-physical page numbers (address / 4096) dirtied since the last take, in order; clears them. */
  takeDirtyPages(): number[] {
    const bits = this.collect(true);
    const pages: number[] = [];
    for (let byte = 0; byte < bits.length; byte++) {
      const b = bits[byte]!;
      if (b === 0) continue;
      for (let bit = 0; bit < 8; bit++) if (b & (1 << bit)) pages.push(byte * 8 + bit);
    }
    return pages;
  }

  /** Unmaps this handle's view and closes the memfd allocate() made (queues still logging keep their mapping until they switch). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.native.close();
    if (this.fd !== undefined) native.closeFd(this.fd);
  }

  get closed(): boolean {
    return this.#closed;
  }

  #assertOpen(): void {
    if (this.#closed) throw makeError('EBADF', 'the dirty log is closed');
  }
}

/**
 * Which log a device's queues write to: none, or one. Switched while the
 * workers run; when set() returns, every write not marked in the new log was
 * complete before the switch.
 */
export class DirtyLogSlot {
  /** @internal handed to the native queues */
  readonly native: NativeDirtyLogSlot = new native.NativeDirtyLogSlot();
  #current: DirtyLog | undefined;

  set(log: DirtyLog | undefined): void {
    if (log !== undefined && (!(log instanceof DirtyLog) || log.closed)) throw makeError('EINVAL', 'give an open DirtyLog, or undefined to stop logging');
    this.native.set(log ? log.native : null);
    this.#current = log;
  }

  get current(): DirtyLog | undefined {
    return this.#current;
  }
}
