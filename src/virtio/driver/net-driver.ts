import { makeError } from '../../errors';
import type { GuestMemory } from '../guest-memory';
import { GuestAllocator, alignUp } from './guest-allocator';
import { decodeNetHdr, encodeNetHdr, type NetHdrSize, type VirtioNetHdr } from './net-header';
import { PackedQueueDriver } from './packed-queue-driver';
import { PACKED_RING_BASE_FRESH } from '../ring-base';
import { SplitQueueDriver } from './split-queue-driver';
import type { Segment, VirtqueueDriver, VirtqueueOptions } from './virtqueue-driver';

/**
 * What the device side is given for one virtqueue: the ring addresses and the
 * two eventfds. For a packed ring (2.8) availAddr is the Driver Event
 * Suppression area and usedAddr the Device Event Suppression area, as
 * vhost-user's SET_VRING_ADDR and virtio-pci's queue_driver/queue_device carry them.
 */
export interface DeviceQueueConfig {
  size: number;
  descAddr: number;
  availAddr: number;
  usedAddr: number;
  kickFd: number;
  callFd: number;
  eventIdx: boolean;
  indirectDesc: boolean;
  /** Only on packed rings (VIRTIO_F_RING_PACKED negotiated), and then true. */
  packed?: true;
  /**
   * Only on packed rings: where the device starts, in vhost-user's packed ring
   * base encoding (SET_VRING_BASE), PACKED_RING_BASE_FRESH = 0x80008000 (both
   * indices 0, both wrap counters 1). A split ring leaves it out: it starts at
   * avail index 0, the default of the device side's lastAvailIdx.
   */
  lastAvailIdx?: number;
}

/** The negotiated feature bits this driver's behaviour depends on. */
export interface VirtioNetFeatures {
  /** VIRTIO_F_VERSION_1 */
  version1: boolean;
  /** VIRTIO_NET_F_MRG_RXBUF */
  mergeableRx: boolean;
  /** VIRTIO_F_EVENT_IDX */
  eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC */
  indirectDesc: boolean;
  /** VIRTIO_F_RING_PACKED: every queue is a packed ring (2.8). Default false: split rings (2.7). */
  ringPacked?: boolean;
}

export interface VirtioNetDriverOptions {
  memory: GuestMemory;
  /** Where rings and buffers go. Default: a new allocator over all of `memory`; share one when several drivers use the same memory. */
  allocator?: GuestAllocator;
  queuePairs: number;
  /** Queue Size of every virtqueue: 1..32768, a power of 2 unless features.ringPacked (2.8.10.1). */
  queueSize: number;
  features: VirtioNetFeatures;
  /** Bytes per rx chain. Default: a whole GSO frame plus header without mergeable rx, 1536 with it. */
  rxBufferSize?: number;
  /** Descriptors each rx chain is split into (chains spanning several descriptors). Default 1. */
  rxSegments?: number;
  /** Bytes per tx buffer, header included. Default: a whole GSO frame plus header. */
  txBufferSize?: number;
  /** Put the tx header in a descriptor of its own, the frame in a second. Default false. */
  txSplitHeader?: boolean;
  /** Use indirect tables for multi-descriptor chains. Default: whenever indirectDesc is negotiated. */
  useIndirect?: boolean;
  /** How long send waits for a free tx buffer before ETIMEDOUT. Default 5000. */
  timeoutMs?: number;
}

export interface ReceivedFrame {
  hdr: VirtioNetHdr;
  /** The Ethernet frame, header stripped; a copy, so it outlives the rx buffer. */
  frame: Buffer;
  /** Rx chains the frame spanned. */
  buffers: number;
}

export interface NetQueueStats {
  txFrames: number;
  txBytes: number;
  rxFrames: number;
  rxBytes: number;
  kicks: number;
}

export interface OutgoingFrame {
  frame: Uint8Array;
  hdr?: Partial<VirtioNetHdr>;
}

/** 5.1.6.3: the largest incoming GSO packet, 14 (Ethernet) + 40 (IPv6) + 65535 (payload). */
export const MAX_GSO_FRAME = 65589;
const MERGEABLE_RX_BUFFER = 1536;
const BUFFER_ALIGN = 64;

