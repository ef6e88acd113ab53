// The bench addon (build/Release/vhost_tap_bench.node, from bench/native/), typed: the raw tap loops
// (raw_loops.cc) and the driver-side guest generator (guest_generator.cc).
import path from 'node:path';

import type { GuestMemoryRegion } from '../../src';
// Round trips of a ping-pong, in microseconds: declared with the report, which must not load the addon.
import type { RttSummary } from './report/results';

export type { RttSummary };

export interface LoopStats {
  packets: number;
  bytes: number;
  errors: number;
  polls: number;
  syscalls: number;
  cpuSeconds: number;
  tid: number;
  done: boolean;
  elapsedSeconds: number;
  lastError?: string;
}


export type LoopMode = 'tap-write' | 'tap-read' | 'tap-ping' | 'udp-flood' | 'udp-echo';

export interface LoopOptions {
  mode: LoopMode;
  /** tap-write, tap-read, tap-ping: a tap queue fd (with the vnet header size the frame carries). */
  fd?: number;
  /** tap-write, tap-ping: what one write() sends, vnet header included. */
  frame?: Buffer;
  /** The thread stops by itself after this long (default 120). udp-echo runs until stop(). */
  maxSeconds?: number;
  /** tap-ping: where in `frame` (and in the reply read back) the 4-byte sequence number goes. */
  seqOffset?: number;
  /** tap-ping: round trips (default 1000). */
  count?: number;
  /** tap-ping: pause between round trips (default 100 us). */
  intervalUs?: number;
  /** udp-flood: destination; udp-echo: address to bind (default 127.0.0.1). */
  address?: string;
  /** udp-flood: destination port; udp-echo: port to bind (default 9). */
  port?: number;
  /** udp-flood: first source port, one per flow (default 10000). */
  sourcePort?: number;
  /** udp-flood: connected sockets, one per flow (default 1). */
  flows?: number;
  /** udp-flood: UDP payload bytes (default 18: a 60-byte frame). */
  payload?: number;
  /** udp-flood: datagrams per sendmmsg() (default 64, at most 1024). */
  batch?: number;
}

export interface BenchLoop {
  start(): void;
  stats(): LoopStats;
  stop(): LoopStats & { rtt?: RttSummary };
}

/**
 * One ring as guest_generator.cc reads it: guest physical addresses inside `memory`, `size` buffers of `bufSize` bytes from `bufAddr`
 * (one per descriptor), and its eventfds. Packed (GuestOptions.packed): descAddr is the descriptor ring, availAddr the driver event
 * suppression area, usedAddr the device's.
 */
export interface GuestRing {
  size: number;
  descAddr: number;
  /** split: the available ring; packed: the Driver Event Suppression area. */
  availAddr: number;
  /** split: the used ring; packed: the Device Event Suppression area. */
  usedAddr: number;
  bufAddr: number;
  bufSize: number;
  /** The driver writes it to kick the device. */
  kickFd: number;
  /** The device writes it to interrupt the driver. */
  callFd: number;
}

export interface GuestStats {
  packets: number;
  bytes: number;
  kicks: number;
  sleeps: number;
  publishes: number;
  errors: number;
  cpuSeconds: number;
  done: boolean;
  tids: number[];
  pairs: { packets: number; kicks: number; sleeps: number }[];
}

export interface GuestOptions {
  /**
   * The guest memory the rings and buffers live in, as GuestMemory#regions gives it: the bench addon maps the same fds
   * again (MAP_SHARED), so they must be open when the BenchGuest is made (GuestMemory.allocate's are, until close()).
   */
  regions: readonly GuestMemoryRegion[];
  mode: 'tx' | 'rx' | 'ping';
  /** One generator thread per pair (ping: the first pair only). */
  pairs: { rx: GuestRing; tx: GuestRing }[];
  /** tx and ping: vnet header + Ethernet frame, copied into every tx buffer once. */
  frame?: Buffer;
  /** vnet header bytes at the start of `frame` and of each rx buffer (12: VERSION_1 / MRG_RXBUF). Default 12. */
  hdrSize?: number;
  /** tx: chains posted per available-index publish. Default 32. */
  batch?: number;
  /** tx: reap completions by polling and never ask for a call, as DPDK's virtio PMD does. Default false: sleep on the call eventfd. */
  pollTx?: boolean;
  /** Packed virtqueues (virtio 1.2 2.8) in every ring; the QueuePair must be configured packed too, from a fresh ring base. Default false: split. */
  packed?: boolean;
  maxSeconds?: number;
  count?: number;
  intervalUs?: number;
  seqOffset?: number;
  /** Pin the generator threads to this CPU (the guest's vCPU). */
  cpu?: number;
  /** Nice value of the generator threads (negative: scheduled ahead of a busy sender on the same CPU). */
  nice?: number;
}

export interface BenchGuest {
  start(): void;
  stats(): GuestStats;
  stop(): GuestStats & { rtt?: RttSummary };
}

interface BenchBindings {
  /** Nanoseconds one system call (getppid) takes on a thread pinned to `cpu`: best of 5 rounds. */
  syscallCostNs(cpu: number): number;
  BenchLoop: new (options: LoopOptions) => BenchLoop;
  BenchGuest: new (options: GuestOptions) => BenchGuest;
}

/** build/Release beside dist/: this file runs as dist/bench/lib/native.js. */
const BENCH_ADDON = path.resolve(__dirname, '..', '..', '..', 'build', 'Release', 'vhost_tap_bench.node');

function loadBenchAddon(): BenchBindings {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(BENCH_ADDON) as BenchBindings;
  } catch (error) {
    throw Object.assign(new Error(`the bench addon ${BENCH_ADDON} did not load (${(error as Error).message}): ` +
      'it is built beside the library\'s addon by `npm run build` in a checkout of the repository, where bench/native/ exists; ' +
      'an installed package carries no bench code'), { code: 'ENOENT', cause: error });
  }
}

export const bench = loadBenchAddon();
