// End-to-end harness: a real Linux guest (Debian's kernel, virtio_net) under QEMU
// (TCG), on a network namespace of its own, with its virtio-net NIC backed either by
// QEMU's own tap backend or by a vhost-user backend listening on a unix socket
// (DPDK testpmd today, `vhost-tap serve` tomorrow: the tests swap only the backend).
//
// The guest is built by scripts/build-guest.sh (Debian packages only) and cached in
// $GUEST_DIR (default ${XDG_CACHE_HOME:-$HOME/.cache}/vhost-tap-guest).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import type { Netns } from './netns';
import { signal } from './processes';
import { REPO_ROOT } from './repo';
import { requireTools, tail } from './tools';

/** Where scripts/build-guest.sh puts the guest, as the script computes it. */
export function guestDir(): string {
  if (process.env.GUEST_DIR) return process.env.GUEST_DIR;
  const cache = process.env.XDG_CACHE_HOME || path.join(process.env.HOME || os.homedir() || '/tmp', '.cache');
  return path.join(cache, 'vhost-tap-guest');
}

let builtGuest: string | undefined;

/**
 * Builds the guest if needed (scripts/build-guest.sh: ~15 s and ~75 MB of .debs the
 * first time, a few ms when up to date) and returns its directory, which holds
 * `vmlinux` and `initramfs.img`.
 */
export function ensureGuest(): string {
  if (builtGuest !== undefined) return builtGuest;
  const dir = guestDir();
  try {
    execFileSync('sh', [path.join(REPO_ROOT, 'scripts', 'build-guest.sh')], {
      env: { ...process.env, GUEST_DIR: dir },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 600_000,
    });
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string; message: string };
    throw new Error(`scripts/build-guest.sh failed (GUEST_DIR=${dir}): ${e.message}\n${tail(`${e.stdout ?? ''}${e.stderr ?? ''}`)}`);
  }
  for (const file of ['vmlinux', 'initramfs.img']) {
    if (!fs.existsSync(path.join(dir, file))) throw new Error(`scripts/build-guest.sh left no ${file} in ${dir}`);
  }
  builtGuest = dir;
  return dir;
}

/**
 * A tap in the namespace for QEMU's own tap backend (`ip tuntap`: the device is
 * persistent and goes away with the namespace), with an address, up. Multiqueue
 * when queues > 1: QEMU opens a single-queue tap without IFF_MULTI_QUEUE, and the
 * kernel refuses (EINVAL) a queue whose multiqueue flag differs from the device's.
 */
export function addTap(netns: Netns, options: { ifname: string; hostIp: string; queues: number }): void {
  netns.exec('ip', ['tuntap', 'add', 'dev', options.ifname, 'mode', 'tap', ...(options.queues > 1 ? ['multi_queue'] : [])]);
  netns.exec('ip', ['addr', 'add', options.hostIp, 'dev', options.ifname]);
  netns.exec('ip', ['link', 'set', options.ifname, 'up']);
}

/* ------------------------------------------------------------------- QEMU */

export type GuestNetdev =
  | {
      kind: 'vhost-user';
      /** The backend's unix socket (QEMU is the client). */
      socket: string;
      queues: number;
      /** QEMU reconnects to a backend that went away after this many seconds (chardev reconnect=). */
      reconnectSeconds?: number;
    }
  | { kind: 'tap'; ifname: string; queues: number };

export interface GuestOptions {
  netns: Netns;
  netdev: GuestNetdev;
  /** eth0's address: '10.0.0.2/24' (a bare address means /24). */
  guestIp: string;
  /** Shell commands for the guest (busybox sh): no `"`, no newline; the kernel command line is ≤ 2047 bytes. */
  commands: string;
  timeoutMs: number;
  /** vCPUs (default 2). */
  smp?: number;
  /** Guest RAM in MiB (default 512); memfd-backed and shared for vhost-user. */
  memoryMb?: number;
  /** Guest RAM in KiB, a multiple of 8 (QEMU rounds -m to that); overrides memoryMb. */
  memoryKb?: number;
  /**
   * Guest RAM in this file (memory-backend-file, share=on) instead of a memfd (vhost-user)
   * or anonymous memory (tap), so that a test can read the guest's RAM from outside.
   */
  ramFile?: string;
  mac?: string;
  /**
   * virtio-net-pci properties over the harness's own (netdev, mq=on, vectors):
   * e.g. { csum: 'off', rx_queue_size: 1024 }. A property given here replaces the
   * harness's value (mq: 'off'), it is never given twice.
   */
  device?: Record<string, string | number>;
  /** Appended to the QEMU command line. */
  extraArgs?: string[];
}

