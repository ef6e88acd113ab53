// Live migration over vhost-user as QEMU does it (vhost-user.rst "Migration"):
// SET_LOG_BASE with the log region's fd, SET_FEATURES with VHOST_F_LOG_ALL,
// SET_VRING_ADDR with VHOST_VRING_F_LOG for the running rings, and SEND_RARP on
// the destination. A TS frontend plays QEMU; the guest is the TS driver.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { Tap, VhostUserServer, VirtioNetDevice, readTapLinkInfo } from '../src';
import { native } from '../src/native';
import { DIRTY_LOG_PAGE_SIZE, dirtyLogBytes } from '../src/virtio/dirty-log';
import { EventFd } from '../src/virtio/eventfd';
import { featureBit } from '../src/virtio/features';
import type { PackedQueueDriver } from '../src/virtio/driver/packed-queue-driver';
import { ProtocolFeature, Request, VHOST_F_LOG_ALL, VHOST_VRING_F_LOG, encodeU64 } from '../src/vhost-user/protocol';
import { GUEST_IP, HOST_IP } from './helpers/datapath';
import { GUEST_MAC as GUEST_MAC_BYTES, ethernet, ipv4, parseUdp, pattern, udp } from '../harness/packets';
import { sendDatagrams } from './helpers/udp';
import { sleep, until } from '../harness/wait';
import { assertPrivateNetns, fdCount, run, uniqueName } from './helpers/system';
import {
  PROTOCOL_PROTOCOL_FEATURES, VhostUserFrontend, WANTED_PROTOCOL_FEATURES, encodeVringAddr, packedUsedEnd, pf, type VhostUserGuest,
} from './helpers/vhost-user-frontend';

assertPrivateNetns();

const GUEST_MAC = '52:54:00:12:34:56';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vhost-user-migration-'));
const MIGRATION_PROTOCOL_FEATURES = WANTED_PROTOCOL_FEATURES | pf(ProtocolFeature.LOG_SHMFD, ProtocolFeature.RARP);

interface Rig {
  tap: Tap;
  device: VirtioNetDevice;
  logs: { event: string; fields?: Record<string, unknown> }[];
  connect(): VhostUserFrontend;
}

async function withServer(body: (rig: Rig) => Promise<void>): Promise<void> {
  const warm = EventFd.create(); // the poller thread and its fds exist before anyone counts
  await warm.wait(1);
  warm.close();
  const tap = Tap.create({ name: uniqueName('vmg'), queues: 1 });
  const socket = path.join(tmp, `${tap.name}.sock`);
  const logs: Rig['logs'] = [];
  const device = new VirtioNetDevice({ tap, controlQueue: 'frontend', mac: GUEST_MAC });
  const server = new VhostUserServer({ device, socketPath: socket, log: (event, fields) => logs.push({ event, ...(fields ? { fields } : {}) }) });
  try {
    run('ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', tap.name]);
    run('ip', ['neigh', 'replace', GUEST_IP, 'lladdr', GUEST_MAC, 'dev', tap.name, 'nud', 'permanent']);
    server.start();
    await body({ tap, device, logs, connect: () => VhostUserFrontend.connect(socket) });
  } finally {
    await server.stop();
    device.close();
    tap.close();
  }
}

/** A log region as QEMU makes one: a memfd of `bytes`, mapped here too to read what the backend marks. */
function logRegion(bytes: number): { fd: number; read(): Buffer; close(): void } {
  const fd = native.memfdCreate('qemu-log', bytes);
  return {
    fd,
    read: () => {
      const out = Buffer.alloc(bytes);
      fs.readSync(fd, out, 0, bytes, 0);
      return out;
    },
    close: () => native.closeFd(fd),
  };
}

function logBase(size: number, offset = 0): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(BigInt(size), 0);
  b.writeBigUInt64LE(BigInt(offset), 8);
  return b;
}

