import { errorCode, makeError } from '../errors';
import { native } from '../native';
import {
  IFF_MULTI_QUEUE, IFF_NAPI, IFF_NAPI_FRAGS, IFF_NO_CARRIER, IFF_NO_PI, IFF_ONE_QUEUE, IFF_TAP, IFF_TUN,
  IFF_TUN_EXCL, IFF_VNET_HDR, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_UFO, TUN_F_USO4, TUN_F_USO6,
} from './constants';
import { checkInterfaceName, checkQueueCount, formatMac, parseMac } from './names';
import type { TapSteering } from './steering';

/** The flags every queue of a vhost-tap device is opened with. */
export const TAP_QUEUE_FLAGS = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE;

/** Size of the virtio_net_hdr in front of every frame: 10 (legacy), 12 (VERSION_1 or MRG_RXBUF), 20 (hash report). */
export type VnetHdrSize = 10 | 12 | 20;

export interface TapCreateOptions {
  /** Interface name, at most 15 bytes; a kernel template such as "vtap%d" is allowed. */
  name: string;
  /** Number of queues (one fd each), 1 to 256. */
  queues: number;
  /** virtio_net_hdr size set with TUNSETVNETHDRSZ. Default 12. */
  vnetHdrSize?: VnetHdrSize;
  /** Keep the device when the last fd closes (TUNSETPERSIST). Default false. */
  persist?: boolean;
  /** uid allowed to open and use the device without CAP_NET_ADMIN (TUNSETOWNER). */
  owner?: number;
  /** gid allowed to open and use the device without CAP_NET_ADMIN (TUNSETGROUP). */
  group?: number;
  /** Link MTU. */
  mtu?: number;
  /** Link MAC address, "52:54:00:12:34:56" or 6 bytes. */
  mac?: string | Uint8Array;
  /** Bring the link up. Default true. */
  up?: boolean;
}

export interface TapOpenOptions {
  /** Number of queues to open on the existing device, 1 to 256 in all. */
  queues: number;
  /** virtio_net_hdr size to set. Default 12. */
  vnetHdrSize?: VnetHdrSize;
  /** Bring the link up. Default true. */
  up?: boolean;
}

/** Offloads the reader of the tap accepts (TUNSETOFFLOAD): what the kernel may hand us un-checksummed or unsegmented. */
export interface TapOffloads {
  /** Partial checksums (VIRTIO_NET_HDR_F_NEEDS_CSUM). Every other offload needs it. */
  csum?: boolean;
  /** TCP segmentation over IPv4. */
  tso4?: boolean;
  /** TCP segmentation over IPv6. */
  tso6?: boolean;
  /** TSO with ECN (CWR) set. */
  ecn?: boolean;
  /** UDP fragmentation offload (legacy; kernels accept and ignore it). */
  ufo?: boolean;
  /** UDP segmentation over IPv4; the kernel wants uso4 and uso6 together. */
  uso4?: boolean;
  /** UDP segmentation over IPv6; the kernel wants uso4 and uso6 together. */
  uso6?: boolean;
}

/** What TUNGETFEATURES says this kernel's tun driver supports. */
export interface TapFeatures {
  raw: number;
  tun: boolean;
  tap: boolean;
  noPi: boolean;
  oneQueue: boolean;
  vnetHdr: boolean;
  multiQueue: boolean;
  napi: boolean;
  napiFrags: boolean;
  noCarrier: boolean;
  exclusive: boolean;
}

function checkVnetHdrSize(size: unknown): asserts size is VnetHdrSize {
  if (size !== 10 && size !== 12 && size !== 20) {
    throw makeError('EINVAL', `vnetHdrSize must be 10, 12 or 20 (sizes of virtio_net_hdr), got ${String(size)}`);
  }
}

function checkId(kind: 'owner' | 'group', id: unknown): asserts id is number {
  if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= 0xffffffff) {
    throw makeError('EINVAL', `${kind} must be a numeric ${kind === 'owner' ? 'uid' : 'gid'} (0 to 4294967294), got ${String(id)}`);
  }
}

