// Dirty logging for live migration (vhost-user.rst "Migration"): every byte the
// data path writes into guest memory marks its 4 KiB page. Checked the strict
// way: a copy of guest memory taken when logging starts, and after traffic every
// page whose bytes differ must have its bit set.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { native } from '../src/native';
import { DIRTY_LOG_PAGE_SIZE, DirtyLog, DirtyLogSlot, dirtyLogBytes } from '../src/virtio/dirty-log';
import { GUEST_IP, HOST_IP, withDataPath, type DataPath, type DataPathOptions } from './helpers/datapath';
import { GUEST_MAC, ethernet, ipv4, parseUdp, pattern, udp } from '../harness/packets';
import { sendDatagrams } from './helpers/udp';
import { sleep, until } from '../harness/wait';
import { assertPrivateNetns, run } from './helpers/system';

assertPrivateNetns();

function sendToGuest(port: number, payloads: Buffer[]): Promise<void> {
  return sendDatagrams(HOST_IP, GUEST_IP, port, payloads);
}

/** Used index the device published on a ring (u16 at usedAddr + 2). */
/** Frames the device has completed on a queue (its own count: the driver has not reaped them, nor written anything). */
function completed(dp: DataPath, which: 'rx' | 'tx', pair = 0): number {
  return dp.pairs[pair]!.stats()[which].packets;
}

function isMarked(bits: Buffer, page: number): boolean {
  return (bits[page >> 3]! & (1 << (page & 7))) !== 0;
}

/** Pages whose bytes differ between the snapshot and guest memory now. */
function changedPages(before: Buffer, dp: DataPath): number[] {
  const now = dp.memory.bytes(0, before.length);
  const pages: number[] = [];
  for (let p = 0; p * DIRTY_LOG_PAGE_SIZE < before.length; p++) {
    const start = p * DIRTY_LOG_PAGE_SIZE;
    const end = Math.min(before.length, start + DIRTY_LOG_PAGE_SIZE);
    if (Buffer.compare(before.subarray(start, end), now.subarray(start, end)) !== 0) pages.push(p);
  }
  return pages;
}

async function everyChangedPageIsMarked(name: string, options: DataPathOptions, frames: number[]): Promise<void> {
  const slot = new DirtyLogSlot();
  await withDataPath({ ...options, dirtyLog: slot }, async (dp) => {
    const log = DirtyLog.allocate(dp.memory.size);
    try {
      // Jumbo frames run past the first page of their buffer: only the data's own mark covers those pages.
      run('ip', ['link', 'set', 'dev', dp.tap.name, 'mtu', '9000']);
      // Let the rx buffers posted at start settle, then log from a known state.
      await sleep(20);
      slot.set(log);
      log.collect(true);
      const before = Buffer.from(dp.memory.bytes(0, dp.memory.size));
      const payloads = frames.map((n, i) => pattern(n, i + 7));
      await sendToGuest(6100, payloads);
      await until(`${payloads.length} frames in the guest's used ring`, () => completed(dp, 'rx') >= payloads.length);
      await sleep(20);
      const bits = log.collect(false);
      const changed = changedPages(before, dp);
      const missed = changed.filter((p) => !isMarked(bits, p));
      assert.ok(changed.length > 0, `${name}: the data path changed guest memory`);
      assert.equal(missed, [], `${name}: pages the data path changed that the log does not mark (of ${changed.length} changed)`);
      let marked = 0;
      for (let p = 0; p < bits.length * 8; p++) if (isMarked(bits, p)) marked++;
      assert.ok(marked <= changed.length + 4, `${name}: only what was written is marked (${marked} marked, ${changed.length} changed)`);
      assert.is(dp.errors.length, 0);
      assert.is(log.outOfRange, 0);
      // The frames themselves arrived intact: logging changes nothing the guest sees.
      const got: Buffer[] = [];
      const end = Date.now() + 3000;
      while (got.length < payloads.length && Date.now() < end) {
        for (const r of await dp.driver.receive(0, { timeoutMs: 200 })) {
          const u = parseUdp(r.frame);
          if (u?.dstPort === 6100) got.push(u.payload);
        }
      }
      assert.equal(got, payloads, `${name}: the guest got every frame, byte for byte`);
    } finally {
      slot.set(undefined);
      log.close();
    }
  });
}

const SIZES = [1, 18, 100, 600, 1000, 1472, 64, 8972, 300, 5000, 4100];

// Packed rings write used descriptors into the descriptor ring, and event suppression
// into the device area: the same snapshot check covers them.
for (const ringPacked of [false, true]) {
  const layout = ringPacked ? ' [packed ring]' : '';
  test(`rx, one readv per frame: every page the data path changes is marked${layout}`, async () => {
    await everyChangedPageIsMarked('readv', { ringPacked }, SIZES);
  });

  test(`rx, io_uring batches of reads: every page the data path changes is marked${layout}`, async () => {
    await everyChangedPageIsMarked('batch', { ringPacked, rxMaxFrameBytes: 12 + 18 + 9000 }, [...SIZES, ...SIZES, ...SIZES]);
  });

  test(`rx, mergeable buffers of 512 bytes (num_buffers, frames across chains): every changed page is marked${layout}`, async () => {
    await everyChangedPageIsMarked('mergeable', { ringPacked, features: { mergeableRx: true }, rxBufferSize: 512 }, SIZES);
  });

  test(`rx without event idx (the used flags are written instead of avail_event): every changed page is marked${layout}`, async () => {
    await everyChangedPageIsMarked('no event idx', { ringPacked, features: { eventIdx: false } }, SIZES);
  });
}

