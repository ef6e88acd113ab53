// One vhost-user connection: the frontend's messages applied to a
// VirtioNetDevice. The frontend (QEMU) keeps the virtio device model and the
// control queue; it gives us guest memory, the rings and their eventfds, and
// says which rings are enabled. Every fd received is owned here and closed when
// replaced or when the connection ends.
import { errorCode, makeError } from '../errors';
import { native } from '../native';
import { STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK } from '../virtio/device-status';
import { featureBit } from '../virtio/features';
import { GuestMemory } from '../virtio/guest-memory';
import type { VirtioNetDevice } from '../virtio/net-device';
import {
  MAX_MEM_REGIONS, MAX_MEM_SLOTS, ProtocolFeature, Request, VHOST_USER_F_PROTOCOL_FEATURES, configAccess, encodeConfig,
  encodeU64, encodeVringState, memoryTable, requestName, singleRegion, u64, vringAddress, vringFdIndex, vringState,
  type MemoryRegionDescriptor,
} from './protocol';

export const SUPPORTED_PROTOCOL_FEATURES = [
  ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK, ProtocolFeature.CONFIG, ProtocolFeature.RESET_DEVICE,
  ProtocolFeature.CONFIGURE_MEM_SLOTS, ProtocolFeature.STATUS,
].reduce((mask, bit) => mask | (1n << BigInt(bit)), 0n);

export interface Message {
  request: number;
  flags: number;
  payload: Buffer;
  fds: number[];
}

/** What the connection sends back: a reply payload for requests that have one. */
export type Outcome = { reply?: Buffer };

export type Logger = (event: string, fields?: Record<string, unknown>) => void;

interface Ring {
  kickFd?: number;
  callFd?: number;
  errFd?: number;
  /** Kicked (SET_VRING_KICK) and not stopped since (GET_VRING_BASE). */
  started: boolean;
  enabled: boolean;
  configured: { num: boolean; addr: boolean };
}

interface Region extends MemoryRegionDescriptor {
  fd: number;
  /** ADD_MEM_REGs of this same region not yet removed (one per queue pair with QEMU). */
  refs: number;
}

/** The messages that carry this many fds (others carry none). */
function expectedFds(request: number, payload: Buffer): number | undefined {
  switch (request) {
    case Request.SET_MEM_TABLE:
      return payload.length >= 4 ? payload.readUInt32LE(0) : undefined;
    case Request.ADD_MEM_REG:
      return 1;
    case Request.REM_MEM_REG:
      return undefined; // some frontends send the fd again: accept 0 or 1
    case Request.SET_VRING_KICK:
    case Request.SET_VRING_CALL:
    case Request.SET_VRING_ERR:
      return payload.length === 8 && (payload.readBigUInt64LE(0) & 0x100n) === 0n ? 1 : 0;
    default:
      return 0;
  }
}

export class VhostUserSession {
  #features = 0n;
  #protocolFeatures = 0n;
  #featuresSet = false;
  #rings: Ring[];
  #regions: Region[] = [];
  #memory: GuestMemory | undefined;
  #frontendStatus = 0;
  #closed = false;

  constructor(private readonly device: VirtioNetDevice, private readonly log: Logger) {
    this.#rings = Array.from({ length: 2 * device.maxQueuePairs }, () => newRing());
  }

