// One benchmark case that needs a tap of its own, run as a child process inside
// the namespace the orchestrator (bench/run.ts) made: the raw tap loops, the
// embedded data path with the native guest, the ping-pongs, and the UDP flood
// sender. Argument: one JSON object; prints "RESULT <json>" (or "ERROR <text>").
import { spawn, type ChildProcess, execFileSync } from 'node:child_process';

import { TapSteering } from '../src/tap/steering';
import { Tap } from '../src/tap/tap';
import { native } from '../src/native';
import { GuestMemory } from '../src/virtio/guest-memory';
import { QueuePair, type QueuePairOptions, type QueuePairStats } from '../src/virtio/queue-pair';
import { PACKED_RING_BASE_FRESH } from '../src/virtio/ring-base';
import { GUEST_IP, GUEST_MAC, HOST_IP, PREFIX, VNET_HDR, gsoFrame, pingFrame, txFrame, udpPayloadFor } from './lib/frames';
import { bench, type BenchLoop, type GuestRing, type GuestStats, type LoopStats, type RttSummary } from './lib/native';
import { contextSwitches, diffCounters, linkCounters, processCpuSeconds, threadCpuSeconds, threadIds, type LinkCounters } from '../harness/proc';
import { sleep } from '../harness/wait';

export interface ThroughputSpec {
  kind: 'raw-tx' | 'raw-rx' | 'emb-tx' | 'emb-rx';
  /** Ethernet frame bytes, or a 64 KB TCP GSO frame (tx only). */
  frame: number | 'gso';
  queues: number;
  warmup: number;
  seconds: number;
  /** rx: UDP flows of the sender. */
  flows?: number;
  /** embedded: the virtqueue layout the native guest and the QueuePair use (default split). */
  ring?: RingLayout;
  /**
   * embedded: the tap steering program attached and spreading over every queue, as
   * VirtioNetDevice does (default: none, tun's own flow hash, as a bare QueuePair has).
   */
  steering?: boolean;
}
/** Split (virtio 1.x 2.7) or packed (2.8, VIRTIO_F_RING_PACKED) virtqueues. */
export type RingLayout = 'split' | 'packed';
export interface PingSpec { kind: 'raw-ping' | 'emb-ping'; count: number; intervalUs: number; /** embedded: QueuePairOptions.busyPollUs */ busyPollUs?: number; /** embedded: default split */ ring?: RingLayout }
export interface FloodSpec { kind: 'flood'; address: string; payload: number; flows: number; seconds: number }
export type CaseSpec = ThroughputSpec | PingSpec | FloodSpec;

/** What a throughput case reports: counts in the measurement window. */
export interface Measurement {
  /** Frames the tap counted in the window: received from userspace (guest-to-host) or handed to it (host-to-guest). */
  packets: number;
  /** Bytes the tap counted (Ethernet frames, no vnet header). */
  bytes: number;
  seconds: number;
  /** CPU seconds of the backend in the window (the loop thread, or the data path worker threads). */
  cpuSeconds: number;
  detail: Record<string, unknown>;
}

export interface PingResult {
  rtt: RttSummary;
  detail: Record<string, unknown>;
}

const TAP = 'vtb0';
/** The CPU the guest side runs on: the native guest's threads and the host-side UDP sender. */
export const GUEST_CPU = 0;
/**
 * The CPU the backend's threads run on: the raw loops, the data path workers (and, in
 * run.ts, the daemon and testpmd's forwarding lcore). Left to float, a worker lands on
 * the guest's CPU now and then and the figures swing by a third from run to run.
 */
export const BACKEND_CPU = 1;

function pinThreads(tids: number[], cpu: number): void {
  for (const tid of tids) execFileSync('taskset', ['-p', '-c', String(cpu), String(tid)], { stdio: 'ignore' });
}

