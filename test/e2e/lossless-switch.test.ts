// Queue-count changes lose nothing with a real guest (issue 12): QEMU (TCG) and
// Debian's virtio_net on `vhost-tap serve` with 4 queue pairs; the guest's
// `iperf3 -s` receives UDP from the host's namespace over many flows, each with
// its own sequence numbers (test/e2e/udp-flows.ts: iperf3's client protocol, with
// the end of the test held until nothing is left on the way), first without any
// change (the baseline: the rate the guest keeps up with, 0 lost), then while the
// guest runs `ethtool -L eth0 combined 1 / 2 / 4` dozens of times. With the
// steering program every datagram arrives exactly once. The same run with the
// daemon's --no-steering (tun's own flow hash) and with QEMU's own tap backend
// reports what they lose (not failed: that loss is what the program removes).
//
// What iperf3 counts, per flow: the datagrams it received, the highest sequence
// number, the gaps (net of late arrivals) and the arrivals out of order. Received
// = sent = highest with no gap means every sequence number arrived, unless a loss
// hides behind a duplicate that arrives after it; both leave a trace in the
// out-of-order count, which is reported (a flow moved to another queue can
// overtake its own last frames on the old one: the guest reads the rings in
// parallel).
// LOSSLESS_E2E_RATE=PPS and LOSSLESS_E2E_CHANGES=N override the rate and the number of changes.
import path from 'node:path';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { assertPrivateNetns } from '../helpers/system';
import { says, seconds, startDaemon, type Daemon } from './daemon';
import { Netns, addTap, ensureGuest, requireTools, startGuest, tail, type GuestNetdev, type RunningGuest } from './guest';
import type { FlowCount, SenderOptions } from './udp-flows';

assertPrivateNetns();

const QUEUES = 4;
const HOST = '10.0.2.1';
const GUEST = '10.0.2.2';
const FLOWS = 16;
/**
 * Datagrams per second over all flows: half of what the TCG guest's iperf3 was seen to
 * keep up with on a loaded 2-core machine (16000/s, 0 lost in the baseline), so that a
 * busy host does not make the baseline lose.
 */
const RATE = Number(process.env.LOSSLESS_E2E_RATE ?? 8000);
/** Queue-count changes: rounds of 4->1->2->4->2->1->4, every transition between 1, 2 and 4 pairs. */
const ROUND = [1, 2, 4, 2, 1, 4];
const CHANGES = Number(process.env.LOSSLESS_E2E_CHANGES ?? 30);
/** The guest's `ethtool -L eth0 combined N` in order (it starts on 2 pairs, one per vCPU). */
const COUNTS = Array.from({ length: CHANGES }, (_, k) => ROUND[k % ROUND.length]!);
const BASELINE_MS = 3_000;
/** Frames wait in the tap (per queue) rather than being dropped while the guest catches up. */
const TXQUEUELEN = 20_000;
const SENDER = path.join(__dirname, 'udp-flows.js');

/**
 * Guest: big socket buffers (bursts wait in them); then two iperf3 tests, each
 * announced with `GUEST: recv-NAME` once the server listens and followed by the
 * out-of-order count of each stream: `base` (nothing changes) and `sw` (after 1 s
 * of traffic, the changes, then `GUEST: switched n=OK fail=FAILED`).
 */
function guestCommands(): string {
  return [
    'for f in rmem_default rmem_max; do echo 16777216 > /proc/sys/net/core/$f; done',
    "R() { iperf3 -s -1 -J -i 0 > /tmp/$1 & P=$!; sleep 0.3; echo GUEST: recv-$1; }",
    "O() { wait $P; echo GUEST: ooo-$1 $(tr -d ' \\t\\n' < /tmp/$1 | grep -o 'out_of_order.:[0-9]*' | cut -d: -f2) end; }",
    // sleeps of 0 to 0.3 s: changes back to back, and changes after traffic settled on the new set
    `S() { n=0; f=0; for c in ${COUNTS.join(' ')}; do ethtool -L eth0 combined $c && n=$((n+1)) || f=$((f+1)); sleep 0.$(((n+f)%4)); done; echo GUEST: switched n=$n fail=$f; }`,
    'R base; O base; R sw; sleep 1; S; O sw',
  ].join('; ');
}

