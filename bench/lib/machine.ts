// The machine a run measured, as the report shows it: CPUs, kernel, DPDK and QEMU
// versions, and what one system call costs here (the raw loops' ratios follow it).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';

import { BACKEND_CPU } from '../case';
import { bench } from './native';

export function machineInfo(): Record<string, unknown> {
  let dpdk = '';
  try {
    dpdk = execFileSync('dpkg-query', ['-W', '-f', '${Version}', 'dpdk'], { encoding: 'utf8' });
  } catch {
    // not from Debian
  }
  let qemu = '';
  try {
    qemu = execFileSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' }).split('\n')[0]!;
  } catch {
    // not installed
  }
  let meltdown = '';
  try {
    // "Mitigation: PTI": every system call switches page tables, which is what makes a call cost a microsecond on some VMs.
    meltdown = fs.readFileSync('/sys/devices/system/cpu/vulnerabilities/meltdown', 'utf8').trim();
  } catch {
    // not reported by this kernel
  }
  return {
    hostname: os.hostname(), cpus: os.cpus().length, loadAverage: os.loadavg().map((x) => Number(x.toFixed(2))), cpuModel: os.cpus()[0]?.model, kernel: os.release(),
    memoryGb: Math.round(os.totalmem() / 2 ** 30), node: process.version, dpdk, qemu,
    // The raw loops pay one system call per frame and the data path one per batch: their ratio follows this.
    syscallNs: Number(bench.syscallCostNs(BACKEND_CPU).toFixed(0)), meltdown,
  };
}
