import { makeError } from '../../errors';
import {
  VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK, VIRTIO_NET_CTRL_GUEST_OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET,
  VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_RSS_CONFIG, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
  VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_ALLMULTI, VIRTIO_NET_CTRL_RX_PROMISC,
} from '../control-queue';
import type { GuestMemory } from '../guest-memory';
import type { GuestAllocator } from './guest-allocator';
import { PackedQueueDriver } from './packed-queue-driver';
import { SplitQueueDriver } from './split-queue-driver';
import type { VirtqueueDriver } from './virtqueue-driver';

/** Largest command this driver sends (class, command, data). */
const MAX_COMMAND = 4096;

/** What a driver sends with VIRTIO_NET_CTRL_MQ_RSS_CONFIG (virtio 1.2 5.1.6.5.7.1). */
export interface RssSettings {
  /** VIRTIO_NET_HASH_TYPE_* bits (0: no hash, every frame to `unclassified`). */
  hashTypes: number;
  /** The Toeplitz key: hash_key_length bytes, at most rss_max_key_size. */
  key: Uint8Array;
  /** Receive queue indexes (0 is receiveq1); indirection_table_mask + 1 of them. */
  table: readonly number[];
  /** The receive queue for frames with no hash. Default 0. */
  unclassified?: number;
  /** How many transmit queues the driver may use. */
  maxTxVq: number;
}

/**
 * struct virtio_net_rss_config, little-endian, as the driver lays it out: the
 * table's length gives indirection_table_mask, the key's hash_key_length. Values
 * are written as given (masked to their field), so tests can send what a
 * careless driver would.
 */
export function encodeRssConfig(settings: RssSettings): Buffer {
  const n = settings.table.length;
  const out = Buffer.alloc(8 + 2 * n + 3 + settings.key.length);
  out.writeUInt32LE(settings.hashTypes >>> 0, 0);
  out.writeUInt16LE((n - 1) & 0xffff, 4);
  out.writeUInt16LE((settings.unclassified ?? 0) & 0xffff, 6);
  settings.table.forEach((q, i) => out.writeUInt16LE(q & 0xffff, 8 + 2 * i));
  out.writeUInt16LE(settings.maxTxVq & 0xffff, 8 + 2 * n);
  out[8 + 2 * n + 2] = settings.key.length & 0xff;
  out.set(settings.key, 8 + 2 * n + 3);
  return out;
}

/**
 * The guest side of the control virtqueue (virtio 1.x 5.1.6.5): one command at
 * a time, a readable request and a one-byte writable ack, as Linux does.
 */
export class ControlQueueDriver {
  readonly queue: VirtqueueDriver<number>;
  readonly #request: number;
  readonly #ack: number;
  #memory: GuestMemory;
  #busy: Promise<unknown> = Promise.resolve();

  /** `packed`: a packed ring (VIRTIO_F_RING_PACKED, 2.8); default a split one. */
  constructor(memory: GuestMemory, allocator: GuestAllocator, options: { size: number; eventIdx: boolean; indirectDesc: boolean; packed?: boolean }) {
    this.#memory = memory;
    const { packed, ...queueOptions } = options;
    this.queue = packed ? new PackedQueueDriver<number>(memory, allocator, queueOptions) : new SplitQueueDriver<number>(memory, allocator, queueOptions);
    this.#request = allocator.alloc(MAX_COMMAND, 8);
    this.#ack = allocator.alloc(8, 8);
  }

  /** The guest's RAM moved (a live migration in a harness): go on in `memory`, a copy of the old one. */
  moveTo(memory: GuestMemory): void {
    this.queue.moveTo(memory);
    this.#memory = memory;
  }

  /**
   * Sends one command and resolves with the device's ack (0 OK, 1 ERR).
   * `layout` lets tests send malformed chains: the request split or truncated, no ack byte.
   */
  command(cls: number, command: number, data: Uint8Array = new Uint8Array(0), options: { timeoutMs?: number; ackBytes?: number; requestBytes?: number } = {}): Promise<number> {
    const run = async (): Promise<number> => {
      const request = Buffer.concat([Buffer.from([cls, command]), data]);
      if (request.length > MAX_COMMAND) throw makeError('EMSGSIZE', `control command of ${request.length} bytes is over ${MAX_COMMAND}`);
      this.#memory.bytes(this.#request, request.length).set(request);
      const ack = this.#memory.bytes(this.#ack, 1);
      ack[0] = 0xff;
      const ackBytes = options.ackBytes ?? 1;
      const segments = [{ addr: this.#request, len: options.requestBytes ?? request.length, writable: false }];
      if (ackBytes > 0) segments.push({ addr: this.#ack, len: ackBytes, writable: true });
      if (!this.queue.add(segments, 0)) throw makeError('EBUSY', 'the control queue is full');
      this.queue.publishAndKick();
      const deadline = Date.now() + (options.timeoutMs ?? 2000);
      for (;;) {
        const used = this.queue.takeUsed();
        if (used.length > 0) return ackBytes > 0 && used[0]!.len >= 1 ? ack[0]! : -1;
        const remaining = deadline - Date.now();
        if (remaining <= 0) throw makeError('ETIMEDOUT', 'the device did not answer the control command');
        await this.queue.waitUsed(remaining);
      }
    };
    const result = this.#busy.then(run, run);
    this.#busy = result.catch(() => undefined);
    return result;
  }

  setQueuePairs(pairs: number): Promise<number> {
    const data = Buffer.alloc(2);
    data.writeUInt16LE(pairs & 0xffff);
    return this.command(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, data);
  }

  /** VIRTIO_NET_CTRL_MQ_RSS_CONFIG; needs VIRTIO_NET_F_RSS negotiated. */
  setRss(settings: RssSettings): Promise<number> {
    return this.command(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_RSS_CONFIG, encodeRssConfig(settings));
  }

  setMac(mac: Uint8Array): Promise<number> {
    return this.command(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, mac);
  }

  setRxMode(mode: 'promisc' | 'allmulti', on: boolean): Promise<number> {
    return this.command(VIRTIO_NET_CTRL_RX, mode === 'promisc' ? VIRTIO_NET_CTRL_RX_PROMISC : VIRTIO_NET_CTRL_RX_ALLMULTI, Buffer.from([on ? 1 : 0]));
  }

  announceAck(): Promise<number> {
    return this.command(VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK);
  }

  setGuestOffloads(offloads: bigint): Promise<number> {
    const data = Buffer.alloc(8);
    data.writeBigUInt64LE(offloads);
    return this.command(VIRTIO_NET_CTRL_GUEST_OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, data);
  }

  close(): void {
    this.queue.close();
  }
}
