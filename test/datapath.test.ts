import dgram from 'node:dgram';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { GUEST_IP, HOST_IP, withDataPath, type DataPath } from './helpers/datapath';
import { GUEST_MAC, arpRequest, ethernet, ipv4, parseUdp, pattern, udp } from '../harness/packets';
import { sleep, until } from '../harness/wait';
import { assertPrivateNetns } from './helpers/system';
import { hostSocket } from './helpers/device';

assertPrivateNetns();

/** Receives on `pair` until `count` UDP frames to `port` have arrived. */
async function receiveUdp(dp: DataPath, port: number, count: number, pair = 0, timeoutMs = 5000): Promise<Buffer[]> {
  const frames: Buffer[] = [];
  const end = Date.now() + timeoutMs;
  while (frames.length < count && Date.now() < end) {
    for (const r of await dp.driver.receive(pair, { timeoutMs: 200 })) {
      const u = parseUdp(r.frame);
      if (u && u.dstPort === port) frames.push(r.frame);
    }
  }
  return frames;
}

function guestUdp(dp: DataPath, srcPort: number, dstPort: number, payload: Buffer, mode: 'full' | 'partial' | 'none' = 'full'): Buffer {
  return ethernet(dp.hostMac, GUEST_MAC, 0x0800, ipv4(GUEST_IP, HOST_IP, 17, udp(GUEST_IP, HOST_IP, srcPort, dstPort, payload, mode)));
}