interface Resolved {
  queuePairs: number;
  queueSize: number;
  features: VirtioNetFeatures;
  hdrSize: NetHdrSize;
  rxBufferSize: number;
  rxSegments: number;
  rxIndirect: boolean;
  rxChains: number;
  txBufferSize: number;
  txSplitHeader: boolean;
  txIndirect: boolean;
  txChains: number;
  timeoutMs: number;
}

interface PartialFrame {
  hdr: VirtioNetHdr;
  chunks: Buffer[];
  /** Used entries still to come for this frame. */
  remaining: number;
}

interface QueuePair {
  rx: VirtqueueDriver<number>;
  tx: VirtqueueDriver<number>;
  rxBuffers: number[];
  rxFree: number[];
  txBuffers: number[];
  txFree: number[];
  partial: PartialFrame | undefined;
  ready: ReceivedFrame[];
  /** Serialises sends (and receives): each queue's call eventfd has one waiter at a time. */
  txChain: Promise<unknown>;
  rxChain: Promise<unknown>;
  stats: Omit<NetQueueStats, 'kicks'>;
}

/**
 * A guest-side virtio-net driver (virtio 1.x, 5.1) over split virtqueues (2.7),
 * or packed ones (2.8) with features.ringPacked, in guest memory: it plays the guest for tests and examples, driving a device
 * that is given `queueConfig(pair)`. Every rx and tx buffer is allocated once at
 * creation and recycled, so a long run allocates nothing more.
 */
export class VirtioNetDriver {
  #memory: GuestMemory;
  readonly queuePairs: number;
  readonly queueSize: number;
  readonly features: Readonly<VirtioNetFeatures>;
  /** 5.1.6: 12 bytes with VIRTIO_F_VERSION_1 or mergeable rx buffers, else 10. */
  readonly hdrSize: NetHdrSize;
  readonly rxBufferSize: number;
  readonly txBufferSize: number;
  readonly #config: Resolved;
  readonly #pairs: QueuePair[];
  #closed = false;

  private constructor(memory: GuestMemory, config: Resolved, pairs: QueuePair[]) {
    this.#memory = memory;
    this.#config = config;
    this.#pairs = pairs;
    this.queuePairs = config.queuePairs;
    this.queueSize = config.queueSize;
    this.features = Object.freeze({ ...config.features });
    this.hdrSize = config.hdrSize;
    this.rxBufferSize = config.rxBufferSize;
    this.txBufferSize = config.txBufferSize;
  }

  static create(options: VirtioNetDriverOptions): VirtioNetDriver {
    const config = resolve(options);
    const memory = options.memory;
    const allocator = options.allocator ?? new GuestAllocator(memory);
    const pairs: QueuePair[] = [];
    try {
      for (let i = 0; i < config.queuePairs; i++) pairs.push(createPair(memory, allocator, config));
    } catch (error) {
      for (const pair of pairs) {
        pair.rx.close();
        pair.tx.close();
      }
      throw error;
    }
    return new VirtioNetDriver(memory, config, pairs);
  }

  get memory(): GuestMemory {
    return this.#memory;
  }

  /**
   * The guest's RAM moved (a live migration in a harness): every queue goes on
   * at the same guest-physical addresses in `memory`, a copy of the old one.
   */
  moveTo(memory: GuestMemory): void {
    for (const p of this.#pairs) {
      p.rx.moveTo(memory);
      p.tx.moveTo(memory);
    }
    this.#memory = memory;
  }

  /** An upper bound of the guest memory `create` allocates with these options. */
  static memoryNeeded(options: Omit<VirtioNetDriverOptions, 'memory' | 'allocator'>): number {
    const c = resolve(options);
    // Each part plus what aligning it can waste. Split (2.7): descriptor table, available ring,
    // used ring. Packed (2.8.10.1): descriptor ring and the two 4-byte event suppression areas.
    const ringParts = c.features.ringPacked
      ? 16 * c.queueSize + 15 + 2 * (4 + 3)
      : 16 * c.queueSize + 15 + 6 + 2 * c.queueSize + 1 + 6 + 8 * c.queueSize + 3;
    const ringBytes = (segmentsPerIndirectTable: number, indirect: boolean): number =>
      ringParts + (indirect ? c.queueSize * (16 * segmentsPerIndirectTable + 15) : 0);
    const perPair =
      ringBytes(c.rxSegments, c.rxIndirect) + ringBytes(c.txSplitHeader ? 2 : 1, c.txIndirect) +
      c.rxChains * (c.rxBufferSize + BUFFER_ALIGN - 1) + c.txChains * (c.txBufferSize + BUFFER_ALIGN - 1);
    return perPair * c.queuePairs;
  }

