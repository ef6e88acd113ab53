#!/usr/bin/env node
// `npm run bench`: vhost-tap side by side with the raw tap limit, DPDK testpmd
// and QEMU's own tap backend, in one run, in private network namespaces that it
// creates and removes; with a guest, also one live migration per backend
// (informational). Prints a progress line, then the table; writes
// bench/results/latest.json and latest.svg. Targets are printed as met / not
// met; the run exits 0 unless the harness itself breaks.
//
//   node dist/bench/run.js [--seconds 3] [--warmup 1] [--no-guest] [--only REGEX] [--quick]
import { execFile, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { DAEMON_CLI, startDaemon as startServeDaemon } from '../test/e2e/daemon';
import { Netns, REPO_ROOT, addTap, bootGuest, ensureGuest, parseIperf3, requireTools, tail } from '../test/e2e/guest';
import { until } from '../test/helpers/device';
import { startTestpmd, type TestpmdBackend } from '../test/e2e/testpmd';
import * as mig from '../test/e2e/migration';
import { QUEUES as SWITCH_QUEUES, switchOnDaemon, switchOnQemuTap, type SwitchParams, type SwitchRun } from '../test/e2e/switch-loss';
import { BACKEND_CPU, GUEST_CPU, type Measurement, type PingResult, type ThroughputSpec } from './case';
import { startFrontend, type Frontend } from './lib/dpdk';
import { bench } from './lib/native';
import { GUEST_IP, GUEST_MAC, HOST_IP, PREFIX, udpPayloadFor } from './lib/frames';
import { contextSwitches, diffCounters, linkCounters, memoryReport, processCpuSeconds, processName, sleep } from './lib/proc';
import {
  backendLabel, baseBackend, evaluateTargets, finishRow, frameLabel, renderSvg, renderTable, ringOf, summarizeRtts,
  type Backend, type Direction, type FrameKind, type GuestResult, type IdleResult, type LatencyResult, type MemoryResult, type MigrationResult, type MigrationRun,
  type MigrationWindow, type Report, type Row, type RttSummary, type SwitchLossResult, type SwitchLossRun,
} from './lib/report';

/* ---------------------------------------------------------------- options */

interface Options {
  seconds: number;
  warmup: number;
  guest: boolean;
  only?: RegExp;
  quick: boolean;
  budgetSeconds: number;
  /**
   * Each throughput case runs this many times, raw and embedded interleaved, and keeps its
   * best window: interference from the rest of the machine only ever slows a run down.
   */
  repeat: number;
  /** The daemon's guest->host 64 B case: perf stat (per thread: CPU, context switches, syscalls) during the window, strace -c -f after it. */
  profile: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { seconds: 3, warmup: 1, guest: true, quick: false, budgetSeconds: 900, profile: false, repeat: 2 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--seconds') o.seconds = Number(value());
    else if (a === '--warmup') o.warmup = Number(value());
    else if (a === '--no-guest') o.guest = false;
    else if (a === '--only') o.only = new RegExp(value());
    else if (a === '--quick') o.quick = true;
    else if (a === '--profile') o.profile = true;
    else if (a === '--budget') o.budgetSeconds = Number(value());
    else if (a === '--repeat') o.repeat = Math.max(1, Math.floor(Number(value())));
    else if (a === '--help' || a === '-h') {
      process.stdout.write('node dist/bench/run.js [--seconds 3] [--warmup 1] [--repeat 2] [--no-guest] [--only REGEX] [--quick] [--budget 900] [--profile]\n');
      process.exit(0);
    } else throw new Error(`unknown option ${a}`);
  }
  if (o.quick) {
    o.seconds = Math.min(o.seconds, 1.5);
    o.warmup = Math.min(o.warmup, 0.5);
    o.repeat = 1;
  }
  return o;
}

/* --------------------------------------------------------------- progress */

const started = Date.now();
const loadAtStart = os.loadavg()[0]!.toFixed(2);
const tty = process.stdout.isTTY === true;
let step = 0;
let steps = 0;

function elapsed(): string {
  const s = Math.round((Date.now() - started) / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

function progress(text: string): void {
  const line = `[${String(step).padStart(2)}/${steps} ${elapsed()}] ${text}`;
  if (tty) process.stdout.write(`\r\x1b[K${line.slice(0, (process.stdout.columns || 120) - 1)}`);
  else process.stdout.write(`${line}\n`);
}

function endProgress(): void {
  if (tty) process.stdout.write('\r\x1b[K');
}

/* ------------------------------------------------------------------ paths */

const CASE_JS = path.join(__dirname, 'case.js');
const RESULTS = path.join(REPO_ROOT, 'bench', 'results');

function newNetns(): Netns {
  const ns = Netns.create('vtbench');
  // No IPv6 chatter (router/neighbour solicitations) on the taps: only the frames we send.
  ns.exec('sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  return ns;
}

/** Namespaces and DPDK runtime dirs left by a run that was killed (SIGKILL leaves no chance to clean). */
function removeStale(): void {
  let names: string[] = [];
  try {
    names = fs.readdirSync('/run/netns');
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^vtbench-(\d+)-\d+$/.exec(name);
    if (!m || fs.existsSync(`/proc/${m[1]}`)) continue;
    try {
      for (const pid of execFileSync('ip', ['netns', 'pids', name], { encoding: 'utf8' }).split(/\s+/).filter(Boolean)) process.kill(Number(pid), 'SIGKILL');
    } catch {
      // gone
    }
    try {
      execFileSync('ip', ['netns', 'delete', name], { stdio: 'ignore' });
    } catch {
      // gone
    }
    for (const suffix of ['', '-vu']) fs.rmSync(`/var/run/dpdk/${name}${suffix}`, { recursive: true, force: true });
  }
}

/* ----------------------------------------------------- child case runner */

/** Runs one case in a child; `cpus` confines the whole child (taskset) to those CPUs. */
async function runCase<T>(ns: Netns, spec: object, timeoutMs: number, cpus?: string): Promise<T> {
  const argv = [process.execPath, CASE_JS, JSON.stringify(spec)];
  const r = await (cpus === undefined ? ns.run(argv[0]!, argv.slice(1), { timeoutMs }) : ns.run('taskset', ['-c', cpus, ...argv], { timeoutMs }));
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT ') || l.startsWith('ERROR '));
  if (!line) {
    // The line that says what went wrong (an uncaught error's message, ERR_DLOPEN_FAILED...) first: the progress line shows only that.
    const out = r.stdout + r.stderr;
    const why = out.split('\n').find((l) => /\b\w*Error\b|\bERR_[A-Z_]+\b/.test(l))?.trim();
    throw new Error(`case exited (${r.code ?? r.signal}) without a result${why ? `: ${why}` : ''}: ${tail(out, 5)}`);
  }
  if (line.startsWith('ERROR ')) throw new Error(line.slice(6));
  return JSON.parse(line.slice(7)) as T;
}

/* ------------------------------------------------- frontend-fed backends */

interface BackendCtx {
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

async function startTestpmdBackend(queues: number): Promise<BackendCtx> {
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

async function startDaemon(queues: number, tap = 'vtd0', extraArgs: string[] = [], packed = false): Promise<BackendCtx> {
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
async function withIdleFrontend(ctx: BackendCtx, ringSize: number | undefined, connected: () => Promise<void>): Promise<void> {
  const fe = startFrontend(ctx.ns, { socket: ctx.socket, queues: ctx.queues, mode: 'io', ...(ringSize !== undefined ? { ringSize } : {}), autoStart: false });
  try {
    await fe.ready();
    await until('the frontend to set up memory', () => /"memory"/.test(ctx.log()), 10_000);
    await connected();
  } finally {
    await fe.stop();
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
const BUSY_POLL_US = 2000;

/**
 * Round trips of ICMP echo, one at a time, from the host stack through a backend to
 * virtio_user answering in icmpecho mode, and back: the latency a guest's peer sees,
 * with the same frontend for every backend. ping runs every millisecond on CPU 0 with the
 * frontend's polling lcore, as the host-side sender of the host->guest cases does: the
 * backend has CPU 1 to itself, whether it polls it (testpmd) or sleeps on it (the daemon).
 */
async function frontendPing(ctx: BackendCtx, count: number): Promise<RttSummary> {
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
async function frontendCase(ctx: BackendCtx, dir: Direction, frame: number, o: Options): Promise<Measurement> {
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

function runTool(cmd: string, args: string[], timeoutMs = 15_000): Promise<string> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 1 << 20 }, (error, stdout, stderr) =>
      resolve(`${stdout}${stderr}`.trim() || (error ? String(error.message) : '')));
  });
}

/** perf stat of a backend during the measurement window: CPU, context switches and system calls (a kernel counter, no ptrace), per thread. */
function perfDuring(pid: number, seconds: number): Promise<string> {
  return runTool('perf', ['stat', '--per-thread', '-e', 'task-clock,context-switches,raw_syscalls:sys_enter', '-p', String(pid), '--', 'sleep', String(seconds)]);
}

/** strace -c -f of a backend under load, after the window (ptrace slows it): which system calls. */
async function straceAfter(pid: number): Promise<string> {
  const text = await runTool('timeout', ['-s', 'INT', '2', 'strace', '-c', '-f', '-p', String(pid)]);
  return text.split('\n').filter((l) => !/^strace: Process \d+ (attached|detached)/.test(l)).join('\n');
}

/* -------------------------------------------------------------------- main */

interface Step {
  label: string;
  run(): Promise<void>;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('npm run bench needs root: it creates network namespaces and tap devices');
  requireTools('ip', 'setpriv');
  // Without DPDK the cases it feeds (testpmd, the daemon, idle, memory) are reported as not run, with what to install.
  let dpdkMissing: string | undefined;
  try {
    requireTools('dpdk-testpmd');
  } catch (error) {
    // Debian 12 (DPDK 22.11) ships dpdk-testpmd in dpdk-dev, not in dpdk.
    dpdkMissing = `${(error as Error).message} dpdk-dev librte-net-virtio23 librte-mempool-ring23`;
    process.stdout.write(`${dpdkMissing}\n(the DPDK cases are skipped)\n`);
  }
  if (!fs.existsSync(DAEMON_CLI)) throw new Error(`${DAEMON_CLI} is missing: run npm run build first`);
  removeStale();
  fs.mkdirSync(RESULTS, { recursive: true });

  const rows: Row[] = [];
  const latency: LatencyResult = { errors: [] };
  const idle: IdleResult = { seconds: 2 };
  const memory: MemoryResult = { queuePairs: 8, ringSize: 1024 };
  const guest: GuestResult = { errors: [] };
  const migration: MigrationResult = { accel: 'tcg', errors: [] };
  const switchLoss: SwitchLossResult = { errors: [] };
  const stepsList: Step[] = [];
  const want = (label: string): boolean => !o.only || o.only.test(label);
  const caseTimeout = (o.warmup + o.seconds + 40) * 1000;

  // Raw loops and the embedded data path: one child per case, in one namespace.
  let caseNs: Netns | undefined;
  const nsForCases = (): Netns => (caseNs ??= newNetns());
  const throughput: { dir: Direction; frame: FrameKind; queues: number }[] = [];
  for (const queues of [1, 2]) {
    for (const frame of [64, 1500, 'gso'] as FrameKind[]) throughput.push({ dir: 'g2h', frame, queues });
    for (const frame of [64, 1500]) throughput.push({ dir: 'h2g', frame, queues });
  }
  // The embedded path and the daemon end with their ring layout: --only 'packed' (or 'split') picks one, and
  // a pattern for a case ('vhost-tap daemon guest->host 64 B 1q') picks both, one beside the other. The
  // embedded path with the steering program ends with ', steering program': --only 'embedded .*2q' picks
  // it with the embedded rows it is compared with, --only 'steering' alone (and the queue-count changes).
  const label = (b: Backend, dir: Direction, frame: FrameKind, q: number): string => {
    const ring = ringOf(b);
    return `${backendLabel(baseBackend(b), dir)} ${dir === 'g2h' ? 'guest->host' : 'host->guest'} ${frameLabel(frame)} ${q}q${ring ? ` ${ring}` : ''}` +
      `${b === 'embedded-steering' ? ', steering program' : ''}`;
  };
  /** The cases that also run over packed rings: informational, 1 pair, within the time budget. */
  const packedCase = (t: { frame: FrameKind; queues: number }): boolean => t.queues === 1 && t.frame !== 'gso';
  /**
   * The cases that also run with the tap steering program (issue 12): 2 pairs, where tun hashes every
   * frame without it; both directions (its saving is in the workers' writes, its own cost in the
   * host sender's transmit); 1500 B only, the issue's case: the hash reads headers, whatever the
   * frame's size, and the full run has no time for more. Informational.
   */
  const steeringCase = (t: { frame: FrameKind; queues: number }): boolean => t.queues === 2 && t.frame === 1500;
  const record = async (b: Backend, dir: Direction, frame: FrameKind, queues: number, fn: () => Promise<Measurement>): Promise<void> => {
    const row: Row = { backend: b, dir, frame, queues };
    try {
      Object.assign(row, await fn());
      finishRow(row);
    } catch (error) {
      row.error = (error as Error).message;
    }
    lastRecorded = row;
    // A repeated case keeps its best window, and every window's rate for the record.
    const index = rows.findIndex((r) => r.backend === b && r.dir === dir && r.frame === frame && r.queues === queues);
    const earlier = index >= 0 ? rows[index]! : undefined;
    const samples = [...((earlier?.detail?.mppsSamples as number[] | undefined) ?? (earlier?.mpps !== undefined ? [earlier.mpps] : [])), ...(row.mpps !== undefined ? [row.mpps] : [])];
    const best = !earlier || (earlier.error !== undefined && row.error === undefined) || (row.mpps ?? -1) > (earlier.mpps ?? -1) ? row : earlier;
    if (best.error === undefined) best.detail = { ...best.detail, mppsSamples: samples };
    if (index >= 0) rows[index] = best;
    else rows.push(best);
  };
  let lastRecorded: Row | undefined;

  // raw and embedded (split, then packed where it runs) back to back for each case, `repeat` times: the
  // same background load for the rows compared.
  for (const t of throughput) {
    const backends: readonly Backend[] = [
      'raw', 'embedded', ...(packedCase(t) ? ['embedded-packed' as const] : []), ...(steeringCase(t) ? ['embedded-steering' as const] : []),
    ];
    for (const b of Array.from({ length: o.repeat }, () => backends).flat()) {
      const l = label(b, t.dir, t.frame, t.queues);
      if (!want(l)) continue;
      stepsList.push({
        label: l,
        run: () => record(b, t.dir, t.frame, t.queues, () => {
          const kind = `${b === 'raw' ? 'raw' : 'emb'}-${t.dir === 'g2h' ? 'tx' : 'rx'}` as ThroughputSpec['kind'];
          const spec: ThroughputSpec = {
            kind, frame: t.frame, queues: t.queues, warmup: o.warmup, seconds: o.seconds, flows: 8, ...(b === 'embedded-packed' ? { ring: 'packed' as const } : {}),
            ...(b === 'embedded-steering' ? { steering: true } : {}),
          };
          return runCase<Measurement>(nsForCases(), spec, caseTimeout);
        }),
      });
    }
  }

  // testpmd and the daemon: one backend per queue count, one frontend per case (testpmd's tap path carries no GSO);
  // the daemon once more behind a frontend with packed rings, right after the same cases with split ones.
  const frontendBackends: { b: 'testpmd' | 'daemon' | 'daemon-packed'; queues: number }[] = [
    { b: 'testpmd', queues: 1 }, { b: 'testpmd', queues: 2 }, { b: 'daemon', queues: 1 }, { b: 'daemon-packed', queues: 1 }, { b: 'daemon', queues: 2 },
  ];
  for (const { b, queues } of frontendBackends) {
    let ctx: BackendCtx | undefined;
    const cases = throughput
      .filter((t) => t.queues === queues && t.frame !== 'gso' && (b !== 'daemon-packed' || packedCase(t)) && want(label(b, t.dir, t.frame, t.queues)))
      .flatMap((t) => Array.from({ length: o.repeat }, () => t));
    const backend = async (): Promise<BackendCtx> => {
      if (dpdkMissing) throw new Error(dpdkMissing);
      return (ctx ??= await (b === 'testpmd' ? startTestpmdBackend(queues) : startDaemon(queues, 'vtd0', [], b === 'daemon-packed')));
    };
    const distrust = async (): Promise<void> => {
      // A backend that failed once is not trusted for the next case: start a fresh one.
      await ctx?.stop().catch(() => {});
      ctx = undefined;
    };
    const steps: Step[] = cases.map((t) => ({
      label: label(b, t.dir, t.frame, t.queues),
      run: () => record(b, t.dir, t.frame, queues, async () => {
        const c = await backend();
        try {
          return await withTimeout(frontendCase(c, t.dir, t.frame as number, o), caseTimeout, 'frontend case');
        } catch (error) {
          await distrust();
          throw error;
        }
      }),
    }));
    const pingLabel = `${backendLabel(b, 'g2h')} latency ping-pong through virtio_user icmpecho`;
    if (queues === 1 && b !== 'daemon-packed' && want(pingLabel)) {
      steps.push({
        label: pingLabel,
        run: async () => {
          try {
            latency[b] = await withTimeout(frontendPing(await backend(), o.quick ? 500 : 2000), caseTimeout, 'ping through the frontend');
          } catch (error) {
            latency.errors.push(`${b} ping: ${(error as Error).message}`);
            await distrust();
          }
        },
      });
    }
    steps.forEach((step, i) => stepsList.push(i < steps.length - 1 ? step : {
      label: step.label,
      run: async () => {
        try {
          await step.run();
        } finally {
          await ctx?.stop();
          ctx = undefined;
        }
      },
    }));
  }

  if (want('latency ping-pong')) {
    stepsList.push({
      label: 'ping-pong: raw loop, then vhost-tap embedded',
      run: async () => {
        for (const kind of ['raw-ping', 'emb-ping'] as const) {
          try {
            // Both ping-pongs on one CPU: on this kind of VM a wakeup across vCPUs costs tens of
            // microseconds and the scheduler's placement swings p50 from 30 to 400 us (measured).
            const r = await runCase<PingResult>(nsForCases(), { kind, count: 3000, intervalUs: 100 }, 45_000, String(GUEST_CPU));
            if (kind === 'raw-ping') latency.raw = r.rtt;
            else latency.embedded = r.rtt;
          } catch (error) {
            latency.errors.push(`${kind}: ${(error as Error).message}`);
          }
        }
      },
    });
  }

  // A step with a daemon of its own, stopped after it; what went wrong goes to `failed`.
  const withOwnDaemon = async (start: () => Promise<BackendCtx>, use: (daemon: BackendCtx) => Promise<void>, failed: (message: string) => void): Promise<void> => {
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
  };

  // The daemon once more, asked to spin after work (vhost-net's busyloop_timeout) for longer than
  // the gap between pings: what polling buys a ping-pong, next to testpmd, which always polls.
  const busyPollLabel = `vhost-tap daemon --busy-poll-us ${BUSY_POLL_US} latency ping-pong through virtio_user icmpecho`;
  if (want(busyPollLabel)) {
    stepsList.push({
      label: busyPollLabel,
      run: () => withOwnDaemon(() => startDaemon(1, 'vtd0', ['--busy-poll-us', String(BUSY_POLL_US)]), async (ctx) => {
        latency.daemonBusyPoll = await withTimeout(frontendPing(ctx, o.quick ? 500 : 2000), caseTimeout, 'ping through the frontend');
        latency.daemonBusyPollUs = BUSY_POLL_US;
      }, (message) => latency.errors.push(`daemon --busy-poll-us ${BUSY_POLL_US} ping: ${message}`)),
    });
  }

  if (want('idle')) {
    stepsList.push({
      label: 'idle: vhost-tap daemon connected, no traffic',
      run: () => withOwnDaemon(() => startDaemon(1), (daemon) => withIdleFrontend(daemon, undefined, async () => {
        await sleep(1000);
        const a = processCpuSeconds(daemon.pid);
        await sleep(idle.seconds * 1000);
        idle.cpuSeconds = processCpuSeconds(daemon.pid) - a;
      }), (message) => (idle.error = message)),
    });
  }

  if (want('memory')) {
    stepsList.push({
      label: 'memory: vhost-tap daemon with 8 pairs x 1024 entries',
      run: () => withOwnDaemon(() => startDaemon(memory.queuePairs, 'vtm0'), async (daemon) => {
        await sleep(500);
        memory.baselineRssMb = memoryReport(daemon.pid).rssKb / 1024;
        await withIdleFrontend(daemon, memory.ringSize, async () => {
          await sleep(1500);
          const m = memoryReport(daemon.pid);
          memory.rssMb = m.rssKb / 1024;
          memory.guestMb = m.guestRssKb / 1024;
          memory.netMb = (m.rssKb - m.guestRssKb) / 1024;
          memory.mappings = m.guestMappings;
        });
      }, (message) => (memory.error = message)),
    });
  }

  if (o.guest && want('real guest')) {
    stepsList.push({
      label: 'real guest: iperf3 through vhost-tap, then through QEMU tap',
      run: async () => {
        const used = (Date.now() - started) / 1000;
        if (used > o.budgetSeconds - 90) {
          guest.skipped = `time budget: ${Math.round(used)} s used of ${o.budgetSeconds}`;
          return;
        }
        try {
          requireTools('qemu-system-x86_64', 'iperf3');
          ensureGuest();
        } catch (error) {
          guest.skipped = (error as Error).message.split('\n')[0];
          return;
        }
        await realGuest(guest, o);
      },
    });
  }

  if (o.guest && want(MIGRATION_LABEL)) {
    stepsList.push({
      label: MIGRATION_LABEL,
      run: async () => {
        const used = (Date.now() - started) / 1000;
        if (used > o.budgetSeconds - MIGRATION_SECONDS) {
          migration.skipped = `time budget: ${Math.round(used)} s used of ${o.budgetSeconds}, the section may need ${MIGRATION_SECONDS} s`;
          return;
        }
        try {
          requireTools('qemu-system-x86_64', 'iperf3');
          ensureGuest();
        } catch (error) {
          migration.skipped = (error as Error).message.split('\n')[0];
          return;
        }
        await liveMigration(migration, o);
      },
    });
  }

  if (o.guest && want(SWITCH_LOSS_LABEL)) {
    stepsList.push({
      label: SWITCH_LOSS_LABEL,
      run: async () => {
        const used = (Date.now() - started) / 1000;
        if (used > o.budgetSeconds - SWITCH_LOSS_SECONDS) {
          switchLoss.skipped = `time budget: ${Math.round(used)} s used of ${o.budgetSeconds}, the section may need ${SWITCH_LOSS_SECONDS} s`;
          return;
        }
        try {
          requireTools('qemu-system-x86_64', 'iperf3');
          ensureGuest();
        } catch (error) {
          switchLoss.skipped = (error as Error).message.split('\n')[0];
          return;
        }
        await queueCountChanges(switchLoss, o);
      },
    });
  }

  steps = stepsList.length;
  for (const s of stepsList) {
    step++;
    progress(s.label);
    await s.run();
    const last = lastRecorded;
    lastRecorded = undefined;
    if (!tty && last) {
      process.stdout.write(`        ${last.error ? `FAILED ${last.error.split('\n')[0]}` : `${last.mpps!.toFixed(3)} Mpps ${last.gbps!.toFixed(2)} Gbit/s`}\n`);
    }
  }
  caseNs?.delete();
  endProgress();

  const report: Report = {
    machine: { ...machineInfo(), loadAverageAtStart: Number(loadAtStart) },
    startedAt: new Date(started).toISOString(),
    elapsedSeconds: Math.round((Date.now() - started) / 1000),
    config: { seconds: o.seconds, warmup: o.warmup, repeat: o.repeat, ringSize: 256, floodFlows: 8, generatorBatch: 32 },
    rows, latency, idle, memory, guest, migration, switchLoss,
    targets: evaluateTargets(rows, latency, idle, memory),
    notes: NOTES,
  };
  const table = renderTable(report);
  process.stdout.write(`\nvhost-tap bench, ${report.startedAt}, ${String(report.machine.cpus)} x ${String(report.machine.cpuModel)}, Linux ${String(report.machine.kernel)}, ` +
    `${report.elapsedSeconds} s, load average at start ${String(loadAtStart)} (other work on the machine skews every figure); ` +
    `a system call costs ${String(report.machine.syscallNs)} ns here (getppid)\n\n${table}\n`);
  fs.writeFileSync(path.join(RESULTS, 'latest.json'), `${JSON.stringify({ ...report, table }, null, 2)}\n`);
  fs.writeFileSync(path.join(RESULTS, 'latest.svg'), renderSvg(report));
  process.stdout.write(`\nwrote ${path.relative(process.cwd(), path.join(RESULTS, 'latest.json'))} and latest.svg; node dist/bench/readme.js puts the run into README.md\n`);
}

const NOTES = [
  'Each throughput figure is the best of config.repeat windows (raw and embedded interleaved; testpmd and the daemon back to back on one backend): load from elsewhere on the machine only ever slows a window down, so the best is the least disturbed. Every window\'s Mpps is in latest.json (detail.mppsSamples).',
  'Counts are the tap\'s own (ip -s -j link): frames it took from userspace (guest->host) or handed to it (host->guest), over the window after a warm-up; never what a backend or frontend claims (the frontend\'s count is shown for reference).',
  'guest->host frames are UDP (64, 1500 B) or TCP GSO (64 KB, gso_size 1448) addressed to a MAC that is not the host\'s, as DPDK txonly frames are: the stack takes them in and drops them, so the figure is backend + tap cost.',
  'host->guest: one sender process floods UDP over 8 flows with sendmmsg (64 per call) to a static neighbour behind the tap, the same for every backend. '
    + 'Placement on the 2 cores: the sender on CPU 0 with virtio_user\'s forwarding lcore; the backend on CPU 1 (testpmd\'s forwarding lcore, the daemon, the data path workers, the raw loops), '
    + 'and the native guest of the embedded case with them on CPU 1, so that CPU 0 is the sender\'s alone as in the raw read() case (guest->host: the native guest on CPU 0, as a vCPU). Where a busy-polling frontend shares CPU 0, the sender gets half of it, so host->guest daemon/testpmd rates are lower than raw/embedded ones.',
  'CPU s/Mpkt: raw = the loop threads; embedded = the data path worker threads only (the native guest is not counted); testpmd / daemon = the whole backend process (/proc/<pid>/stat). testpmd busy-polls a core whatever the load.',
  'embedded: the native guest (bench/native/guest_generator.cc) runs split rings of 256 entries with event idx, one descriptor per frame, avail published every 32 chains, kicks only when the device asks; tx: it polls its used ring for completions as DPDK\'s virtio PMD does, so the device never calls; rx: it sleeps on the call eventfd; the QueuePair is configured as VirtioNetDevice does for a VERSION_1 + MRG_RXBUF driver without guest offloads.',
  'split vs packed (issue 14, informational, no target): the embedded path and the daemon again, 1 pair, 64 and 1500 B both ways, over packed virtqueues (VIRTIO_F_RING_PACKED). '
    + 'embedded packed: the same native guest in its packed mode (one descriptor per frame written into the ring, a batch of 32 exposed by its first descriptor\'s flags, '
    + 'EVENT_IDX kicks and calls through the device and driver event suppression areas, as Linux\'s virtio_ring), interleaved with the split and raw windows of the same case. '
    + 'daemon packed: a daemon of its own behind DPDK virtio_user with packed_vq=1 (its features line checked for bit 34), right after the split daemon\'s 1-pair cases; '
    + 'DPDK\'s virtio_user negotiates no EVENT_IDX with either layout, so both use the flags alone.',
  'ping-pong: a 64 B UDP frame to an echo server (recvfrom/sendto) on the tap\'s host address; the reply comes back through the same tap queue. raw = write() + poll()/read() on the queue fd; embedded = post + kick, wait on the rx call eventfd. The difference of the two p50s is what the data path adds. '
    + 'Both run confined to CPU 0 (guest, worker and echo server alike): across the two vCPUs of this VM every hop pays a wakeup of an idle vCPU, and p50 swung from 30 to 400 us with the threads left to float.',
  'ping-pong through a frontend: ping (ICMP echo, one every ms) from the tap\'s host side to DPDK virtio_user answering in icmpecho mode, through testpmd and through the daemon (1 pair), ping on CPU 0 with the frontend\'s polling lcore, the backend on CPU 1. testpmd polls its core; the daemon sleeps between pings, and each wakeup of the idle vCPU costs tens of microseconds on a VM (twice per round trip: the request from the tap, the reply\'s kick); the daemon with --busy-poll-us 2000 never sleeps between pings, as testpmd.',
  'tun\'s flow hash vs the steering program (issue 12, informational, no target): the embedded 2-pair 1500 B cases again with the tap steering program attached (TUNSETSTEERINGEBPF, '
    + 'a Toeplitz hash and an indirection table spreading over both queues, as VirtioNetDevice sets it up), interleaved with the raw and embedded windows of the same case. '
    + 'Without it, with 2+ queues tun hashes every frame a worker writes (guest->host) and updates its flow table, and hashes every frame the host sends (host->guest) to pick its queue; '
    + 'with it, the write path does neither, and the program picks the queue of every host->guest frame in the sender\'s transmit. CPU per frame in ns: the workers\' (schedstat), '
    + 'and host->guest the flood sender\'s (utime + stime, 10 ms ticks) over the frames it got through plus those the tap dropped (the queue is picked before a full queue drops).',
  'queue-count changes (issue 12, informational, no target): test/e2e/switch-loss.ts, as test/e2e/lossless-switch.test.ts runs it with fewer changes: a Debian guest under QEMU/TCG '
    + '(2 vCPUs, 4 queue pairs) receives UDP from the host over 16 flows (iperf3 -s in the guest, per-flow sequence numbers; the host\'s sender ends the test only once nothing is left on the way), '
    + 'first without any change (the baseline), then while it runs ethtool -L eth0 combined 1, 2, 4 in turn; the daemon with its steering program, the daemon with --no-steering, '
    + 'and QEMU\'s own tap backend (vhost=off) in turn, each tap with txqueuelen 20000.',
  'live migration (informational, no target): test/e2e/migration.ts\'s topology, a bridge in a private namespace with one tap per side (a `vhost-tap serve` daemon per side, or QEMU\'s own tap with vhost=off); '
    + 'a Debian guest under QEMU/TCG (1 vCPU unless MIGRATION_SMP says otherwise, 2 queue pairs, 512 MiB) streams iperf3 to the host and from it (-R), and is migrated once over TCP on the namespace\'s loopback (max-bandwidth 4 GiB/s, downtime-limit 300 ms). '
    + 'total, downtime, setup and MiB sent are QEMU\'s query-migrate; Mbit/s each way are the bridge\'s byte counters, sampled every 200 ms. Under TCG the guest\'s CPU, not the backend, bounds both figures: orientation only.',
];

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    p.then((v) => {
      clearTimeout(timer);
      resolve(v);
    }, (e: unknown) => {
      clearTimeout(timer);
      reject(e as Error);
    });
  });
}

function machineInfo(): Record<string, unknown> {
  let dpdk = '';
  try {
    dpdk = execFileSync('dpkg-query', ['-W', '-f', '${Version}', 'dpdk'], { encoding: 'utf8' });
  } catch {
    // not from Debian
  }
  let qemu = '';
  try {
    qemu = execFileSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' }).split('\n')[0]!;
  } catch {
    // not installed
  }
  let meltdown = '';
  try {
    // "Mitigation: PTI": every system call switches page tables, which is what makes a call cost a microsecond on some VMs.
    meltdown = fs.readFileSync('/sys/devices/system/cpu/vulnerabilities/meltdown', 'utf8').trim();
  } catch {
    // not reported by this kernel
  }
  return {
    hostname: os.hostname(), cpus: os.cpus().length, loadAverage: os.loadavg().map((x) => Number(x.toFixed(2))), cpuModel: os.cpus()[0]?.model, kernel: os.release(),
    memoryGb: Math.round(os.totalmem() / 2 ** 30), node: process.version, dpdk, qemu,
    // The raw loops pay one system call per frame and the data path one per batch: their ratio follows this.
    syscallNs: Number(bench.syscallCostNs(BACKEND_CPU).toFixed(0)), meltdown,
  };
}

/* -------------------------------------------------------------- real guest */

async function realGuest(result: GuestResult, o: Options): Promise<void> {
  const secs = o.quick ? 2 : 4;
  const commands = `iperf3 -c 10.78.0.1 -t ${secs} | tail -4; iperf3 -c 10.78.0.1 -t ${secs} -R | tail -4`;
  const parse = (output: string): { g2hGbps?: number; h2gGbps?: number } => {
    // In order: the guest sends, then (-R) receives; `| tail -4` drops the "Reverse mode" line.
    const [g2h, h2g] = parseIperf3(output);
    return { g2hGbps: g2h?.receiverGbps ?? g2h?.senderGbps, h2gGbps: h2g?.receiverGbps ?? h2g?.senderGbps };
  };
  // vhost-tap daemon
  let ctx: BackendCtx | undefined;
  try {
    ctx = await startDaemon(1, 'vtg0');
    ctx.ns.exec('ip', ['addr', 'replace', '10.78.0.1/24', 'dev', 'vtg0']);
    ctx.ns.spawn('iperf3', ['-s'], { stdio: 'ignore' });
    const r = await bootGuest({ netns: ctx.ns, netdev: { kind: 'vhost-user', socket: ctx.socket, queues: 1 }, guestIp: '10.78.0.2/24', commands, timeoutMs: 120_000 });
    result.vhostTap = parse(r.output);
    if (result.vhostTap.g2hGbps === undefined) result.errors.push(`vhost-tap guest: no iperf3 result: ${tail(r.output, 6)}`);
  } catch (error) {
    result.errors.push(`vhost-tap guest: ${(error as Error).message}`);
  } finally {
    await ctx?.stop();
  }
  // QEMU's own tap backend
  const ns = newNetns();
  try {
    addTap(ns, { ifname: 'tapq0', hostIp: '10.78.0.1/24', queues: 1 });
    ns.spawn('iperf3', ['-s'], { stdio: 'ignore' });
    const r = await bootGuest({ netns: ns, netdev: { kind: 'tap', ifname: 'tapq0', queues: 1 }, guestIp: '10.78.0.2/24', commands, timeoutMs: 120_000 });
    result.qemuTap = parse(r.output);
    if (result.qemuTap.g2hGbps === undefined) result.errors.push(`QEMU tap guest: no iperf3 result: ${tail(r.output, 6)}`);
  } catch (error) {
    result.errors.push(`QEMU tap guest: ${(error as Error).message}`);
  } finally {
    ns.delete();
  }
}

/* ---------------------------------------------------------- live migration */

// No 'daemon' in the label: --only 'vhost-tap daemon' picks the daemon's throughput rows, not two guests under TCG.
const MIGRATION_LABEL = 'live migration (TCG): a guest under iperf3 both ways moved a -> b, through vhost-tap, then through QEMU tap';
/** What the section may take (both backends, boot to cleanup; 42 s measured on a loaded 2-vCPU VM): less than that left of the budget skips it. */
const MIGRATION_SECONDS = 90;

/**
 * Issue 11's figures, for orientation (the guest runs under TCG): the test harness's
 * topology (a bridge, one tap per side) with each backend in turn; the guest streams
 * iperf3 both ways to the host, is migrated a -> b once, and QEMU's query-migrate
 * gives total time, downtime and what was sent; the bridge's byte counters give the
 * throughput in a window before `migrate`, during the migration and in a window after.
 */
async function liveMigration(result: MigrationResult, o: Options): Promise<void> {
  const t0 = Date.now();
  const windowMs = o.quick ? 2_000 : 3_000;
  Object.assign(result, { vcpus: mig.migrationSmp(), queues: 2, windowMs });
  const backends = [['vhost-tap', 'vhostTap', 'vhost-tap'], ['tap', 'qemuTap', 'QEMU tap']] as const;
  for (const [backend, key, name] of backends) {
    try {
      await mig.withTopology('vtbench', { backend, queues: result.queues }, async (topology, track) => {
        await topology.startServer('iperf3 server (guest -> host)', 'iperf3', ['-s', '-p', '5201', '--forceflush'], /listening/);
        await topology.startServer('iperf3 server (host -> guest)', 'iperf3', ['-s', '-p', '5202', '--forceflush'], /listening/);
        const [a, b] = topology.sides;
        const guest = track(new mig.MigratingGuest(topology, {
          commands: `iperf3 -c ${mig.HOST_IP} -p 5201 -t 600 > /dev/null 2>&1 & iperf3 -c ${mig.HOST_IP} -p 5202 -t 600 -R > /dev/null 2>&1 & ` +
            'sleep 1; echo GUEST: streaming; sleep 600',
          timeoutMs: 180_000,
        }));
        await guest.boot(a!);
        await guest.waitForConsole('GUEST: streaming', 60_000);
        await sleep(windowMs + 1_000); // the streams past their start, and a whole window of them
        const m = await guest.migrateTo(b!);
        await sleep(windowMs + 500); // the bridge's sampler ticks every 200 ms
        const rate = (from: number, to: number): MigrationWindow => {
          const r = topology.rate(from, to);
          return { g2hMbps: r.guestToHostMbps, h2gMbps: r.hostToGuestMbps, seconds: r.seconds };
        };
        const run: MigrationRun = {
          totalMs: m.totalTimeMs, downtimeMs: m.downtimeMs, setupMs: m.setupTimeMs, sentMiB: m.ramTransferred / 2 ** 20, dirtySyncs: m.dirtySyncCount,
          before: rate(m.startedAt - windowMs, m.startedAt), during: rate(m.startedAt, m.completedAt), after: rate(m.completedAt, m.completedAt + windowMs),
        };
        result[key] = run;
        process.stdout.write(`${tty ? '\r\x1b[K' : ''}        ${name}: ${mig.formatMigration(m)}\n`);
        // A stream that did not come back is the migration's failure, not a slow window.
        const stopped = (['g2hMbps', 'h2gMbps'] as const).filter((k) => !(run.after[k] >= 1));
        if (stopped.length > 0) {
          result.errors.push(`${name}: ${stopped.map((k) => (k === 'g2hMbps' ? 'guest->host' : 'host->guest')).join(' and ')} iperf3 did not go on after the migration ` +
            `(${stopped.map((k) => run.after[k].toFixed(1)).join(', ')} Mbit/s in the ${windowMs / 1000} s after it)`);
        }
        await guest.kill();
      });
    } catch (error) {
      // withTopology appends every QEMU's and daemon's log tail: the head says what went wrong, the rest is kept for the record.
      result.errors.push(`${name}: ${(error as Error).message.split('\n').slice(0, 40).join('\n')}`);
    }
  }
  result.elapsedSeconds = Math.round((Date.now() - t0) / 1000);
}

/* --------------------------------------------------- queue-count changes */

// No 'daemon' in the label either (see MIGRATION_LABEL); 'steering' in it: --only steering picks this and the 2-pair steering rows.
const SWITCH_LOSS_LABEL = 'queue-count changes (TCG): a guest under UDP changes its pairs, through vhost-tap with and without the steering program, then QEMU tap';
/** What the section may take (three guests, boot to cleanup; ~20 s each measured on a loaded 2-vCPU VM): less than that left of the budget skips it. */
const SWITCH_LOSS_SECONDS = 80;

/**
 * Issue 12's figure: frames lost per queue-count change, with and without the steering
 * program, next to QEMU's own tap backend, with test/e2e/lossless-switch.test.ts's
 * harness (test/e2e/switch-loss.ts), fewer changes. The e2e test's rate: half of what
 * the guest was seen to keep up with; a baseline without changes says whether it did.
 */
async function queueCountChanges(result: SwitchLossResult, o: Options): Promise<void> {
  const t0 = Date.now();
  const params: SwitchParams = { flows: 16, rate: 8000, changes: o.quick ? 10 : 20, baselineMs: 2_000, prefix: 'vtbench' };
  Object.assign(result, { rate: params.rate, flows: params.flows, changes: params.changes, queues: SWITCH_QUEUES });
  const summary = (r: SwitchRun): SwitchLossRun => ({
    changes: r.changes, sent: r.sw.sent, lost: r.sw.lost, outOfOrder: r.sw.outOfOrder.reduce((a, b) => a + b, 0), tapDrops: r.sw.tapDrops,
    baselineSent: r.base.sent, baselineLost: r.base.lost,
  });
  const runs = [
    ['vhostTap', 'vhost-tap, steering program', () => switchOnDaemon(true, params)],
    ['vhostTapNoSteering', 'vhost-tap --no-steering', () => switchOnDaemon(false, params)],
    ['qemuTap', 'QEMU tap', () => switchOnQemuTap(params)],
  ] as const;
  for (const [key, name, run] of runs) {
    try {
      const r = await run();
      if (key === 'vhostTap' && !r.steering?.active) throw new Error(`the daemon did not load its steering program: ${r.steering?.reason ?? 'no steering log line'}`);
      result[key] = summary(r);
      const s = result[key]!;
      process.stdout.write(`${tty ? '\r\x1b[K' : ''}        ${name}: ${s.lost} lost of ${s.sent} over ${s.changes} changes (baseline: ${s.baselineLost} lost of ${s.baselineSent})\n`);
    } catch (error) {
      result.errors.push(`${name}: ${(error as Error).message.split('\n').slice(0, 20).join('\n')}`);
    }
  }
  result.elapsedSeconds = Math.round((Date.now() - t0) / 1000);
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    endProgress();
    process.stderr.write(`bench: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
