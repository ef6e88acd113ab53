// Every QEMU virtio-net-pci property that changes the feature set or the rings,
// over `vhost-tap serve`: one real guest (QEMU/TCG, Debian's virtio_net) per
// variant, each property turned off (or set) alone, then a few combinations.
// One daemon serves the variants one after another (it takes the next frontend
// after a disconnect); a variant that needs other daemon flags (--mtu) gets a
// daemon of its own. In each variant:
//   - the guest's negotiated features (/sys/bus/virtio/devices/virtio0/features)
//     lack what the variant turns off, and so does the set the daemon was given;
//   - ring sizes and MTU are what the variant sets, and the tap's MTU follows;
//   - the tap's offloads (TUNSETOFFLOAD) are what those features let the guest receive;
//   - ping both ways, iperf3 both ways (short runs: the figures are for the table);
//   - with mq: `ethtool -L` down to 1 and up to 4, the tap's numdisabled following,
//     traffic after each;
//   - no request-failed or protocol-error in the daemon's log, and its fds,
//     threads, mappings and tap queues back to idle after the guest powers off.
// A variant that QEMU refuses to start, or that the guest's driver refuses with
// QEMU's own tap backend as well (it builds the same device), is reported as such;
// only what works with QEMU's tap backend and not with ours fails the test.
// DEVICE_OPTIONS=REGEX runs only the variants whose label matches (and the defaults).

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import * as F from '../../src/virtio/features';
import { featureName, resolveRequirements } from '../../src/virtio/features';
import { tapOffloadsForGuest } from '../../src/virtio/offloads';
import { parseEthtoolFeatures } from '../helpers/device';
import { assertPrivateNetns } from '../helpers/system';
import { assertReleased, gbps, hostToGuest, idleResources, says, seconds, serveOnce, startDaemon, type Daemon } from '../../harness/daemon';
import { Netns } from '../../harness/netns';
import { addTap, bootGuest, ensureGuest, parseIperf3, startGuest } from '../../harness/qemu-guest';
import { requireTools, tail } from '../../harness/tools';

assertPrivateNetns();

const QUEUES = 4;
const HOST = '10.0.2.1';
const GUEST = '10.0.2.2';
/** VIRTIO_NET_F_GSO: a legacy bit (virtio 1.x 5.1.3.2) QEMU still has a property for. */
const VIRTIO_NET_F_GSO = 6;
/** The host's iperf3 servers: the guest's run to the host, then its reverse run. */
const IPERF_PORTS = [5201, 5202];

interface Variant {
  /** For the table, where the properties are too long a name. */
  name?: string;
  /** The virtio-net-pci properties, over the harness's (netdev, mq=on, vectors=0). */
  props: Record<string, string | number>;
  /** Feature bits the guest must not have negotiated. */
  off: number[];
  /** Feature bits the guest must have negotiated (packed=on: VIRTIO_F_RING_PACKED, which QEMU would mask silently if we did not offer it). */
  on?: number[];
  /** Ring sizes the guest must see (ethtool -g): rx, tx. Default 256, 256. */
  rings?: [number, number];
  /** The guest's MTU, given to the daemon as --mtu as well. */
  mtu?: number;
}

const FEATURE_OF: Record<string, number> = {
  csum: F.VIRTIO_NET_F_CSUM, guest_csum: F.VIRTIO_NET_F_GUEST_CSUM, gso: VIRTIO_NET_F_GSO,
  guest_tso4: F.VIRTIO_NET_F_GUEST_TSO4, guest_tso6: F.VIRTIO_NET_F_GUEST_TSO6, guest_ecn: F.VIRTIO_NET_F_GUEST_ECN,
  guest_ufo: F.VIRTIO_NET_F_GUEST_UFO, host_tso4: F.VIRTIO_NET_F_HOST_TSO4, host_tso6: F.VIRTIO_NET_F_HOST_TSO6,
  host_ecn: F.VIRTIO_NET_F_HOST_ECN, host_ufo: F.VIRTIO_NET_F_HOST_UFO, mrg_rxbuf: F.VIRTIO_NET_F_MRG_RXBUF,
  status: F.VIRTIO_NET_F_STATUS, ctrl_vq: F.VIRTIO_NET_F_CTRL_VQ, ctrl_rx: F.VIRTIO_NET_F_CTRL_RX,
  ctrl_vlan: F.VIRTIO_NET_F_CTRL_VLAN, ctrl_mac_addr: F.VIRTIO_NET_F_CTRL_MAC_ADDR,
  ctrl_guest_offloads: F.VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, guest_announce: F.VIRTIO_NET_F_GUEST_ANNOUNCE,
  mq: F.VIRTIO_NET_F_MQ, event_idx: F.VIRTIO_RING_F_EVENT_IDX, indirect_desc: F.VIRTIO_RING_F_INDIRECT_DESC,
};

