// The results of `npm run bench`: one row per (backend, direction, frame, queue
// pairs), the issue's targets as ratios between rows of the same run, the
// terminal table and the SVG chart. Pure functions of the data: nothing here
// measures, so a saved latest.json can be re-rendered.

/**
 * embedded and daemon run split virtqueues; embedded-packed and daemon-packed are the same
 * paths over packed ones (VIRTIO_F_RING_PACKED): the native guest in packed mode, DPDK's
 * virtio_user with packed_vq=1. Informational rows, in a section of their own, no target.
 * embedded-steering is the embedded path with the tap steering program attached (issue 12:
 * it replaces tun's own per-frame flow hash with 2+ queues); the embedded rows have none.
 */
export type Backend = 'raw' | 'embedded' | 'testpmd' | 'daemon' | 'embedded-packed' | 'daemon-packed' | 'embedded-steering';
export type Direction = 'g2h' | 'h2g';
/** Ethernet frame bytes, or 'gso': one 64 KB TCP GSO super-frame. */
export type FrameKind = number | 'gso';

/**
 * Same shape as bench/lib/native.ts's RttSummary. Declared here rather than
 * imported so that rendering a saved report does not load the native addon's
 * bindings module (which throws when the addon lacks them).
 */
export interface RttSummary {
  count: number;
  lost: number;
  minUs: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  maxUs: number;
}

export interface Row {
  backend: Backend;
  dir: Direction;
  frame: FrameKind;
  queues: number;
  /** Frames the tap counted in the window (a GSO super-frame counts once). */
  packets?: number;
  /** Ethernet bytes the tap counted in the window. */
  bytes?: number;
  seconds?: number;
  /** CPU seconds of the backend in the window. */
  cpuSeconds?: number;
  detail?: Record<string, unknown>;
  error?: string;
  /** Derived by finishRow. */
  mpps?: number;
  gbps?: number;
  /** CPU seconds of the backend per million packets. */
  cpuSecondsPerMpkt?: number;
  /** Cores the backend kept busy on average (1 = one core all the window). */
  cpuCores?: number;
}

export interface LatencyResult {
  raw?: RttSummary;
  embedded?: RttSummary;
  /** ICMP echo from the host stack through the backend to virtio_user's icmpecho and back (1 pair). */
  testpmd?: RttSummary;
  daemon?: RttSummary;
  /** The same through a daemon started with --busy-poll-us daemonBusyPollUs. */
  daemonBusyPoll?: RttSummary;
  daemonBusyPollUs?: number;
  errors: string[];
}

/** p50/p99/... of round trips given in microseconds (the same nearest rank as the native loops use). */
export function summarizeRtts(rttsUs: readonly number[], lost: number): RttSummary {
  const sorted = [...rttsUs].sort((a, b) => a - b);
  const pct = (p: number): number => (sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor(p * (sorted.length - 1) + 0.5))]!);
  return { count: sorted.length, lost, minUs: pct(0), p50Us: pct(0.5), p90Us: pct(0.9), p99Us: pct(0.99), maxUs: pct(1) };
}

export interface IdleResult {
  seconds: number;
  cpuSeconds?: number;
  error?: string;
}

export interface GuestMapping {
  name: string;
  sizeKb: number;
  rssKb: number;
}

export interface MemoryResult {
  queuePairs: number;
  ringSize: number;
  /** RSS before the frontend connected. */
  baselineRssMb?: number;
  rssMb?: number;
  /** RSS of the guest memory the daemon maps. */
  guestMb?: number;
  /** RSS beyond the guest memory: what the target limits. */
  netMb?: number;
  /** The guest memory mappings (bench/lib/proc.ts's list), or just their count. */
  mappings?: number | GuestMapping[];
  error?: string;
}

export interface GuestThroughput {
  g2hGbps?: number;
  h2gGbps?: number;
}

export interface GuestResult {
  vhostTap?: GuestThroughput;
  qemuTap?: GuestThroughput;
  errors: string[];
  skipped?: string;
}

/** Throughput each way over one window, as the host's bridge counted it (bytes each way, Mbit/s). */
export interface MigrationWindow {
  g2hMbps: number;
  h2gMbps: number;
  seconds: number;
}

/** One live migration a -> b of a guest running iperf3 both ways: QEMU's query-migrate, and the traffic around it. */
export interface MigrationRun {
  /** ms, start to completion, as QEMU measured it. */
  totalMs: number;
  /** ms the guest was stopped. */
  downtimeMs: number;
  setupMs: number;
  /** RAM QEMU sent, MiB, in this many dirty-bitmap syncs. */
  sentMiB: number;
  dirtySyncs: number;
  /** The window before `migrate`, from `migrate` to the destination running, and the window after. */
  before: MigrationWindow;
  during: MigrationWindow;
  after: MigrationWindow;
}

/**
 * The informational live-migration section (issue 11): the same guest moved once through
 * vhost-tap daemons and once with QEMU's own tap backend. No target: the guest runs under
 * TCG here, so the figures are for orientation only.
 */
