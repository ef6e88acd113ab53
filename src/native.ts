// The addon's bindings, typed. Everything here is internal: the public API
// wraps each call with argument checks and messages that say what to do.
import path from 'node:path';

export interface NativeTapOpenResult { fd: number; name: string }
export interface NativeIff { name: string; flags: number }
export interface NativeReceived { fds: number[]; data: Buffer }

/** One non-blocking read: data empty and end false when nothing was waiting. */
export interface NativeReceivedSome { data: Buffer; fds: number[]; end: boolean; fdsCut: boolean }

export interface NativeFdDescription {
  kind: 'eventfd' | 'bpf-map' | 'file' | 'socket' | 'pipe' | 'device' | 'directory' | 'other';
  nonBlocking: boolean;
  /** Regular files: their size, and F_GET_SEALS (-1 where the file system has no seals). */
  size?: number;
  seals?: number;
  /** Eventfds: the counter, from /proc/self/fdinfo. */
  eventfdCount?: bigint;
}

export interface NativeRegionSpec { guestPhysAddr: number | bigint; size: number | bigint; fd: number; offset?: number | bigint }

export interface NativeGuestMemory {
  buffer(region: number): ArrayBuffer;
  regionCount(): number;
  close(): void;
}

export interface NativeFdPoller {
  add(fd: number): void;
  rearm(fd: number): void;
  remove(fd: number): void;
  close(): void;
}

export interface NativeQueueRing {
  size: number; descAddr: number; availAddr: number; usedAddr: number;
  lastAvailIdx: number; packed: boolean; kickFd: number; callFd: number; eventIdx: boolean; indirectDesc: boolean;
  /** Where the used ring's writes are logged; default usedAddr. */
  usedLogAddr?: number;
  /** A packed ring's position record (two u32) at positionOffset of this mapped file. */
  positionFile?: NativeGuestMemory;
  positionOffset?: number;
}

export interface NativeDirtyLog {
  bytes(): number;
  collect(clear: boolean): Buffer;
  outOfRange(): number;
  close(): void;
}

export interface NativeDirtyLogSlot {
  set(log: NativeDirtyLog | null): void;
}

export interface NativeQueueStats {
  packets: number; bytes: number; kicks: number; calls: number; callsFailed: number; wakeups: number; batches: number; errors: number;
  drops: { tooBig: number; badHeader: number; tapError: number; stopped: number };
}

export interface NativeQueuePair {
  start(): void;
  stop(discardTx?: boolean, drainRx?: boolean): { rxLastAvailIdx: number; txLastAvailIdx: number; rxBroken: boolean; txBroken: boolean };
  stats(): { rx: NativeQueueStats; tx: NativeQueueStats; rxBroken: boolean; txBroken: boolean };
  running(): boolean;
}

export interface NativeQueuePairConfig {
  memory: NativeGuestMemory; tapFd: number; hdrSize: number; mergeableRx: boolean; rxReserveBytes: number; rxMaxFrameBytes: number; busyPollUs: number;
  rx?: NativeQueueRing; tx: NativeQueueRing; dirtyLog?: NativeDirtyLogSlot; txDiscardOnly?: boolean;
}

export interface NativeVirtqueue {
  /** Throws EPROTO with `fault` (a QueueFaultCode) when the driver's ring or chain is malformed. */
  pop(): { head: number; readable: Buffer; writable: number } | null;
  complete(reply?: Buffer): number;
  needsCall(): boolean;
  enableNotify(): boolean;
  disableNotify(): void;
  /** Valid after release() too. */
  lastAvailIdx(): number;
  /** Drops the guest memory now (not at garbage collection); only lastAvailIdx() works afterwards. */
  release(): void;
}