/** A variant that turns these feature properties off. */
function off(...names: string[]): Variant {
  return { props: Object.fromEntries(names.map((n) => [n, 'off'])), off: names.map((n) => FEATURE_OF[n]!) };
}

const OFFLOADS = ['csum', 'guest_csum', 'guest_tso4', 'guest_tso6', 'guest_ecn', 'guest_ufo', 'host_tso4', 'host_tso6', 'host_ecn', 'host_ufo'];
const NEEDS_CTRL_VQ = ['ctrl_rx', 'ctrl_vlan', 'ctrl_mac_addr', 'ctrl_guest_offloads', 'guest_announce', 'mq'];

const VARIANTS: Variant[] = [
  // QEMU's defaults (rx_queue_size=256, tx_queue_size=256 among them): the baseline the others are compared with.
  { props: {}, off: [], rings: [256, 256] },
  ...Object.keys(FEATURE_OF).map((name) => off(name)),
  { props: { rx_queue_size: 1024 }, off: [], rings: [1024, 256] },
  { props: { tx_queue_size: 1024 }, off: [], rings: [256, 1024] },
  { props: { rx_queue_size: 1024, tx_queue_size: 1024 }, off: [], rings: [1024, 1024] },
  { props: { host_mtu: 9000 }, off: [], mtu: 9000 },
  { props: { host_mtu: 9000, mrg_rxbuf: 'off' }, off: [F.VIRTIO_NET_F_MRG_RXBUF], mtu: 9000 },
  off('csum', 'guest_csum'),
  // GUEST_TSO4/6 without GUEST_CSUM and no mergeable buffers: the guest posts big buffers, the tap must still send small frames.
  off('guest_csum', 'mrg_rxbuf'),
  off('mrg_rxbuf', 'event_idx', 'indirect_desc'),
  { ...off(...OFFLOADS), name: 'every offload off (csum..host_ufo)' },
  { ...off('ctrl_vq', ...NEEDS_CTRL_VQ), name: 'ctrl_vq=off and all that needs it (ctrl_*, guest_announce, mq)' },
  // Packed virtqueues (virtio 1.2 2.8) with what changes how their chains and events look.
  packed({ props: {}, off: [] }),
  packed(off('mrg_rxbuf')),
  packed(off('event_idx')),
  packed(off('indirect_desc')),
  packed(off('mrg_rxbuf', 'event_idx', 'indirect_desc')),
  packed({ props: { rx_queue_size: 1024, tx_queue_size: 1024 }, off: [], rings: [1024, 1024] }),
];

/** The same variant with packed=on: the guest must have negotiated VIRTIO_F_RING_PACKED. */
function packed(v: Variant): Variant {
  return { ...v, props: { packed: 'on', ...v.props }, on: [...(v.on ?? []), F.VIRTIO_F_RING_PACKED] };
}

function label(v: Variant): string {
  if (v.name) return v.name;
  const props = Object.entries(v.props).map(([k, value]) => `${k}=${value}`).join(',');
  return props || '(defaults)';
}

function hasMq(v: Variant): boolean {
  return v.props.mq !== 'off' && v.props.ctrl_vq !== 'off';
}

/** The guest's features as /sys/bus/virtio/devices/virtioN/features prints them: one 0/1 per bit, bit 0 first. */
function parseFeatureBits(bits: string): bigint {
  return [...bits].reduce((mask, c, i) => (c === '1' ? mask | (1n << BigInt(i)) : mask), 0n);
}

