// The bench's reporting (bench/lib/report/) is what the closing notes and the
// README quote: targets must be computed from the right rows, a missing or failed
// row must never count as met, and the chart must be well-formed XML.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import {
  evaluateTargets, finishRow, renderMarkdown, renderSvg, renderTable, summarizeRtts,
  type GuestResult, type IdleResult, type LatencyResult, type MemoryResult, type MigrationResult, type MigrationRun, type Report, type Row,
  type SwitchLossResult,
} from '../bench/lib/report';
import { replaceBlock } from '../bench/readme';

function row(backend: Row['backend'], dir: Row['dir'], frame: Row['frame'], queues: number, mpps: number, frameBytes = frame === 'gso' ? 65536 : Number(frame)): Row {
  return finishRow({ backend, dir, frame, queues, packets: mpps * 2e6, bytes: mpps * 2e6 * frameBytes, seconds: 2, cpuSeconds: 1.5 });
}

const latency: LatencyResult = { raw: { count: 100, lost: 0, minUs: 5, p50Us: 20, p90Us: 25, p99Us: 40, maxUs: 90 }, embedded: { count: 100, lost: 0, minUs: 9, p50Us: 31, p90Us: 40, p99Us: 70, maxUs: 200 }, errors: [] };
const idle: IdleResult = { seconds: 2, cpuSeconds: 0 };
const memory: MemoryResult = { queuePairs: 8, ringSize: 1024, rssMb: 60, guestMb: 1, netMb: 59 };
const guest: GuestResult = { errors: [], skipped: 'not asked for' };

function target(rows: Row[], name: string): ReturnType<typeof evaluateTargets>[number] {
  const t = evaluateTargets(rows, latency, idle, memory).find((x) => x.name === name);
  assert.ok(t, `no target named ${name}`);
  return t!;
}

test('finishRow derives Mpps, Gbit/s and CPU per million packets from the counts', () => {
  const r = finishRow({ backend: 'raw', dir: 'g2h', frame: 64, queues: 1, packets: 3e6, bytes: 3e6 * 64, seconds: 2, cpuSeconds: 1.8 });
  assert.is(r.mpps, 1.5);
  assert.ok(Math.abs(r.gbps! - 0.768) < 1e-9);
  assert.ok(Math.abs(r.cpuSecondsPerMpkt! - 0.6) < 1e-9);
  const broken = finishRow({ backend: 'raw', dir: 'g2h', frame: 64, queues: 1, seconds: 0 });
  assert.ok(broken.error, 'a row with no counts carries an error instead of a rate');
});

test('targets are ratios of rows of the same run, and say met only when the ratio clears the bar', () => {
  const rows = [row('testpmd', 'g2h', 64, 1, 1.0), row('daemon', 'g2h', 64, 1, 1.3), row('raw', 'g2h', 64, 1, 1.5), row('embedded', 'g2h', 64, 1, 1.2)];
  const vsTestpmd = target(rows, 'guest->host 64 B 1q: daemon vs testpmd, Mpps');
  assert.ok(Math.abs(vsTestpmd.measured! - 1.3) < 1e-9);
  assert.is(vsTestpmd.met, true);
  const vsRaw = target(rows, 'guest->host 64 B 1q: embedded vs raw write() loop, Mpps');
  assert.ok(Math.abs(vsRaw.measured! - 0.8) < 1e-9);
  assert.is(vsRaw.met, false);
  const latencyTarget = evaluateTargets(rows, latency, idle, memory).find((t) => t.unit === 'us')!;
  assert.is(latencyTarget.measured, 11);
  assert.is(latencyTarget.met, true);
});

test('a failed or missing reference row leaves a target unmeasured, never met', () => {
  const failed: Row = { backend: 'testpmd', dir: 'g2h', frame: 1500, queues: 1, error: 'dpdk-testpmd is missing' };
  const rows = [failed, row('daemon', 'g2h', 1500, 1, 2.0)];
  const t = target(rows, 'guest->host 1500 B 1q: daemon vs testpmd, Mpps');
  assert.is(t.met, undefined);
  assert.match(t.detail, 'dpdk-testpmd is missing');
  const gso = target(rows, 'guest->host 64 KB GSO 1q: embedded vs testpmd 1500 B, Gbit/s');
  assert.is(gso.met, undefined);
  assert.match(gso.detail, 'not run');
});

