// A vhost-user frontend for tests: what QEMU does on the socket, minus the VM.
// It connects (or adopts a connected fd), sends requests with their fds and
// reads replies without ever blocking the event loop (the backend under test
// usually runs in this very process). The guest side is the TS driver over a
// memfd-backed GuestMemory whose fd goes to the backend in SET_MEM_TABLE.
import { errorCode, makeError } from '../../src/errors';
import { native } from '../../src/native';
import { MessageReader, type ReceivedMessage } from '../../src/vhost-user/message-reader';
import {
  FLAG_NEED_REPLY, FLAG_REPLY, FLAG_VERSION_MASK, MAX_PAYLOAD, ProtocolFeature, Request, VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_VERSION, encodeMemoryTable, encodeMessage, encodeSingleRegion as encodeRegionMessage, encodeU64, encodeVringAddress,
  encodeVringState, requestName, type MemoryRegionDescriptor,
} from '../../src/vhost-user/protocol';
import { STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK } from '../../src/virtio/device-status';
import { EventFd, cancelWait } from '../../src/virtio/eventfd';
import * as F from '../../src/virtio/features';
import { featureBit } from '../../src/virtio/features';
import { GuestMemory } from '../../src/virtio/guest-memory';
import { VirtioNetDriver, type DeviceQueueConfig, type VirtioNetFeatures } from '../../src/virtio/driver/net-driver';
import { PackedQueueDriver, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED } from '../../src/virtio/driver/packed-queue-driver';
import { encodePackedRingBase, type PackedRingPosition } from '../../src/virtio/ring-base';
import type { VirtqueueDriver } from '../../src/virtio/driver/virtqueue-driver';

/** Where the frontend pretends guest memory is mapped in its own address space: user address = USER_BASE + guest-physical. */
export const USER_BASE = 0x7f00_0000_0000n;

export const PROTOCOL_PROTOCOL_FEATURES = featureBit(VHOST_USER_F_PROTOCOL_FEATURES);

export const pf = (...bits: ProtocolFeature[]): bigint => bits.reduce((mask, bit) => mask | (1n << BigInt(bit)), 0n);

/** What a QEMU 7.2 net frontend asks for (and this backend offers). */
export const WANTED_PROTOCOL_FEATURES = pf(
  ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK, ProtocolFeature.CONFIG, ProtocolFeature.RESET_DEVICE,
  ProtocolFeature.CONFIGURE_MEM_SLOTS, ProtocolFeature.STATUS,
);

export interface Reply {
  request: number;
  flags: number;
  payload: Buffer;
}

/** The answer to one message: an ack (0 is success), a reply payload, the connection closed, or nothing asked for. */
export type Exchange =
  | { kind: 'ack'; value: bigint }
  | { kind: 'reply'; payload: Buffer }
  | { kind: 'closed' }
  | { kind: 'none' };

export interface SendOptions {
  fds?: readonly number[];
  /** Ask for a reply-ack (NEED_REPLY). Default: whenever REPLY_ACK was negotiated on this connection. */
  needReply?: boolean;
  /** Replace the whole flags word (version bits included). */
  flags?: number;
  timeoutMs?: number;
}

export interface MemRegion {
  guestPhysAddr: number;
  size: number;
  fd: number;
  offset: number;
}