  /** Virtqueue 2*pair: receiveq(pair+1). */
  rxQueue(pair: number): VirtqueueDriver<number> {
    return this.#pair(pair).rx;
  }

  /** Virtqueue 2*pair + 1: transmitq(pair+1). */
  txQueue(pair: number): VirtqueueDriver<number> {
    return this.#pair(pair).tx;
  }

  queueConfig(pair: number): { rx: DeviceQueueConfig; tx: DeviceQueueConfig } {
    const p = this.#pair(pair);
    const describe = (queue: VirtqueueDriver<number>): DeviceQueueConfig => ({
      ...queue.layout,
      kickFd: queue.kickEvent.fd,
      callFd: queue.callEvent.fd,
      eventIdx: this.features.eventIdx,
      indirectDesc: this.features.indirectDesc,
      // The split ring's description keeps its shape; a packed ring adds what tells it apart.
      ...(queue.packed ? { packed: true as const, lastAvailIdx: PACKED_RING_BASE_FRESH } : {}),
    });
    return { rx: describe(p.rx), tx: describe(p.tx) };
  }

  /** Posts every idle rx buffer that fits, publishes, kicks if the device asks; returns how many were posted. */
  fillRx(pair: number): number {
    const p = this.#pair(pair);
    const { rxBufferSize, rxSegments, rxIndirect } = this.#config;
    let posted = 0;
    while (p.rxFree.length > 0) {
      const index = p.rxFree[p.rxFree.length - 1]!;
      const segments = splitBuffer(p.rxBuffers[index]!, rxBufferSize, rxSegments, true);
      if (!p.rx.add(segments, index, { indirect: rxIndirect })) break;
      p.rxFree.pop();
      posted++;
    }
    if (posted > 0) p.rx.publishAndKick();
    return posted;
  }

  /** Sends one frame: one chain, published and kicked (if the device asks) before this resolves. */
  send(pair: number, frame: Uint8Array, hdr?: Partial<VirtioNetHdr>): Promise<void> {
    return this.sendBatch(pair, [{ frame, hdr }]);
  }

  /**
   * Sends frames in order: adds as many as there are free tx buffers, publishes
   * and kicks once, and repeats after the device has used some. Rejects with
   * ETIMEDOUT when no tx buffer frees up within `timeoutMs`.
   */
  sendBatch(pair: number, frames: readonly OutgoingFrame[]): Promise<void> {
    const p = this.#pair(pair);
    if (!Array.isArray(frames)) return Promise.reject(makeError('EINVAL', 'frames must be an array of { frame, hdr? }'));
    let headers: Buffer[];
    try {
      headers = frames.map(({ frame, hdr }, i) => {
        if (!(frame instanceof Uint8Array) || frame.length === 0) throw makeError('EINVAL', `frame ${i} must be a non-empty Uint8Array`);
        if (frame.length > this.txBufferSize - this.hdrSize) {
          throw makeError('EMSGSIZE', `frame ${i} is ${frame.length} bytes; tx buffers hold ${this.txBufferSize - this.hdrSize} after the header (txBufferSize)`);
        }
        return encodeNetHdr({ ...hdr, numBuffers: 0 }, this.hdrSize);
      });
    } catch (error) {
      return Promise.reject(error);
    }
    return serialise(p, 'txChain', async () => {
      let next = 0;
      while (next < frames.length) {
        let added = 0;
        while (next < frames.length) {
          if (p.txFree.length === 0) this.#reapTx(p);
          const slot = p.txFree.pop();
          if (slot === undefined) break;
          this.#postTx(p, slot, headers[next]!, frames[next]!.frame);
          next++;
          added++;
        }
        if (added > 0) p.tx.publishAndKick();
        if (next < frames.length) await this.#waitForTxBuffer(p);
      }
    });
  }

  /** Reaps used tx chains, freeing their buffers; returns how many completed. */
  reapTx(pair: number): number {
    return this.#reapTx(this.#pair(pair));
  }

