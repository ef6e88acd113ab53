// The number of queue pairs in use (virtio 1.x 5.1.6.5.5, VQ_PAIRS_SET): workers
// started and stopped, tap queues attached and detached, checked against the
// kernel's view while traffic flows; and a switch whose attach fails.
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { Tap, readTapLinkInfo } from '../src';
import { VIRTIO_NET_ERR, VIRTIO_NET_OK } from '../src/virtio/control-queue';
import { STATUS_DEVICE_NEEDS_RESET } from '../src/virtio/device-status';
import { hasFeature } from '../src/virtio/features';
import { VirtioNetDevice } from '../src/virtio/net-device';
import { VirtioNetGuest } from '../src/virtio/driver/guest';
import { until, sleep } from '../harness/wait';
import { BUFFER_SIZE, F, GUEST_IP, HOST_IP, allocateGuestMemory, guestDatagram, hostSocket, numDisabled, receiveTagged, recordEvents, sendTo, seqPayload, threadCount, usedIdx, warmUp, withDevice } from './helpers/device';
import { assertPrivateNetns, fdCount, newFds, openFds, run, uniqueName } from './helpers/system';

assertPrivateNetns();

const PAIRS = 4;
const FLOWS = 64;
const BASE_PORT = 8000;

/** Sends `count` datagrams tagged `tag` over FLOWS destination ports. */
async function sendFlows(sender: dgram.Socket, tag: number, count: number): Promise<void> {
  const sends: Promise<void>[] = [];
  for (let seq = 0; seq < count; seq++) sends.push(sendTo(sender, seqPayload(tag, seq), BASE_PORT + (seq % FLOWS)));
  await Promise.all(sends);
}

/** The device, the kernel and the workers agree that pairs [0, n) are in use and no other. */
function assertPairs(device: VirtioNetDevice, tapName: string, n: number, label: string): void {
  assert.is(device.activeQueuePairs, n, `${label}: activeQueuePairs`);
  assert.is(readTapLinkInfo(tapName).numDisabled, device.maxQueuePairs - n, `${label}: numDisabled`);
  const stats = device.stats();
  assert.is(stats.activeQueuePairs, n);
  assert.equal(stats.pairs.map((p) => p.running), stats.pairs.map((_, i) => i < n), `${label}: running`);
  assert.equal(stats.pairs.map((p) => p.tapAttached), stats.pairs.map((_, i) => i < n), `${label}: tap queues attached`);
}

async function boundSocket(): Promise<dgram.Socket> {
  const socket = dgram.createSocket({ type: 'udp4', sendBufferSize: 1 << 20 });
  await new Promise<void>((resolve) => socket.bind(0, resolve));
  return socket;
}