export interface NativeBindings {
  NativeVirtqueue: new (memory: NativeGuestMemory, config: Omit<NativeQueueRing, 'kickFd' | 'callFd'> & { dirtyLog?: NativeDirtyLogSlot }) => NativeVirtqueue;
  NativeDirtyLog: new (fd: number, size: number | bigint, offset: number | bigint) => NativeDirtyLog;
  NativeDirtyLogSlot: new () => NativeDirtyLogSlot;
  NativeQueuePair: new (config: NativeQueuePairConfig, onEvent: (where: string, message: string, code: string) => void) => NativeQueuePair;
  NativeGuestMemory: new (regions: NativeRegionSpec[]) => NativeGuestMemory;
  memfdCreate(name: string, size: number, sealed?: boolean): number;
  guestMemoryTruncatedPages(): number;
  eventfdCreate(initial?: bigint, nonBlocking?: boolean): number;
  eventfdWrite(fd: number): void;
  eventfdRead(fd: number): number;
  FdPoller: new (callback: (fd: number) => void) => NativeFdPoller;

  steeringLoad(): { prog: number; map: number };
  steeringConfigure(mapFd: number, config: { mode: number; hashTypes: number; tableMask: number; unclassified: number; key: Buffer; table: number[] }): void;
  steeringAttach(tapFd: number, progFd: number): void;
  steeringTestRun(progFd: number, frame: Buffer): number;
  rcuGracePeriod(): boolean;
  steeringCheckMap(mapFd: number): void;

  tunOpen(name: string, flags: number): NativeTapOpenResult;
  tunSetVnetHdrSize(fd: number, size: number): void;
  tunGetVnetHdrSize(fd: number): number;
  tunSetOffload(fd: number, flags: number): void;
  tunSetPersist(fd: number, persist: number): void;
  tunSetOwner(fd: number, uid: number): void;
  tunSetGroup(fd: number, gid: number): void;
  tunGetFeatures(fd: number): number;
  tunSetQueue(fd: number, attach: boolean): void;
  tunGetIff(fd: number): NativeIff | null;
  isTunFd(fd: number): boolean;
  linkSetUp(name: string, up: boolean): void;
  linkSetMtu(name: string, mtu: number): void;
  linkGetMtu(name: string): number;
  linkSetMac(name: string, mac: Buffer): void;
  linkGetMac(name: string): Buffer;
  linkIndex(name: string): number;

  socketPair(type: 'stream' | 'seqpacket'): [number, number];
  unixListen(path: string, type: 'stream' | 'seqpacket', backlog: number): number;
  unixConnect(path: string, type: 'stream' | 'seqpacket'): number;
  unixAccept(listenFd: number, timeoutMs: number): Promise<number>;
  sendFds(sockFd: number, fds: number[], payload: Buffer, dontWait?: boolean): number;
  receiveFds(sockFd: number, maxFds: number, maxBytes: number, timeoutMs: number): Promise<NativeReceived>;
  closeFd(fd: number): void;
  setNonBlocking(fd: number): void;

  recvSome(fd: number, maxBytes: number, maxFds: number): NativeReceivedSome;
  describeFd(fd: number): NativeFdDescription;
  acceptNow(listenFd: number): number;
}

/**
 * Where the addon is: VHOST_TAP_ADDON if set (an ASan build, say), else
 * build/Release beside dist/, whichever depth this file was compiled to.
 */
function findAddon(): string {
  const override = process.env.VHOST_TAP_ADDON;
  if (override) return path.resolve(override);
  let dir = __dirname;
  for (let i = 0; i < 4; i++) {
    const candidate = path.join(dir, 'build', 'Release', 'vhost_tap.node');
    try {
      require.resolve(candidate);
      return candidate;
    } catch {
      dir = path.dirname(dir);
    }
  }
  throw Object.assign(new Error(
    'vhost_tap.node is not built: its install script did not run (npm --ignore-scripts, or an unapproved script). ' +
    'Approve it and build it: `npm install-scripts approve vhost-tap && npm rebuild vhost-tap` ' +
    '(it needs cmake, make and g++); in a checkout of vhost-tap itself, `npm install`.'), { code: 'ENOENT' });
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
export const native: NativeBindings = require(findAddon()) as NativeBindings;
