// The kick and call fds of a queue pair come from the frontend (SET_VRING_KICK /
// SET_VRING_CALL), which shares their file descriptions with us and may do
// anything to them at any moment. The worker must never block on them, and
// never touch an fd number that was handed to it once the caller has closed it.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { closeFd, receiveFds, sendFds, socketPair } from '../src';
import { QueuePair } from '../src/virtio/queue-pair';
import { GUEST_IP, HOST_IP, withDataPath } from './helpers/datapath';
import type { HostileCallReport } from './helpers/hostile-call-child';
import { ethernet, GUEST_MAC, ipv4, pattern, udp } from '../harness/packets';
import { sleep } from '../harness/wait';
import { assertPrivateNetns, fdCount } from './helpers/system';

assertPrivateNetns();

const CHILD = path.join(__dirname, 'helpers', 'hostile-call-child.js');
/** Liveness, not speed: a stop that hangs hangs forever. */
const STOP_MS = 1000;
const CHILD_MS = 15_000;

// The hostile frontend: makes the fd, hands it to the child as fd 3 (a shared file
// description, as SCM_RIGHTS gives), then clears O_NONBLOCK on it every millisecond
// until the child exits, as a frontend may at any moment after the backend set it.
const FRONTEND = String.raw`
import fcntl, os, sys, time
shape, argv = sys.argv[1], sys.argv[2:]
if shape == 'eventfd':
    fd = os.eventfd(0)
    os.eventfd_write(fd, 0xfffffffffffffffe)  # one more and a blocking write() waits for a read
else:
    reader, fd = os.pipe()
    os.set_blocking(fd, False)
    for chunk in (65536, 1):
        try:
            while True:
                os.write(fd, b'x' * chunk)
        except BlockingIOError:
            pass
os.set_blocking(fd, True)
pid = os.fork()
if pid == 0:
    os.dup2(fd, 3)
    os.set_inheritable(3, True)
    os.execv(argv[0], argv)
while True:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        sys.exit(os.waitstatus_to_exitcode(status))
    time.sleep(0.001)
`;

/** Runs the child under the frontend; undefined if it did not finish in time (it was killed). */
function runHostileCall(shape: 'eventfd' | 'pipe'): Promise<{ report?: HostileCallReport; stderr: string }> {
  return new Promise((resolve, reject) => {
    // Its own process group, so a child stuck in stop() dies with the frontend on timeout.
    const frontend = spawn('python3', ['-c', FRONTEND, shape, process.execPath, CHILD], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    frontend.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    frontend.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => process.kill(-frontend.pid!, 'SIGKILL'), CHILD_MS);
    frontend.on('error', reject);
    frontend.on('close', () => {
      clearTimeout(timer);
      const line = stdout.trim().split('\n').pop();
      resolve({ ...(line ? { report: JSON.parse(line) as HostileCallReport } : {}), stderr });
    });
  });
}

test('a call eventfd at 0xfffffffffffffffe with O_NONBLOCK cleared: the call is made, stop() returns, nothing leaks', async () => {
  const { report, stderr } = await runHostileCall('eventfd');
  assert.ok(report, `the child never reported: stop() did not return within ${CHILD_MS} ms (${stderr})`);
  assert.is(report!.constructError, undefined);
  assert.ok(report!.stopMs! < STOP_MS, `stop() took ${report!.stopMs!.toFixed(0)} ms`);
  assert.ok(report!.stats!.tx.packets >= 1, 'the frame was sent');
  // The kernel's eventfd_signal() saturates instead of waiting.
  assert.ok(report!.stats!.tx.calls >= 1, `the call was made (${JSON.stringify(report!.stats!.tx)})`);
  assert.is(report!.eventfdCount, 'ffffffffffffffff');
  assert.is(report!.fds.after, report!.fds.before, 'fd count back to its start');
  assert.is(report!.threads.after, report!.threads.before, 'thread count back to its start');
});

test('a full pipe as call fd (O_NONBLOCK cleared) is refused: only eventfds, and nothing leaks', async () => {
  const { report, stderr } = await runHostileCall('pipe');
  assert.ok(report, `the child never reported: stop() did not return within ${CHILD_MS} ms (${stderr})`);
  assert.is(report!.constructError?.code, 'EINVAL', JSON.stringify(report));
  assert.match(report!.constructError!.message, /call fd 3 is not an eventfd \(it is pipe:\[\d+\]\): kicks and calls must be eventfds/);
  assert.is(report!.fds.after, report!.fds.before, 'fd count back to its start');
  assert.is(report!.threads.after, report!.threads.before, 'thread count back to its start');
});

function fileSize(fd: number): number {
  return fs.fstatSync(fd).size;
}