test('1 → 4 → 2 → 4 → 1 → 3 pairs: workers, tap queues and the kernel follow; detached pairs get nothing; every datagram arrives', async () => {
  await withDevice({ queues: PAIRS, address: true }, async (rig) => {
    const { device, tap, memory, events } = rig;
    const guest = rig.bringUp();
    assert.ok(hasFeature(guest.features, F.VIRTIO_NET_F_MQ) && hasFeature(guest.features, F.VIRTIO_NET_F_MRG_RXBUF));
    assert.is(guest.driver.rxBufferSize, BUFFER_SIZE);
    assertPairs(device, tap.name, 1, 'after DRIVER_OK');
    const sender = await boundSocket();
    try {
      let tag = 100;
      for (const n of [1, 4, 2, 4, 1, 3]) {
        const previous = device.activeQueuePairs;
        const changes = events.queuePairs.length;
        assert.is(await guest.setQueuePairs(n), VIRTIO_NET_OK, `VQ_PAIRS_SET ${n}`);
        assertPairs(device, tap.name, n, `${previous} -> ${n}`);
        if (n !== previous) assert.equal(events.queuePairs.slice(changes), [{ active: n, previous }]);
        else assert.is(events.queuePairs.length, changes, 'no event without a change');

        // Drain what earlier rounds left, then note where the stopped pairs' used rings are.
        for (let i = 0; i < PAIRS; i++) await guest.driver.receive(i, { timeoutMs: 1 });
        const stopped = Array.from({ length: PAIRS - n }, (_, k) => n + k);
        const usedBefore = stopped.map((i) => usedIdx(memory, guest.driver.rxQueue(i).layout));
        const packetsBefore = device.stats().pairs.map((p) => p.rx?.packets ?? 0);

        tag++;
        await sendFlows(sender, tag, 256);
        const active = Array.from({ length: n }, (_, i) => i);
        const { received, perPair } = await receiveTagged(guest, active, tag, 256);
        assert.is(received, 256, `${n} pairs: ${received} of 256 datagrams arrived (per pair ${perPair.join('/')})`);
        assert.ok(perPair.every((c) => c > 0), `64 flows reach every one of the ${n} active pairs: ${perPair.join('/')}`);

        const after = device.stats();
        assert.equal(stopped.map((i) => usedIdx(memory, guest.driver.rxQueue(i).layout)), usedBefore, 'no frame went into a stopped pair\'s rx ring');
        for (const i of stopped) {
          // Out of use, its tx ring still live: a worker only completes what the driver posts there, unsent.
          assert.is(after.pairs[i]!.running, false, `pair ${i} forwards nothing`);
          assert.is(after.pairs[i]!.discardingTx, true, `pair ${i} discards its tx chains`);
          assert.is(after.pairs[i]!.rx!.packets, 0, `pair ${i} received nothing`);
        }
        for (const i of active) {
          assert.ok(after.pairs[i]!.rx!.packets - packetsBefore[i]! >= perPair[i]!, `pair ${i}'s worker counted its frames`);
        }
      }
      assert.is(events.queueErrors.length, 0, JSON.stringify(events.queueErrors));
      assert.equal(events.queuePairs.map((c) => c.active), [4, 2, 4, 1, 3]);
    } finally {
      sender.close();
    }
  });
});

/** A small deterministic PRNG, so a failing run can be replayed. */
function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x / 2 ** 32;
  };
}

