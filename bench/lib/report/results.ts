// The shapes of a run's results, as bench/results/*.json holds them: one row per
// (backend, direction, frame, queue pairs), and a section per other measurement.
// Pure data: the renderers work from a saved latest.json as from a live run.

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
 * Round trips of a ping-pong, in microseconds: the shape the bench addon's loops return
 * (bench/lib/native.ts uses this one). Declared here so that rendering a saved report
 * loads no addon.
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
  /** The guest memory mappings (harness/proc.ts's list), or just their count. */
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
  /** Reported next to the targets for context; not one of the targets. */
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