export interface GuestExit {
  /** Serial console and QEMU's stderr, \r removed. */
  output: string;
  /** N of the guest's last `GUEST: done rc=N`, null if it never got there. */
  rc: number | null;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
}

export interface GuestResult {
  output: string;
  rc: number;
  exitCode: number | null;
}

export interface RunningGuest {
  readonly pid: number;
  /** Everything printed so far. */
  readonly output: string;
  /** Resolves when QEMU exits, whatever the reason; rejects (after killing QEMU) on timeoutMs. */
  readonly exited: Promise<GuestExit>;
  /** Resolves with the first match in the output; rejects if QEMU exits first or after timeoutMs. */
  waitForOutput(pattern: RegExp | string, timeoutMs: number): Promise<RegExpMatchArray>;
  /** Kills QEMU (default SIGKILL: a crashed VMM) and waits for it. */
  kill(signal?: NodeJS.Signals): Promise<GuestExit>;
}

/** COMMAND_LINE_SIZE on x86, including the terminating NUL. */
export const KERNEL_CMDLINE_MAX = 2048;

/** The kernel command line for the guest's /init; throws on what the kernel would mangle. */
export function guestCmdline(guestIp: string, commands: string): string {
  if (commands.includes('"')) throw new Error('guest commands cannot contain `"` (they travel quoted on the kernel command line): use single quotes');
  if (/[\r\n]/.test(commands)) throw new Error('guest commands cannot contain newlines: separate them with ;');
  const ip = guestIp.includes('/') ? guestIp : `${guestIp}/24`;
  if (!/^\d+\.\d+\.\d+\.\d+\/\d+$/.test(ip)) throw new Error(`guestIp ${guestIp}: expected ADDR or ADDR/PLEN`);
  const cmdline = `console=ttyS0 quiet panic=-1 gip=${ip} gcmd="${commands}"`;
  const bytes = Buffer.byteLength(cmdline);
  if (bytes >= KERNEL_CMDLINE_MAX) {
    throw new Error(`the guest's kernel command line would be ${bytes} bytes, the kernel keeps at most ${KERNEL_CMDLINE_MAX - 1}: shorten the guest commands`);
  }
  return cmdline;
}

/** The QEMU command line for a guest (exported for debugging and for reuse by other harnesses). */
export function qemuArgs(options: Omit<GuestOptions, 'netns' | 'timeoutMs'>, guest = ensureGuest()): string[] {
  const { netdev } = options;
  const smp = options.smp ?? 2;
  const memoryKb = options.memoryKb ?? (options.memoryMb ?? 512) * 1024;
  if (!Number.isInteger(memoryKb) || memoryKb <= 0 || memoryKb % 8 !== 0) throw new Error(`guest RAM of ${memoryKb} KiB: expected a positive multiple of 8 KiB`);
  const mem = `${memoryKb}K`;
  if (!Number.isInteger(netdev.queues) || netdev.queues < 1) throw new Error(`netdev.queues ${netdev.queues}: expected a positive integer`);
  const args = [
    '-accel', 'tcg', '-M', 'q35', '-smp', String(smp), '-m', mem,
    '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio', '-no-reboot',
    '-kernel', path.join(guest, 'vmlinux'), '-initrd', path.join(guest, 'initramfs.img'),
    '-append', guestCmdline(options.guestIp, options.commands),
  ];
  const device = (vectors: number): string => {
    const properties = { netdev: 'n0', mq: 'on', vectors, ...(options.mac ? { mac: options.mac } : {}), ...options.device };
    return ['virtio-net-pci', ...Object.entries(properties).map(([key, value]) => `${key}=${value}`)].join(',');
  };
  const ramFile = options.ramFile ? ['-object', `memory-backend-file,id=mem,size=${mem},share=on,mem-path=${options.ramFile}`, '-numa', 'node,memdev=mem'] : [];
  if (netdev.kind === 'vhost-user') {
    const reconnect = netdev.reconnectSeconds ? `,reconnect=${netdev.reconnectSeconds}` : '';
    args.push(
      // the backend maps guest RAM: it must be a shareable fd
      ...(ramFile.length ? ramFile : ['-object', `memory-backend-memfd,id=mem,size=${mem},share=on`, '-numa', 'node,memdev=mem']),
      '-chardev', `socket,id=c0,path=${netdev.socket}${reconnect}`,
      '-netdev', `vhost-user,id=n0,chardev=c0,queues=${netdev.queues}`,
      // vectors=0 (INTx): QEMU 7.2 crashes with vhost-user + MSI-X under TCG (no irqfd)
      '-device', device(0),
    );
  } else {
    args.push(
      ...ramFile,
      '-netdev', `tap,id=n0,ifname=${netdev.ifname},script=no,downscript=no,queues=${netdev.queues},vhost=off`,
      '-device', device(2 * netdev.queues + 2),
    );
  }
  args.push(...(options.extraArgs ?? []));
  return args;
}