function checkMtu(mtu: unknown): asserts mtu is number {
  if (typeof mtu !== 'number' || !Number.isInteger(mtu) || mtu < 68 || mtu > 65535) {
    throw makeError('EINVAL', `mtu must be an integer from 68 to 65535, got ${String(mtu)}`);
  }
}

/** Rewrites a native error from opening or configuring a tap into one that says what to do. */
function explainOpenError(error: unknown, name: string): Error {
  const code = errorCode(error) ?? 'EIO';
  switch (code) {
    case 'ENOENT':
      return makeError(code, '/dev/net/tun does not exist: load the tun module (modprobe tun) or create it (mknod /dev/net/tun c 10 200)', error);
    case 'EACCES':
      return makeError(code, 'no permission to open /dev/net/tun: run as root, or let a privileged process create the tap and hand over its queue fds (sendTapQueues / receiveTapQueues, Tap.fromFds)', error);
    case 'EPERM':
      return makeError(code, `not allowed to create or open tap "${name}": this needs CAP_NET_ADMIN, or a persistent tap whose owner or group is this process's uid or gid`, error);
    case 'EBUSY':
      return makeError(code, `a network device named "${name}" already exists: choose another name, or use Tap.open("${name}") to take queues of an existing persistent tap`, error);
    case 'EINVAL':
      return makeError(code, `the kernel refused tap "${name}" (${(error as Error).message}): an existing device of that name is not a multiqueue tap with the same flags`, error);
    case 'E2BIG':
      return makeError(code, `tap "${name}" already has 256 queues open, the kernel's limit per device: close some or open fewer`, error);
    case 'EMFILE':
    case 'ENFILE':
      return makeError(code, `out of file descriptors while opening queues of "${name}": raise the limit (ulimit -n) or open fewer queues`, error);
    default:
      return makeError(code, `could not set up tap "${name}": ${(error as Error).message}`, error);
  }
}

function closeQuietly(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      native.closeFd(fd);
    } catch {
      // Already closed: nothing left to release.
    }
  }
}

/**
 * One queue of a multiqueue tap: an fd the kernel steers a share of the device's
 * frames into, and that frames written to go out of. Detaching it takes it out
 * of the kernel's steering without closing it.
 */
export class TapQueue {
  #fd: number;
  #attached: boolean;

  constructor(private readonly tap: Tap, readonly index: number, fd: number, attached: boolean) {
    this.#fd = fd;
    this.#attached = attached;
  }

