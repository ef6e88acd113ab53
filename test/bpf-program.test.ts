// The steering program the addon loads is committed bytecode
// (native/addon/bpf/steering_program.h): check that it is what its C source
// (native/addon/bpf/steering.bpf.c) builds to, so that nobody ships a header that no
// longer matches the source they read.
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

const ROOT = path.resolve(__dirname, '..', '..');

test('native/addon/bpf/steering_program.h is what scripts/build-bpf.py builds from native/addon/bpf/steering.bpf.c', () => {
  const clang = spawnSync('clang-14', ['--version'], { encoding: 'utf8' });
  assert.ok(clang.status === 0, 'clang-14 is needed to check the steering program (Debian: apt-get install clang-14; .ci/run installs it)');
  const out = execFileSync('python3', [path.join(ROOT, 'scripts', 'build-bpf.py'), '--check'], { encoding: 'utf8', cwd: ROOT });
  assert.match(out, /is up to date/);
});

test.run();
