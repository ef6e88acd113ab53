// `vhost-tap serve` as the e2e tests run it: a child process in a Netns (started
// inside it, or with --netns NAME from outside), its JSON log lines collected
// from stderr, the tap's kernel state read with `ip -d -j link`. The Netns
// tracks it: delete() kills it if a test never got to stop() it.
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import * as assert from 'uvu/assert';

import { Netns } from './netns';
import { isRunning } from './processes';
import { parseIperf3, type RunningGuest } from './qemu-guest';
import { REPO_ROOT } from './repo';
import { requireTools, tail } from './tools';
import { sleep, readUntil } from './wait';

/** The compiled CLI (dist/src/cli/vhost-tap.js) of this checkout. */
export const DAEMON_CLI = path.join(REPO_ROOT, 'dist', 'src', 'cli', 'vhost-tap.js');

export interface DaemonLine {
  time: string;
  event: string;
  [field: string]: unknown;
}

export interface DaemonOptions {
  /** The tap the daemon creates in the namespace (default vtd0). */
  tap?: string;
  /** --queues (default 4). */
  queues?: number;
  /** The vhost-user socket (default netns.path('vtd.sock')). */
  socket?: string;
  /** Address given to the tap once the daemon listens, e.g. '10.0.2.1/24'. */
  hostIp?: string;
  /**
   * 'exec' (default): the daemon is started inside the namespace (`ip netns exec`).
   * 'flag': it is started in the caller's namespace with `--netns NAME` and
   * re-executes itself inside.
   */
  via?: 'exec' | 'flag';
  /** More CLI arguments (--mac, --mtu...). */
  extraArgs?: string[];
  /** With via 'exec': confine the daemon to these CPUs (taskset -c), as the bench does. */
  cpus?: string;
  startTimeoutMs?: number;
}

export interface TapState {
  numQueues: number;
  numDisabled: number;
  up: boolean;
}

export interface DaemonStop {
  code: number | null;
  signal: NodeJS.Signals | null;
  log: string;
}

export interface Daemon {
  readonly process: ChildProcess;
  readonly socket: string;
  readonly tap: string;
  /** The tap's queues (--queues). */
  readonly queues: number;
  readonly netns: Netns;
  /** Every JSON log line so far, in order. */
  readonly lines: readonly DaemonLine[];
  /** stderr and stdout as printed (JSON lines and anything else), for error messages. */
  log(): string;
  /** The lines with this event, from index `from` on. */
  events(event: string, from?: number): DaemonLine[];
  /** The index the next log line will have: pass it to waitFor/events to look only at what comes after. */
  mark(): number;
  /**
   * The first line from index `from` on with this event and matching `where`;
   * rejects when the daemon exits first or after timeoutMs, with the log's tail.
   */
  waitFor(event: string | string[], options?: { from?: number; timeoutMs?: number; where?: (line: DaemonLine) => boolean }): Promise<DaemonLine>;
  /** Whether the daemon process is alive. */
  alive(): boolean;
  /** Pid of the process that serves (with via 'flag', the re-executed child inside the namespace). */
  servingPid(): number;
  /** Threads and open fds of the serving process (from /proc). */
  resources(): { threads: number; fds: number };
  /** The tap as the kernel sees it (ip -d -j link show in the namespace). */
  tapState(): TapState;
  /**
   * SIGTERM, then waits (SIGKILL after timeoutMs) and checks: exit code 0, a
   * "stopped" log line, the socket file removed. Throws with the log otherwise.
   * Idempotent.
   */
  stop(timeoutMs?: number): Promise<DaemonStop>;
}

/** Reads `ip -d -j link show NAME` in the namespace. */
export function readTapState(netns: Netns, name: string): TapState {
  const [link] = JSON.parse(netns.exec('ip', ['-d', '-j', 'link', 'show', name])) as Array<{
    flags?: string[];
    linkinfo?: { info_data?: { numqueues?: number; numdisabled?: number } };
  }>;
  const data = link?.linkinfo?.info_data;
  if (!data || data.numqueues === undefined) throw new Error(`ip -d link show ${name}: no tun info (${JSON.stringify(link)})`);
  return { numQueues: data.numqueues, numDisabled: data.numdisabled ?? 0, up: link!.flags?.includes('UP') ?? false };
}

/**
 * Starts `node dist/src/cli/vhost-tap.js serve --socket S --tap T --queues N` in
 * (or with --netns into) `netns`, and resolves once it logs "listening" (and the
 * tap has its address, with hostIp). Rejects, with the daemon's output, if it
 * exits or logs "fatal" first.
 */
