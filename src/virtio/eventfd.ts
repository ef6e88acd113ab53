import { makeError } from '../errors';
import { native, type NativeFdPoller } from '../native';

/** Wakes the one pending wait of an fd: true when it became readable, false when the wait was cancelled. */
type Waiter = (readable: boolean) => void;

/** One poller thread for the whole process; it keeps the event loop alive only while something waits. */
let poller: NativeFdPoller | undefined;
const waiters = new Map<number, Waiter>();

function sharedPoller(): NativeFdPoller {
  poller ??= new native.FdPoller((fd) => {
    const waiter = waiters.get(fd);
    if (!waiter) return;
    waiters.delete(fd);
    poller!.remove(fd);
    waiter(true);
  });
  return poller;
}

/**
 * Resolves true once `fd` is readable, false after `timeoutMs` or if cancelled
 * with cancelWait(). Waits on a native poller thread: the event loop keeps
 * running and no libuv pool thread is held. One wait per fd at a time.
 */
export function waitReadable(fd: number, timeoutMs: number): Promise<boolean> {
  if (waiters.has(fd)) return Promise.reject(makeError('EBUSY', `fd ${fd} is already being waited on`));
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      if (waiters.delete(fd)) sharedPoller().remove(fd);
      resolve(false);
    }, timeoutMs);
    waiters.set(fd, (readable) => {
      clearTimeout(timer);
      resolve(readable);
    });
    sharedPoller().add(fd);
  });
}

/** Ends a pending waitReadable(fd) with false; call before closing an fd something waits on. */
export function cancelWait(fd: number): void {
  const waiter = waiters.get(fd);
  if (!waiter) return;
  waiters.delete(fd);
  sharedPoller().remove(fd);
  waiter(false);
}

/**
 * An eventfd: the kick (driver to device) and call (device to driver) signals of
 * a virtqueue, the form KVM's ioeventfd and irqfd take and vhost-user passes.
 */
export class EventFd {
  #fd: number;
  readonly #owned: boolean;

  private constructor(fd: number, owned = true) {
    this.#fd = fd;
    this.#owned = owned;
  }

  static create(): EventFd {
    return new EventFd(native.eventfdCreate());
  }

  /** Wraps an eventfd made elsewhere (a VMM's ioeventfd, one received over vhost-user). Owns it from here on. */
  static fromFd(fd: number): EventFd {
    if (!Number.isInteger(fd) || fd < 0) throw makeError('EBADF', `${fd} is not a file descriptor`);
    return new EventFd(fd);
  }

  /** Uses an eventfd that stays its owner's (a VMM's kick fd): close() stops waiting but leaves the fd open. */
  static borrow(fd: number): EventFd {
    if (!Number.isInteger(fd) || fd < 0) throw makeError('EBADF', `${fd} is not a file descriptor`);
    return new EventFd(fd, false);
  }

  get fd(): number {
    if (this.#fd < 0) throw makeError('EBADF', 'eventfd is closed');
    return this.#fd;
  }

  /** Adds 1: a kick or a call. */
  signal(): void {
    native.eventfdWrite(this.fd);
  }

  /** Reads and clears the counter; 0 if nothing was signalled. */
  take(): number {
    return native.eventfdRead(this.fd);
  }

  /**
   * Resolves with the count once the eventfd is signalled (clearing it), or with 0
   * after `timeoutMs` or when closed meanwhile. The event loop keeps running.
   */
  async wait(timeoutMs: number): Promise<number> {
    const fd = this.fd;
    const now = native.eventfdRead(fd);
    if (now > 0) return now;
    const readable = await waitReadable(fd, timeoutMs);
    return readable && this.#fd >= 0 ? native.eventfdRead(fd) : 0;
  }

  /** Closes the fd (if owned); a pending wait() resolves with 0. */
  close(): void {
    if (this.#fd < 0) return;
    cancelWait(this.#fd);
    if (this.#owned) native.closeFd(this.#fd);
    this.#fd = -1;
  }
}