test('500 random pair counts (invalid ones mixed in) under traffic both ways: no crash or hang, consistent at the end, fds and threads back', async () => {
  const started = Date.now();
  await withDevice({ queues: PAIRS, address: true }, async (rig) => {
    const { device, tap, events } = rig;
    const host = await hostSocket(8100);
    const sender = await boundSocket();
    let guest: VirtioNetGuest | undefined;
    let running = true;
    const loops: Promise<void>[] = [];
    const loopErrors: unknown[] = [];
    const guard = (loop: Promise<void>): Promise<void> => loop.catch((error) => { loopErrors.push(error); });
    try {
      await warmUp();
      await sendTo(sender, seqPayload(0, 0), BASE_PORT);
      const fdsBefore = openFds();
      const threadsBefore = threadCount();

      guest = rig.bringUp();
      const g = guest;
      let sent = 0;
      let rxFrames = 0;
      let guestSent = 0;
      loops.push(...[
        (async () => {
          for (let round = 0; running; round++) {
            const burst: Promise<void>[] = [];
            for (let i = 0; i < 64; i++, sent++) burst.push(sendTo(sender, seqPayload(1, sent), BASE_PORT + (sent % FLOWS)));
            await Promise.all(burst);
            await sleep(0);
          }
        })(),
        ...Array.from({ length: PAIRS }, async (_, pair) => {
          while (running) rxFrames += (await g.driver.receive(pair, { timeoutMs: 10 })).length;
        }),
        (async () => {
          for (let round = 0; running; round++) {
            const frames = Array.from({ length: 16 }, (_, i) => ({ frame: guestDatagram(rig, 4000 + (i % 4), 8100, seqPayload(2, round * 16 + i)) }));
            await g.driver.sendBatch(0, frames);
            guestSent += frames.length;
            await sleep(0);
          }
        })(),
      ].map(guard));

      const random = xorshift(0x5eed);
      let invalid = 0;
      let valid = 0;
      for (let k = 0; k < 500; k++) {
        const before = device.activeQueuePairs;
        if (random() < 0.15) {
          const bad = [0, PAIRS + 1, 0xffff, 17][Math.floor(random() * 4)]!;
          assert.is(await g.setQueuePairs(bad), VIRTIO_NET_ERR, `change ${k}: ${bad} pairs must be refused`);
          assert.is(device.activeQueuePairs, before, `change ${k}: a refused count changed nothing`);
          invalid++;
        } else {
          const n = 1 + Math.floor(random() * PAIRS);
          assert.is(await g.setQueuePairs(n), VIRTIO_NET_OK, `change ${k}: ${before} -> ${n}`);
          assert.is(device.activeQueuePairs, n);
          valid++;
        }
        const workers = device.stats().pairs.map((p) => p.running);
        assert.equal(workers, workers.map((_, i) => i < device.activeQueuePairs), `change ${k}: workers`);
        if (k % 10 === 0) assert.is(numDisabled(tap), PAIRS - device.activeQueuePairs, `change ${k}: the kernel's numDisabled`);
      }
      assert.ok(invalid > 30 && valid > 300, `${invalid} invalid, ${valid} valid`);
      assert.ok(rxFrames > 0 && host.received.length > 0 && guestSent > 0, `traffic flowed: ${rxFrames} frames to the guest, ${host.received.length} to the namespace`);

      // Consistent at the end, and still carrying traffic on every active pair.
      const n = device.activeQueuePairs;
      assertPairs(device, tap.name, n, 'after 500 changes');
      assert.is(device.status & STATUS_DEVICE_NEEDS_RESET, 0);
      assert.is(events.queueErrors.length, 0, JSON.stringify(events.queueErrors.slice(0, 3)));
      assert.equal(device.stats().control, { ok: valid, err: invalid });
      running = false;
      await Promise.all(loops.splice(0));
      assert.equal(loopErrors, [], 'the traffic loops ran without an error');
      await sendFlows(sender, 3, 256);
      const { received } = await receiveTagged(g, Array.from({ length: n }, (_, i) => i), 3, 256);
      assert.is(received, 256, `every datagram arrives on the ${n} active pairs after the storm`);

      device.writeStatus(0);
      device.close();
      guest.close();
      await until('worker threads gone', () => threadCount() <= threadsBefore, 2000).catch(() => undefined);
      assert.is(threadCount(), threadsBefore, 'threads back');
      // Nothing opened since is left open (the device's own steering program fds, older, are closed with it).
      assert.equal(newFds(fdsBefore), [], 'fds back');
      assert.ok(Date.now() - started < 30_000, `took ${Date.now() - started} ms`);
    } finally {
      running = false;
      guest?.close();
      await Promise.allSettled(loops);
      sender.close();
      host.close();
    }
  });
});

/** A process in a network namespace of its own, to hold a device out of this one. */
async function otherNetns(): Promise<{ pid: number; kill(): void }> {
  const child = spawn('unshare', ['--net', 'sleep', '120'], { stdio: 'ignore' });
  const pid = child.pid!;
  const mine = fs.readlinkSync('/proc/self/ns/net');
  await until('the child\'s own netns', () => {
    try {
      return fs.readlinkSync(`/proc/${pid}/ns/net`) !== mine;
    } catch {
      return false;
    }
  }, 5000);
  return { pid, kill: () => child.kill() };
}