test('the worker holds its own copies of the kick and call fds: a number the caller closed and the process reused is never written', async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vhost-tap-fds-'));
  const reused: number[] = [];
  await withDataPath({ queueSize: 64 }, async (dp) => {
    // The pair restarts on fds received over a socket, as the vhost-user session gets them.
    const position = dp.pairs[0]!.stop();
    const { rx, tx } = dp.driver.queueConfig(0);
    const [a, b] = socketPair('stream');
    let received: number[] = [];
    let pair: QueuePair | undefined;
    try {
      sendFds(a, [rx.kickFd, rx.callFd!, tx.kickFd, tx.callFd!]);
      received = (await receiveFds(b, { maxFds: 4, timeoutMs: 5000 })).fds;
      const [rxKick, rxCall, txKick, txCall] = received as [number, number, number, number];
      pair = new QueuePair({
        memory: dp.memory, tapQueue: dp.tap.queues[0]!, hdrSize: 12, mergeableRx: false,
        rx: { ...rx, kickFd: rxKick, callFd: rxCall, lastAvailIdx: position.rxLastAvailIdx },
        tx: { ...tx, kickFd: txKick, callFd: txCall, lastAvailIdx: position.txLastAvailIdx },
      });
      pair.start();
      // The caller lets go of its numbers while the worker runs, and the process reuses them.
      for (const fd of received) closeFd(fd);
      const wanted = new Set(received);
      received = [];
      const extra: number[] = [];
      for (let i = 0; i < 256 && reused.length < wanted.size; i++) {
        const fd = fs.openSync(path.join(tmp, `f${i}`), 'w+');
        (wanted.has(fd) ? reused : extra).push(fd);
      }
      extra.forEach((fd) => fs.closeSync(fd));
      assert.is(reused.length, 4, 'the four numbers were reused');

      // Traffic both ways: the worker kicks off its copies and calls through them.
      const socket = (await import('node:dgram')).createSocket('udp4');
      const got: Buffer[] = [];
      socket.on('message', (m) => got.push(m));
      try {
        await new Promise<void>((resolve) => socket.bind(5400, HOST_IP, resolve));
        for (let i = 0; i < 5; i++) {
          await dp.driver.send(0, ethernet(dp.hostMac, GUEST_MAC, 0x0800, ipv4(GUEST_IP, HOST_IP, 17, udp(GUEST_IP, HOST_IP, 4000, 5400, pattern(100, i)))));
          await new Promise<void>((resolve, reject) => socket.send(pattern(200, i), 5401, GUEST_IP, (e) => (e ? reject(e) : resolve())));
        }
        const end = Date.now() + 3000;
        while ((got.length < 5 || pair.stats().rx.packets < 5) && Date.now() < end) await sleep(10);
      } finally {
        socket.close();
      }
      const s = pair.stats();
      assert.is(got.length, 5, 'the kicks on the closed numbers still reached the worker');
      assert.ok(s.tx.calls >= 1 && s.rx.calls >= 1, `calls were made (${JSON.stringify(s)})`);
      assert.equal(reused.map(fileSize), [0, 0, 0, 0], 'nothing was written to the files that reuse the numbers');
    } finally {
      pair?.stop();
      received.forEach((fd) => closeFd(fd));
      closeFd(a);
      closeFd(b);
    }
  });
  reused.forEach((fd) => fs.closeSync(fd));
  fs.rmSync(tmp, { recursive: true });
});

test('a queue pair releases its fd copies at stop() even if never started, and when start() fails', async () => {
  await withDataPath({ queueSize: 64 }, async (dp) => {
    const { rx, tx } = dp.driver.queueConfig(0);
    const before = fdCount();
    const idle = new QueuePair({ memory: dp.memory, tapQueue: dp.tap.queues[0]!, hdrSize: 12, mergeableRx: false, rx, tx });
    assert.is(fdCount(), before + 4, 'a copy of each kick and call fd');
    idle.stop();
    assert.is(fdCount(), before, 'stop() without start() closed them');

    // A tap fd that epoll cannot watch (a regular file) fails start() after the copies were made.
    const file = fs.openSync(path.join(os.tmpdir(), `vhost-tap-not-a-tap-${process.pid}`), 'w+');
    try {
      const before2 = fdCount();
      const broken = new QueuePair({ memory: dp.memory, tapQueue: file, hdrSize: 12, mergeableRx: false, rx, tx });
      assert.throws(() => broken.start(), /cannot watch the tap queue fd/);
      assert.is(fdCount(), before2, 'the failed start() closed everything it had');
      assert.throws(() => broken.start(), /create a new one/);
    } finally {
      fs.closeSync(file);
      fs.rmSync(path.join(os.tmpdir(), `vhost-tap-not-a-tap-${process.pid}`));
    }
  });
});

test('kick and call fds that are not eventfds, or not open, are refused with what they are', async () => {
  await withDataPath({ queueSize: 64 }, async (dp) => {
    const { rx, tx } = dp.driver.queueConfig(0);
    const before = fdCount();
    const make = (r: typeof rx, t: typeof tx) => () => new QueuePair({ memory: dp.memory, tapQueue: dp.tap.queues[0]!, hdrSize: 12, mergeableRx: false, rx: r, tx: t });
    const file = fs.openSync('/dev/null', 'r');
    try {
      assert.throws(make({ ...rx, kickFd: file }, tx), (e: NodeJS.ErrnoException) =>
        e.code === 'EINVAL' && /receive kick fd \d+ is not an eventfd \(it is \/dev\/null\)/.test(e.message));
      assert.throws(make(rx, { ...tx, callFd: file }), (e: NodeJS.ErrnoException) =>
        e.code === 'EINVAL' && /transmit call fd \d+ is not an eventfd/.test(e.message));
    } finally {
      fs.closeSync(file);
    }
    assert.throws(make(rx, { ...tx, kickFd: 1_000_000 }), (e: NodeJS.ErrnoException) => e.code === 'EBADF');
    assert.is(fdCount(), before, 'a refused configuration leaves no copy open');
  });
});

test.run();
