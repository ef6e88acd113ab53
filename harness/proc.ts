// What the kernel says about processes and links: CPU time from /proc, link
// counters from `ip -s -j link`, memory from /proc/<pid>/smaps.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

/** sysconf(_SC_CLK_TCK): the unit of /proc/PID/stat's utime and stime (100 on Linux everywhere but a few old ports). */
const CLK_TCK = ((): number => {
  try {
    const v = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
    return v > 0 ? v : 100;
  } catch {
    return 100;
  }
})();

/** utime + stime of a whole process (every thread), in seconds; NaN if it is gone. */
export function processCpuSeconds(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** CPU time of one thread in seconds (schedstat: nanoseconds on the CPU), NaN if it is gone. */
export function threadCpuSeconds(pid: number | 'self', tid: number): number {
  try {
    const s = fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8');
    return Number(s.split(' ')[0]) / 1e9;
  } catch {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
    } catch {
      return NaN;
    }
  }
}

/** Voluntary + involuntary context switches of a process's threads (all, or those in `tids`): how often they slept or were preempted. */
export function contextSwitches(pid: number, tids?: number[]): number {
  let total = 0;
  let list: number[];
  try {
    list = tids ?? fs.readdirSync(`/proc/${pid}/task`).map(Number);
  } catch {
    return NaN;
  }
  for (const tid of list) {
    try {
      const status = fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      for (const m of status.matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)/gm)) total += Number(m[1]);
    } catch {
      // thread gone
    }
  }
  return total;
}

/** Thread ids of a process (this one by default), from /proc/PID/task. */
export function threadIds(pid: number | 'self' = 'self'): number[] {
  return fs.readdirSync(`/proc/${pid}/task`).map(Number);
}

/** A process's comm (what ps shows), '' if it is gone. */
export function processName(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

export interface LinkCounters {
  rxPackets: number;
  rxBytes: number;
  rxDropped: number;
  txPackets: number;
  txBytes: number;
  txDropped: number;
}

function sysfsCounters(dev: string): LinkCounters | undefined {
  const dir = `/sys/class/net/${dev}/statistics`;
  try {
    const n = (name: string): number => Number(fs.readFileSync(`${dir}/${name}`, 'utf8'));
    return {
      rxPackets: n('rx_packets'), rxBytes: n('rx_bytes'), rxDropped: n('rx_dropped'),
      txPackets: n('tx_packets'), txBytes: n('tx_bytes'), txDropped: n('tx_dropped'),
    };
  } catch {
    return undefined;
  }
}

/**
 * A link's counters: in network namespace `netns` from `ip -n NETNS -s -j link show dev DEV`;
 * in this process's own namespace from /sys/class/net/DEV/statistics (no fork), or `ip` where
 * /sys is not this namespace's. The same dev_get_stats() figures either way.
 */
export function linkCounters(dev: string, netns?: string): LinkCounters {
  if (!netns) {
    const s = sysfsCounters(dev);
    if (s) return s;
  }
  const out = execFileSync('ip', [...(netns ? ['-n', netns] : []), '-s', '-j', 'link', 'show', 'dev', dev], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const s = (JSON.parse(out) as { stats64: { rx: Record<string, number>; tx: Record<string, number> } }[])[0]!.stats64;
  return {
    rxPackets: s.rx.packets!, rxBytes: s.rx.bytes!, rxDropped: s.rx.dropped ?? 0,
    txPackets: s.tx.packets!, txBytes: s.tx.bytes!, txDropped: s.tx.dropped ?? 0,
  };
}

export function diffCounters(a: LinkCounters, b: LinkCounters): LinkCounters {
  return {
    rxPackets: b.rxPackets - a.rxPackets, rxBytes: b.rxBytes - a.rxBytes, rxDropped: b.rxDropped - a.rxDropped,
    txPackets: b.txPackets - a.txPackets, txBytes: b.txBytes - a.txBytes, txDropped: b.txDropped - a.txDropped,
  };
}

export interface MemoryReport {
  rssKb: number;
  /** RSS of the guest memory mappings (shared memfd / hugetlbfs / shm regions). */
  guestRssKb: number;
  guestMappings: { name: string; sizeKb: number; rssKb: number }[];
}

/**
 * RSS of a process, and how much of it is guest memory it maps: shared mappings of the fds a
 * vhost-user frontend sent with SET_MEM_TABLE / ADD_MEM_REG. DPDK virtio_user with --no-huge
 * maps its EAL memory from memfd_create("nohuge") ('/memfd:nohuge (deleted)'); with hugepages,
 * rtemap_N files on hugetlbfs; QEMU's memory-backend-memfd is '/memfd:mem (deleted)'.
 */
export function memoryReport(pid: number): MemoryReport {
  const text = fs.readFileSync(`/proc/${pid}/smaps`, 'utf8');
  let rss = 0;
  let guest = 0;
  const mappings: MemoryReport['guestMappings'] = [];
  let current: { name: string; shared: boolean; sizeKb: number; rssKb: number } | undefined;
  const flush = (): void => {
    if (!current) return;
    rss += current.rssKb;
    if (current.shared && /memfd:|\/dev\/hugepages|\/dev\/shm|\/run\/shm|rtemap/i.test(current.name)) {
      guest += current.rssKb;
      mappings.push({ name: current.name, sizeKb: current.sizeKb, rssKb: current.rssKb });
    }
  };
  for (const line of text.split('\n')) {
    const header = /^[0-9a-f]+-[0-9a-f]+\s+(\S{4})\s+\S+\s+\S+\s+\d+\s*(.*)$/.exec(line);
    if (header) {
      flush();
      current = { name: header[2]!.trim(), shared: header[1]![3] === 's', sizeKb: 0, rssKb: 0 };
      continue;
    }
    const m = /^(Size|Rss):\s+(\d+) kB/.exec(line);
    if (m && current) {
      if (m[1] === 'Size') current.sizeKb = Number(m[2]);
      else current.rssKb = Number(m[2]);
    }
  }
  flush();
  return { rssKb: rss, guestRssKb: guest, guestMappings: mappings };
}