  /**
   * Returns the frames the device has delivered (at most `max`), waiting up to
   * `timeoutMs` (default 1000) for the first one; [] on timeout. With mergeable rx
   * a frame spans hdr.numBuffers used entries; a frame whose entries have not all
   * arrived yet is kept for the next call. Refills the rx queue after reaping.
   */
  receive(pair: number, options?: { timeoutMs?: number; max?: number }): Promise<ReceivedFrame[]> {
    const p = this.#pair(pair);
    const timeoutMs = options?.timeoutMs ?? 1000;
    const max = options?.max ?? Infinity;
    if (!(max >= 1)) return Promise.reject(makeError('EINVAL', `max must be at least 1, got ${max}`));
    return serialise(p, 'rxChain', async () => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        this.#reapRx(pair, p);
        if (p.ready.length > 0) {
          p.rx.disableCalls();
          return p.ready.splice(0, max);
        }
        const remaining = deadline - Date.now();
        if (remaining <= 0) return [];
        await p.rx.waitUsed(remaining);
        if (this.#closed) return [];
      }
    });
  }

  stats(pair: number): NetQueueStats {
    const p = this.#pair(pair);
    return { ...p.stats, kicks: p.rx.kicks + p.tx.kicks };
  }

  /** Closes every queue's eventfds. Guest memory stays the caller's. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const p of this.#pairs) {
      p.rx.close();
      p.tx.close();
    }
  }

  #pair(pair: number): QueuePair {
    if (this.#closed) throw makeError('EBADF', 'virtio-net driver is closed');
    const p = Number.isInteger(pair) ? this.#pairs[pair] : undefined;
    if (!p) throw makeError('EINVAL', `queue pair must be an integer in 0..${this.#pairs.length - 1}, got ${pair}`);
    return p;
  }

  #postTx(p: QueuePair, slot: number, header: Buffer, frame: Uint8Array): void {
    const gpa = p.txBuffers[slot]!;
    const bytes = this.#memory.bytes(gpa, this.hdrSize + frame.length);
    bytes.set(header, 0);
    bytes.set(frame, this.hdrSize);
    const segments: Segment[] = this.#config.txSplitHeader
      ? [{ addr: gpa, len: this.hdrSize, writable: false }, { addr: gpa + this.hdrSize, len: frame.length, writable: false }]
      : [{ addr: gpa, len: this.hdrSize + frame.length, writable: false }];
    if (!p.tx.add(segments, slot, { indirect: this.#config.txIndirect })) {
      p.txFree.push(slot);
      throw makeError('EIO', 'a free tx buffer found no free descriptors: tx pool and queue size disagree (driver bug)');
    }
    p.stats.txFrames++;
    p.stats.txBytes += frame.length;
  }

  #reapTx(p: QueuePair): number {
    const used = p.tx.takeUsed();
    for (const { token } of used) p.txFree.push(token);
    return used.length;
  }

  async #waitForTxBuffer(p: QueuePair): Promise<void> {
    const deadline = Date.now() + this.#config.timeoutMs;
    for (;;) {
      if (this.#reapTx(p) > 0) return;
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw makeError('ETIMEDOUT', `no tx buffer came back from the device within ${this.#config.timeoutMs} ms (${p.tx.inFlight} in flight): is the device running and kicked?`);
      }
      await p.tx.waitUsed(remaining);
      if (this.#closed) throw makeError('EBADF', 'virtio-net driver was closed while a send waited for a tx buffer');
      // Transmit completions are reaped on the send path; no notifications otherwise.
      p.tx.disableCalls();
    }
  }

  #reapRx(pair: number, p: QueuePair): void {
    const used = p.rx.takeUsed();
    const { hdrSize } = this;
    const mergeable = this.features.mergeableRx;
    try {
      used.forEach(({ token, len }, i) => {
        const gpa = p.rxBuffers[token]!;
        if (p.partial) {
          const partial = p.partial;
          partial.remaining--;
          this.#assertFullBuffer(len, partial.remaining > 0);
          partial.chunks.push(Buffer.from(this.#memory.bytes(gpa, len)));
          if (partial.remaining === 0) {
            p.partial = undefined;
            this.#deliver(p, partial.hdr, Buffer.concat(partial.chunks), partial.hdr.numBuffers);
          }
          return;
        }
        if (len < hdrSize) throw protocolError(`rx used len ${len} is shorter than the ${hdrSize}-byte virtio_net_hdr`);
        const hdr = decodeNetHdr(this.#memory.bytes(gpa, hdrSize), hdrSize);
        const data = Buffer.from(this.#memory.bytes(gpa + hdrSize, len - hdrSize));
        if (!mergeable) {
          // 5.1.6.4.2: without mergeable buffers the device MUST set num_buffers to 1.
          if (hdr.numBuffers !== 1) throw protocolError(`num_buffers is ${hdr.numBuffers} without VIRTIO_NET_F_MRG_RXBUF; the device must set it to 1`);
          this.#deliver(p, hdr, data, 1);
          return;
        }
        // Entries of this frame can only be the rest of this batch or buffers still posted.
        const canStillCome = used.length - i + p.rx.inFlight;
        if (hdr.numBuffers === 0 || hdr.numBuffers > canStillCome) {
          throw protocolError(`num_buffers is ${hdr.numBuffers}, but only ${canStillCome} rx buffers could hold this frame`);
        }
        this.#assertFullBuffer(len, hdr.numBuffers > 1);
        if (hdr.numBuffers === 1) this.#deliver(p, hdr, data, 1);
        else p.partial = { hdr, chunks: [data], remaining: hdr.numBuffers - 1 };
      });
    } catch (error) {
      p.partial = undefined;
      throw error;
    } finally {
      for (const { token } of used) p.rxFree.push(token);
    }
    this.fillRx(pair);
  }

  /** 5.1.6.4.2: every buffer of a mergeable frame but the last is used up to its full length. */
  #assertFullBuffer(len: number, notLast: boolean): void {
    if (notLast && len !== this.rxBufferSize) {
      throw protocolError(`a mergeable rx buffer that is not the frame's last came back with ${len} of ${this.rxBufferSize} bytes; all but the last must be full`);
    }
  }

  #deliver(p: QueuePair, hdr: VirtioNetHdr, frame: Buffer, buffers: number): void {
    p.ready.push({ hdr, frame, buffers });
    p.stats.rxFrames++;
    p.stats.rxBytes += frame.length;
  }
}