interface Phase {
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

interface RunResult {
  base: Phase;
  sw: Phase;
  changes: number;
  failedChanges: number;
  /**
   * queue-pairs-changed lines the daemon logged during the changes: more than the
   * guest's, as QEMU enables a growing set's rings pair by pair (1 -> 2 -> 3 -> 4).
   */
  daemonChanges?: number;
  /** The pairs in use at the end, as the daemon last logged them. */
  daemonActive?: number;
  steering?: { active: boolean; reason?: string };
  seconds: number;
}

function tapDropped(ns: Netns, tap: string): number {
  const [link] = JSON.parse(ns.exec('ip', ['-s', '-j', 'link', 'show', tap])) as Array<{ stats64?: { tx?: { dropped?: number } } }>;
  return link?.stats64?.tx?.dropped ?? 0;
}

/** One sender in the namespace for one iperf3 test: starts when the guest listens, stops when `until` resolves. */
async function sendPhase(ns: Netns, guest: RunningGuest, tap: string, name: string, until: () => Promise<void>): Promise<Phase> {
  await guest.waitForOutput(`GUEST: recv-${name}`, 60_000);
  const dropsBefore = tapDropped(ns, tap);
  const options: SenderOptions = { host: GUEST, flows: FLOWS, pps: RATE, len: 64, graceMs: 1500 };
  const child = ns.spawn(process.execPath, [SENDER, JSON.stringify(options)], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const lines: Array<{ event: string; flows?: FlowCount[]; seconds?: number; error?: string }> = [];
  let wake: () => void = () => {};
  child.stdout!.on('data', (d: string) => {
    out += d;
    let nl: number;
    while ((nl = out.indexOf('\n')) >= 0) {
      lines.push(JSON.parse(out.slice(0, nl)) as (typeof lines)[number]);
      out = out.slice(nl + 1);
      wake();
    }
  });
  const closed = new Promise<void>((resolve) => child.once('close', () => {
    wake();
    resolve();
  }));
  const next = async (event: string, timeoutMs: number): Promise<(typeof lines)[number]> => {
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
    const outOfOrder = ooo[1]!.trim().split(/\s+/).filter(Boolean).map(Number);
    return {
      flows, outOfOrder,
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

/** The guest on this backend: the baseline, then the changes; everything torn down by the caller's Netns. */
async function runGuest(ns: Netns, netdev: GuestNetdev, tap: string, daemon?: Daemon): Promise<RunResult> {
  const t0 = Date.now();
  const guest = startGuest({ netns: ns, netdev, guestIp: `${GUEST}/24`, commands: guestCommands(), timeoutMs: 120_000 });
  try {
    const base = await sendPhase(ns, guest, tap, 'base', () => new Promise((resolve) => setTimeout(resolve, BASELINE_MS)));
    const from = daemon?.mark() ?? 0;
    let switched: RegExpMatchArray | undefined;
    const sw = await sendPhase(ns, guest, tap, 'sw', async () => {
      switched = await guest.waitForOutput(/GUEST: switched n=(\d+) fail=(\d+)/, 60_000);
      await new Promise((resolve) => setTimeout(resolve, 500)); // traffic on the last set too
    });
    const exit = await guest.exited;
    assert.is(exit.rc, 0, `the guest's commands failed${says(exit.output)}`);
    return {
      base, sw, changes: Number(switched![1]), failedChanges: Number(switched![2]),
      ...(daemon ? {
        daemonChanges: daemon.events('queue-pairs-changed', from).length,
        daemonActive: Number(daemon.events('queue-pairs-changed', from).at(-1)?.active),
      } : {}),
      seconds: (Date.now() - t0) / 1000,
    };
  } catch (error) {
    await guest.kill();
    (error as Error).message += says(guest.output);
    throw error;
  }
}

async function onDaemon(steering: boolean): Promise<RunResult> {
  requireTools('qemu-system-x86_64', 'ip', 'setpriv');
  ensureGuest();
  const ns = Netns.create(steering ? 'e2esteer' : 'e2enosteer');
  try {
    const daemon = await startDaemon(ns, { tap: 'vtd0', queues: QUEUES, hostIp: `${HOST}/24`, extraArgs: steering ? [] : ['--no-steering'] });
    try {
      const line = await daemon.waitFor('steering');
      ns.exec('ip', ['link', 'set', 'vtd0', 'txqueuelen', String(TXQUEUELEN)]);
      const result = await runGuest(ns, { kind: 'vhost-user', socket: daemon.socket, queues: QUEUES }, daemon.tap, daemon);
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

async function onQemuTap(): Promise<RunResult> {
  requireTools('qemu-system-x86_64', 'ip', 'setpriv');
  ensureGuest();
  const ns = Netns.create('e2eqtap');
  try {
    addTap(ns, { ifname: 'qt0', hostIp: `${HOST}/24`, queues: QUEUES });
    ns.exec('ip', ['link', 'set', 'qt0', 'txqueuelen', String(TXQUEUELEN)]);
    return await runGuest(ns, { kind: 'tap', ifname: 'qt0', queues: QUEUES }, 'qt0');
  } finally {
    ns.delete();
  }
}

function describe(what: string, r: RunResult): string {
  const phase = (name: string, p: Phase): string =>
    `${name}: ${p.sent} sent, ${p.received} received, lost ${p.lost}, gaps ${p.gaps}, extra ${p.extra}, ` +
    `out of order ${p.outOfOrder.reduce((a, b) => a + b, 0)}, tap drops ${p.tapDrops} (${(p.sent / p.seconds).toFixed(0)}/s over ${p.seconds.toFixed(1)} s)`;
  const perChange = r.changes ? (r.sw.lost / r.changes).toFixed(2) : '?';
  const daemon = r.daemonChanges !== undefined ? ` (${r.daemonChanges} in the daemon)` : '';
  return `    ${what}: ${r.changes} changes${daemon}${r.failedChanges ? ` (${r.failedChanges} failed)` : ''}, lost ${r.sw.lost} (${perChange} per change)\n` +
    `      ${phase('baseline', r.base)}\n      ${phase('changing', r.sw)}\n      (${r.seconds.toFixed(1)} s)`;
}

/** Every flow: as many received as sent, the highest sequence number the last one sent, no gap. */
function assertWhole(p: Phase, what: string): void {
  const bad = p.flows.map((f, k) => ({ k, ...f })).filter((f) => f.received !== f.sent || f.highest !== f.sent || f.lost !== 0);
  assert.equal(bad, [], `${what}: flows that lost or repeated datagrams (sent, received, highest sequence number, gaps)`);
}

test(`vhost-tap serve with the steering program: ${CHANGES} queue-count changes (ethtool -L) under ${FLOWS} UDP flows, every datagram exactly once`, async () => {
  const t0 = Date.now();
  const r = await onDaemon(true);
  console.log(describe('vhost-tap serve, steering program', r));
  assert.ok(r.steering?.active, `the daemon logged the steering program active: ${JSON.stringify(r.steering)}`);
  assert.ok(r.base.sent > RATE * 2, `a real stream in the baseline (${r.base.sent} datagrams)`);
  assertWhole(r.base, 'baseline (no change): the guest keeps up with the rate');
  assert.is(r.failedChanges, 0, 'every ethtool -L succeeded');
  assert.is(r.changes, CHANGES);
  assert.ok(r.daemonChanges! >= CHANGES, `the daemon changed its queue pairs at every ethtool -L (${r.daemonChanges} changes logged)`);
  assert.is(r.daemonActive, COUNTS.at(-1), 'and uses the last count at the end');
  assert.is(r.sw.tapDrops, 0, 'no frame dropped at a full tap queue');
  assertWhole(r.sw, `${CHANGES} changes`);
  console.log(`    (${seconds(t0)})`);
});

test('the same without it (--no-steering) and on QEMU\'s own tap backend: what tun\'s flow hash loses, reported', async () => {
  const t0 = Date.now();
  const off = await onDaemon(false);
  console.log(describe('vhost-tap serve --no-steering', off));
  assert.not.ok(off.steering?.active, 'the daemon logged the steering program off');
  assert.ok(/--no-steering|turned off/.test(off.steering?.reason ?? ''), `the reason says it was turned off: ${off.steering?.reason}`);
  assert.is(off.failedChanges, 0, 'every ethtool -L succeeded');
  assert.ok(off.daemonChanges! >= CHANGES, `the daemon changed its queue pairs at every ethtool -L (${off.daemonChanges} changes logged)`);
  assertWhole(off.base, 'baseline (no change) with --no-steering');
  const qemu = await onQemuTap();
  console.log(describe('QEMU tap backend (tun\'s flow hash)', qemu));
  assertWhole(qemu.base, 'baseline (no change) on QEMU\'s tap backend');
  assert.is(qemu.failedChanges, 0, 'every ethtool -L succeeded');
  console.log(`    (${seconds(t0)})`);
});

test.run();
