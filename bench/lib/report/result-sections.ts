// The terminal report's sections for everything but throughput: latency, idle CPU,
// memory, the real guest, live migration, queue-count changes, profiles and targets.
import { dirLabel, firstLine, rowLabel } from './labels';
import type { GuestResult, IdleResult, LatencyResult, MemoryResult, MigrationResult, Row, RttSummary, SwitchLossResult, Target } from './results';
import { DIRECTIONS, ratio } from './rows';
import { idleProblem, mappingCount, measuredText, targetStatus } from './targets';
import { WIDTH, center, mb, times, wrap } from './text-format';

export function latencySection(l: LatencyResult, out: string[]): void {
  out.push('', 'ping-pong round trip (64 B UDP to an echo in the host stack, one at a time):');
  const line = (name: string, r: RttSummary | undefined): string =>
    r
      ? `  ${name.padEnd(20)} p50 ${r.p50Us.toFixed(1).padStart(7)} us  p99 ${r.p99Us.toFixed(1).padStart(7)} us  min ${r.minUs.toFixed(1)} us  max ${r.maxUs.toFixed(1)} us  ` +
        `(${r.count} round trips, ${r.lost} lost)`
      : `  ${name.padEnd(20)} n/a`;
  out.push(line('raw write()/read()', l.raw), line('vhost-tap embedded', l.embedded));
  if (l.raw && l.embedded) {
    out.push(`  ${'added by vhost-tap'.padEnd(20)} p50 ${(l.embedded.p50Us - l.raw.p50Us).toFixed(1).padStart(7)} us  p99 ${(l.embedded.p99Us - l.raw.p99Us).toFixed(1).padStart(7)} us`);
  }
  if (l.testpmd || l.daemon || l.daemonBusyPoll) {
    out.push('ICMP echo from the host through the backend to DPDK virtio_user in icmpecho mode (1 pair; ping shares CPU 0 with the frontend\'s polling lcore):');
    out.push(line('testpmd (vhost->tap)', l.testpmd), line('vhost-tap daemon', l.daemon));
    if (l.daemonBusyPoll) {
      out.push(line(`daemon, polling`, l.daemonBusyPoll));
      out.push(`  (the daemon again with --busy-poll-us ${String(l.daemonBusyPollUs ?? '?')}: it spins through the gaps between pings, as testpmd always does)`);
    }
  }
  for (const e of l.errors) out.push(...wrap(firstLine(e), WIDTH, '  FAILED: ', '    '));
}

export function idleSection(idle: IdleResult, out: string[]): void {
  const what = `idle: vhost-tap daemon connected (1 pair), no traffic, ${idle.seconds} s:`;
  if (idle.cpuSeconds !== undefined && Number.isFinite(idle.cpuSeconds) && idle.seconds > 0) {
    out.push('', `${what} ${idle.cpuSeconds.toFixed(3)} CPU s = ${((idle.cpuSeconds / idle.seconds) * 100).toFixed(2)}% of a core`);
  } else out.push('', ...wrap(idleProblem(idle), WIDTH, `${what} `, '  '));
}

export function memorySection(m: MemoryResult, out: string[]): void {
  const what = `memory: vhost-tap daemon, ${m.queuePairs} pairs x ${m.ringSize} entries, connected:`;
  if (m.netMb !== undefined && Number.isFinite(m.netMb)) {
    const n = mappingCount(m.mappings);
    const text = `RSS ${mb(m.rssMb)} - guest memory ${mb(m.guestMb)}${n !== undefined ? ` (${n} mapping${n === 1 ? '' : 's'})` : ''} = ${mb(m.netMb)} beyond ` +
      `guest memory${m.baselineRssMb !== undefined ? `; ${mb(m.baselineRssMb)} before the frontend connected` : ''}`;
    out.push(...wrap(text, WIDTH, `${what} `, '  '));
  } else out.push(...wrap(m.error !== undefined ? `FAILED: ${firstLine(m.error)}` : 'not run', WIDTH, `${what} `, '  '));
}

export function guestSection(g: GuestResult, out: string[]): void {
  out.push('');
  if (g.skipped !== undefined) {
    out.push(...wrap(`skipped: ${g.skipped}`, WIDTH, 'real guest (QEMU, iperf3): ', '  '));
    return;
  }
  if (!g.vhostTap && !g.qemuTap && g.errors.length === 0) {
    out.push('real guest (QEMU, iperf3): not run');
    return;
  }
  const gb = (x: number | undefined): string => (x === undefined || !Number.isFinite(x) ? 'n/a' : `${x.toFixed(2)} Gbit/s`);
  out.push('real guest (QEMU, iperf3, 1 pair):   vhost-tap daemon   QEMU tap vhost=off   ratio');
  for (const dir of DIRECTIONS) {
    const key = dir === 'g2h' ? 'g2hGbps' : 'h2gGbps';
    const a = g.vhostTap?.[key];
    const b = g.qemuTap?.[key];
    out.push(`  ${dirLabel(dir).padEnd(34)} ${gb(a).padStart(16)} ${gb(b).padStart(20)} ${times(ratio(a, b)).padStart(7)}`);
  }
  for (const e of g.errors) out.push(...wrap(firstLine(e), WIDTH, '  FAILED: ', '    '));
}

