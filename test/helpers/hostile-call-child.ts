// Run by hostile-fds.test.ts under a Python "frontend" that shares fd 3 with it:
// an eventfd whose counter is 0xfffffffffffffffe, or a pipe that is full, with
// O_NONBLOCK cleared over and over. One queue pair uses fd 3 as both call fds;
// the driver sends a frame so the worker has a call to make; then stop() is
// timed. Prints one JSON line: what happened and the fd and thread counts. If
// stop() never returns, nothing is printed and the parent kills this process.
import fs from 'node:fs';

import { Tap } from '../../src';
import { GuestMemory } from '../../src/virtio/guest-memory';
import { QueuePair, type QueuePairStats } from '../../src/virtio/queue-pair';
import { VirtioNetDriver } from '../../src/virtio/driver/net-driver';
import { ethernet, GUEST_MAC } from '../../harness/packets';
import { sleep } from '../../harness/wait';
import { fdCount, threadCount, uniqueName } from './system';

const HOSTILE_FD = 3;

export interface HostileCallReport {
  constructError?: { code?: string; message: string };
  stopMs?: number;
  stats?: QueuePairStats;
  /** The eventfd's counter as the kernel shows it after the run (fdinfo), if fd 3 is an eventfd. */
  eventfdCount?: string;
  fds: { before: number; after: number };
  threads: { before: number; after: number };
}

async function main(): Promise<void> {
  const options = { queuePairs: 1, queueSize: 64, features: { version1: true, mergeableRx: false, eventIdx: true, indirectDesc: false } };
  const memory = GuestMemory.allocate(VirtioNetDriver.memoryNeeded(options));
  const tap = Tap.create({ name: uniqueName('vhc'), queues: 1, vnetHdrSize: 12 });
  const driver = VirtioNetDriver.create({ memory, ...options });
  const report: HostileCallReport = { fds: { before: 0, after: 0 }, threads: { before: 0, after: 0 } };
  try {
    const { rx, tx } = driver.queueConfig(0);
    report.fds.before = fdCount();
    report.threads.before = threadCount();
    let pair: QueuePair | undefined;
    try {
      pair = new QueuePair({
        memory, tapQueue: tap.queues[0]!, hdrSize: 12, mergeableRx: false,
        rx: { ...rx, callFd: HOSTILE_FD }, tx: { ...tx, callFd: HOSTILE_FD },
      });
    } catch (error) {
      const e = error as NodeJS.ErrnoException;
      report.constructError = { ...(e.code ? { code: e.code } : {}), message: e.message };
    }
    if (pair) {
      pair.start();
      driver.fillRx(0);
      // A frame to transmit: the worker completes it and calls the driver through fd 3.
      await driver.send(0, ethernet(Buffer.from('02aabbccddee', 'hex'), GUEST_MAC, 0x88b5, Buffer.alloc(64, 1)));
      const end = Date.now() + 3000;
      while (pair.stats().tx.packets < 1 && Date.now() < end) await sleep(10);
      await sleep(50);  // time for the call after the frame was counted
      const start = performance.now();
      pair.stop();
      report.stopMs = performance.now() - start;
      report.stats = pair.stats();
    }
    report.fds.after = fdCount();
    report.threads.after = threadCount();
    try {
      report.eventfdCount = /eventfd-count:\s*(\w+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${HOSTILE_FD}`, 'utf8'))?.[1];
    } catch {
      // not an eventfd
    }
  } finally {
    driver.close();
    tap.close();
    memory.close();
  }
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
