import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';

import { errorCode, makeError } from '../errors';
import type { Tap, TapOffloads } from '../tap/tap';
import { parseMac } from '../tap/names';
import { rarpFrame } from './announce';
import { ControlQueue, type ControlCommandHandler } from './control-queue';
import {
  STATUS_DEVICE_NEEDS_RESET, STATUS_DRIVER_OK, STATUS_FAILED, STATUS_FEATURES_OK, describeStatus, statusTransitionError,
} from './device-status';
import { DirtyLog, DirtyLogSlot } from './dirty-log';
import * as F from './features';
import { describeRequirement, featureBit, hasFeature, netHdrSize, resolveRequirements } from './features';
import type { GuestMemory } from './guest-memory';
import { NetConfigSpace, VIRTIO_NET_S_ANNOUNCE, VIRTIO_NET_S_LINK_UP } from './net-config';
import { tapOffloadsForGuest } from './offloads';
import { RSS_KEY_BYTES, RSS_MAX_TABLE_ENTRIES, RSS_SUPPORTED_HASH_TYPES, TapSteering } from '../tap/steering';
import { rssConfigError, rssQueuePairs, rssSteeringTable, type RssConfig } from './rss';
import { QueuePair, type QueuePairStats, type VirtqueueConfig } from './queue-pair';
import type { QueueFaultCode } from './queue-fault';
import { freshRingBase } from './ring-base';

/** Every feature this device knows how to provide, before asking the tap what it can do. */
const IMPLEMENTED_FEATURES = [
  F.VIRTIO_F_VERSION_1, F.VIRTIO_NET_F_MAC, F.VIRTIO_NET_F_MTU, F.VIRTIO_NET_F_STATUS, F.VIRTIO_NET_F_MQ,
  F.VIRTIO_NET_F_CTRL_VQ, F.VIRTIO_NET_F_CTRL_RX, F.VIRTIO_NET_F_CTRL_MAC_ADDR, F.VIRTIO_NET_F_CTRL_GUEST_OFFLOADS,
  F.VIRTIO_NET_F_GUEST_ANNOUNCE, F.VIRTIO_NET_F_MRG_RXBUF, F.VIRTIO_NET_F_CSUM, F.VIRTIO_NET_F_GUEST_CSUM,
  F.VIRTIO_NET_F_HOST_TSO4, F.VIRTIO_NET_F_HOST_TSO6, F.VIRTIO_NET_F_GUEST_TSO4, F.VIRTIO_NET_F_GUEST_TSO6,
  F.VIRTIO_NET_F_HOST_ECN, F.VIRTIO_NET_F_GUEST_ECN, F.VIRTIO_NET_F_HOST_UFO, F.VIRTIO_NET_F_GUEST_UFO,
  F.VIRTIO_NET_F_HOST_USO, F.VIRTIO_NET_F_GUEST_USO4, F.VIRTIO_NET_F_GUEST_USO6,
  F.VIRTIO_RING_F_INDIRECT_DESC, F.VIRTIO_RING_F_EVENT_IDX, F.VIRTIO_F_RING_PACKED, F.VIRTIO_NET_F_RSS,
].reduce((mask, bit) => mask | featureBit(bit), 0n);

/** The guest offloads that TUNSETOFFLOAD controls (they follow CTRL_GUEST_OFFLOADS_SET too). */
const GUEST_OFFLOAD_FEATURES = [
  F.VIRTIO_NET_F_GUEST_CSUM, F.VIRTIO_NET_F_GUEST_TSO4, F.VIRTIO_NET_F_GUEST_TSO6, F.VIRTIO_NET_F_GUEST_ECN,
  F.VIRTIO_NET_F_GUEST_UFO, F.VIRTIO_NET_F_GUEST_USO4, F.VIRTIO_NET_F_GUEST_USO6,
].reduce((mask, bit) => mask | featureBit(bit), 0n);

/** Guest offloads under which the tap may hand over frames larger than its MTU. */
const GSO_GUEST_OFFLOADS = [
  F.VIRTIO_NET_F_GUEST_TSO4, F.VIRTIO_NET_F_GUEST_TSO6, F.VIRTIO_NET_F_GUEST_UFO, F.VIRTIO_NET_F_GUEST_USO4, F.VIRTIO_NET_F_GUEST_USO6,
].reduce((mask, bit) => mask | featureBit(bit), 0n);

export interface VirtioNetDeviceOptions {
  /** The tap whose queues back the queue pairs: one tap queue per pair. */
  tap: Tap;
  /** Guest memory; may also be given later with setMemory() (vhost SET_MEM_TABLE). */
  memory?: GuestMemory;
  /** Queue pairs offered (max_virtqueue_pairs). Default: one per tap queue. */
  maxQueuePairs?: number;
  /** MAC address in config space. Default: a random locally administered one. */
  mac?: string;
  /** MTU offered with VIRTIO_NET_F_MTU. Default: not offered. */
  mtu?: number;
  /** Restrict the features offered to this mask (the device still drops what the tap cannot do). */
  features?: bigint;
  /** Link state at start. Default up. */
  linkUp?: boolean;
  /**
   * Who serves the control virtqueue: this device ('device', the default), or the
   * frontend (a vhost-user frontend such as QEMU keeps it, and tells the backend
   * of queue changes with SET_VRING_ENABLE). With 'frontend' the CTRL_* features
   * are not offered, and multiqueue and GUEST_ANNOUNCE (which is) do not depend on them.
   */
  controlQueue?: 'device' | 'frontend';
  /**
   * Each queue pair's worker keeps looking for work this many microseconds after
   * the last frame before it sleeps (see QueuePairOptions.busyPollUs). Default 0.
   */
  busyPollUs?: number;
  /**
   * Which queue each frame from the host goes to (see TapSteering). 'auto' (the
   * default): load the tap steering program and attach it, so that a queue pair
   * taken out of use loses none of the frames already on their way to it; if it
   * cannot be loaded (no CAP_BPF, an old kernel), tun's own flow hash steers, as
   * without it, and the device says why once ('steering' event, stats()). A
   * TapSteering: that one, loaded by someone else (a privileged helper) and left
   * theirs to close. 'off': tun's hash. VIRTIO_NET_F_RSS is offered only while the
   * program steers (the guest's table is the program's table).
   */
  steering?: 'auto' | 'off' | TapSteering;
}

/** Whether frames are steered by the program (lossless queue changes), and if not, why. */
export interface SteeringState {
  active: boolean;
  reason?: string;
}

/** One virtqueue as the VMM's transport (or vhost) configures it. */
interface VirtqueueState {
  size: number;
  descAddr?: number;
  availAddr?: number;
  usedAddr?: number;
  /** Where the ring resumes (vhost SET_VRING_BASE; see VirtqueueConfig.lastAvailIdx); undefined: a ring that never ran. */
  lastAvailIdx?: number;
  kickFd?: number;
  callFd?: number;
  enabled: boolean;
  /** Live migration: where the used ring's writes are logged (vhost's log_guest_addr); default usedAddr. */
  usedLogAddr?: number;
  /** A packed ring's position, kept outside the process (VirtqueueConfig.positionRecord). */
  positionRecord?: { file: GuestMemory; offset: number };
}

/**
 * The format of saveState()'s record; restoreState() takes this version only.
 * Still 1 with `rss` added: a record without it is what version 1 always was
 * (no RSS configuration in force), and one with it has VIRTIO_NET_F_RSS among its
 * driver features, which a device without RSS does not offer and so refuses.
 */
export const DEVICE_STATE_VERSION = 1;

/** The guest's RSS configuration (VIRTIO_NET_CTRL_MQ_RSS_CONFIG) in a saved state. */
export interface RssState {
  hashTypes: number;
  /** Hex, hash_key_length bytes (up to 40) as the guest gave them. */
  key: string;
  /** Receive queue (pair) indexes, a power of two of them, at most 128. */
  table: number[];
  unclassified: number;
  maxTxVq: number;
}

/**
 * Everything a destination device needs to carry on where the source stopped
 * (saveState() / restoreState()): plain JSON, bigints as hex strings. Process-local
 * things (the tap, guest memory, kick and call eventfds) are the VMM's to give again.
 */
