// The virtio-net configuration space (virtio 1.x 5.1.4) as the bytes a
// transport reads: mac, status, max_virtqueue_pairs, mtu, speed, duplex, and
// with VIRTIO_NET_F_RSS offered the RSS limits (virtio 1.2).

export const VIRTIO_NET_S_LINK_UP = 1;
export const VIRTIO_NET_S_ANNOUNCE = 2;

export const CONFIG_MAC_OFFSET = 0;
export const CONFIG_STATUS_OFFSET = 6;
export const CONFIG_MAX_PAIRS_OFFSET = 8;
export const CONFIG_MTU_OFFSET = 10;
export const CONFIG_SPEED_OFFSET = 12;
export const CONFIG_DUPLEX_OFFSET = 16;
/** u8 rss_max_key_size: exists with VIRTIO_NET_F_RSS or VIRTIO_NET_F_HASH_REPORT. */
export const CONFIG_RSS_MAX_KEY_SIZE_OFFSET = 17;
/** le16 rss_max_indirection_table_length: exists with VIRTIO_NET_F_RSS. */
export const CONFIG_RSS_MAX_TABLE_LENGTH_OFFSET = 18;
/** le32 supported_hash_types: exists with VIRTIO_NET_F_RSS or VIRTIO_NET_F_HASH_REPORT. */
export const CONFIG_SUPPORTED_HASH_TYPES_OFFSET = 20;
/** mac through duplex: the fields every device has here. */
export const CONFIG_SIZE = 17;
/** ... and through supported_hash_types, with RSS offered. */
export const CONFIG_SIZE_RSS = 24;

/** What a device offering VIRTIO_NET_F_RSS puts in config space (5.1.4.1: key at least 40 bytes, table at least 128 entries). */
export interface RssLimits {
  maxKeySize: number;
  maxTableLength: number;
  supportedHashTypes: number;
}

export class NetConfigSpace {
  readonly #bytes = Buffer.alloc(CONFIG_SIZE_RSS);
  /** Bytes that exist: the RSS fields only when RSS is offered (beyond them a read gives zeros). */
  readonly size: number;
  #generation = 0;

  constructor(mac: Buffer, maxQueuePairs: number, mtu: number, rss?: RssLimits) {
    mac.copy(this.#bytes, CONFIG_MAC_OFFSET);
    this.#bytes.writeUInt16LE(maxQueuePairs, CONFIG_MAX_PAIRS_OFFSET);
    this.#bytes.writeUInt16LE(mtu, CONFIG_MTU_OFFSET);
    this.#bytes.writeUInt32LE(0xffffffff, CONFIG_SPEED_OFFSET); // speed unknown
    this.#bytes[CONFIG_DUPLEX_OFFSET] = 0xff; // duplex unknown
    this.size = CONFIG_SIZE;
    if (rss) {
      this.#bytes[CONFIG_RSS_MAX_KEY_SIZE_OFFSET] = rss.maxKeySize;
      this.#bytes.writeUInt16LE(rss.maxTableLength, CONFIG_RSS_MAX_TABLE_LENGTH_OFFSET);
      this.#bytes.writeUInt32LE(rss.supportedHashTypes >>> 0, CONFIG_SUPPORTED_HASH_TYPES_OFFSET);
      this.size = CONFIG_SIZE_RSS;
    }
  }

  /** Bumped on every change, so a driver reading several fields can tell it read a consistent set (4.1.4.3). */
  get generation(): number {
    return this.#generation;
  }

  read(offset: number, length: number): Buffer {
    const out = Buffer.alloc(length);
    if (offset < this.size) this.#bytes.copy(out, 0, offset, Math.min(this.size, offset + length));
    return out;
  }

  get mac(): Buffer {
    return Buffer.from(this.#bytes.subarray(CONFIG_MAC_OFFSET, CONFIG_MAC_OFFSET + 6));
  }

  set mac(mac: Buffer) {
    if (mac.equals(this.mac)) return;
    mac.copy(this.#bytes, CONFIG_MAC_OFFSET);
    this.#generation++;
  }

  get status(): number {
    return this.#bytes.readUInt16LE(CONFIG_STATUS_OFFSET);
  }

  /** Returns whether the value changed. */
  setStatus(status: number): boolean {
    if (status === this.status) return false;
    this.#bytes.writeUInt16LE(status, CONFIG_STATUS_OFFSET);
    this.#generation++;
    return true;
  }
}
