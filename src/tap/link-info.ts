// What the kernel says of a tap link (the IFLA_TUN_* attributes `ip -d link`
// prints): queue counts, vnet header, persistence. Read through iproute2's JSON
// output; the numbers are the kernel's, nothing is kept here.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

import { makeError } from '../errors';
import { checkInterfaceName } from './names';

export interface TapLinkInfo {
  name: string;
  ifindex: number;
  mtu: number;
  up: boolean;
  type: 'tun' | 'tap';
  pi: boolean;
  vnetHdr: boolean;
  multiQueue: boolean;
  persist: boolean;
  /** Queues open on the device, attached or not. */
  numQueues: number;
  /** Queues detached with TUNSETQUEUE. */
  numDisabled: number;
  owner?: number;
  group?: number;
  /** The device's counters. tx is towards the queue readers: `txDropped` counts frames lost on full queue rings. */
  stats: { rxPackets: number; rxBytes: number; rxDropped: number; txPackets: number; txBytes: number; txDropped: number };
}

interface IpStats { bytes?: number; packets?: number; dropped?: number }

interface IpLinkJson {
  ifindex: number;
  ifname: string;
  mtu: number;
  flags: string[];
  linkinfo?: { info_kind?: string; info_data?: Record<string, unknown> };
  stats64?: { rx?: IpStats; tx?: IpStats };
}

/** Reads a tap's link attributes in this network namespace (needs iproute2's `ip`). */
export function readTapLinkInfo(name: string): TapLinkInfo {
  checkInterfaceName(name);
  let out: string;
  try {
    out = execFileSync('ip', ['-d', '-s', '-j', 'link', 'show', 'dev', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    const stderr = String((error as { stderr?: unknown }).stderr ?? '');
    if (/does not exist/.test(stderr)) throw makeError('ENOENT', `no network device named "${name}" in this namespace`, error);
    throw makeError('EIO', `could not run "ip -d -j link show dev ${name}" (is iproute2 installed?): ${stderr.trim()}`, error);
  }
  const link = (JSON.parse(out) as IpLinkJson[])[0];
  const data = link?.linkinfo?.info_data;
  if (!link || link.linkinfo?.info_kind !== 'tun' || !data) throw makeError('EINVAL', `"${name}" is not a tun/tap device`);
  const flag = (key: string): boolean => data[key] === true || data[key] === 'on';
  const num = (key: string): number => (typeof data[key] === 'number' ? (data[key] as number) : 0);
  const info: TapLinkInfo = {
    name: link.ifname,
    ifindex: link.ifindex,
    mtu: link.mtu,
    up: link.flags.includes('UP'),
    type: data.type === 'tun' ? 'tun' : 'tap',
    pi: flag('pi'),
    vnetHdr: flag('vnet_hdr'),
    multiQueue: flag('multi_queue'),
    persist: flag('persist'),
    numQueues: num('numqueues'),
    numDisabled: num('numdisabled'),
    stats: {
      rxPackets: link.stats64?.rx?.packets ?? 0,
      rxBytes: link.stats64?.rx?.bytes ?? 0,
      rxDropped: link.stats64?.rx?.dropped ?? 0,
      txPackets: link.stats64?.tx?.packets ?? 0,
      txBytes: link.stats64?.tx?.bytes ?? 0,
      txDropped: link.stats64?.tx?.dropped ?? 0,
    },
  };
  const owner = resolveId(data.user, '/etc/passwd');
  const group = resolveId(data.group, '/etc/group');
  if (owner !== undefined) info.owner = owner;
  if (group !== undefined) info.group = group;
  return info;
}

/** iproute2 prints owner and group by name where it can: turn them back into ids. */
function resolveId(value: unknown, database: string): number | undefined {
  if (typeof value === 'number') return value;
  if (typeof value !== 'string') return undefined;
  if (/^\d+$/.test(value)) return Number(value);
  try {
    for (const line of readFileSync(database, 'utf8').split('\n')) {
      const fields = line.split(':');
      if (fields[0] === value && fields[2] !== undefined) return Number(fields[2]);
    }
  } catch {
    // no database: leave the id unknown
  }
  return undefined;
}