function names(mask: bigint): string {
  const list: string[] = [];
  for (let bit = 0; bit < 64; bit++) {
    if (mask & (1n << BigInt(bit))) list.push(bit === VIRTIO_NET_F_GSO ? 'GSO' : featureName(bit).replace(/ \(bit \d+\)$/, ''));
  }
  return list.join(',') || '-';
}

/** The ICMP payload that fills an MTU exactly (20 bytes of IP header, 8 of ICMP): a jumbo ping, unfragmented. */
function icmpFilling(mtu: number): number {
  return mtu - 28;
}

/**
 * Guest commands: report features, MTU and rings; ping the host; iperf3 to it
 * and from it; then (with mq) combined 1 and 4, each followed by a ping and a
 * served iperf3 test the host runs once it has checked the tap.
 */
function guestCommands(v: Variant): string {
  const size = v.mtu ? ` -s ${icmpFilling(v.mtu)}` : '';
  const report = 'echo GUEST: features=$(cat /sys/bus/virtio/devices/virtio0/features) mtu=$(cat /sys/class/net/eth0/mtu) ' +
    "rings=$(ethtool -g eth0 | awk '/^(RX|TX):/{print $2}' | head -2 | tr '\\n' /)";
  const ping = `ping -c 1 -W 2${size} ${HOST} > /dev/null && echo GUEST: ping ok`;
  // Short runs: the figures are for the table, the boot is what the time goes to.
  // Two host servers: one just done with a test may still refuse the next ("the server is busy").
  const iperf = `iperf3 -c ${HOST} -n 16M | tail -4; iperf3 -c ${HOST} -p ${IPERF_PORTS[1]} -n 16M -R | tail -4`;
  const steps = hasMq(v)
    ? `st() { ethtool -L eth0 combined $1 && ping -c 1 -W 2 ${HOST} > /dev/null && echo GUEST: ping after $1 ok; ${serveOnce('MARK-$1')}; }; st 1; st 4`
    : serveOnce('MARK-1');
  return `${report}; ${ping}; ${iperf}; ${steps}`;
}

/** The guest's report line, whole (the serial console delivers it in pieces). */
const REPORT = /GUEST: features=[01]* mtu=\d* rings=[\d/]*\n/;

type Outcome = 'ok' | 'FAILED' | 'refused by QEMU' | 'fails with QEMU\'s tap backend too';

interface Row {
  variant: string;
  outcome: Outcome;
  /** What went wrong, or the no-op note. */
  note: string;
  /** Negotiated features this variant has off that the defaults had on. */
  turnedOff: string;
  up?: number;
  down?: number;
  seconds: number;
}

/** The QEMU error line (`qemu-system-x86_64: -device ...: reason`) when QEMU refused the command line. */
function qemuRefusal(output: string): string | undefined {
  return /^qemu-system-x86_64: (?!.*warning:)(.*)$/m.exec(output)?.[1];
}

/** The same variant on QEMU's own tap backend, in a namespace of its own: does the guest ping? */
async function referenceRun(v: Variant): Promise<{ ok: boolean; detail: string }> {
  const ns = Netns.create('e2eoptref');
  try {
    addTap(ns, { ifname: 'qt0', hostIp: `${HOST}/24`, queues: QUEUES });
    const { output } = await bootGuest({
      netns: ns, netdev: { kind: 'tap', ifname: 'qt0', queues: QUEUES }, guestIp: `${GUEST}/24`,
      commands: `ping -c 2 -W 2 ${HOST}`, device: v.props, timeoutMs: 60_000,
    });
    const ok = /2 packets received/.test(output);
    const driver = /virtio_net \S+: (.*)$/m.exec(output)?.[1];
    return { ok, detail: ok ? 'pings' : driver ?? tail(output, 3).replace(/\n/g, ' | ') };
  } catch (error) {
    return { ok: false, detail: (error as Error).message.split('\n')[0]! };
  } finally {
    ns.delete();
  }
}

/**
 * The tap's offloads (TUNSETOFFLOAD, read with ethtool -k) while the guest runs:
 * what the features the daemon was given allow the guest to receive, and no more
 * (no partial checksums without GUEST_CSUM, no TSO without it either).
 */
