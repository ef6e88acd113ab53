// What a guest loses while it changes its queue count (issue 12), for the e2e
// test (test/e2e/lossless-switch.test.ts) and the bench: QEMU (TCG) and Debian's
// virtio_net with 4 queue pairs, on `vhost-tap serve` (with or without its steering
// program) or on QEMU's own tap backend; the guest's `iperf3 -s` receives UDP from
// the host's namespace over many flows, each with its own sequence numbers
// (harness/udp-flows.ts: iperf3's client protocol, with the end of the test held
// until nothing is left on the way), first without any change (the baseline: the
// rate the guest keeps up with), then while the guest runs
// `ethtool -L eth0 combined 1 / 2 / 4` again and again.
//
// What iperf3 counts, per flow: the datagrams it received, the highest sequence
// number, the gaps (net of late arrivals) and the arrivals out of order. Received
// = sent = highest with no gap means every sequence number arrived, unless a loss
// hides behind a duplicate that arrives after it; both leave a trace in the
// out-of-order count, which is reported (a flow moved to another queue can
// overtake its own last frames on the old one: the guest reads the rings in
// parallel).
import path from 'node:path';

import { says, startDaemon, type Daemon } from './daemon';
import { Netns } from './netns';
import { addTap, ensureGuest, startGuest, type GuestNetdev, type RunningGuest } from './qemu-guest';
import { requireTools, tail } from './tools';
import type { FlowCount, SenderOptions } from './udp-flows';

export const QUEUES = 4;
const HOST = '10.0.2.1';
const GUEST = '10.0.2.2';
/** Queue-count changes: rounds of 4->1->2->4->2->1->4, every transition between 1, 2 and 4 pairs. */
const ROUND = [1, 2, 4, 2, 1, 4];
/** Frames wait in the tap (per queue) rather than being dropped while the guest catches up. */
const TXQUEUELEN = 20_000;
const SENDER = path.join(__dirname, 'udp-flows.js');

export interface SwitchParams {
  /** UDP flows (iperf3 streams). */
  flows: number;
  /** Datagrams per second over all flows. */
  rate: number;
  /** `ethtool -L` runs in the changing phase. */
  changes: number;
  /** How long the baseline (no change) sends. */
  baselineMs: number;
  /** Prefix of the namespaces (the bench's are 'vtbench', which it cleans up after a killed run). */
  prefix?: string;
}

/** The guest's `ethtool -L eth0 combined N`, in order (it starts on 2 pairs, one per vCPU). */
export function switchCounts(changes: number): number[] {
  return Array.from({ length: changes }, (_, k) => ROUND[k % ROUND.length]!);
}

export interface Phase {
  flows: FlowCount[];
  outOfOrder: number[];
  sent: number;
  received: number;
  /** Datagrams missing at the end: sent - received over flows where fewer arrived. */
  lost: number;
  /** Received more often than sent (duplicates that no loss hid). */
  extra: number;
  /** Gaps iperf3 counted (net of late arrivals). */
  gaps: number;
  /**
   * The tap's tx_dropped during the phase: frames tun dropped at a full queue (the
   * guest behind), or sent to a queue as it was detached (tun's own hash only).
   */
  tapDrops: number;
  /** How long the sender sent. */
  seconds: number;
}

export interface SwitchRun {
  base: Phase;
  sw: Phase;
  /** ethtool -L runs that succeeded, and that failed. */
  changes: number;
  failedChanges: number;
  /**
   * queue-pairs-changed lines the daemon logged during the changes: more than the
   * guest's, as QEMU enables a growing set's rings pair by pair (1 -> 2 -> 3 -> 4).
   */
  daemonChanges?: number;
  /** The pairs in use at the end, as the daemon last logged them. */
  daemonActive?: number;
  /** The daemon's `steering` log line. */
  steering?: { active: boolean; reason?: string };
  seconds: number;
}

/**
 * Guest: big socket buffers (bursts wait in them); then two iperf3 tests, each
 * announced with `GUEST: recv-NAME` once the server listens and followed by the
 * out-of-order count of each stream: `base` (nothing changes) and `sw` (after 1 s
 * of traffic, the changes, then `GUEST: switched n=OK fail=FAILED`).
 */
