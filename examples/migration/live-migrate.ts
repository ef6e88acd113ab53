// What a VMM does to move a running guest's virtio-net device to a destination
// (here a second device in the same process, on a tap of its own): the
// precopy of guest memory with the device's dirty log, then stop-and-copy with
// the device's state, then the announce. Written against the public API only.
//
// A VMM with KVM gets the vCPUs' dirty pages from KVM_GET_DIRTY_LOG; this one's
// guest is the package's TS driver, whose writes nobody logs, so it pauses the
// guest for the whole migration while the device keeps running (receiving into
// the buffers the guest posted) through the precopy passes: exactly the writes
// the dirty log is for.
import {
  DIRTY_LOG_PAGE_SIZE, DirtyLog, GuestMemory, type VirtioNetDevice, type VirtioNetGuest,
} from '../../src';

export interface MigrationOptions {
  source: VirtioNetDevice;
  sourceMemory: GuestMemory;
  /** A fresh device with the same options on the destination's tap. */
  destination: VirtioNetDevice;
  guest: VirtioNetGuest;
  /** Stops the guest's vCPU; resolves once it no longer touches its memory. */
  pauseGuest(): Promise<void>;
  resumeGuest(): void;
  /** Precopy passes over the dirty log while the device runs. Default 3. */
  passes?: number;
  /** Time between passes. Default 20 ms. */
  passMs?: number;
}

export interface MigrationReport {
  /** Pages sent in the first full pass, then in each dirty pass, then in the final one. */
  pagesPerPass: number[];
  /** From the device's stop (saveState) to the destination's start (restoreState): the network's downtime. */
  deviceDowntimeMs: number;
  /** The guest's pause, whole migration. */
  guestPausedMs: number;
  /** The destination's copy equals the source's memory after the last pass (the log missed nothing). */
  identical: boolean;
  destinationMemory: GuestMemory;
}

/** Moves the guest and its NIC; the source device is left quiesced (close it, or resume() it if the VMM gives up). */
export async function liveMigrate(options: MigrationOptions): Promise<MigrationReport> {
  const { source, sourceMemory, destination, guest } = options;
  const size = sourceMemory.size;
  const pagesPerPass: number[] = [];
  const pausedAt = Date.now();
  await options.pauseGuest();
  const log = DirtyLog.allocate(size);
  const target = GuestMemory.allocate(size);
  try {
    source.startDirtyLog(log);
    const from = sourceMemory.bytes(0, size);
    const to = target.bytes(0, size);
    to.set(from); // the first pass: everything
    pagesPerPass.push(Math.ceil(size / DIRTY_LOG_PAGE_SIZE));
    const copy = (pages: number[]): void => {
      for (const page of pages) {
        const at = page * DIRTY_LOG_PAGE_SIZE;
        if (at >= size) continue;
        const end = Math.min(size, at + DIRTY_LOG_PAGE_SIZE);
        to.set(from.subarray(at, end), at);
      }
      pagesPerPass.push(pages.length);
    };
    for (let pass = 0; pass < (options.passes ?? 3); pass++) {
      await new Promise((resolve) => setTimeout(resolve, options.passMs ?? 20));
      copy(log.takeDirtyPages());
    }
    // Stop-and-copy: the device completes every chain it took, then the last dirty pages.
    const stoppedAt = Date.now();
    const state = source.saveState();
    copy(log.takeDirtyPages());
    source.stopDirtyLog();
    const identical = Buffer.compare(Buffer.from(from.buffer, from.byteOffset, size), Buffer.from(to.buffer, to.byteOffset, size)) === 0;

    // The destination: its memory, the guest's eventfds (the VMM's ioeventfds and irqfds), the state.
    destination.setMemory(target);
    for (const { index, kickFd, callFd } of guest.queueSignals()) {
      destination.setQueueKick(index, kickFd);
      destination.setQueueCall(index, callFd);
    }
    destination.restoreState(state); // starts the queues where the source stopped, and announces the guest
    guest.moveTo(destination, target);
    const deviceDowntimeMs = Date.now() - stoppedAt;
    options.resumeGuest();
    return { pagesPerPass, deviceDowntimeMs, guestPausedMs: Date.now() - pausedAt, identical, destinationMemory: target };
  } catch (error) {
    source.stopDirtyLog();
    target.close();
    throw error;
  } finally {
    log.close();
  }
}
