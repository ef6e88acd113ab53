// Where each packed ring stands, kept in a small file that outlives the daemon.
//
// A vhost-user frontend learns where a ring stopped only from GET_VRING_BASE.
// When the backend dies or is restarted, QEMU cannot ask; for a split ring it
// then resumes from the used index in guest memory, but a packed ring keeps no
// index there (QEMU's virtio_queue_packed_restore_last_avail_idx does nothing),
// so on reconnect QEMU sends the base it sent when the ring last started, long
// stale, and the guest's network would hang. The workers write each packed
// ring's used position here after every batch of used descriptors; a new
// daemon that is given that same stale base for the same ring in the same
// guest memory resumes where the last one stopped instead.
//
// The file: a 64-byte header, then one 48-byte record per ring:
//   u32 position      used slot | wrap << 15, after the last complete batch (written by the worker)
//   u32 pendingNext   where the batch being written ends (written by the worker before it)
//   u64 descAddr      guest-physical address of the descriptor ring
//   u64 memoryDev, memoryIno   the file the descriptor ring is in (st_dev, st_ino): which VM's memory
//   u32 size, u32 startBase    ring size; the base the frontend gave when the ring started
//   u32 flags         bit 0: the frontend does not know where the ring is (no GET_VRING_BASE since it started)
import fs from 'node:fs';

import { makeError } from '../errors';
import { GuestMemory } from '../virtio/guest-memory';

const MAGIC = Buffer.from('vhost-tap rings1');
const HEADER_BYTES = 64;
const RECORD_BYTES = 48;
const FILE_BYTES = 32768;
/** Records the file holds: 2 per queue pair of the tap's at most 256 queues. */
export const MAX_RECORDED_RINGS = (FILE_BYTES - HEADER_BYTES) / RECORD_BYTES | 0;
const FLAG_FRONTEND_UNAWARE = 1;
const WRAP = 0x8000;

/** A ring as the session knows it when it starts. */
export interface RecordedRing {
  descAddr: number;
  size: number;
  /** st_dev and st_ino of the file holding the descriptor ring. */
  memoryDev: bigint;
  memoryIno: bigint;
}

export class RingPositions {
  readonly path: string;
  readonly #file: GuestMemory;
  readonly #view: DataView;

  private constructor(path: string, file: GuestMemory) {
    this.path = path;
    this.#file = file;
    this.#view = file.view(0, FILE_BYTES);
  }

  /** Opens (or creates, mode 0600) the file at `path`; one that is not ours is started afresh. */
  static open(path: string): RingPositions {
    const fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600); // libuv adds O_CLOEXEC
    try {
      const stat = fs.fstatSync(fd);
      if (!stat.isFile()) throw makeError('EINVAL', `${path} is not a regular file`);
      const header = Buffer.alloc(MAGIC.length);
      const ours = stat.size === FILE_BYTES && fs.readSync(fd, header, 0, header.length, 0) === header.length && header.equals(MAGIC);
      if (!ours) {
        fs.ftruncateSync(fd, 0);
        fs.ftruncateSync(fd, FILE_BYTES);
        fs.writeSync(fd, MAGIC, 0, MAGIC.length, 0);
      }
      return new RingPositions(path, GuestMemory.fromRegions([{ guestPhysAddr: 0, size: FILE_BYTES, fd }]));
    } finally {
      fs.closeSync(fd); // the mapping stays
    }
  }

  /**
   * The base a packed ring should start from: where it stood when the daemon
   * that ran it last wrote it down, if the frontend now gives the same base it
   * gave then (it never learned better), for the same ring in the same memory;
   * else the frontend's `given` base. `usedFlagsAt(slot)` reads the flags of a
   * descriptor, to tell whether a batch that was being written when the last
   * daemon died got as far as its first descriptor.
   */
  resumeBase(index: number, ring: RecordedRing, given: number, usedFlagsAt: (slot: number) => number): number {
    const at = this.#record(index);
    if (at === undefined) return given;
    const v = this.#view;
    const matches = (v.getUint32(at + 40, true) & FLAG_FRONTEND_UNAWARE) !== 0 && v.getUint32(at + 36, true) === given &&
      v.getUint32(at + 32, true) === ring.size && v.getBigUint64(at + 8, true) === BigInt(ring.descAddr) &&
      v.getBigUint64(at + 16, true) === ring.memoryDev && v.getBigUint64(at + 24, true) === ring.memoryIno;
    if (!matches) return given;
    const position = v.getUint32(at, true);
    const pendingNext = v.getUint32(at + 4, true);
    if ((position & 0x7fff) >= ring.size || (pendingNext & 0x7fff) >= ring.size) return given;
    // The first descriptor of a batch gets its flags last: if they say used (AVAIL == USED ==
    // the wrap counter of `position`), the whole batch was written and the ring stands at its end.
    const wrap = (position & WRAP) !== 0;
    const flags = usedFlagsAt(position & 0x7fff);
    const firstWritten = pendingNext !== position && ((flags & 0x80) !== 0) === wrap && ((flags & 0x8000) !== 0) === wrap;
    const used = firstWritten ? pendingNext : position;
    // A daemon's stop completes every chain it took: the next chain to read is where the next used one goes.
    return (used | (used << 16)) >>> 0;
  }

  /** The ring starts (or starts again) from `given` as the frontend gave it: record what identifies it. */
  started(index: number, ring: RecordedRing, given: number): void {
    const at = this.#record(index);
    if (at === undefined) return;
    const v = this.#view;
    v.setBigUint64(at + 8, BigInt(ring.descAddr), true);
    v.setBigUint64(at + 16, ring.memoryDev, true);
    v.setBigUint64(at + 24, ring.memoryIno, true);
    v.setUint32(at + 32, ring.size, true);
    v.setUint32(at + 36, given >>> 0, true);
    v.setUint32(at + 40, FLAG_FRONTEND_UNAWARE, true);
  }

  /** The frontend learned where the ring stopped (GET_VRING_BASE), or reset it: nothing to resume from. */
  forget(index: number): void {
    const at = this.#record(index);
    if (at !== undefined) this.#view.setUint32(at + 40, 0, true);
  }

  forgetAll(): void {
    for (let i = 0; i < MAX_RECORDED_RINGS; i++) this.forget(i);
  }

  /** Where the ring's worker writes its position: the file and the record's offset in it. */
  record(index: number): { file: GuestMemory; offset: number } | undefined {
    const at = this.#record(index);
    return at === undefined ? undefined : { file: this.#file, offset: at };
  }

  close(): void {
    this.#file.close();
  }

  #record(index: number): number | undefined {
    return Number.isInteger(index) && index >= 0 && index < MAX_RECORDED_RINGS ? HEADER_BYTES + RECORD_BYTES * index : undefined;
  }
}
