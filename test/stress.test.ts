import dgram from 'node:dgram';
import fs from 'node:fs';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { readTapLinkInfo } from '../src';
import { EventFd } from '../src/virtio/eventfd';
import { GUEST_IP, HOST_IP, withDataPath, type DataPath } from './helpers/datapath';
import { GUEST_MAC, ethernet, ipv4, parseUdp, udp } from '../harness/packets';
import { sleep } from '../harness/wait';
import { assertPrivateNetns, fdCount } from './helpers/system';

assertPrivateNetns();

const FRAMES = 100_000;
const WINDOW = 512;
const HOST_PORT = 7000;
const GUEST_BASE_PORT = 7100;
const FLOWS = 64;

function threadCount(): number {
  return fs.readdirSync('/proc/self/task').length;
}

function seqPayload(seq: number): Buffer {
  const b = Buffer.alloc(32, 0x5a);
  b.writeUInt32BE(seq, 0);
  return b;
}

/** Guest to host: both pairs send FRAMES/2 each, in windows the host socket acknowledges by counting. */
async function guestToHost(dp: DataPath): Promise<void> {
  const socket = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 << 20 });
  const seen = new Uint8Array(FRAMES);
  let received = 0;
  socket.on('message', (m) => {
    const seq = m.readUInt32BE(0);
    if (seq < FRAMES && !seen[seq]) {
      seen[seq] = 1;
      received++;
    }
  });
  await new Promise<void>((resolve) => socket.bind(HOST_PORT, HOST_IP, resolve));
  try {
    const frame = (seq: number): Buffer => ethernet(dp.hostMac, GUEST_MAC, 0x0800,
      ipv4(GUEST_IP, HOST_IP, 17, udp(GUEST_IP, HOST_IP, 40_000 + (seq % 2), HOST_PORT, seqPayload(seq), 'none')));
    let sent = 0;
    while (sent < FRAMES) {
      const batches = [0, 1].map((pair) => {
        const frames = [];
        for (let i = 0; i < WINDOW && sent + i * 2 + pair < FRAMES; i++) frames.push({ frame: frame(sent + i * 2 + pair) });
        return dp.driver.sendBatch(pair, frames);
      });
      await Promise.all(batches);
      sent = Math.min(FRAMES, sent + WINDOW * 2);
      const deadline = Date.now() + 5000;
      while (received < sent && Date.now() < deadline) await sleep(1);
      if (received < sent) throw new Error(`guest to host: ${received} of ${sent} arrived`);
    }
    assert.is(received, FRAMES);
    const stats = dp.pairs.map((p) => p.stats());
    assert.is(stats[0]!.tx.packets + stats[1]!.tx.packets, FRAMES, 'worker tx counters');
    assert.is(stats[0]!.tx.packets, FRAMES / 2);
  } finally {
    socket.close();
  }
}

/** Host to guest: 64 flows from the namespace, in windows the driver acknowledges by receiving. */
async function hostToGuest(dp: DataPath): Promise<ReturnType<DataPath['pairs'][number]['stats']>[]> {
  const socket = dgram.createSocket({ type: 'udp4', sendBufferSize: 4 << 20 });
  const seen = new Uint8Array(FRAMES);
  let received = 0;
  let running = true;
  const perPair = [0, 0];
  const receivers = [0, 1].map(async (pair) => {
    while (running || received < FRAMES) {
      const frames = await dp.driver.receive(pair, { timeoutMs: 50 });
      for (const f of frames) {
        const u = parseUdp(f.frame);
        if (!u || u.dstPort < GUEST_BASE_PORT || u.dstPort >= GUEST_BASE_PORT + FLOWS) continue;
        const seq = u.payload.readUInt32BE(0);
        if (seq < FRAMES && !seen[seq]) {
          seen[seq] = 1;
          received++;
          perPair[pair]!++;
        }
      }
      if (!running && frames.length === 0) break;
    }
  });
  try {
    let sent = 0;
    while (sent < FRAMES) {
      const end = Math.min(FRAMES, sent + WINDOW);
      const sends: Promise<void>[] = [];
      for (let seq = sent; seq < end; seq++) {
        sends.push(new Promise((resolve, reject) => socket.send(seqPayload(seq), GUEST_BASE_PORT + (seq % FLOWS), GUEST_IP, (e) => (e ? reject(e) : resolve()))));
      }
      await Promise.all(sends);
      sent = end;
      const deadline = Date.now() + 5000;
      while (received < sent && Date.now() < deadline) await sleep(1);
      if (received < sent) throw new Error(`host to guest: ${received} of ${sent} arrived (tap dropped ${readTapLinkInfo(dp.tap.name).stats.txDropped})`);
    }
  } finally {
    running = false;
    await Promise.all(receivers);
    socket.close();
  }
  assert.is(received, FRAMES);
  assert.ok(perPair[0]! > 0 && perPair[1]! > 0, `both pairs carry flows: ${perPair.join('/')}`);
  const stats = dp.pairs.map((p) => p.stats());
  assert.ok(stats[0]!.rx.packets + stats[1]!.rx.packets >= FRAMES, 'worker rx counters');
  assert.is(readTapLinkInfo(dp.tap.name).stats.txDropped, 0);
  return stats;
}

for (const eventIdx of [true, false]) {
  test(`100,000 frames each way on 2 queue pairs, event idx ${eventIdx ? 'on' : 'off'}: counts match exactly, fds and threads return to where they were`, async () => {
    // The process-wide eventfd poller (2 fds) is made on first use and kept: make it before counting.
    const warm = EventFd.create();
    await warm.wait(1);
    warm.close();
    const fdsBefore = fdCount();
    const threadsBefore = threadCount();
    const rssBefore = process.memoryUsage().rss;
    // Event idx on: rx reads in io_uring batches; off: one readv per frame. Both paths see 100,000 frames.
    await withDataPath({ pairs: 2, queueSize: 256, features: { eventIdx }, rxBufferSize: 2048, txBufferSize: 2048, ...(eventIdx ? { rxMaxFrameBytes: 12 + 18 + 1500 } : {}) }, async (dp) => {
      assert.ok(threadCount() >= threadsBefore + 2, 'one worker thread per pair');
      await guestToHost(dp);
      const rxStats = await hostToGuest(dp);
      const rxBatches = rxStats[0]!.rx.batches + rxStats[1]!.rx.batches;
      if (eventIdx) assert.ok(rxBatches > 0, 'rx read in io_uring batches');
      else assert.is(rxBatches, 0, 'without rxMaxFrameBytes rx reads one frame per readv');
      console.log(`    event idx ${eventIdx ? 'on' : 'off'}: rx ${FRAMES} frames in ${rxBatches} io_uring batches, tx in ${dp.pairs[0]!.stats().tx.batches + dp.pairs[1]!.stats().tx.batches}`);
      assert.is(dp.errors.length, 0, JSON.stringify(dp.errors));
      for (const p of dp.pairs) {
        const s = p.stats();
        assert.is(s.rx.drops.tooBig + s.tx.drops.badHeader + s.tx.drops.tapError, 0);
      }
    });
    await sleep(20);
    assert.is(fdCount(), fdsBefore, 'fd count back to where it was');
    assert.ok(threadCount() <= threadsBefore + 1, `worker threads joined (${threadsBefore} -> ${threadCount()})`);
    const grown = (process.memoryUsage().rss - rssBefore) / (1 << 20);
    assert.ok(grown < 64, `RSS grew ${grown.toFixed(1)} MB over 200,000 frames`);
  });
}

test.run();
