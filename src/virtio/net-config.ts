// The virtio-net configuration space (virtio 1.x 5.1.4) as the bytes a
// transport reads: mac, status, max_virtqueue_pairs, mtu.

export const VIRTIO_NET_S_LINK_UP = 1;
export const VIRTIO_NET_S_ANNOUNCE = 2;

export const CONFIG_MAC_OFFSET = 0;
export const CONFIG_STATUS_OFFSET = 6;
export const CONFIG_MAX_PAIRS_OFFSET = 8;
export const CONFIG_MTU_OFFSET = 10;
/** mac, status, max_virtqueue_pairs, mtu, speed, duplex: the fields up to and including duplex. */
export const CONFIG_SIZE = 17;

export class NetConfigSpace {
  readonly #bytes = Buffer.alloc(CONFIG_SIZE);
  #generation = 0;

  constructor(mac: Buffer, maxQueuePairs: number, mtu: number) {
    mac.copy(this.#bytes, CONFIG_MAC_OFFSET);
    this.#bytes.writeUInt16LE(maxQueuePairs, CONFIG_MAX_PAIRS_OFFSET);
    this.#bytes.writeUInt16LE(mtu, CONFIG_MTU_OFFSET);
    this.#bytes.writeUInt32LE(0xffffffff, 12); // speed unknown
    this.#bytes[16] = 0xff; // duplex unknown
  }

  /** Bumped on every change, so a driver reading several fields can tell it read a consistent set (4.1.4.3). */
  get generation(): number {
    return this.#generation;
  }

  read(offset: number, length: number): Buffer {
    const out = Buffer.alloc(length);
    if (offset < CONFIG_SIZE) this.#bytes.copy(out, 0, offset, Math.min(CONFIG_SIZE, offset + length));
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