export interface MigrationResult {
  /** QEMU's accelerator ('tcg': no KVM). */
  accel: string;
  vcpus?: number;
  /** Queue pairs of the guest's NIC (and of each side's tap). */
  queues?: number;
  /** ms of the before and after windows. */
  windowMs?: number;
  vhostTap?: MigrationRun;
  qemuTap?: MigrationRun;
  /** Wall-clock seconds the section took (both backends, boot to cleanup). */
  elapsedSeconds?: number;
  errors: string[];
  skipped?: string;
}

/** One backend in the queue-count change section: the same guest, rate and changes for each. */
export interface SwitchLossRun {
  /** `ethtool -L` runs that succeeded. */
  changes: number;
  /** Datagrams sent while the guest changed its queue count, and how many never arrived (sent - received, per flow). */
  sent: number;
  lost: number;
  /** Arrivals out of order within a flow (iperf3's count). */
  outOfOrder: number;
  /** tun's tx_dropped during the changes: a full queue, or (tun's own hash) a frame sent to a queue as it was detached. */
  tapDrops: number;
  /** The same guest and rate without any change: lost > 0 there means the guest fell behind, and the run says nothing about changes. */
  baselineSent: number;
  baselineLost: number;
}

/**
 * Datagrams lost per queue-count change (issue 12, informational): a guest under QEMU/TCG
 * receives UDP over many flows while it runs `ethtool -L eth0 combined 1/2/4` again and
 * again, through the daemon with its steering program, through the daemon with
 * --no-steering (tun's own flow hash), and through QEMU's own tap backend.
 */
export interface SwitchLossResult {
  /** Datagrams per second over all flows, the UDP flows, the ethtool -L runs asked for, the guest's queue pairs. */
  rate?: number;
  flows?: number;
  changes?: number;
  queues?: number;
  vhostTap?: SwitchLossRun;
  vhostTapNoSteering?: SwitchLossRun;
  qemuTap?: SwitchLossRun;
  /** Wall-clock seconds the section took. */
  elapsedSeconds?: number;
  errors: string[];
  skipped?: string;
}

/** How Target.measured is expressed. */
export type TargetUnit = 'x' | 'us' | 'MB' | 'core';

export interface Target {
  name: string;
  /** The requirement as text, e.g. '>= 1.25x'. */
  want: string;
  /** The requirement as a number in `unit` (the bound of `want`). */
  threshold: number;
  unit: TargetUnit;
  measured?: number;
  /** Undefined when it could not be measured. */
  met?: boolean;
  /** Reported next to the targets for context; not one of the issue's targets. */
  informational?: boolean;
  /** The figures the measurement was computed from, or why it could not be. */
  detail: string;
}

export interface Report {
  machine: Record<string, unknown>;
  startedAt: string;
  elapsedSeconds: number;
  config: Record<string, unknown>;
  rows: Row[];
  latency: LatencyResult;
  idle: IdleResult;
  memory: MemoryResult;
  guest: GuestResult;
  /** Absent in the results of runs from before the section existed. */
  migration?: MigrationResult;
  /** Absent in the results of runs from before the section existed. */
  switchLoss?: SwitchLossResult;
  targets: Target[];
  notes: string[];
}

/** The main table's columns, the chart's bars and every target: split rings only. */
const BACKENDS: readonly Backend[] = ['raw', 'embedded', 'testpmd', 'daemon'];
/** The backends that have a packed-ring counterpart, and it. */
const PACKED_PAIRS: readonly { split: Backend; packed: Backend }[] = [
  { split: 'embedded', packed: 'embedded-packed' },
  { split: 'daemon', packed: 'daemon-packed' },
];

/** The virtqueue layout a backend's rows ran, where the backend drives virtqueues at all (raw and testpmd's tap side do not). */
export function ringOf(b: Backend): 'split' | 'packed' | undefined {
  if (b === 'embedded-packed' || b === 'daemon-packed') return 'packed';
  return b === 'embedded' || b === 'daemon' || b === 'embedded-steering' ? 'split' : undefined;
}

/** The backend whose path a row ran, whatever its ring layout or steering: embedded-packed -> embedded. */
export function baseBackend(b: Backend): Backend {
  return b === 'embedded-packed' || b === 'embedded-steering' ? 'embedded' : b === 'daemon-packed' ? 'daemon' : b;
}
const DIRECTIONS: readonly Direction[] = ['g2h', 'h2g'];

/* ----------------------------------------------------------------- labels */

export function frameLabel(frame: FrameKind): string {
  return frame === 'gso' ? '64 KB GSO' : `${frame} B`;
}

export function backendLabel(b: Backend, dir: Direction): string {
  switch (b) {
    case 'raw':
      return dir === 'g2h' ? 'raw write() loop' : 'raw read() loop';
    case 'embedded':
      return 'vhost-tap embedded';
    case 'testpmd':
      return dir === 'g2h' ? 'testpmd (vhost->tap)' : 'testpmd (tap->vhost)';
    case 'daemon':
      return 'vhost-tap daemon';
    case 'embedded-packed':
      return 'vhost-tap embedded packed';
    case 'daemon-packed':
      return 'vhost-tap daemon packed';
    case 'embedded-steering':
      return 'vhost-tap embedded + steering program';
  }
}