async function loopTid(loop: BenchLoop): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const tid = loop.stats().tid;
    if (tid > 0) return tid;
    await sleep(5);
  }
  throw new Error('a bench loop thread did not start');
}
/** The native guest runs ahead of the sender on that CPU: like a vCPU with a core of its own, it is never the bottleneck. */
export const GUEST_NICE = -10;
const RING = 256;

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeTap(queues: number): Tap {
  const tap = Tap.create({ name: TAP, queues, vnetHdrSize: VNET_HDR });
  ip('addr', 'add', `${HOST_IP}/${PREFIX}`, 'dev', TAP);
  ip('neigh', 'replace', GUEST_IP, 'lladdr', GUEST_MAC, 'dev', TAP, 'nud', 'permanent');
  return tap;
}

function startFlood(spec: { flows: number; frame: number; seconds: number }): ChildProcess {
  const flood: FloodSpec = { kind: 'flood', address: GUEST_IP, payload: udpPayloadFor(spec.frame), flows: spec.flows, seconds: spec.seconds };
  // On CPU 0 with the guest side (the frontend's forwarding lcore, the native guest): the backend gets CPU 1.
  const child = spawn('taskset', ['-c', String(GUEST_CPU), process.execPath, __filename, JSON.stringify(flood)], { stdio: ['ignore', 'ignore', 'inherit'] });
  child.on('error', () => {});
  return child;
}

/**
 * The flood sender's CPU per frame it sent (the tap's tx count and its tx drops: the queue
 * is picked, by tun's flow hash or the steering program, before a full queue drops a frame),
 * in ns: where host->guest steering costs, in the sender's system calls.
 */
function senderCost(flood: ChildProcess | undefined, cpuSeconds: number, link: LinkCounters): Record<string, number> {
  if (!flood || !Number.isFinite(cpuSeconds)) return {};
  const frames = link.txPackets + link.txDropped;
  return { senderCpuSeconds: cpuSeconds, ...(frames > 0 ? { senderNsPerFrame: (cpuSeconds / frames) * 1e9 } : {}) };
}

async function measure<S>(warmup: number, seconds: number, sample: () => S): Promise<{ a: S; b: S; seconds: number }> {
  await sleep(warmup * 1000);
  const t0 = process.hrtime.bigint();
  const a = sample();
  await sleep(seconds * 1000);
  const t1 = process.hrtime.bigint();
  const b = sample();
  return { a, b, seconds: Number(t1 - t0) / 1e9 };
}

/* ------------------------------------------------------------- raw loops */

async function rawThroughput(spec: ThroughputSpec): Promise<Measurement> {
  const tap = makeTap(spec.queues);
  const tx = spec.kind === 'raw-tx';
  const frame = tx ? (spec.frame === 'gso' ? gsoFrame() : txFrame(spec.frame)) : undefined;
  const loops: BenchLoop[] = tap.queues.map((q) =>
    new bench.BenchLoop({ mode: tx ? 'tap-write' : 'tap-read', fd: q.fd, frame, maxSeconds: spec.warmup + spec.seconds + 30 }));
  let flood: ChildProcess | undefined;
  try {
    for (const l of loops) l.start();
    pinThreads(await Promise.all(loops.map(loopTid)), BACKEND_CPU);
    if (!tx) flood = startFlood({ flows: spec.flows ?? 8, frame: spec.frame as number, seconds: spec.warmup + spec.seconds + 30 });
    const sample = (): { link: LinkCounters; loops: LoopStats[]; sender: number } => ({
      link: linkCounters(TAP), loops: loops.map((l) => l.stats()), sender: flood ? processCpuSeconds(flood.pid!) : NaN,
    });
    const { a, b, seconds } = await measure(spec.warmup, spec.seconds, sample);
    const link = diffCounters(a.link, b.link);
    const sum = (k: keyof LoopStats, s: { loops: LoopStats[] }): number => s.loops.reduce((t, l) => t + Number(l[k]), 0);
    const loopPackets = sum('packets', b) - sum('packets', a);
    const syscalls = sum('syscalls', b) - sum('syscalls', a) + sum('polls', b) - sum('polls', a);
    return {
      packets: tx ? link.rxPackets : link.txPackets,
      bytes: tx ? link.rxBytes : link.txBytes,
      seconds,
      cpuSeconds: sum('cpuSeconds', b) - sum('cpuSeconds', a),
      detail: {
        loopPackets, syscallsPerFrame: loopPackets ? syscalls / loopPackets : 0,
        tapDropped: tx ? link.rxDropped : link.txDropped,
        errors: sum('errors', b), lastError: b.loops.find((l) => l.lastError)?.lastError,
        ...senderCost(flood, b.sender - a.sender, link),
      },
    };
  } finally {
    flood?.kill('SIGKILL');
    for (const l of loops) l.stop();
    tap.close();
  }
}

