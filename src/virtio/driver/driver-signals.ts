import { EventFd } from '../eventfd';

/**
 * A driver's two eventfds for one virtqueue, whatever its layout: the kick it
 * signals (new buffers) and the call it waits on (used buffers), and the wait
 * itself, which must outlive neither.
 */
export class DriverSignals {
  /** Driver to device: "new buffers are available". */
  readonly kickEvent: EventFd;
  /** Device to driver: "buffers were used" (the used buffer notification). */
  readonly callEvent: EventFd;
  #kicks = 0;
  #waiting = 0;
  #closed = false;

  constructor() {
    this.kickEvent = EventFd.create();
    try {
      this.callEvent = EventFd.create();
    } catch (error) {
      this.kickEvent.close();
      throw error;
    }
  }

  /** Times kick() signalled the device. */
  get kicks(): number {
    return this.#kicks;
  }

  get closed(): boolean {
    return this.#closed;
  }

  kick(): void {
    this.kickEvent.signal();
    this.#kicks++;
  }

  /**
   * Resolves true as soon as `ready()` (which also asks for the next call, as
   * enableCalls does) says used buffers are pending, false after `timeoutMs` or
   * once closed. Waits on the call eventfd off the event loop.
   */
  async waitUntil(ready: () => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (ready()) return true;
      const remaining = deadline - Date.now();
      if (remaining <= 0) return false;
      this.#waiting++;
      try {
        await this.callEvent.wait(remaining);
      } finally {
        this.#waiting--;
      }
      if (this.#closed) {
        if (this.#waiting === 0) this.#closeEventFds();
        return false;
      }
    }
  }

  /**
   * Closes the eventfds. A wait in progress resolves false first: closing an
   * eventfd under a pending EventFd.wait would leave its timer reading a closed fd.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#waiting > 0) this.callEvent.signal();
    else this.#closeEventFds();
  }

  #closeEventFds(): void {
    this.kickEvent.close();
    this.callEvent.close();
  }
}
