// Examples make devices: they run in a network namespace of their own, which
// dies with them. A process started outside one re-runs itself under
// `unshare --net` (that needs root, as creating a tap does).
import { spawnSync } from 'node:child_process';

const MARK = 'VHOST_TAP_EXAMPLE_NETNS';

/** Returns in the private namespace; in the parent, waits for the child and exits with its status. */
export function enterPrivateNetns(): void {
  if (process.env[MARK] === '1') return;
  if (process.getuid?.() !== 0) {
    console.error('This example creates a tap device in a private network namespace: run it as root.');
    process.exit(1);
  }
  const script = `ip link set lo up && exec "${process.execPath}" "$@"`;
  const child = spawnSync('unshare', ['--net', '--', 'sh', '-c', script, 'sh', ...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, [MARK]: '1' },
  });
  if (child.error) {
    console.error(`could not start unshare: ${child.error.message}`);
    process.exit(1);
  }
  process.exit(child.status ?? 1);
}
