// The C++ unit tests of the native core (native/tests: the ring walkers, guest
// memory, the dirty log, the queue-pair worker over a socketpair), one uvu test
// per C++ case so that each counts in `N passed, N failed`. Each case runs in a
// process of its own: a crash or a hang is that case's failure, not the suite's.
// They need no root, no tap and no network namespace.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

/** dist/test/native-unit.test.js -> the repository. */
const REPO = path.resolve(__dirname, '..', '..');
/** Built by `npm run build` (cmake-js builds every target) beside the addon; VHOST_TAP_NATIVE_TESTS for another build. */
const BINARY = process.env.VHOST_TAP_NATIVE_TESTS
  ? path.resolve(process.env.VHOST_TAP_NATIVE_TESTS)
  : path.join(REPO, 'build', 'Release', 'vhost_tap_tests');
/** Generous: the slowest case takes well under a second; a hang must still end. */
const CASE_TIMEOUT_MS = 60_000;

function listCases(): string[] | Error {
  if (!fs.existsSync(BINARY)) {
    return new Error(`${BINARY} is missing: build it with \`npm run build\` (cmake-js builds native/tests into build/Release)`);
  }
  const list = spawnSync(BINARY, ['--list'], { encoding: 'utf8', timeout: CASE_TIMEOUT_MS });
  if (list.error) return list.error;
  if (list.status !== 0) return new Error(`${BINARY} --list exited with ${list.status ?? list.signal}: ${list.stderr}`);
  const names = list.stdout.split('\n').filter((line) => line.length > 0);
  if (names.length === 0) return new Error(`${BINARY} --list names no case`);
  return names;
}

const cases = listCases();
if (cases instanceof Error) {
  test('the C++ unit tests are built and list their cases', () => {
    assert.unreachable(cases.message);
  });
} else {
  for (const name of cases) {
    test(`native: ${name}`, () => {
      const run = spawnSync(BINARY, [name], { encoding: 'utf8', timeout: CASE_TIMEOUT_MS });
      const output = `${run.stdout}${run.stderr}`.trim();
      if (run.error) assert.unreachable(`${name}: ${run.error.message}\n${output}`);
      if (run.signal) assert.unreachable(`${name}: killed by ${run.signal}${run.signal === 'SIGTERM' ? ` (timed out after ${CASE_TIMEOUT_MS} ms)` : ''}\n${output}`);
      assert.ok(run.status === 0, `${name} failed (exit ${run.status}):\n${output}`);
    });
  }
}

test.run();