function resolve(options: Omit<VirtioNetDriverOptions, 'memory' | 'allocator'>): Resolved {
  const { queuePairs, queueSize, features } = options;
  if (!Number.isInteger(queuePairs) || queuePairs < 1 || queuePairs > 0x8000) {
    throw makeError('EINVAL', `queuePairs must be an integer in 1..32768 (max_virtqueue_pairs), got ${queuePairs}`);
  }
  if (!features || typeof features !== 'object') throw makeError('EINVAL', 'features { version1, mergeableRx, eventIdx, indirectDesc } are required');
  if (features.ringPacked) {
    // 2.8.10.1: a packed ring's Queue Size need not be a power of 2.
    if (!Number.isInteger(queueSize) || queueSize < 1 || queueSize > 32768) {
      throw makeError('EINVAL', `queueSize must be an integer in 1..32768, got ${queueSize}`);
    }
  } else if (!Number.isInteger(queueSize) || queueSize < 1 || queueSize > 32768 || (queueSize & (queueSize - 1)) !== 0) {
    throw makeError('EINVAL', `queueSize must be a power of 2 in 1..32768 (any size with ringPacked), got ${queueSize}`);
  }
  const hdrSize: NetHdrSize = features.version1 || features.mergeableRx ? 12 : 10;
  const wholeFrame = alignUp(MAX_GSO_FRAME + hdrSize, BUFFER_ALIGN);
  const useIndirect = (options.useIndirect ?? features.indirectDesc) && features.indirectDesc;
  if (options.useIndirect && !features.indirectDesc) throw makeError('EINVAL', 'useIndirect needs the indirectDesc feature');

  const rxSegments = options.rxSegments ?? 1;
  if (!Number.isInteger(rxSegments) || rxSegments < 1 || rxSegments > queueSize) {
    throw makeError('EINVAL', `rxSegments must be an integer in 1..${queueSize} (a chain may not be longer than the queue), got ${rxSegments}`);
  }
  const rxBufferSize = options.rxBufferSize ?? (features.mergeableRx ? MERGEABLE_RX_BUFFER : wholeFrame);
  // 5.1.6.3.1: every rx buffer holds at least the header; here also at least one byte per descriptor.
  if (!Number.isInteger(rxBufferSize) || rxBufferSize < Math.max(hdrSize + 1, rxSegments) || rxBufferSize > 0xffffffff) {
    throw makeError('EINVAL', `rxBufferSize must be an integer of at least ${Math.max(hdrSize + 1, rxSegments)} (header plus data, one byte per segment), got ${rxBufferSize}`);
  }
  const txBufferSize = options.txBufferSize ?? wholeFrame;
  if (!Number.isInteger(txBufferSize) || txBufferSize <= hdrSize || txBufferSize > 0xffffffff) {
    throw makeError('EINVAL', `txBufferSize must be an integer above the ${hdrSize}-byte header, got ${txBufferSize}`);
  }
  const txSplitHeader = options.txSplitHeader ?? false;
  const timeoutMs = options.timeoutMs ?? 5000;
  if (!(timeoutMs >= 0)) throw makeError('EINVAL', `timeoutMs must be non-negative, got ${timeoutMs}`);

  const rxIndirect = useIndirect && rxSegments > 1;
  const txIndirect = useIndirect && txSplitHeader;
  // As many buffers as chains can be outstanding at once: that is all the ring can use.
  const rxChains = rxIndirect ? queueSize : Math.floor(queueSize / rxSegments);
  const txChains = txIndirect || !txSplitHeader ? queueSize : Math.floor(queueSize / 2);
  if (txChains === 0) throw makeError('EINVAL', 'txSplitHeader needs two descriptors per chain: use a queue size of at least 2 or indirect descriptors');
  return {
    queuePairs, queueSize, features: { ...features }, hdrSize,
    rxBufferSize, rxSegments, rxIndirect, rxChains,
    txBufferSize, txSplitHeader, txIndirect, txChains, timeoutMs,
  };
}

