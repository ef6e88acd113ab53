// The throughput tables of the terminal report: the main one (Mpps, Gbit/s and CPU per
// frame for each case and backend, with the ratios between them), the split-vs-packed and
// hash-vs-steering-program side tables, and the counts to read with care.
import { caseLabel, firstLine, rowLabel } from './labels';
import type { Backend, Direction, Row } from './results';
import { BACKENDS, PACKED_PAIRS, casesOf, findRow, ratio, ringOf, usable } from './rows';
import { WIDTH, center, fit, times, wrap } from './text-format';

const CASE_W = 17; // 'g->h 64 KB GSO 2q'
const NUM_W = 6;
const GROUP_W = 1 + 3 * NUM_W + 2; // ' Mpps Gbit/s s/Mpkt'
const RATIO_W = 6;

const TABLE_TITLES: Record<Backend, string> = {
  raw: 'raw tap loop',
  embedded: 'vhost-tap embedded',
  testpmd: 'DPDK testpmd',
  daemon: 'vhost-tap daemon',
  'embedded-packed': 'vhost-tap embedded packed',
  'daemon-packed': 'vhost-tap daemon packed',
  'embedded-steering': 'vhost-tap embedded + steering program',
};

interface RatioColumn {
  title: string;
  num: Backend;
  den: Backend;
}

const RATIO_COLUMNS: readonly RatioColumn[] = [
  { title: 'e/raw', num: 'embedded', den: 'raw' },
  { title: 'd/tp', num: 'daemon', den: 'testpmd' },
  { title: 'd/raw', num: 'daemon', den: 'raw' },
];


export function throughputTable(allRows: readonly Row[], out: string[]): void {
  const rows = allRows.filter((r) => BACKENDS.includes(r.backend));
  const cases = casesOf(rows);
  if (cases.length === 0) {
    // (--only 'packed' runs the packed rows alone, --only 'steering' the steering ones)
    if (allRows.length === 0) out.push('throughput: no cases run');
    else {
      packedSection(allRows, out);
      steeringSection(allRows, out);
    }
    return;
  }
  out.push(
    `${' '.repeat(CASE_W)}${BACKENDS.map((b) => ` ${center(TABLE_TITLES[b], GROUP_W - 1)}`).join('')} ${center('Mpps ratio', RATIO_COLUMNS.length * RATIO_W - 1)}`.trimEnd(),
    `${'case'.padEnd(CASE_W)}${BACKENDS.map(() => ` ${'Mpps'.padStart(NUM_W)} ${'Gbit/s'.padStart(NUM_W)} ${'s/Mpkt'.padStart(NUM_W)}`).join('')}` +
      RATIO_COLUMNS.map((c) => c.title.padStart(RATIO_W)).join(''),
  );
  out.push('-'.repeat(out[out.length - 1]!.length));

  // Failures are numbered by message: a missing tool fails every DPDK row with the same text.
  const failures: { message: string; rows: string[] }[] = [];
  const failureNumber = (r: Row): number => {
    const message = firstLine(r.error ?? '');
    let i = failures.findIndex((f) => f.message === message);
    if (i < 0) i = failures.push({ message, rows: [] }) - 1;
    failures[i]!.rows.push(`${TABLE_TITLES[r.backend]} ${caseLabel(r.dir, r.frame, r.queues, true)}`);
    return i + 1;
  };

  let lastDir: Direction | undefined;
  for (const c of cases) {
    if (lastDir !== undefined && c.dir !== lastDir) out.push('');
    lastDir = c.dir;
    let line = caseLabel(c.dir, c.frame, c.queues, true).padEnd(CASE_W);
    for (const b of BACKENDS) {
      const r = findRow(rows, b, c.dir, c.frame, c.queues);
      if (r?.error !== undefined) line += ` ${center(`FAILED [${failureNumber(r)}]`, GROUP_W - 1)}`;
      else {
        line += ` ${fit(r?.mpps, 3, NUM_W).padStart(NUM_W)} ${fit(r?.gbps, 2, NUM_W).padStart(NUM_W)} ${fit(r?.cpuSecondsPerMpkt, 2, NUM_W).padStart(NUM_W)}`;
      }
    }
    for (const col of RATIO_COLUMNS) {
      const a = findRow(rows, col.num, c.dir, c.frame, c.queues);
      const b = findRow(rows, col.den, c.dir, c.frame, c.queues);
      line += times(usable(a) && usable(b) ? ratio(a.mpps, b.mpps) : undefined).padStart(RATIO_W);
    }
    out.push(line.trimEnd());
  }

  out.push(
    '',
    ...wrap('Mpps and Gbit/s: frames and Ethernet bytes the tap counted (a 64 KB GSO super-frame is one frame). s/Mpkt: CPU seconds of the backend per million ' +
      'frames. e/raw = embedded / raw loop, d/tp = daemon / testpmd, d/raw = daemon / raw loop (Mpps, same case). - = not run.', WIDTH, '', ''),
  );
  for (const queues of [1, 2]) {
    const gso = findRow(rows, 'embedded', 'g2h', 'gso', queues);
    const tp = findRow(rows, 'testpmd', 'g2h', 1500, queues);
    if (usable(gso) && usable(tp)) {
      out.push(`64 KB GSO ${queues}q: embedded ${gso.gbps.toFixed(2)} Gbit/s = ${times(ratio(gso.gbps, tp.gbps))} testpmd's 1500 B ${tp.gbps.toFixed(2)} Gbit/s ` +
        '(testpmd\'s tap path carries no GSO)');
    }
  }
  failures.forEach((f, i) => {
    out.push(...wrap(f.message, WIDTH, `[${i + 1}] `, '    '));
    out.push(...wrap(`(${f.rows.join(', ')})`, WIDTH, '    ', '    '));
  });
  packedSection(allRows, out);
  steeringSection(allRows, out);
  dropsAndClaims(allRows, out);
}