// Every case runs on split rings, then on packed ones (VIRTIO_F_RING_PACKED).
for (const ringPacked of [false, true]) {
  const suffix = ringPacked ? ' [packed ring]' : '';
  test(`tx: frames the driver sends arrive byte-exact at a UDP socket in the namespace${suffix}`, async () => {
    await withDataPath({ ringPacked }, async (dp) => {
      const host = await hostSocket(5000);
      try {
        const payloads = [1, 18, 100, 512, 1000, 1472].map((n, i) => pattern(n, i + 1));
        for (const p of payloads) await dp.driver.send(0, guestUdp(dp, 4000, 5000, p));
        await until('all datagrams', () => host.received.length === payloads.length);
        host.received.forEach((got, i) => assert.ok(got.equals(payloads[i]!), `datagram ${i} differs`));
        const s = dp.pairs[0]!.stats();
        assert.is(s.tx.packets, payloads.length);
        assert.is(dp.errors.length, 0);
      } finally {
        host.close();
      }
    });
  });

  test(`tx with the header in its own descriptor (a two-descriptor chain)${suffix}`, async () => {
    await withDataPath({ ringPacked, txSplitHeader: true }, async (dp) => {
      const host = await hostSocket(5001);
      try {
        const payload = pattern(700, 9);
        await dp.driver.send(0, guestUdp(dp, 4000, 5001, payload));
        await until('the datagram', () => host.received.length === 1);
        assert.ok(host.received[0]!.equals(payload));
      } finally {
        host.close();
      }
    });
  });

  test(`an ARP request from the driver gets a reply the driver reads${suffix}`, async () => {
    await withDataPath({ ringPacked, address: false }, async (dp) => {
      const { run } = await import('./helpers/system');
      run('ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', dp.tap.name]);
      await dp.driver.send(0, arpRequest(GUEST_MAC, GUEST_IP, HOST_IP));
      let reply: Buffer | undefined;
      const end = Date.now() + 5000;
      while (!reply && Date.now() < end) {
        for (const r of await dp.driver.receive(0, { timeoutMs: 200 })) {
          if (r.frame.readUInt16BE(12) === 0x0806 && r.frame.readUInt16BE(20) === 2) reply = r.frame;
        }
      }
      assert.ok(reply, 'no ARP reply');
      assert.ok(reply!.subarray(0, 6).equals(GUEST_MAC), 'reply is addressed to the guest');
      assert.ok(reply!.subarray(22, 28).equals(dp.hostMac), 'reply names the host MAC');
      assert.equal(Array.from(reply!.subarray(28, 32)), [10, 6, 0, 1]);
    });
  });

  for (const variant of [
    { name: 'one buffer per frame', options: {} },
    { name: 'chains of 4 descriptors', options: { rxSegments: 4, rxBufferSize: 4096 } },
    { name: 'MRG_RXBUF, 1536-byte buffers', options: { features: { mergeableRx: true } } },
    { name: 'MRG_RXBUF, 256-byte buffers: a frame spans several', options: { features: { mergeableRx: true }, rxBufferSize: 256 } },
    { name: 'MRG_RXBUF without event idx, legacy 12-byte header', options: { features: { mergeableRx: true, eventIdx: false, version1: false }, rxBufferSize: 512 } },
    { name: 'legacy 10-byte header, no event idx', options: { features: { version1: false, eventIdx: false } } },
    { name: 'batched reads (io_uring), 2048-byte buffers', options: { rxBufferSize: 2048, rxMaxFrameBytes: 12 + 18 + 1500 } },
    { name: 'batched reads (io_uring), MRG_RXBUF 1536-byte buffers', options: { features: { mergeableRx: true }, rxMaxFrameBytes: 12 + 18 + 1500 } },
    { name: 'batched reads offered buffers too small for them: the single path copes', options: { features: { mergeableRx: true }, rxBufferSize: 256, rxMaxFrameBytes: 12 + 18 + 1500 } },
  ]) {
    test(`rx: datagrams from the namespace arrive byte-exact in the driver's buffers (${variant.name})${suffix}`, async () => {
      await withDataPath({ ...variant.options, ringPacked }, async (dp) => {
        const sender = dgram.createSocket('udp4');
        try {
          const payloads = [1, 60, 255, 600, 1000, 1472].map((n, i) => pattern(n, 100 + i));
          for (const p of payloads) await new Promise<void>((resolve, reject) => sender.send(p, 6000, GUEST_IP, (e) => (e ? reject(e) : resolve())));
          const frames = await receiveUdp(dp, 6000, payloads.length);
          assert.is(frames.length, payloads.length);
          frames.forEach((f, i) => {
            const u = parseUdp(f)!;
            assert.ok(u.payload.equals(payloads[i]!), `payload ${i} differs`);
            assert.ok(u.checksumOk, `checksum of datagram ${i}`);
          });
          assert.is(dp.errors.length, 0, JSON.stringify(dp.errors));
          assert.is(dp.pairs[0]!.stats().rx.drops.tooBig, 0);
        } finally {
          sender.close();
        }
      });
    });
  }

  test(`rx: a burst already queued in the tap is read in io_uring batches that grow to 32 frames, in order${suffix}`, async () => {
    // No rx buffers yet: the frames wait in the tap's queue, then one kick finds them all there.
    await withDataPath({ ringPacked, rxBufferSize: 2048, rxMaxFrameBytes: 12 + 18 + 1500, fillRx: false }, async (dp) => {
      const sender = dgram.createSocket('udp4');
      try {
        const count = 96;
        for (let i = 0; i < count; i++) {
          const p = Buffer.alloc(64, i);
          await new Promise<void>((resolve, reject) => sender.send(p, 6001, GUEST_IP, (e) => (e ? reject(e) : resolve())));
        }
        await sleep(100);
        dp.driver.fillRx(0);
        const frames = await receiveUdp(dp, 6001, count);
        assert.is(frames.length, count);
        frames.forEach((f, i) => assert.is(parseUdp(f)!.payload[0], i, `frame ${i} out of order`));
        const rx = dp.pairs[0]!.stats().rx;
        // Batches grow 2, 4, 8, 16, 32, 32...: 96 frames in about 7 of them. One frame per batch
        // would mean the reads stop at the first (a linked read that is short breaks its link).
        assert.ok(rx.batches > 0 && rx.packets / rx.batches >= 8, `${rx.packets} frames in ${rx.batches} io_uring batches`);
      } finally {
        sender.close();
      }
    });
  });

  test(`busy polling (busyPollUs): frames flow both ways, and once traffic stops the worker sleeps${suffix}`, async () => {
    await withDataPath({ ringPacked, busyPollUs: 200, rxMaxFrameBytes: 12 + 18 + 1500, rxBufferSize: 2048 }, async (dp) => {
      const host = await hostSocket(5002);
      const sender = dgram.createSocket('udp4');
      try {
        for (let i = 0; i < 50; i++) {
          await dp.driver.send(0, guestUdp(dp, 4000, 5002, Buffer.alloc(32, i)));
          await new Promise<void>((resolve, reject) => sender.send(Buffer.alloc(32, i), 6002, GUEST_IP, (e) => (e ? reject(e) : resolve())));
        }
        await until('the datagrams from the driver', () => host.received.length === 50);
        const frames = await receiveUdp(dp, 6002, 50);
        assert.is(frames.length, 50);
        frames.forEach((f, i) => assert.is(parseUdp(f)!.payload[0], i));
        // Spinning is bounded by the last work: over a quiet second the process uses
        // next to no CPU (a worker that kept spinning would use the whole second).
        await sleep(50);
        const before = process.cpuUsage();
        await sleep(1000);
        const used = process.cpuUsage(before);
        assert.ok(used.user + used.system < 300_000, `${(used.user + used.system) / 1000} ms of CPU in a quiet second`);
      } finally {
        host.close();
        sender.close();
      }
    });
  });

  test(`busyPollUs out of range is refused with EINVAL${suffix}`, async () => {
    const { QueuePair } = await import('../src/virtio/queue-pair');
    await withDataPath({ ringPacked }, async (dp) => {
      const { rx, tx } = dp.driver.queueConfig(0);
      try {
        new QueuePair({ memory: dp.memory, tapQueue: dp.tap.queues[0]!, hdrSize: 12, mergeableRx: false, rx, tx, busyPollUs: -1 });
        assert.unreachable('a negative busyPollUs was taken');
      } catch (error) {
        assert.is((error as NodeJS.ErrnoException).code, 'EINVAL');
      }
    });
  });

  test(`after stop() and close() the tap is gone at once, though its worker used io_uring on it${suffix}`, async () => {
    const { run } = await import('./helpers/system');
    let name = '';
    await withDataPath({ ringPacked, rxMaxFrameBytes: 12 + 18 + 1500, rxBufferSize: 2048 }, async (dp) => {
      name = dp.tap.name;
      const host = await hostSocket(5003);
      try {
        // One batch, published at once: the worker pops up to 32 chains and writes them through io_uring
        // (frames sent one by one go one writev each whenever the worker keeps up with them).
        await dp.driver.sendBatch(0, Array.from({ length: 40 }, (_, i) => ({ frame: guestUdp(dp, 4000, 5003, Buffer.alloc(16, i)) })));
        await until('the datagrams', () => host.received.length === 40);
        assert.ok(dp.pairs[0]!.stats().tx.batches > 0, 'tx went through io_uring');
      } finally {
        host.close();
      }
    });
    // A ring's teardown is deferred in the kernel: a file it still held would keep the device alive.
    assert.throws(() => run('ip', ['link', 'show', name]), undefined, `${name} still exists`);
  });

  test(`rx without MRG_RXBUF: a frame larger than the buffer is dropped and counted, never truncated${suffix}`, async () => {
    await withDataPath({ ringPacked, rxBufferSize: 512 }, async (dp) => {
      const sender = dgram.createSocket('udp4');
      try {
        const send = (p: Buffer): Promise<void> => new Promise((resolve, reject) => sender.send(p, 6001, GUEST_IP, (e) => (e ? reject(e) : resolve())));
        await send(pattern(1200, 1));
        await send(pattern(100, 2));
        const frames = await receiveUdp(dp, 6001, 1);
        assert.is(frames.length, 1);
        assert.ok(parseUdp(frames[0]!)!.payload.equals(pattern(100, 2)));
        assert.is(dp.pairs[0]!.stats().rx.drops.tooBig, 1);
        assert.is(dp.errors.length, 0);
      } finally {
        sender.close();
      }
    });
  });

  // A flood faster than a worker drops frames, even on a 2-core machine: a host
  // process sends 60000-byte datagrams (41 IP fragments each) out of a veth whose
  // egress mirrors every fragment 16 times into the tap (tc mirred: clones, no
  // copies), and the tap's queue is deep enough (txqueuelen) that the worker never
  // finds it empty while the flood lasts.
  const FLOOD = `
  const dgram = require('node:dgram');
  const [ip, port, ms] = process.argv.slice(1);
  const socket = dgram.createSocket('udp4');
  const payload = Buffer.alloc(60000, 7);
  const end = Date.now() + Number(ms);
  let inFlight = 0;
  const pump = () => {
    while (inFlight < 64 && Date.now() < end) {
      inFlight++;
      socket.send(payload, Number(port), ip, () => { inFlight--; pump(); });
    }
    if (Date.now() >= end && inFlight === 0) socket.close();
  };
  pump();
  `;

  async function withMirroredFlood(dp: DataPath, body: (flood: { running(): boolean }) => Promise<void>): Promise<void> {
    const { spawn } = await import('node:child_process');
    const { run, uniqueName } = await import('./helpers/system');
    const veth = uniqueName('vfl');
    run('ip', ['link', 'add', veth, 'type', 'veth', 'peer', 'name', `${veth}p`]);
    let flood: ReturnType<typeof spawn> | undefined;
    let exited: Promise<void> | undefined;
    try {
      run('ip', ['link', 'set', `${veth}p`, 'up']);
      run('ip', ['link', 'set', veth, 'up']);
      run('ip', ['addr', 'add', '10.6.1.1/24', 'dev', veth]);
      run('ip', ['neigh', 'replace', '10.6.1.2', 'lladdr', '52:54:00:12:34:56', 'dev', veth, 'nud', 'permanent']);
      run('ip', ['link', 'set', 'dev', dp.tap.name, 'txqueuelen', '100000']);
      run('tc', ['qdisc', 'add', 'dev', veth, 'clsact']);
      const mirrors = Array.from({ length: 16 }, () => ['action', 'mirred', 'egress', 'mirror', 'dev', dp.tap.name]).flat();
      run('tc', ['filter', 'add', 'dev', veth, 'egress', 'u32', 'match', 'u32', '0', '0', ...mirrors]);
      flood = spawn(process.execPath, ['-e', FLOOD, '10.6.1.2', '6003', '30000'], { stdio: 'ignore' });
      const child = flood;
      exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
      await body({ running: () => child.exitCode === null && child.signalCode === null });
    } finally {
      flood?.kill('SIGKILL');
      await exited;
      run('ip', ['link', 'del', veth]);
    }
  }

  test(`rx flooded with frames too big for the buffers (no MRG_RXBUF): every frame taken counts, tx goes on, stop() returns${suffix}`, async () => {
    await withDataPath({ ringPacked, rxBufferSize: 256 }, async (dp) => {
      const host = await hostSocket(5004);
      try {
        await withMirroredFlood(dp, async (flood) => {
          // Until the tap's queue is deep: the flood outruns the worker by then.
          await until('the flood to reach the worker', () => dp.pairs[0]!.stats().rx.drops.tooBig > 1000, 10_000);
          await sleep(500);
          // The worker is in its rx loop, dropping every frame: tx must still get its turns.
          const payloads = Array.from({ length: 20 }, (_, i) => pattern(100, i));
          for (const p of payloads) await dp.driver.send(0, guestUdp(dp, 4000, 5004, p));
          await until('the datagrams sent during the flood', () => host.received.length === payloads.length, 3000);
          assert.ok(flood.running(), 'the flood is still on');
          const start = performance.now();
          dp.pairs[0]!.stop();
          const stopMs = performance.now() - start;
          assert.ok(stopMs < 1000, `stop() during the flood took ${stopMs.toFixed(0)} ms`);
          assert.ok(flood.running(), 'the flood was still on when stop() returned');
          assert.is(dp.errors.length, 0);
        });
      } finally {
        host.close();
      }
    });
  });

  test(`rxMaxFrameBytes smaller than a vnet header and an Ethernet header is refused${suffix}`, async () => {
    const { QueuePair } = await import('../src/virtio/queue-pair');
    await withDataPath({ ringPacked }, async (dp) => {
      const { rx, tx } = dp.driver.queueConfig(0);
      const pair = new QueuePair({ memory: dp.memory, tapQueue: dp.tap.queues[0]!, hdrSize: 12, mergeableRx: false, rx, tx, rxMaxFrameBytes: 20 });
      try {
        assert.throws(() => pair.start(), (e: NodeJS.ErrnoException) => e.code === 'EINVAL' && /rxMaxFrameBytes must be 0 \(unknown\) or at least .* \(26\)/.test(e.message));
      } finally {
        pair.stop();
      }
    });
  });

  test(`rx with no buffers posted waits for the driver and loses nothing of its own${suffix}`, async () => {
    await withDataPath({ ringPacked, queueSize: 8, features: { mergeableRx: true }, rxBufferSize: 2048 }, async (dp) => {
      const sender = dgram.createSocket('udp4');
      try {
        // 8 buffers posted; send 20 frames: the worker fills 8, then stops reading the tap until more are posted.
        for (let i = 0; i < 20; i++) await new Promise<void>((resolve, reject) => sender.send(pattern(300, i), 6002, GUEST_IP, (e) => (e ? reject(e) : resolve())));
        await sleep(100);
        const frames = await receiveUdp(dp, 6002, 20);
        assert.is(frames.length, 20, 'frames held by the kernel while the ring was empty arrive once buffers are posted');
        frames.forEach((f, i) => assert.ok(parseUdp(f)!.payload.equals(pattern(300, i))));
      } finally {
        sender.close();
      }
    });
  });

}

test.run();