export interface StartOptions {
  /** The guest to use (a running one, to resume after a reconnect); default a new one for `pairs` pairs. */
  guest?: VhostUserGuest;
  /** Pairs to enable with SET_VRING_ENABLE 1 (QEMU: the pairs in use). Default all of them. */
  enable?: number;
  /**
   * Enable each of those pairs before its rings are set up, not after all of
   * them: QEMU 7.2's vhost_net_start when it restores the enable state of pairs
   * already in use (a backend reconnect, a vm cont). Otherwise a pair's tx ring
   * is started before it is enabled, and while another pair runs the backend
   * discards what waits on it (vhost-user.rst "Ring states").
   */
  enableFirst?: boolean;
  /** Send guest memory with ADD_MEM_REG (what QEMU does once CONFIGURE_MEM_SLOTS is negotiated) instead of SET_MEM_TABLE. */
  memSlots?: boolean;
  /**
   * Ring bases as a frontend rebuilds them after a backend reconnect (resumeBase):
   * split rings from the used indices in guest memory, as QEMU does; packed rings
   * from the guest driver's own position, every used descriptor reaped first.
   * Default: a fresh ring's base (0 split, 0x80008000 packed).
   */
  resume?: boolean;
  /** Ring bases by ring index (what stopDevice() returned: QEMU after a vm stop/cont). */
  bases?: readonly number[];
  /**
   * QEMU 7.2's device status messages (vhost_user_dev_start): FEATURES_OK after
   * each SET_FEATURES, ACKNOWLEDGE|DRIVER|DRIVER_OK after the last pair started.
   * Default: whenever the STATUS protocol feature was negotiated.
   */
  status?: boolean;
  /** Features of the guest driver. Default VERSION_1, MRG_RXBUF and EVENT_IDX; `ringPacked` for packed rings. */
  features?: Partial<VirtioNetFeatures>;
  /**
   * The virtio features SET_FEATURES carries, instead of the guest driver's own:
   * what QEMU passes on is whatever its guest acked, offloads the TS driver
   * ignores included (they are still masked with the backend's offer).
   */
  ackedFeatures?: bigint;
  queueSize?: number;
}

export interface GuestOptions {
  features?: Partial<VirtioNetFeatures>;
  queueSize?: number;
  bufferSize?: number;
  timeoutMs?: number;
}

function driverOptions(pairs: number, options: GuestOptions): { queuePairs: number; queueSize: number; features: VirtioNetFeatures; rxBufferSize: number; txBufferSize: number; timeoutMs: number } {
  return {
    queuePairs: pairs, queueSize: options.queueSize ?? 256,
    features: { version1: true, mergeableRx: true, eventIdx: true, indirectDesc: false, ...options.features },
    rxBufferSize: options.bufferSize ?? 2048, txBufferSize: options.bufferSize ?? 2048, timeoutMs: options.timeoutMs ?? 2000,
  };
}

/** The guest side: memory the backend maps, and the TS virtio-net driver on it. */
export class VhostUserGuest {
  readonly features: bigint;

  constructor(readonly memory: GuestMemory, readonly driver: VirtioNetDriver, virtioFeatures: bigint) {
    this.features = virtioFeatures;
  }

  /** A guest for `pairs` queue pairs on new memfd-backed memory of its own. */
  static create(pairs: number, options: GuestOptions = {}): VhostUserGuest {
    const memory = GuestMemory.allocate(VhostUserGuest.memoryNeeded(pairs, options));
    try {
      return VhostUserGuest.inMemory(memory, pairs, options);
    } catch (error) {
      memory.close();
      throw error;
    }
  }

  /** Bytes of guest memory a guest with these options needs: its rings and buffers, and 1 MiB of room, in whole pages. */
  static memoryNeeded(pairs: number, options: GuestOptions = {}): number {
    return Math.ceil((VirtioNetDriver.memoryNeeded(driverOptions(pairs, options)) + (1 << 20)) / 4096) * 4096;
  }

  /** A guest on memory the test made itself (several regions, a memfd that is not sealed...); the memory stays the test's. */
  static inMemory(memory: GuestMemory, pairs: number, options: GuestOptions = {}): VhostUserGuest {
    const config = driverOptions(pairs, options);
    return new VhostUserGuest(memory, VirtioNetDriver.create({ memory, ...config }), virtioFeaturesOf(config.features));
  }

  /** The memory regions as the frontend sends them (the fds stay the guest's). */
  regions(): MemRegion[] {
    return this.memory.regions.map((r) => ({ guestPhysAddr: r.guestPhysAddr, size: r.size, fd: r.fd, offset: r.offset }));
  }

  close(): void {
    this.driver.close();
    this.memory.close();
  }
}