  /** The queue's file descriptor (non-blocking, close-on-exec). */
  get fd(): number {
    if (this.#fd < 0) throw makeError('EBADF', `queue ${this.index} of tap "${this.tap.name}" is closed`);
    return this.#fd;
  }

  /**
   * Whether the kernel steers frames into this queue, as this handle last set or
   * probed it. The kernel offers no read-only query of one queue's state: if another
   * process holding the same fd may have changed it, call probeAttached().
   */
  get attached(): boolean {
    return this.#attached;
  }

  /** Puts the queue back into the device's steering (TUNSETQUEUE, IFF_ATTACH_QUEUE). */
  attach(): void {
    this.setQueue(true);
  }

  /** Takes the queue out of the device's steering; frames go to the other attached queues (TUNSETQUEUE, IFF_DETACH_QUEUE). */
  detach(): void {
    this.setQueue(false);
  }

  /**
   * Asks the kernel whether the queue is attached, by detaching it: success means it
   * was attached, and it is re-attached at once (frames already queued on it stay
   * there; new flows may be steered to other queues for that moment). EINVAL means
   * it was detached already.
   */
  probeAttached(): boolean {
    const fd = this.fd;
    try {
      native.tunSetQueue(fd, false);
    } catch (error) {
      if (errorCode(error) === 'EINVAL') {
        this.#attached = false;
        return false;
      }
      throw makeError(errorCode(error) ?? 'EIO', `could not probe queue ${this.index} of tap "${this.tap.name}": ${(error as Error).message}`, error);
    }
    native.tunSetQueue(fd, true);
    this.#attached = true;
    return true;
  }

  /** @internal */
  release(): void {
    if (this.#fd >= 0) closeQuietly([this.#fd]);
    this.#fd = -1;
  }

  private setQueue(attach: boolean): void {
    const fd = this.fd;
    const where = `queue ${this.index} of tap "${this.tap.name}"`;
    try {
      native.tunSetQueue(fd, attach);
      this.#attached = attach;
    } catch (error) {
      const code = errorCode(error) ?? 'EIO';
      // The kernel answers EINVAL for attaching an attached queue and detaching a detached one.
      if (code === 'EINVAL') {
        // Detaching a detached queue is the only EINVAL of a detach; an attach's EINVAL may also
        // mean the queue's device is gone, so ask the kernel.
        this.#attached = attach ? this.probeAttached() : false;
        throw makeError(code, `${where} is already ${attach ? 'attached' : 'detached'}`, error);
      }
      if (code === 'EPERM' || code === 'EACCES') {
        throw makeError(code, `not allowed to ${attach ? 'attach' : 'detach'} ${where}: a security policy (LSM) refused it`, error);
      }
      throw makeError(code, `could not ${attach ? 'attach' : 'detach'} ${where}: ${(error as Error).message}`, error);
    }
  }
}

/**
 * A Linux multiqueue tap device opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR |
 * IFF_MULTI_QUEUE, one fd per queue.
 */
export class Tap {
  readonly queues: readonly TapQueue[];
  /**
   * The tap's steering program, when the process that made the tap loaded and
   * attached one and handed its map over with the queues (receiveTapQueues):
   * a VirtioNetDevice on this tap steers with it. Closed with the tap.
   */
  steering: TapSteering | undefined;
  #closed = false;

  private constructor(readonly name: string, readonly ifindex: number, fds: readonly number[], private persistent: boolean,
    attached?: readonly boolean[]) {
    this.queues = fds.map((fd, i) => new TapQueue(this, i, fd, attached?.[i] ?? true));
  }

  /** Creates a new tap with `queues` queues. Fails with EBUSY if a device of that name exists. */
  static create(options: TapCreateOptions): Tap {
    if (options === null || typeof options !== 'object') throw makeError('EINVAL', 'Tap.create takes { name, queues, ... }');
    const { name, queues, vnetHdrSize = 12, persist = false, owner, group, mtu, mac, up = true } = options;
    checkInterfaceName(name);
    checkQueueCount(queues);
    checkVnetHdrSize(vnetHdrSize);
    if (owner !== undefined) checkId('owner', owner);
    if (group !== undefined) checkId('group', group);
    if (mtu !== undefined) checkMtu(mtu);
    const macBytes = mac === undefined ? undefined : parseMac(mac);

    const fds: number[] = [];
    let actualName = name;
    try {
      const first = native.tunOpen(name, TAP_QUEUE_FLAGS | IFF_TUN_EXCL);
      fds.push(first.fd);
      actualName = first.name;
      for (let i = 1; i < queues; i++) fds.push(native.tunOpen(actualName, TAP_QUEUE_FLAGS).fd);
      const fd0 = fds[0]!;
      native.tunSetVnetHdrSize(fd0, vnetHdrSize);
      if (owner !== undefined) native.tunSetOwner(fd0, owner);
      if (group !== undefined) native.tunSetGroup(fd0, group);
      if (mtu !== undefined) native.linkSetMtu(actualName, mtu);
      if (macBytes !== undefined) native.linkSetMac(actualName, macBytes);
      if (up) native.linkSetUp(actualName, true);
      const ifindex = native.linkIndex(actualName);
      // Persist last: until here, closing the fds on failure removes the device.
      if (persist) native.tunSetPersist(fd0, 1);
      return new Tap(actualName, ifindex, fds, persist);
    } catch (error) {
      closeQuietly(fds);
      throw explainOpenError(error, actualName);
    }
  }

  /** Opens `queues` more queues on an existing (typically persistent) tap. Fails with ENOENT if there is none. */
  static open(name: string, options: TapOpenOptions): Tap {
    checkInterfaceName(name);
    if (options === null || typeof options !== 'object') throw makeError('EINVAL', 'Tap.open takes (name, { queues })');
    const { queues, vnetHdrSize = 12, up = true } = options;
    checkQueueCount(queues);
    checkVnetHdrSize(vnetHdrSize);
    if (name.includes('%')) throw makeError('EINVAL', `Tap.open needs the device's real name, not a template ("${name}")`);
    const ifindex = native.linkIndex(name);
    if (ifindex === 0) {
      throw makeError('ENOENT', `no network device named "${name}" in this namespace: create it with Tap.create({ name: "${name}", persist: true, ... })`);
    }
    const fds: number[] = [];
    try {
      for (let i = 0; i < queues; i++) fds.push(native.tunOpen(name, TAP_QUEUE_FLAGS).fd);
      // Without IFF_TUN_EXCL, TUNSETIFF would have made a new device if the old one vanished meanwhile.
      if (native.linkIndex(name) !== ifindex) {
        throw makeError('ENOENT', `tap "${name}" disappeared while its queues were being opened`);
      }
      native.tunSetVnetHdrSize(fds[0]!, vnetHdrSize);
      if (up) native.linkSetUp(name, true);
      return new Tap(name, ifindex, fds, false);
    } catch (error) {
      closeQuietly(fds);
      if (errorCode(error) === 'ENOENT' && !(error as { errno?: number }).errno) throw error;
      throw explainOpenError(error, name);
    }
  }

  /**
   * Adopts queue fds created elsewhere (received with SCM_RIGHTS, or inherited).
   * Each fd must be a tun/tap file; an attached one must belong to the multiqueue
   * tap `name` (TUNGETIFF). `attached` gives each queue's state as the sender knew
   * it; without it each queue is probed (see TapQueue.probeAttached). The Tap owns
   * the fds from here on: close() closes them. On failure none are closed.
   */
  static fromFds(name: string, fds: readonly number[], options: { attached?: readonly boolean[] } = {}): Tap {
    checkInterfaceName(name);
    if (!Array.isArray(fds) || fds.length === 0) throw makeError('EINVAL', 'Tap.fromFds needs at least one queue fd');
    checkQueueCount(fds.length);
    for (const fd of fds) {
      if (!Number.isInteger(fd) || fd < 0) throw makeError('EBADF', `${String(fd)} is not a file descriptor`);
      let isTun: boolean;
      try {
        isTun = native.isTunFd(fd);
      } catch (error) {
        throw makeError(errorCode(error) ?? 'EBADF', `fd ${fd} is not an open file descriptor`, error);
      }
      if (!isTun) throw makeError('EINVAL', `fd ${fd} is not a tap queue (it is not a /dev/net/tun file)`);
      const iff = native.tunGetIff(fd);
      if (iff === null) throw makeError('EBADFD', `fd ${fd} is a tun/tap file that belongs to no device (TUNSETIFF was never done on it)`);
      if (iff.name !== name) throw makeError('EINVAL', `fd ${fd} is a queue of "${iff.name}", not of "${name}"`);
      const missing = TAP_QUEUE_FLAGS & ~iff.flags;
      if (missing !== 0 || (iff.flags & IFF_TUN) !== 0) {
        throw makeError('EINVAL', `fd ${fd} belongs to "${name}", which is not a multiqueue tap with vnet headers and no packet info (flags 0x${iff.flags.toString(16)})`);
      }
    }
    if (new Set(fds).size !== fds.length) throw makeError('EINVAL', 'Tap.fromFds was given the same fd twice');
    const { attached } = options;
    if (attached !== undefined && (!Array.isArray(attached) || attached.length !== fds.length || !attached.every((a) => typeof a === 'boolean'))) {
      throw makeError('EINVAL', `attached must be one boolean per fd (${fds.length})`);
    }
    // A queue opened elsewhere may be blocking (libvirt and qemu-bridge-helper open
    // /dev/net/tun without O_NONBLOCK; QEMU sets it on the fds it is handed, as here):
    // the worker reads a queue until it is empty and must never wait there.
    for (const fd of fds) native.setNonBlocking(fd);
    const tap = new Tap(name, native.linkIndex(name), fds, false, attached);
    if (attached === undefined) for (const q of tap.queues) q.probeAttached();
    return tap;
  }

  /** Whether close() or destroy() has run. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The virtio_net_hdr size the device uses now (TUNGETVNETHDRSZ). */
  vnetHdrSize(): number {
    return native.tunGetVnetHdrSize(this.anyFd());
  }

  /** Sets the virtio_net_hdr size (TUNSETVNETHDRSZ): 12 with VERSION_1 or MRG_RXBUF, 10 otherwise. */
  setVnetHdrSize(size: VnetHdrSize): void {
    checkVnetHdrSize(size);
    native.tunSetVnetHdrSize(this.anyFd(), size);
  }

  /** Sets the offloads the reader accepts (TUNSETOFFLOAD); they show as the device's tx features in `ethtool -k`. */
  setOffload(offloads: TapOffloads): void {
    const { csum = false, tso4 = false, tso6 = false, ecn = false, ufo = false, uso4 = false, uso6 = false } = offloads ?? {};
    if (!csum && (tso4 || tso6 || ecn || ufo || uso4 || uso6)) {
      throw makeError('EINVAL', 'segmentation offloads need checksum offload: set csum: true with tso4/tso6/ecn/ufo/uso4/uso6');
    }
    if (ecn && !(tso4 || tso6)) throw makeError('EINVAL', 'ecn applies to TSO: set tso4 or tso6 with it');
    if (uso4 !== uso6) throw makeError('EINVAL', 'the kernel takes UDP segmentation offload for IPv4 and IPv6 together: set uso4 and uso6 both');
    const flags = (csum ? TUN_F_CSUM : 0) | (tso4 ? TUN_F_TSO4 : 0) | (tso6 ? TUN_F_TSO6 : 0) | (ecn ? TUN_F_TSO_ECN : 0)
      | (ufo ? TUN_F_UFO : 0) | (uso4 ? TUN_F_USO4 : 0) | (uso6 ? TUN_F_USO6 : 0);
    try {
      native.tunSetOffload(this.anyFd(), flags);
    } catch (error) {
      throw makeError(errorCode(error) ?? 'EIO', `this kernel refused offloads 0x${flags.toString(16)} on "${this.name}" (USO needs Linux 6.2+): ask for fewer`, error);
    }
  }

  /** What this kernel's tun driver supports (TUNGETFEATURES). */
  features(): TapFeatures {
    const raw = native.tunGetFeatures(this.anyFd());
    return {
      raw,
      tun: (raw & IFF_TUN) !== 0,
      tap: (raw & IFF_TAP) !== 0,
      noPi: (raw & IFF_NO_PI) !== 0,
      oneQueue: (raw & IFF_ONE_QUEUE) !== 0,
      vnetHdr: (raw & IFF_VNET_HDR) !== 0,
      multiQueue: (raw & IFF_MULTI_QUEUE) !== 0,
      napi: (raw & IFF_NAPI) !== 0,
      napiFrags: (raw & IFF_NAPI_FRAGS) !== 0,
      noCarrier: (raw & IFF_NO_CARRIER) !== 0,
      exclusive: (raw & IFF_TUN_EXCL) !== 0,
    };
  }

  /** The link's MAC address. */
  mac(): string {
    return formatMac(native.linkGetMac(this.name));
  }

  /** The link's MTU. */
  mtu(): number {
    return native.linkGetMtu(this.name);
  }

  /** Closes every queue fd. A non-persistent tap disappears with its last fd; a persistent one stays. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const q of this.queues) q.release();
    this.steering?.close();
  }

  /** Clears persistence (if this handle set it or the device has it) and closes: the device is removed once no one else holds a queue. */
  destroy(): void {
    if (this.#closed) return;
    try {
      native.tunSetPersist(this.anyFd(), 0);
      this.persistent = false;
    } finally {
      this.close();
    }
  }

  /** Whether this handle made the device persistent (Tap.create with persist: true). */
  get persist(): boolean {
    return this.persistent;
  }

  /** Device-wide ioctls work through any of its queues, attached or detached. */
  private anyFd(): number {
    if (this.#closed) throw makeError('EBADF', `tap "${this.name}" is closed`);
    return this.queues[0]!.fd;
  }
}