function guestCommands(changes: number): string {
  return [
    'for f in rmem_default rmem_max; do echo 16777216 > /proc/sys/net/core/$f; done',
    "R() { iperf3 -s -1 -J -i 0 > /tmp/$1 & P=$!; sleep 0.3; echo GUEST: recv-$1; }",
    // (no `"` on the kernel command line: . for the JSON's quote)
    "O() { wait $P; echo GUEST: ooo-$1 $(tr -d ' \\t\\n' < /tmp/$1 | grep -o 'out_of_order.:[0-9]*' | cut -d: -f2) end; }",
    // sleeps of 0 to 0.3 s: changes back to back, and changes after traffic settled on the new set
    `S() { n=0; f=0; for c in ${switchCounts(changes).join(' ')}; do ethtool -L eth0 combined $c && n=$((n+1)) || f=$((f+1)); sleep 0.$(((n+f)%4)); done; echo GUEST: switched n=$n fail=$f; }`,
    'R base; O base; R sw; sleep 1; S; O sw',
  ].join('; ');
}

function tapDropped(ns: Netns, tap: string): number {
  const [link] = JSON.parse(ns.exec('ip', ['-s', '-j', 'link', 'show', tap])) as Array<{ stats64?: { tx?: { dropped?: number } } }>;
  return link?.stats64?.tx?.dropped ?? 0;
}

/** One sender in the namespace for one iperf3 test: starts when the guest listens, stops when `until` resolves. */
async function sendPhase(ns: Netns, guest: RunningGuest, tap: string, params: SwitchParams, name: string, until: () => Promise<void>): Promise<Phase> {
  await guest.waitForOutput(`GUEST: recv-${name}`, 60_000);
  const dropsBefore = tapDropped(ns, tap);
  const options: SenderOptions = { host: GUEST, flows: params.flows, pps: params.rate, len: 64, graceMs: 1500 };
  const child = ns.spawn(process.execPath, [SENDER, JSON.stringify(options)], { stdio: ['pipe', 'pipe', 'pipe'] });
  type Line = { event: string; flows?: FlowCount[]; seconds?: number; error?: string };
  const lines: Line[] = [];
  let out = '';
  let err = '';
  let wake: () => void = () => {};
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    let nl: number;
    while ((nl = out.indexOf('\n')) >= 0) {
      lines.push(JSON.parse(out.slice(0, nl)) as Line);
      out = out.slice(nl + 1);
      wake();
    }
  });
  const closed = new Promise<void>((resolve) => child.once('close', () => {
    wake();
    resolve();
  }));
  const next = async (event: string, timeoutMs: number): Promise<Line> => {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const line = lines.find((l) => l.event === event || l.event === 'error');
      if (line?.event === 'error') throw new Error(`the sender (${name}) failed: ${line.error}${says(guest.output)}`);
      if (line) return line;
      if (child.exitCode !== null || child.signalCode !== null || Date.now() > end) {
        throw new Error(`the sender (${name}) ${Date.now() > end ? 'timed out' : 'exited'} before "${event}": ${err}${says(guest.output)}`);
      }
      await Promise.race([new Promise<void>((resolve) => (wake = resolve)), new Promise((resolve) => setTimeout(resolve, 200)), closed]);
    }
  };
  try {
    await next('running', 20_000);
    await until();
    child.stdin!.end('stop\n');
    const done = await next('done', 30_000);
    const flows = done.flows!;
    const ooo = await guest.waitForOutput(new RegExp(`GUEST: ooo-${name} ([\\d ]*)end`), 20_000);
    return {
      flows,
      outOfOrder: ooo[1]!.trim().split(/\s+/).filter(Boolean).map(Number),
      sent: flows.reduce((a, f) => a + f.sent, 0),
      received: flows.reduce((a, f) => a + f.received, 0),
      lost: flows.reduce((a, f) => a + Math.max(0, f.sent - f.received), 0),
      extra: flows.reduce((a, f) => a + Math.max(0, f.received - f.sent), 0),
      gaps: flows.reduce((a, f) => a + f.lost, 0),
      tapDrops: tapDropped(ns, tap) - dropsBefore,
      seconds: done.seconds!,
    };
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}

