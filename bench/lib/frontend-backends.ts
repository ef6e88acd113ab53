// The backends fed by DPDK's virtio_user frontend, each in a namespace of its own:
// testpmd (net_vhost -> net_tap) and the vhost-tap daemon. One measurement through
// them, the ping-pong through them, and the frontend that stays connected and idle.
import { type ChildProcess } from 'node:child_process';

import { startDaemon as startServeDaemon } from '../../harness/daemon';
import { Netns } from '../../harness/netns';
import { contextSwitches, diffCounters, linkCounters, processCpuSeconds, processName } from '../../harness/proc';
import { startTestpmd, type TestpmdBackend } from '../../harness/testpmd';
import { requireTools, tail } from '../../harness/tools';
import { startFrontend, type Frontend } from '../../harness/virtio-user';
import { until, sleep } from '../../harness/wait';
import { BACKEND_CPU, GUEST_CPU, type Measurement } from '../case';
import { newNetns } from './bench-netns';
import { CASE_JS } from './case-runner';
import { GUEST_IP, GUEST_MAC, HOST_IP, PREFIX, udpPayloadFor } from './frames';
import type { Options } from './options';
import { perfDuring, straceAfter } from './profile';
import { summarizeRtts, type Direction, type RttSummary } from './report';

export interface BackendCtx {
  kind: 'testpmd' | 'daemon';
  /** The frontend offers packed virtqueues (virtio_user packed_vq=1). */
  packed?: boolean;
  ns: Netns;
  /** The virtio_user frontend, started once per backend; cases switch its forwarding mode. */
  fe?: Frontend;
  socket: string;
  tap: string;
  pid: number;
  queues: number;
  stop(): Promise<void>;
  log(): string;
}

function hostSide(ns: Netns, dev: string): void {
  ns.exec('ip', ['addr', 'replace', `${HOST_IP}/${PREFIX}`, 'dev', dev]);
  ns.exec('ip', ['link', 'set', dev, 'up']);
  ns.exec('ip', ['neigh', 'replace', GUEST_IP, 'lladdr', GUEST_MAC, 'dev', dev, 'nud', 'permanent']);
}

export async function startTestpmdBackend(queues: number): Promise<BackendCtx> {
  const ns = newNetns();
  try {
    const socket = ns.path('vhu.sock');
    const tp: TestpmdBackend = await startTestpmd(ns, { socket, queues, tapName: 'dtap0', hostIp: `${HOST_IP}/${PREFIX}` });
    hostSide(ns, 'dtap0');
    const ctx: BackendCtx = {
      kind: 'testpmd', ns, socket, tap: 'dtap0', pid: tp.process.pid!, queues, log: () => tp.log(),
      async stop() {
        await ctx.fe?.stop();
        await tp.stop();
        ns.delete();
      },
    };
    return ctx;
  } catch (error) {
    ns.delete();
    throw error;
  }
}

export async function startDaemonBackend(queues: number, tap = 'vtd0', extraArgs: string[] = [], packed = false): Promise<BackendCtx> {
  const ns = newNetns();
  try {
    const socket = ns.path('vhu.sock');
    // On the backend's CPU, as testpmd's forwarding lcore is: the frontend polls CPU 0.
    const daemon = await startServeDaemon(ns, { socket, tap, queues, cpus: String(BACKEND_CPU), extraArgs });
    hostSide(ns, tap);
    const ctx: BackendCtx = {
      kind: 'daemon', packed, ns, socket, tap, pid: daemon.servingPid(), queues, log: () => daemon.log(),
      async stop() {
        await ctx.fe?.stop();
        // Measured, not tested here: a daemon that stops uncleanly is the test suite's business.
        await daemon.stop(5_000).catch(() => {});
        ns.delete();
      },
    };
    return ctx;
  } catch (error) {
    ns.delete();
    throw error;
  }
}

/** Connects a virtio_user frontend that moves nothing, runs `connected` once the daemon has its memory table, disconnects. */
export async function withIdleFrontend(ctx: BackendCtx, ringSize: number | undefined, connected: () => Promise<void>): Promise<void> {
  const fe = startFrontend(ctx.ns, { socket: ctx.socket, queues: ctx.queues, mode: 'io', ...(ringSize !== undefined ? { ringSize } : {}), autoStart: false });
  try {
    await fe.ready();
    await until('the frontend to set up memory', () => /"memory"/.test(ctx.log()), 10_000);
    await connected();
  } finally {
    await fe.stop();
  }
}

/** A step with a daemon of its own, stopped after it; what went wrong (DPDK missing included) goes to `failed`. */
export async function withOwnDaemon(
  dpdkMissing: string | undefined, start: () => Promise<BackendCtx>, use: (daemon: BackendCtx) => Promise<void>, failed: (message: string) => void,
): Promise<void> {
  let ctx: BackendCtx | undefined;
  try {
    if (dpdkMissing) throw new Error(dpdkMissing);
    ctx = await start();
    await use(ctx);
  } catch (error) {
    failed((error as Error).message);
  } finally {
    await ctx?.stop();
  }
}