function checkTapOffloads({ ns, daemon }: Served, from: number, check: (ok: boolean, what: string) => void): void {
  const line = daemon.events('features', from).at(-1);
  if (!line) return check(false, 'no "features" line in the daemon\'s log for this guest');
  const usable = resolveRequirements(BigInt(String(line.features)), 1n << BigInt(F.VIRTIO_NET_F_CTRL_VQ)).usable;
  const want = tapOffloadsForGuest(usable);
  const k = parseEthtoolFeatures(ns.exec('ethtool', ['-k', daemon.tap]));
  const onOff = (on: boolean | undefined): string => (on ? 'on' : 'off');
  const got = [k['tx-checksumming'], k['tx-tcp-segmentation'], k['tx-tcp6-segmentation']];
  const expected = [onOff(want.csum), onOff(want.tso4), onOff(want.tso6)];
  check(got.join() === expected.join(), `tap offloads (csum, tso4, tso6) ${got.join('/')}, expected ${expected.join('/')} for features ${String(line.features)}`);
}

interface Served {
  ns: Netns;
  daemon: Daemon;
  idle: { threads: number; fds: number };
}

/** A guest kernel stall: a TCG vCPU that did not run for seconds (the host is busy), whatever the backend does. */
const GUEST_STALL = /soft lockup - CPU#\d+ stuck|rcu: INFO: rcu_\w+ self-detected stall/;

/**
 * Runs one variant on the daemon; every check that fails is collected, the guest
 * is always gone at the end. A first boot whose guest kernel stalled is run again.
 */