export interface VirtioNetDeviceState {
  kind: 'vhost-tap/virtio-net';
  version: number;
  maxQueuePairs: number;
  /** Hex. */
  driverFeatures: string;
  /** Who negotiated them (setDriverFeatures' negotiatedBy): what the destination derives its active set with. */
  negotiatedBy: 'driver' | 'frontend';
  status: number;
  mac: string;
  linkUp: boolean;
  /** VIRTIO_NET_S_ANNOUNCE was pending. */
  announcing: boolean;
  activeQueuePairs: number;
  /** Hex: the guest offloads in force (CTRL_GUEST_OFFLOADS_SET may have narrowed them). */
  guestOffloads: string;
  rxMode: { promisc: boolean; allmulti: boolean };
  macTable: { unicast: string[]; multicast: string[] };
  queues: { size: number; descAddr?: number; availAddr?: number; usedAddr?: number; lastAvailIdx: number; enabled: boolean }[];
  /** The guest's RSS configuration while it steers (absent: automatic steering, as after VQ_PAIRS_SET or reset). */
  rss?: RssState;
}

export interface DriverFeaturesOptions {
  /**
   * Who negotiated these features with the guest. 'driver' (the default): the
   * guest's driver wrote them to this device, and FEATURES_OK is refused if they
   * break a requirement of virtio 1.x 5.1.3.1 (the driver MUST NOT accept such a
   * set, and 3.1.1 lets the device refuse it). 'frontend': a vhost-user frontend
   * negotiated them with the guest on its own device model and passes them on as
   * they are (QEMU with csum=off acks HOST_TSO4 without CSUM); refusing would cut
   * off a guest that QEMU's own tap backend runs. Any subset of the offer is then
   * accepted; a feature whose requirement is missing stays off in the data path
   * (see activeFeatures) and is reported once, with 'features-inactive'.
   */
  negotiatedBy?: 'driver' | 'frontend';
}

export interface InactiveFeatures {
  /** The negotiated features the data path leaves off. */
  features: bigint;
  /** Why, one requirement each: "GUEST_TSO4 (bit 7) needs GUEST_CSUM (bit 1)". */
  reasons: string[];
}

export interface DeviceQueueError {
  /** Queue pair index, or 'ctrl' for the control queue. */
  pair: number | 'ctrl';
  queue: 'rx' | 'tx' | 'tap' | 'ctrl';
  /**
   * Why, machine-readable: a ring fault of the queue ('bad-indirect', ...), 'tap-error',
   * or a failure of the device model itself ('queue-switch-failed', 'tap-detach-failed',
   * 'queue-start-failed', 'control-queue-error'). See QueueFaultCode.
   */
  code: QueueFaultCode;
  /** The particulars, for a person. */
  message: string;
}

export interface QueuePairsChange {
  active: number;
  previous: number;
}

export interface VirtioNetDeviceEvents {
  /** A queue broke (the device now needs a reset), or a queue switch failed. */
  'queue-error': [DeviceQueueError];
  /** Config space changed (link, announce, NEEDS_RESET): the transport should raise a configuration change interrupt. */
  'config-change': [];
  /** The set of queue pairs in use changed. */
  'queue-pairs': [QueuePairsChange];
  /** The driver wrote the status (after validation): the new value. */
  status: [number];
  /** The driver broke a rule of the status protocol; the write was ignored. */
  'protocol-error': [string];
  /** A frontend-negotiated feature set was accepted with features left off (see DriverFeaturesOptions). */
  'features-inactive': [InactiveFeatures];
  /** Emitted once, at construction: whether the steering program steers (and if not, why). */
  steering: [SteeringState];
}

export interface DeviceStats {
  activeQueuePairs: number;
  /**
   * running: the pair forwards frames. discardingTx: the pair is out of use while its
   * tx ring is live, and the chains the driver posts there are completed unsent
   * (counted in tx.drops.stopped).
   */
  pairs: ({ pair: number; running: boolean; discardingTx: boolean; tapAttached: boolean } & Partial<QueuePairStats>)[];
  control: { ok: number; err: number };
  steering: SteeringState;
}

/**
 * A virtio-net device backed by a multiqueue tap. The VMM owns the transport
 * (PCI or MMIO registers) and guest memory, and calls the methods here as the
 * guest touches them: the status and feature registers, config space, and the
 * vhost-style per-virtqueue setup. Queue pair i is virtqueues 2i (rx) and 2i+1
 * (tx); the control queue, if negotiated, is virtqueue 2 * maxQueuePairs.
 */
export class VirtioNetDevice extends EventEmitter<VirtioNetDeviceEvents> {
  readonly tap: Tap;
  readonly maxQueuePairs: number;
  /** The features this device offers: what was asked for, less what the tap and kernel cannot do. */
  readonly offeredFeatures: bigint;
  readonly #defaultMac: Buffer;
  readonly #mtu: number;
  readonly #frontendControl: boolean;
  readonly #busyPollUs: number;
  readonly #config: NetConfigSpace;
  #memory: GuestMemory | undefined;
  #status = 0;
  #driverFeatures = 0n;
  #negotiatedBy: 'driver' | 'frontend' = 'driver';
  /** The driver features the data path uses (fixed at FEATURES_OK): all of them, unless a frontend negotiated some whose requirements are missing. */
  #activeFeatures = 0n;
  #guestOffloads = 0n;
  #queues: VirtqueueState[] = [];
  #workers: (QueuePair | undefined)[] = [];
  #active = 1;
  #control: ControlQueue | undefined;
  #rxMode = { promisc: true, allmulti: true };
  #macTable: { unicast: Buffer[]; multicast: Buffer[] } = { unicast: [], multicast: [] };
  #closed = false;
  /** Which dirty log the queues write to (live migration); none unless startDirtyLog(). */
  readonly #dirtyLog = new DirtyLogSlot();
  #steering: TapSteering | undefined;
  #ownsSteering = false;
  #steeringState: SteeringState = { active: false, reason: 'not set up' };
  /** The guest's RSS configuration, while it is the last multiqueue command (5.1.6.5.5); undefined: automatic steering. */
  #rss: RssConfig | undefined;

  constructor(options: VirtioNetDeviceOptions) {
    super();
    const { tap, memory, mtu, linkUp = true } = options;
    const maxQueuePairs = options.maxQueuePairs ?? tap.queues.length;
    if (!Number.isInteger(maxQueuePairs) || maxQueuePairs < 1 || maxQueuePairs > tap.queues.length) {
      throw makeError('EINVAL', `maxQueuePairs must be 1 to the tap's ${tap.queues.length} queues, got ${String(maxQueuePairs)}`);
    }
    if (mtu !== undefined && (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535)) throw makeError('EINVAL', `mtu must be 68 to 65535, got ${mtu}`);
    this.tap = tap;
    this.maxQueuePairs = maxQueuePairs;
    this.#memory = memory;
    this.#mtu = mtu ?? 0;
    this.#frontendControl = options.controlQueue === 'frontend';
    const busyPollUs = options.busyPollUs ?? 0;
    if (!Number.isInteger(busyPollUs) || busyPollUs < 0 || busyPollUs > 1_000_000) {
      throw makeError('EINVAL', `busyPollUs must be an integer from 0 to 1000000, got ${String(options.busyPollUs)}`);
    }
    this.#busyPollUs = busyPollUs;
    this.#defaultMac = options.mac !== undefined ? parseMac(options.mac) : randomMac();
    // The steering program first: whether it steers decides whether RSS is offered.
    this.#setUpSteering(options.steering ?? 'auto');
    try {
      this.offeredFeatures = this.#probeFeatures((options.features ?? IMPLEMENTED_FEATURES) & IMPLEMENTED_FEATURES);
      // 5.1.4.1: with RSS offered, a key of at least 40 bytes and a table of at least 128 entries.
      const rssLimits = hasFeature(this.offeredFeatures, F.VIRTIO_NET_F_RSS)
        ? { maxKeySize: RSS_KEY_BYTES, maxTableLength: RSS_MAX_TABLE_ENTRIES, supportedHashTypes: RSS_SUPPORTED_HASH_TYPES }
        : undefined;
      this.#config = new NetConfigSpace(this.#defaultMac, maxQueuePairs, this.#mtu, rssLimits);
      this.#config.setStatus(linkUp ? VIRTIO_NET_S_LINK_UP : 0);
      this.#resetState();
    } catch (error) {
      this.#releaseSteering();
      throw error;
    }
  }

  // ---- status and features (the transport's registers) ----

  get status(): number {
    return this.#status;
  }

  /** The features the driver wrote (fixed once FEATURES_OK is accepted). */
  get driverFeatures(): bigint {
    return this.#driverFeatures;
  }

