// The tap's steering program: which queue each frame from the host goes to.
//
// Without it, tun hashes each flow over the queues attached, and a queue taken
// away loses what was already steered into it (detaching purges its backlog).
// With it (native/addon/bpf/steering.bpf.c, attached with TUNSETSTEERINGEBPF), the
// queue is the entry of an indirection table that the control plane writes,
// picked by the Toeplitz hash of virtio-net RSS: a queue leaves the table first,
// and is detached only once nothing can still be on its way to it. The same
// table carries a guest's own RSS configuration (VIRTIO_NET_F_RSS).
//
// Loading the program takes CAP_BPF (or CAP_SYS_ADMIN, or unprivileged BPF).
// Changing its table needs only the map fd, which a privileged helper can hand
// to an unprivileged backend with the queue fds.
import { randomBytes } from 'node:crypto';

import { errorCode, makeError } from '../errors';
import { native } from '../native';
import type { Tap } from './tap';

/** virtio 1.2 5.1.6.5.7.1 hash types. Offered: the ones without extension-header variants. */
export const RSS_HASH_TYPE_IPV4 = 1 << 0;
export const RSS_HASH_TYPE_TCPV4 = 1 << 1;
export const RSS_HASH_TYPE_UDPV4 = 1 << 2;
export const RSS_HASH_TYPE_IPV6 = 1 << 3;
export const RSS_HASH_TYPE_TCPV6 = 1 << 4;
export const RSS_HASH_TYPE_UDPV6 = 1 << 5;
export const RSS_SUPPORTED_HASH_TYPES = 0x3f;
/** rss_max_key_size and rss_max_indirection_table_length of the program. */
export const RSS_KEY_BYTES = 40;
export const RSS_MAX_TABLE_ENTRIES = 128;

/** What the program does with a frame: hash it over `hashTypes` with `key`, take `table[hash & (table.length - 1)]`. */
export interface SteeringTable {
  hashTypes: number;
  /** 40 bytes. */
  key: Uint8Array;
  /** Queue indexes (tun's numbering of attached queues); a power of two of them, at most 128. */
  table: readonly number[];
  /** The queue for frames with no hash (not IP, or a type not selected). */
  unclassified: number;
}

export class TapSteering {
  /** The program's fd (to attach it); undefined when only the map was handed over. */
  readonly progFd: number | undefined;
  /** The configuration map's fd: all an unprivileged backend needs to steer. */
  readonly mapFd: number;
  /** A random key for steering without RSS, kept for the life of the program (flows stay put). */
  readonly defaultKey: Buffer = randomBytes(RSS_KEY_BYTES);
  #table: SteeringTable | undefined;
  #closed = false;

  private constructor(progFd: number | undefined, mapFd: number) {
    this.progFd = progFd;
    this.mapFd = mapFd;
  }

  /**
   * Loads the program and its map. Throws with `code` EPERM (no CAP_BPF or
   * CAP_SYS_ADMIN, or unprivileged BPF off), ENOSYS / EINVAL (a kernel without
   * it), with a message that says what to do.
   */
  static load(): TapSteering {
    try {
      const { prog, map } = native.steeringLoad();
      return new TapSteering(prog, map);
    } catch (error) {
      const code = errorCode(error) ?? 'EIO';
      const hint = code === 'EPERM'
        ? 'loading it needs CAP_BPF (or CAP_SYS_ADMIN): run as root, or have a privileged helper load it and hand over the map fd'
        : 'this kernel does not take the steering program';
      throw makeError(code, `cannot load the tap steering program: ${(error as Error).message} (${hint})`, error);
    }
  }

  /** Adopts a map fd (and, if given, the program's) handed over by the process that loaded them; they are closed with close(). */
  static fromFds(mapFd: number, progFd?: number): TapSteering {
    for (const fd of [mapFd, progFd]) {
      if (fd !== undefined && (!Number.isInteger(fd) || fd < 0)) throw makeError('EBADF', `${String(fd)} is not a file descriptor`);
    }
    try {
      native.steeringCheckMap(mapFd); // what another process sent is checked before anything is written to it
    } catch (error) {
      throw makeError(errorCode(error) ?? 'EINVAL', `${(error as Error).message}: hand over the map that TapSteering.load() made`, error);
    }
    return new TapSteering(progFd, mapFd);
  }

