// VIRTIO_NET_CTRL_MQ_RSS_CONFIG (virtio 1.2 5.1.6.5.7.1): the guest's receive-side
// scaling configuration, decoded from the command's bytes (guest memory, so
// untrusted: every length is checked before anything is read), checked against
// what this device offers, and turned into the tap steering program's table.
//
//   struct virtio_net_rss_config {
//       le32 hash_types;
//       le16 indirection_table_mask;
//       le16 unclassified_queue;
//       le16 indirection_table[indirection_table_mask + 1];
//       le16 max_tx_vq;
//       u8 hash_key_length;
//       u8 hash_key_data[hash_key_length];
//   };
//
// Queue numbers are 0-based receive queue indexes, 0 being receiveq1 (1.2); later
// drafts write them as struct rss_rq_id, bits 1 to 16 of the virtqueue index with
// the top bit reserved as zero: the same numbers, since receiveq(k+1) is
// virtqueue 2k. Here that is the queue pair index.
import { RSS_KEY_BYTES, RSS_MAX_TABLE_ENTRIES, RSS_SUPPORTED_HASH_TYPES, type SteeringTable } from '../tap/steering';

/** The guest's RSS configuration, as decoded (not yet checked). */
export interface RssConfig {
  /** VIRTIO_NET_HASH_TYPE_* bits. */
  hashTypes: number;
  /** Receive queue (pair) indexes; indirection_table_mask + 1 of them. */
  table: number[];
  unclassified: number;
  /** How many transmit queues the driver may use (transmitq1 .. transmitq{maxTxVq}). */
  maxTxVq: number;
  /** hash_key_length bytes, as the guest gave them. */
  key: Buffer;
}

/** The fixed part before the table: hash_types, indirection_table_mask, unclassified_queue. */
const HEAD_BYTES = 8;
/** max_tx_vq and hash_key_length, after the table. */
const TRAILER_BYTES = 3;

/**
 * Decodes the command-specific data of RSS_CONFIG; undefined if it is not one
 * whole structure: shorter than its own lengths say (truncated), or longer
 * (trailing bytes). Nothing past `data` is read.
 */
export function parseRssConfig(data: Uint8Array): RssConfig | undefined {
  const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (b.length < HEAD_BYTES) return undefined;
  const hashTypes = b.readUInt32LE(0);
  const entries = b.readUInt16LE(4) + 1;
  const unclassified = b.readUInt16LE(6);
  const trailer = HEAD_BYTES + 2 * entries;
  if (trailer + TRAILER_BYTES > b.length) return undefined;
  const maxTxVq = b.readUInt16LE(trailer);
  const keyLength = b[trailer + 2]!;
  if (trailer + TRAILER_BYTES + keyLength !== b.length) return undefined;
  const table = new Array<number>(entries);
  for (let i = 0; i < entries; i++) table[i] = b.readUInt16LE(HEAD_BYTES + 2 * i);
  const key = Buffer.from(b.subarray(trailer + TRAILER_BYTES, trailer + TRAILER_BYTES + keyLength));
  return { hashTypes, table, unclassified, maxTxVq, key };
}

/**
 * Why this device refuses `config` (undefined: it takes it). The rules are the
 * driver's side of 5.1.6.5.7.1 and the limits the device publishes in config
 * space (5.1.4), which the device enforces so that a configuration it could not
 * steer by is VIRTIO_NET_ERR rather than frames sent astray:
 *  - only hash types the device supports (supported_hash_types);
 *  - indirection_table_mask + 1 a power of two, and the mask below
 *    rss_max_indirection_table_length (so at most 128 entries);
 *  - hash_key_length at most rss_max_key_size (a shorter key is allowed: the
 *    spec bounds it from above only, and the device uses the key it was given);
 *  - every table entry and unclassified_queue a receive queue of the device
 *    (below max_virtqueue_pairs);
 *  - max_tx_vq from 1 to max_virtqueue_pairs.
 */
export function rssConfigError(config: RssConfig, maxQueuePairs: number): string | undefined {
  if (config.hashTypes & ~RSS_SUPPORTED_HASH_TYPES) {
    return `hash types 0x${(config.hashTypes >>> 0).toString(16)} include unsupported ones (supported: 0x${RSS_SUPPORTED_HASH_TYPES.toString(16)})`;
  }
  const n = config.table.length;
  if (n < 1 || (n & (n - 1)) !== 0) return `an indirection table of ${n} entries (mask + 1 must be a power of two)`;
  if (n > RSS_MAX_TABLE_ENTRIES) return `an indirection table of ${n} entries (at most ${RSS_MAX_TABLE_ENTRIES})`;
  if (config.key.length > RSS_KEY_BYTES) return `a key of ${config.key.length} bytes (at most ${RSS_KEY_BYTES})`;
  const bad = config.table.findIndex((q) => !Number.isInteger(q) || q < 0 || q >= maxQueuePairs);
  if (bad >= 0) return `indirection table entry ${bad} names receive queue ${config.table[bad]} (the device has ${maxQueuePairs})`;
  if (!Number.isInteger(config.unclassified) || config.unclassified < 0 || config.unclassified >= maxQueuePairs) {
    return `unclassified_queue ${config.unclassified} (the device has ${maxQueuePairs} receive queues)`;
  }
  if (!Number.isInteger(config.maxTxVq) || config.maxTxVq < 1 || config.maxTxVq > maxQueuePairs) {
    return `max_tx_vq ${config.maxTxVq} (must be 1 to ${maxQueuePairs})`;
  }
  return undefined;
}

/**
 * The queue pairs a (valid) configuration needs in use: the transmit queues the
 * driver may use, and every receive queue it steers to (a pair is one tap queue,
 * its rx and tx rings together). Linux names only queues below max_tx_vq, so
 * this is max_tx_vq for it.
 */
export function rssQueuePairs(config: RssConfig): number {
  return Math.max(config.maxTxVq, config.unclassified + 1, ...config.table.map((q) => q + 1));
}

/**
 * The steering program's table for a (valid) configuration: the guest's table
 * as it is (a power of two of entries), its hash types, and its key padded with
 * zero bytes to the program's 40. Toeplitz takes, for each input bit, the 32 key
 * bits from that bit's position on: past the end of a shorter key those are
 * zero, which is what the padding gives.
 */
export function rssSteeringTable(config: RssConfig): SteeringTable {
  const key = Buffer.alloc(RSS_KEY_BYTES);
  config.key.copy(key);
  return { hashTypes: config.hashTypes, key, table: [...config.table], unclassified: config.unclassified };
}