  /**
   * The features the data path follows once FEATURES_OK is accepted: the driver
   * features less any whose requirement is missing (only a frontend's set can
   * have such: see DriverFeaturesOptions). 0 before FEATURES_OK.
   */
  get activeFeatures(): bigint {
    return this.#activeFeatures;
  }

  /** Writes the device status register. 0 resets the device. A write that breaks the protocol is ignored and reported. */
  writeStatus(value: number): void {
    this.#assertOpen();
    if (value === 0) {
      this.reset();
      return;
    }
    const problem = statusTransitionError(this.#status, value);
    if (problem) {
      this.emit('protocol-error', problem);
      return;
    }
    const rising = value & ~this.#status;
    if (rising & STATUS_FEATURES_OK && !this.#acceptFeatures()) {
      value &= ~(STATUS_FEATURES_OK | STATUS_DRIVER_OK); // the driver reads it back and sees the refusal (3.1.1)
    }
    const needsReset = this.#status & STATUS_DEVICE_NEEDS_RESET;
    this.#status = value | needsReset;
    if (rising & STATUS_DRIVER_OK && value & STATUS_FEATURES_OK && !(value & STATUS_FAILED)) this.#driverOk();
    this.emit('status', this.#status);
  }

  /**
   * Sets DRIVER_OK and starts the queues, or, if they cannot start, throws and
   * leaves the status as it was. For a vhost-user backend, whose frontend must
   * hear in its reply-ack that a ring did not start; a transport writes the
   * status register (writeStatus), where such a failure sets DEVICE_NEEDS_RESET.
   */
  setDriverOk(): void {
    this.#assertOpen();
    const previous = this.#status;
    const problem = statusTransitionError(previous, previous | STATUS_DRIVER_OK);
    if (problem) throw makeError('EINVAL', problem);
    if (previous & STATUS_DRIVER_OK) return;
    this.#status = previous | STATUS_DRIVER_OK;
    try {
      this.#startQueues();
    } catch (error) {
      this.#status = previous;
      throw makeError(errorCode(error) ?? 'EIO', `cannot start the device: ${(error as Error).message}`, error);
    }
    this.emit('status', this.#status);
  }

  /** Writes the driver features register; only before FEATURES_OK (later writes are ignored and reported). */
  setDriverFeatures(features: bigint, options: DriverFeaturesOptions = {}): void {
    this.#assertOpen();
    if (this.#status & STATUS_FEATURES_OK) {
      this.emit('protocol-error', 'features written after FEATURES_OK');
      return;
    }
    this.#driverFeatures = BigInt.asUintN(64, features);
    this.#negotiatedBy = options.negotiatedBy ?? 'driver';
  }

  /** Resets the device: stops every queue, detaches every tap queue but the first, forgets the driver. */
  reset(): void {
    this.#stopAll();
    this.#resetState();
    this.emit('status', 0);
  }

  // ---- config space ----

  readConfig(offset: number, length: number): Buffer {
    if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 || length > 256) {
      throw makeError('EINVAL', `config read at ${offset}+${length} is out of range`);
    }
    return this.#config.read(offset, length);
  }

  /** virtio 1.x config space is read-only for the driver; a legacy driver may write the MAC (without CTRL_MAC_ADDR). */
  writeConfig(offset: number, data: Uint8Array): void {
    if (!hasFeature(this.#driverFeatures, F.VIRTIO_F_VERSION_1) && offset === 0 && data.length === 6) {
      this.#config.mac = Buffer.from(data);
      return;
    }
    this.emit('protocol-error', `config write at ${offset}+${data.length} ignored (read-only in virtio 1.x)`);
  }

  get configGeneration(): number {
    return this.#config.generation;
  }

  get mac(): string {
    return Array.from(this.#config.mac, (b) => b.toString(16).padStart(2, '0')).join(':');
  }

  get linkUp(): boolean {
    return (this.#config.status & VIRTIO_NET_S_LINK_UP) !== 0;
  }

  /** Sets the link state the guest sees (VIRTIO_NET_S_LINK_UP) and raises a config change. */
  setLinkUp(up: boolean): void {
    const status = up ? this.#config.status | VIRTIO_NET_S_LINK_UP : this.#config.status & ~VIRTIO_NET_S_LINK_UP;
    if (this.#config.setStatus(status)) this.emit('config-change');
  }

  /** Asks the guest to announce itself (after a migration): VIRTIO_NET_S_ANNOUNCE until it acks on the control queue. */
  announce(): void {
    if (!hasFeature(this.#activeFeatures, F.VIRTIO_NET_F_GUEST_ANNOUNCE)) {
      throw makeError('EINVAL', 'the driver did not negotiate VIRTIO_NET_F_GUEST_ANNOUNCE');
    }
    if (this.#config.setStatus(this.#config.status | VIRTIO_NET_S_ANNOUNCE)) this.emit('config-change');
  }

  // ---- virtqueues (vhost-style) ----

  /** Virtqueues this device has: 2 per pair, plus the control queue when CTRL_VQ is offered. */
  get numQueues(): number {
    return 2 * this.maxQueuePairs + (hasFeature(this.offeredFeatures, F.VIRTIO_NET_F_CTRL_VQ) ? 1 : 0);
  }

  /** Guest memory the rings and buffers are in (vhost SET_MEM_TABLE), or none (every region removed); only while no queue runs. */
  setMemory(memory: GuestMemory | undefined): void {
    if (this.#workers.some((w) => w) || this.#control) throw makeError('EBUSY', 'stop the queues (stopQueues or reset) before replacing guest memory');
    this.#memory = memory;
  }

  /** The guest memory in use, if any. */
  get memory(): GuestMemory | undefined {
    return this.#memory;
  }

  /** Queue Size: 1 to 32768, a power of two unless the driver negotiated VIRTIO_F_RING_PACKED (2.8 lets it be any). */
  setQueueSize(index: number, size: number): void {
    const packed = this.#ringPacked();
    if (!Number.isInteger(size) || size < 1 || size > 32768 || (!packed && (size & (size - 1)) !== 0)) {
      throw makeError('EINVAL', `queue size must be ${packed ? 'from 1 to 32768' : 'a power of two from 1 to 32768 (any size needs VIRTIO_F_RING_PACKED)'}, got ${size}`);
    }
    this.#queue(index, true).size = size;
  }

  setQueueAddresses(index: number, addresses: { descAddr: number; availAddr: number; usedAddr: number }): void {
    const q = this.#queue(index, true);
    for (const key of ['descAddr', 'availAddr', 'usedAddr'] as const) {
      if (!Number.isSafeInteger(addresses[key]) || addresses[key] < 0) throw makeError('EINVAL', `${key} must be a guest-physical address`);
    }
    Object.assign(q, { descAddr: addresses.descAddr, availAddr: addresses.availAddr, usedAddr: addresses.usedAddr });
  }

  /**
   * Live migration: the guest-physical address the used ring's writes are logged
   * at (vhost-user's log_guest_addr with VHOST_VRING_F_LOG); undefined: its own.
   * Allowed while the ring runs: a pair restarts (from where it was) only if the
   * address changes what it logs.
   */
  setQueueLogAddress(index: number, usedLogAddr: number | undefined): void {
    const q = this.#queue(index, false);
    if (usedLogAddr !== undefined && (!Number.isSafeInteger(usedLogAddr) || usedLogAddr < 0)) throw makeError('EINVAL', 'the used ring log address must be a guest-physical address');
    const before = q.usedLogAddr ?? q.usedAddr;
    q.usedLogAddr = usedLogAddr;
    const pair = index >> 1;
    if (index < 2 * this.maxQueuePairs && (usedLogAddr ?? q.usedAddr) !== before) this.#restartPair(pair);
  }

  /**
   * Where the device resumes (vhost SET_VRING_BASE): the 16-bit index in the
   * available ring, or for a packed ring (VIRTIO_F_RING_PACKED negotiated) both
   * positions with their wrap counters as vhost-user encodes them (see
   * VirtqueueConfig.lastAvailIdx).
   */
  setQueueBase(index: number, lastAvailIdx: number): void {
    const max = this.#ringPacked() ? 0xffffffff : 0xffff;
    if (!Number.isInteger(lastAvailIdx) || lastAvailIdx < 0 || lastAvailIdx > max) {
      throw makeError('EINVAL', this.#ringPacked() ? 'the ring base of a packed ring is a 32-bit value' : 'the ring base is a 16-bit index (a larger one needs VIRTIO_F_RING_PACKED)');
    }
    this.#queue(index, true).lastAvailIdx = lastAvailIdx;
  }

  /** Stops the queue's pair (or the control queue) and returns where it stopped (vhost GET_VRING_BASE). */
  getQueueBase(index: number): number {
    const q = this.#queue(index, false);
    if (this.#control && index === this.#controlIndex()) {
      q.lastAvailIdx = this.#control.lastAvailIdx;
      void this.#stopControl();
    } else if (index < 2 * this.maxQueuePairs) {
      this.#stopPair(index >> 1);
    }
    return this.#baseOf(q);
  }

  /**
   * Where a packed ring's worker keeps its used position for a process that comes
   * after this one (VirtqueueConfig.positionRecord); undefined: nowhere. Taken at the
   * ring's next start.
   */
  setQueuePositionRecord(index: number, record: { file: GuestMemory; offset: number } | undefined): void {
    this.#queue(index, false).positionRecord = record;
  }

  setQueueKick(index: number, fd: number): void {
    this.#queue(index, true).kickFd = checkFd(fd);
  }

  /** The call (interrupt) eventfd; a frontend may change it while the queue runs (its pair restarts on the new one). */
  setQueueCall(index: number, fd: number | undefined): void {
    const q = this.#queue(index, false);
    q.callFd = fd === undefined || fd < 0 ? undefined : checkFd(fd);
    const pair = index >> 1;
    if (index < 2 * this.maxQueuePairs) this.#restartPair(pair);
  }

  /** queue_enable of the transport. A pair runs when both its rings are enabled and it is among the active pairs. */
  enableQueue(index: number, enabled: boolean): void {
    this.#queue(index, false).enabled = enabled;
    // A tx ring no longer live is not discarded from any more: stop where it is.
    if (!enabled && index < 2 * this.maxQueuePairs && index % 2 === 1 && this.isPairDiscardingTx(index >> 1)) this.#stopPair(index >> 1);
  }

  // ---- queue pairs ----

  get activeQueuePairs(): number {
    return this.#active;
  }

  /**
   * The guest's RSS configuration while it steers (VIRTIO_NET_CTRL_MQ_RSS_CONFIG,
   * until a VQ_PAIRS_SET or a reset); undefined under automatic steering.
   */
  get rss(): RssConfig | undefined {
    const rss = this.#rss;
    return rss && { ...rss, table: [...rss.table], key: Buffer.from(rss.key) };
  }

  /**
   * The one path that changes the queue pairs in use (the control queue's
   * VQ_PAIRS_SET here, vhost-user's SET_VRING_ENABLE later). Pairs below n:
   * attach the tap queue, then start the worker. Pairs from n up: stop the
   * worker (it completes every chain it took), then detach the tap queue, so the
   * kernel never steers a frame into a queue nobody reads. On failure the
   * previous set stays in force and the error is thrown.
   */
  setActiveQueuePairs(n: number, options: { discardTx?: boolean } = {}): void {
    this.#assertOpen();
    if (!Number.isInteger(n) || n < 1 || n > this.maxQueuePairs) {
      throw makeError('EINVAL', `queue pairs must be 1 to ${this.maxQueuePairs}, got ${String(n)}`);
    }
    if (this.#rss && n < rssQueuePairs(this.#rss)) {
      throw makeError('EINVAL', `the guest's RSS configuration steers over ${rssQueuePairs(this.#rss)} queue pairs: it needs them all (got ${n})`);
    }
    const previous = this.#active;
    if (!(this.#status & STATUS_DRIVER_OK)) {
      this.#active = n; // applied at DRIVER_OK
      return;
    }
    const forwarding = (i: number): boolean => this.isPairRunning(i);
    if (n === previous && Array.from({ length: n }, (_, i) => i).every(forwarding)) {
      this.#discardTxOfPairsOutOfUse(n);
      return;
    }
    const attached: number[] = [];
    const started: number[] = [];
    try {
      for (let i = 0; i < n; i++) {
        const queue = this.tap.queues[i]!;
        if (!queue.attached) {
          queue.attach();
          attached.push(i);
        }
      }
      for (let i = 0; i < n; i++) {
        if (!forwarding(i)) {
          this.#stopPair(i); // a pair coming back into use was discarding its tx chains
          this.#startPair(i);
          started.push(i);
        }
      }
    } catch (error) {
      for (const i of started) this.#stopPair(i);
      for (const i of attached) this.#detachQuietly(i);
      throw makeError(errorCode(error) ?? 'EIO', `could not use ${n} queue pairs (still ${previous}): ${(error as Error).message}`, error);
    }
    // The pairs that stay (and those that start) get every frame from here on; those that
    // leave get none once frames already steered to them have arrived: they are read
    // empty, then detached, so the kernel purges nothing (tun drops a detached queue's
    // backlog). Top down, so that tun's numbering of the attached queues stays 0..n-1,
    // the numbers the steering table uses (a detach moves tun's last queue into the hole).
    const leaving = Array.from({ length: this.maxQueuePairs - n }, (_, k) => this.maxQueuePairs - 1 - k).filter((i) => this.tap.queues[i]!.attached);
    this.#steer(n);
    const drainRx = this.#steering !== undefined && leaving.length > 0;
    if (drainRx && !this.#steering!.waitForInFlight()) sleepSync(20); // no grace period to wait for (nohz_full): a moment instead
    for (const i of leaving) {
      // A pair the driver stops using: its tx chains are completed unsent (QueuePair.stop).
      if (forwarding(i)) this.#stopPair(i, options.discardTx ?? false, drainRx);
      this.#detachQuietly(i);
    }
    for (let i = n; i < this.maxQueuePairs; i++) if (forwarding(i)) this.#stopPair(i, options.discardTx ?? false);
    this.#discardTxOfPairsOutOfUse(n);
    this.#active = n;
    if (n !== previous) this.emit('queue-pairs', { active: n, previous });
  }

  /**
   * Stops every worker, keeping where each ring stopped and which tap queues are
   * attached; setActiveQueuePairs() starts them again. For a frontend that
   * stops its rings (vhost GET_VRING_BASE) or replaces guest memory.
   */
  stopQueues(): void {
    for (let pair = 0; pair < this.maxQueuePairs; pair++) this.#stopPair(pair);
  }

  /** Whether queue pair `pair` forwards frames (has a running worker). */
  isPairRunning(pair: number): boolean {
    return this.#workers[pair] !== undefined && !this.#workers[pair]!.txDiscardOnly;
  }

  /** Whether queue pair `pair` is out of use with its tx ring live: the chains posted there are completed unsent. */
  isPairDiscardingTx(pair: number): boolean {
    return this.#workers[pair]?.txDiscardOnly ?? false;
  }

  /** Per-pair counters and states, read without stopping anything. */
  stats(): DeviceStats {
    return {
      activeQueuePairs: this.#active,
      pairs: Array.from({ length: this.maxQueuePairs }, (_, pair) => {
        const worker = this.#workers[pair];
        const forwarding = worker !== undefined && !worker.txDiscardOnly;
        return {
          pair, running: forwarding && worker.running, discardingTx: worker?.txDiscardOnly ?? false,
          tapAttached: this.tap.queues[pair]!.attached, ...(worker ? worker.stats() : {}),
        };
      }),
      control: this.#control ? { ...this.#control.counts } : { ok: 0, err: 0 },
      steering: { ...this.#steeringState },
    };
  }

  // ---- live migration ----

  /**
   * From now on, every byte the device writes into guest memory (received frames
   * and their headers, used rings, the control queue's acks) marks its 4 KiB page
   * in `log`, while the queues run. The log is the VMM's: it collects and clears
   * it (DirtyLog.takeDirtyPages) between passes. Replacing a log needs no stop.
   */
  startDirtyLog(log: DirtyLog): void {
    this.#assertOpen();
    if (!(log instanceof DirtyLog)) throw makeError('EINVAL', 'startDirtyLog takes a DirtyLog (DirtyLog.allocate or DirtyLog.fromFd)');
    this.#dirtyLog.set(log);
  }

  /** Stops logging; writes from now on mark nothing. */
  stopDirtyLog(): void {
    this.#dirtyLog.set(undefined);
  }

  /** The log in use, if logging. */
  get dirtyLog(): DirtyLog | undefined {
    return this.#dirtyLog.current;
  }

  /**
   * Stops every worker and the control queue, keeping where each ring stopped:
   * every chain a worker took is completed. The VMM does this with the guest
   * paused, before the last pass over the dirty log; resume() undoes it.
   */
  quiesce(): void {
    this.stopQueues();
    if (this.#control) {
      this.#queues[this.#controlIndex()]!.lastAvailIdx = this.#control.lastAvailIdx;
      void this.#stopControl();
    }
  }

  /** After quiesce(), when the guest goes on here after all (the migration failed): the queues run again. */
  resume(): void {
    this.#assertOpen();
    if (!(this.#status & STATUS_DRIVER_OK)) return;
    if (hasFeature(this.#activeFeatures, F.VIRTIO_NET_F_CTRL_VQ) && !this.#control) this.#startControl();
    this.setActiveQueuePairs(this.#active);
  }

  /** Quiesces the device and returns its state (a plain, versioned record) for restoreState() on the destination. */
  saveState(): VirtioNetDeviceState {
    this.#assertOpen();
    this.quiesce();
    const hex = (b: Buffer): string => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
    return {
      kind: 'vhost-tap/virtio-net',
      version: DEVICE_STATE_VERSION,
      maxQueuePairs: this.maxQueuePairs,
      driverFeatures: `0x${this.#driverFeatures.toString(16)}`,
      negotiatedBy: this.#negotiatedBy,
      status: this.#status & ~STATUS_DEVICE_NEEDS_RESET,
      mac: this.mac,
      linkUp: this.linkUp,
      announcing: (this.#config.status & VIRTIO_NET_S_ANNOUNCE) !== 0,
      activeQueuePairs: this.#active,
      guestOffloads: `0x${this.#guestOffloads.toString(16)}`,
      rxMode: { ...this.#rxMode },
      macTable: { unicast: this.#macTable.unicast.map(hex), multicast: this.#macTable.multicast.map(hex) },
      queues: this.#queues.map((q) => ({
        size: q.size, lastAvailIdx: this.#baseOf(q), enabled: q.enabled,
        ...(q.descAddr !== undefined ? { descAddr: q.descAddr, availAddr: q.availAddr, usedAddr: q.usedAddr } : {}),
      })),
      ...(this.#rss ? {
        rss: {
          hashTypes: this.#rss.hashTypes, key: this.#rss.key.toString('hex'), table: [...this.#rss.table],
          unclassified: this.#rss.unclassified, maxTxVq: this.#rss.maxTxVq,
        },
      } : {}),
    };
  }

  /**
   * On a fresh device on the destination (status 0, guest memory set, each
   * queue's kick and call eventfds given): takes the source's state and, if the
   * driver was running, starts the queues where the source stopped, then
   * announces the guest (VIRTIO_NET_S_ANNOUNCE when negotiated, else a RARP from
   * the device into the tap). A state that is malformed, of another version or
   * does not fit this device is refused with EINVAL, and nothing changes.
   */
  restoreState(state: VirtioNetDeviceState): void {
    this.#assertOpen();
    const plan = this.#checkState(state);
    if (this.#status !== 0) throw makeError('EBUSY', 'restoreState needs a device that was not started: reset it first');
    try {
      this.#driverFeatures = plan.features;
      this.#negotiatedBy = state.negotiatedBy;
      if (!this.#acceptFeatures()) throw makeError('EINVAL', 'the saved features cannot be backed by this tap');
      this.#guestOffloads = plan.guestOffloads;
      this.tap.setOffload(tapOffloadsForGuest(this.#guestOffloads));
      state.queues.forEach((q, i) => {
        Object.assign(this.#queues[i]!, {
          size: q.size, lastAvailIdx: q.lastAvailIdx, enabled: q.enabled,
          ...(q.descAddr !== undefined ? { descAddr: q.descAddr, availAddr: q.availAddr, usedAddr: q.usedAddr } : {}),
        });
      });
      this.#config.mac = parseMac(state.mac);
      this.#config.setStatus((state.linkUp ? VIRTIO_NET_S_LINK_UP : 0) | (state.announcing ? VIRTIO_NET_S_ANNOUNCE : 0));
      this.#rxMode = { ...state.rxMode };
      this.#macTable = { unicast: state.macTable.unicast.map((m) => parseMac(m)), multicast: state.macTable.multicast.map((m) => parseMac(m)) };
      this.#active = state.activeQueuePairs;
      this.#rss = plan.rss; // steers from the first setActiveQueuePairs on
      this.#status = state.status & ~STATUS_DRIVER_OK;
      if (state.status & STATUS_DRIVER_OK) {
        this.#status = state.status;
        if (hasFeature(this.#activeFeatures, F.VIRTIO_NET_F_CTRL_VQ)) this.#startControl();
        const wanted = this.#active;
        this.#active = 1;
        this.setActiveQueuePairs(wanted);
      }
    } catch (error) {
      this.reset();
      throw makeError(errorCode(error) ?? 'EINVAL', `cannot restore the device state: ${(error as Error).message}`, error);
    }
    this.emit('status', this.#status);
    if (this.#status & STATUS_DRIVER_OK) this.announceMove();
  }

  /**
   * Tells the network the guest is here now: the guest announces itself if it
   * negotiated GUEST_ANNOUNCE (5.1.6.5.4), else the device sends a RARP broadcast
   * from the guest's MAC into the tap, as QEMU does after a migration.
   */
  announceMove(mac?: string): void {
    if (mac === undefined && hasFeature(this.#activeFeatures, F.VIRTIO_NET_F_GUEST_ANNOUNCE)) {
      this.announce();
      return;
    }
    this.sendRarp(mac ?? this.mac);
  }

  /** Writes a RARP broadcast from `mac` into tap queue 0, as if the guest had sent it (vhost-user SEND_RARP). */
  sendRarp(mac: string): void {
    const frame = rarpFrame(parseMac(mac));
    const header = Buffer.alloc(this.tap.vnetHdrSize()); // no offloads: all zero (VIRTIO_NET_HDR_GSO_NONE)
    try {
      fs.writeSync(this.tap.queues[0]!.fd, Buffer.concat([header, frame]));
    } catch (error) {
      throw makeError(errorCode(error) ?? 'EIO', `could not send the RARP announcement into ${this.tap.name}: ${(error as Error).message} (is the link up?)`, error);
    }
  }

  /** Checks a saved state completely before restoreState() touches anything. */
  #checkState(state: VirtioNetDeviceState): { features: bigint; guestOffloads: bigint; rss: RssConfig | undefined } {
    const bad = (why: string): never => {
      throw makeError('EINVAL', `not a device state this device can restore: ${why}`);
    };
    if (!state || typeof state !== 'object' || state.kind !== 'vhost-tap/virtio-net') bad('kind is not vhost-tap/virtio-net');
    if (state.version !== DEVICE_STATE_VERSION) bad(`version ${String(state.version)}, this device reads version ${DEVICE_STATE_VERSION}`);
    if (state.maxQueuePairs !== this.maxQueuePairs) bad(`it has ${String(state.maxQueuePairs)} queue pairs, this device ${this.maxQueuePairs} (migration needs the same device options on both sides)`);
    const bigHex = (v: unknown, what: string): bigint => {
      if (typeof v !== 'string' || !/^0x[0-9a-f]{1,16}$/.test(v)) bad(`${what} is not a hex string`);
      return BigInt(v as string);
    };
    const features = bigHex(state.driverFeatures, 'driverFeatures');
    const guestOffloads = bigHex(state.guestOffloads, 'guestOffloads');
    if (features & ~this.offeredFeatures) bad(`features 0x${(features & ~this.offeredFeatures).toString(16)} are not offered here`);
    if (guestOffloads & ~features) bad('guest offloads beyond the features');
    if (state.negotiatedBy !== 'driver' && state.negotiatedBy !== 'frontend') bad('negotiatedBy is neither driver nor frontend');
    if (!Number.isInteger(state.status) || state.status < 0 || state.status > 0xff || state.status & 0x80) bad('status is not a live device status');
    if (state.status & STATUS_DRIVER_OK && !(state.status & STATUS_FEATURES_OK)) bad('DRIVER_OK without FEATURES_OK');
    try {
      parseMac(state.mac);
      for (const m of [...(state.macTable?.unicast ?? []), ...(state.macTable?.multicast ?? [])]) parseMac(m);
    } catch {
      bad('a MAC address is malformed');
    }
    if (!Array.isArray(state.macTable?.unicast) || !Array.isArray(state.macTable?.multicast)) bad('macTable is malformed');
    if (typeof state.linkUp !== 'boolean' || typeof state.announcing !== 'boolean') bad('link state is malformed');
    if (!state.rxMode || typeof state.rxMode.promisc !== 'boolean' || typeof state.rxMode.allmulti !== 'boolean') bad('rxMode is malformed');
    if (!Number.isInteger(state.activeQueuePairs) || state.activeQueuePairs < 1 || state.activeQueuePairs > this.maxQueuePairs) bad('activeQueuePairs is out of range');
    if (!Array.isArray(state.queues) || state.queues.length !== this.numQueues) bad(`it has ${String(state.queues?.length)} virtqueues, this device ${this.numQueues}`);
    const packed = hasFeature(features, F.VIRTIO_F_RING_PACKED);
    state.queues.forEach((q, i) => {
      if (!q || !Number.isInteger(q.size) || q.size < 1 || q.size > 32768 || (!packed && (q.size & (q.size - 1)) !== 0)) bad(`queue ${i}: size`);
      if (!Number.isInteger(q.lastAvailIdx) || q.lastAvailIdx < 0 || q.lastAvailIdx > (packed ? 0xffffffff : 0xffff)) bad(`queue ${i}: lastAvailIdx`);
      if (typeof q.enabled !== 'boolean') bad(`queue ${i}: enabled`);
      for (const key of ['descAddr', 'availAddr', 'usedAddr'] as const) {
        if (q[key] !== undefined && (!Number.isSafeInteger(q[key]) || q[key]! < 0)) bad(`queue ${i}: ${key}`);
      }
    });
    return { features, guestOffloads, rss: this.#checkRssState(state, features, bad) };
  }

  /** The saved RSS configuration, held to the rules RSS_CONFIG is (rssConfigError), and to the state around it. */
  #checkRssState(state: VirtioNetDeviceState, features: bigint, bad: (why: string) => never): RssConfig | undefined {
    const saved = state.rss;
    if (saved === undefined) return undefined;
    if (!saved || typeof saved !== 'object') bad('rss is malformed');
    if (!hasFeature(features, F.VIRTIO_NET_F_RSS)) bad('an RSS configuration without VIRTIO_NET_F_RSS negotiated');
    if (!(state.status & STATUS_DRIVER_OK)) bad('an RSS configuration before DRIVER_OK');
    const u16 = (v: unknown): boolean => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 0xffff;
    if (!Number.isInteger(saved.hashTypes) || saved.hashTypes < 0 || saved.hashTypes > 0xffffffff) bad('rss.hashTypes is malformed');
    if (typeof saved.key !== 'string' || !/^(?:[0-9a-f]{2})*$/.test(saved.key)) bad('rss.key is not hex');
    if (!Array.isArray(saved.table) || saved.table.length > RSS_MAX_TABLE_ENTRIES || !saved.table.every(u16)) bad('rss.table is malformed');
    if (!u16(saved.unclassified) || !u16(saved.maxTxVq)) bad('rss.unclassified or rss.maxTxVq is malformed');
    const config: RssConfig = {
      hashTypes: saved.hashTypes, key: Buffer.from(saved.key, 'hex'), table: [...saved.table], unclassified: saved.unclassified, maxTxVq: saved.maxTxVq,
    };
    const problem = rssConfigError(config, this.maxQueuePairs);
    if (problem !== undefined) bad(`rss: ${problem}`);
    if (state.activeQueuePairs < rssQueuePairs(config)) bad(`rss steers over ${rssQueuePairs(config)} queue pairs, ${state.activeQueuePairs} are in use`);
    return config;
  }

  /** Resets the device and lets go of the tap (which stays the caller's). */
  close(): void {
    if (this.#closed) return;
    this.#stopAll();
    this.#closed = true;
    this.#releaseSteering();
  }

  /** Detaches and closes the steering program if it is this device's own. */
  #releaseSteering(): void {
    if (this.#steering && this.#ownsSteering) {
      try {
        this.#steering.detach(this.tap);
      } catch {
        // a tap whose queues are gone: nothing to detach from
      }
      this.#steering.close();
    }
    this.#steering = undefined;
  }

  /** Loads and attaches the steering program (or adopts one); without it, tun's own hash steers. */
  #setUpSteering(choice: 'auto' | 'off' | TapSteering): void {
    if (choice === 'off') {
      this.#steeringState = { active: false, reason: 'turned off (steering: \'off\')' };
    } else {
      // A tap handed over with its steering map (receiveTapQueues) already has one, attached by its sender.
      const given = choice instanceof TapSteering ? choice : this.tap.steering;
      const owned = given === undefined;
      let steering: TapSteering | undefined;
      try {
        steering = given ?? TapSteering.load();
        if (owned) steering.attach(this.tap);
        this.#steering = steering;
        this.#ownsSteering = owned;
        this.#steer(this.#active);
        this.#steeringState = { active: true };
      } catch (error) {
        if (owned) steering?.close();
        this.#steering = undefined;
        this.#steeringState = {
          active: false,
          reason: `${(error as Error).message}: tun's own flow hash steers, and frames already steered to a queue pair taken out of use are lost`,
        };
      }
    }
    // Once, whoever listens: a listener added right after construction still gets it.
    queueMicrotask(() => this.emit('steering', { ...this.#steeringState }));
  }

  /**
   * The steering program sends frames to the first `pairs` tap queues only (tun
   * numbers attached queues 0..n-1): by the guest's RSS table while it is in
   * force (its entries are pair indexes, all below `pairs`), else spread evenly.
   */
  #steer(pairs: number): void {
    if (!this.#steering) return;
    if (this.#rss && rssQueuePairs(this.#rss) <= pairs) this.#steering.configure(rssSteeringTable(this.#rss));
    else this.#steering.spread(pairs);
  }

  // ---- internals ----

  #assertOpen(): void {
    if (this.#closed) throw makeError('EBADF', 'the device is closed');
  }

  /** Whether the rings have the packed layout: VIRTIO_F_RING_PACKED among the features in force (or written, before FEATURES_OK). */
  #ringPacked(): boolean {
    return hasFeature(this.#status & STATUS_FEATURES_OK ? this.#activeFeatures : this.#driverFeatures, F.VIRTIO_F_RING_PACKED);
  }

  /** Where a queue resumes: what was set or where it stopped, else the start of a ring that never ran. */
  #baseOf(q: VirtqueueState): number {
    return q.lastAvailIdx ?? freshRingBase(this.#ringPacked());
  }

  #queue(index: number, mustBeStopped: boolean): VirtqueueState {
    if (!Number.isInteger(index) || index < 0 || index >= this.numQueues) {
      throw makeError('EINVAL', `virtqueue ${index} does not exist (this device has ${this.numQueues})`);
    }
    if (mustBeStopped && index < 2 * this.maxQueuePairs && this.#workers[index >> 1]) {
      throw makeError('EBUSY', `virtqueue ${index} is running: stop it first (getQueueBase or reset)`);
    }
    return this.#queues[index]!;
  }

  /** Asks the tap which offloads the kernel takes, and drops the features it cannot back. */
  #probeFeatures(wanted: bigint): bigint {
    let features = wanted;
    const drop = (...bits: number[]): void => {
      for (const bit of bits) features &= ~featureBit(bit);
    };
    const tries = (offloads: TapOffloads): boolean => {
      try {
        this.tap.setOffload(offloads);
        return true;
      } catch {
        return false;
      }
    };
    if (!this.tap.features().vnetHdr) {
      throw makeError('EOPNOTSUPP', 'this kernel\'s tun driver has no IFF_VNET_HDR: a virtio-net backend needs it');
    }
    if (!tries({ csum: true })) drop(F.VIRTIO_NET_F_GUEST_CSUM, F.VIRTIO_NET_F_GUEST_TSO4, F.VIRTIO_NET_F_GUEST_TSO6, F.VIRTIO_NET_F_GUEST_ECN, F.VIRTIO_NET_F_GUEST_UFO, F.VIRTIO_NET_F_GUEST_USO4, F.VIRTIO_NET_F_GUEST_USO6);
    if (!tries({ csum: true, tso4: true, tso6: true, ecn: true })) drop(F.VIRTIO_NET_F_GUEST_TSO4, F.VIRTIO_NET_F_GUEST_TSO6, F.VIRTIO_NET_F_GUEST_ECN);
    if (!tries({ csum: true, ufo: true })) drop(F.VIRTIO_NET_F_GUEST_UFO);
    // USO through tun came with Linux 6.2, both directions at once.
    if (!tries({ csum: true, uso4: true, uso6: true })) drop(F.VIRTIO_NET_F_GUEST_USO4, F.VIRTIO_NET_F_GUEST_USO6, F.VIRTIO_NET_F_HOST_USO);
    tries({});
    // One pair has nothing to steer between; the guest's table needs the steering program.
    if (this.maxQueuePairs < 2) drop(F.VIRTIO_NET_F_MQ, F.VIRTIO_NET_F_RSS);
    if (!this.#steering) drop(F.VIRTIO_NET_F_RSS);
    if (this.#mtu === 0) drop(F.VIRTIO_NET_F_MTU);
    if (this.#frontendControl) {
      // RSS too: its RSS_CONFIG would reach the frontend's control queue, never this device.
      drop(F.VIRTIO_NET_F_RSS);
      // GUEST_ANNOUNCE stays: the frontend's control queue carries the announce, and QEMU
      // asks the backend for this bit (vhost_net's feature bits): without it the guest never
      // announces itself after a migration, and QEMU's RARP needs a protocol feature we lack.
      drop(F.VIRTIO_NET_F_CTRL_VQ, F.VIRTIO_NET_F_CTRL_RX, F.VIRTIO_NET_F_CTRL_MAC_ADDR, F.VIRTIO_NET_F_CTRL_GUEST_OFFLOADS);
    }
    // 2.2.2: "The device MUST NOT offer a feature which requires another feature which was
    // not offered": what the options' mask or the tap left without its requirement goes too
    // (a frontend that keeps the control queue provides CTRL_VQ itself).
    return resolveRequirements(features, this.#frontendControl ? featureBit(F.VIRTIO_NET_F_CTRL_VQ) : 0n).usable;
  }

  /**
   * FEATURES_OK: refuse what was not offered; refuse a broken requirement
   * (5.1.3.1) from a driver, or leave the features that need it off when a
   * frontend negotiated the set; then fix the tap's header and offloads.
   */
  #acceptFeatures(): boolean {
    const features = this.#driverFeatures;
    const extra = features & ~this.offeredFeatures;
    if (extra) {
      this.emit('protocol-error', `the driver accepted features that were not offered: 0x${extra.toString(16)}`);
      return false;
    }
    // A frontend that keeps the control queue provides what needs CTRL_VQ itself.
    const provided = this.#frontendControl ? featureBit(F.VIRTIO_NET_F_CTRL_VQ) : 0n;
    const { usable, unmet } = resolveRequirements(features, provided);
    if (unmet.length > 0 && this.#negotiatedBy === 'driver') {
      this.emit('protocol-error', `the driver broke a feature requirement (virtio 5.1.3.1): ${describeRequirement(unmet[0]!)}`);
      return false;
    }
    try {
      this.tap.setVnetHdrSize(netHdrSize(usable));
      this.#guestOffloads = usable & GUEST_OFFLOAD_FEATURES;
      this.tap.setOffload(tapOffloadsForGuest(this.#guestOffloads));
    } catch (error) {
      this.emit('protocol-error', `the tap refused the negotiated header or offloads: ${(error as Error).message}`);
      return false;
    }
    this.#activeFeatures = usable;
    if (unmet.length > 0) this.emit('features-inactive', { features: features & ~usable, reasons: unmet.map(describeRequirement) });
    return true;
  }

  #driverOk(): void {
    try {
      this.#startQueues();
    } catch (error) {
      this.#needsReset({ pair: 0, queue: 'rx', code: 'queue-start-failed', message: `cannot start the device: ${(error as Error).message}` });
    }
  }

  /** What DRIVER_OK starts: the control queue, then the pairs in use. On failure nothing is left running. */
  #startQueues(): void {
    if (hasFeature(this.#activeFeatures, F.VIRTIO_NET_F_CTRL_VQ)) this.#startControl();
    // 5.1.6.5.5: until the driver sets more, one pair is in use.
    const wanted = this.#active;
    this.#active = 1;
    const multiqueue = this.#frontendControl || this.#multiqueueNegotiated();
    try {
      this.setActiveQueuePairs(Math.min(wanted, multiqueue ? this.maxQueuePairs : 1));
    } catch (error) {
      this.#active = wanted;
      void this.#stopControl();
      throw error;
    }
  }

  /**
   * vhost-user.rst "Ring states": a started but disabled ring "must process and
   * discard any TX packets". Each pair from `active` up whose tx ring is live (set
   * up and enabled: for a vhost-user frontend, started) gets a worker that does only
   * that; a guest whose skbs sit on such a ring would otherwise wait for them for
   * ever (a TCP socket stalls on its small-queue limit). Never throws: a pair that
   * cannot get one is reported and left as it is.
   */
  #discardTxOfPairsOutOfUse(active: number): void {
    for (let pair = active; pair < this.maxQueuePairs; pair++) {
      const tx = this.#queues[2 * pair + 1]!;
      const live = tx.enabled && tx.kickFd !== undefined && tx.descAddr !== undefined && tx.availAddr !== undefined && tx.usedAddr !== undefined;
      if (this.#workers[pair] || !live || !this.#memory) continue;
      try {
        this.#startPair(pair, { txDiscardOnly: true });
      } catch (error) {
        this.emit('queue-error', {
          pair, queue: 'tx', code: 'queue-start-failed',
          message: `cannot discard the tx chains of queue pair ${pair}, which is out of use: ${(error as Error).message}`,
        });
      }
    }
  }

  #startPair(pair: number, mode: { txDiscardOnly?: boolean } = {}): void {
    const txDiscardOnly = mode.txDiscardOnly ?? false;
    if (!this.#memory) throw makeError('EINVAL', 'no guest memory: call setMemory() first');
    const rx = this.#queues[2 * pair]!;
    const tx = this.#queues[2 * pair + 1]!;
    const ring = (q: VirtqueueState, which: string): VirtqueueConfig => {
      if (q.descAddr === undefined || q.availAddr === undefined || q.usedAddr === undefined || q.kickFd === undefined) {
        throw makeError('EINVAL', `${which} of queue pair ${pair} is not set up (addresses and kick fd)`);
      }
      if (!q.enabled) throw makeError('EINVAL', `${which} of queue pair ${pair} is not enabled`);
      const features = this.#activeFeatures;
      return {
        size: q.size, descAddr: q.descAddr, availAddr: q.availAddr, usedAddr: q.usedAddr, kickFd: q.kickFd,
        ...(q.callFd !== undefined ? { callFd: q.callFd } : {}),
        packed: this.#ringPacked(),
        eventIdx: hasFeature(features, F.VIRTIO_RING_F_EVENT_IDX),
        indirectDesc: hasFeature(features, F.VIRTIO_RING_F_INDIRECT_DESC),
        lastAvailIdx: this.#baseOf(q),
        ...(q.usedLogAddr !== undefined ? { usedLogAddr: q.usedLogAddr } : {}),
        ...(q.positionRecord ? { positionRecord: q.positionRecord } : {}),
      };
    };
    const worker = new QueuePair({
      dirtyLog: this.#dirtyLog,
      memory: this.#memory,
      ...(txDiscardOnly ? { txDiscardOnly } : { tapQueue: this.tap.queues[pair]!, rx: ring(rx, 'the receive queue') }),
      hdrSize: netHdrSize(this.#activeFeatures),
      mergeableRx: hasFeature(this.#activeFeatures, F.VIRTIO_NET_F_MRG_RXBUF),
      ...(this.#mtu ? { rxReserveBytes: this.#mtu + 18 + netHdrSize(this.#activeFeatures) } : {}),
      // Without guest segmentation offloads the tap's frames are at most its MTU plus Ethernet and VLAN headers.
      rxMaxFrameBytes: this.#guestOffloads & GSO_GUEST_OFFLOADS ? 0 : netHdrSize(this.#activeFeatures) + 18 + this.tap.mtu(),
      busyPollUs: this.#busyPollUs,
      tx: ring(tx, 'the transmit queue'),
    });
    worker.on('queue-error', ({ queue, code, message }) => this.#needsReset({ pair, queue, code, message }));
    worker.start();
    this.#workers[pair] = worker;
  }

  #stopPair(pair: number, discardTx = false, drainRx = false): void {
    const worker = this.#workers[pair];
    if (!worker) return;
    const { rxLastAvailIdx, txLastAvailIdx } = worker.stop({ discardTx, drainRx: drainRx && !worker.txDiscardOnly });
    if (!worker.txDiscardOnly) this.#queues[2 * pair]!.lastAvailIdx = rxLastAvailIdx; // a discarding worker has no rx ring
    this.#queues[2 * pair + 1]!.lastAvailIdx = txLastAvailIdx;
    this.#workers[pair] = undefined;
  }

  /** Restarts a running pair from where it is, in the same mode (a new call fd, log address or offloads). */
  #restartPair(pair: number): void {
    const worker = this.#workers[pair];
    if (!worker) return;
    this.#stopPair(pair);
    this.#startPair(pair, { txDiscardOnly: worker.txDiscardOnly });
  }

  #detachQuietly(pair: number): void {
    const queue = this.tap.queues[pair]!;
    if (!queue.attached) return;
    try {
      queue.detach();
    } catch (error) {
      this.emit('queue-error', { pair, queue: 'tap', code: 'tap-detach-failed', message: `could not detach tap queue ${pair}: ${(error as Error).message}` });
    }
  }

  /** 5.1.2: N = max_virtqueue_pairs once MQ or RSS is negotiated, else 1. */
  #multiqueueNegotiated(): boolean {
    return hasFeature(this.#activeFeatures, F.VIRTIO_NET_F_MQ) || hasFeature(this.#activeFeatures, F.VIRTIO_NET_F_RSS);
  }

  /** 5.1.2: the control queue follows the last pair: virtqueue 2N with MQ or RSS (N = max pairs), virtqueue 2 without. */
  #controlIndex(): number {
    return 2 * (this.#multiqueueNegotiated() ? this.maxQueuePairs : 1);
  }

  #startControl(): void {
    const index = this.#controlIndex();
    const q = this.#queues[index]!;
    if (!this.#memory) throw makeError('EINVAL', 'no guest memory: call setMemory() first');
    if (q.descAddr === undefined || q.availAddr === undefined || q.usedAddr === undefined || q.kickFd === undefined) {
      throw makeError('EINVAL', 'the control queue is not set up (addresses and kick fd)');
    }
    const handler: ControlCommandHandler = {
      setRxMode: (mode, on) => {
        this.#rxMode[mode] = on;
        return true;
      },
      setMacTable: (unicast, multicast) => {
        this.#macTable = { unicast, multicast };
        return true;
      },
      setMac: (mac) => {
        if (mac[0]! & 1) return false;
        this.#config.mac = mac;
        return true;
      },
      announceAck: () => {
        if (this.#config.setStatus(this.#config.status & ~VIRTIO_NET_S_ANNOUNCE)) this.emit('config-change');
        return true;
      },
      setQueuePairs: (pairs) => {
        if (pairs < 1 || pairs > this.maxQueuePairs) return false; // the guest's mistake: ERR, nothing to report
        // 5.1.6.5.5: with both multiqueue modes negotiated, the last command decides:
        // VQ_PAIRS_SET puts automatic steering back in place of the guest's RSS table.
        return this.#switchSteering(undefined, pairs);
      },
      setRss: (config) => {
        if (rssConfigError(config, this.maxQueuePairs) !== undefined) return false; // the guest's mistake: ERR, nothing changes
        return this.#switchSteering(config, rssQueuePairs(config));
      },
      setGuestOffloads: (offloads) => this.#setGuestOffloads(offloads),
    };
    const features = this.#activeFeatures;
    this.#control = new ControlQueue(this.#memory, {
      size: q.size, descAddr: q.descAddr, availAddr: q.availAddr, usedAddr: q.usedAddr, kickFd: q.kickFd,
      ...(q.callFd !== undefined ? { callFd: q.callFd } : {}),
      packed: this.#ringPacked(),
      eventIdx: hasFeature(features, F.VIRTIO_RING_F_EVENT_IDX),
      indirectDesc: hasFeature(features, F.VIRTIO_RING_F_INDIRECT_DESC),
      lastAvailIdx: this.#baseOf(q),
      ...(q.usedLogAddr !== undefined ? { usedLogAddr: q.usedLogAddr } : {}),
      dirtyLog: this.#dirtyLog,
    }, features, handler, (message, code) => this.#needsReset({ pair: 'ctrl', queue: 'ctrl', code, message }));
    this.#control.start();
  }

  async #stopControl(): Promise<void> {
    const control = this.#control;
    this.#control = undefined;
    if (control) await control.stop();
  }

  /**
   * A multiqueue command from the guest: `rss` (or automatic steering, undefined)
   * over `pairs` queue pairs, through the one lossless path (setActiveQueuePairs).
   * If the pairs cannot be had, the previous configuration and pairs stay in force.
   */
  #switchSteering(rss: RssConfig | undefined, pairs: number): boolean {
    const previous = this.#rss;
    this.#rss = rss;
    try {
      this.setActiveQueuePairs(pairs, { discardTx: true });
      this.#steer(this.#active); // the same pairs as before: setActiveQueuePairs changed nothing, the table is new
      return true;
    } catch (error) {
      this.#rss = previous;
      this.emit('queue-error', { pair: 'ctrl', queue: 'ctrl', code: 'queue-switch-failed', message: (error as Error).message });
      return false;
    }
  }

  /** 5.1.6.5.6.1: only offloads that were negotiated, and the tap follows them. */
  #setGuestOffloads(offloads: bigint): boolean {
    const negotiated = this.#activeFeatures & GUEST_OFFLOAD_FEATURES;
    if (offloads & ~negotiated) return false;
    if (resolveRequirements(offloads).unmet.length > 0) return false; // e.g. TSO4 without CSUM
    // Workers size their reads by whether GSO frames may come: restart the running
    // ones around the change so none reads a frame it did not expect.
    const running = Array.from({ length: this.maxQueuePairs }, (_, pair) => pair).filter((pair) => this.isPairRunning(pair));
    for (const pair of running) this.#stopPair(pair);
    let ok = true;
    try {
      this.tap.setOffload(tapOffloadsForGuest(offloads));
      this.#guestOffloads = offloads;
    } catch {
      ok = false;
    }
    for (const pair of running) this.#startPair(pair);
    return ok;
  }

  #needsReset(error: DeviceQueueError): void {
    this.emit('queue-error', error);
    if (!(this.#status & STATUS_DEVICE_NEEDS_RESET)) {
      this.#status |= STATUS_DEVICE_NEEDS_RESET;
      this.emit('config-change');
    }
  }

  #stopAll(): void {
    for (let pair = 0; pair < this.maxQueuePairs; pair++) this.#stopPair(pair);
    void this.#stopControl();
  }

  /** The state at power-on and after reset: only tap queue 0 attached, nothing running, nothing negotiated. */
  #resetState(): void {
    this.#status = 0;
    this.#driverFeatures = 0n;
    this.#negotiatedBy = 'driver';
    this.#activeFeatures = 0n;
    this.#guestOffloads = 0n;
    this.#active = 1;
    this.#rss = undefined; // RSS is the driver's to set again
    this.#queues = Array.from({ length: this.numQueues }, () => ({ size: 256, enabled: true }));
    this.#workers = new Array<QueuePair | undefined>(this.maxQueuePairs).fill(undefined);
    this.#rxMode = { promisc: true, allmulti: true };
    this.#macTable = { unicast: [], multicast: [] };
    this.#config.mac = this.#defaultMac;
    this.#config.setStatus(this.#config.status & ~VIRTIO_NET_S_ANNOUNCE);
    const first = this.tap.queues[0]!;
    if (!first.attached) first.attach();
    for (let i = this.tap.queues.length - 1; i >= 1; i--) this.#detachQuietly(i); // top down: see setActiveQueuePairs
    this.#steer(1);
    try {
      this.tap.setOffload({});
    } catch {
      // a tap whose queues are all gone: nothing to reset
    }
  }

  /** For tests and diagnostics: the receive filters the driver asked for (the tap delivers all frames regardless). */
  get rxFilter(): { promisc: boolean; allmulti: boolean; unicast: string[]; multicast: string[] } {
    const hex = (b: Buffer): string => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
    return { ...this.#rxMode, unicast: this.#macTable.unicast.map(hex), multicast: this.#macTable.multicast.map(hex) };
  }

  /** For diagnostics: the status as names. */
  describeStatus(): string {
    return describeStatus(this.#status);
  }
}

function randomMac(): Buffer {
  const mac = randomBytes(6);
  mac[0] = (mac[0]! & 0xfe) | 0x02; // unicast, locally administered
  return mac;
}

function checkFd(fd: number): number {
  if (!Number.isInteger(fd) || fd < 0) throw makeError('EBADF', `${String(fd)} is not a file descriptor`);
  return fd;
}

/** Blocks this thread for `ms` (a fallback used only where the kernel has no RCU barrier for us). */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
