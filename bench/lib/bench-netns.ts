// The bench's network namespaces (vtbench-PID-N), and what a killed run left of them.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

import { Netns } from '../../harness/netns';

export function newNetns(): Netns {
  const ns = Netns.create('vtbench');
  // No IPv6 chatter (router/neighbour solicitations) on the taps: only the frames we send.
  ns.exec('sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  return ns;
}

/** Namespaces and DPDK runtime dirs left by a run that was killed (SIGKILL leaves no chance to clean). */
export function removeStale(): void {
  let names: string[] = [];
  try {
    names = fs.readdirSync('/run/netns');
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^vtbench-(\d+)-\d+$/.exec(name);
    if (!m || fs.existsSync(`/proc/${m[1]}`)) continue;
    try {
      for (const pid of execFileSync('ip', ['netns', 'pids', name], { encoding: 'utf8' }).split(/\s+/).filter(Boolean)) process.kill(Number(pid), 'SIGKILL');
    } catch {
      // gone
    }
    try {
      execFileSync('ip', ['netns', 'delete', name], { stdio: 'ignore' });
    } catch {
      // gone
    }
    for (const suffix of ['', '-vu']) fs.rmSync(`/var/run/dpdk/${name}${suffix}`, { recursive: true, force: true });
  }
}