/** The virtio feature bits a driver with these capabilities accepts. */
export function virtioFeaturesOf(features: VirtioNetFeatures): bigint {
  let bits = featureBit(F.VIRTIO_NET_F_MAC) | featureBit(F.VIRTIO_NET_F_STATUS) | featureBit(F.VIRTIO_NET_F_MQ);
  if (features.version1) bits |= featureBit(F.VIRTIO_F_VERSION_1);
  if (features.mergeableRx) bits |= featureBit(F.VIRTIO_NET_F_MRG_RXBUF);
  if (features.eventIdx) bits |= featureBit(F.VIRTIO_RING_F_EVENT_IDX);
  if (features.indirectDesc) bits |= featureBit(F.VIRTIO_RING_F_INDIRECT_DESC);
  if (features.ringPacked) bits |= featureBit(F.VIRTIO_F_RING_PACKED);
  return bits;
}

/**
 * The SET_VRING_BASE a frontend sends to resume `queue` (ring `config` of the
 * guest's driver) after a backend reconnect, from what it can see.
 *
 * Split (2.7): the used index in guest memory, as QEMU's
 * virtio_queue_restore_last_avail_idx takes it: every chain not yet used is
 * available again.
 *
 * Packed (2.8): the ring keeps no index in guest memory (QEMU cannot resume it
 * at all: see RingPositions), so this is the guest driver's own position, its
 * next used descriptor, for both halves of vhost-user's packed encoding (avail
 * == used: what follows is available again, as after a split ring's used
 * index). That is where the device stopped only once the driver has reaped
 * every used descriptor: EBUSY while one waits at that position.
 */
export function resumeBase(memory: GuestMemory, queue: VirtqueueDriver<number>, config: Pick<DeviceQueueConfig, 'usedAddr'>): number {
  if (!(queue instanceof PackedQueueDriver)) return memory.view(config.usedAddr + 2, 2).getUint16(0, true);
  if (queue.hasUsed) throw makeError('EBUSY', 'the packed ring has used descriptors the driver has not reaped: reap them (receive, reapTx) before resuming from the driver\'s position');
  return encodePackedRingBase(queue.nextUsed, queue.nextUsed);
}

/**
 * Where the device will write its next used descriptor on a packed ring, and how
 * many used descriptors wait there that the driver has not reaped: walked in
 * guest memory from the driver's next used position (2.8.1: used when AVAIL and
 * USED both equal the wrap counter), one ring slot per chain, as the helper's
 * guests post them (no rxSegments, no txSplitHeader). Exact once the device has
 * stopped; a lower bound while it runs.
 */
export function packedUsedEnd(memory: GuestMemory, queue: VirtqueueDriver<number>): { position: PackedRingPosition; unreaped: number } {
  if (!(queue instanceof PackedQueueDriver)) throw makeError('EINVAL', 'not a packed ring');
  const { descAddr, size } = queue.layout;
  let { index, wrap } = queue.nextUsed;
  let unreaped = 0;
  for (; unreaped < size; unreaped++) {
    const flags = memory.view(descAddr + 16 * index + 14, 2).getUint16(0, true);
    const bit = (mask: number): number => ((flags & mask) !== 0 ? 1 : 0);
    if (bit(VIRTQ_DESC_F_AVAIL) !== wrap || bit(VIRTQ_DESC_F_USED) !== wrap) break;
    if (++index === size) {
      index = 0;
      wrap = (wrap ^ 1) as 0 | 1;
    }
  }
  return { position: { index, wrap }, unreaped };
}

/** A region as the frontend describes it: its user address is USER_BASE + its guest-physical address. */
function regionDescriptor(r: MemRegion): MemoryRegionDescriptor {
  return { guestPhysAddr: BigInt(r.guestPhysAddr), size: BigInt(r.size), userAddr: USER_BASE + BigInt(r.guestPhysAddr), mmapOffset: BigInt(r.offset) };
}

export function encodeMemTable(regions: readonly MemRegion[]): Buffer {
  return encodeMemoryTable(regions.map(regionDescriptor));
}

/** ADD_MEM_REG / REM_MEM_REG: u64 padding, then one region. */
export function encodeSingleRegion(r: MemRegion): Buffer {
  return encodeRegionMessage(regionDescriptor(r));
}