test('the table and the SVG chart render a run with failures, and the SVG is balanced XML', () => {
  const rows = [row('raw', 'g2h', 64, 1, 1.5), row('embedded', 'g2h', 'gso', 1, 0.1), { backend: 'daemon', dir: 'h2g', frame: 64, queues: 1, error: 'the backend <died> & left' } as Row];
  const report: Report = {
    machine: { hostname: 'test', cpus: 2, cpuModel: 'x', kernel: '6.18' }, startedAt: '2026-12-01T00:00:00.000Z', elapsedSeconds: 1, config: {},
    rows, latency, idle, memory, guest, targets: evaluateTargets(rows, latency, idle, memory), notes: ['a note'],
  };
  const table = renderTable(report);
  assert.match(table, 'FAILED');
  assert.match(table, 'raw write() loop');
  const svg = renderSvg(report);
  assert.ok(svg.trimStart().startsWith('<svg') || svg.trimStart().startsWith('<?xml'), 'an SVG document');
  assert.not.match(svg, '<died>', 'error text is escaped');
  // Every element opened is closed, in order.
  const stack: string[] = [];
  for (const m of svg.matchAll(/<(\/?)([a-zA-Z][\w:-]*)[^>]*?(\/?)>/g)) {
    if (m[3] === '/') continue;
    if (m[1] === '/') assert.is(stack.pop(), m[2], `</${m[2]}> closes what was opened`);
    else stack.push(m[2]!);
  }
  assert.is(stack.length, 0, 'no element left open');
});