function parseRc(output: string): number | null {
  const all = [...output.matchAll(/GUEST: done rc=(\d+)/g)];
  return all.length ? Number(all[all.length - 1]![1]) : null;
}

/** Boots the guest in the background; see RunningGuest. */
export function startGuest(options: GuestOptions): RunningGuest {
  requireTools('qemu-system-x86_64');
  const args = qemuArgs(options); // validates before anything starts
  if (options.netdev.kind === 'vhost-user' && Buffer.byteLength(options.netdev.socket) > 107) {
    throw new Error(`vhost-user socket path longer than 107 bytes: ${options.netdev.socket}`);
  }
  const child = options.netns.spawn('qemu-system-x86_64', args);
  let output = '';
  const append = (chunk: string): void => {
    output += chunk.replace(/\r/g, '');
  };
  child.stdout!.setEncoding('utf8').on('data', append);
  child.stderr!.setEncoding('utf8').on('data', append);
  const started = Date.now();
  const waiters = new Set<() => void>();

  let timedOut = false;
  const exited = new Promise<GuestExit>((resolve, reject) => {
    const timer = setTimeout(() => {
      timedOut = true;
      signal(child.pid!, 'SIGKILL', true);
    }, options.timeoutMs);
    child.once('close', (code, sig) => {
      clearTimeout(timer);
      for (const wake of waiters) wake();
      if (timedOut) {
        reject(new Error(`guest (netns ${options.netns.name}, ${options.netdev.kind}) timed out after ${options.timeoutMs} ms; QEMU killed. Output tail:\n${tail(output)}`));
      } else {
        resolve({ output, rc: parseRc(output), exitCode: code, signal: sig });
      }
    });
  });
  exited.catch(() => {}); // reported to whoever awaits it; never an unhandled rejection

  return {
    pid: child.pid!,
    get output() {
      return output;
    },
    exited,
    waitForOutput(pattern, timeoutMs) {
      const re = typeof pattern === 'string' ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : pattern;
      return new Promise((resolve, reject) => {
        const check = (): boolean => {
          const m = output.match(re);
          if (m) {
            finish();
            resolve(m);
            return true;
          }
          if (child.exitCode !== null || child.signalCode !== null) {
            finish();
            reject(new Error(`QEMU exited before the guest printed ${re}. Output tail:\n${tail(output)}`));
            return true;
          }
          return false;
        };
        const onData = (): void => void check();
        const timer = setTimeout(() => {
          finish();
          reject(new Error(`no ${re} in the guest's output after ${timeoutMs} ms (${Date.now() - started} ms since boot). Output tail:\n${tail(output)}`));
        }, timeoutMs);
        const finish = (): void => {
          clearTimeout(timer);
          child.stdout!.off('data', onData);
          child.stderr!.off('data', onData);
          waiters.delete(onExit);
        };
        const onExit = (): void => void check();
        if (check()) return;
        // registered after append, so the output includes the chunk
        child.stdout!.on('data', onData);
        child.stderr!.on('data', onData);
        waiters.add(onExit);
      });
    },
    async kill(sig: NodeJS.Signals = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) signal(child.pid!, sig, true);
      return exited;
    },
  };
}