/* -------------------------------------------------- embedded data path */

interface Layout {
  bytes: number;
  pairs: { rx: Omit<GuestRing, 'kickFd' | 'callFd'>; tx: Omit<GuestRing, 'kickFd' | 'callFd'> }[];
}

/**
 * Rings and buffers for `queues` pairs, page-aligned: split, the descriptor table, available
 * ring, used ring, then the buffers; packed, the descriptor ring, the driver and the device
 * event suppression areas (in availAddr and usedAddr, as transports carry them), then the buffers.
 */
function layout(queues: number, size: number, rxBuf: number, txBuf: number, ring: RingLayout): Layout {
  let at = 0x1000;
  const take = (bytes: number, align = 4096): number => {
    at = Math.ceil(at / align) * align;
    const here = at;
    at += bytes;
    return here;
  };
  const packed = ring === 'packed';
  const oneRing = (bufSize: number): Omit<GuestRing, 'kickFd' | 'callFd'> => ({
    size,
    descAddr: take(16 * size),
    availAddr: take(packed ? 4 : 6 + 2 * size),
    usedAddr: take(packed ? 4 : 6 + 8 * size),
    bufSize,
    bufAddr: take(size * bufSize),
  });
  const pairs = Array.from({ length: queues }, () => ({ rx: oneRing(rxBuf), tx: oneRing(txBuf) }));
  return { bytes: Math.ceil((at + 4096) / (1 << 20)) * (1 << 20), pairs };
}

interface Embedded {
  tap: Tap;
  memory: GuestMemory;
  pairs: QueuePair[];
  workerTids: number[];
  fds: number[];
  rings: { rx: GuestRing; tx: GuestRing }[];
  close(): void;
}

function setupEmbedded(queues: number, txBufBytes: number, busyPollUs = 0, ring: RingLayout = 'split', steering = false): Embedded {
  const tap = makeTap(queues);
  let program: TapSteering | undefined;
  if (steering) {
    try {
      program = TapSteering.load();
      program.attach(tap);
      program.spread(queues);
    } catch (error) {
      program?.close();
      tap.close();
      throw error;
    }
  }
  const rxBuf = 2048; // mergeable rx buffers, as Linux's virtio_net posts them (1 page / 2)
  const lay = layout(queues, RING, rxBuf, Math.ceil(txBufBytes / 64) * 64, ring);
  const memory = GuestMemory.allocate(lay.bytes);
  const fds: number[] = [];
  const efd = (): number => {
    const fd = native.eventfdCreate();
    fds.push(fd);
    return fd;
  };
  const rings = lay.pairs.map((p) => ({ rx: { ...p.rx, kickFd: efd(), callFd: efd() }, tx: { ...p.tx, kickFd: efd(), callFd: efd() } }));
  const mtu = tap.mtu();
  const pairs = rings.map((r, i) => {
    const q = (g: GuestRing) => ({
      size: g.size, descAddr: g.descAddr, availAddr: g.availAddr, usedAddr: g.usedAddr, kickFd: g.kickFd, callFd: g.callFd, eventIdx: true, indirectDesc: false,
      // A packed ring that never ran: both positions 0, both wrap counters 1.
      ...(ring === 'packed' ? { packed: true, lastAvailIdx: PACKED_RING_BASE_FRESH } : {}),
    });
    // What VirtioNetDevice passes for a VERSION_1 + MRG_RXBUF + EVENT_IDX (+ RING_PACKED) driver without guest offloads.
    const options = { memory, tapQueue: tap.queues[i]!, hdrSize: 12, mergeableRx: true, rxMaxFrameBytes: VNET_HDR + 18 + mtu, busyPollUs, rx: q(r.rx), tx: q(r.tx) };
    return new QueuePair(options as QueuePairOptions);
  });
  return {
    tap, memory, pairs, workerTids: [], fds, rings,
    close() {
      for (const p of pairs) if (p.running) p.stop();
      program?.close();
      tap.close();
      memory.close();
      for (const fd of fds) native.closeFd(fd);
    },
  };
}

