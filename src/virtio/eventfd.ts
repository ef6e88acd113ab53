import { makeError } from '../errors';
import { native, type NativeFdPoller } from '../native';

/** Wakes the one pending wait() of an fd: with the eventfd's count, or 0 when it is closed under the wait. */
type Waiter = (closing: boolean) => void;

/** One poller thread for the whole process; it keeps the event loop alive only while something waits. */
let poller: NativeFdPoller | undefined;
const waiters = new Map<number, Waiter>();

function sharedPoller(): NativeFdPoller {
  poller ??= new native.FdPoller((fd) => {
    const waiter = waiters.get(fd);
    if (!waiter) return;
    waiters.delete(fd);
    poller!.remove(fd);
    waiter(false);
  });
  return poller;
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
   * after `timeoutMs`. Waits on a native poller thread: the event loop keeps running.
   */
  wait(timeoutMs: number): Promise<number> {
    const fd = this.fd;
    const now = native.eventfdRead(fd);
    if (now > 0) return Promise.resolve(now);
    if (waiters.has(fd)) return Promise.reject(makeError('EBUSY', `eventfd ${fd} is already being waited on`));
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        if (waiters.delete(fd)) sharedPoller().remove(fd);
        resolve(native.eventfdRead(fd));
      }, timeoutMs);
      waiters.set(fd, (closing) => {
        clearTimeout(timer);
        resolve(closing ? 0 : native.eventfdRead(fd));
      });
      sharedPoller().add(fd);
    });
  }

  /** Closes the fd; a pending wait() resolves with 0. */
  close(): void {
    if (this.#fd < 0) return;
    const waiter = waiters.get(this.#fd);
    if (waiter) {
      waiters.delete(this.#fd);
      sharedPoller().remove(this.#fd);
      waiter(true);
    }
    if (this.#owned) native.closeFd(this.#fd);
    this.#fd = -1;
  }
}