/**
 * The live migrations: one line per backend with QEMU's total time, downtime, setup time
 * and MiB sent, and the Mbit/s each way before, during and after (the bridge's counters).
 * A report from before the section existed has none: nothing is printed for it.
 */
export function migrationSection(m: MigrationResult | undefined, out: string[]): void {
  if (m === undefined) return;
  const accel = m.accel === 'tcg' ? 'QEMU TCG, no KVM' : `QEMU ${m.accel}`;
  out.push('');
  if (m.skipped !== undefined) {
    out.push(...wrap(`skipped: ${m.skipped}`, WIDTH, 'live migration (QEMU, iperf3): ', '  '));
    return;
  }
  if (!m.vhostTap && !m.qemuTap && m.errors.length === 0) {
    out.push('live migration (QEMU, iperf3): not run');
    return;
  }
  const setup = [m.vcpus !== undefined ? `${m.vcpus} vCPU${m.vcpus === 1 ? '' : 's'}` : '', m.queues !== undefined ? `${m.queues} pair${m.queues === 1 ? '' : 's'}` : '']
    .filter(Boolean).join(', ');
  out.push(...wrap(`live migration a -> b, iperf3 both ways (${setup ? `${setup}; ` : ''}${accel}: informational, orientation only, no target):`, WIDTH, '', '  '));
  const ms = (x: number | undefined): string => (x === undefined || !Number.isFinite(x) ? 'n/a' : `${x.toFixed(0)} ms`);
  const mbps = (x: number | undefined): string => (x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(x < 10 ? 1 : 0));
  const NAME_W = 20;
  const RATE_W = 7;
  const rates = ['before', 'during', 'after'].map((w) => w.padStart(RATE_W)).join(' ');
  out.push(`${' '.repeat(2 + NAME_W)}${'total'.padStart(9)}${'downtime'.padStart(10)}${'setup'.padStart(9)}${'sent'.padStart(9)}` +
    `   ${center('guest->host Mbit/s', 3 * RATE_W + 2)}   ${center('host->guest Mbit/s', 3 * RATE_W + 2)}`.trimEnd());
  out.push(`${' '.repeat(2 + NAME_W + 37)}   ${rates}   ${rates}`);
  for (const [name, r] of [['vhost-tap daemon', m.vhostTap], ['QEMU tap vhost=off', m.qemuTap]] as const) {
    if (!r) {
      out.push(`  ${name.padEnd(NAME_W)}${'n/a'.padStart(9)}`);
      continue;
    }
    const each = (key: 'g2hMbps' | 'h2gMbps'): string => [r.before, r.during, r.after].map((w) => mbps(w[key]).padStart(RATE_W)).join(' ');
    out.push(`  ${name.padEnd(NAME_W)}${ms(r.totalMs).padStart(9)}${ms(r.downtimeMs).padStart(10)}${ms(r.setupMs).padStart(9)}` +
      `${(Number.isFinite(r.sentMiB) ? `${r.sentMiB.toFixed(0)} MiB` : 'n/a').padStart(9)}   ${each('g2hMbps')}   ${each('h2gMbps')}`);
  }
  const window = m.windowMs !== undefined ? `${(m.windowMs / 1000).toFixed(0)} s` : 'a window';
  out.push(...wrap(`total, downtime, setup, sent: QEMU's query-migrate; Mbit/s: the host bridge's byte counters over ${window} before \`migrate\`, ` +
    `from it to the destination running, and ${window} after${m.elapsedSeconds !== undefined ? `; the section took ${m.elapsedSeconds} s` : ''}.`, WIDTH, '  (', '   ')
    .map((l, i, all) => (i === all.length - 1 ? `${l})` : l)));
  for (const e of m.errors) out.push(...wrap(firstLine(e), WIDTH, '  FAILED: ', '    '));
}

/**
 * Datagrams lost per queue-count change: one line per backend, the baseline beside it (a
 * run whose baseline lost is marked: its guest fell behind, its figure says nothing about
 * changes). A report from before the section existed has none: nothing is printed for it.
 */