async function setLogBase(fe: VhostUserFrontend, fd: number, size: number): Promise<void> {
  const outcome = await fe.exchange(Request.SET_LOG_BASE, logBase(size), { fds: [fd], expectReply: true });
  assert.equal(outcome, { kind: 'reply', payload: Buffer.alloc(0) }, 'SET_LOG_BASE is answered with an empty reply, as QEMU waits for');
}

/** QEMU's vhost_dev_set_log(true): features with LOG_ALL, then each running ring's address again with VHOST_VRING_F_LOG. */
async function startLogging(fe: VhostUserFrontend, guest: VhostUserGuest, features: bigint): Promise<void> {
  await fe.setFeatures(features | featureBit(VHOST_F_LOG_ALL));
  const { rx, tx } = guest.driver.queueConfig(0);
  for (const [ring, q] of [[0, rx], [1, tx]] as const) {
    const payload = encodeVringAddr(ring, q, VHOST_VRING_F_LOG);
    // log_guest_addr: the used ring's guest-physical address, as QEMU sends it.
    payload.writeBigUInt64LE(BigInt(q.usedAddr), 32);
    await fe.ok(Request.SET_VRING_ADDR, payload);
  }
}

function sendToGuest(port: number, payloads: Buffer[]): Promise<void> {
  return sendDatagrams(HOST_IP, GUEST_IP, port, payloads);
}

async function receiveAll(guest: VhostUserGuest, port: number, count: number): Promise<Buffer[]> {
  const got: Buffer[] = [];
  const end = Date.now() + 5000;
  while (got.length < count && Date.now() < end) {
    for (const r of await guest.driver.receive(0, { timeoutMs: 100 })) {
      const u = parseUdp(r.frame);
      if (u?.dstPort === port) got.push(u.payload);
    }
  }
  return got;
}

const features = (fe: VhostUserFrontend, guest: VhostUserGuest): bigint => (guest.features & fe.offeredFeatures) | PROTOCOL_PROTOCOL_FEATURES;

test('the backend offers what QEMU needs to migrate: VHOST_F_LOG_ALL, LOG_SHMFD and RARP', async () => {
  await withServer(async (rig) => {
    const fe = rig.connect();
    try {
      const offered = await fe.getFeatures();
      assert.ok(offered & featureBit(VHOST_F_LOG_ALL), 'VHOST_F_LOG_ALL (bit 26)');
      const protocol = await fe.getProtocolFeatures();
      assert.ok(protocol & pf(ProtocolFeature.LOG_SHMFD), 'LOG_SHMFD');
      assert.ok(protocol & pf(ProtocolFeature.RARP), 'RARP');
    } finally {
      fe.close();
    }
  });
});

