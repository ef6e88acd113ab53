import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { Tap, closeFd, readTapLinkInfo, receiveFds, sendFds, sendTapQueues, socketPair } from '../src';
import { assertPrivateNetns, uniqueName } from './helpers/system';

assertPrivateNetns();

const NOBODY = 65534;
const root = path.resolve(__dirname, '..', '..');

/**
 * The child runs as nobody, which may not be able to read this checkout (a home
 * directory, say): it gets a world-readable copy of the compiled code and addon.
 */
function stageChild(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhost-tap-child-'));
  fs.cpSync(path.join(root, 'dist', 'src'), path.join(dir, 'dist', 'src'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'dist', 'test', 'helpers'), { recursive: true });
  fs.copyFileSync(path.join(root, 'dist', 'test', 'helpers', 'unprivileged-child.js'), path.join(dir, 'dist', 'test', 'helpers', 'unprivileged-child.js'));
  fs.mkdirSync(path.join(dir, 'build', 'Release'), { recursive: true });
  fs.copyFileSync(path.join(root, 'build', 'Release', 'vhost_tap.node'), path.join(dir, 'build', 'Release', 'vhost_tap.node'));
  fs.chmodSync(dir, 0o755);
  return dir;
}

test('an unprivileged process handed the queue fds detaches and re-attaches a queue; it cannot make a tap itself', async () => {
  const name = uniqueName('vtu');
  const tap = Tap.create({ name, queues: 2, persist: true, owner: NOBODY });
  const [parentEnd, childEnd] = socketPair('seqpacket');
  const dir = stageChild();
  const child = spawn('setpriv', [
    `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--no-new-privs',
    '--', process.execPath, path.join(dir, 'dist', 'test', 'helpers', 'unprivileged-child.js'),
  ], {
    stdio: ['ignore', 'inherit', 'inherit', childEnd],
    // c8's coverage directory is root's. Node passes NODE_V8_COVERAGE on to every
    // child unless the env names it: an empty value turns coverage off there.
    env: { ...process.env, NODE_V8_COVERAGE: '' },
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  closeFd(childEnd);
  const hear = async (): Promise<Record<string, unknown>> => {
    const { data } = await receiveFds(parentEnd, { maxFds: 0, timeoutMs: 20_000 });
    const message = JSON.parse(data.toString()) as Record<string, unknown>;
    if (message.step === 'error') throw new Error(`child failed: ${String(message.code)} ${String(message.message)}`);
    return message;
  };
  const say = (word: string): void => {
    sendFds(parentEnd, [], Buffer.from(word));
  };
  try {
    sendTapQueues(parentEnd, tap);
    const received = await hear();
    assert.is(received.uid, NOBODY);
    assert.is(received.capEff, '0000000000000000', 'the child has no capabilities');
    assert.is(received.name, name);
    assert.is(received.queues, 2);

    say('detach');
    assert.is((await hear()).step, 'detached');
    assert.is(readTapLinkInfo(name).numDisabled, 1);

    say('attach');
    assert.is((await hear()).step, 'attached');
    assert.is(readTapLinkInfo(name).numDisabled, 0);

    say('open');
    const opened = await hear();
    const tunMode = String(opened.tunMode);
    // With /dev/net/tun at 0600 the open itself is refused (EACCES); at 0666 TUNSETIFF is (EPERM: no CAP_NET_ADMIN).
    assert.is(opened.createError, tunMode === '600' ? 'EACCES' : 'EPERM', `nobody cannot make a tap (/dev/net/tun mode ${tunMode})`);
    assert.is(await exited, 0);
  } finally {
    child.kill('SIGKILL');
    closeFd(parentEnd);
    tap.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