test('a switch whose tap queue cannot attach is ERR and leaves the previous set in force (the queue\'s device was deleted under it)', async () => {
  // Tap A (3 queues) here; tap B's one queue, detached, is the device's 4th queue. B is
  // moved to another namespace and named like A, so Tap.fromFds takes its fd; deleting
  // B then leaves that fd belonging to no device, and TUNSETQUEUE attach refuses it.
  const name = uniqueName('vqf');
  const a = Tap.create({ name, queues: 3 });
  let b: Tap | undefined;
  let adopted: Tap | undefined;
  let netns: { pid: number; kill(): void } | undefined;
  let device: VirtioNetDevice | undefined;
  let guest: VirtioNetGuest | undefined;
  const memory = allocateGuestMemory(PAIRS);
  const sender = await boundSocket();
  try {
    b = Tap.create({ name: uniqueName('vqb'), queues: 1 });
    b.queues[0]!.detach();
    netns = await otherNetns();
    const inNetns = (...args: string[]): string => run('nsenter', ['-t', String(netns!.pid), '-n', ...args]);
    run('ip', ['link', 'set', b.name, 'netns', String(netns.pid)]);
    inNetns('ip', 'link', 'set', b.name, 'name', name);
    adopted = Tap.fromFds(name, [...a.queues.map((q) => q.fd), b.queues[0]!.fd], { attached: [true, true, true, false] });

    device = new VirtioNetDevice({ tap: adopted, memory, maxQueuePairs: PAIRS });
    const events = recordEvents(device);
    run('ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', name]);
    run('ip', ['neigh', 'replace', GUEST_IP, 'lladdr', device.mac, 'dev', name, 'nud', 'permanent']);
    guest = VirtioNetGuest.bringUp({ device, memory, rxBufferSize: BUFFER_SIZE, txBufferSize: BUFFER_SIZE });
    assert.is(await guest.setQueuePairs(2), VIRTIO_NET_OK);
    assert.is(readTapLinkInfo(name).numDisabled, 1, 'A: queue 2 detached');

    inNetns('ip', 'link', 'del', name); // B is gone; its queue fd is still the device's 4th
    assert.is(readTapLinkInfo(name).numQueues, 2, 'A is untouched');

    const check = async (n: number, tag: number): Promise<void> => {
      assert.is(device!.activeQueuePairs, n);
      assert.is(readTapLinkInfo(name).numDisabled, 3 - n, 'the kernel still has the previous set');
      assert.equal(device!.stats().pairs.map((p) => p.running), [0, 1, 2, 3].map((i) => i < n));
      await sendFlows(sender, tag, 128);
      const { received, perPair } = await receiveTagged(guest!, Array.from({ length: n }, (_, i) => i), tag, 128);
      assert.is(received, 128, `traffic on the ${n} pairs still in force`);
      assert.ok(perPair.every((c) => c > 0), perPair.join('/'));
    };

    assert.is(await guest.setQueuePairs(4), VIRTIO_NET_ERR, 'queue 3 cannot attach');
    assert.is(events.queueErrors.length, 1);
    assert.equal(events.queueErrors[0]!.pair, 'ctrl');
    assert.match(events.queueErrors[0]!.message, /could not use 4 queue pairs \(still 2\)/);
    assert.equal(events.queuePairs.map((c) => c.active), [2], 'no queue-pairs event for the refused switch');
    await check(2, 1);

    assert.is(await guest.setQueuePairs(3), VIRTIO_NET_OK, 'the pairs whose queues can attach still can');
    await check(3, 2);
    assert.is(await guest.setQueuePairs(4), VIRTIO_NET_ERR);
    await check(3, 3);
    assert.is(await guest.setQueuePairs(1), VIRTIO_NET_OK);
    await check(1, 4);
    assert.is(device.status & STATUS_DEVICE_NEEDS_RESET, 0, 'a refused switch is not a broken device');
    assert.equal(events.queuePairs.map((c) => c.active), [2, 3, 1]);
    assert.is(events.queueErrors.length, 2, 'one queue-error per refused switch');
  } finally {
    device?.close();
    guest?.close();
    sender.close();
    if (adopted) adopted.close(); // it owns A's fds and B's
    else {
      a.close();
      b?.close();
    }
    netns?.kill();
    memory.close();
  }
});

test.run();