test('the README block gives the machine with its system call cost, the table, and each target but the informational ones', () => {
  const rows = [row('testpmd', 'g2h', 64, 1, 1.0), row('daemon', 'g2h', 64, 1, 1.1), row('raw', 'g2h', 64, 1, 1.5), row('embedded', 'g2h', 64, 1, 1.2)];
  const targets = evaluateTargets(rows, latency, idle, memory);
  const report: Report = {
    machine: { cpus: 2, cpuModel: 'Some CPU', kernel: '6.18', syscallNs: 950, meltdown: 'Mitigation: PTI' }, startedAt: '2026-12-01T10:28:43.643Z',
    elapsedSeconds: 300, config: { repeat: 2, seconds: 3 }, rows, latency, idle, memory, guest, targets, notes: ['not in the README'],
  };
  const md = renderMarkdown(report);
  assert.match(md, 'Taken 2026-12-01 10:28 UTC on 2 x Some CPU, Linux 6.18; a system call costs 950 ns here (Mitigation: PTI); 300 s, best of 2 windows of 3 s per case.');
  assert.match(md, 'g->h 64 B 1q');
  assert.not.match(md, 'not in the README');
  assert.not.match(md, 'targets (ratios', 'the terminal\'s target list is replaced by the table');
  assert.match(md, '| guest->host 64 B 1q: daemon vs testpmd, Mpps | >= 1.25x | 1.10x | NOT met |');
  assert.match(md, '| guest->host 64 B 1q: embedded vs raw write() loop, Mpps | >= 1.0x | 0.80x | NOT met |');
  assert.not.match(md, 'daemon vs raw write() loop', 'informational rows are not targets');
  const counted = targets.filter((t) => !t.informational);
  assert.match(md, `: ${counted.filter((t) => t.met === true).length} of ${counted.length} met.`);
  assert.is((md.match(/```/g) ?? []).length, 2, 'one code block');
});

test('summarizeRtts takes nearest-rank percentiles of microseconds and keeps the lost count; the frontend ping-pongs are printed', () => {
  const rtts = Array.from({ length: 101 }, (_, i) => 100 - i); // 100 .. 0, unsorted
  const r = summarizeRtts(rtts, 3);
  assert.equal(r, { count: 101, lost: 3, minUs: 0, p50Us: 50, p90Us: 90, p99Us: 99, maxUs: 100 });
  assert.equal(summarizeRtts([], 5), { count: 0, lost: 5, minUs: 0, p50Us: 0, p90Us: 0, p99Us: 0, maxUs: 0 });
  const report: Report = {
    machine: {}, startedAt: '2026-12-01T00:00:00.000Z', elapsedSeconds: 1, config: {}, rows: [], idle, memory, guest, targets: [], notes: [],
    latency: { ...latency, testpmd: r, daemon: summarizeRtts([40, 50], 0), daemonBusyPoll: summarizeRtts([20], 0), daemonBusyPollUs: 2000 },
  };
  const table = renderTable(report);
  assert.match(table, /testpmd \(vhost->tap\) p50 +50\.0 us {2}p99 +99\.0 us/);
  assert.match(table, /vhost-tap daemon +p50 +50\.0 us/);
  assert.match(table, /daemon, polling +p50 +20\.0 us/);
  assert.match(table, '--busy-poll-us 2000');
});

test('the live-migration section: each backend\'s QEMU figures and Mbit/s before, during, after, marked TCG and informational, in the table and the README block', () => {
  const window = (g2hMbps: number, h2gMbps: number) => ({ g2hMbps, h2gMbps, seconds: 3 });
  const run = (totalMs: number, downtimeMs: number, sentMiB: number, g2h: number[], h2g: number[]): MigrationRun => ({
    totalMs, downtimeMs, setupMs: 220, sentMiB, dirtySyncs: 4,
    before: window(g2h[0]!, h2g[0]!), during: window(g2h[1]!, h2g[1]!), after: window(g2h[2]!, h2g[2]!),
  });
  const migration: MigrationResult = {
    accel: 'tcg', vcpus: 1, queues: 2, windowMs: 3000, elapsedSeconds: 81, errors: [],
    vhostTap: run(4259, 10, 100.4, [1254, 812.6, 1190], [1310, 7.25, 1275]),
    qemuTap: run(2871, 31, 91.6, [980, 640, 1002], [1450, 1120, 1399]),
  };
  const rows = [row('testpmd', 'g2h', 64, 1, 1.0), row('daemon', 'g2h', 64, 1, 1.3)];
  const targets = evaluateTargets(rows, latency, idle, memory);
  const report: Report = {
    machine: { cpus: 2, cpuModel: 'x' }, startedAt: '2026-12-01T00:00:00.000Z', elapsedSeconds: 1, config: {}, rows, latency, idle, memory, guest, migration, targets, notes: [],
  };
  for (const text of [renderTable(report), renderMarkdown(report)]) {
    assert.match(text, /live migration a -> b, iperf3 both ways \(1 vCPU, 2 pairs; QEMU TCG, no KVM: informational, orientation only, no target\):/);
    assert.match(text, /^ +total +downtime +setup +sent +guest->host Mbit\/s +host->guest Mbit\/s$/m);
    assert.match(text, /^ +before +during +after +before +during +after$/m);
    // total, downtime, setup, MiB sent; then guest->host before/during/after, host->guest before/during/after
    assert.match(text, /^ {2}vhost-tap daemon +4259 ms +10 ms +220 ms +100 MiB +1254 +813 +1190 +1310 +7\.3 +1275$/m);
    assert.match(text, /^ {2}QEMU tap vhost=off +2871 ms +31 ms +220 ms +92 MiB +980 +640 +1002 +1450 +1120 +1399$/m);
    assert.match(text, '3 s before');
    assert.match(text, 'the section took 81 s');
  }
  // The columns line up: each figure ends where its heading does.
  const lines = renderTable(report).split('\n');
  const head = lines.find((l) => /^ +before/.test(l))!;
  const daemon = lines.find((l) => l.startsWith('  vhost-tap daemon'))!;
  const ends = (l: string): number[] => [...l.matchAll(/\S+/g)].map((m) => m.index! + m[0].length);
  assert.equal(ends(head), ends(daemon).slice(-6), 'the six rates end under their headings');
  assert.equal(evaluateTargets(rows, latency, idle, memory), targets, 'no target of its own');
  assert.match(renderMarkdown(report), `: ${targets.filter((t) => !t.informational && t.met).length} of ${targets.filter((t) => !t.informational).length} met.`);

  const failed = renderTable({ ...report, migration: { accel: 'tcg', errors: ['QEMU tap: the destination QEMU exited mid-migration\n--- QEMU #2 output tail ---'], vhostTap: migration.vhostTap } });
  assert.match(failed, /^ {2}QEMU tap vhost=off +n\/a$/m);
  assert.match(failed, /^ {2}FAILED: QEMU tap: the destination QEMU exited mid-migration$/m);
  assert.not.match(failed, 'output tail', 'only the first line of an error');
  assert.match(renderTable({ ...report, migration: { accel: 'tcg', errors: [], skipped: 'time budget: 500 s used of 540' } }), 'live migration (QEMU, iperf3): skipped: time budget: 500 s used of 540');
  assert.match(renderTable({ ...report, migration: { accel: 'tcg', errors: [] } }), 'live migration (QEMU, iperf3): not run');
  // A saved report from before the section existed renders as it did.
  assert.not.match(renderTable({ ...report, migration: undefined }), 'live migration');
});

test('split vs packed rows: a section of their own with packed / split per path, never a column of the main table, a target or a bar', () => {
  const split = [
    row('raw', 'g2h', 64, 1, 0.6), row('embedded', 'g2h', 64, 1, 2.0), row('testpmd', 'g2h', 64, 1, 0.5), row('daemon', 'g2h', 64, 1, 1.6),
    row('embedded', 'h2g', 1500, 1, 0.8), row('daemon', 'h2g', 1500, 1, 0.4),
  ];
  const packed = [
    // Faster than split on purpose: a packed row that leaked into a target or a ratio column would show.
    row('embedded-packed', 'g2h', 64, 1, 3.0), row('daemon-packed', 'g2h', 64, 1, 1.2),
    row('embedded-packed', 'h2g', 1500, 1, 0.6),
    { backend: 'daemon-packed', dir: 'h2g', frame: 1500, queues: 1, error: 'virtio_user with packed_vq=1 did not negotiate VIRTIO_F_RING_PACKED (features 0x110008000)\n | at stack' } as Row,
  ];
  const rows = [...split, ...packed];
  // Targets come from the split rows only.
  assert.equal(evaluateTargets(rows, latency, idle, memory), evaluateTargets(split, latency, idle, memory), 'the packed rows change no target');
  const report: Report = {
    machine: { cpus: 2 }, startedAt: '2026-12-01T00:00:00.000Z', elapsedSeconds: 1, config: {}, rows, latency, idle, memory, guest,
    targets: evaluateTargets(rows, latency, idle, memory), notes: [],
  };
  const table = renderTable(report);
  const lines = table.split('\n');
  // The main table: split figures and ratios (2.0 / 0.6 = 3.33x e/raw; 1.6 / 0.5 = 3.20x d/tp), no packed figure.
  const main = lines.find((l) => l.startsWith('g->h 64 B 1q'))!;
  assert.match(main, /^g->h 64 B 1q +0\.600 .* 2\.000 .* 0\.500 .* 1\.600 .* 3\.33x +3\.20x +2\.67x$/);
  assert.not.match(main, '3.000');
  const head = lines.findIndex((l) => l.startsWith('split vs packed virtqueues'));
  assert.ok(head > lines.indexOf(main), 'the section follows the main table');
  const section = lines.slice(head);
  assert.match(section.join('\n'), /^ +vhost-tap embedded +vhost-tap daemon$/m);
  // split Mpps Gbit/s s/Mpkt, packed Mpps Gbit/s s/Mpkt, packed / split: embedded then daemon.
  const cpu = (mpps: number): string => (1.5 / (mpps * 2)).toFixed(2); // row(): 1.5 CPU s over mpps * 2e6 frames
  const g2h = section.find((l) => l.startsWith('g->h 64 B 1q'))!;
  assert.match(g2h, new RegExp(`^g->h 64 B 1q +2\\.000 +1\\.02 +${cpu(2.0)} +3\\.000 +1\\.54 +${cpu(3.0)} +1\\.50x +1\\.600 +0\\.82 +${cpu(1.6)} +1\\.200 +0\\.61 +${cpu(1.2)} +0\\.75x$`));
  const h2g = section.find((l) => l.startsWith('h->g 1500 B 1q'))!;
  assert.match(h2g, /^h->g 1500 B 1q +0\.800 .* 0\.600 .* 0\.75x +0\.400 +\S+ +\S+ +FAILED +-$/);
  assert.match(section.join('\n'), /^ {2}FAILED vhost-tap daemon packed host->guest 1500 B 1q: virtio_user with packed_vq=1 did not negotiate\n {4}VIRTIO_F_RING_PACKED \(features 0x110008000\)$/m);
  assert.not.match(section.join('\n'), 'at stack');
  // The README block carries the section; the chart draws split bars only.
  assert.match(renderMarkdown(report), 'split vs packed virtqueues');
  const svg = renderSvg(report);
  assert.not.match(svg, 'packed', 'no packed bar or legend in the chart');
  assert.match(svg, 'vhost-tap embedded guest-&gt;host 64 B 1q: 2.000 Mpps', 'the split bars are drawn');
  // A run of the packed rows alone (--only packed) prints the section, not "no cases run".
  const alone = renderTable({ ...report, rows: packed });
  assert.match(alone, 'split vs packed virtqueues');
  assert.not.match(alone, 'no cases run');
  assert.match(alone.split('\n').find((l) => l.startsWith('g->h 64 B 1q'))!, /^g->h 64 B 1q +- +- +- +3\.000 .* - +- +- +- +1\.200 +\S+ +\S+ +-$/);
  // Without packed rows, no section.
  assert.not.match(renderTable({ ...report, rows: split }), 'split vs packed');
});

test('tun\'s flow hash vs the steering program: 2-pair rows in a section of their own, CPU ns per frame of the workers and the host sender, never in the main table, a target or a bar', () => {
  const sender = (r: Row, ns: number): Row => ({ ...r, detail: { ...r.detail, senderNsPerFrame: ns } });
  const hash = [
    row('raw', 'g2h', 1500, 2, 0.6), row('embedded', 'g2h', 1500, 2, 2.0),
    sender(row('raw', 'h2g', 64, 2, 0.5), 1100), sender(row('embedded', 'h2g', 64, 2, 0.8), 1150),
  ];
  const program = [
    // Faster than the hash on purpose: a steering row that leaked into the main table, a target or the chart would show.
    row('embedded-steering', 'g2h', 1500, 2, 3.0),
    sender(row('embedded-steering', 'h2g', 64, 2, 0.75), 1230.4),
    { backend: 'embedded-steering', dir: 'h2g', frame: 1500, queues: 2, error: 'cannot load the tap steering program: EPERM\n | at stack' } as Row,
  ];
  const rows = [...hash, ...program];
  assert.equal(evaluateTargets(rows, latency, idle, memory), evaluateTargets(hash, latency, idle, memory), 'the steering rows change no target');
  const report: Report = {
    machine: { cpus: 2 }, startedAt: '2026-12-01T00:00:00.000Z', elapsedSeconds: 1, config: {}, rows, latency, idle, memory, guest,
    targets: evaluateTargets(rows, latency, idle, memory), notes: [],
  };
  const table = renderTable(report);
  const lines = table.split('\n');
  const main = lines.find((l) => l.startsWith('g->h 1500 B 2q'))!;
  assert.match(main, /^g->h 1500 B 2q +0\.600 .* 2\.000 .* 3\.33x/, 'the main table: raw and embedded (no program), e/raw from them');
  assert.not.match(main, '3.000');
  const head = lines.findIndex((l) => l.startsWith('tun\'s flow hash vs the steering program'));
  assert.ok(head > lines.indexOf(main), 'the section follows the main table');
  const section = lines.slice(head, lines.findIndex((l, i) => i > head && l.startsWith('ping-pong')));
  assert.match(section.join('\n'), /^ +tun's flow hash +steering program +d ns\/frame$/m);
  assert.match(section.join('\n'), /^case +Mpps +wrk ns +snd ns +Mpps +wrk ns +snd ns +wrk +snd$/m);
  // row(): 1.5 CPU s over mpps * 2e6 frames, so ns per frame = 1.5e9 / (mpps * 2e6); d = program - hash.
  const ns = (mpps: number): number => 1.5e9 / (mpps * 2e6);
  const g2h = section.find((l) => l.startsWith('g->h 1500 B 2q'))!;
  assert.match(g2h, new RegExp(`^g->h 1500 B 2q +2\\.000 +${ns(2.0).toFixed(0)} +- +3\\.000 +${ns(3.0).toFixed(0)} +- +${(ns(3.0) - ns(2.0)).toFixed(0)} +-$`));
  const h2g = section.find((l) => l.startsWith('h->g 64 B 2q'))!;
  assert.match(h2g, new RegExp(`^h->g 64 B 2q +0\\.800 +${ns(0.8).toFixed(0)} +1150 +0\\.750 +${ns(0.75).toFixed(0)} +1230 +\\+${(ns(0.75) - ns(0.8)).toFixed(0)} +\\+80$`));
  // No raw row in the section; a failed steering row is said, without its stack.
  assert.not.match(section.join('\n'), /^h->g 1500 B 2q .*0\.500/m);
  assert.match(section.join('\n'), /^h->g 1500 B 2q +- +- +- +FAILED +- +-$/m);
  assert.match(section.join('\n'), /^ {2}FAILED vhost-tap embedded \+ steering program host->guest 1500 B 2q: cannot load the tap steering program: EPERM$/m);
  assert.not.match(table, 'at stack');
  assert.match(renderMarkdown(report), 'tun\'s flow hash vs the steering program', 'in the README block');
  assert.not.match(renderSvg(report), 'steering', 'no steering bar or legend in the chart');
  // --only steering: the section alone, not "no cases run"; without steering rows, no section.
  const alone = renderTable({ ...report, rows: program });
  assert.match(alone, 'tun\'s flow hash vs the steering program');
  assert.match(alone.split('\n').find((l) => l.startsWith('g->h 1500 B 2q'))!, /^g->h 1500 B 2q +- +- +- +3\.000 +\d+ +- +- +-$/);
  assert.not.match(renderTable({ ...report, rows: hash }), 'steering program');
});

test('queue-count changes: frames lost per change for each backend beside its baseline, a baseline that lost marked not comparable, informational', () => {
  const rows = [row('testpmd', 'g2h', 64, 1, 1.0), row('daemon', 'g2h', 64, 1, 1.3)];
  const targets = evaluateTargets(rows, latency, idle, memory);
  const switchLoss: SwitchLossResult = {
    rate: 8000, flows: 16, changes: 20, queues: 4, elapsedSeconds: 57, errors: [],
    vhostTap: { changes: 20, sent: 58934, lost: 0, outOfOrder: 202, tapDrops: 0, baselineSent: 16020, baselineLost: 0 },
    vhostTapNoSteering: { changes: 20, sent: 55497, lost: 5, outOfOrder: 44, tapDrops: 1, baselineSent: 16020, baselineLost: 0 },
    qemuTap: { changes: 19, sent: 55418, lost: 86, outOfOrder: 10, tapDrops: 62, baselineSent: 16006, baselineLost: 3 },
  };
  const report: Report = {
    machine: { cpus: 2, cpuModel: 'x' }, startedAt: '2026-12-01T00:00:00.000Z', elapsedSeconds: 1, config: {}, rows, latency, idle, memory, guest, switchLoss, targets, notes: [],
  };
  for (const text of [renderTable(report), renderMarkdown(report)]) {
    assert.match(text, /^queue-count changes \(QEMU TCG guest, ethtool -L, UDP\), frames lost per change \(informational, no target\): the guest runs$/m);
    assert.match(text, '`ethtool -L eth0 combined 1/2/4` 20 times while the host sends UDP to its iperf3 (4 pairs, 16 flows, 8000');
    assert.match(text, /^ +changes +sent +lost +per change +out of order +tap drops +baseline lost$/m);
    // changes, sent, lost, lost / changes, out of order, tap drops, then the baseline
    assert.match(text, /^ {2}vhost-tap daemon, steering program +20 +58934 +0 +0\.00 +202 +0 +0 of 16020$/m);
    assert.match(text, /^ {2}vhost-tap daemon --no-steering +20 +55497 +5 +0\.25 +44 +1 +0 of 16020$/m);
    assert.match(text, /^ {2}QEMU tap vhost=off +19 +55418 +86 +4\.53 +10 +62 +3 of 16006 \(the guest fell behind: not comparable\)$/m);
    assert.match(text, 'the section took 57 s');
  }
  assert.is((renderTable(report).match(/not comparable/g) ?? []).length, 1, 'only the run whose baseline lost is marked');
  // The columns line up: each figure ends where its heading does.
  const lines = renderTable(report).split('\n');
  const head = lines.find((l) => /^ +changes +sent/.test(l))!;
  const ends = (l: string): number[] => [...l.matchAll(/\S+/g)].map((m) => m.index! + m[0].length);
  const headingEnds = [0, 1, 2, 4, 7, 9].map((i) => ends(head)[i]); // changes, sent, lost, per change, out of order, tap drops
  for (const [prefix, words] of [['  vhost-tap daemon, steering', 4], ['  vhost-tap daemon --no', 3], ['  QEMU tap', 3]] as const) {
    const line = lines.find((l) => l.startsWith(prefix))!;
    assert.equal(ends(line).slice(words, words + 6), headingEnds, `${prefix.trim()}: figures under their headings`);
  }
  assert.equal(evaluateTargets(rows, latency, idle, memory), targets, 'no target of its own');

  const failed = renderTable({ ...report, switchLoss: { errors: ['QEMU tap: the sender (sw) failed: no answer\n--- guest output ---'], vhostTap: switchLoss.vhostTap } });
  assert.match(failed, /^ {2}vhost-tap daemon --no-steering +n\/a$/m);
  assert.match(failed, /^ {2}FAILED: QEMU tap: the sender \(sw\) failed: no answer$/m);
  assert.not.match(failed, 'guest output', 'only the first line of an error');
  assert.match(renderTable({ ...report, switchLoss: { errors: [], skipped: 'time budget: 500 s used of 540' } }),
    'queue-count changes (QEMU TCG guest, ethtool -L, UDP): skipped: time budget: 500 s used of 540');
  assert.match(renderTable({ ...report, switchLoss: { errors: [] } }), 'queue-count changes (QEMU TCG guest, ethtool -L, UDP): not run');
  // A saved report from before the section existed renders as it did.
  assert.not.match(renderTable({ ...report, switchLoss: undefined }), 'queue-count changes');
});

test('the README block replaces what is between the markers and nothing else', () => {
  const begin = '<!-- bench:begin (node dist/bench/readme.js writes this block from bench/results/latest.json) -->';
  const readme = `# title\n\n${begin}\nold results\n<!-- bench:end -->\n\nafter\n`;
  const once = replaceBlock(readme, 'new results');
  assert.is(once, `# title\n\n${begin}\nnew results\n<!-- bench:end -->\n\nafter\n`);
  assert.is(replaceBlock(once, 'new results'), once, 'idempotent');
  assert.throws(() => replaceBlock('# no markers\n', 'x'), /markers/);
});

test.run();