/** CPU nanoseconds per frame from a row's detail (the flood sender's, host->guest), or undefined. */
function senderNs(r: Row | undefined): number | undefined {
  const v = r?.detail?.senderNsPerFrame;
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

/** The backend's CPU per frame in ns: s/Mpkt is us per frame. */
function workerNs(r: Row | undefined): number | undefined {
  return usable(r) && r.cpuSecondsPerMpkt !== undefined ? r.cpuSecondsPerMpkt * 1000 : undefined;
}

/**
 * tun's own flow hash against the steering program (issue 12), for each case that has an
 * embedded-steering row: the embedded path without and with the program, as CPU per frame
 * (what does not depend on how fast this machine's system calls are): the data path
 * workers', and host->guest the sender's, whose transmit picks the queue. Informational.
 */
function steeringSection(rows: readonly Row[], out: string[]): void {
  const cases = casesOf(rows.filter((r) => r.backend === 'embedded-steering'));
  if (cases.length === 0) return;
  const W = 7;
  const group = 3 * (W + 1);
  out.push('', ...wrap('tun\'s flow hash vs the steering program (informational, no target): the embedded path as above (no program: tun hashes every frame ' +
    'to pick its queue, and with 2+ queues every frame a worker writes updates tun\'s flow table) and the same case with the program attached, spreading over ' +
    'every queue as VirtioNetDevice does. ns per frame of CPU: wrk = the data path workers, snd = the host sender (host->guest, where the queue is picked); ' +
    'd = program - hash.', WIDTH, '', ''));
  out.push(`${' '.repeat(CASE_W)} ${center('tun\'s flow hash', group - 1)} ${center('steering program', group - 1)} ${center('d ns/frame', 2 * (W + 1) - 1)}`.trimEnd());
  const heads = ` ${'Mpps'.padStart(W)} ${'wrk ns'.padStart(W)} ${'snd ns'.padStart(W)}`;
  out.push(`${'case'.padEnd(CASE_W)}${heads}${heads} ${'wrk'.padStart(W)} ${'snd'.padStart(W)}`);
  out.push('-'.repeat(out[out.length - 1]!.length));
  const ns = (x: number | undefined): string => (x === undefined ? '-' : x.toFixed(0)).padStart(W);
  const delta = (a: number | undefined, b: number | undefined): string => (a === undefined || b === undefined ? '-' : `${b - a >= 0 ? '+' : ''}${(b - a).toFixed(0)}`).padStart(W);
  let lastDir: Direction | undefined;
  for (const c of cases) {
    if (lastDir !== undefined && c.dir !== lastDir) out.push('');
    lastDir = c.dir;
    const hash = findRow(rows, 'embedded', c.dir, c.frame, c.queues);
    const program = findRow(rows, 'embedded-steering', c.dir, c.frame, c.queues);
    let line = caseLabel(c.dir, c.frame, c.queues, true).padEnd(CASE_W);
    for (const r of [hash, program]) {
      if (r?.error !== undefined) line += ` ${center('FAILED', group - 1)}`;
      else line += ` ${fit(r?.mpps, 3, W).padStart(W)} ${ns(workerNs(r))} ${ns(senderNs(r))}`;
    }
    line += ` ${delta(workerNs(hash), workerNs(program))} ${delta(senderNs(hash), senderNs(program))}`;
    out.push(line.trimEnd());
  }
  for (const r of rows.filter((x) => x.error !== undefined && x.backend === 'embedded-steering')) {
    out.push(...wrap(firstLine(r.error!), WIDTH, `  FAILED ${rowLabel(r)}: `, '    '));
  }
}

/**
 * Split against packed virtqueues (issue 14), for each case that has a packed row: the same
 * path (the native guest, or the daemon behind DPDK's virtio_user), the ring layout changed.
 * Informational: no target is drawn from it.
 */
function packedSection(rows: readonly Row[], out: string[]): void {
  const cases = casesOf(rows.filter((r) => PACKED_PAIRS.some((p) => p.packed === r.backend)));
  if (cases.length === 0) return;
  const pairs = PACKED_PAIRS.filter((p) => rows.some((r) => r.backend === p.packed));
  const group = 2 * GROUP_W + RATIO_W; // split Mpps Gbit/s s/Mpkt, packed Mpps Gbit/s s/Mpkt, p/s
  out.push('', ...wrap('split vs packed virtqueues (VIRTIO_F_RING_PACKED; informational, no target): the same path and case, only the ring layout changed; ' +
    'p/s = packed Mpps / split Mpps.', WIDTH, '', ''));
  out.push(`${' '.repeat(CASE_W)}${pairs.map((p) => ` ${center(TABLE_TITLES[p.split], group - 1)}`).join('')}`.trimEnd());
  out.push(`${' '.repeat(CASE_W)}${pairs.map(() => ` ${center('split', GROUP_W - 1)} ${center('packed', GROUP_W - 1)}${' '.repeat(RATIO_W)}`).join('')}`.trimEnd());
  const numbers = ` ${'Mpps'.padStart(NUM_W)} ${'Gbit/s'.padStart(NUM_W)} ${'s/Mpkt'.padStart(NUM_W)}`;
  out.push(`${'case'.padEnd(CASE_W)}${pairs.map(() => `${numbers}${numbers}${'p/s'.padStart(RATIO_W)}`).join('')}`);
  out.push('-'.repeat(out[out.length - 1]!.length));
  let lastDir: Direction | undefined;
  for (const c of cases) {
    if (lastDir !== undefined && c.dir !== lastDir) out.push('');
    lastDir = c.dir;
    let line = caseLabel(c.dir, c.frame, c.queues, true).padEnd(CASE_W);
    for (const p of pairs) {
      const split = findRow(rows, p.split, c.dir, c.frame, c.queues);
      const packed = findRow(rows, p.packed, c.dir, c.frame, c.queues);
      for (const r of [split, packed]) {
        if (r?.error !== undefined) line += ` ${center('FAILED', GROUP_W - 1)}`;
        else line += ` ${fit(r?.mpps, 3, NUM_W).padStart(NUM_W)} ${fit(r?.gbps, 2, NUM_W).padStart(NUM_W)} ${fit(r?.cpuSecondsPerMpkt, 2, NUM_W).padStart(NUM_W)}`;
      }
      line += times(usable(packed) && usable(split) ? ratio(packed.mpps, split.mpps) : undefined).padStart(RATIO_W);
    }
    out.push(line.trimEnd());
  }
  const failed = rows.filter((r) => r.error !== undefined && ringOf(r.backend) === 'packed');
  for (const r of failed) out.push(...wrap(firstLine(r.error!), WIDTH, `  FAILED ${rowLabel(r)}: `, '    '));
}

/**
 * Rows where the frontend's own count disagrees with the tap's, or the tap refused frames a backend wrote: both change how a
 * rate reads. Host-to-guest drops are left out: the flood is open-loop, so every backend's tap drops what it did not take in time.
 */
function dropsAndClaims(rows: readonly Row[], out: string[]): void {
  const lines: string[] = [];
  for (const r of rows) {
    if (!usable(r) || !r.detail) continue;
    const parts: string[] = [];
    const dropped = r.detail.tapDropped;
    if (r.dir === 'g2h' && typeof dropped === 'number' && dropped > 0) parts.push(`tap dropped ${fmtCount(dropped)}`);
    const claimed = r.detail.frontendClaimed;
    if (typeof claimed === 'number' && r.packets !== undefined && Math.abs(claimed - r.packets) > 0.05 * Math.max(claimed, r.packets)) {
      parts.push(`frontend ${r.dir === 'g2h' ? 'sent' : 'received'} ${fmtCount(claimed)}, tap counted ${fmtCount(r.packets)}`);
    }
    if (parts.length > 0) lines.push(`  ${rowLabel(r)}: ${parts.join(', ')}`);
  }
  if (lines.length > 0) out.push('', 'counts to read with care (the frontend\'s own count against the tap\'s; frames the tap refused):', ...lines);
}

function fmtCount(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} k` : String(n);
}
