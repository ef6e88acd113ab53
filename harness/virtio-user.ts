// DPDK's net_virtio_user PMD as the vhost-user frontend (a second testpmd, no
// VM): the same invocation as shared/guest-kit/run-vhost-user.sh, interactive so
// the harness can read its port counters and quit it cleanly.
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';

import { Netns } from './netns';
import { dpdkRuntimeDir } from './testpmd';
import { tail } from './tools';
import { sleep } from './wait';

export interface FrontendOptions {
  socket: string;
  queues: number;
  /** txonly: guest-to-host; rxonly: host-to-guest; icmpecho: answers pings (and ARP) as a guest would; io: nothing to send (idle and memory checks). */
  mode: 'txonly' | 'rxonly' | 'icmpecho' | 'io';
  /** Frame bytes for txonly (testpmd --txpkts). */
  txpkts?: number;
  /** Ring size (net_virtio_user queue_size, testpmd --rxd/--txd); DPDK's default is 256. */
  ringSize?: number;
  /** Start forwarding at once (default true). */
  autoStart?: boolean;
  /** Offer packed virtqueues (net_virtio_user packed_vq=1): VIRTIO_F_RING_PACKED is negotiated if the backend offers it. Default false (split). */
  packed?: boolean;
}

export interface Frontend {
  readonly process: ChildProcess;
  log(): string;
  /** Resolves once testpmd shows its prompt (ports started, forwarding if autoStart). */
  ready(timeoutMs?: number): Promise<void>;
  /** Runs testpmd commands one by one, each to its next prompt; resolves with what they printed. */
  commands(lines: string[], timeoutMs?: number): Promise<string>;
  /** Stops forwarding and starts it again in `mode` (txonly with `txpkts`-byte frames). */
  forward(mode: FrontendOptions['mode'], txpkts?: number): Promise<void>;
  /** Port 0 counters as testpmd reports them (what it claims, for reference only). */
  portStats(timeoutMs?: number): Promise<{ rx: number; tx: number } | undefined>;
  stop(): Promise<void>;
}

export function startFrontend(netns: Netns, o: FrontendOptions): Frontend {
  const prefix = `${netns.name}-vu`;
  const removeRuntime = (): void => fs.rmSync(dpdkRuntimeDir(prefix), { recursive: true, force: true });
  netns.onDelete(removeRuntime);
  const ring = o.ringSize ?? 256;
  // stdbuf: testpmd printf()s its statistics; piped, they would sit in stdio's buffer.
  const child = netns.spawn('stdbuf', ['-oL', 'dpdk-testpmd',
    // forwarding lcore on cpu0, main lcore (the prompt) on cpu1, as run-vhost-user.sh
    '-l', '0,1', '--main-lcore', '1', '--no-huge', '--no-pci', '-m', '1024', `--file-prefix=${prefix}`,
    '--vdev', `net_virtio_user0,path=${o.socket},queues=${o.queues},server=0,queue_size=${ring}${o.packed ? ',packed_vq=1' : ''}`,
    '--', '-i', `--rxq=${o.queues}`, `--txq=${o.queues}`, `--rxd=${ring}`, `--txd=${ring}`, '--nb-cores=1',
    `--forward-mode=${o.mode}`, ...(o.txpkts ? [`--txpkts=${o.txpkts}`] : []), '--total-num-mbufs=65536',
    ...(o.autoStart === false ? [] : ['--auto-start']),
  ], { stdio: ['pipe', 'pipe', 'pipe'] });
  let log = '';
  let lastData = Date.now();
  const append = (d: string): void => {
    log += d;
    lastData = Date.now();
  };
  child.stdout!.setEncoding('utf8').on('data', append);
  child.stderr!.setEncoding('utf8').on('data', append);
  child.stdin!.on('error', () => {});
  const closed = new Promise<void>((resolve) => {
    child.once('close', () => resolve());
    child.once('error', () => resolve());
  });
  const alive = (): boolean => child.exitCode === null && child.signalCode === null;
  let stopping: Promise<void> | undefined;

  const waitFor = async (pred: () => boolean, timeoutMs: number, what: string): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      if (!alive()) throw new Error(`virtio_user testpmd exited (${child.exitCode ?? child.signalCode}) before ${what}:\n${tail(log, 15)}`);
      if (Date.now() > deadline) throw new Error(`virtio_user testpmd: no ${what} after ${timeoutMs} ms:\n${tail(log, 15)}`);
      await sleep(50);
    }
  };

  // The prompt is written straight to the fd, the command output through stdio: they interleave
  // ("tes" + "Packet forwarding not started" + "tpmd> ", or the prompt first). So a command is
  // done once a prompt's "> " came after it and nothing more came for 150 ms.
  const idleAtPrompt = (from: number): boolean => /> |>$/.test(log.slice(from)) && Date.now() - lastData > 150;
  // One conversation at a time on stdin: a command's prompt must not be taken for the next one's.
  let queue: Promise<unknown> = Promise.resolve();
  const exclusive = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = queue.then(fn, fn);
    queue = run.catch(() => {});
    return run;
  };
  const commands = (lines: string[], timeoutMs = 10_000): Promise<string> => exclusive(async () => {
    const start = log.length;
    for (const line of lines) {
      if (!alive()) throw new Error(`virtio_user testpmd exited (${child.exitCode ?? child.signalCode}) before "${line}":\n${tail(log, 15)}`);
      const from = log.length;
      child.stdin!.write(`${line}\n`);
      await waitFor(() => idleAtPrompt(from), timeoutMs, `the prompt after "${line}"`);
    }
    return log.slice(start);
  });
  return {
    process: child,
    log: () => log,
    ready: (timeoutMs = 60_000) => exclusive(() => waitFor(() => idleAtPrompt(0), timeoutMs, 'prompt')),
    commands,
    forward: async (mode, txpkts) => {
      await commands(['stop', `set fwd ${mode}`, ...(txpkts ? [`set txpkts ${txpkts}`] : []), 'start']);
    },
    async portStats(timeoutMs = 5_000) {
      if (!alive()) return undefined;
      let text: string;
      try {
        text = await commands(['show port stats 0'], timeoutMs);
      } catch {
        return undefined;
      }
      const rx = /RX-packets:\s*(\d+)/.exec(text);
      const tx = /TX-packets:\s*(\d+)/.exec(text);
      return rx && tx ? { rx: Number(rx[1]), tx: Number(tx[1]) } : undefined;
    },
    stop() {
      // quit (testpmd stops forwarding, closes the port: the backend sees the frontend go), SIGKILL
      // if it has not exited after 8 s; never waits more than 10 s in all.
      stopping ??= (async () => {
        if (alive()) {
          child.stdin!.write('quit\n');
          child.stdin!.end();
          const kill = setTimeout(() => child.kill('SIGKILL'), 8_000);
          await Promise.race([closed, sleep(10_000)]);
          clearTimeout(kill);
          if (alive()) child.kill('SIGKILL');
        }
        removeRuntime();
      })();
      return stopping;
    },
  };
}
