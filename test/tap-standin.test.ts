// The worker touches its tap fd only by reading, writing and polling it
// (native/core/tap_io.h): any non-blocking datagram fd stands in for a tap queue,
// a datagram being one frame with its virtio_net_hdr. The C++ tests and fuzzers
// drive the worker over a socketpair this way; here the same from JS, both ways.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { native } from '../src/native';
import { GuestAllocator } from '../src/virtio/driver/guest-allocator';
import { VirtioNetDriver, type VirtioNetFeatures } from '../src/virtio/driver/net-driver';
import { GuestMemory } from '../src/virtio/guest-memory';
import { QueuePair, type QueueErrorEvent } from '../src/virtio/queue-pair';
import { pattern } from '../harness/packets';
import { sleep } from '../harness/wait';

const HDR = 12;
const FEATURES: VirtioNetFeatures = { version1: true, mergeableRx: false, eventIdx: true, indirectDesc: false };

async function poll<T>(what: string, probe: () => T | undefined, timeoutMs = 3000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

test('a SEQPACKET socketpair stands in for the tap: a blocking one is refused (EINVAL), a non-blocking one carries frames both ways', async () => {
  const driverOptions = { queuePairs: 1, queueSize: 16, features: FEATURES, rxBufferSize: 2048, txBufferSize: 2048 };
  const memory = GuestMemory.allocate(VirtioNetDriver.memoryNeeded(driverOptions));
  const driver = VirtioNetDriver.create({ memory, allocator: new GuestAllocator(memory, 0, memory.size), ...driverOptions });
  const [standIn, peer] = native.socketPair('seqpacket');
  let pair: QueuePair | undefined;
  let peerOpen = true;
  try {
    const { rx, tx } = driver.queueConfig(0);
    const blocking = new QueuePair({ memory, tapQueue: standIn, hdrSize: HDR, mergeableRx: false, rx, tx });
    assert.throws(() => blocking.start(), (e: Error & { code?: string }) => e.code === 'EINVAL' && /tap fd \d+ is blocking/.test(e.message));

    native.setNonBlocking(standIn);
    native.setNonBlocking(peer);
    pair = new QueuePair({ memory, tapQueue: standIn, hdrSize: HDR, mergeableRx: false, rx, tx });
    const errors: QueueErrorEvent[] = [];
    pair.on('queue-error', (e) => errors.push(e));
    pair.start();
    driver.fillRx(0);

    // Guest to "tap": one datagram, the header then the frame.
    const out = pattern(300, 1);
    await driver.send(0, out);
    const datagram = await poll('the frame on the socket', () => {
      const { data } = native.recvSome(peer, 65536, 0);
      return data.length > 0 ? data : undefined;
    });
    assert.is(datagram.length, HDR + out.length);
    assert.ok(datagram.subarray(HDR).equals(out), 'the frame, byte for byte, after the header');

    // "Tap" to guest: a datagram is one frame; num_buffers is written (1).
    const back = pattern(200, 2);
    native.sendFds(peer, [], Buffer.concat([Buffer.alloc(HDR), back]));
    const frames = await driver.receive(0, { timeoutMs: 3000 });
    assert.is(frames.length, 1);
    assert.ok(frames[0]!.frame.equals(back), 'the frame, byte for byte');
    assert.is(frames[0]!.buffers, 1);

    // A datagram shorter than its header (no tap makes one): dropped and counted, the
    // buffer kept for the next frame, and the byte count not wrapped below zero.
    native.sendFds(peer, [], Buffer.alloc(5));
    await poll('the runt to be dropped', () => (pair!.stats().rx.drops.badHeader === 1 ? true : undefined));
    const s = pair.stats();
    assert.is(s.tx.packets, 1);
    assert.is(s.rx.packets, 1);
    assert.is(s.rx.bytes, back.length);
    assert.equal(errors, []);

    // The other side closes: every read finds the end from then on, and epoll says so for
    // ever. Reported once as the tap failing, and the worker leaves the fd alone.
    native.closeFd(peer);
    peerOpen = false;
    await poll('the tap-error', () => (errors.length > 0 ? true : undefined));
    assert.equal(errors.map((e) => [e.queue, e.code]), [['tap', 'tap-error']]);
    assert.match(errors[0]!.message, /found its end/);
    const before = pair.stats().rx.wakeups;
    await sleep(200);
    assert.ok(pair.stats().rx.wakeups - before <= 1, `${pair.stats().rx.wakeups - before} wakeups by the closed socket in 200 ms`);
    assert.is(errors.length, 1);
  } finally {
    pair?.stop();
    native.closeFd(standIn);
    if (peerOpen) native.closeFd(peer);
    driver.close();
    memory.close();
  }
});

test.run();