  /** TUNSETSTEERINGEBPF: from now on the program picks the queue of every frame to the tap's readers. */
  attach(tap: Tap): void {
    this.#assertOpen();
    if (this.progFd === undefined) throw makeError('EINVAL', 'only the map was handed over: the process that loaded the program attaches it');
    const queue = tap.queues.find((q) => q.attached);
    if (!queue) throw makeError('EINVAL', `tap ${tap.name} has no attached queue to attach the steering program through`);
    native.steeringAttach(queue.fd, this.progFd);
  }

  /** Detaches the program from the tap: tun's own flow hash steers again. */
  detach(tap: Tap): void {
    const queue = tap.queues.find((q) => q.attached);
    if (queue) native.steeringAttach(queue.fd, -1);
  }

  /** Spreads flows over queues 0..queues-1, as tun would, with this program's own key. */
  spread(queues: number): void {
    if (!Number.isInteger(queues) || queues < 1 || queues > 256) throw makeError('EINVAL', `queues must be 1 to 256, got ${String(queues)}`);
    const table = Array.from({ length: RSS_MAX_TABLE_ENTRIES }, (_, i) => i % queues);
    this.configure({ hashTypes: RSS_SUPPORTED_HASH_TYPES, key: this.defaultKey, table, unclassified: 0 });
  }

  /** Writes a whole table; the next frame is steered by it. */
  configure(table: SteeringTable): void {
    this.#assertOpen();
    const n = table.table.length;
    if (n < 1 || n > RSS_MAX_TABLE_ENTRIES || (n & (n - 1)) !== 0) {
      throw makeError('EINVAL', `the indirection table must have a power of two of entries up to ${RSS_MAX_TABLE_ENTRIES}, got ${n}`);
    }
    if (table.key.length !== RSS_KEY_BYTES) throw makeError('EINVAL', `the key must be ${RSS_KEY_BYTES} bytes, got ${table.key.length}`);
    native.steeringConfigure(this.mapFd, {
      mode: 0, hashTypes: table.hashTypes >>> 0, tableMask: n - 1, unclassified: table.unclassified,
      key: Buffer.from(table.key), table: [...table.table],
    });
    this.#table = { ...table, key: Buffer.from(table.key), table: [...table.table] };
  }

  /** The table in force (what configure() or spread() last wrote). */
  get table(): SteeringTable | undefined {
    return this.#table;
  }

  /**
   * Returns once no CPU can still be running the program with the table before
   * the last configure(): every frame it steered is in the queue it chose (an RCU
   * grace period). False if the kernel could not say so (then a short sleep is the
   * best the caller can do).
   */
  waitForInFlight(): boolean {
    return native.rcuGracePeriod();
  }

  /**
   * The queue (or, with `hashOnly`, the Toeplitz hash) the program gives one
   * Ethernet frame under `table`, run by the kernel (BPF_PROG_TEST_RUN) on a
   * program of its own: for tests of the hash and the table, never the tap's.
   */
  static evaluate(frame: Uint8Array, table: SteeringTable, options: { hashOnly?: boolean } = {}): number {
    const probe = TapSteering.load();
    try {
      const n = table.table.length;
      native.steeringConfigure(probe.mapFd, {
        mode: options.hashOnly ? 1 : 0, hashTypes: table.hashTypes >>> 0, tableMask: n - 1, unclassified: table.unclassified,
        key: Buffer.from(table.key), table: [...table.table],
      });
      return native.steeringTestRun(probe.progFd!, Buffer.from(frame)) >>> 0;
    } finally {
      probe.close();
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const fd of [this.progFd, this.mapFd]) {
      if (fd === undefined) continue;
      try {
        native.closeFd(fd);
      } catch {
        // already closed
      }
    }
  }

  #assertOpen(): void {
    if (this.#closed) throw makeError('EBADF', 'the steering program was closed');
  }
}