function dirLabel(dir: Direction, short = false): string {
  if (short) return dir === 'g2h' ? 'g->h' : 'h->g';
  return dir === 'g2h' ? 'guest->host' : 'host->guest';
}

export function caseLabel(dir: Direction, frame: FrameKind, queues: number, short = false): string {
  return `${dirLabel(dir, short)} ${frameLabel(frame)} ${queues}q`;
}

function rowLabel(r: Pick<Row, 'backend' | 'dir' | 'frame' | 'queues'>): string {
  return `${backendLabel(r.backend, r.dir)} ${caseLabel(r.dir, r.frame, r.queues)}`;
}

/** First line of an error, without the stack case.ts folds into it (" | " separated) or terminal escapes a child's log tail may carry. */
function firstLine(text: string): string {
  const line = text.split('\n')[0]!.split(/ \|\s+at /)[0]!.replace(/\x1b\[[0-9;?]*[ -\/]*[@-~]/g, '').replace(/[\u0000-\u001f\u007f]/g, ' ').trim();
  return line.length > 240 ? `${line.slice(0, 237)}...` : line;
}

/* ------------------------------------------------------------------- rows */

/** Fills the derived fields; a row whose counts cannot give a rate gets an error instead, so every row has either mpps/gbps or error. */
export function finishRow(row: Row): Row {
  const { packets, bytes, seconds, cpuSeconds } = row;
  if (packets === undefined || !Number.isFinite(packets) || seconds === undefined || !Number.isFinite(seconds) || seconds <= 0) {
    row.error ??= `no usable measurement (packets ${String(packets)}, seconds ${String(seconds)})`;
    return row;
  }
  row.mpps = packets / seconds / 1e6;
  row.gbps = bytes !== undefined && Number.isFinite(bytes) ? (bytes * 8) / seconds / 1e9 : 0;
  if (cpuSeconds !== undefined && Number.isFinite(cpuSeconds)) {
    row.cpuCores = cpuSeconds / seconds;
    // Zero packets: the per-packet cost is undefined, not infinite.
    if (packets > 0) row.cpuSecondsPerMpkt = cpuSeconds / (packets / 1e6);
  }
  return row;
}

/** The row of a case, errored or not; the last one if a case was recorded twice. */
export function findRow(rows: readonly Row[], backend: Backend, dir: Direction, frame: FrameKind, queues: number): Row | undefined {
  let found: Row | undefined;
  for (const r of rows) if (r.backend === backend && r.dir === dir && r.frame === frame && r.queues === queues) found = r;
  return found;
}

function usable(r: Row | undefined): r is Row & { mpps: number; gbps: number } {
  return r !== undefined && r.error === undefined && r.mpps !== undefined && Number.isFinite(r.mpps) && r.gbps !== undefined && Number.isFinite(r.gbps);
}

function ratio(a: number | undefined, b: number | undefined): number | undefined {
  return a !== undefined && b !== undefined && Number.isFinite(a) && Number.isFinite(b) && b > 0 ? a / b : undefined;
}

function frameOrder(f: FrameKind): number {
  return f === 'gso' ? Number.MAX_SAFE_INTEGER : f;
}

interface CaseKey {
  dir: Direction;
  frame: FrameKind;
  queues: number;
}

/** The cases present in the rows, in reading order: direction, queue pairs, frame size. */
function casesOf(rows: readonly Row[]): CaseKey[] {
  const cases: CaseKey[] = [];
  for (const r of rows) {
    if (!cases.some((c) => c.dir === r.dir && c.frame === r.frame && c.queues === r.queues)) cases.push({ dir: r.dir, frame: r.frame, queues: r.queues });
  }
  return cases.sort((a, b) => DIRECTIONS.indexOf(a.dir) - DIRECTIONS.indexOf(b.dir) || a.queues - b.queues || frameOrder(a.frame) - frameOrder(b.frame));
}

/* ---------------------------------------------------------------- targets */

type Metric = 'mpps' | 'gbps';

interface RowRef {
  backend: Backend;
  dir: Direction;
  frame: FrameKind;
  queues: number;
}

/** Why a row cannot be used ('not run', 'failed: ...'), or undefined when it can. */
function unusableReason(rows: readonly Row[], ref: RowRef): string | undefined {
  const r = findRow(rows, ref.backend, ref.dir, ref.frame, ref.queues);
  if (!r) return 'not run';
  if (r.error !== undefined) return `failed: ${firstLine(r.error)}`;
  if (!usable(r)) return 'has no rate';
  return undefined;
}

function metricText(value: number, metric: Metric): string {
  return metric === 'mpps' ? `${value.toFixed(3)} Mpps` : `${value.toFixed(2)} Gbit/s`;
}

function ratioTarget(rows: readonly Row[], name: string, threshold: number, num: RowRef, den: RowRef, metric: Metric, informational = false): Target {
  const want = `>= ${Number.isInteger(threshold) ? threshold.toFixed(1) : String(threshold)}x`;
  const base: Target = { name, want, threshold, unit: 'x', detail: '', ...(informational ? { informational } : {}) };
  // The name already says which case: the reference's case is repeated only where it differs (GSO against 1500 B).
  const sameCase = num.dir === den.dir && num.frame === den.frame && num.queues === den.queues;
  const label = (r: RowRef): string => (sameCase ? backendLabel(r.backend, r.dir) : rowLabel(r));
  const problems: { who: string[]; why: string }[] = [];
  for (const ref of [num, den]) {
    const why = unusableReason(rows, ref);
    if (why === undefined) continue;
    // Both rows failing the same way (DPDK missing) is said once.
    const same = problems.find((p) => p.why === why);
    if (same) same.who.push(label(ref));
    else problems.push({ who: [label(ref)], why });
  }
  if (problems.length > 0) return { ...base, detail: problems.map((p) => `${p.who.join(' and ')}: ${p.why}`).join('; ') };
  const a = findRow(rows, num.backend, num.dir, num.frame, num.queues)![metric]!;
  const b = findRow(rows, den.backend, den.dir, den.frame, den.queues)![metric]!;
  const figures = `${label(num)} ${metricText(a, metric)} / ${label(den)} ${metricText(b, metric)}`;
  const measured = ratio(a, b);
  // A reference that moved nothing gives no ratio: the comparison is not meaningful.
  if (measured === undefined) return { ...base, detail: `${figures}: the reference moved nothing, no ratio` };
  return { ...base, measured, met: measured >= threshold, detail: figures };
}

/** The issue's targets, computed from rows of this run only. 1 queue pair is the headline; 2 pairs are added where both rows exist. */
export function evaluateTargets(rows: Row[], latency: LatencyResult, idle: IdleResult, memory: MemoryResult): Target[] {
  const targets: Target[] = [];
  const both = (a: RowRef, b: RowRef): boolean =>
    findRow(rows, a.backend, a.dir, a.frame, a.queues) !== undefined && findRow(rows, b.backend, b.dir, b.frame, b.queues) !== undefined;
  const pair = (name: (q: number) => string, threshold: number, num: Omit<RowRef, 'queues'>, den: Omit<RowRef, 'queues'>, metric: Metric, informational = false): void => {
    for (const queues of [1, 2]) {
      const n = { ...num, queues };
      const d = { ...den, queues };
      if (queues > 1 && !both(n, d)) continue;
      targets.push(ratioTarget(rows, name(queues), threshold, n, d, metric, informational));
    }
  };

  for (const frame of [64, 1500]) {
    const c = (q: number): string => caseLabel('g2h', frame, q);
    pair((q) => `${c(q)}: daemon vs testpmd, Mpps`, 1.25, { backend: 'daemon', dir: 'g2h', frame }, { backend: 'testpmd', dir: 'g2h', frame }, 'mpps');
    pair((q) => `${c(q)}: embedded vs raw write() loop, Mpps`, 1.0, { backend: 'embedded', dir: 'g2h', frame }, { backend: 'raw', dir: 'g2h', frame }, 'mpps');
    pair((q) => `${c(q)}: daemon vs raw write() loop, Mpps`, 1.0, { backend: 'daemon', dir: 'g2h', frame }, { backend: 'raw', dir: 'g2h', frame }, 'mpps', true);
  }
  {
    const c = (q: number): string => caseLabel('h2g', 64, q);
    pair((q) => `${c(q)}: daemon vs testpmd, Mpps`, 1.0, { backend: 'daemon', dir: 'h2g', frame: 64 }, { backend: 'testpmd', dir: 'h2g', frame: 64 }, 'mpps');
    pair((q) => `${c(q)}: embedded vs raw read() loop, Mpps`, 1.0, { backend: 'embedded', dir: 'h2g', frame: 64 }, { backend: 'raw', dir: 'h2g', frame: 64 }, 'mpps');
  }
  // testpmd's tap path carries no GSO: the issue's reference is its 1500 B rate.
  pair((q) => `${caseLabel('g2h', 'gso', q)}: embedded vs testpmd 1500 B, Gbit/s`, 3,
    { backend: 'embedded', dir: 'g2h', frame: 'gso' }, { backend: 'testpmd', dir: 'g2h', frame: 1500 }, 'gbps');

  targets.push(idleTarget(idle), latencyTarget(latency), memoryTarget(memory));
  return targets;
}

function idleTarget(idle: IdleResult): Target {
  const base: Target = { name: `no traffic: daemon CPU, connected and idle for ${idle.seconds} s`, want: '<= 1% of a core', threshold: 0.01, unit: 'core', detail: '' };
  if (idle.cpuSeconds === undefined || !Number.isFinite(idle.cpuSeconds) || !(idle.seconds > 0)) {
    return { ...base, detail: idleProblem(idle) };
  }
  const measured = idle.cpuSeconds / idle.seconds;
  // /proc/<pid>/stat counts 10 ms ticks: one stray tick over a short window is already a fraction of a percent.
  return { ...base, measured, met: measured <= base.threshold, detail: `${idle.cpuSeconds.toFixed(3)} CPU s in ${idle.seconds} s (10 ms resolution)` };
}

function idleProblem(idle: IdleResult): string {
  if (idle.error !== undefined) return `failed: ${firstLine(idle.error)}`;
  // processCpuSeconds gives NaN for a process that is gone.
  return idle.cpuSeconds === undefined ? 'not run' : 'no CPU figure (the daemon was gone when sampled)';
}

function latencyTarget(latency: LatencyResult): Target {
  const base: Target = { name: 'round trip added over the raw loop at p50 (embedded - raw)', want: '< 20 us', threshold: 20, unit: 'us', detail: '' };
  const { raw, embedded } = latency;
  if (!raw || !embedded || !Number.isFinite(raw.p50Us) || !Number.isFinite(embedded.p50Us)) {
    const missing = [!raw ? 'raw' : '', !embedded ? 'embedded' : ''].filter(Boolean).join(' and ') || 'a p50';
    const errors = latency.errors.map(firstLine).join('; ');
    return { ...base, detail: `no ${missing} ping-pong result${errors ? `: ${errors}` : ' (not run)'}` };
  }
  const measured = embedded.p50Us - raw.p50Us;
  const lost = raw.lost + embedded.lost > 0 ? `; lost: raw ${raw.lost} of ${raw.count}, embedded ${embedded.lost} of ${embedded.count}` : '';
  return {
    ...base, measured, met: measured < base.threshold,
    detail: `p50 embedded ${embedded.p50Us.toFixed(1)} us - raw ${raw.p50Us.toFixed(1)} us (p99 ${embedded.p99Us.toFixed(1)} vs ${raw.p99Us.toFixed(1)} us)${lost}`,
  };
}

function mappingCount(m: MemoryResult['mappings']): number | undefined {
  return m === undefined ? undefined : typeof m === 'number' ? m : m.length;
}

function memoryTarget(memory: MemoryResult): Target {
  const base: Target = {
    name: `memory: daemon RSS beyond guest memory, ${memory.queuePairs} pairs x ${memory.ringSize} entries`, want: '< 64 MB', threshold: 64, unit: 'MB', detail: '',
  };
  if (memory.netMb === undefined || !Number.isFinite(memory.netMb)) {
    return { ...base, detail: memory.error !== undefined ? `failed: ${firstLine(memory.error)}` : 'not run' };
  }
  const parts = [`RSS ${mb(memory.rssMb)} - guest memory ${mb(memory.guestMb)} = ${mb(memory.netMb)}`];
  if (memory.baselineRssMb !== undefined) parts.push(`before the frontend connected ${mb(memory.baselineRssMb)}`);
  const n = mappingCount(memory.mappings);
  // No guest mapping found means smaps did not show the frontend's memory: the figure would then include nothing to subtract.
  if (n === 0 || memory.guestMb === 0) parts.push('no guest memory mapping found in smaps');
  else if (n !== undefined) parts.push(`${n} guest mapping${n === 1 ? '' : 's'}`);
  return { ...base, measured: memory.netMb, met: memory.netMb < base.threshold, detail: parts.join('; ') };
}

/* ------------------------------------------------------------ formatting */

function mb(x: number | undefined): string {
  return x === undefined || !Number.isFinite(x) ? 'n/a' : `${x.toFixed(1)} MB`;
}

/** A number in at most `width` characters, with as many of `decimals` as fit. */
function fit(x: number | undefined, decimals: number, width: number): string {
  if (x === undefined || !Number.isFinite(x)) return '-';
  for (let d = decimals; d >= 0; d--) {
    const s = x.toFixed(d);
    if (s.length <= width) return s;
  }
  return x.toExponential(0);
}

function times(x: number | undefined): string {
  if (x === undefined || !Number.isFinite(x)) return '-';
  return `${x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : x.toFixed(0)}x`;
}

function measuredText(t: Target): string {
  if (t.measured === undefined) return '-';
  switch (t.unit) {
    case 'x':
      return times(t.measured);
    case 'us':
      return `${t.measured.toFixed(1)} us`;
    case 'MB':
      return `${t.measured.toFixed(1)} MB`;
    case 'core':
      return `${(t.measured * 100).toFixed(2)}%`;
  }
}

export function targetStatus(t: Target): string {
  if (t.met === undefined) return 'not measured';
  if (t.informational) return 'info';
  return t.met ? 'met' : 'NOT met';
}

function center(s: string, width: number): string {
  if (s.length >= width) return s.slice(0, width);
  const left = Math.floor((width - s.length) / 2);
  return `${' '.repeat(left)}${s}${' '.repeat(width - s.length - left)}`;
}

/** Greedy word wrap; the first line is prefixed with `first`, the others with `rest`. */
function wrap(text: string, width: number, first: string, rest: string): string[] {
  const lines: string[] = [];
  let line = first;
  let empty = true;
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (!empty && line.length + 1 + word.length > width) {
      lines.push(line);
      line = rest;
      empty = true;
    }
    line += empty ? word : ` ${word}`;
    empty = false;
  }
  if (!empty || lines.length === 0) lines.push(line);
  return lines;
}

