// One vhost-user connection: the frontend's messages applied to a
// VirtioNetDevice. The frontend (QEMU) keeps the virtio device model and the
// control queue; it gives us guest memory, the rings and their eventfds, and
// says which rings are enabled. Every fd received is owned here and closed when
// replaced or when the connection ends.
//
// A request takes effect whole or not at all: what it changes in the rings or
// the memory map is applied to the device as one step (#transaction), and if
// the device cannot follow (a ring's worker does not start), everything is put
// back as it was and the request fails. Fds and mappings are let go of only
// once nothing refers to them any more.
import fs from 'node:fs';

import { errorCode, makeError } from '../errors';
import { native } from '../native';
import { STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK } from '../virtio/device-status';
import { VIRTIO_F_RING_PACKED, featureBit, hasFeature } from '../virtio/features';
import { GuestMemory } from '../virtio/guest-memory';
import type { VirtioNetDevice } from '../virtio/net-device';
import { MigrationLog } from './migration';
import type { RingPositions } from './ring-positions';
import {
  FLAG_NEED_REPLY, MAX_MEM_SLOTS, PAYLOAD, ProtocolFeature, Request, VHOST_F_LOG_ALL, VHOST_USER_F_PROTOCOL_FEATURES, VHOST_VRING_F_LOG, encodeConfig,
  encodeU64, encodeVringState, requestName, type LogDescription, type MemoryRegionDescriptor, type VringAddress, type VringFdIndex,
  type VringState,
} from './protocol';
import { admit, lineFor, type Outcome, type ReplyRule, type RequestTable } from './requests';

export const SUPPORTED_PROTOCOL_FEATURES = [
  ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK, ProtocolFeature.CONFIG, ProtocolFeature.RESET_DEVICE,
  ProtocolFeature.CONFIGURE_MEM_SLOTS, ProtocolFeature.STATUS, ProtocolFeature.LOG_SHMFD, ProtocolFeature.RARP,
].reduce((mask, bit) => mask | (1n << BigInt(bit)), 0n);

export interface Message {
  request: number;
  flags: number;
  payload: Buffer;
  fds: number[];
}

export type { Outcome } from './requests';

export type Logger = (event: string, fields?: Record<string, unknown>) => void;

/** A ring's addresses as SET_VRING_ADDR gives them: the frontend's virtual addresses. */
interface RingAddresses {
  desc: bigint;
  avail: bigint;
  used: bigint;
}

interface Ring {
  kickFd?: number | undefined;
  callFd?: number | undefined;
  errFd?: number | undefined;
  /** Kicked (SET_VRING_KICK) and not stopped since (GET_VRING_BASE). */
  started: boolean;
  enabled: boolean;
  configured: { num: boolean; addr: boolean };
  /**
   * Kept, and translated to guest-physical again after every change of the
   * memory map, as libvhost-user and DPDK do: a ring whose addresses are in no
   * region waits, stopped, until a later change maps them again.
   */
  addresses?: RingAddresses;
  /** SET_VRING_NUM's size. */
  size?: number;
  /** SET_VRING_BASE's base, and whether the ring has not started from it yet (a packed ring may resume elsewhere: RingPositions). */
  givenBase?: number;
  baseFromFrontend?: boolean;
}

interface Region extends MemoryRegionDescriptor {
  fd: number;
  /** ADD_MEM_REGs of this same region not yet removed (one per queue pair with QEMU). */
  refs: number;
}

/** What a transaction may change, to put it back. */
interface SessionState {
  rings: Ring[];
  regions: Region[];
  memory: GuestMemory | undefined;
}

/** F_SEAL_SHRINK (linux/fcntl.h): the file cannot be made smaller. */
const F_SEAL_SHRINK = 0x0002;

/** A line of the session's request table. */
const line = lineFor<VhostUserSession>();