export async function startDaemon(netns: Netns, options: DaemonOptions = {}): Promise<Daemon> {
  requireTools('ip', 'setpriv');
  if (!fs.existsSync(DAEMON_CLI)) throw new Error(`${DAEMON_CLI} is missing: build with \`npx tsc -p .\``);
  const tap = options.tap ?? 'vtd0';
  const socket = options.socket ?? netns.path('vtd.sock');
  const args = [
    DAEMON_CLI, 'serve', '--socket', socket, '--tap', tap, '--queues', String(options.queues ?? 4), ...(options.extraArgs ?? []),
  ];
  const env = { ...process.env };
  delete env.VHOST_TAP_IN_NETNS; // the daemon's re-exec mark: never inherited from the test run
  let child: ChildProcess;
  if (options.via === 'flag') {
    child = spawn(process.execPath, [...args, '--netns', netns.name], { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env });
    child.on('error', () => {});
    // Not one of the namespace's children: delete() reaches its re-executed child
    // (in the namespace); this makes sure the parent is gone too.
    netns.onDelete(() => {
      if (child.pid !== undefined && isRunning(child.pid)) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    });
  } else {
    const argv = options.cpus !== undefined ? ['taskset', '-c', options.cpus, process.execPath, ...args] : [process.execPath, ...args];
    child = netns.spawn(argv[0]!, argv.slice(1), { env });
  }

  const lines: DaemonLine[] = [];
  let text = '';
  let partial = '';
  const wakers = new Set<() => void>();
  const wake = (): void => {
    for (const w of [...wakers]) w();
  };
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    text += chunk;
    partial += chunk;
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, nl).trim();
      partial = partial.slice(nl + 1);
      if (!line.startsWith('{')) continue;
      try {
        const parsed = JSON.parse(line) as DaemonLine;
        if (typeof parsed.event === 'string') lines.push(parsed);
      } catch {
        // not one of its log lines: kept in text only
      }
    }
    wake();
  });
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('close', (code, signal) => {
      exitInfo = { code, signal };
      wake();
      resolve(exitInfo);
    });
  });
  const exited = (): boolean => exitInfo !== undefined || child.exitCode !== null || child.signalCode !== null;

  const describe = (): string => `vhost-tap serve (pid ${child.pid}, netns ${netns.name}) output:\n${tail(text, 30)}`;

  const waitFor: Daemon['waitFor'] = (event, opts = {}) => {
    const from = opts.from ?? 0;
    const timeoutMs = opts.timeoutMs ?? 10_000;
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const wanted = typeof event === 'string' ? [event] : event;
        const hit = lines.slice(from).find((l) => wanted.includes(l.event) && (!opts.where || opts.where(l)));
        if (hit) {
          done();
          resolve(hit);
          return true;
        }
        if (exited()) {
          done();
          reject(new Error(`the daemon exited (${JSON.stringify(exitInfo ?? { code: child.exitCode, signal: child.signalCode })}) before logging "${event}". ${describe()}`));
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no "${event}" log line${opts.where ? ' (matching)' : ''} from the daemon after ${timeoutMs} ms. ${describe()}`));
      }, timeoutMs);
      const waker = (): void => void check();
      const done = (): void => {
        clearTimeout(timer);
        wakers.delete(waker);
      };
      if (check()) return;
      wakers.add(waker);
    });
  };

  let servingPid: number | undefined;
  const findServingPid = (): number => {
    if (servingPid !== undefined && isRunning(servingPid)) return servingPid;
    const pid = child.pid!;
    if (options.via !== 'flag') return (servingPid = pid);
    // parent node -> `ip netns exec` (execs node): its only child
    const children = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    if (children.length !== 1) throw new Error(`the daemon (pid ${pid}) has ${children.length} children, expected its re-executed self`);
    return (servingPid = children[0]!);
  };

  let stopping: Promise<DaemonStop> | undefined;
  const daemon: Daemon = {
    process: child,
    socket,
    tap,
    queues: options.queues ?? 4,
    netns,
    lines,
    log: () => text,
    events: (event, from = 0) => lines.slice(from).filter((l) => l.event === event),
    mark: () => lines.length,
    waitFor,
    alive: () => !exited() && child.pid !== undefined && isRunning(child.pid),
    servingPid: findServingPid,
    resources() {
      const pid = findServingPid();
      // io_uring's kernel workers (iou-wrk-*, iou-sqp-*) show up as threads and linger a few seconds idle: not ours
      const threads = fs.readdirSync(`/proc/${pid}/task`).filter((tid) => {
        try {
          return !fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').startsWith('iou-');
        } catch {
          return false; // just exited
        }
      });
      return { threads: threads.length, fds: fs.readdirSync(`/proc/${pid}/fd`).length };
    },
    tapState: () => readTapState(netns, tap),
    stop(timeoutMs = 10_000) {
      stopping ??= (async () => {
        if (!exited()) child.kill('SIGTERM');
        const timer = setTimeout(() => {
          try {
            process.kill(-child.pid!, 'SIGKILL');
          } catch {
            child.kill('SIGKILL');
          }
        }, timeoutMs);
        const { code, signal } = await closed;
        clearTimeout(timer);
        const result = { code, signal, log: text };
        if (code !== 0) throw new Error(`the daemon exited with code ${code} (signal ${signal}) on SIGTERM, expected 0. ${describe()}`);
        if (!lines.some((l) => l.event === 'stopped')) throw new Error(`the daemon exited without its "stopped" log line. ${describe()}`);
        if (fs.existsSync(socket)) throw new Error(`the daemon left its socket ${socket} behind`);
        return result;
      })();
      return stopping;
    },
  };

  try {
    const first = await waitFor(['listening', 'fatal'], { timeoutMs: options.startTimeoutMs ?? 15_000 });
    if (first.event === 'fatal') throw new Error(`the daemon failed to start: ${JSON.stringify(first)}. ${describe()}`);
    if (options.hostIp) {
      netns.exec('ip', ['addr', 'add', options.hostIp, 'dev', tap]);
      netns.exec('ip', ['link', 'set', tap, 'up']);
    }
  } catch (error) {
    if (!exited()) {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }
    throw error;
  }
  return daemon;
}

/** Whether a link of that name exists in the namespace (the daemon's tap goes with it). */
export function linkExists(netns: Netns, name: string): boolean {
  try {
    execFileSync('ip', ['netns', 'exec', netns.name, 'ip', 'link', 'show', name], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/* ------------------------------------------------- checks shared by the tests */

/** The guest's output, in assertion messages. */
export function says(output: string): string {
  return `\n--- guest output ---\n${tail(output, 60)}\n---`;
}

export function seconds(since: number): string {
  return `${((Date.now() - since) / 1000).toFixed(1)} s`;
}

export function gbps(value: number | undefined): string {
  return value === undefined ? '?' : `${value.toFixed(2)} Gbit/s`;
}

/** The daemon's threads and fds once it is idle again (no frontend), polled: teardown is asynchronous. */
export async function assertReleased(daemon: Daemon, idle: { threads: number; fds: number }, what: string): Promise<void> {
  const detached = daemon.queues - 1;
  const tap = await readUntil(() => daemon.tapState(), (t) => t.numDisabled === detached && t.numQueues === 1);
  assert.equal([tap.numQueues, tap.numDisabled], [1, detached], `${what}: the tap is back to 1 attached queue and ${detached} detached`);
  const now = await readUntil(() => daemon.resources(), (r) => r.fds === idle.fds && r.threads <= idle.threads);
  assert.is(now.fds, idle.fds, `${what}: the daemon's open fds are back to ${idle.fds} (rings' eventfds, guest memory, workers' fds closed)`);
  assert.ok(now.threads <= idle.threads, `${what}: no worker thread left (${now.threads} threads, ${idle.threads} when idle)`);
  const maps = await readUntil(() => fs.readFileSync(`/proc/${daemon.servingPid()}/maps`, 'utf8'), (m) => !/memfd:mem\b/.test(m));
  assert.not.match(maps, /memfd:mem\b/, `${what}: the guest's memory (QEMU's memfd) is unmapped, not left to a garbage collection that an idle daemon never runs`);
}

/** Threads and fds of the daemon before its first frontend (the poller is up by then). */
export async function idleResources(daemon: Daemon): Promise<{ threads: number; fds: number }> {
  await sleep(300);
  return daemon.resources();
}

/**
 * Guest commands: serve one iperf3 test in the background, print `GUEST: <marker>`
 * once it listens, and wait for the host's test to end. The host, which may have
 * no ping, reaches the guest with hostToGuest(): a TCP connection it opens.
 */
export function serveOnce(marker: string): string {
  return `{ iperf3 -s -1 > /dev/null & P=$!; sleep 0.5; echo GUEST: ${marker}; wait $P; }`;
}

/**
 * iperf3 from the namespace to the guest's server at guestIp (host -> guest); the
 * receiver's Gbit/s, or the sender's when iperf3 printed a receiver line of 0 bytes
 * (it does for a transfer over before its first interval, e.g. -n 1M).
 */
export async function hostToGuest(ns: Netns, guest: RunningGuest, guestIp: string, args: string[], what: string): Promise<number> {
  const r = await ns.run('iperf3', ['-c', guestIp, ...args], { timeoutMs: 30_000 });
  assert.is(r.code, 0, `${what}: host -> guest iperf3 failed:\n${r.stdout}${r.stderr}${says(guest.output)}`);
  const [run] = parseIperf3(r.stdout);
  const gbps = run?.receiverGbps || run?.senderGbps;
  assert.ok(gbps !== undefined && gbps > 0, `${what}: no host -> guest throughput:\n${r.stdout}`);
  return gbps;
}
