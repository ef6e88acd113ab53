// DPDK testpmd as the reference vhost-user backend: a net_vhost port (vhost-user
// server on a unix socket) io-forwarded to a net_tap port (a tap in the netns with
// the host's address). `vhost-tap serve` takes its place in the daemon's tests.
import { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import { linkExists } from './daemon';
import { Netns } from './netns';
import { requireTools, tail } from './tools';

export interface TestpmdOptions {
  /** vhost-user socket testpmd listens on (QEMU connects). */
  socket: string;
  queues: number;
  /** Name of the DPDK tap in the netns (default dtap0). */
  tapName?: string;
  /** Address given to that tap, e.g. '10.0.1.1/24'. */
  hostIp: string;
  /** Extra net_vhost devargs, e.g. ',tso=1'. */
  vhostArgs?: string;
  startTimeoutMs?: number;
}

export interface TestpmdBackend {
  readonly process: ChildProcess;
  readonly socket: string;
  readonly tapName: string;
  /** testpmd's output so far. */
  log(): string;
  /**
   * SIGINT (testpmd prints its forward statistics and exits; SIGKILL after 5 s),
   * then removes its runtime files. Idempotent. Resolves with the full log.
   */
  stop(): Promise<string>;
}

/** Packet counters of testpmd's final "Forward statistics for port N" blocks. */
export function testpmdPortStats(log: string): Record<number, { rx: number; tx: number }> {
  const stats: Record<number, { rx: number; tx: number }> = {};
  const re = /Forward statistics for port (\d+)\s*-+\s*RX-packets:\s*(\d+).*?\n\s*TX-packets:\s*(\d+)/g;
  for (const m of log.matchAll(re)) stats[Number(m[1])] = { rx: Number(m[2]), tx: Number(m[3]) };
  return stats;
}

/** DPDK's runtime directory for a --file-prefix (root: /var/run/dpdk/PREFIX). */
export function dpdkRuntimeDir(prefix: string): string {
  const base = process.getuid?.() === 0 ? '/var/run' : process.env.XDG_RUNTIME_DIR || '/tmp';
  return path.join(base, 'dpdk', prefix);
}

/**
 * Starts testpmd in `netns`: lcore 0 main, lcore 1 forwarding (busy-polls one core),
 * no hugepages (`--no-huge -m 1024`), no PCI, `--file-prefix` = the netns name.
 * Resolves once the socket exists and the tap is up with its address. The netns's
 * delete() also stops it and removes its runtime files.
 */
export async function startTestpmd(netns: Netns, options: TestpmdOptions): Promise<TestpmdBackend> {
  requireTools('dpdk-testpmd');
  const tapName = options.tapName ?? 'dtap0';
  const prefix = netns.name;
  const dir = dpdkRuntimeDir(prefix);
  const removeRuntime = (): void => {
    fs.rmSync(dir, { recursive: true, force: true });
    try {
      fs.rmdirSync(path.dirname(dir)); // only if empty
    } catch {
      // other DPDK processes' files, or already gone
    }
  };
  netns.onDelete(removeRuntime);
  fs.rmSync(options.socket, { force: true });
  const { queues } = options;
  const child = netns.spawn('dpdk-testpmd', [
    '-l', '0,1', '--no-huge', '--no-pci', '-m', '1024', `--file-prefix=${prefix}`,
    '--vdev', `net_vhost0,iface=${options.socket},queues=${queues},client=0${options.vhostArgs ?? ''}`,
    '--vdev', `net_tap0,iface=${tapName}`,
    '--', `--rxq=${queues}`, `--txq=${queues}`, '--nb-cores=1', '--forward-mode=io',
    '--total-num-mbufs=65536', '--auto-start',
    // without --stats-period testpmd waits for a key on stdin (/dev/null: it exits at once)
    '--stats-period', '600',
  ]);
  let log = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (log += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (log += d));
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));

  let stopped: Promise<string> | undefined;
  const backend: TestpmdBackend = {
    process: child,
    socket: options.socket,
    tapName,
    log: () => log,
    stop() {
      stopped ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGINT');
          const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
          await closed;
          clearTimeout(timer);
        }
        removeRuntime();
        fs.rmSync(options.socket, { force: true });
        return log;
      })();
      return stopped;
    },
  };

  const deadline = Date.now() + (options.startTimeoutMs ?? 20_000);
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      await backend.stop();
      throw new Error(`dpdk-testpmd exited while starting (code ${child.exitCode}, signal ${child.signalCode}):\n${tail(log)}`);
    }
    if (fs.existsSync(options.socket) && linkExists(netns, tapName)) break;
    if (Date.now() > deadline) {
      await backend.stop();
      throw new Error(`dpdk-testpmd did not create ${options.socket} and ${tapName} in ${options.startTimeoutMs ?? 20_000} ms:\n${tail(log)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  netns.exec('ip', ['addr', 'replace', options.hostIp, 'dev', tapName]);
  netns.exec('ip', ['link', 'set', tapName, 'up']);
  return backend;
}