function createPair(memory: GuestMemory, allocator: GuestAllocator, c: Resolved): QueuePair {
  const common = { size: c.queueSize, eventIdx: c.features.eventIdx, indirectDesc: c.features.indirectDesc };
  const makeQueue = (options: VirtqueueOptions): VirtqueueDriver<number> =>
    c.features.ringPacked ? new PackedQueueDriver<number>(memory, allocator, options) : new SplitQueueDriver<number>(memory, allocator, options);
  const rx = makeQueue({ ...common, maxIndirectSegments: Math.min(c.queueSize, c.rxSegments) });
  let tx: VirtqueueDriver<number> | undefined;
  try {
    // Legacy devices may put anything in a transmit used len (5.1.6, legacy): check it only for 1.x.
    tx = makeQueue({ ...common, maxIndirectSegments: Math.min(c.queueSize, 2), checkUsedLen: c.features.version1 });
    const rxBuffers = Array.from({ length: c.rxChains }, () => allocator.alloc(c.rxBufferSize, BUFFER_ALIGN));
    const txBuffers = Array.from({ length: c.txChains }, () => allocator.alloc(c.txBufferSize, BUFFER_ALIGN));
    tx.disableCalls();
    return {
      rx, tx, rxBuffers, txBuffers,
      rxFree: rxBuffers.map((_, i) => i).reverse(),
      txFree: txBuffers.map((_, i) => i).reverse(),
      partial: undefined,
      ready: [],
      txChain: Promise.resolve(),
      rxChain: Promise.resolve(),
      stats: { txFrames: 0, txBytes: 0, rxFrames: 0, rxBytes: 0 },
    };
  } catch (error) {
    rx.close();
    tx?.close();
    throw error;
  }
}

/** Splits [gpa, gpa + size) into exactly `count` descriptors whose lengths differ by at most one byte. */
function splitBuffer(gpa: number, size: number, count: number, writable: boolean): Segment[] {
  const base = Math.floor(size / count);
  const longer = size % count;
  const segments: Segment[] = [];
  let offset = 0;
  for (let i = 0; i < count; i++) {
    const len = base + (i < longer ? 1 : 0);
    segments.push({ addr: gpa + offset, len, writable });
    offset += len;
  }
  return segments;
}

/** Runs `task` after the previous one on the same queue has settled. */
function serialise<R>(p: QueuePair, key: 'txChain' | 'rxChain', task: () => Promise<R>): Promise<R> {
  const run = p[key].then(task, task);
  p[key] = run.catch(() => undefined);
  return run;
}

function protocolError(message: string): Error {
  return makeError('EPROTO', `device bug on a receive queue: ${message}`);
}