async function runVariant(v: Variant, served: Served, baseline: bigint | undefined, attempt = 1): Promise<Row & { features?: bigint }> {
  const { ns, daemon, idle } = served;
  const t0 = Date.now();
  const row: Row & { features?: bigint } = { variant: label(v), outcome: 'ok', note: '', turnedOff: '', seconds: 0 };
  const problems: string[] = [];
  const check = (ok: boolean, what: string): void => {
    if (!ok) problems.push(what);
  };
  const from = daemon.mark();
  const guest = startGuest({
    netns: ns, netdev: { kind: 'vhost-user', socket: daemon.socket, queues: QUEUES }, guestIp: `${GUEST}/24`,
    commands: guestCommands(v), device: v.props, timeoutMs: 120_000,
  });
  try {
    try {
      await guest.waitForOutput(REPORT, 60_000);
    } catch (error) {
      const exit = await guest.kill();
      const refusal = qemuRefusal(exit.output);
      if (exit.exitCode !== 0 && refusal) return { ...row, outcome: 'refused by QEMU', note: refusal, seconds: (Date.now() - t0) / 1000 };
      throw error;
    }
    const report = /GUEST: features=([01]+) mtu=(\d+) rings=(\d+)\/(\d+)\/\n/.exec(guest.output);
    // No eth0 (the guest's driver refused the device): nothing else to try.
    if (!report) throw new Error(`no features/mtu/rings report: ${REPORT.exec(guest.output)?.[0].trim() ?? '?'}`);
    const features = parseFeatureBits(report[1]!);
    row.features = features;
    const offMask = v.off.reduce((m, bit) => m | (1n << BigInt(bit)), 0n);
    check((features & offMask) === 0n, `the guest negotiated ${names(features & offMask)}, which the variant turns off`);
    const onMask = (v.on ?? []).reduce((m, bit) => m | (1n << BigInt(bit)), 0n);
    check((features & onMask) === onMask, `the guest did not negotiate ${names(onMask & ~features)}, which the variant turns on`);
    if (baseline !== undefined) {
      row.turnedOff = names(baseline & ~features);
      const noop = offMask & ~baseline;
      if (noop) row.note = `${names(noop)} off by default over vhost-tap: no change`;
    }
    const [rx, tx] = v.rings ?? [256, 256];
    check(report[3] === String(rx) && report[4] === String(tx), `rings ${report[3]}/${report[4]}, expected ${rx}/${tx}`);
    const mtu = v.mtu ?? 1500;
    check(report[2] === String(mtu), `guest MTU ${report[2]}, expected ${mtu}`);
    const tapMtu = (JSON.parse(ns.exec('ip', ['-j', 'link', 'show', daemon.tap])) as { mtu: number }[])[0]!.mtu;
    check(tapMtu === mtu, `the tap's MTU is ${tapMtu}, expected ${mtu} (it follows the daemon's --mtu)`);

    for (const n of hasMq(v) ? [1, 4] : [1]) {
      await guest.waitForOutput(`GUEST: MARK-${n}`, 60_000);
      if (n === 1) checkTapOffloads(served, from, check);
      const tap = daemon.tapState();
      check(tap.numQueues === n && tap.numDisabled === QUEUES - n, `after ${hasMq(v) ? `combined ${n}` : 'boot'}: tap ${tap.numQueues} attached, ${tap.numDisabled} detached, expected ${n}, ${QUEUES - n}`);
      const ping = await ns.run('ping', ['-c', '1', '-W', '2', ...(v.mtu ? ['-M', 'do', '-s', String(icmpFilling(v.mtu))] : []), GUEST], { timeoutMs: 15_000 });
      check(ping.code === 0, `host -> guest ping failed at step ${n}: ${ping.stdout.trim().split('\n').slice(-2).join(' | ')}`);
      const reached = await hostToGuest(ns, guest, GUEST, ['-n', '4M'], `step ${n}`).catch((error: Error) => check(false, error.message.split('\n')[0]!));
      if (reached === undefined) break; // the guest still waits for this connection: it is killed below
    }
    // A guest whose step failed waits for the host forever: no need to wait for it.
    const { output, rc } = problems.length ? await guest.kill() : await guest.exited;
    check(rc === 0, `guest commands ended with rc=${rc}`);
    check(/GUEST: ping ok/.test(output), 'guest -> host ping failed');
    if (hasMq(v)) check(/GUEST: ping after 1 ok/.test(output) && /GUEST: ping after 4 ok/.test(output), 'guest -> host ping failed after ethtool -L');
    const runs = parseIperf3(output);
    // The receiver's figure, or the sender's where iperf3 printed a 0-byte receiver line (a run shorter than its first interval).
    row.up = runs[0]?.receiverGbps || runs[0]?.senderGbps;
    row.down = runs[1]?.receiverGbps || runs[1]?.senderGbps;
    check(runs.length === 2 && row.up! > 0 && row.down! > 0, `iperf3 guest -> host and host -> guest (-R): ${runs.length} runs`);

    await daemon.waitFor('disconnected', { from, timeoutMs: 10_000 });
    const failed = [...daemon.events('request-failed', from), ...daemon.events('protocol-error', from), ...daemon.events('queue-error', from)];
    check(failed.length === 0, `the daemon logged ${failed.map((l) => JSON.stringify(l)).join(', ')}`);
    const negotiated = daemon.events('features', from).at(-1);
    const given = negotiated ? BigInt(String(negotiated.features)) : undefined;
    check(given !== undefined && (given & offMask) === 0n, `the daemon was given ${String(negotiated?.features)}, with bits the variant turns off`);
    // One warning where QEMU passed on features whose requirement it did not (csum=off: HOST_TSO4 without CSUM).
    const inconsistent = given !== undefined && resolveRequirements(given, 1n << BigInt(F.VIRTIO_NET_F_CTRL_VQ)).unmet.length > 0;
    const warnings = daemon.events('features-inactive', from).length;
    check(warnings === (inconsistent ? 1 : 0), `${warnings} features-inactive warnings, expected ${inconsistent ? 1 : 0}`);
    if (inconsistent) row.note = [row.note, 'warned: offloads without their base stay off'].filter(Boolean).join('; ');
    await assertReleased(daemon, idle, row.variant).catch((error: Error) => check(false, error.message));
  } catch (error) {
    check(false, (error as Error).message.split('\n')[0]!);
  } finally {
    await guest.kill().catch(() => undefined); // a timeout was reported above
  }
  row.seconds = (Date.now() - t0) / 1000;
  if (problems.length === 0) return row;
  const stall = GUEST_STALL.exec(guest.output);
  if (stall && attempt === 1) {
    await assertReleased(daemon, idle, `${row.variant} (after a stalled guest)`).catch(() => undefined);
    const again = await runVariant(v, served, baseline, 2);
    return { ...again, note: [`run twice: the first guest kernel stalled ("${stall[0]}")`, again.note].filter(Boolean).join('; ') };
  }
  // Ours to fix only if QEMU's own tap backend runs this guest.
  const reference = await referenceRun(v);
  row.outcome = reference.ok ? 'FAILED' : 'fails with QEMU\'s tap backend too';
  row.note = reference.ok ? `${problems.join('; ')}${says(guest.output)}` : `${reference.detail} (here: ${problems[0]})`;
  if (!reference.ok) await assertReleased(daemon, idle, `${row.variant} (after a failed guest)`).catch(() => undefined);
  return row;
}