  /** Whether the frontend asked for a reply-ack on this message. */
  wantsAck(flags: number): boolean {
    return (this.#protocolFeatures & (1n << BigInt(ProtocolFeature.REPLY_ACK))) !== 0n && (flags & (1 << 3)) !== 0;
  }

  /**
   * Applies one message. Throws an Error with a code when it cannot: EPROTO for
   * a malformed message (the connection should end), others for a request that
   * was understood but refused. Fds of a refused message are closed here.
   */
  handle(message: Message): Outcome {
    const { request, payload, fds } = message;
    const expected = expectedFds(request, payload);
    const fdCountOk = expected === undefined ? fds.length <= 1 : fds.length === expected;
    if (!fdCountOk) {
      closeFds(fds);
      throw makeError('EPROTO', `${requestName(request)} came with ${fds.length} fds, expected ${String(expected)}`);
    }
    try {
      return this.#dispatch(request, payload, fds);
    } catch (error) {
      closeFds(fds.filter((fd) => !this.#owns(fd)));
      throw error;
    }
  }

  #dispatch(request: number, payload: Buffer, fds: number[]): Outcome {
    const none = (): void => {
      if (payload.length !== 0 && request !== Request.RESET_OWNER) {
        throw makeError('EPROTO', `${requestName(request)} takes no payload, got ${payload.length} bytes`);
      }
    };
    switch (request) {
      case Request.GET_FEATURES:
        none();
        return { reply: encodeU64(this.#offeredFeatures()) };
      case Request.SET_FEATURES:
        this.#setFeatures(u64(payload, request));
        return {};
      case Request.GET_PROTOCOL_FEATURES:
        none();
        return { reply: encodeU64(SUPPORTED_PROTOCOL_FEATURES) };
      case Request.SET_PROTOCOL_FEATURES: {
        const wanted = u64(payload, request);
        if (wanted & ~SUPPORTED_PROTOCOL_FEATURES) throw makeError('EINVAL', `protocol features 0x${(wanted & ~SUPPORTED_PROTOCOL_FEATURES).toString(16)} were not offered`);
        this.#protocolFeatures = wanted;
        return {};
      }
      case Request.SET_OWNER:
        none();
        return {};
      case Request.RESET_OWNER:
      case Request.RESET_DEVICE:
        this.#reset();
        return {};
      case Request.GET_QUEUE_NUM:
        none();
        return { reply: encodeU64(this.device.maxQueuePairs) };
      case Request.GET_MAX_MEM_SLOTS:
        none();
        return { reply: encodeU64(MAX_MEM_SLOTS) };
      case Request.SET_MEM_TABLE: {
        const regions = memoryTable(payload, request);
        this.#replaceMemory(regions.map((r, i) => ({ ...r, fd: fds[i]!, refs: 1 })), true);
        return {};
      }
      case Request.ADD_MEM_REG: {
        const region = singleRegion(payload, request);
        const existing = this.#regions.find((r) => sameRegion(r, region));
        if (existing) {
          // QEMU adds (and later removes) each region once per queue pair: count, map once.
          existing.refs++;
          closeFds(fds);
          return {};
        }
        if (this.#regions.length >= MAX_MEM_SLOTS) throw makeError('ENOSPC', `all ${MAX_MEM_SLOTS} memory slots are in use`);
        this.#replaceMemory([...this.#regions, { ...region, fd: fds[0]!, refs: 1 }], false);
        return {};
      }
      case Request.REM_MEM_REG: {
        const region = singleRegion(payload, request);
        const target = this.#regions.find((r) => r.guestPhysAddr === region.guestPhysAddr && r.size === region.size && r.userAddr === region.userAddr);
        if (!target) throw makeError('ENOENT', 'REM_MEM_REG names no region in use');
        if (--target.refs > 0) {
          closeFds(fds); // still added by another queue pair
          return {};
        }
        const keep = this.#regions.filter((r) => r !== target);
        const removed = this.#regions.filter((r) => !keep.includes(r));
        this.#replaceMemory(keep, false);
        closeFds(removed.map((r) => r.fd));
        closeFds(fds); // a frontend may send the region's fd again
        return {};
      }
      case Request.SET_VRING_NUM: {
        const { index, num } = vringState(payload, request);
        this.device.setQueueSize(this.#ringIndex(index), num);
        this.#rings[index]!.configured.num = true;
        return {};
      }
      case Request.SET_VRING_ADDR: {
        const a = vringAddress(payload, request);
        const index = this.#ringIndex(a.index);
        this.device.setQueueAddresses(index, { descAddr: this.#toGuest(a.desc, 'descriptor table'), availAddr: this.#toGuest(a.avail, 'available ring'), usedAddr: this.#toGuest(a.used, 'used ring') });
        this.#rings[index]!.configured.addr = true;
        return {};
      }
      case Request.SET_VRING_BASE: {
        const { index, num } = vringState(payload, request);
        if (num > 0xffff) throw makeError('EINVAL', `ring base ${num} is not a 16-bit index (packed rings are not supported)`);
        this.device.setQueueBase(this.#ringIndex(index), num);
        return {};
      }
      case Request.GET_VRING_BASE: {
        const { index } = vringState(payload, request);
        const base = this.device.getQueueBase(this.#ringIndex(index));
        this.#rings[index]!.started = false;
        this.#reconcile();
        return { reply: encodeVringState({ index, num: base }) };
      }
      case Request.SET_VRING_KICK: {
        const { index, noFd } = vringFdIndex(payload, request);
        const ring = this.#rings[this.#ringIndex(index)]!;
        if (noFd) throw makeError('EOPNOTSUPP', 'polling rings (no kick fd) are not supported: give the ring a kick eventfd');
        if (this.device.isPairRunning(index >> 1)) this.device.getQueueBase(index); // the frontend restarts a running ring
        replaceFd(ring, 'kickFd', fds[0]);
        this.device.setQueueKick(index, fds[0]!);
        ring.started = true;
        if (!this.#hasProtocolFeatures()) ring.enabled = true; // without them a ring starts enabled
        this.#reconcile();
        return {};
      }
      case Request.SET_VRING_CALL: {
        const { index, noFd } = vringFdIndex(payload, request);
        const ring = this.#rings[this.#ringIndex(index)]!;
        // The worker writes to the old fd until setQueueCall has restarted it: close it after.
        const fd = noFd ? undefined : fds[0];
        this.device.setQueueCall(index, fd);
        replaceFd(ring, 'callFd', fd);
        return {};
      }
      case Request.SET_VRING_ERR: {
        const { index, noFd } = vringFdIndex(payload, request);
        replaceFd(this.#rings[this.#ringIndex(index)]!, 'errFd', noFd ? undefined : fds[0]);
        return {};
      }
      case Request.SET_VRING_ENABLE: {
        const { index, num } = vringState(payload, request);
        if (num > 1) throw makeError('EPROTO', `SET_VRING_ENABLE with ${num} (0 or 1)`);
        const ring = this.#rings[this.#ringIndex(index)]!;
        ring.enabled = num === 1;
        this.device.enableQueue(index, ring.enabled);
        this.#reconcile();
        return {};
      }
      case Request.GET_CONFIG: {
        const access = configAccess(payload, request);
        return { reply: encodeConfig(access, this.device.readConfig(access.offset, access.size)) };
      }
      case Request.SET_CONFIG: {
        const access = configAccess(payload, request);
        this.device.writeConfig(access.offset, access.data);
        return {};
      }
      case Request.SET_STATUS: {
        const status = Number(u64(payload, request) & 0xffn);
        this.#frontendStatus = status;
        // QEMU sends 0 when it stops the VM, before it asks for the last pair's ring
        // bases: stop the rings, but keep where they are.
        if (status === 0) {
          this.device.stopQueues();
          for (const ring of this.#rings) ring.started = false;
        }
        return {};
      }
      case Request.GET_STATUS:
        none();
        return { reply: encodeU64(this.#frontendStatus) };
      default:
        throw makeError('EPROTO', `${requestName(request)} is not supported by this backend`);
    }
  }

  /** Ends the session: every worker stopped, the tap back to one queue, every fd closed, memory unmapped. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.device.reset();
    } catch (error) {
      this.log('reset-failed', { error: (error as Error).message });
    }
    for (const ring of this.#rings) closeFds([ring.kickFd, ring.callFd, ring.errFd]);
    this.#rings = [];
    closeFds(this.#regions.map((r) => r.fd));
    this.#regions = [];
    this.#memory?.close();
    this.#memory = undefined;
  }

  /** For logs and tests. */
  describe(): { features: string; protocolFeatures: string; regions: number; rings: { started: boolean; enabled: boolean }[] } {
    return {
      features: `0x${this.#features.toString(16)}`,
      protocolFeatures: `0x${this.#protocolFeatures.toString(16)}`,
      regions: this.#regions.length,
      rings: this.#rings.map((r) => ({ started: r.started, enabled: r.enabled })),
    };
  }

  #offeredFeatures(): bigint {
    return this.device.offeredFeatures | featureBit(VHOST_USER_F_PROTOCOL_FEATURES);
  }

  #hasProtocolFeatures(): boolean {
    return (this.#features & featureBit(VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n;
  }

  #ringIndex(index: number): number {
    if (!Number.isInteger(index) || index < 0 || index >= this.#rings.length) {
      throw makeError('EINVAL', `ring ${index} does not exist (this backend has ${this.#rings.length}: ${this.device.maxQueuePairs} queue pairs)`);
    }
    return index;
  }

  #owns(fd: number): boolean {
    return this.#regions.some((r) => r.fd === fd) || this.#rings.some((r) => r.kickFd === fd || r.callFd === fd || r.errFd === fd);
  }

  /**
   * SET_FEATURES: negotiate as a driver would through the status register. A
   * frontend with several queue pairs sends it once per pair: the same features
   * again change nothing.
   *
   * The frontend negotiated these with the guest on its own device model, and
   * QEMU passes on what the guest acked as it is (csum=off leaves HOST_TSO4
   * without CSUM): any subset of the offer is taken, and features whose
   * requirements are missing stay off in the data path (the device reports them
   * with 'features-inactive'), as QEMU's own tap backend enables no offload
   * whose base is missing. Refusing would leave the guest without a network.
   */
  #setFeatures(features: bigint): void {
    const virtio = features & ~featureBit(VHOST_USER_F_PROTOCOL_FEATURES);
    if (virtio & ~this.device.offeredFeatures) {
      throw makeError('EINVAL', `features 0x${(virtio & ~this.device.offeredFeatures).toString(16)} were not offered`);
    }
    if (this.#featuresSet && virtio === (this.#features & ~featureBit(VHOST_USER_F_PROTOCOL_FEATURES))) {
      this.#features = features;
      return;
    }
    if (this.#featuresSet) {
      // New features: negotiation starts over, and the device forgets its rings; the frontend sends them again.
      this.device.reset();
      this.#rings.forEach((r) => Object.assign(r, { started: false, configured: { num: false, addr: false } }));
    }
    this.device.writeStatus(STATUS_ACKNOWLEDGE);
    this.device.writeStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    this.device.setDriverFeatures(virtio, { negotiatedBy: 'frontend' });
    this.device.writeStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    if (!(this.device.status & STATUS_FEATURES_OK)) throw makeError('EINVAL', `the device refused features 0x${virtio.toString(16)}`);
    if (this.#memory) this.device.setMemory(this.#memory);
    this.#features = features;
    this.#featuresSet = true;
    this.log('features', { features: `0x${virtio.toString(16)}`, protocolFeatures: this.#hasProtocolFeatures() });
  }

  /** Maps a new region set (all fds kept open for the next change), then swaps it in under stopped queues. */
  #replaceMemory(regions: Region[], closeOld: boolean): void {
    const same = (a: MemoryRegionDescriptor, b: MemoryRegionDescriptor): boolean =>
      a.guestPhysAddr === b.guestPhysAddr && a.size === b.size && a.userAddr === b.userAddr && a.mmapOffset === b.mmapOffset;
    if (closeOld && this.#memory && regions.length === this.#regions.length && regions.every((r, i) => same(r, this.#regions[i]!))) {
      // A frontend with several queue pairs sends the same table once per pair: keep the mapping.
      closeFds(regions.map((r) => r.fd));
      return;
    }
    if (regions.length > (closeOld ? MAX_MEM_REGIONS : MAX_MEM_SLOTS)) throw makeError('E2BIG', `${regions.length} memory regions is too many`);
    let memory: GuestMemory;
    try {
      memory = GuestMemory.fromRegions(regions.map((r) => {
        if (r.size > BigInt(Number.MAX_SAFE_INTEGER) || r.guestPhysAddr > BigInt(Number.MAX_SAFE_INTEGER) || r.mmapOffset > BigInt(Number.MAX_SAFE_INTEGER)) {
          throw makeError('EINVAL', 'a memory region lies beyond 2^53');
        }
        return { guestPhysAddr: Number(r.guestPhysAddr), size: Number(r.size), fd: r.fd, offset: Number(r.mmapOffset) };
      }));
    } catch (error) {
      throw makeError(errorCode(error) ?? 'EINVAL', `cannot map the guest memory: ${(error as Error).message}`, error);
    }
    const running = Array.from({ length: this.device.maxQueuePairs }, (_, i) => this.device.isPairRunning(i)).some(Boolean);
    if (running) this.device.stopQueues();
    const old = this.#regions;
    this.#memory?.close();
    this.#memory = memory;
    this.#regions = regions;
    if (this.#featuresSet) this.device.setMemory(memory);
    if (closeOld) closeFds(old.map((r) => r.fd).filter((fd) => !regions.some((r) => r.fd === fd)));
    this.log('memory', { regions: regions.length, bytes: regions.reduce((sum, r) => sum + Number(r.size), 0) });
    if (running) this.#reconcile();
  }

  /** Translates a frontend virtual address (ring addresses in SET_VRING_ADDR) to guest-physical. */
  #toGuest(address: bigint, what: string): number {
    for (const r of this.#regions) {
      if (address >= r.userAddr && address < r.userAddr + r.size) return Number(r.guestPhysAddr + (address - r.userAddr));
    }
    throw makeError('EFAULT', `the ${what} at frontend address 0x${address.toString(16)} is in no memory region (send SET_MEM_TABLE first)`);
  }

  /**
   * The pairs in use are the leading pairs whose two rings are started and
   * enabled: the same setActiveQueuePairs path as the control queue's.
   */
  #reconcile(): void {
    if (!this.#featuresSet || !this.#memory) return;
    const ready = (i: number): boolean => {
      const r = this.#rings[i]!;
      return r.started && r.enabled && r.configured.addr;
    };
    let pairs = 0;
    while (pairs < this.device.maxQueuePairs && ready(2 * pairs) && ready(2 * pairs + 1)) pairs++;
    const before = this.device.activeQueuePairs;
    if (pairs === 0) {
      this.device.stopQueues();
      return;
    }
    if (!(this.device.status & STATUS_DRIVER_OK)) {
      this.device.setActiveQueuePairs(pairs);
      this.device.writeStatus(this.device.status | STATUS_DRIVER_OK);
    } else {
      this.device.setActiveQueuePairs(pairs);
    }
    if (pairs !== before) this.log('queue-pairs', { active: pairs, previous: before });
  }

  #reset(): void {
    this.device.reset();
    this.#featuresSet = false;
    this.#features = 0n;
    for (const ring of this.#rings) {
      closeFds([ring.kickFd, ring.callFd, ring.errFd]);
      Object.assign(ring, newRing());
    }
    this.log('reset');
  }
}

function sameRegion(a: MemoryRegionDescriptor, b: MemoryRegionDescriptor): boolean {
  return a.guestPhysAddr === b.guestPhysAddr && a.size === b.size && a.userAddr === b.userAddr && a.mmapOffset === b.mmapOffset;
}

function newRing(): Ring {
  return { started: false, enabled: false, configured: { num: false, addr: false } };
}

function replaceFd(ring: Ring, key: 'kickFd' | 'callFd' | 'errFd', fd: number | undefined): void {
  const old = ring[key];
  if (old !== undefined && old !== fd) closeFds([old]);
  if (fd === undefined) delete ring[key];
  else ring[key] = fd;
}

function closeFds(fds: readonly (number | undefined)[]): void {
  for (const fd of fds) {
    if (fd === undefined || fd < 0) continue;
    try {
      native.closeFd(fd);
    } catch {
      // already closed
    }
  }
}