export function encodeVringAddr(index: number, ring: { descAddr: number; availAddr: number; usedAddr: number }, flags = 0): Buffer {
  return encodeVringAddress({
    index, flags, desc: USER_BASE + BigInt(ring.descAddr), used: USER_BASE + BigInt(ring.usedAddr), avail: USER_BASE + BigInt(ring.availAddr), log: 0n,
  });
}

function closeQuietly(fd: number): void {
  try {
    native.closeFd(fd);
  } catch {
    // already closed
  }
}

const GONE = new Set(['EPIPE', 'ECONNRESET', 'ENOTCONN']);

export class VhostUserFrontend {
  #fd: number;
  #reader: MessageReader | undefined;
  /** Negotiated with SET_PROTOCOL_FEATURES on this connection. */
  protocolFeatures = 0n;
  /** What GET_FEATURES answered, once asked. */
  offeredFeatures = 0n;
  /** Set once the backend closed the connection (seen as EOF or EPIPE). */
  peerClosed = false;

  constructor(fd: number) {
    this.#fd = fd;
  }

  static connect(path: string): VhostUserFrontend {
    return new VhostUserFrontend(native.unixConnect(path, 'stream'));
  }

  get fd(): number {
    if (this.#fd < 0) throw makeError('EBADF', 'the frontend connection is closed');
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  get replyAck(): boolean {
    return (this.protocolFeatures & pf(ProtocolFeature.REPLY_ACK)) !== 0n;
  }

  /** Closes our end (a frontend that dies, or QEMU quitting). */
  close(): void {
    if (this.#fd < 0) return;
    this.#reader?.cancel();
    cancelWait(this.#fd);
    closeQuietly(this.#fd);
    this.#fd = -1;
  }

  /** Writes raw bytes (with fds), for malformed and truncated messages. False if the backend is gone. */
  sendRaw(bytes: Buffer, fds: readonly number[] = []): boolean {
    try {
      native.sendFds(this.fd, [...fds], bytes);
      return true;
    } catch (error) {
      if (GONE.has(errorCode(error) ?? '')) {
        this.peerClosed = true;
        return false;
      }
      throw error;
    }
  }

  /** Sends one well-framed message. False if the backend is gone. */
  send(request: number, payload: Buffer = Buffer.alloc(0), options: SendOptions = {}): boolean {
    const needReply = options.needReply ?? this.replyAck;
    const flags = options.flags ?? (VHOST_USER_VERSION | (needReply ? FLAG_NEED_REPLY : 0));
    return this.sendRaw(encodeMessage(request, flags, payload), options.fds ?? []);
  }

  /** The next message from the backend; undefined when it closed the connection. Rejects with ETIMEDOUT. */
  async readMessage(timeoutMs = 3000): Promise<Reply | undefined> {
    if (this.peerClosed || this.#fd < 0) return undefined;
    this.#reader ??= new MessageReader(this.#fd, { maxPayload: MAX_PAYLOAD, maxFds: 8, deadlineMs: 1000 });
    let message: ReceivedMessage | undefined;
    try {
      message = await this.#reader.next(timeoutMs);
    } catch (error) {
      if (GONE.has(errorCode(error) ?? '')) {
        this.peerClosed = true;
        return undefined;
      }
      if (errorCode(error) === 'ETIMEDOUT') throw makeError('ETIMEDOUT', `no message from the backend within ${timeoutMs} ms (${(error as Error).message})`);
      throw error;
    }
    if (!message) {
      if (this.#fd >= 0) this.peerClosed = true;
      return undefined;
    }
    message.fds.forEach(closeQuietly);
    return { request: message.request, flags: message.flags, payload: message.payload };
  }

  /** A reply to `request` (checked), or undefined when the backend closed the connection instead. */
  async readReply(request: number, timeoutMs = 3000): Promise<Reply | undefined> {
    const reply = await this.readMessage(timeoutMs);
    if (!reply) return undefined;
    if (reply.request !== request) {
      throw makeError('EPROTO', `expected a reply to ${requestName(request)}, got one to ${requestName(reply.request)}`);
    }
    if ((reply.flags & FLAG_VERSION_MASK) !== VHOST_USER_VERSION || !(reply.flags & FLAG_REPLY)) {
      throw makeError('EPROTO', `reply to ${requestName(request)} has flags 0x${reply.flags.toString(16)}`);
    }
    return reply;
  }

  /**
   * Sends a message and reads what comes back: a reply payload when `expectReply`,
   * an ack when NEED_REPLY was set, or nothing.
   */
  async exchange(request: number, payload: Buffer = Buffer.alloc(0), options: SendOptions & { expectReply?: boolean } = {}): Promise<Exchange> {
    const needReply = options.needReply ?? (this.replyAck && !options.expectReply);
    if (!this.send(request, payload, { ...options, needReply })) return { kind: 'closed' };
    if (!options.expectReply && !needReply) return { kind: 'none' };
    const reply = await this.readReply(request, options.timeoutMs);
    if (!reply) return { kind: 'closed' };
    if (options.expectReply) return { kind: 'reply', payload: reply.payload };
    if (reply.payload.length !== 8) throw makeError('EPROTO', `ack of ${requestName(request)} is ${reply.payload.length} bytes`);
    return { kind: 'ack', value: reply.payload.readBigUInt64LE(0) };
  }

  /** A request that must succeed: throws if the backend acks a failure or hangs up. */
  async ok(request: number, payload: Buffer = Buffer.alloc(0), fds: readonly number[] = []): Promise<void> {
    const result = await this.exchange(request, payload, { fds });
    if (result.kind === 'closed') throw makeError('ECONNRESET', `the backend closed the connection on ${requestName(request)}`);
    if (result.kind === 'ack' && result.value !== 0n) throw makeError('EIO', `${requestName(request)} failed: ack ${result.value}`);
  }

  /** A request with a reply payload of its own. */
  async ask(request: number, payload: Buffer = Buffer.alloc(0)): Promise<Buffer> {
    const result = await this.exchange(request, payload, { expectReply: true });
    if (result.kind !== 'reply') throw makeError('ECONNRESET', `the backend closed the connection on ${requestName(request)}`);
    return result.payload;
  }

  async askU64(request: number): Promise<bigint> {
    const payload = await this.ask(request);
    if (payload.length !== 8) throw makeError('EPROTO', `${requestName(request)} reply is ${payload.length} bytes, not 8`);
    return payload.readBigUInt64LE(0);
  }

  // ---- one method per request ----

  async getFeatures(): Promise<bigint> {
    this.offeredFeatures = await this.askU64(Request.GET_FEATURES);
    return this.offeredFeatures;
  }

  setFeatures(features: bigint): Promise<void> {
    return this.ok(Request.SET_FEATURES, encodeU64(features));
  }

  getProtocolFeatures(): Promise<bigint> {
    return this.askU64(Request.GET_PROTOCOL_FEATURES);
  }

  /** SET_PROTOCOL_FEATURES; REPLY_ACK takes effect from the next message. */
  async setProtocolFeatures(features: bigint): Promise<void> {
    await this.ok(Request.SET_PROTOCOL_FEATURES, encodeU64(features));
    this.protocolFeatures = features;
  }

  setOwner(): Promise<void> {
    return this.ok(Request.SET_OWNER);
  }

  async getQueueNum(): Promise<number> {
    return Number(await this.askU64(Request.GET_QUEUE_NUM));
  }

  async getMaxMemSlots(): Promise<number> {
    return Number(await this.askU64(Request.GET_MAX_MEM_SLOTS));
  }

  /** GET_CONFIG: the device's config space bytes [offset, offset + size). */
  async getConfig(offset: number, size: number, flags = 0): Promise<Buffer> {
    const request = Buffer.alloc(12 + size);
    request.writeUInt32LE(offset, 0);
    request.writeUInt32LE(size, 4);
    request.writeUInt32LE(flags, 8);
    const reply = await this.ask(Request.GET_CONFIG, request);
    if (reply.length < 12 || reply.readUInt32LE(4) !== reply.length - 12) throw makeError('EPROTO', `GET_CONFIG reply of ${reply.length} bytes`);
    return reply.subarray(12);
  }

  async getStatus(): Promise<number> {
    return Number(await this.askU64(Request.GET_STATUS));
  }

  setStatus(status: number): Promise<void> {
    return this.ok(Request.SET_STATUS, encodeU64(status));
  }

  setMemTable(regions: readonly MemRegion[]): Promise<void> {
    return this.ok(Request.SET_MEM_TABLE, encodeMemTable(regions), regions.map((r) => r.fd));
  }

  addMemReg(region: MemRegion): Promise<void> {
    return this.ok(Request.ADD_MEM_REG, encodeSingleRegion(region), [region.fd]);
  }

  remMemReg(region: MemRegion): Promise<void> {
    return this.ok(Request.REM_MEM_REG, encodeSingleRegion(region));
  }

  setVringNum(index: number, num: number): Promise<void> {
    return this.ok(Request.SET_VRING_NUM, encodeVringState({ index, num }));
  }

  setVringBase(index: number, num: number): Promise<void> {
    return this.ok(Request.SET_VRING_BASE, encodeVringState({ index, num }));
  }

  setVringAddr(index: number, ring: { descAddr: number; availAddr: number; usedAddr: number }): Promise<void> {
    return this.ok(Request.SET_VRING_ADDR, encodeVringAddr(index, ring));
  }

  /**
   * GET_VRING_BASE: stops the ring; where the backend will resume. Split: the
   * last avail index. Packed: vhost-user's packed encoding (avail index and wrap
   * counter in bits 0-15, used ones in bits 16-31), as an unsigned u32.
   */
  async getVringBase(index: number): Promise<number> {
    const reply = await this.ask(Request.GET_VRING_BASE, encodeVringState({ index, num: 0 }));
    if (reply.length !== 8 || reply.readUInt32LE(0) !== index) throw makeError('EPROTO', 'GET_VRING_BASE reply names another ring');
    return reply.readUInt32LE(4);
  }

  setVringKick(index: number, fd: number): Promise<void> {
    return this.ok(Request.SET_VRING_KICK, encodeU64(index), [fd]);
  }

  setVringCall(index: number, fd: number): Promise<void> {
    return this.ok(Request.SET_VRING_CALL, encodeU64(index), [fd]);
  }

  setVringEnable(index: number, enable: boolean): Promise<void> {
    return this.ok(Request.SET_VRING_ENABLE, encodeVringState({ index, num: enable ? 1 : 0 }));
  }

  /** Enables or disables both rings of a queue pair, as QEMU's vhost_set_vring_enable does. */
  async setPairEnabled(pair: number, enable: boolean): Promise<void> {
    await this.setVringEnable(2 * pair, enable);
    await this.setVringEnable(2 * pair + 1, enable);
  }

  // ---- what QEMU does ----

  /**
   * The handshake of QEMU's vhost_user_backend_init and vhost_dev_init: features,
   * protocol features, queue count, memory slots, SET_OWNER, and a first call
   * eventfd per ring (QEMU's masked notifier; replaced at start).
   */
  async init(options: { protocolFeatures?: bigint; rings?: number } = {}): Promise<{ features: bigint; protocolFeatures: bigint; queues: number }> {
    const features = await this.getFeatures();
    if (!(features & PROTOCOL_PROTOCOL_FEATURES)) throw makeError('EPROTO', 'the backend does not offer VHOST_USER_F_PROTOCOL_FEATURES');
    const offered = await this.getProtocolFeatures();
    const protocolFeatures = offered & (options.protocolFeatures ?? WANTED_PROTOCOL_FEATURES);
    await this.setProtocolFeatures(protocolFeatures);
    const queues = protocolFeatures & pf(ProtocolFeature.MQ) ? await this.getQueueNum() : 1;
    if (protocolFeatures & pf(ProtocolFeature.CONFIGURE_MEM_SLOTS)) await this.getMaxMemSlots();
    await this.setOwner();
    for (let ring = 0; ring < (options.rings ?? 0); ring++) {
      const masked = EventFd.create();
      try {
        await this.setVringCall(ring, masked.fd);
      } finally {
        masked.close();
      }
    }
    return { features, protocolFeatures, queues };
  }

  /**
   * What QEMU 7.2 does at start for `pairs` queue pairs on one connection: per pair
   * SET_FEATURES (and FEATURES_OK status) and the memory table, then per ring NUM,
   * BASE, ADDR, KICK, CALL; DRIVER_OK status after the last pair; then
   * SET_VRING_ENABLE 1 for the pairs in use. Runs init() first unless it
   * was done. Fills the rx rings; returns the guest (new unless one was given).
   */
  async startDevice(pairs: number, options: StartOptions = {}): Promise<VhostUserGuest> {
    if (this.offeredFeatures === 0n) await this.init({ rings: 2 * pairs });
    const guest = options.guest ?? VhostUserGuest.create(pairs, {
      ...(options.features ? { features: options.features } : {}),
      ...(options.queueSize ? { queueSize: options.queueSize } : {}),
    });
    const status = options.status ?? (this.protocolFeatures & pf(ProtocolFeature.STATUS)) !== 0n;
    try {
      const features = ((options.ackedFeatures ?? guest.features) & this.offeredFeatures) | PROTOCOL_PROTOCOL_FEATURES;
      const regions = guest.regions();
      for (let pair = 0; pair < pairs; pair++) {
        await this.setFeatures(features);
        if (status) await this.addStatus(STATUS_FEATURES_OK);
        if (options.memSlots) {
          if (pair === 0) for (const r of regions) await this.addMemReg(r);
        } else {
          await this.setMemTable(regions);
        }
        if (options.enableFirst && pair < (options.enable ?? pairs)) await this.setPairEnabled(pair, true);
        const config = guest.driver.queueConfig(pair);
        const queues = [guest.driver.rxQueue(pair), guest.driver.txQueue(pair)] as const;
        for (const [ring, q, queue] of [[2 * pair, config.rx, queues[0]], [2 * pair + 1, config.tx, queues[1]]] as const) {
          // Packed rings (2.8): NUM, BASE in vhost-user's packed encoding, and ADDR with the
          // descriptor ring, driver area and device area in desc, avail and used (the driver's layout).
          const base = options.bases?.[ring] ?? (options.resume ? resumeBase(guest.memory, queue, q) : q.lastAvailIdx ?? 0);
          await this.setVringNum(ring, q.size);
          await this.setVringBase(ring, base);
          await this.setVringAddr(ring, q);
          await this.setVringKick(ring, q.kickFd);
          await this.setVringCall(ring, q.callFd);
        }
        if (status && pair === pairs - 1) await this.addStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK);
      }
      if (!options.enableFirst) for (let pair = 0; pair < (options.enable ?? pairs); pair++) await this.setPairEnabled(pair, true);
      for (let pair = 0; pair < pairs; pair++) guest.driver.fillRx(pair);
      return guest;
    } catch (error) {
      if (!options.guest) guest.close();
      throw error;
    }
  }

  /** vhost_user_add_status: GET_STATUS, then SET_STATUS with the bits added. */
  async addStatus(bits: number): Promise<void> {
    const current = await this.getStatus();
    if ((current & bits) !== bits) await this.setStatus(current | bits);
  }

  /**
   * What QEMU 7.2 does at vm stop (vhost_net_stop): per pair, in order, for the
   * last pair SET_STATUS 0 first (with the STATUS feature), then GET_VRING_BASE
   * for each ring. Returns the bases by ring index, for startDevice({ bases }).
   */
  async stopDevice(pairs: number, options: { status?: boolean } = {}): Promise<number[]> {
    const status = options.status ?? (this.protocolFeatures & pf(ProtocolFeature.STATUS)) !== 0n;
    const bases: number[] = [];
    for (let pair = 0; pair < pairs; pair++) {
      if (status && pair === pairs - 1) await this.setStatus(0);
      bases[2 * pair] = await this.getVringBase(2 * pair);
      bases[2 * pair + 1] = await this.getVringBase(2 * pair + 1);
    }
    return bases;
  }
}