for (const ringPacked of [false, true]) {
  const layout = ringPacked ? ' [packed ring]' : '';
  test(`logging on while the rings run: every page the backend changes is marked in the log (rx and tx), no frame lost, off again${layout}`, async () => {
    await withServer(async (rig) => {
      const fe = rig.connect();
      let guest: VhostUserGuest | undefined;
      let region: ReturnType<typeof logRegion> | undefined;
      try {
        await fe.init({ protocolFeatures: MIGRATION_PROTOCOL_FEATURES, rings: 2 });
        guest = await fe.startDevice(1, { features: { ringPacked } });
        const g = guest;
        // Traffic before logging, so the rings are warm and running.
        await sendToGuest(7000, [pattern(100, 1)]);
        assert.is((await receiveAll(g, 7000, 1)).length, 1);

        const memoryBytes = g.memory.size;
        region = logRegion(dirtyLogBytes(memoryBytes));
        await setLogBase(fe, region.fd, dirtyLogBytes(memoryBytes));
        const packetsBefore = rig.device.stats().pairs[0]!.rx!.packets;
        assert.ok(packetsBefore >= 1);
        await startLogging(fe, g, features(fe, g));
        assert.ok(rig.device.isPairRunning(0), 'the rings run on');
        assert.is(rig.device.stats().pairs[0]!.rx!.packets, packetsBefore, 'the same worker: a restart would have reset its counters');

        await sleep(20);
        const before = Buffer.from(g.memory.bytes(0, memoryBytes));
        const payloads = [1, 64, 600, 1472, 333, 1000, 1472, 18].map((n, i) => pattern(n, i + 50));
        // Used entries the device has written since `before`: split, the used index; packed, used
        // descriptors in the descriptor ring ahead of the driver, which reaps nothing meanwhile.
        const used = g.driver.rxQueue(0).layout.usedAddr;
        const rxUsed = (): number => (ringPacked ? packedUsedEnd(g.memory, g.driver.rxQueue(0)).unreaped : g.memory.view(used + 2, 2).getUint16(0, true));
        const start = rxUsed();
        await sendToGuest(7001, payloads);
        await until('the frames in the used ring', () => ((rxUsed() - start) & 0xffff) >= payloads.length);
        await sleep(50);
        const bits = region.read();
        const now = g.memory.bytes(0, memoryBytes);
        const missed: number[] = [];
        let changed = 0;
        for (let p = 0; p * DIRTY_LOG_PAGE_SIZE < memoryBytes; p++) {
          const a = p * DIRTY_LOG_PAGE_SIZE;
          const b = Math.min(memoryBytes, a + DIRTY_LOG_PAGE_SIZE);
          if (Buffer.compare(before.subarray(a, b), now.subarray(a, b)) === 0) continue;
          changed++;
          if (!(bits[p >> 3]! & (1 << (p & 7)))) missed.push(p);
        }
        assert.ok(changed > 0, 'the backend wrote into guest memory');
        assert.equal(missed, [], `changed pages the log does not mark (of ${changed})`);
        const got = await receiveAll(g, 7001, payloads.length);
        assert.equal(got, payloads, 'every frame arrived while logging');

        // tx: the device writes nothing of the guest's frames, only where it completes them: the
        // used ring (split), or used descriptors over the chains in the descriptor ring (packed).
        // Frames addressed to another host, so nothing comes back to dirty the rx ring.
        bits.fill(0);
        fs.writeSync(region.fd, bits, 0, bits.length, 0);
        const txQueue = g.driver.txQueue(0);
        const { descAddr, usedAddr, size } = txQueue.layout;
        const firstSlot = ringPacked ? (txQueue as PackedQueueDriver<number>).nextAvail.index : g.memory.view(usedAddr + 2, 2).getUint16(0, true);
        const txBefore = rig.device.stats().pairs[0]!.tx!.packets;
        const T = 40;
        const elsewhere = ethernet(Buffer.from([2, 0, 0, 0, 0, 9]), GUEST_MAC_BYTES, 0x0800, ipv4(GUEST_IP, '10.6.0.9', 17, udp(GUEST_IP, '10.6.0.9', 4000, 9, pattern(200, 7), 'full')));
        for (let i = 0; i < T; i++) await g.driver.send(0, elsewhere);
        await until('the tx completions', () => rig.device.stats().pairs[0]!.tx!.packets - txBefore >= T);
        await sleep(20);
        const txBits = region.read();
        const ringPages = new Set<number>();
        for (let i = 0; i < T; i++) {
          const slot = (firstSlot + i) % size;
          ringPages.add(Math.floor((ringPacked ? descAddr + 16 * slot + 8 : usedAddr + 4 + 8 * slot) / DIRTY_LOG_PAGE_SIZE));
        }
        if (!ringPacked) ringPages.add(Math.floor((usedAddr + 2) / DIRTY_LOG_PAGE_SIZE));
        const unmarked = [...ringPages].filter((p) => !(txBits[p >> 3]! & (1 << (p & 7))));
        assert.equal(unmarked, [], `pages of the tx ring's used entries the log does not mark (of ${ringPages.size})`);

        // vhost_dev_set_log(false): features without LOG_ALL; nothing is marked any more.
        await fe.setFeatures(features(fe, g));
        bits.fill(0);
        fs.writeSync(region.fd, bits, 0, bits.length, 0);
        await sendToGuest(7002, [pattern(1472, 9)]);
        assert.is((await receiveAll(g, 7002, 1)).length, 1);
        assert.ok(region.read().every((b) => b === 0), 'logging is off: no page is marked');
        assert.ok(rig.logs.some((l) => l.event === 'log-base'), 'the log region was logged');
      } finally {
        fe.close();
        guest?.close();
        region?.close();
      }
    });
  });

  test(`a log region too small for guest memory, or one mmap refuses: SET_LOG_BASE still answers, LOG_ALL is refused, nothing leaks${layout}`, async () => {
    await withServer(async (rig) => {
      const fe = rig.connect();
      let guest: VhostUserGuest | undefined;
      try {
        await fe.init({ protocolFeatures: MIGRATION_PROTOCOL_FEATURES, rings: 2 });
        guest = await fe.startDevice(1, { features: { ringPacked } });
        const baseline = fdCount();
        const small = logRegion(1); // covers 32 KiB
        try {
          await setLogBase(fe, small.fd, 1);
        } finally {
          small.close();
        }
        // A regular file opened read-only: mmap refuses a shared writable mapping of it.
        const file = path.join(tmp, 'read-only-log');
        fs.writeFileSync(file, Buffer.alloc(1 << 16));
        const readOnly = fs.openSync(file, 'r');
        try {
          await setLogBase(fe, readOnly, 1 << 16);
        } finally {
          fs.closeSync(readOnly);
        }
        const outcome = await fe.exchange(Request.SET_FEATURES, encodeU64(features(fe, guest) | featureBit(VHOST_F_LOG_ALL)));
        assert.equal(outcome, { kind: 'ack', value: 1n }, 'LOG_ALL without a usable log is refused, so QEMU fails the migration instead of missing pages');
        assert.ok(rig.device.isPairRunning(0), 'the guest keeps its network');
        assert.is(fdCount(), baseline, 'every log fd the frontend sent was closed');
        assert.is(rig.logs.filter((l) => l.event === 'request-failed' && l.fields?.request === 'SET_LOG_BASE').length, 2);
      } finally {
        fe.close();
        guest?.close();
      }
    });
  });

  test(`SEND_RARP: a RARP broadcast from the guest MAC leaves through the tap, and a bridge learns the guest on that port${layout}`, async () => {
    await withServer(async (rig) => {
      const bridge = uniqueName('vbr');
      run('ip', ['link', 'add', bridge, 'type', 'bridge']);
      try {
        run('ip', ['addr', 'flush', 'dev', rig.tap.name]);
        run('ip', ['link', 'set', rig.tap.name, 'master', bridge]);
        run('ip', ['link', 'set', bridge, 'up']);
        const fe = rig.connect();
        let guest: VhostUserGuest | undefined;
        try {
          await fe.init({ protocolFeatures: MIGRATION_PROTOCOL_FEATURES, rings: 2 });
          guest = await fe.startDevice(1, { features: { ringPacked } });
          const before = readTapLinkInfo(rig.tap.name).stats.rxPackets;
          const mac = Buffer.alloc(8);
          Buffer.from(GUEST_MAC.split(':').map((h) => parseInt(h, 16))).copy(mac);
          await fe.ok(Request.SEND_RARP, mac);
          await until('the RARP frame on the tap', () => readTapLinkInfo(rig.tap.name).stats.rxPackets > before);
          const fdb = run('bridge', ['fdb', 'show', 'br', bridge]);
          assert.match(fdb, new RegExp(`${GUEST_MAC} dev ${rig.tap.name}`), `the bridge learned the guest's MAC on the tap:\n${fdb}`);
          assert.ok(rig.logs.some((l) => l.event === 'rarp'));
        } finally {
          fe.close();
          guest?.close();
        }
      } finally {
        run('ip', ['link', 'del', bridge]);
      }
    });
  });
}

test.after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

test.run();