async function withServed<T>(mtu: number | undefined, body: (served: Served) => Promise<T>): Promise<T> {
  const ns = Netns.create('e2eopt');
  try {
    const daemon = await startDaemon(ns, { tap: 'vtd0', queues: QUEUES, hostIp: `${HOST}/24`, extraArgs: mtu ? ['--mtu', String(mtu)] : [] });
    for (const port of IPERF_PORTS) ns.spawn('iperf3', ['-s', '-p', String(port)]);
    const idle = await idleResources(daemon);
    const result = await body({ ns, daemon, idle });
    assert.ok(daemon.alive(), 'the daemon is still running after its variants');
    await daemon.stop();
    return result;
  } finally {
    ns.delete();
  }
}

function printTable(rows: Row[]): void {
  const cells = rows.map((r) => [r.variant, r.outcome, r.turnedOff, r.up === undefined ? '-' : r.up.toFixed(2), r.down === undefined ? '-' : r.down.toFixed(2),
    r.seconds.toFixed(0), r.outcome === 'FAILED' ? r.note.split('\n')[0]! : r.note]);
  const head = ['variant', 'result', 'negotiated off vs defaults', 'guest->host Gbit/s', 'host->guest Gbit/s', 's', 'note'];
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]): string => `    | ${c.map((x, i) => x.padEnd(widths[i]!)).join(' | ')} |`;
  console.log([line(head), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n'));
}

test('device options: every virtio-net-pci property that changes the features or the rings, one guest each, over one daemon', async () => {
  requireTools('qemu-system-x86_64', 'iperf3', 'ip', 'ping', 'ethtool', 'setpriv');
  ensureGuest();
  const t0 = Date.now();
  const rows: Row[] = [];
  let baseline: bigint | undefined;
  const byMtu = new Map<number | undefined, Variant[]>();
  const only = process.env.DEVICE_OPTIONS ? new RegExp(process.env.DEVICE_OPTIONS) : undefined;
  const chosen = VARIANTS.filter((v) => !only || Object.keys(v.props).length === 0 || only.test(label(v)));
  for (const v of chosen) byMtu.set(v.mtu, [...(byMtu.get(v.mtu) ?? []), v]);
  for (const [mtu, variants] of byMtu) {
    await withServed(mtu, async (served) => {
      for (const v of variants) {
        const row = await runVariant(v, served, baseline);
        if (Object.keys(v.props).length === 0) baseline = row.features;
        rows.push(row);
        console.log(`    ${row.variant}: ${row.outcome}, ${gbps(row.up)} up, ${gbps(row.down)} down (${row.seconds.toFixed(0)} s)`);
      }
    });
  }
  printTable(rows);
  console.log(`    (${rows.length} variants in ${seconds(t0)})`);
  const failed = rows.filter((r) => r.outcome === 'FAILED');
  assert.is(failed.length, 0, failed.map((r) => `${r.variant}: ${r.note}`).join('\n\n'));
  assert.is(rows.find((r) => r.variant === '(defaults)')?.outcome, 'ok', 'the defaults run');
  assert.is(rows.find((r) => r.variant === 'csum=off,guest_csum=off')?.outcome, 'ok', 'the csum=off,guest_csum=off guest of issue 10 has a network');
});

test.run();