/** SET_VRING_KICK/CALL/ERR carry one fd, unless bit 8 of their payload says none comes. */
function oneUnlessNoFd(ring: VringFdIndex): number {
  return ring.noFd ? 0 : 1;
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
  readonly #migration: MigrationLog;
  /** A SET_VRING_ENABLE 0 is being applied: pairs it takes out of use discard their tx chains. */
  #disabling = false;

  /**
   * ringPositions: where packed rings' positions are kept across daemon restarts
   * (see RingPositions); without it a packed ring resumes from the frontend's base.
   */
  constructor(private readonly device: VirtioNetDevice, private readonly log: Logger, private readonly ringPositions?: RingPositions) {
    this.#rings = Array.from({ length: 2 * device.maxQueuePairs }, () => newRing());
    this.#migration = new MigrationLog(device);
  }

  /** Whether the frontend asked for a reply-ack on this message. */
  wantsAck(flags: number): boolean {
    return (this.#protocolFeatures & (1n << BigInt(ProtocolFeature.REPLY_ACK))) !== 0n && (flags & FLAG_NEED_REPLY) !== 0;
  }

  /**
   * Applies one message. Throws an Error with a code when it cannot: EPROTO for
   * a malformed message (the connection should end), others for a request that
   * was understood but refused, which then changed nothing. Every fd that came
   * with the message is, once this returns or throws, held by a ring or a
   * region, or closed.
   */
  handle(message: Message): Outcome {
    const { request, payload, fds } = message;
    try {
      const { line, value } = admit(VhostUserSession.#requests, request, payload, fds, this.#protocolFeatures);
      return (line.handle(this, value, fds) as Outcome | undefined) ?? {};
    } finally {
      closeFds(fds.filter((fd) => !this.#holds(fd)));
    }
  }

  /** How the request is answered; undefined for a request this backend does not serve. */
  static replyRule(request: number): ReplyRule | undefined {
    const line = VhostUserSession.#requests[request];
    return line ? line.reply ?? 'on-need-reply' : undefined;
  }

  /**
   * Each request this backend serves, one line each (QEMU docs/interop/vhost-user.rst,
   * "Front-end message types"): its payload, its fds, how it is answered, the
   * protocol feature it needs, and its handler. admit() checks a message against its
   * line before the handler runs; a request with no line is refused (EPROTO). The
   * spec ties GET_CONFIG, ADD_MEM_REG, SET_STATUS and others to protocol features
   * too, but they mean the same without them and are served either way, as DPDK
   * and libvhost-user serve them; only SET_LOG_BASE's payload and fd mean something
   * else without LOG_SHMFD.
   */
  static readonly #requests: RequestTable<VhostUserSession> = {
    [Request.GET_FEATURES]: line({ payload: PAYLOAD.none, reply: 'always', handle: (s) => ({ reply: encodeU64(s.#offeredFeatures()) }) }),
    [Request.SET_FEATURES]: line({ payload: PAYLOAD.u64, handle: (s, features) => s.#setFeatures(features) }),
    [Request.SET_OWNER]: line({ payload: PAYLOAD.none, handle: () => {} }),
    // Deprecated (vhost-user.rst: "ignore this message, or use it to disable all rings");
    // frontends have sent it with a payload, which nothing reads.
    [Request.RESET_OWNER]: line({ payload: PAYLOAD.ignored, handle: (s) => s.#reset() }),
    [Request.SET_MEM_TABLE]: line({ payload: PAYLOAD.memoryTable, fds: { count: (table) => table.length, kind: 'memory' }, handle: (s, table, fds) => s.#setMemTable(table, fds) }),
    // Live migration (LOG_SHMFD): the log region; QEMU waits for a reply with no payload.
    [Request.SET_LOG_BASE]: line({
      payload: PAYLOAD.logDescription, fds: { count: 1, kind: 'memory' }, reply: 'always', needs: ProtocolFeature.LOG_SHMFD,
      handle: (s, log, fds) => s.#setLogBase(log, fds[0]!),
    }),
    // An eventfd to signal after updating the log: vhost-tap updates it in place as it writes
    // and never signals, so handle() closes it like any fd nothing holds.
    [Request.SET_LOG_FD]: line({ payload: PAYLOAD.ignored, fds: { count: 1, kind: 'eventfd' }, handle: () => {} }),
    [Request.SET_VRING_NUM]: line({ payload: PAYLOAD.vringState, handle: (s, state) => s.#setVringNum(state) }),
    [Request.SET_VRING_ADDR]: line({ payload: PAYLOAD.vringAddress, handle: (s, address) => s.#setVringAddr(address) }),
    [Request.SET_VRING_BASE]: line({ payload: PAYLOAD.vringState, handle: (s, state) => s.#setVringBase(state) }),
    [Request.GET_VRING_BASE]: line({ payload: PAYLOAD.vringState, reply: 'always', handle: (s, state) => s.#getVringBase(state) }),
    [Request.SET_VRING_KICK]: line({ payload: PAYLOAD.vringFdIndex, fds: { count: oneUnlessNoFd, kind: 'eventfd' }, handle: (s, ring, fds) => s.#setVringKick(ring, fds) }),
    [Request.SET_VRING_CALL]: line({ payload: PAYLOAD.vringFdIndex, fds: { count: oneUnlessNoFd, kind: 'eventfd' }, handle: (s, ring, fds) => s.#setVringCall(ring, fds) }),
    [Request.SET_VRING_ERR]: line({ payload: PAYLOAD.vringFdIndex, fds: { count: oneUnlessNoFd, kind: 'eventfd' }, handle: (s, ring, fds) => s.#setVringErr(ring, fds) }),
    [Request.GET_PROTOCOL_FEATURES]: line({ payload: PAYLOAD.none, reply: 'always', handle: () => ({ reply: encodeU64(SUPPORTED_PROTOCOL_FEATURES) }) }),
    [Request.SET_PROTOCOL_FEATURES]: line({ payload: PAYLOAD.u64, handle: (s, features) => s.#setProtocolFeatures(features) }),
    [Request.GET_QUEUE_NUM]: line({ payload: PAYLOAD.none, reply: 'always', handle: (s) => ({ reply: encodeU64(s.device.maxQueuePairs) }) }),
    [Request.SET_VRING_ENABLE]: line({ payload: PAYLOAD.vringState, handle: (s, state) => s.#setVringEnable(state) }),
    [Request.SEND_RARP]: line({ payload: PAYLOAD.rarpMac, handle: (s, mac) => s.#sendRarp(mac) }),
    [Request.GET_CONFIG]: line({ payload: PAYLOAD.configAccess, reply: 'always', handle: (s, access) => ({ reply: encodeConfig(access, s.device.readConfig(access.offset, access.size)) }) }),
    [Request.SET_CONFIG]: line({ payload: PAYLOAD.configAccess, handle: (s, access) => s.device.writeConfig(access.offset, access.data) }),
    // "request payload: N/A"; as RESET_OWNER, whose successor it is, nothing reads one.
    [Request.RESET_DEVICE]: line({ payload: PAYLOAD.ignored, handle: (s) => s.#reset() }),
    [Request.GET_MAX_MEM_SLOTS]: line({ payload: PAYLOAD.none, reply: 'always', handle: () => ({ reply: encodeU64(MAX_MEM_SLOTS) }) }),
    [Request.ADD_MEM_REG]: line({ payload: PAYLOAD.singleRegion, fds: { count: 1, kind: 'memory' }, handle: (s, region, fds) => s.#addMemReg(region, fds[0]!) }),
    // "No file descriptors SHOULD be passed ... the back-end MAY accept messages with one
    // file descriptor ... MUST close it": handle() closes it, nothing holds it.
    [Request.REM_MEM_REG]: line({ payload: PAYLOAD.singleRegion, fds: { count: 'optional', kind: 'memory' }, handle: (s, region) => s.#remMemReg(region) }),
    [Request.SET_STATUS]: line({ payload: PAYLOAD.u64, handle: (s, status) => s.#setStatus(status) }),
    [Request.GET_STATUS]: line({ payload: PAYLOAD.none, reply: 'always', handle: (s) => ({ reply: encodeU64(s.#frontendStatus) }) }),
  };

  #setProtocolFeatures(wanted: bigint): void {
    if (wanted & ~SUPPORTED_PROTOCOL_FEATURES) throw makeError('EINVAL', `protocol features 0x${(wanted & ~SUPPORTED_PROTOCOL_FEATURES).toString(16)} were not offered`);
    this.#protocolFeatures = wanted;
  }

  #setMemTable(table: MemoryRegionDescriptor[], fds: readonly number[]): void {
    if (this.#memory && table.length === this.#regions.length && table.every((r, i) => sameRegion(r, this.#regions[i]!))) {
      return; // a frontend with several queue pairs sends the same table once per pair: keep the mapping
    }
    this.#changeMemory(table.map((r, i) => ({ ...r, fd: fds[i]!, refs: 1 })));
  }

  #addMemReg(region: MemoryRegionDescriptor, fd: number): void {
    const existing = this.#regions.find((r) => sameRegion(r, region));
    if (existing) {
      // QEMU adds (and later removes) each region once per queue pair: count, map once.
      existing.refs++;
      return;
    }
    if (this.#regions.length >= MAX_MEM_SLOTS) throw makeError('ENOSPC', `all ${MAX_MEM_SLOTS} memory slots are in use`);
    this.#changeMemory([...this.#regions, { ...region, fd, refs: 1 }]);
  }

  #remMemReg(region: MemoryRegionDescriptor): void {
    // As libvhost-user's reg_equal: guest-physical address, size and user address name a region.
    const target = this.#regions.find((r) => r.guestPhysAddr === region.guestPhysAddr && r.size === region.size && r.userAddr === region.userAddr);
    if (!target) {
      throw makeError('ENOENT', `REM_MEM_REG names no region in use (0x${region.size.toString(16)} bytes at guest-physical 0x${region.guestPhysAddr.toString(16)})`);
    }
    if (target.refs > 1) {
      target.refs--; // still added by another queue pair
      return;
    }
    this.#changeMemory(this.#regions.filter((r) => r !== target));
  }

  #setVringNum({ index, num }: VringState): void {
    this.device.setQueueSize(this.#ringIndex(index), num);
    this.#rings[index]!.configured.num = true;
    this.#rings[index]!.size = num;
  }

  #setVringAddr(a: VringAddress): void {
    const index = this.#ringIndex(a.index);
    const addresses = { desc: a.desc, avail: a.avail, used: a.used };
    const logAddr = a.flags & VHOST_VRING_F_LOG ? safeAddress(a.log, 'log_guest_addr') : undefined;
    const ring = this.#rings[index]!;
    // QEMU sends it again for the running rings when a migration starts, to add
    // VHOST_VRING_F_LOG: the same addresses need no stop, only where the used ring is logged.
    // A pair out of use that only discards its tx chains counts as running here too.
    const pair = index >> 1;
    const discarding = this.device.isPairDiscardingTx(pair);
    const unchanged = (this.device.isPairRunning(pair) || discarding) && ring.addresses !== undefined &&
      ring.addresses.desc === addresses.desc && ring.addresses.avail === addresses.avail && ring.addresses.used === addresses.used;
    if (!unchanged) {
      if (discarding) this.#stopPairOf(index); // ours to stop: it starts again below, on the new addresses
      this.device.setQueueAddresses(index, this.#toGuest(addresses)); // EBUSY while its pair forwards
    }
    this.device.setQueueLogAddress(index, logAddr);
    Object.assign(ring, { addresses, configured: { ...ring.configured, addr: true } });
    if (!unchanged && discarding) this.#reconcile();
  }

  /**
   * The frontend waits for this reply (with no payload, as QEMU and DPDK send it)
   * whatever happens, and it cannot carry a failure: a region we cannot use is
   * reported, the log in use stays, and SET_FEATURES with VHOST_F_LOG_ALL is then
   * refused (QEMU asks for an ack there), which fails the migration and leaves the
   * guest running. The fd is closed by handle(): mapped, it is not needed any more.
   */
  #setLogBase(description: LogDescription, fd: number): Outcome {
    try {
      this.#migration.setBase(description, fd, this.#guestExtent());
      this.log('log-base', { bytes: this.#migration.logBytes, logging: this.#migration.logging });
    } catch (error) {
      this.log('request-failed', { request: requestName(Request.SET_LOG_BASE), code: errorCode(error), error: (error as Error).message });
    }
    return { reply: Buffer.alloc(0) };
  }

  #sendRarp(mac: string): void {
    this.device.sendRarp(mac);
    this.log('rarp', { mac });
  }

  #setVringBase({ index, num }: VringState): void {
    // Split: the last avail index. Packed: bits 0-14 and 15 the next descriptor and its
    // wrap counter, 16-30 and 31 the used ones (the device checks which it has).
    this.device.setQueueBase(this.#ringIndex(index), num);
    Object.assign(this.#rings[index]!, { givenBase: num, baseFromFrontend: true });
    // Where each ring starts and stops, for whoever reads a migration or a restart afterwards.
    this.log('ring-base', { ring: index, base: num });
  }

  #getVringBase({ index }: VringState): Outcome {
    const base = this.device.getQueueBase(this.#ringIndex(index));
    this.#rings[index]!.started = false;
    this.ringPositions?.forget(index); // the frontend knows where the ring is now
    this.#reconcile();
    this.log('ring-stopped', { ring: index, base });
    return { reply: encodeVringState({ index, num: base }) };
  }

  #setVringKick({ index, noFd }: VringFdIndex, fds: readonly number[]): void {
    const ring = this.#rings[this.#ringIndex(index)]!;
    if (noFd) throw makeError('EOPNOTSUPP', 'polling rings (no kick fd) are not supported: give the ring a kick eventfd');
    this.#transaction(() => {
      this.#stopPairOf(index); // the frontend restarts a running ring
      ring.kickFd = fds[0]!;
      ring.started = true;
      if (!this.#hasProtocolFeatures()) ring.enabled = true; // without them a ring starts enabled
    });
  }

  #setVringCall({ index, noFd }: VringFdIndex, fds: readonly number[]): void {
    const ring = this.#rings[this.#ringIndex(index)]!;
    this.#transaction(() => {
      this.#stopPairOf(index); // a running pair restarts on the new call fd
      ring.callFd = noFd ? undefined : fds[0];
    });
  }

  #setVringErr({ index, noFd }: VringFdIndex, fds: readonly number[]): void {
    const ring = this.#rings[this.#ringIndex(index)]!;
    this.#transaction(() => {
      ring.errFd = noFd ? undefined : fds[0];
    });
  }

  #setVringEnable({ index, num }: VringState): void {
    if (num > 1) throw makeError('EPROTO', `SET_VRING_ENABLE with ${num} (0 or 1)`);
    const ring = this.#rings[this.#ringIndex(index)]!;
    // A ring disabled while started discards what the guest left on it (vhost-user.rst
    // "Ring states"), unlike a ring stopped by GET_VRING_BASE, which keeps it for later.
    this.#disabling = num === 0;
    try {
      this.#transaction(() => {
        ring.enabled = num === 1;
      });
    } finally {
      this.#disabling = false;
    }
  }

  #setStatus(value: bigint): void {
    const status = Number(value & 0xffn);
    this.#frontendStatus = status;
    // QEMU sends 0 when it stops the VM, before it asks for the last pair's ring
    // bases: stop the rings, but keep where they are.
    if (status === 0) {
      this.device.stopQueues();
      for (const ring of this.#rings) ring.started = false;
    }
  }

  /** Ends the session: every worker stopped, the tap back to one queue, every fd closed, memory unmapped. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#migration.close();
    try {
      this.device.reset();
    } catch (error) {
      this.log('reset-failed', { error: (error as Error).message });
    }
    closeFds(fdsOf(this.#state()));
    this.#rings = [];
    this.#regions = [];
    this.#memory?.close();
    this.#memory = undefined;
  }

  /** For logs and tests. */
  describe(): { features: string; protocolFeatures: string; regions: { guestPhysAddr: string; size: number; refs: number }[]; rings: { started: boolean; enabled: boolean }[] } {
    return {
      features: `0x${this.#features.toString(16)}`,
      protocolFeatures: `0x${this.#protocolFeatures.toString(16)}`,
      regions: this.#regions.map((r) => ({ guestPhysAddr: `0x${r.guestPhysAddr.toString(16)}`, size: Number(r.size), refs: r.refs })),
      rings: this.#rings.map((r) => ({ started: r.started, enabled: r.enabled })),
    };
  }

  #offeredFeatures(): bigint {
    return this.device.offeredFeatures | featureBit(VHOST_USER_F_PROTOCOL_FEATURES) | featureBit(VHOST_F_LOG_ALL);
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

  /** Whether a ring or a region holds the fd. */
  #holds(fd: number): boolean {
    return fdsOf(this.#state()).includes(fd);
  }

  #state(): SessionState {
    return { rings: this.#rings, regions: this.#regions, memory: this.#memory };
  }

  /** Stops the pair a ring belongs to, keeping where its rings are (the frontend is changing one of them). */
  #stopPairOf(index: number): void {
    const pair = index >> 1;
    if (this.device.isPairRunning(pair) || this.device.isPairDiscardingTx(pair)) this.device.getQueueBase(index);
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
    // VHOST_F_LOG_ALL turns dirty logging on and off while the rings run: not a device feature, no renegotiation.
    const logAll = (features & featureBit(VHOST_F_LOG_ALL)) !== 0n;
    if (logAll && !this.#migration.hasBase) {
      throw makeError('EINVAL', 'VHOST_F_LOG_ALL without a usable log region (SET_LOG_BASE missing or refused): migration cannot be logged');
    }
    features &= ~featureBit(VHOST_F_LOG_ALL);
    const virtio = features & ~featureBit(VHOST_USER_F_PROTOCOL_FEATURES);
    if (virtio & ~this.device.offeredFeatures) {
      throw makeError('EINVAL', `features 0x${(virtio & ~this.device.offeredFeatures).toString(16)} were not offered`);
    }
    if (this.#featuresSet && virtio === (this.#features & ~featureBit(VHOST_USER_F_PROTOCOL_FEATURES))) {
      this.#features = features;
      this.#migration.setLogAll(logAll);
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
    this.#migration.setLogAll(logAll);
    this.log('features', { features: `0x${virtio.toString(16)}`, protocolFeatures: this.#hasProtocolFeatures() });
  }

  /**
   * Replaces the memory map: maps the new regions, stops the running pairs (they
   * finish in the old map), and starts again every pair whose rings translate
   * in the new one. A ring whose addresses left the map waits, stopped, until a
   * later change maps them again: a frontend may remove a region and add it back
   * (libvhost-user's vu_rem_mem_reg unmaps the rings in it the same way). If a
   * pair cannot start on the new map, the old one stays as if nothing had been asked.
   */
  #changeMemory(regions: Region[]): void {
    this.#transaction(() => {
      const memory = regions.length > 0 ? mapRegions(regions) : undefined;
      this.device.stopQueues();
      this.#regions = regions;
      this.#memory = memory;
      if (this.#featuresSet) this.device.setMemory(memory);
    });
    const shrinkable = regions.filter((r) => !sealedAgainstShrinking(r.fd)).length;
    this.log('memory', {
      regions: regions.length,
      bytes: regions.reduce((sum, r) => sum + Number(r.size), 0),
      // A file that can be truncated under the mapping: its pages then read as zeros here (README).
      ...(shrinkable > 0 ? { shrinkable, warning: `${shrinkable} of the regions' files are not sealed against shrinking (F_SEAL_SHRINK)` } : {}),
    });
  }

  /**
   * Runs `change` (which edits the rings, the regions or the memory) and applies
   * the result to the device. If either throws, the session and the device are
   * put back as they were, and the error is thrown: the request changed nothing.
   * Once the change holds, the fds and the mapping it replaced are released.
   */
  #transaction(change: () => void): void {
    const before = { rings: this.#rings.map(copyRing), regions: this.#regions, memory: this.#memory };
    try {
      change();
      this.#reconcile();
    } catch (error) {
      const failedMemory = this.#memory;
      this.#restore(before);
      if (failedMemory !== before.memory) failedMemory?.close();
      throw error;
    }
    if (before.memory !== this.#memory) before.memory?.close();
    const held = new Set(fdsOf(this.#state()));
    closeFds(fdsOf(before).filter((fd) => !held.has(fd)));
  }

  #restore(state: SessionState): void {
    if (this.#memory !== state.memory) {
      this.device.stopQueues();
      this.#memory = state.memory;
      if (this.#featuresSet) this.device.setMemory(state.memory);
    }
    this.#regions = state.regions;
    this.#rings = state.rings.map(copyRing);
    try {
      this.#reconcile();
    } catch (error) {
      // What ran before cannot run again (the tap refuses a queue now, say): it stays stopped.
      this.log('restore-failed', { error: (error as Error).message, code: errorCode(error) });
    }
  }

  /** The end of the highest region of guest-physical memory: what a dirty log must cover. */
  #guestExtent(): number {
    return this.#regions.reduce((end, r) => Math.max(end, Number(r.guestPhysAddr + r.size)), 0);
  }

  /** A ring's addresses in guest-physical space, translated through the memory map as it is now; throws EFAULT if one is in no region. */
  #toGuest(addresses: RingAddresses): { descAddr: number; availAddr: number; usedAddr: number } {
    const translate = (address: bigint, what: string): number => {
      for (const r of this.#regions) {
        if (address >= r.userAddr && address - r.userAddr < r.size) return Number(r.guestPhysAddr + (address - r.userAddr));
      }
      throw makeError('EFAULT', `the ${what} at frontend address 0x${address.toString(16)} is in no memory region (send the memory table first)`);
    };
    return {
      descAddr: translate(addresses.desc, 'descriptor table'),
      availAddr: translate(addresses.avail, 'available ring'),
      usedAddr: translate(addresses.used, 'used ring'),
    };
  }

  /** The ring's guest-physical addresses, or undefined while it has none or they are in no region. */
  #guestAddressesOf(ring: Ring): { descAddr: number; availAddr: number; usedAddr: number } | undefined {
    if (!ring.configured.addr || !ring.addresses) return undefined;
    try {
      return this.#toGuest(ring.addresses);
    } catch {
      return undefined;
    }
  }

  /**
   * The pairs in use are the leading pairs whose two rings are started, enabled
   * and mapped: the same setActiveQueuePairs path as the control queue's. A pair
   * that starts gets its rings as the session has them (translated through the
   * map of now). Throws if a pair that should run does not start; the device's
   * setActiveQueuePairs and setDriverOk then leave it as it was.
   */
  #reconcile(): void {
    if (!this.#featuresSet) return;
    const addresses = this.#rings.map((r) => this.#guestAddressesOf(r));
    const ready = (i: number): boolean => {
      const r = this.#rings[i]!;
      return r.started && r.enabled && r.kickFd !== undefined && addresses[i] !== undefined;
    };
    let pairs = 0;
    while (pairs < this.device.maxQueuePairs && ready(2 * pairs) && ready(2 * pairs + 1)) pairs++;
    const before = this.device.activeQueuePairs;
    if (pairs === 0) {
      this.device.stopQueues();
      return;
    }
    for (let pair = 0; pair < pairs; pair++) {
      if (this.device.isPairRunning(pair)) continue;
      if (this.device.isPairDiscardingTx(pair)) this.device.getQueueBase(2 * pair + 1); // back in use: stop discarding, from where it is
      for (const index of [2 * pair, 2 * pair + 1]) {
        const ring = this.#rings[index]!;
        this.device.setQueueAddresses(index, addresses[index]!);
        this.#keepPosition(index, addresses[index]!.descAddr);
        this.device.setQueueKick(index, ring.kickFd!);
        this.device.setQueueCall(index, ring.callFd);
        this.device.enableQueue(index, true);
      }
    }
    // vhost-user.rst "Ring states": a tx ring started but disabled discards what the
    // driver posts there; the device does that once it knows where the ring is. A tx
    // ring not started (never, or stopped by GET_VRING_BASE), or started and enabled
    // in a pair out of use for another reason (its rx ring stopped first, as QEMU
    // stops a device ring by ring), is left alone: its chains are for whoever starts
    // it next, the destination of a migration included.
    for (let pair = pairs; pair < this.device.maxQueuePairs; pair++) {
      const index = 2 * pair + 1;
      const ring = this.#rings[index]!;
      const live = ring.started && !ring.enabled && ring.kickFd !== undefined && addresses[index] !== undefined;
      if (!live) {
        this.device.enableQueue(index, false);
      } else if (!this.device.isPairRunning(pair) && !this.device.isPairDiscardingTx(pair)) {
        this.device.setQueueAddresses(index, addresses[index]!);
        this.#keepPosition(index, addresses[index]!.descAddr);
        this.device.setQueueKick(index, ring.kickFd!);
        this.device.setQueueCall(index, ring.callFd);
        this.device.enableQueue(index, true);
      }
    }
    this.device.setActiveQueuePairs(pairs, { discardTx: this.#disabling });
    if (!(this.device.status & STATUS_DRIVER_OK)) this.device.setDriverOk();
    if (pairs !== before) this.log('queue-pairs', { active: pairs, previous: before });
  }

  /**
   * A packed ring about to start: if it starts from the base the frontend gave and
   * an earlier daemon left a position for this very ring (RingPositions), resume
   * there; in any case its worker keeps writing the position down.
   */
  #keepPosition(index: number, descAddr: number): void {
    const store = this.ringPositions;
    const ring = this.#rings[index]!;
    if (!store || !hasFeature(this.device.activeFeatures, VIRTIO_F_RING_PACKED) || ring.givenBase === undefined || ring.size === undefined || !this.#memory) {
      this.device.setQueuePositionRecord(index, undefined);
      return;
    }
    const region = this.#regions.find((r) => BigInt(descAddr) >= r.guestPhysAddr && BigInt(descAddr) - r.guestPhysAddr < r.size);
    if (!region) return;
    const stat = fs.fstatSync(region.fd, { bigint: true });
    const recorded = { descAddr, size: ring.size, memoryDev: stat.dev, memoryIno: stat.ino };
    if (ring.baseFromFrontend) {
      ring.baseFromFrontend = false;
      const memory = this.#memory;
      const base = store.resumeBase(index, recorded, ring.givenBase, (slot) => memory.view(descAddr + 16 * slot + 14, 2).getUint16(0, true));
      if (base !== ring.givenBase) {
        this.device.setQueueBase(index, base);
        this.log('ring-resumed', { ring: index, given: `0x${ring.givenBase.toString(16)}`, base: `0x${base.toString(16)}` });
      }
      store.started(index, recorded, ring.givenBase);
    }
    this.device.setQueuePositionRecord(index, store.record(index));
  }

  #reset(): void {
    this.ringPositions?.forgetAll();
    this.#migration.close();
    this.device.reset();
    this.#featuresSet = false;
    this.#features = 0n;
    // Fresh rings: assigning newRing() over the old ones kept their (closed) fd
    // numbers, which close() then closed again, whatever they had become by then.
    for (const ring of this.#rings) closeFds([ring.kickFd, ring.callFd, ring.errFd]);
    this.#rings = this.#rings.map(() => newRing());
    this.log('reset');
  }
}

/** Maps the regions (the fds stay the session's, for the next change). */
function mapRegions(regions: readonly Region[]): GuestMemory {
  try {
    return GuestMemory.fromRegions(regions.map((r) => {
      if (r.size > BigInt(Number.MAX_SAFE_INTEGER) || r.guestPhysAddr > BigInt(Number.MAX_SAFE_INTEGER) || r.mmapOffset > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw makeError('EINVAL', 'a memory region lies beyond 2^53');
      }
      return { guestPhysAddr: Number(r.guestPhysAddr), size: Number(r.size), fd: r.fd, offset: Number(r.mmapOffset) };
    }));
  } catch (error) {
    throw makeError(errorCode(error) ?? 'EINVAL', `cannot map the guest memory: ${(error as Error).message}`, error);
  }
}

function sealedAgainstShrinking(fd: number): boolean {
  const seals = native.describeFd(fd).seals ?? -1;
  return seals >= 0 && (seals & F_SEAL_SHRINK) !== 0;
}

function sameRegion(a: MemoryRegionDescriptor, b: MemoryRegionDescriptor): boolean {
  return a.guestPhysAddr === b.guestPhysAddr && a.size === b.size && a.userAddr === b.userAddr && a.mmapOffset === b.mmapOffset;
}

function newRing(): Ring {
  return { started: false, enabled: false, configured: { num: false, addr: false } };
}

function copyRing(ring: Ring): Ring {
  return { ...ring, configured: { ...ring.configured } };
}

/** Every fd the state holds. */
function fdsOf(state: SessionState): number[] {
  const fds = state.regions.map((r) => r.fd);
  for (const ring of state.rings) {
    for (const fd of [ring.kickFd, ring.callFd, ring.errFd]) if (fd !== undefined) fds.push(fd);
  }
  return fds;
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

function safeAddress(value: bigint, what: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw makeError('EINVAL', `${what} 0x${value.toString(16)} lies beyond 2^53`);
  return Number(value);
}
