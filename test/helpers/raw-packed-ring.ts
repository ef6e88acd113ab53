// Writing packed virtqueue structures straight into guest memory (virtio 1.2
// 2.8), bypassing any driver's checks, so tests can hand the device what a
// buggy or hostile guest would write, and read back exactly what the device
// wrote. Flags words go through Atomics so the device thread sees a
// descriptor's body before its flags. Little-endian host assumed, as the device does.
import type { GuestMemory } from '../../src/virtio/guest-memory';

export const PACKED_DESC_F_NEXT = 1;
export const PACKED_DESC_F_WRITE = 2;
export const PACKED_DESC_F_INDIRECT = 4;
export const PACKED_DESC_F_AVAIL = 1 << 7;
export const PACKED_DESC_F_USED = 1 << 15;
export const EVENT_FLAGS_ENABLE = 0;
export const EVENT_FLAGS_DISABLE = 1;
export const EVENT_FLAGS_DESC = 2;

export interface PackedLayout {
  size: number;
  /** Descriptor ring. */
  descAddr: number;
  /** Driver event suppression area (the driver writes it). */
  availAddr: number;
  /** Device event suppression area (the device writes it). */
  usedAddr: number;
}

export interface RawPackedDesc {
  addr: number | bigint;
  len: number;
  /** NEXT, WRITE, INDIRECT; AVAIL/USED are added from the wrap counter unless `rawFlags` is set. */
  flags?: number;
  id?: number;
  /** Written as they are, AVAIL and USED included: for descriptors the wrap counter does not bless. */
  rawFlags?: number;
}

export interface UsedDesc {
  id: number;
  len: number;
  flags: number;
}

/** Writes packed descriptors at `gpa` (an indirect table): flags as given, no AVAIL/USED. */
export function writePackedTable(memory: GuestMemory, gpa: number, descs: readonly RawPackedDesc[]): void {
  const view = memory.view(gpa, 16 * descs.length);
  descs.forEach((d, i) => {
    view.setBigUint64(16 * i, BigInt(d.addr), true);
    view.setUint32(16 * i + 8, d.len >>> 0, true);
    view.setUint16(16 * i + 12, d.id ?? 0, true);
    view.setUint16(16 * i + 14, d.rawFlags ?? d.flags ?? 0, true);
  });
}

/** The driver's side of one packed virtqueue, raw: it writes what it is told, checks nothing. */
export class RawPackedRing {
  readonly memory: GuestMemory;
  readonly layout: PackedLayout;
  /** Next slot to make available, and the driver ring wrap counter (2.8.1: starts at 1). */
  next = 0;
  wrap = true;
  /** Next slot the device writes a used descriptor into, and the used wrap counter. */
  nextUsed = 0;
  usedWrap = true;
  readonly #view: DataView;
  readonly #flags16: Uint16Array;
  readonly #driverEvent16: Uint16Array;
  readonly #deviceEvent16: Uint16Array;

  constructor(memory: GuestMemory, layout: PackedLayout) {
    this.memory = memory;
    this.layout = layout;
    this.#view = memory.view(layout.descAddr, 16 * layout.size);
    const ring = memory.bytes(layout.descAddr, 16 * layout.size);
    this.#flags16 = new Uint16Array(ring.buffer, ring.byteOffset, ring.length >> 1);
    const driver = memory.bytes(layout.availAddr, 4);
    this.#driverEvent16 = new Uint16Array(driver.buffer, driver.byteOffset, 2);
    const device = memory.bytes(layout.usedAddr, 4);
    this.#deviceEvent16 = new Uint16Array(device.buffer, device.byteOffset, 2);
  }

  get size(): number {
    return this.layout.size;
  }

  /** The ring base a device resumes this ring from (vhost-user's packed encoding), as things stand. */
  get base(): number {
    return (this.next | (this.wrap ? 0x8000 : 0) | ((this.nextUsed | (this.usedWrap ? 0x8000 : 0)) << 16)) >>> 0;
  }

  /**
   * Makes one chain available from the next slot: every descriptor's body, the
   * later descriptors' flags, then the head's flags last (2.8.6). Returns the slots it took.
   */
  post(descs: readonly RawPackedDesc[], options: { headLast?: boolean } = {}): number {
    const slots: { slot: number; flags: number }[] = [];
    let slot = this.next;
    let wrap = this.wrap;
    descs.forEach((d, i) => {
      const flags = d.rawFlags ?? ((d.flags ?? 0) | (i < descs.length - 1 && !((d.flags ?? 0) & PACKED_DESC_F_INDIRECT) ? PACKED_DESC_F_NEXT : 0) |
        (wrap ? PACKED_DESC_F_AVAIL : PACKED_DESC_F_USED));
      this.#view.setBigUint64(16 * slot, BigInt(d.addr), true);
      this.#view.setUint32(16 * slot + 8, d.len >>> 0, true);
      this.#view.setUint16(16 * slot + 12, d.id ?? 0, true);
      slots.push({ slot, flags });
      slot++;
      if (slot === this.size) {
        slot = 0;
        wrap = !wrap;
      }
    });
    const headLast = options.headLast ?? true;
    const order = headLast ? [...slots.slice(1), slots[0]!] : slots;
    for (const s of order) Atomics.store(this.#flags16, 8 * s.slot + 7, s.flags);
    this.next = slot;
    this.wrap = wrap;
    return descs.length;
  }

  /** The descriptor at `slot` as it is now. */
  read(slot: number): UsedDesc & { addr: bigint } {
    const flags = Atomics.load(this.#flags16, 8 * slot + 7);
    return { addr: this.#view.getBigUint64(16 * slot, true), len: this.#view.getUint32(16 * slot + 8, true), id: this.#view.getUint16(16 * slot + 12, true), flags };
  }

  /** The next used descriptor if the device has written it (2.8.2: AVAIL == USED == used wrap counter). */
  peekUsed(): UsedDesc | undefined {
    const d = this.read(this.nextUsed);
    const avail = (d.flags & PACKED_DESC_F_AVAIL) !== 0;
    const used = (d.flags & PACKED_DESC_F_USED) !== 0;
    if (avail !== this.usedWrap || used !== this.usedWrap) return undefined;
    return { id: d.id, len: d.len, flags: d.flags };
  }

  /** Takes the next used descriptor, skipping the `slots` the chain of its id took. */
  takeUsed(slotsOf: (id: number) => number): UsedDesc | undefined {
    const d = this.peekUsed();
    if (!d) return undefined;
    this.nextUsed += slotsOf(d.id);
    while (this.nextUsed >= this.size) {
      this.nextUsed -= this.size;
      this.usedWrap = !this.usedWrap;
    }
    return d;
  }

  /** Driver event suppression: what the device should do about calls. */
  setDriverEvent(flags: number, offWrap = 0): void {
    Atomics.store(this.#driverEvent16, 0, offWrap);
    Atomics.store(this.#driverEvent16, 1, flags);
  }

  /** Device event suppression as the device wrote it: whether, and from where, to kick. */
  deviceEvent(): { flags: number; offWrap: number } {
    return { offWrap: Atomics.load(this.#deviceEvent16, 0), flags: Atomics.load(this.#deviceEvent16, 1) };
  }
}
