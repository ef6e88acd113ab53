// The system tools the harness runs, and what to install when one is missing.
import fs from 'node:fs';
import path from 'node:path';

const TOOL_PACKAGES: Record<string, string> = {
  'qemu-system-x86_64': 'qemu-system-x86',
  'dpdk-testpmd': 'dpdk-dev (plus dpdk librte-net-vhost23 librte-net-tap23)',
  iperf3: 'iperf3',
  ping: 'iputils-ping',
  ethtool: 'ethtool',
  ip: 'iproute2',
  setpriv: 'util-linux',
  'apt-get': 'apt',
  'dpkg-deb': 'dpkg',
  xz: 'xz-utils',
};

function onPath(name: string): boolean {
  return (process.env.PATH || '/usr/sbin:/usr/bin:/sbin:/bin').split(':').some((dir) => {
    try {
      fs.accessSync(path.join(dir || '.', name), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** Throws a clear error naming the Debian packages to install if a tool is missing. */
export function requireTools(...names: string[]): void {
  const missing = names.filter((name) => !onPath(name));
  if (missing.length === 0) return;
  const pkgs = missing.map((name) => TOOL_PACKAGES[name] ?? name);
  throw new Error(`the end-to-end tests need ${missing.join(', ')} on PATH: apt-get install -y --no-install-recommends ${pkgs.join(' ')}`);
}

/** The last `lines` lines of a text, for error messages. */
export function tail(text: string, lines = 40): string {
  const all = text.replace(/\r/g, '').trimEnd().split('\n');
  return all.slice(-lines).join('\n');
}