function startPairs(e: Embedded, pin = true): void {
  for (const p of e.pairs) {
    const before = new Set(threadIds());
    p.start();
    e.workerTids.push(...threadIds().filter((t) => !before.has(t)));
  }
  if (pin) pinThreads(e.workerTids, BACKEND_CPU);
}

function pairTotals(stats: QueuePairStats[]): Record<string, number> {
  const t: Record<string, number> = {};
  for (const s of stats) {
    for (const side of ['rx', 'tx'] as const) {
      for (const k of ['packets', 'kicks', 'calls', 'wakeups'] as const) t[`${side}.${k}`] = (t[`${side}.${k}`] ?? 0) + s[side][k];
      for (const [k, v] of Object.entries(s[side].drops)) t[`${side}.drops.${k}`] = (t[`${side}.drops.${k}`] ?? 0) + v;
      t[`${side}.errors`] = (t[`${side}.errors`] ?? 0) + s[side].errors;
    }
  }
  return t;
}

async function embeddedThroughput(spec: ThroughputSpec): Promise<Measurement> {
  const tx = spec.kind === 'emb-tx';
  const frame = tx ? (spec.frame === 'gso' ? gsoFrame() : txFrame(spec.frame)) : undefined;
  const ring = spec.ring ?? 'split';
  const e = setupEmbedded(spec.queues, frame ? frame.length : 64, 0, ring, spec.steering === true);
  let flood: ChildProcess | undefined;
  try {
    const guest = new bench.BenchGuest({
      regions: e.memory.regions, mode: tx ? 'tx' : 'rx', pairs: e.rings, frame, hdrSize: VNET_HDR, batch: 32, packed: ring === 'packed',
      // tx: the guest polls for completions, as DPDK's virtio PMD (the daemon's frontend here)
      // does: it never sleeps, so the device never calls. rx: it sleeps on the call eventfd.
      pollTx: tx,
      // tx: the guest produces on its own CPU, as a vCPU would. rx: CPU 0 is the host sender's
      // alone, as in the raw read() case, whose one thread is consumer and backend on CPU 1.
      cpu: tx ? GUEST_CPU : BACKEND_CPU, nice: GUEST_NICE,
      maxSeconds: spec.warmup + spec.seconds + 30,
    });
    startPairs(e);
    guest.start();
    if (!tx) flood = startFlood({ flows: spec.flows ?? 8, frame: spec.frame as number, seconds: spec.warmup + spec.seconds + 30 });
    const sample = () => ({
      link: linkCounters(TAP),
      guest: guest.stats(),
      pairs: e.pairs.map((p) => p.stats()),
      workerCpu: e.workerTids.reduce((t, tid) => t + threadCpuSeconds('self', tid), 0),
      workerCsw: contextSwitches(process.pid, e.workerTids),
      sender: flood ? processCpuSeconds(flood.pid!) : NaN,
    });
    const { a, b, seconds } = await measure(spec.warmup, spec.seconds, sample);
    const end = guest.stop();
    const link = diffCounters(a.link, b.link);
    const pa = pairTotals(a.pairs);
    const pb = pairTotals(b.pairs);
    const pd: Record<string, number> = {};
    for (const k of Object.keys(pb)) pd[k] = pb[k]! - (pa[k] ?? 0);
    const g = (k: keyof GuestStats): number => Number(b.guest[k]) - Number(a.guest[k]);
    const side = tx ? 'tx' : 'rx';
    const frames = pd[`${side}.packets`] || 1;
    return {
      packets: tx ? link.rxPackets : link.txPackets,
      bytes: tx ? link.rxBytes : link.txBytes,
      seconds,
      cpuSeconds: b.workerCpu - a.workerCpu,
      detail: {
        ring,
        workerThreads: e.workerTids.length,
        contextSwitchesPerKpkt: ((b.workerCsw - a.workerCsw) / Math.max(1, tx ? link.rxPackets : link.txPackets)) * 1000,
        guestFrames: g('packets'), guestCpuSeconds: g('cpuSeconds'), guestKicks: g('kicks'), guestSleeps: g('sleeps'),
        guestPublishes: g('publishes'), guestErrors: end.errors,
        device: pd,
        framesPerWakeup: frames / Math.max(1, pd[`${side}.wakeups`]! + pd[`${side}.kicks`]!),
        framesPerCall: frames / Math.max(1, pd[`${side}.calls`]!),
        tapDropped: tx ? link.rxDropped : link.txDropped,
        steering: spec.steering === true,
        ...senderCost(flood, b.sender - a.sender, link),
      },
    };
  } finally {
    flood?.kill('SIGKILL');
    e.close();
  }
}

