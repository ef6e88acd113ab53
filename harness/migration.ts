// Live-migration harness for the end-to-end tests: one private network namespace
// holding a Linux bridge (br0, the host side at 10.0.1.1/24) with one tap per
// "side"; a guest booted by a source QEMU on one side and moved, by QEMU's own
// migration over TCP on the namespace's loopback, to a destination QEMU started
// with `-incoming` on the other side (then back to a new QEMU on the first side,
// and so on). The backend of every side is a parameter:
//   'tap'        QEMU's own tap backend (`-netdev tap,vhost=off`): migrates with
//                any QEMU, so it validates the harness itself;
//   'vhost-tap'  a `vhost-tap serve` daemon per side, each with its own tap: what
//                issue 11 makes migratable.
// Each QEMU is driven through QMP on a unix socket; its serial console goes to its
// own pipe, and MigratingGuest joins them into the one console the guest wrote to.
import { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import crypto from 'node:crypto';

import { startDaemon, readTapState, type Daemon, type TapState } from './daemon';
import { Netns } from './netns';
import { ensureGuest, startGuest, type GuestExit, type GuestNetdev, type RunningGuest } from './qemu-guest';
import { requireTools, tail } from './tools';
import { sleep } from './wait';

export type MigrationBackend = 'tap' | 'vhost-tap';

export const BRIDGE = 'br0';
export const HOST_IP = '10.0.1.1';
export const GUEST_IP = '10.0.1.2';
/** One MAC on every QEMU: the device's identity travels with the guest. */
export const GUEST_MAC = '52:54:00:12:34:56';

function codedError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/* -------------------------------------------------------------------- QMP */

/**
 * A QMP client (docs/interop/qmp-spec.rst): one JSON object per line each way;
 * commands carry an "id" their reply echoes; events (ignored here) arrive in between.
 */
export class Qmp {
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void; what: string }>();
  private closedWith: Error | undefined;

  private constructor(private readonly socket: net.Socket, readonly path: string) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    const close = (error?: Error): void => {
      this.closedWith ??= codedError('EQMPCLOSED', `QMP ${path} closed${error ? `: ${error.message}` : ''} (QEMU exited?)`);
      for (const p of this.pending.values()) p.reject(new Error(`${p.what}: ${this.closedWith.message}`));
      this.pending.clear();
    };
    socket.on('error', close);
    socket.on('close', () => close());
  }

  /**
   * Connects to QEMU's `-qmp unix:PATH,server=on,wait=off` (retrying while QEMU
   * creates the socket), reads the greeting and leaves capabilities negotiation.
   */
  static async connect(path: string, options: { timeoutMs: number; alive: () => boolean }): Promise<Qmp> {
    const deadline = Date.now() + options.timeoutMs;
    let lastError = '';
    while (Date.now() < deadline) {
      if (!options.alive()) throw codedError('EQMPCONNECT', `QEMU exited before its QMP socket ${path} accepted a connection`);
      try {
        const socket = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.createConnection(path);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        const qmp = new Qmp(socket, path);
        try {
          await qmp.greeting(Math.max(1_000, deadline - Date.now()));
          await qmp.execute('qmp_capabilities');
        } catch (error) {
          qmp.close();
          throw error;
        }
        return qmp;
      } catch (error) {
        lastError = (error as Error).message;
        await sleep(50);
      }
    }
    throw codedError('EQMPCONNECT', `no QMP on ${path} after ${options.timeoutMs} ms (last error: ${lastError})`);
  }

  /** Runs a command; resolves with its "return", rejects with QEMU's error class and description. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedWith) return Promise.reject(new Error(`${command}: ${this.closedWith.message}`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (value: unknown) => void, reject, what: `QMP ${command}` });
      this.socket.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private greetingWaiter: (() => void) | undefined;

  private greeting(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no QMP greeting on ${this.path} within ${timeoutMs} ms`)), timeoutMs);
      this.greetingWaiter = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (!line) continue;
      let message: Record<string, unknown>;
      try {
        message = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue; // not QMP: nothing to route
      }
      if ('QMP' in message) {
        this.greetingWaiter?.();
        this.greetingWaiter = undefined;
      } else if (typeof message.id === 'number' && this.pending.has(message.id)) {
        const p = this.pending.get(message.id)!;
        this.pending.delete(message.id);
        if ('error' in message) {
          const e = message.error as { class?: string; desc?: string };
          p.reject(codedError('EQMP', `${p.what} failed: ${e.class ?? 'Error'}: ${e.desc ?? JSON.stringify(e)}`));
        } else {
          p.resolve(message.return);
        }
      }
    }
  }
}

/* ---------------------------------------------------------------- topology */

