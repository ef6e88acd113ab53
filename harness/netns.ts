// Network namespaces for tests and the bench: each with a private directory, and
// every process started in it tracked and killed with it.
import { ChildProcess, execFileSync, spawn, SpawnOptions } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { isRunning, signal, sleepSync } from './processes';
import { tail } from './tools';

let netnsCounter = 0;
const liveNamespaces = new Set<Netns>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // A test that forgot its finally, or a crash: nothing outlives the run.
  process.on('exit', () => {
    for (const ns of [...liveNamespaces]) ns.delete();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      for (const ns of [...liveNamespaces]) ns.delete();
      process.kill(process.pid, sig);
    });
  }
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * A named network namespace (`ip netns add`), with a private temporary directory
 * for sockets and logs, and every process started in it tracked. `delete()` kills
 * them all (and anything else left in the namespace), deletes the namespace and
 * the directory; it is idempotent and synchronous, for `finally` blocks.
 *
 * Processes are started as `ip netns exec NS setpriv --pdeathsig TERM CMD ...`, in
 * a process group of their own: they die with the test process even if it is
 * killed without a chance to clean up.
 */
export class Netns {
  /** A private directory (under os.tmpdir()) for sockets and logs, removed by delete(). */
  readonly dir: string;
  private readonly children = new Set<ChildProcess>();
  private readonly cleanups: Array<() => void> = [];
  private deleted = false;

  private constructor(readonly name: string, dir: string) {
    this.dir = dir;
  }

  /** Makes `<prefix>-<pid>-<n>` with `lo` up. Needs root. */
  static create(prefix = 'e2e'): Netns {
    installExitHook();
    let name = '';
    for (let attempt = 0; ; attempt += 1) {
      netnsCounter += 1;
      name = `${prefix}-${process.pid}-${netnsCounter}`;
      if (fs.existsSync(path.join('/run/netns', name))) continue; // left by an earlier run (shared /run/netns)
      try {
        execFileSync('ip', ['netns', 'add', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
        break;
      } catch (error) {
        const stderr = String((error as { stderr?: string }).stderr ?? '');
        if (/exists/i.test(stderr) && attempt < 20) continue;
        throw new Error(`ip netns add ${name} failed (root needed): ${stderr.trim() || (error as Error).message}`);
      }
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhost-tap-e2e-'));
    const ns = new Netns(name, dir);
    liveNamespaces.add(ns);
    try {
      ns.exec('ip', ['link', 'set', 'lo', 'up']);
    } catch (error) {
      ns.delete();
      throw error;
    }
    return ns;
  }

  /** A path inside this namespace's private directory (short: fits a unix socket). */
  path(name: string): string {
    return path.join(this.dir, name);
  }

  /** Runs a command in the namespace and returns its stdout; throws with its stderr on failure. */
  exec(cmd: string, args: string[] = [], options: { timeoutMs?: number; input?: string } = {}): string {
    this.assertLive();
    try {
      return execFileSync('ip', ['netns', 'exec', this.name, cmd, ...args], {
        encoding: 'utf8',
        input: options.input,
        stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
        timeout: options.timeoutMs ?? 30_000,
        killSignal: 'SIGKILL',
      });
    } catch (error) {
      const e = error as { stderr?: string; stdout?: string; message: string };
      throw new Error(`[netns ${this.name}] ${cmd} ${args.join(' ')} failed: ${(e.stderr || e.stdout || e.message).trim()}`);
    }
  }

  /**
   * Starts a tracked process in the namespace (stdio piped unless options say
   * otherwise, its own process group). delete() kills it.
   */
  spawn(cmd: string, args: string[] = [], options: SpawnOptions = {}): ChildProcess {
    this.assertLive();
    const child = spawn('ip', ['netns', 'exec', this.name, 'setpriv', '--pdeathsig', 'TERM', '--', cmd, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...options,
      detached: true,
    });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    // An error (ENOENT...) is reported through 'exit'/'close' as well; never crash the run.
    child.on('error', () => {});
    return child;
  }

  /** Runs a command to completion, asynchronously (the event loop keeps serving guests). */
  run(cmd: string, args: string[] = [], options: { timeoutMs?: number } = {}): Promise<ExecResult> {
    const child = this.spawn(cmd, args);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        signal(child.pid!, 'SIGKILL', true);
        reject(new Error(`[netns ${this.name}] ${cmd} ${args.join(' ')} timed out after ${options.timeoutMs} ms:\n${tail(stdout + stderr)}`));
      }, options.timeoutMs ?? 60_000);
      child.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      child.once('close', (code, sig) => {
        clearTimeout(timer);
        resolve({ stdout, stderr, code, signal: sig });
      });
    });
  }

  /** Registers a cleanup step run by delete() once every process is gone. */
  onDelete(fn: () => void): void {
    this.cleanups.push(fn);
  }

  /** Pids of every process living in the namespace (ours or their daemons). */
  pids(): number[] {
    if (this.deleted) return [];
    try {
      return execFileSync('ip', ['netns', 'pids', this.name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
        .split(/\s+/)
        .filter(Boolean)
        .map(Number);
    } catch {
      return [];
    }
  }

  /**
   * Kills every process started here (TERM, then KILL after 3 s) and anything else
   * in the namespace, runs the onDelete steps, deletes the namespace and its
   * directory. Idempotent; never throws.
   */
  delete(): void {
    if (this.deleted) return;
    const groups = [...this.children].map((c) => c.pid).filter((pid): pid is number => pid !== undefined && isRunning(pid));
    const stray = this.pids().filter((pid) => pid !== process.pid);
    const all = [...new Set([...groups, ...stray])];
    for (const pid of groups) signal(pid, 'SIGTERM', true);
    for (const pid of stray) signal(pid, 'SIGTERM', false);
    const deadline = Date.now() + 3_000;
    while (all.some(isRunning) && Date.now() < deadline) sleepSync(20);
    for (const pid of all.filter(isRunning)) signal(pid, 'SIGKILL', groups.includes(pid));
    for (const pid of this.pids()) signal(pid, 'SIGKILL', false);
    const killDeadline = Date.now() + 2_000;
    while (all.some(isRunning) && Date.now() < killDeadline) sleepSync(20);
    this.deleted = true;
    liveNamespaces.delete(this);
    for (const fn of this.cleanups.splice(0)) {
      try {
        fn();
      } catch {
        // best effort
      }
    }
    try {
      execFileSync('ip', ['netns', 'delete', this.name], { stdio: 'ignore' });
    } catch {
      // already gone
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  get isDeleted(): boolean {
    return this.deleted;
  }

  private assertLive(): void {
    if (this.deleted) throw new Error(`netns ${this.name} was deleted`);
  }
}
