// A tap in this namespace, guest memory, the TS driver playing the guest, and
// one native QueuePair per queue pair between them: the whole data path, real.
import { Tap, type TapOffloads } from '../../src';
import type { DirtyLogSlot } from '../../src/virtio/dirty-log';
import { GuestMemory } from '../../src/virtio/guest-memory';
import { QueuePair, type QueueErrorEvent } from '../../src/virtio/queue-pair';
import { VirtioNetDriver, type VirtioNetDriverOptions, type VirtioNetFeatures } from '../../src/virtio/driver/net-driver';
import { GUEST_MAC } from '../../harness/packets';
import { run, uniqueName } from './system';

export const HOST_IP = '10.6.0.1';
export const GUEST_IP = '10.6.0.2';

export interface DataPathOptions {
  pairs?: number;
  queueSize?: number;
  features?: Partial<VirtioNetFeatures>;
  rxBufferSize?: number;
  rxSegments?: number;
  txBufferSize?: number;
  txSplitHeader?: boolean;
  /** Passed to each QueuePair: lets rx read 32 frames per system call. */
  rxMaxFrameBytes?: number;
  /** Passed to each QueuePair: spin this long after work before sleeping. */
  busyPollUs?: number;
  offloads?: TapOffloads;
  /** Give the tap an address and a neighbour entry for the guest. Default true. */
  address?: boolean;
  /** Post rx buffers when the pairs start. Default true; false lets frames queue in the tap first. */
  fillRx?: boolean;
  /** Passed to each QueuePair: the log its writes into guest memory are marked in. */
  dirtyLog?: DirtyLogSlot;
  /** Packed virtqueues (VIRTIO_F_RING_PACKED) instead of split ones; the same as features.ringPacked. */
  ringPacked?: boolean;
}

export interface DataPath {
  tap: Tap;
  memory: GuestMemory;
  driver: VirtioNetDriver;
  pairs: QueuePair[];
  errors: QueueErrorEvent[];
  hostMac: Buffer;
}

export async function withDataPath(options: DataPathOptions, body: (dp: DataPath) => Promise<void>): Promise<void> {
  const pairCount = options.pairs ?? 1;
  const features: VirtioNetFeatures = {
    version1: true, mergeableRx: false, eventIdx: true, indirectDesc: false, ...options.features,
    ...(options.ringPacked ? { ringPacked: true } : {}),
  };
  const driverOptions: Omit<VirtioNetDriverOptions, 'memory' | 'allocator'> = {
    queuePairs: pairCount,
    queueSize: options.queueSize ?? 256,
    features,
    ...(options.rxBufferSize !== undefined ? { rxBufferSize: options.rxBufferSize } : {}),
    ...(options.rxSegments !== undefined ? { rxSegments: options.rxSegments } : {}),
    ...(options.txSplitHeader !== undefined ? { txSplitHeader: options.txSplitHeader } : {}),
    ...(options.txBufferSize !== undefined ? { txBufferSize: options.txBufferSize } : {}),
  };
  const memory = GuestMemory.allocate(VirtioNetDriver.memoryNeeded(driverOptions) + (1 << 20));
  const hdrSize = features.version1 || features.mergeableRx ? 12 : 10;
  const tap = Tap.create({ name: uniqueName('vdp'), queues: pairCount, vnetHdrSize: hdrSize });
  const errors: QueueErrorEvent[] = [];
  const pairs: QueuePair[] = [];
  let driver: VirtioNetDriver | undefined;
  try {
    tap.setOffload(options.offloads ?? {});
    if (options.address ?? true) {
      run('ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', tap.name]);
      run('ip', ['neigh', 'replace', GUEST_IP, 'lladdr', '52:54:00:12:34:56', 'dev', tap.name, 'nud', 'permanent']);
    }
    driver = VirtioNetDriver.create({ memory, ...driverOptions });
    for (let i = 0; i < pairCount; i++) {
      const { rx, tx } = driver.queueConfig(i);
      const pair = new QueuePair({
        memory, tapQueue: tap.queues[i]!, hdrSize, mergeableRx: features.mergeableRx, rx, tx,
        ...(options.rxMaxFrameBytes !== undefined ? { rxMaxFrameBytes: options.rxMaxFrameBytes } : {}),
        ...(options.busyPollUs !== undefined ? { busyPollUs: options.busyPollUs } : {}),
        ...(options.dirtyLog ? { dirtyLog: options.dirtyLog } : {}),
      });
      pair.on('queue-error', (e) => errors.push(e));
      pair.start();
      pairs.push(pair);
      if (options.fillRx ?? true) driver.fillRx(i);
    }
    const hostMac = Buffer.from(tap.mac().split(':').map((h) => parseInt(h, 16)));
    await body({ tap, memory, driver, pairs, errors, hostMac });
  } finally {
    for (const pair of pairs) pair.stop();
    driver?.close();
    tap.close();
    memory.close();
  }
}

export { GUEST_MAC };