for (const ringPacked of [false, true]) {
  test(`tx: the used ${ringPacked ? 'descriptors (in the descriptor ring)' : 'ring entries and index'} the device writes are marked${ringPacked ? ' [packed ring]' : ''}`, async () => {
    const slot = new DirtyLogSlot();
    await withDataPath({ dirtyLog: slot, ringPacked }, async (dp) => {
      const log = DirtyLog.allocate(dp.memory.size);
      try {
        slot.set(log);
        log.collect(true);
        const { descAddr, usedAddr } = dp.driver.txQueue(0).layout;
        const frame = ethernet(dp.hostMac, GUEST_MAC, 0x0800, ipv4(GUEST_IP, HOST_IP, 17, udp(GUEST_IP, HOST_IP, 4000, 9, pattern(100, 1))));
        for (let i = 0; i < 40; i++) await dp.driver.send(0, frame);
        await until('40 tx completions', () => completed(dp, 'tx') === 40);
        await sleep(20);
        const bits = log.collect(true);
        const ringPages = new Set<number>();
        // Split: used ring entries 0..39 and used->idx. Packed: one used descriptor per
        // one-descriptor chain, in slots 0..39 of the descriptor ring.
        for (let i = 0; i < 40; i++) ringPages.add(Math.floor((ringPacked ? descAddr + 16 * i : usedAddr + 4 + 8 * i) / DIRTY_LOG_PAGE_SIZE));
        if (!ringPacked) ringPages.add(Math.floor((usedAddr + 2) / DIRTY_LOG_PAGE_SIZE));
        for (const p of ringPages) assert.ok(isMarked(bits, p), `used ring page ${p} is marked`);
      } finally {
        slot.set(undefined);
        log.close();
      }
    });
  });
}

test('logging switched on and off under traffic: every frame arrives once, in order', async () => {
  const slot = new DirtyLogSlot();
  await withDataPath({ dirtyLog: slot, rxMaxFrameBytes: 12 + 18 + 1500 }, async (dp) => {
    const log = DirtyLog.allocate(dp.memory.size);
    try {
      const total = 2000;
      const seen: number[] = [];
      let on = false;
      const toggler = setInterval(() => {
        on = !on;
        slot.set(on ? log : undefined);
      }, 2);
      try {
        for (let sent = 0; sent < total; sent += 50) {
          const burst = Array.from({ length: 50 }, (_, i) => {
            const b = Buffer.alloc(64);
            b.writeUInt32BE(sent + i, 0);
            return b;
          });
          await sendToGuest(6200, burst);
          const end = Date.now() + 3000;
          while (seen.length < sent + 50 && Date.now() < end) {
            for (const r of await dp.driver.receive(0, { timeoutMs: 100 })) {
              const u = parseUdp(r.frame);
              if (u?.dstPort === 6200) seen.push(u.payload.readUInt32BE(0));
            }
          }
        }
      } finally {
        clearInterval(toggler);
      }
      assert.is(seen.length, total, 'no frame lost or duplicated');
      assert.ok(seen.every((v, i) => v === i), 'in order');
      assert.is(dp.errors.length, 0);
    } finally {
      slot.set(undefined);
      log.close();
    }
  });
});

test('a log too small for guest memory: marks beyond it are counted, never written', async () => {
  const slot = new DirtyLogSlot();
  await withDataPath({ dirtyLog: slot }, async (dp) => {
    const log = DirtyLog.allocate(DIRTY_LOG_PAGE_SIZE * 8); // one byte: the first 32 KiB only
    try {
      assert.is(log.bytes, 1);
      slot.set(log);
      await sendToGuest(6300, SIZES.map((n) => pattern(n, 3)));
      await until('the frames in the used ring', () => completed(dp, 'rx') >= SIZES.length);
      await sleep(20);
      assert.ok(log.outOfRange > 0, `marks past the end were counted (${log.outOfRange})`);
      assert.is(dp.errors.length, 0, 'the queue goes on');
    } finally {
      slot.set(undefined);
      log.close();
    }
  });
});

test('a log that cannot be mapped is refused with a code, and nothing is left open', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dirty-log-'));
  const before = fs.readdirSync('/proc/self/fd').length;
  try {
    const file = path.join(dir, 'short');
    fs.writeFileSync(file, Buffer.alloc(16));
    const fd = fs.openSync(file, 'r+');
    try {
      assert.throws(() => DirtyLog.fromFd(fd, 4096, 0), (e: Error & { code?: string }) => e.code === 'EINVAL' && /beyond its file/.test(e.message));
      assert.throws(() => DirtyLog.fromFd(fd, 0, 0), (e: Error & { code?: string }) => e.code === 'EINVAL');
      const [a, b] = native.socketPair('stream');
      try {
        assert.throws(() => DirtyLog.fromFd(a, 4096, 0), (e: Error & { code?: string }) => typeof e.code === 'string' && /mmap/.test(e.message));
      } finally {
        native.closeFd(a);
        native.closeFd(b);
      }
      const ok = DirtyLog.fromFd(fd, 16, 0);
      assert.is(ok.bytes, 16);
      ok.close();
    } finally {
      fs.closeSync(fd);
    }
    assert.is(fs.readdirSync('/proc/self/fd').length, before, 'no fd leaked');
    assert.is(dirtyLogBytes(1 << 30), (1 << 30) / 4096 / 8);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('takeDirtyPages lists and clears, and a mark made meanwhile is not lost', () => {
  const log = DirtyLog.allocate(1 << 20);
  try {
    assert.equal(log.takeDirtyPages(), []);
  } finally {
    log.close();
  }
});

test.run();