export function switchLossSection(sl: SwitchLossResult | undefined, out: string[]): void {
  if (sl === undefined) return;
  const title = 'queue-count changes (QEMU TCG guest, ethtool -L, UDP)';
  out.push('');
  if (sl.skipped !== undefined) {
    out.push(...wrap(`skipped: ${sl.skipped}`, WIDTH, `${title}: `, '  '));
    return;
  }
  if (!sl.vhostTap && !sl.vhostTapNoSteering && !sl.qemuTap && sl.errors.length === 0) {
    out.push(`${title}: not run`);
    return;
  }
  const n = (x: number | undefined, what: string): string => (x === undefined ? '' : `${x} ${what}`);
  const setup = [n(sl.queues, 'pairs'), n(sl.flows, 'flows'), sl.rate !== undefined ? `${sl.rate} datagrams/s` : ''].filter(Boolean).join(', ');
  out.push(...wrap(`${title}, frames lost per change (informational, no target): the guest runs \`ethtool -L eth0 combined 1/2/4\` ` +
    `${sl.changes ?? 'N'} times while the host sends UDP to its iperf3${setup ? ` (${setup})` : ''}; lost = sent - received, by per-flow sequence numbers; ` +
    'the baseline is the same guest and rate with no change.', WIDTH, '', '  '));
  const NAME_W = 36;
  out.push(`${' '.repeat(2 + NAME_W)}${'changes'.padStart(8)}${'sent'.padStart(9)}${'lost'.padStart(7)}${'per change'.padStart(12)}${'out of order'.padStart(14)}${'tap drops'.padStart(11)}   baseline lost`);
  const backends = [
    ['vhost-tap daemon, steering program', sl.vhostTap], ['vhost-tap daemon --no-steering', sl.vhostTapNoSteering], ['QEMU tap vhost=off', sl.qemuTap],
  ] as const;
  for (const [name, r] of backends) {
    if (!r) {
      out.push(`  ${name.padEnd(NAME_W)}${'n/a'.padStart(8)}`);
      continue;
    }
    const perChange = r.changes > 0 ? (r.lost / r.changes).toFixed(2) : '-';
    const behind = r.baselineLost > 0 ? ' (the guest fell behind: not comparable)' : '';
    out.push(`  ${name.padEnd(NAME_W)}${String(r.changes).padStart(8)}${String(r.sent).padStart(9)}${String(r.lost).padStart(7)}${perChange.padStart(12)}` +
      `${String(r.outOfOrder).padStart(14)}${String(r.tapDrops).padStart(11)}   ${r.baselineLost} of ${r.baselineSent}${behind}`);
  }
  if (sl.elapsedSeconds !== undefined) out.push(`  (the section took ${sl.elapsedSeconds} s)`);
  for (const e of sl.errors) out.push(...wrap(firstLine(e), WIDTH, '  FAILED: ', '    '));
}

/** perf stat / strace output the --profile option stores in a row's detail: otherwise only in the JSON. */
export function profileSection(rows: readonly Row[], out: string[]): void {
  for (const r of rows) {
    const profile = r.detail?.profile;
    if (typeof profile !== 'object' || profile === null) continue;
    const { perf, strace } = profile as { perf?: unknown; strace?: unknown };
    out.push('', `profile of ${rowLabel(r)} (--profile): perf stat --per-thread during the window, then strace -c -f:`);
    if (typeof perf === 'string') {
      out.push(...perf.split('\n').filter((l) => /\d/.test(l) && !l.includes('<not counted>')).slice(0, 24).map((l) => `  ${l.trim().replace(/\s+#.*$/, '')}`));
    }
    if (typeof strace === 'string') out.push(...strace.split('\n').filter((l) => l.trim()).slice(0, 16).map((l) => `  ${l}`));
  }
}

export function targetsSection(targets: readonly Target[], out: string[]): void {
  const counts = { met: 0, not: 0, unmeasured: 0 };
  for (const t of targets) {
    if (t.informational) continue;
    if (t.met === undefined) counts.unmeasured++;
    else if (t.met) counts.met++;
    else counts.not++;
  }
  out.push('', `targets (ratios within this run): ${counts.met} met, ${counts.not} NOT met, ${counts.unmeasured} not measured; info = for context, not a target`);
  const nameW = Math.min(64, Math.max(0, ...targets.map((t) => t.name.length)));
  for (const t of targets) {
    const head = `  ${targetStatus(t).padEnd(12)} ${t.name.padEnd(nameW)}  want ${t.want.padEnd(16)} measured ${measuredText(t)}`;
    out.push(head.trimEnd());
    out.push(...wrap(t.detail, WIDTH, ' '.repeat(17), ' '.repeat(19)));
  }
}