/** The backend's virtio_user frontend, started on first use. */
async function frontendOf(ctx: BackendCtx): Promise<Frontend> {
  if (!ctx.fe) {
    // Started once per backend (EAL start-up takes seconds), idle until a case sets its mode.
    ctx.fe = startFrontend(ctx.ns, { socket: ctx.socket, queues: ctx.queues, mode: 'io', autoStart: false, packed: ctx.packed === true });
    await ctx.fe.ready();
    if (ctx.packed) {
      // A packed row must have run packed rings: virtio_user falls back to split ones if the backend does not offer bit 34.
      await until('the frontend to negotiate its features', () => /"features"/.test(ctx.log()), 10_000);
      const features = [...ctx.log().matchAll(/"event":"features","features":"(0x[0-9a-f]+)"/g)].pop()?.[1];
      if (features === undefined || ((BigInt(features) >> 34n) & 1n) !== 1n) {
        throw new Error(`virtio_user with packed_vq=1 did not negotiate VIRTIO_F_RING_PACKED (features ${features ?? 'not logged'})`);
      }
    }
  }
  return ctx.fe;
}

/** The daemon's busy polling for the second ping-pong through it, in microseconds: longer than the 1 ms between pings, so it never sleeps. */
export const BUSY_POLL_US = 2000;

/**
 * Round trips of ICMP echo, one at a time, from the host stack through a backend to
 * virtio_user answering in icmpecho mode, and back: the latency a guest's peer sees,
 * with the same frontend for every backend. ping runs every millisecond on CPU 0 with the
 * frontend's polling lcore, as the host-side sender of the host->guest cases does: the
 * backend has CPU 1 to itself, whether it polls it (testpmd) or sleeps on it (the daemon).
 */
export async function frontendPing(ctx: BackendCtx, count: number): Promise<RttSummary> {
  requireTools('ping'); // Debian: iputils-ping
  const fe = await frontendOf(ctx);
  try {
    await fe.forward('icmpecho');
    const ping = (n: number): Promise<{ stdout: string; stderr: string }> =>
      ctx.ns.run('taskset', ['-c', String(GUEST_CPU), 'ping', '-n', '-c', String(n), '-i', '0.001', '-W', '1', GUEST_IP], { timeoutMs: n * 5 + 20_000 });
    await ping(20); // warm-up: the first echoes pay for cold caches and the frontend's first poll
    const r = await ping(count);
    const rtts = [...r.stdout.matchAll(/ time=([\d.]+) ms/g)].map((m) => Number(m[1]) * 1000);
    if (rtts.length === 0) throw new Error(`no echo came back through ${ctx.kind}: ${tail(r.stdout + r.stderr, 3)}`);
    return summarizeRtts(rtts, count - rtts.length);
  } finally {
    await fe.commands(['stop']).catch(() => {});
  }
}

/** One measurement through a backend fed by DPDK's virtio_user frontend (and the UDP flood for host-to-guest). */
export async function frontendCase(ctx: BackendCtx, dir: Direction, frame: number, o: Options): Promise<Measurement> {
  const fe = await frontendOf(ctx);
  let flood: ChildProcess | undefined;
  try {
    await fe.forward(dir === 'g2h' ? 'txonly' : 'rxonly', dir === 'g2h' ? frame : undefined);
    if (dir === 'h2g') {
      flood = ctx.ns.spawn('taskset', ['-c', '0', process.execPath, CASE_JS, JSON.stringify({ kind: 'flood', address: GUEST_IP, payload: udpPayloadFor(frame), flows: 8, seconds: o.warmup + o.seconds + 20 })], { stdio: 'ignore' });
      // (pinned to CPU 0, with the frontend's forwarding lcore: the backend has CPU 1, as in every other case)
    }
    await sleep(o.warmup * 1000);
    const sample = () => ({ link: linkCounters(ctx.tap, ctx.ns.name), cpu: processCpuSeconds(ctx.pid), csw: contextSwitches(ctx.pid), t: process.hrtime.bigint() });
    const profiling = o.profile && ctx.kind === 'daemon' && !ctx.packed && dir === 'g2h' && frame === 64 && ctx.queues === 1;
    const perf = profiling ? perfDuring(ctx.pid, o.seconds) : undefined;
    const a = sample();
    const feA = await fe.portStats();
    await sleep(Math.max(0, o.seconds * 1000 - Number(process.hrtime.bigint() - a.t) / 1e6));
    const b = sample();
    const feB = await fe.portStats();
    const link = diffCounters(a.link, b.link);
    const profile = profiling ? { perf: await perf, strace: await straceAfter(ctx.pid) } : undefined;
    if (!Number.isFinite(b.cpu)) throw new Error(`the backend (pid ${ctx.pid}) died: ${tail(ctx.log(), 5)}`);
    const claimed = feA && feB ? (dir === 'g2h' ? feB.tx - feA.tx : feB.rx - feA.rx) : undefined;
    return {
      packets: dir === 'g2h' ? link.rxPackets : link.txPackets,
      bytes: dir === 'g2h' ? link.rxBytes : link.txBytes,
      seconds: Number(b.t - a.t) / 1e9,
      cpuSeconds: b.cpu - a.cpu,
      detail: {
        contextSwitchesPerKpkt: ((b.csw - a.csw) / Math.max(1, dir === 'g2h' ? link.rxPackets : link.txPackets)) * 1000,
        frontendClaimed: claimed,
        ...(profile ? { profile } : {}), tapDropped: dir === 'g2h' ? link.rxDropped : link.txDropped, backendProcess: processName(ctx.pid) },
    };
  } finally {
    flood?.kill('SIGKILL');
    await fe.commands(['stop']).catch(() => {});
  }
}