/* ------------------------------------------------------------------ table */

const WIDTH = 120;
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

function throughputTable(allRows: readonly Row[], out: string[]): void {
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

function latencySection(l: LatencyResult, out: string[]): void {
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

function idleSection(idle: IdleResult, out: string[]): void {
  const what = `idle: vhost-tap daemon connected (1 pair), no traffic, ${idle.seconds} s:`;
  if (idle.cpuSeconds !== undefined && Number.isFinite(idle.cpuSeconds) && idle.seconds > 0) {
    out.push('', `${what} ${idle.cpuSeconds.toFixed(3)} CPU s = ${((idle.cpuSeconds / idle.seconds) * 100).toFixed(2)}% of a core`);
  } else out.push('', ...wrap(idleProblem(idle), WIDTH, `${what} `, '  '));
}

function memorySection(m: MemoryResult, out: string[]): void {
  const what = `memory: vhost-tap daemon, ${m.queuePairs} pairs x ${m.ringSize} entries, connected:`;
  if (m.netMb !== undefined && Number.isFinite(m.netMb)) {
    const n = mappingCount(m.mappings);
    const text = `RSS ${mb(m.rssMb)} - guest memory ${mb(m.guestMb)}${n !== undefined ? ` (${n} mapping${n === 1 ? '' : 's'})` : ''} = ${mb(m.netMb)} beyond ` +
      `guest memory${m.baselineRssMb !== undefined ? `; ${mb(m.baselineRssMb)} before the frontend connected` : ''}`;
    out.push(...wrap(text, WIDTH, `${what} `, '  '));
  } else out.push(...wrap(m.error !== undefined ? `FAILED: ${firstLine(m.error)}` : 'not run', WIDTH, `${what} `, '  '));
}

function guestSection(g: GuestResult, out: string[]): void {
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
function migrationSection(m: MigrationResult | undefined, out: string[]): void {
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
function switchLossSection(sl: SwitchLossResult | undefined, out: string[]): void {
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
function profileSection(rows: readonly Row[], out: string[]): void {
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

function targetsSection(targets: readonly Target[], out: string[]): void {
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

export function renderTable(report: Report): string {
  const out: string[] = [];
  throughputTable(report.rows, out);
  latencySection(report.latency, out);
  idleSection(report.idle, out);
  memorySection(report.memory, out);
  guestSection(report.guest, out);
  migrationSection(report.migration, out);
  switchLossSection(report.switchLoss, out);
  profileSection(report.rows, out);
  targetsSection(report.targets, out);
  if (report.notes.length > 0) {
    out.push('', 'notes:');
    for (const n of report.notes) out.push(...wrap(n, WIDTH, '- ', '  '));
  }
  return out.join('\n');
}

/* -------------------------------------------------------------------- SVG */

/** Text for XML: escaped, and without the control characters XML 1.0 forbids (error text can carry terminal escapes). */
function esc(s: string): string {
  return s
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\ufffe\uffff]/g, '')
    .replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

// The chart draws the split rows only (BACKENDS); packed ones are in the table.
const COLORS: Record<Backend, string> = { raw: '#8c8c8c', embedded: '#2b7bba', testpmd: '#e08a2b', daemon: '#3a9a4a', 'embedded-packed': '#7fb2dc', 'daemon-packed': '#8cc98f', 'embedded-steering': '#1d4f7a' };

/** 1, 2, 2.5 or 5 times a power of ten: the step for about `ticks` gridlines up to `max`. */
function niceStep(max: number, ticks: number): number {
  const raw = max / ticks;
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function n1(x: number): string {
  return (Math.round(x * 10) / 10).toString();
}

function tickText(v: number): string {
  return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(3)));
}

interface Panel {
  metric: Metric;
  title: string;
  unit: string;
  y: number;
  height: number;
}

function barPanel(s: string[], rows: readonly Row[], cases: readonly CaseKey[], p: Panel, x0: number, width: number): void {
  const headroom = 34; // rotated value labels above the tallest bar
  const plotTop = p.y + 22 + headroom;
  const plotBottom = p.y + p.height - 44;
  const plotH = plotBottom - plotTop;
  const values = rows.filter(usable).map((r) => r[p.metric]);
  const top = Math.max(0, ...values);
  const step = top > 0 ? niceStep(top, 4) : 1;
  const max = top > 0 ? Math.ceil(top / step) * step : 1;
  const y = (v: number): number => plotBottom - (Math.max(0, v) / max) * plotH;

  s.push(`<text x="${x0}" y="${p.y + 14}" font-size="13" font-weight="bold">${esc(p.title)}</text>`);
  for (let v = 0; v <= max + step / 2; v += step) {
    s.push(`<line x1="${x0}" y1="${n1(y(v))}" x2="${x0 + width}" y2="${n1(y(v))}" stroke="${v === 0 ? '#333' : '#e4e4e4'}"/>`);
    s.push(`<text x="${x0 - 6}" y="${n1(y(v) + 4)}" text-anchor="end" font-size="10" fill="#555">${esc(tickText(v))}</text>`);
  }
  const midY = (plotTop + plotBottom) / 2;
  s.push(`<text transform="translate(${x0 - 40},${n1(midY)}) rotate(-90)" text-anchor="middle" font-size="11" fill="#333">${esc(p.unit)}</text>`);

  const slot = width / Math.max(1, cases.length);
  const barW = Math.min(26, (slot * 0.84) / BACKENDS.length);
  cases.forEach((c, i) => {
    const cx = x0 + slot * (i + 0.5);
    const left = cx - (barW * BACKENDS.length) / 2;
    BACKENDS.forEach((b, j) => {
      const r = findRow(rows, b, c.dir, c.frame, c.queues);
      const bx = left + j * barW;
      const mid = bx + barW / 2;
      if (!r) return;
      if (!usable(r)) {
        const why = r.error !== undefined ? firstLine(r.error) : 'no rate';
        s.push(`<text transform="translate(${n1(mid + 3)},${n1(plotBottom - 3)}) rotate(-90)" font-size="9" fill="#c0392b">failed<title>${esc(`${rowLabel(r)}: ${why}`)}</title></text>`);
        return;
      }
      const v = r[p.metric];
      const by = y(v);
      const tip = `${rowLabel(r)}: ${r.mpps.toFixed(3)} Mpps, ${r.gbps.toFixed(2)} Gbit/s` +
        (r.cpuSecondsPerMpkt !== undefined ? `, ${r.cpuSecondsPerMpkt.toFixed(2)} CPU s/Mpkt` : '');
      s.push(`<rect x="${n1(bx + 0.5)}" y="${n1(by)}" width="${n1(Math.max(1, barW - 1))}" height="${n1(Math.max(0.5, plotBottom - by))}" fill="${COLORS[b]}"><title>${esc(tip)}</title></rect>`);
      const label = p.metric === 'mpps' ? fit(v, 3, 6) : fit(v, 2, 6);
      s.push(`<text transform="translate(${n1(mid + 3)},${n1(by - 3)}) rotate(-90)" font-size="9" fill="#333">${esc(label)}</text>`);
    });
    // Three short lines: '64 KB GSO' is about as wide as a case's slot.
    const lines = [dirLabel(c.dir, true), frameLabel(c.frame), `${c.queues} pair${c.queues === 1 ? '' : 's'}`];
    lines.forEach((text, k) => {
      s.push(`<text x="${n1(cx)}" y="${plotBottom + 12 + k * 11}" text-anchor="middle" font-size="9.5"${k === 1 ? '' : ' fill="#555"'}>${esc(text)}</text>`);
    });
  });
}

function targetColor(t: Target): string {
  if (t.met === undefined) return '#aaaaaa';
  if (t.informational) return '#6f8fb0';
  return t.met ? '#3a9a4a' : '#d0603a';
}

/** A self-contained SVG: Mpps and Gbit/s per case, one bar per backend, and the targets with their measured values. */
export function renderSvg(report: Report): string {
  const width = 1200;
  const chartX = 70;
  const chartW = 640;
  const listX = chartX + chartW + 30;
  const rows = report.rows.filter((r) => BACKENDS.includes(r.backend));
  const cases = casesOf(rows);
  const targets = report.targets;
  const lineH = 15;
  const panelH = 250;
  const top = 62;
  const legendY = top + 2 * panelH + 8;
  const height = Math.max(legendY + 40, top + 24 + targets.length * lineH + 40);

  const m = report.machine;
  const date = report.startedAt.replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  const machine = [m.hostname, m.cpus !== undefined ? `${String(m.cpus)} x ${String(m.cpuModel ?? 'CPU')}` : undefined, m.kernel !== undefined ? `Linux ${String(m.kernel)}` : undefined]
    .filter((x) => x !== undefined && x !== '').map(String).join(', ');
  const s: string[] = [];
  s.push('<?xml version="1.0" encoding="UTF-8"?>');
  s.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">`);
  s.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  s.push(`<text x="16" y="24" font-size="16" font-weight="bold">${esc(`vhost-tap bench: ${machine}`)}</text>`);
  const syscall = typeof m.syscallNs === 'number' ? `; a system call costs ${String(m.syscallNs)} ns here` : '';
  s.push(`<text x="16" y="42" font-size="11" fill="#555">${esc(`${date}, ${report.elapsedSeconds} s; tap counters over the measurement window; ` +
    `ratios only between rows of this run${syscall}`)}</text>`);

  if (cases.length === 0) s.push(`<text x="${chartX}" y="${top + 40}" fill="#999">no throughput cases run</text>`);
  else {
    barPanel(s, rows, cases, { metric: 'mpps', title: 'Packet rate', unit: 'Mpps', y: top, height: panelH }, chartX, chartW);
    barPanel(s, rows, cases, { metric: 'gbps', title: 'Bit rate (Ethernet frames; 64 KB GSO = one frame)', unit: 'Gbit/s', y: top + panelH, height: panelH }, chartX, chartW);
  }
  // Legend: backend colours, labelled for guest-to-host (raw and testpmd read the other way round host-to-guest).
  let lx = chartX;
  for (const b of BACKENDS) {
    const text = b === 'raw' ? 'raw write()/read() loop' : b === 'testpmd' ? 'DPDK testpmd' : backendLabel(b, 'g2h');
    s.push(`<rect x="${lx}" y="${legendY}" width="12" height="12" fill="${COLORS[b]}"/>`);
    s.push(`<text x="${lx + 17}" y="${legendY + 10}" font-size="11">${esc(text)}</text>`);
    lx += 30 + text.length * 6.4;
  }
  s.push(`<text x="${chartX}" y="${legendY + 28}" font-size="10" fill="#777">${esc('failed = the case ran and failed (hover for the error); no bar = not run')}</text>`);

  s.push(`<line x1="${listX - 14}" y1="${top}" x2="${listX - 14}" y2="${height - 20}" stroke="#ddd"/>`);
  s.push(`<text x="${listX}" y="${top + 14}" font-size="13" font-weight="bold">Targets</text>`);
  targets.forEach((t, i) => {
    const ty = top + 34 + i * lineH;
    const status = targetStatus(t);
    s.push(`<circle cx="${listX + 5}" cy="${ty - 4}" r="4.5" fill="${targetColor(t)}"><title>${esc(status)}</title></circle>`);
    const short = t.name.replace('guest->host', 'g->h').replace('host->guest', 'h->g');
    const name = short.length > 50 ? `${short.slice(0, 49)}...` : short;
    s.push(`<text x="${listX + 15}" y="${ty}" font-size="10">${esc(name)}<title>${esc(`${t.name}: want ${t.want}, measured ${measuredText(t)} (${status}). ${t.detail}`)}</title></text>`);
    s.push(`<text x="${width - 12}" y="${ty}" font-size="10" text-anchor="end" fill="${targetColor(t)}">${esc(`${t.measured === undefined ? 'n/a' : measuredText(t)} (${t.want})`)}</text>`);
  });
  const ky = top + 34 + targets.length * lineH + 8;
  const keys: [string, string][] = [['#3a9a4a', 'met'], ['#d0603a', 'NOT met'], ['#aaaaaa', 'not measured'], ['#6f8fb0', 'info (not a target)']];
  let kx = listX;
  for (const [color, text] of keys) {
    s.push(`<circle cx="${kx + 5}" cy="${ky - 4}" r="4.5" fill="${color}"/><text x="${kx + 13}" y="${ky}" font-size="10" fill="#555">${esc(text)}</text>`);
    kx += 22 + text.length * 5.6;
  }
  s.push('</svg>');
  return `${s.join('\n')}\n`;
}

/**
 * The README's "Performance" block for a run: the machine (with what a system call
 * costs there, which the ratios against the raw loops follow), the chart, the table
 * as the terminal showed it, and the issue's targets as a Markdown table.
 */
export function renderMarkdown(report: Report): string {
  const m = report.machine;
  const date = report.startedAt.replace('T', ' ').replace(/:\d\d\.\d+Z$/, ' UTC');
  const known = (x: unknown): x is string | number => (typeof x === 'string' && x !== '') || typeof x === 'number';
  const machine = [
    `${String(m.cpus ?? '?')} x ${String(m.cpuModel ?? 'CPU')}`,
    known(m.kernel) ? `Linux ${m.kernel}` : undefined,
    known(m.memoryGb) ? `${m.memoryGb} GB` : undefined,
    known(m.dpdk) ? `DPDK ${m.dpdk}` : undefined,
    known(m.qemu) ? String(m.qemu) : undefined,
  ].filter((x) => x !== undefined).join(', ');
  const syscall = known(m.syscallNs)
    ? `; a system call costs ${m.syscallNs} ns here${known(m.meltdown) ? ` (${m.meltdown})` : ''}`
    : '';
  const c = report.config;
  const out: string[] = [];
  out.push(`Taken ${date} on ${machine}${syscall}; ${report.elapsedSeconds} s, best of ${String(c.repeat ?? '?')} windows of ${String(c.seconds ?? '?')} s per case.`);
  out.push('', '![bench chart](bench/results/latest.svg)', '', '```');
  const text = renderTable({ ...report, targets: [], notes: [] }).split('\n');
  // The empty targets section's header line closes the rendering: the targets follow as a table.
  while (text.length > 0 && !text[text.length - 1]!.startsWith('targets (')) text.pop();
  text.pop();
  while (text.length > 0 && text[text.length - 1]!.trim() === '') text.pop();
  out.push(...text, '```', '');
  const counted = report.targets.filter((t) => !t.informational);
  const met = counted.filter((t) => t.met === true).length;
  out.push(`The issue's targets, as ratios between rows of this run: ${met} of ${counted.length} met.`, '');
  out.push('| target | want | measured | |', '|---|---|---|---|');
  for (const t of counted) out.push(`| ${t.name} | ${t.want} | ${measuredText(t)} | ${targetStatus(t)} |`);
  return out.join('\n');
}
