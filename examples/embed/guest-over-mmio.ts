// The guest's half of the example: a virtio-net driver initialising the device
// through the MMIO registers only (virtio 1.x 3.1.1), then running its rings
// with the TS driver. In a real VM this is the guest kernel's virtio_net.
import {
  ControlQueueDriver, GuestAllocator, GuestMemory, STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK,
  VirtioNetDriver, features as F, hasFeature,
} from '../../src';
import { MmioTransport, REG, type QueueSignals } from './mmio-transport';

export interface MmioGuest {
  features: bigint;
  maxPairs: number;
  driver: VirtioNetDriver;
  control: ControlQueueDriver;
  mac: string;
}

/** The signals of each virtqueue, filled in as the guest lays out rings: what the VMM wires to KVM. */
export class GuestSignals {
  readonly #byQueue = new Map<number, QueueSignals>();
  set(queue: number, signals: QueueSignals): void {
    this.#byQueue.set(queue, signals);
  }
  get(queue: number): QueueSignals {
    const s = this.#byQueue.get(queue);
    if (!s) throw new Error(`queue ${queue} has no eventfds`);
    return s;
  }
}

/** packed: ask for VIRTIO_F_RING_PACKED, and lay every queue out as a packed ring (virtio 1.2 2.8) if the device offers it. */
export function initialiseOverMmio(mmio: MmioTransport, memory: GuestMemory, signals: GuestSignals, options: { packed?: boolean } = {}): MmioGuest {
  if (mmio.read(REG.MagicValue) !== 0x74726976 || mmio.read(REG.DeviceID) !== 1) throw new Error('not a virtio-net device');
  mmio.write(REG.Status, 0);
  mmio.write(REG.Status, STATUS_ACKNOWLEDGE);
  mmio.write(REG.Status, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
  let offered = 0n;
  for (const sel of [0, 1]) {
    mmio.write(REG.DeviceFeaturesSel, sel);
    offered |= BigInt(mmio.read(REG.DeviceFeatures) >>> 0) << BigInt(32 * sel);
  }
  // This guest takes what it knows: multiqueue with a control queue, mergeable
  // rx buffers, event idx, checksum and segmentation offloads both ways.
  const wanted = [
    F.VIRTIO_F_VERSION_1, F.VIRTIO_NET_F_MAC, F.VIRTIO_NET_F_STATUS, F.VIRTIO_NET_F_MQ, F.VIRTIO_NET_F_CTRL_VQ,
    F.VIRTIO_NET_F_MRG_RXBUF, F.VIRTIO_RING_F_EVENT_IDX, F.VIRTIO_NET_F_CSUM, F.VIRTIO_NET_F_GUEST_CSUM,
    F.VIRTIO_NET_F_HOST_TSO4, F.VIRTIO_NET_F_GUEST_TSO4, ...(options.packed ? [F.VIRTIO_F_RING_PACKED] : []),
  ].reduce((mask, bit) => mask | F.featureBit(bit), 0n);
  const features = offered & wanted;
  for (const sel of [0, 1]) {
    mmio.write(REG.DriverFeaturesSel, sel);
    mmio.write(REG.DriverFeatures, Number((features >> BigInt(32 * sel)) & 0xffffffffn));
  }
  mmio.write(REG.Status, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
  if (!(mmio.read(REG.Status) & STATUS_FEATURES_OK)) throw new Error('the device refused our features');

  const mac = Array.from({ length: 6 }, (_, i) => mmio.read(REG.Config + i, 1).toString(16).padStart(2, '0')).join(':');
  const maxPairs = hasFeature(features, F.VIRTIO_NET_F_MQ) ? mmio.read(REG.Config + 8, 2) : 1;
  const allocator = new GuestAllocator(memory);
  const driver = VirtioNetDriver.create({
    memory, allocator, queuePairs: maxPairs, queueSize: 256,
    features: {
      version1: true, mergeableRx: hasFeature(features, F.VIRTIO_NET_F_MRG_RXBUF), eventIdx: hasFeature(features, F.VIRTIO_RING_F_EVENT_IDX), indirectDesc: false,
      ringPacked: hasFeature(features, F.VIRTIO_F_RING_PACKED),
    },
    txBufferSize: 2048,
  });
  const control = new ControlQueueDriver(memory, allocator, {
    size: 64, eventIdx: hasFeature(features, F.VIRTIO_RING_F_EVENT_IDX), indirectDesc: false, packed: hasFeature(features, F.VIRTIO_F_RING_PACKED),
  });
  const layOut = (index: number, ring: { size: number; descAddr: number; availAddr: number; usedAddr: number }, s: QueueSignals): void => {
    signals.set(index, s);
    mmio.write(REG.QueueSel, index);
    if (mmio.read(REG.QueueNumMax) < ring.size) throw new Error(`queue ${index} is too small`);
    mmio.write(REG.QueueNum, ring.size);
    mmio.write(REG.QueueDescLow, ring.descAddr);
    mmio.write(REG.QueueDriverLow, ring.availAddr);
    mmio.write(REG.QueueDeviceLow, ring.usedAddr);
    mmio.write(REG.QueueReady, 1);
  };
  for (let pair = 0; pair < maxPairs; pair++) {
    const { rx, tx } = driver.queueConfig(pair);
    layOut(2 * pair, rx, rx);
    layOut(2 * pair + 1, tx, tx);
    driver.fillRx(pair);
  }
  layOut(2 * maxPairs, control.queue.layout, { kickFd: control.queue.kickEvent.fd, callFd: control.queue.callEvent.fd });
  mmio.write(REG.Status, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
  return { features, maxPairs, driver, control, mac };
}