/** One place a guest can run: a tap on the bridge, served by QEMU itself or by a daemon. */
export interface Side {
  readonly name: string;
  readonly tap: string;
  /** How a QEMU on this side reaches its backend. */
  readonly netdev: GuestNetdev;
  /** The daemon serving this side ('vhost-tap' only). */
  readonly daemon?: Daemon;
  /** The tap as the kernel sees it (queues attached and detached). */
  tapState(): TapState;
}

export interface TopologyOptions {
  backend: MigrationBackend;
  /** Queue pairs of the NIC (and of each tap), default 2. */
  queues?: number;
  /** How many sides (taps), default 2. */
  sides?: number;
}

/** Byte counters of the host's bridge interface at one instant. */
interface MeterSample {
  at: number;
  /** Bytes the host received from the bridge (guest -> host). */
  rx: number;
  /** Bytes the host sent into the bridge (host -> guest). */
  tx: number;
}

/** Throughput in Mbit/s between two instants, each way, as the host's bridge interface counted it. */
export interface Rate {
  guestToHostMbps: number;
  hostToGuestMbps: number;
  seconds: number;
}

/**
 * The namespace, the bridge with the host's address, one tap (and daemon) per
 * side, a sampler of the bridge's byte counters, and whatever servers a test
 * starts. delete() removes everything (processes, devices, files); idempotent.
 */
export class MigrationTopology {
  readonly sides: Side[] = [];
  private readonly samples: MeterSample[] = [];
  private readonly logs = new Map<string, () => string>();

  private constructor(readonly ns: Netns, readonly backend: MigrationBackend, readonly queues: number) {}