/** The guest on this backend: the baseline, then the changes. */
async function runGuest(ns: Netns, netdev: GuestNetdev, tap: string, params: SwitchParams, daemon?: Daemon): Promise<SwitchRun> {
  const t0 = Date.now();
  const guest = startGuest({ netns: ns, netdev, guestIp: `${GUEST}/24`, commands: guestCommands(params.changes), timeoutMs: 120_000 });
  try {
    const base = await sendPhase(ns, guest, tap, params, 'base', () => new Promise((resolve) => setTimeout(resolve, params.baselineMs)));
    const from = daemon?.mark() ?? 0;
    let switched: RegExpMatchArray | undefined;
    const sw = await sendPhase(ns, guest, tap, params, 'sw', async () => {
      switched = await guest.waitForOutput(/GUEST: switched n=(\d+) fail=(\d+)/, 60_000);
      await new Promise((resolve) => setTimeout(resolve, 500)); // traffic on the last set too
    });
    const exit = await guest.exited;
    if (exit.rc !== 0) throw new Error(`the guest's commands failed (rc ${exit.rc})`);
    const changed = daemon?.events('queue-pairs-changed', from);
    return {
      base, sw, changes: Number(switched![1]), failedChanges: Number(switched![2]),
      ...(changed ? { daemonChanges: changed.length, daemonActive: Number(changed.at(-1)?.active) } : {}),
      seconds: (Date.now() - t0) / 1000,
    };
  } catch (error) {
    await guest.kill();
    (error as Error).message += says(guest.output);
    throw error;
  }
}

function requireAll(): void {
  requireTools('qemu-system-x86_64', 'ip', 'setpriv');
  ensureGuest();
}

/** `vhost-tap serve` with its steering program (the default), or with --no-steering; its namespace is gone at the end. */
export async function switchOnDaemon(steering: boolean, params: SwitchParams): Promise<SwitchRun> {
  requireAll();
  const ns = Netns.create(params.prefix ?? (steering ? 'e2esteer' : 'e2enosteer'));
  try {
    const daemon = await startDaemon(ns, { tap: 'vtd0', queues: QUEUES, hostIp: `${HOST}/24`, extraArgs: steering ? [] : ['--no-steering'] });
    try {
      const line = await daemon.waitFor('steering');
      ns.exec('ip', ['link', 'set', 'vtd0', 'txqueuelen', String(TXQUEUELEN)]);
      const result = await runGuest(ns, { kind: 'vhost-user', socket: daemon.socket, queues: QUEUES }, daemon.tap, params, daemon);
      await daemon.stop();
      return { ...result, steering: { active: line.active === true, ...(typeof line.reason === 'string' ? { reason: line.reason } : {}) } };
    } catch (error) {
      (error as Error).message += `\n--- daemon log ---\n${tail(daemon.log(), 25)}`;
      throw error;
    }
  } finally {
    ns.delete();
  }
}

/** QEMU's own tap backend (vhost=off) on a multiqueue tap of the same txqueuelen; its namespace is gone at the end. */
export async function switchOnQemuTap(params: SwitchParams): Promise<SwitchRun> {
  requireAll();
  const ns = Netns.create(params.prefix ?? 'e2eqtap');
  try {
    addTap(ns, { ifname: 'qt0', hostIp: `${HOST}/24`, queues: QUEUES });
    ns.exec('ip', ['link', 'set', 'qt0', 'txqueuelen', String(TXQUEUELEN)]);
    return await runGuest(ns, { kind: 'tap', ifname: 'qt0', queues: QUEUES }, 'qt0', params);
  } finally {
    ns.delete();
  }
}

/** Two lines per phase for a test's output. */
export function describeSwitchRun(what: string, r: SwitchRun): string {
  const phase = (name: string, p: Phase): string =>
    `${name}: ${p.sent} sent, ${p.received} received, lost ${p.lost}, gaps ${p.gaps}, extra ${p.extra}, ` +
    `out of order ${p.outOfOrder.reduce((a, b) => a + b, 0)}, tap drops ${p.tapDrops} (${(p.sent / p.seconds).toFixed(0)}/s over ${p.seconds.toFixed(1)} s)`;
  const perChange = r.changes ? (r.sw.lost / r.changes).toFixed(2) : '?';
  const daemon = r.daemonChanges !== undefined ? ` (${r.daemonChanges} in the daemon)` : '';
  return `    ${what}: ${r.changes} changes${daemon}${r.failedChanges ? ` (${r.failedChanges} failed)` : ''}, lost ${r.sw.lost} (${perChange} per change)\n` +
    `      ${phase('baseline', r.base)}\n      ${phase('changing', r.sw)}\n      (${r.seconds.toFixed(1)} s)`;
}
