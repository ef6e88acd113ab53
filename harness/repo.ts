// The checkout the harness belongs to.
import fs from 'node:fs';
import path from 'node:path';

function findRepoRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg) && fs.existsSync(path.join(dir, 'scripts', 'build-guest.sh'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no vhost-tap checkout (package.json + scripts/build-guest.sh) above ${from}`);
  }
}

/** The checkout this harness belongs to (works from harness/ and dist/harness/). */
export const REPO_ROOT = findRepoRoot(__dirname);
