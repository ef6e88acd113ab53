import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { Tap, closeFd, readTapLinkInfo, receiveFds, sendFds, sendTapQueues, socketPair } from '../src';
import { TapSteering } from '../src/tap/steering';
import { sleep } from '../harness/wait';
import { assertPrivateNetns, drainFrames, run, uniqueName } from './helpers/system';

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
  const steering = TapSteering.load();
  try {
    steering.attach(tap);
    sendTapQueues(parentEnd, tap, { steering });
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

    // The parent (root) loaded and attached the steering program and sent its map with
    // the queues; the child, without any capability, moves every flow onto queue 1.
    say('steer');
    const steered = await hear();
    assert.equal([steered.hasSteering, steered.steerError], [true, 'none'], 'the unprivileged child steers through the map it was handed');
    run('ip', ['addr', 'add', '10.7.1.1/24', 'dev', name]);
    run('ip', ['link', 'set', 'dev', name, 'up']);
    run('ip', ['neigh', 'replace', '10.7.1.2', 'lladdr', '52:54:00:12:34:56', 'dev', name, 'nud', 'permanent']);
    for (const q of tap.queues) drainFrames(q.fd);
    const udp = dgram.createSocket('udp4');
    for (let port = 6000; port < 6032; port++) await new Promise<void>((resolve, reject) => udp.send(Buffer.from('x'), port, '10.7.1.2', (e) => (e ? reject(e) : resolve())));
    udp.close();
    await sleep(50);
    const udpFrames = (fd: number): number => drainFrames(fd).filter((f) => f.readUInt16BE(12 + 12) === 0x0800 && f[12 + 23] === 17).length;
    assert.equal([udpFrames(tap.queues[0]!.fd), udpFrames(tap.queues[1]!.fd)], [0, 32], 'all 32 flows on queue 1, as the child steered them');

    say('open');
    const opened = await hear();
    const tunMode = String(opened.tunMode);
    // With /dev/net/tun at 0600 the open itself is refused (EACCES); at 0666 TUNSETIFF is (EPERM: no CAP_NET_ADMIN).
    assert.is(opened.createError, tunMode === '600' ? 'EACCES' : 'EPERM', `nobody cannot make a tap (/dev/net/tun mode ${tunMode})`);
    assert.is(await exited, 0);
  } finally {
    child.kill('SIGKILL');
    closeFd(parentEnd);
    steering.close();
    tap.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
