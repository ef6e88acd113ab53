import { makeError } from '../../errors';
import { STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK } from '../device-status';
import * as F from '../features';
import { hasFeature } from '../features';
import type { GuestMemory } from '../guest-memory';
import type { VirtioNetDevice } from '../net-device';
import { ControlQueueDriver, type RssSettings } from './control-queue-driver';
import { GuestAllocator } from './guest-allocator';
import { VirtioNetDriver, type VirtioNetDriverOptions } from './net-driver';
import { PACKED_RING_BASE_FRESH } from '../ring-base';

export interface GuestBringUpOptions {
  device: VirtioNetDevice;
  memory: GuestMemory;
  /** Features the guest would like; it takes those the device offers. Default: everything offered. */
  wantFeatures?: bigint;
  /**
   * Use packed virtqueues (2.8) if the device offers VIRTIO_F_RING_PACKED; split
   * ones if it does not. Default false: VIRTIO_F_RING_PACKED is never
   * negotiated, whatever wantFeatures says, and every queue is a split ring.
   */
  ringPacked?: boolean;
  /**
   * Negotiate VIRTIO_NET_F_RSS if the device offers it (then setRss() steers the
   * receive queues). Default false: RSS is never negotiated, whatever
   * wantFeatures says, and VQ_PAIRS_SET alone chooses the pairs, as before.
   */
  rss?: boolean;
  /** Who negotiated them, as setDriverFeatures takes it: 'frontend' to act as a vhost-user frontend. Default 'driver'. */
  negotiatedBy?: 'driver' | 'frontend';
  queueSize?: number;
  rxBufferSize?: number;
  txBufferSize?: number;
}

/**
 * A guest bringing up a virtio-net device the way a driver does through a
 * transport (virtio 1.x 3.1.1): reset, ACKNOWLEDGE, DRIVER, read and accept
 * features, FEATURES_OK and read it back, set up every virtqueue, DRIVER_OK.
 * The device is in-process, so the transport is direct calls.
 */
export class VirtioNetGuest {
  private constructor(
    public device: VirtioNetDevice,
    readonly features: bigint,
    readonly driver: VirtioNetDriver,
    readonly control: ControlQueueDriver | undefined,
  ) {}

