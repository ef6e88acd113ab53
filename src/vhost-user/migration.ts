// A vhost-user connection's part in live migration (vhost-user.rst
// "Migration"): the frontend hands over a log region (SET_LOG_BASE with
// LOG_SHMFD) and turns logging on and off with VHOST_F_LOG_ALL in
// SET_FEATURES, while the rings run. Logging is in force when both are there.
import { errorCode, makeError } from '../errors';
import { DIRTY_LOG_PAGE_SIZE, DirtyLog } from '../virtio/dirty-log';
import type { VirtioNetDevice } from '../virtio/net-device';
import type { LogDescription } from './protocol';

export class MigrationLog {
  #log: DirtyLog | undefined;
  #logAll = false;

  constructor(private readonly device: VirtioNetDevice) {}

  /**
   * SET_LOG_BASE: maps the new region; the fd stays the caller's (the mapping
   * does not need it). A region that cannot be mapped is refused and the log in
   * use stays.
   */
  setBase(description: LogDescription, fd: number, guestExtent: number): void {
    const covers = description.mmapSize * 8n * BigInt(DIRTY_LOG_PAGE_SIZE);
    if (covers < BigInt(guestExtent)) {
      throw makeError('EINVAL', `a log of ${description.mmapSize} bytes covers ${covers} bytes of guest memory, which reaches to ${guestExtent}: the log is too small`);
    }
    let log: DirtyLog;
    try {
      // The native map bounds size and offset (up to 4 GiB of log at an offset below 1 TiB).
      log = DirtyLog.fromFd(fd, description.mmapSize, description.mmapOffset);
    } catch (error) {
      throw makeError(errorCode(error) ?? 'EINVAL', `cannot use the log region: ${(error as Error).message}`, error);
    }
    const old = this.#log;
    this.#log = log;
    this.#apply();
    old?.close(); // the queues already write to the new one; their mapping of the old goes with their switch
  }

  /** VHOST_F_LOG_ALL in SET_FEATURES. */
  setLogAll(on: boolean): void {
    if (on === this.#logAll) return;
    this.#logAll = on;
    this.#apply();
  }

  /** A log region is mapped (SET_LOG_BASE succeeded). */
  get hasBase(): boolean {
    return this.#log !== undefined;
  }

  get logging(): boolean {
    return this.#logAll && this.hasBase;
  }

  get logBytes(): number | undefined {
    return this.#log?.bytes;
  }

  /** Ends logging and unmaps the region. */
  close(): void {
    this.#logAll = false;
    this.#apply();
    this.#log?.close();
    this.#log = undefined;
  }

  #apply(): void {
    if (this.logging) this.device.startDirtyLog(this.#log!);
    else this.device.stopDirtyLog();
  }
}