  static async create(prefix: string, options: TopologyOptions): Promise<MigrationTopology> {
    requireTools('qemu-system-x86_64', 'ip', 'setpriv');
    ensureGuest();
    const queues = options.queues ?? 2;
    const ns = Netns.create(prefix);
    const topology = new MigrationTopology(ns, options.backend, queues);
    try {
      ns.exec('ip', ['link', 'add', BRIDGE, 'type', 'bridge', 'forward_delay', '0', 'stp_state', '0']);
      ns.exec('ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', BRIDGE]);
      ns.exec('ip', ['link', 'set', BRIDGE, 'up']);
      for (let i = 0; i < (options.sides ?? 2); i++) await topology.addSide(String.fromCharCode(97 + i));
      topology.startMeter();
    } catch (error) {
      ns.delete();
      throw error;
    }
    return topology;
  }

  private async addSide(name: string): Promise<void> {
    const tap = `mtap${name}`;
    let netdev: GuestNetdev;
    let daemon: Daemon | undefined;
    if (this.backend === 'tap') {
      // persistent and multiqueue (QEMU opens one fd per queue), enslaved before QEMU opens it
      this.ns.exec('ip', ['tuntap', 'add', 'dev', tap, 'mode', 'tap', ...(this.queues > 1 ? ['multi_queue'] : [])]);
      netdev = { kind: 'tap', ifname: tap, queues: this.queues };
    } else {
      // the daemon creates its tap; it joins the bridge once the daemon listens
      daemon = await startDaemon(this.ns, { tap, queues: this.queues, socket: this.ns.path(`vtd-${name}.sock`) });
      netdev = { kind: 'vhost-user', socket: daemon.socket, queues: this.queues };
      this.logs.set(`daemon of side ${name}`, () => daemon!.log());
    }
    this.ns.exec('ip', ['link', 'set', tap, 'master', BRIDGE]);
    this.ns.exec('ip', ['link', 'set', tap, 'up']);
    const ns = this.ns;
    this.sides.push({ name, tap, netdev, daemon, tapState: () => readTapState(ns, tap) });
  }

  /** Samples br0's byte counters every 200 ms for the lifetime of the namespace. */
  private startMeter(): void {
    const stats = `/sys/class/net/${BRIDGE}/statistics`;
    const sampler = this.ns.spawn('sh', ['-c', `while :; do echo $(date +%s%3N) $(cat ${stats}/rx_bytes ${stats}/tx_bytes); sleep 0.2; done`]);
    let partial = '';
    sampler.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      partial += chunk;
      let nl: number;
      while ((nl = partial.indexOf('\n')) >= 0) {
        const [at, rx, tx] = partial.slice(0, nl).trim().split(/\s+/).map(Number);
        partial = partial.slice(nl + 1);
        if (Number.isFinite(at) && Number.isFinite(rx) && Number.isFinite(tx)) this.samples.push({ at: at!, rx: rx!, tx: tx! });
      }
    });
  }

  /** Throughput each way between two instants (Date.now() values), from the bridge's counters. */
  rate(from: number, to: number): Rate {
    const at = (t: number): MeterSample | undefined => {
      let best: MeterSample | undefined;
      for (const s of this.samples) if (!best || Math.abs(s.at - t) < Math.abs(best.at - t)) best = s;
      return best;
    };
    const a = at(from);
    const b = at(to);
    if (!a || !b || b.at <= a.at) return { guestToHostMbps: 0, hostToGuestMbps: 0, seconds: 0 };
    const seconds = (b.at - a.at) / 1000;
    return { guestToHostMbps: ((b.rx - a.rx) * 8) / 1e6 / seconds, hostToGuestMbps: ((b.tx - a.tx) * 8) / 1e6 / seconds, seconds };
  }

  /** The bridge port (tap) the bridge forwards `mac` to now, if it learned one. */
  portOf(mac: string): string | undefined {
    const entries = JSON.parse(this.ns.exec('bridge', ['-j', 'fdb', 'show', 'br', BRIDGE])) as Array<{ mac: string; ifname?: string; state?: string; flags?: string[] }>;
    return entries.find((e) => e.mac.toLowerCase() === mac.toLowerCase() && e.state !== 'permanent')?.ifname;
  }

  /** Starts a process in the namespace whose output goes into describe(); resolves once `ready` appears in it. */
  async startServer(name: string, cmd: string, args: string[], ready: RegExp, timeoutMs = 10_000): Promise<{ output: () => string }> {
    const { child, output } = this.spawnLogged(name, cmd, args);
    const deadline = Date.now() + timeoutMs;
    while (!ready.test(output()) && Date.now() < deadline && child.exitCode === null && child.signalCode === null) await sleep(20);
    if (!ready.test(output())) throw codedError('ESERVER', `${name} (${cmd} ${args.join(' ')}) did not get ready (${ready}):\n${tail(output())}`);
    return { output };
  }

  /** Starts a process in the namespace, its stdout and stderr collected and shown by describe(). */
  spawnLogged(name: string, cmd: string, args: string[]): { child: ChildProcess; output: () => string } {
    const child = this.ns.spawn(cmd, args);
    let log = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (log += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (log += d));
    this.addLog(name, () => log);
    return { child, output: () => log };
  }

  /** Bytes the host sent into the bridge (to the guest) since an instant. */
  bytesToGuest(since: number): number {
    const last = this.samples[this.samples.length - 1];
    const first = this.samples.find((s) => s.at >= since) ?? last;
    return last && first ? last.tx - first.tx : 0;
  }

  /** Registers a process's output for describe(). */
  addLog(name: string, read: () => string): void {
    this.logs.set(name, read);
  }

  /**
   * A static file server on HOST_IP:port serving `dir` (node's http: always here, unlike
   * busybox or python), logging each request and how it ended. Resolves once it listens.
   */
  async startHttpServer(dir: string, port = 8000): Promise<{ output: () => string }> {
    const script = this.ns.path('http-server.js');
    fs.writeFileSync(script, HTTP_SERVER);
    return this.startServer('HTTP server', process.execPath, [script, dir, HOST_IP, String(port)], /listening/);
  }

  /**
   * Throws unless every side's daemon is still running and logged no fatal error or
   * crashed connection: a migration must not cost the backend its life.
   */
  assertBackendsHealthy(): void {
    for (const side of this.sides) {
      const daemon = side.daemon;
      if (!daemon) continue;
      if (!daemon.alive()) throw codedError('EDAEMON', `the daemon of side ${side.name} died`);
      const bad = [...daemon.events('fatal'), ...daemon.events('connection-crashed')];
      if (bad.length) throw codedError('EDAEMON', `the daemon of side ${side.name} logged ${JSON.stringify(bad[0])}`);
    }
  }

  /** Everything a failure message needs: each daemon's and server's log tail, the bridge's ports. */
  describe(): string {
    const parts: string[] = [];
    for (const [name, read] of this.logs) parts.push(`--- ${name} (tail) ---\n${tail(read(), 20)}`);
    try {
      const learned = this.ns.exec('bridge', ['fdb', 'show', 'br', BRIDGE]).split('\n').filter((l) => / master /.test(l) && !/permanent/.test(l));
      const ports = this.ns.exec('bridge', ['link', 'show']).trim();
      parts.push(`--- bridge ports ---\n${ports}\n--- MACs the bridge learned ---\n${learned.join('\n') || '(none)'}`);
    } catch {
      // the namespace is gone
    }
    return parts.join('\n');
  }

  delete(): void {
    this.ns.delete();
  }
}