  static bringUp(options: GuestBringUpOptions): VirtioNetGuest {
    const { device, memory } = options;
    device.writeStatus(0);
    device.writeStatus(STATUS_ACKNOWLEDGE);
    device.writeStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    let wanted = options.wantFeatures ?? device.offeredFeatures;
    // Negotiating RING_PACKED obliges the driver to packed rings (6): only when asked for.
    if (!options.ringPacked) wanted &= ~F.featureBit(F.VIRTIO_F_RING_PACKED);
    if (!options.rss) wanted &= ~F.featureBit(F.VIRTIO_NET_F_RSS);
    const features = device.offeredFeatures & wanted;
    const ringPacked = hasFeature(features, F.VIRTIO_F_RING_PACKED);
    device.setDriverFeatures(features, { negotiatedBy: options.negotiatedBy ?? 'driver' });
    device.writeStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    if (!(device.status & STATUS_FEATURES_OK)) throw makeError('EINVAL', 'the device refused the features (FEATURES_OK did not stick)');

    // 5.1.2: every pair's virtqueues exist once MQ or RSS is negotiated.
    const pairs = hasFeature(features, F.VIRTIO_NET_F_MQ) || hasFeature(features, F.VIRTIO_NET_F_RSS) ? device.maxQueuePairs : 1;
    const queueSize = options.queueSize ?? 256;
    const allocator = new GuestAllocator(memory);
    const driverOptions: VirtioNetDriverOptions = {
      memory, allocator, queuePairs: pairs, queueSize,
      features: {
        version1: hasFeature(features, F.VIRTIO_F_VERSION_1),
        mergeableRx: hasFeature(features, F.VIRTIO_NET_F_MRG_RXBUF),
        eventIdx: hasFeature(features, F.VIRTIO_RING_F_EVENT_IDX),
        indirectDesc: hasFeature(features, F.VIRTIO_RING_F_INDIRECT_DESC),
        ...(ringPacked ? { ringPacked } : {}),
      },
      ...(options.rxBufferSize !== undefined ? { rxBufferSize: options.rxBufferSize } : {}),
      ...(options.txBufferSize !== undefined ? { txBufferSize: options.txBufferSize } : {}),
    };
    const driver = VirtioNetDriver.create(driverOptions);
    let control: ControlQueueDriver | undefined;
    try {
      device.setMemory(memory);
      for (let pair = 0; pair < pairs; pair++) {
        const { rx, tx } = driver.queueConfig(pair);
        for (const [index, q] of [[2 * pair, rx], [2 * pair + 1, tx]] as const) {
          device.setQueueSize(index, q.size);
          // A packed ring's device starts with both wrap counters at 1 (2.8.1), which only the packed
          // ring base says (0x80008000): set it. A split ring starts at avail index 0, the device's
          // default, as it always has here.
          if (q.packed) device.setQueueBase(index, q.lastAvailIdx ?? PACKED_RING_BASE_FRESH);
          device.setQueueAddresses(index, q);
          device.setQueueKick(index, q.kickFd);
          device.setQueueCall(index, q.callFd);
          device.enableQueue(index, true);
        }
        driver.fillRx(pair);
      }
      if (hasFeature(features, F.VIRTIO_NET_F_CTRL_VQ)) {
        control = new ControlQueueDriver(memory, allocator, {
          size: 64, eventIdx: hasFeature(features, F.VIRTIO_RING_F_EVENT_IDX), indirectDesc: false, packed: ringPacked,
        });
        const index = 2 * pairs; // 5.1.2: after the last pair the driver uses
        device.setQueueSize(index, 64);
        if (control.queue.packed) device.setQueueBase(index, PACKED_RING_BASE_FRESH);
        device.setQueueAddresses(index, control.queue.layout);
        device.setQueueKick(index, control.queue.kickEvent.fd);
        device.setQueueCall(index, control.queue.callEvent.fd);
        device.enableQueue(index, true);
      }
      device.writeStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    } catch (error) {
      control?.close();
      driver.close();
      throw error;
    }
    return new VirtioNetGuest(device, features, driver, control);
  }

  /**
   * Every virtqueue with the eventfds the guest kicks and is called on: what a
   * VMM registers again with the destination device after a migration.
   */
  queueSignals(): { index: number; kickFd: number; callFd: number }[] {
    const out: { index: number; kickFd: number; callFd: number }[] = [];
    for (let pair = 0; pair < this.driver.queuePairs; pair++) {
      const { rx, tx } = this.driver.queueConfig(pair);
      out.push({ index: 2 * pair, kickFd: rx.kickFd, callFd: rx.callFd }, { index: 2 * pair + 1, kickFd: tx.kickFd, callFd: tx.callFd });
    }
    if (this.control) {
      out.push({ index: 2 * this.driver.queuePairs, kickFd: this.control.queue.kickEvent.fd, callFd: this.control.queue.callEvent.fd });
    }
    return out;
  }

  /**
   * The guest moved (a live migration in a harness): its RAM is now `memory`
   * (a copy, at the same guest-physical addresses) and its NIC `device`, which
   * the VMM restored from the source's saveState().
   */
  moveTo(device: VirtioNetDevice, memory: GuestMemory): void {
    this.driver.moveTo(memory);
    this.control?.moveTo(memory);
    this.device = device;
  }

  /** VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET; resolves with the ack (0 OK, 1 ERR). */
  setQueuePairs(pairs: number): Promise<number> {
    if (!this.control) return Promise.reject(makeError('EINVAL', 'the control queue was not negotiated'));
    return this.control.setQueuePairs(pairs);
  }

  /** VIRTIO_NET_CTRL_MQ_RSS_CONFIG (needs bringUp({ rss: true })); resolves with the ack (0 OK, 1 ERR). */
  setRss(settings: RssSettings): Promise<number> {
    if (!this.control) return Promise.reject(makeError('EINVAL', 'the control queue was not negotiated'));
    return this.control.setRss(settings);
  }

  close(): void {
    this.control?.close();
    this.driver.close();
  }
}