/**
 * Boots the guest, runs `commands`, and resolves when QEMU exits with the guest's
 * `GUEST: done rc=N`. Rejects with the output tail if QEMU exits without it, or
 * (after killing QEMU) on timeoutMs.
 */
export async function bootGuest(options: GuestOptions): Promise<GuestResult> {
  const guest = startGuest(options);
  const result = await guest.exited;
  if (result.rc === null) {
    const how = result.signal ? `signal ${result.signal}` : `exit code ${result.exitCode}`;
    throw new Error(`QEMU exited (${how}) before the guest printed "GUEST: done rc=N". Output tail:\n${tail(result.output)}`);
  }
  return { output: result.output, rc: result.rc, exitCode: result.exitCode };
}

/* ----------------------------------------------------------------- iperf3 */

export interface Iperf3Summary {
  /** Aggregate bitrate in Gbit/s as the sender and the receiver saw it ([SUM] lines with -P > 1). */
  senderGbps?: number;
  receiverGbps?: number;
  /** Distinct streams with a final line in the text (fewer than -P if it was cut by `tail`). */
  streams: number;
  /** `-R`: the server sent. */
  reverse: boolean;
}

const UNIT: Record<string, number> = { '': 1e-9, K: 1e-6, M: 1e-3, G: 1, T: 1e3 };
const SUMMARY_LINE = /^\[\s*(\d+|SUM)\]\s+[\d.]+-[\d.]+\s+sec\s+[\d.]+\s+[KMGT]?Bytes\s+([\d.]+)\s+([KMGT]?)bits\/sec\b.*\b(sender|receiver)\s*$/;

/**
 * The final bitrates of each iperf3 (client or server) run in a text, in Gbit/s.
 * Runs are separated by "Connecting to host" (client), "Accepted connection from"
 * (server) and "iperf Done." (what `| tail -4` of a client keeps still parses);
 * interval lines are ignored. `streams` counts the per-stream final lines present.
 */
export function parseIperf3(output: string): Iperf3Summary[] {
  type Line = { stream: string; gbps: number; role: 'sender' | 'receiver' };
  const runs: Array<{ lines: Line[]; reverse: boolean }> = [];
  let current: { lines: Line[]; reverse: boolean } | undefined;
  const close = (): void => {
    if (current && current.lines.length) runs.push(current);
    current = undefined;
  };
  for (const raw of output.replace(/\r/g, '').split('\n')) {
    const line = raw.trim();
    if (/^(Connecting to host|Accepted connection from)/.test(line)) {
      close();
      current = { lines: [], reverse: false };
      continue;
    }
    if (/^Reverse mode/.test(line)) {
      current ??= { lines: [], reverse: false };
      current.reverse = true;
      continue;
    }
    if (/^iperf Done\./.test(line)) {
      close();
      continue;
    }
    const m = SUMMARY_LINE.exec(line);
    if (!m) continue;
    current ??= { lines: [], reverse: false };
    current.lines.push({ stream: m[1]!, gbps: Number(m[2]) * UNIT[m[3]!]!, role: m[4] as 'sender' | 'receiver' });
  }
  close();
  return runs.map(({ lines, reverse }) => {
    const sums = lines.filter((l) => l.stream === 'SUM');
    const streams = new Set(lines.filter((l) => l.stream !== 'SUM').map((l) => l.stream)).size;
    const pick = (role: 'sender' | 'receiver'): number | undefined => {
      const sum = sums.filter((l) => l.role === role);
      if (sum.length) return sum[sum.length - 1]!.gbps;
      const per = lines.filter((l) => l.role === role);
      return per.length ? per.reduce((a, l) => a + l.gbps, 0) : undefined;
    };
    return { senderGbps: pick('sender'), receiverGbps: pick('receiver'), streams, reverse };
  });
}