/* ------------------------------------------------------------ ping-pong */

async function ping(spec: PingSpec): Promise<PingResult> {
  const echo = (): BenchLoop => new bench.BenchLoop({ mode: 'udp-echo', address: HOST_IP, port: 7 });
  if (spec.kind === 'raw-ping') {
    const tap = makeTap(1);
    const server = echo();
    try {
      server.start();
      const { frame, seqOffset } = pingFrame(tap.mac());
      const loop = new bench.BenchLoop({ mode: 'tap-ping', fd: tap.queues[0]!.fd, frame, seqOffset, count: spec.count, intervalUs: spec.intervalUs, maxSeconds: 60 });
      loop.start();
      while (!loop.stats().done) await sleep(20);
      const r = loop.stop();
      return { rtt: r.rtt!, detail: { echoed: server.stats().packets } };
    } finally {
      server.stop();
      tap.close();
    }
  }
  const e = setupEmbedded(1, 128, spec.busyPollUs ?? 0, spec.ring ?? 'split');
  const server = echo();
  try {
    server.start();
    const pf = pingFrame(e.tap.mac());
    // Nothing pinned, as in the raw ping: the scheduler places the guest, the worker and the
    // echo server. Pinned apart, every hop pays a wakeup of an idle vCPU (~25 us each here).
    const guest = new bench.BenchGuest({
      regions: e.memory.regions, mode: 'ping', pairs: e.rings, cpu: -1, frame: pf.frame, seqOffset: pf.seqOffset, count: spec.count, intervalUs: spec.intervalUs, maxSeconds: 60,
      packed: spec.ring === 'packed',
    });
    startPairs(e, false);
    guest.start();
    while (!guest.stats().done) await sleep(20);
    const r = guest.stop();
    return { rtt: r.rtt!, detail: { echoed: server.stats().packets, guestKicks: r.kicks, guestSleeps: r.sleeps, device: pairTotals(e.pairs.map((p) => p.stats())) } };
  } finally {
    server.stop();
    e.close();
  }
}

/* ---------------------------------------------------------------- flood */

async function flood(spec: FloodSpec): Promise<void> {
  const loop = new bench.BenchLoop({ mode: 'udp-flood', address: spec.address, port: 9, payload: spec.payload, flows: spec.flows, batch: 64, maxSeconds: spec.seconds });
  loop.start();
  const stop = (): void => {
    loop.stop();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  while (!loop.stats().done) await sleep(100);
  const s = loop.stop();
  if (s.errors > 0) process.stderr.write(`flood: ${s.errors} errors (${s.lastError ?? ''})\n`);
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '{}') as CaseSpec;
  let result: unknown;
  switch (spec.kind) {
    case 'raw-tx':
    case 'raw-rx':
      result = await rawThroughput(spec);
      break;
    case 'emb-tx':
    case 'emb-rx':
      result = await embeddedThroughput(spec);
      break;
    case 'raw-ping':
    case 'emb-ping':
      result = await ping(spec);
      break;
    case 'flood':
      await flood(spec);
      return;
    default:
      throw new Error(`unknown case ${JSON.stringify(spec)}`);
  }
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
}

if (require.main === module) {
  main().then(
    () => process.exit(0),
    (error: unknown) => {
      process.stdout.write(`ERROR ${(error as Error).stack ?? String(error)}\n`.replace(/\n(?!$)/g, ' | '));
      process.exit(1);
    },
  );
}