/** The static file server, run by node inside the namespace: argv dir addr port. */
const HTTP_SERVER = `'use strict';
const http = require('node:http'), fs = require('node:fs'), path = require('node:path');
const [dir, addr, port] = process.argv.slice(2);
http.createServer((req, res) => {
  const file = path.join(dir, path.basename(req.url || '/'));
  fs.stat(file, (error, st) => {
    if (error || !st.isFile()) { res.writeHead(404); res.end(); return; }
    const started = Date.now();
    console.log('GET ' + req.url + ' ' + st.size + ' bytes');
    res.writeHead(200, { 'content-length': st.size });
    fs.createReadStream(file).pipe(res);
    res.on('close', () => { if (st.size > 1e6) console.log((res.writableFinished ? 'sent ' : 'aborted ') + req.url + ' after ' + (Date.now() - started) + ' ms'); });
  });
}).listen(Number(port), addr, () => console.log('listening on ' + addr + ':' + port));
`;

/**
 * Writes `bytes` of random data to `file` and returns its sha256 (hex), 1 MiB at a time.
 */
export function writeRandomFile(file: string, bytes: number): string {
  const hash = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'w');
  try {
    const chunk = 1 << 20;
    for (let done = 0; done < bytes; done += chunk) {
      const data = crypto.randomBytes(Math.min(chunk, bytes - done));
      hash.update(data);
      fs.writeSync(fd, data);
    }
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

/* --------------------------------------------------------------- migration */

/** What QEMU's query-migrate says of a completed migration (docs: qapi/migration.json MigrationInfo). */
export interface MigrationStats {
  from: string;
  to: string;
  /** ms, start to completion, as QEMU measured it. */
  totalTimeMs: number;
  /** ms the guest was stopped. */
  downtimeMs: number;
  setupTimeMs: number;
  /** RAM bytes sent, and how many times the dirty bitmap was synced (iterations). */
  ramTransferred: number;
  dirtySyncCount: number;
  /** Date.now() when `migrate` was issued and when the destination reported running. */
  startedAt: number;
  completedAt: number;
}

interface MigrateInfo {
  status?: string;
  'total-time'?: number;
  downtime?: number;
  'setup-time'?: number;
  'error-desc'?: string;
  ram?: { transferred?: number; 'dirty-sync-count'?: number; remaining?: number; mbps?: number };
}

interface Instance {
  id: number;
  side: Side;
  qemu: RunningGuest;
  qmp: Qmp;
  /** How much of the combined console was there before this QEMU ran the guest. */
  role: 'source' | 'destination';
}

/**
 * vCPUs of a migrating guest: 1 unless MIGRATION_SMP says otherwise. QEMU 7.2 under TCG
 * corrupts a 2-vCPU guest across migration even with its own tap backend: in about 1
 * run of 5 the destination's kernel oopses within seconds (list corruption, execution
 * of per-CPU data, "Attempted to kill the idle task"), with multi-threaded TCG and with
 * thread=single alike, with 1 or 2 queue pairs in use; with 1 vCPU, 0 of 12 runs did.
 * A test that failed that way would blame the backend for QEMU's bug. The NIC still
 * has 2 queue pairs (ethtool -L needs no second vCPU). Those runs had no RAM_PADDING_KB:
 * the lost TCG writes it avoids crash 1-vCPU guests the same way, and may have been
 * what crashed these (not measured again since).
 */
export function migrationSmp(): number {
  const smp = Number(process.env.MIGRATION_SMP ?? 1);
  if (!Number.isInteger(smp) || smp < 1) throw codedError('EINVAL', `MIGRATION_SMP=${process.env.MIGRATION_SMP}: expected a positive integer`);
  return smp;
}

/**
 * What a migrating guest's RAM is made larger by, beyond its whole MiB. QEMU before 9.0
 * loses guest writes under TCG across migration when a RAM block's size is a multiple of
 * 64 pages (256 KiB): cpu_physical_memory_sync_dirty_bitmap()'s fast path for such
 * blocks clears the dirty bits 64 at a time without resetting the TCG TLB's not-dirty
 * trap (tlb_reset_dirty_range_all), so later stores through a TLB entry made while the
 * page was dirty mark nothing, and the page is never sent again (QEMU commit 03bfc2188f,
 * "physmem: Fix migration dirty bitmap coherency with TCG memory access"). With 512 MiB
 * the destination's RAM differed from the paused source's in 2 to 147 pages of kernel
 * data, stacks and packet buffers on about every other migration, with QEMU's own tap
 * backend as with vhost-tap, and the destination's kernel crashed within seconds. 8 KiB
 * more (QEMU rounds -m to 8 KiB) makes the block unaligned: the slow path resets the TLB.
 */
export const RAM_PADDING_KB = 8;

export interface GuestSpec {
  /** Shell commands for the guest (see guestCmdline: no `"`, no newline). */
  commands: string;
  /** Kills every QEMU of this guest after this long. */
  timeoutMs: number;
  /** Whole MiB of RAM (default 512), plus RAM_PADDING_KB. */
  memoryMb?: number;
  /** Test only: RAM padding other than RAM_PADDING_KB (0 shows QEMU's lost writes). */
  ramPaddingKb?: number;
  /**
   * Guest RAM in files under /dev/shm, and each destination started paused (-S): after each
   * migration, before the destination runs, its RAM is compared page by page with the paused
   * source's, and migrateTo() rejects with the pages that differ (VERIFY_RAM_FAILED).
   */
  verifyRam?: boolean;
  /** vCPUs (default migrationSmp()). */
  smp?: number;
  /** virtio-net-pci properties over the harness's (packed: 'on', ...): the same on every QEMU, as migration needs. */
  device?: Record<string, string | number>;
}

export interface MigrationOptions {
  /** Bytes/s (QEMU's default, 32 MiB/s, would make a 512 MB guest take 16 s and more). */
  maxBandwidth?: number;
  /** ms of downtime QEMU may plan for (its default is 300). */
  downtimeLimitMs?: number;
  timeoutMs?: number;
  /** Leave the source QEMU running (paused, its tap up) until quitKeptSources(). */
  keepSource?: boolean;
}

/** The QEMUs whose process has gone (and whose output is complete). */
const exitedQemus = new WeakSet<RunningGuest>();

function watchExit(qemu: RunningGuest): void {
  void qemu.exited.catch(() => undefined).then(() => exitedQemus.add(qemu));
}

function isAlive(qemu: RunningGuest): boolean {
  return !exitedQemus.has(qemu);
}

/**
 * Compares two guest RAM files 4 KiB page by page (offset = guest-physical address below
 * 4 GiB, the only RAM of these guests): how many pages differ, and the first 20 of them.
 */
export function compareRam(a: string, b: string): { count: number; samples: string[] } {
  const page = 4096;
  const chunk = 1 << 20;
  const fa = fs.openSync(a, 'r');
  const fb = fs.openSync(b, 'r');
  const ba = Buffer.alloc(chunk);
  const bb = Buffer.alloc(chunk);
  const samples: string[] = [];
  let count = 0;
  try {
    for (let offset = 0; ; offset += chunk) {
      const na = fs.readSync(fa, ba, 0, chunk, offset);
      const nb = fs.readSync(fb, bb, 0, chunk, offset);
      if (na !== nb) throw codedError('EINVAL', `${a} and ${b} differ in size`);
      if (na === 0) break;
      for (let p = 0; p < na; p += page) {
        if (ba.compare(bb, p, p + page, p, p + page) === 0) continue;
        count++;
        if (samples.length >= 20) continue;
        let first = p;
        while (ba[first] === bb[first]) first++;
        let last = p + page - 1;
        while (ba[last] === bb[last]) last--;
        const show = (buf: Buffer): string => buf.subarray(first, Math.min(first + 16, last + 1)).toString('hex');
        samples.push(`0x${(offset + p).toString(16)} [+0x${(first - p).toString(16)}..+0x${(last - p).toString(16)}] ${show(ba)} / ${show(bb)}`);
      }
    }
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
  }
  return { count, samples };
}

/** `quit` over QMP; SIGKILL if QEMU is still there 10 s later. */
async function quit(instance: Instance): Promise<void> {
  await instance.qmp.execute('quit').catch(() => undefined);
  instance.qmp.close();
  const done = await Promise.race([instance.qemu.exited.catch(() => undefined), sleep(10_000).then(() => 'slow' as const)]);
  if (done === 'slow') await instance.qemu.kill().catch(() => undefined);
}

/**
 * A guest that moves between the sides of a topology: the same QEMU command line on
 * every side but the netdev's tap or socket (and `-incoming` on a destination), a QMP
 * socket per QEMU, and one console made of what each QEMU's serial printed while it
 * ran the guest.
 */
export class MigratingGuest {
  private readonly instances: Instance[] = [];
  /** Sources that handed the guest over and were kept running (paused) on request. */
  private readonly retired: Instance[] = [];
  private current: Instance | undefined;
  private nextId = 1;
  private nextPort = 4444;
  /** The console up to the moment the current QEMU took over (earlier QEMUs' output). */
  private earlier = '';
  readonly migrations: MigrationStats[] = [];

  constructor(private readonly topology: MigrationTopology, private readonly spec: GuestSpec) {}

  /** Boots the guest on a side (the first source). */
  async boot(side: Side): Promise<void> {
    if (this.current) throw codedError('EBUSY', 'the guest is already running');
    this.current = await this.launch(side, 'source');
  }

  /** The side running the guest now. */
  get side(): Side {
    if (!this.current) throw codedError('ENOTRUNNING', 'the guest was never booted');
    return this.current.side;
  }

  /** What the guest printed so far, across every QEMU that ran it. */
  get console(): string {
    return this.earlier + (this.current?.qemu.output ?? '');
  }

  /** Where QEMU #id keeps the guest's RAM with verifyRam (tmpfs: 512 MiB files on disk would be slow); removed with the namespace. */
  private ramFile(id: number): string {
    return `/dev/shm/vhost-tap-ram-${this.topology.ns.name}-${id}`;
  }

  private async launch(side: Side, role: Instance['role'], incoming?: string): Promise<Instance> {
    const busy = this.instances.find((i) => i.side === side && isAlive(i.qemu));
    if (busy) {
      throw codedError('EBUSY', `side ${side.name} still has QEMU #${busy.id} (${busy.role}) on its tap: quit it (quitKeptSources()) before starting another there`);
    }
    const id = this.nextId++;
    const qmpPath = this.topology.ns.path(`qmp-${id}.sock`);
    if (this.spec.verifyRam) this.topology.ns.onDelete(() => fs.rmSync(this.ramFile(id), { force: true }));
    const qemu = startGuest({
      netns: this.topology.ns,
      netdev: side.netdev,
      guestIp: `${GUEST_IP}/24`,
      commands: this.spec.commands,
      timeoutMs: this.spec.timeoutMs,
      memoryKb: (this.spec.memoryMb ?? 512) * 1024 + (this.spec.ramPaddingKb ?? RAM_PADDING_KB),
      smp: this.spec.smp ?? migrationSmp(),
      mac: GUEST_MAC,
      ...(this.spec.device ? { device: this.spec.device } : {}),
      ...(this.spec.verifyRam ? { ramFile: this.ramFile(id) } : {}),
      extraArgs: ['-qmp', `unix:${qmpPath},server=on,wait=off`, ...(incoming ? ['-incoming', incoming, ...(this.spec.verifyRam ? ['-S'] : [])] : [])],
    });
    watchExit(qemu);
    const alive = (): boolean => isAlive(qemu);
    let qmp: Qmp;
    try {
      qmp = await Qmp.connect(qmpPath, { timeoutMs: 15_000, alive });
    } catch (error) {
      await qemu.kill().catch(() => undefined);
      throw codedError('EQEMU', `QEMU #${id} (${role}, side ${side.name}) did not come up: ${(error as Error).message}\n--- its output ---\n${tail(qemu.output)}`);
    }
    const instance = { id, side, qemu, qmp, role };
    this.instances.push(instance);
    return instance;
  }

  /**
   * Starts a destination QEMU on `side` with `-incoming tcp:127.0.0.1:PORT`, migrates
   * the guest into it (`migrate`, then `query-migrate` until it completes), waits for
   * the destination to run and quits the source. Rejects with QEMU's own reason if the
   * source refuses (a migration blocker) or the migration fails; the source then keeps
   * running the guest and the destination is killed.
   */
  async migrateTo(side: Side, options: MigrationOptions = {}): Promise<MigrationStats> {
    const source = this.current;
    if (!source) throw codedError('ENOTRUNNING', 'boot the guest before migrating it');
    if (side === source.side) throw codedError('EINVAL', `the guest already runs on side ${side.name}`);
    const port = this.nextPort++;
    const uri = `tcp:127.0.0.1:${port}`;
    const destination = await this.launch(side, 'destination', uri);
    const timeoutMs = options.timeoutMs ?? 60_000;
    const what = `migration #${this.migrations.length + 1} (QEMU #${source.id} side ${source.side.name} -> QEMU #${destination.id} side ${side.name})`;
    const fail = async (reason: string): Promise<never> => {
      destination.qmp.close();
      await destination.qemu.kill().catch(() => undefined);
      throw codedError('EMIGRATION', `${what}: ${reason}`);
    };
    let startedAt = 0;
    try {
      await source.qmp.execute('migrate-set-parameters', {
        'max-bandwidth': options.maxBandwidth ?? 4 * 1024 ** 3,
        'downtime-limit': options.downtimeLimitMs ?? 300,
      });
      startedAt = Date.now();
      await source.qmp.execute('migrate', { uri });
    } catch (error) {
      return fail(`the source refused: ${(error as Error).message}`);
    }
    let info: MigrateInfo = {};
    const deadline = startedAt + timeoutMs;
    for (;;) {
      try {
        info = await source.qmp.execute<MigrateInfo>('query-migrate');
      } catch (error) {
        return fail(`query-migrate: ${(error as Error).message}`);
      }
      if (info.status === 'completed') break;
      if (info.status === 'failed' || info.status === 'cancelled') return fail(`status ${info.status}: ${info['error-desc'] ?? 'no reason given'}`);
      if (!isAlive(destination.qemu)) return fail('the destination QEMU exited mid-migration');
      if (Date.now() > deadline) {
        await source.qmp.execute('migrate_cancel').catch(() => undefined);
        return fail(`not complete after ${timeoutMs} ms: ${JSON.stringify(info)}`);
      }
      await sleep(50);
    }
    if (this.spec.verifyRam) {
      // Started with -S, the destination stays paused once the stream is in; the source is paused for good.
      let loaded = '';
      for (const end = Date.now() + 15_000; Date.now() < end && loaded !== 'paused' && isAlive(destination.qemu); await sleep(20)) {
        loaded = (await destination.qmp.execute<{ status: string }>('query-status').catch(() => ({ status: 'unreachable' }))).status;
      }
      if (loaded !== 'paused') return fail(`the destination did not finish loading (status "${loaded}")`);
      const differing = compareRam(this.ramFile(source.id), this.ramFile(destination.id));
      if (differing.count > 0) {
        await destination.qemu.kill().catch(() => undefined);
        throw codedError('VERIFY_RAM_FAILED', `${what}: the destination's RAM differs from the source's in ${differing.count} pages ` +
          `(guest-physical address [first..last byte that differs] source bytes / destination bytes):\n  ${differing.samples.join('\n  ')}`);
      }
      await destination.qmp.execute('cont');
    }
    // The destination resumes the guest by itself once the stream is in (unless verifyRam's -S).
    let status = '';
    for (const end = Date.now() + 15_000; Date.now() < end; await sleep(20)) {
      status = (await destination.qmp.execute<{ status: string }>('query-status').catch(() => ({ status: 'unreachable' }))).status;
      if (status === 'running' || status === 'shutdown' || !isAlive(destination.qemu)) break;
    }
    const completedAt = Date.now();
    if (status !== 'running' && isAlive(destination.qemu)) return fail(`the migration completed but the destination is "${status}", not running`);
    const stats: MigrationStats = {
      from: source.side.name,
      to: side.name,
      totalTimeMs: info['total-time'] ?? NaN,
      downtimeMs: info.downtime ?? NaN,
      setupTimeMs: info['setup-time'] ?? NaN,
      ramTransferred: info.ram?.transferred ?? NaN,
      dirtySyncCount: info.ram?.['dirty-sync-count'] ?? NaN,
      startedAt,
      completedAt,
    };
    this.migrations.push(stats);
    // The source is paused for good ("postmigrate"): its console is final.
    this.earlier += source.qemu.output;
    this.current = destination;
    if (options.keepSource) this.retired.push(source);
    else await quit(source);
    return stats;
  }

  /**
   * Quits the sources kept by `migrateTo(side, { keepSource: true })`: until then their
   * taps stay up on the bridge (as a real source host's port would), which is what makes
   * the destination's announce (RARP or the guest's gratuitous ARP) necessary.
   */
  async quitKeptSources(): Promise<void> {
    for (const source of this.retired.splice(0)) await quit(source);
  }

  /**
   * Resolves with the first match of `pattern` in the console, following the guest
   * across migrations; rejects when the QEMU running the guest exits first or after
   * timeoutMs, with the console's tail.
   */
  async waitForConsole(pattern: RegExp | string, timeoutMs: number): Promise<RegExpMatchArray> {
    const re = typeof pattern === 'string' ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : pattern;
    const end = Date.now() + timeoutMs;
    for (;;) {
      const m = this.console.match(re);
      if (m) return m;
      if (guestCrash(this.console)) throw codedError('EGUESTCRASH', `the guest's kernel crashed before it printed ${re}`);
      const running = this.current;
      if (!running || !isAlive(running.qemu)) {
        throw codedError('EGUESTEXITED', `the guest's QEMU #${running?.id} exited before the guest printed ${re}`);
      }
      if (Date.now() > end) throw codedError('ETIMEDOUT', `no ${re} on the guest's console after ${timeoutMs} ms`);
      await sleep(50);
    }
  }

  /** Waits for the guest to power off (on whichever QEMU runs it) and parses `GUEST: done rc=N`. */
  async finished(): Promise<GuestExit & { console: string }> {
    if (!this.current) throw codedError('ENOTRUNNING', 'the guest was never booted');
    const exit = await this.current.qemu.exited;
    return { ...exit, console: this.console };
  }

  /**
   * If the guest's kernel crashed: one line saying where (which QEMU, after how many
   * migrations) and how. The first thing a failure message should say: a check that
   * timed out after that is only a consequence.
   */
  crashSummary(): string | undefined {
    const crash = guestCrash(this.console, 1);
    if (!crash) return undefined;
    const where = this.current ? `QEMU #${this.current.id} (side ${this.current.side.name})` : 'its QEMU';
    return `the guest's kernel crashed on ${where} after ${this.migrations.length} migration(s): ${crash.trim()}`;
  }

  /** QEMU's stderr and the console of every QEMU, the migrations so far: for failure messages. */
  describe(): string {
    const parts = this.instances.map((i) =>
      `--- QEMU #${i.id} (${i.role}, side ${i.side.name}${i === this.current ? ', running the guest' : ''}) output tail ---\n${tail(i.qemu.output, 25)}`);
    const crash = guestCrash(this.console);
    if (crash) parts.push(`--- the guest's kernel crashed (first lines) ---\n${crash}`);
    if (this.migrations.length) parts.push(`--- migrations ---\n${this.migrations.map(formatMigration).join('\n')}`);
    return parts.join('\n');
  }

  /** Kills every QEMU still running (the namespace's delete() would too; this is for a test that goes on). */
  async kill(): Promise<void> {
    for (const i of this.instances) {
      i.qmp.close();
      await i.qemu.kill().catch(() => undefined);
    }
  }
}

/** A kernel oops, BUG or panic on the console: from its first line, `lines` lines of it. */
export function guestCrash(console: string, lines = 30): string | undefined {
  const at = console.search(/^.*(------------\[ cut here \]|BUG: |Oops: |general protection fault|Kernel panic|invalid opcode: )/m);
  if (at < 0) return undefined;
  return console.slice(at).split('\n').slice(0, lines).join('\n');
}

export function formatMigration(m: MigrationStats): string {
  return `${m.from} -> ${m.to}: total ${m.totalTimeMs} ms, downtime ${m.downtimeMs} ms, setup ${m.setupTimeMs} ms, ` +
    `${(m.ramTransferred / 2 ** 20).toFixed(0)} MiB sent in ${m.dirtySyncCount} dirty-bitmap syncs`;
}

export function formatRate(r: Rate): string {
  const mbps = (v: number): string => v.toFixed(v < 10 ? 1 : 0);
  return `guest->host ${mbps(r.guestToHostMbps)} Mbit/s, host->guest ${mbps(r.hostToGuestMbps)} Mbit/s over ${r.seconds.toFixed(1)} s`;
}

/**
 * Runs a test body on a fresh topology and removes it whatever happens; a failure's
 * message gains the guest's QEMUs' output, the daemons' and servers' logs.
 */
export async function withTopology(
  prefix: string,
  options: TopologyOptions,
  body: (topology: MigrationTopology, track: (guest: MigratingGuest) => MigratingGuest) => Promise<void>,
): Promise<void> {
  const topology = await MigrationTopology.create(prefix, options);
  const guests: MigratingGuest[] = [];
  try {
    await body(topology, (guest) => {
      guests.push(guest);
      return guest;
    });
    topology.assertBackendsHealthy();
  } catch (error) {
    const e = error instanceof Error ? error : new Error(String(error));
    const crash = guests.map((g) => g.crashSummary()).find(Boolean);
    if (crash) e.message = `${crash}\n(the check that failed: ${e.message})`;
    e.message += `\n${guests.map((g) => g.describe()).join('\n')}\n${topology.describe()}`;
    throw e;
  } finally {
    topology.delete();
  }
}

/* -------------------------------------------------------------------- ping */

export interface PingReply {
  /** Date.now() scale (ping -D prints the wall clock). */
  at: number;
  seq: number;
}

export interface PingRun {
  replies: PingReply[];
  transmitted: number;
  received: number;
  output: string;
}

/**
 * `ping -D -i 0.2` from the host (the namespace) to `target`, until stop() (SIGINT:
 * ping prints its summary), so a test can see which probes were answered when.
 */
export function startPing(topology: MigrationTopology, target: string): { output: () => string; stop: () => Promise<PingRun> } {
  requireTools('ping');
  const { child, output } = topology.spawnLogged(`ping ${target}`, 'ping', ['-D', '-n', '-i', '0.2', '-W', '1', target]);
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  return {
    output,
    async stop() {
      try {
        process.kill(-child.pid!, 'SIGINT');
      } catch {
        // already gone
      }
      await Promise.race([closed, sleep(3_000)]);
      const text = output();
      const replies = [...text.matchAll(/^\[(\d+\.\d+)\] \d+ bytes from [\d.]+: icmp_seq=(\d+)/gm)]
        .map((m) => ({ at: Math.round(Number(m[1]) * 1000), seq: Number(m[2]) }));
      const summary = /(\d+) packets transmitted, (\d+) received/.exec(text);
      return { replies, transmitted: Number(summary?.[1] ?? NaN), received: Number(summary?.[2] ?? replies.length), output: text };
    },
  };
}
