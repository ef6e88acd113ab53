// The vhost-user backend (src/vhost-user, `vhost-tap serve`) driven by a TS
// frontend that does what QEMU does on the socket: a real tap, the real kernel
// stack, guest memory shared by memfd, the TS guest driver on the rings.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { Tap, TapSteering, acceptUnix, listenUnix, readTapLinkInfo } from '../src';
import { native } from '../src/native';
import { STATUS_ACKNOWLEDGE, STATUS_DEVICE_NEEDS_RESET, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK } from '../src/virtio/device-status';
import { EventFd } from '../src/virtio/eventfd';
import * as F from '../src/virtio/features';
import { featureBit } from '../src/virtio/features';
import { GuestMemory } from '../src/virtio/guest-memory';
import { GuestAllocator } from '../src/virtio/driver/guest-allocator';
import { VirtioNetDriver } from '../src/virtio/driver/net-driver';
import type { PackedQueueDriver } from '../src/virtio/driver/packed-queue-driver';
import { encodePackedRingBase, type PackedRingPosition } from '../src/virtio/ring-base';
import { VirtioNetDevice } from '../src/virtio/net-device';
import {
  FLAG_NEED_REPLY, MAX_MEM_SLOTS, ProtocolFeature, Request, VHOST_F_LOG_ALL, VHOST_USER_VERSION, encodeMessage, encodeU64, encodeVringState,
  requestName,
} from '../src/vhost-user/protocol';
import { VhostUserServer } from '../src/vhost-user/server';
import { GUEST_IP, HOST_IP } from './helpers/datapath';
import { ethtoolFeatures, sendTo, hostSocket } from './helpers/device';
import { GUEST_MAC, ethernet, ipv4, parseUdp, pattern, udp } from '../harness/packets';
import { sleep, until } from '../harness/wait';
import { assertPrivateNetns, fdCount, run, uniqueName } from './helpers/system';
import {
  PROTOCOL_PROTOCOL_FEATURES, VhostUserFrontend, VhostUserGuest, encodeMemTable, encodeSingleRegion, encodeVringAddr,
  packedUsedEnd, pf, resumeBase, virtioFeaturesOf, type Exchange, type MemRegion,
} from './helpers/vhost-user-frontend';

assertPrivateNetns();

const GUEST_MAC_STRING = '52:54:00:12:34:56';
const CLI = path.join(__dirname, '..', 'src', 'cli', 'vhost-tap.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vhost-user-test-'));

interface LogEntry {
  event: string;
  fields?: Record<string, unknown>;
}

interface Rig {
  tap: Tap;
  device: VirtioNetDevice;
  server: VhostUserServer;
  socket: string;
  logs: LogEntry[];
  hostMac: Buffer;
  connect(): VhostUserFrontend;
  /** Resolves once the server has released the connection it was serving. */
  released(): Promise<void>;
}

/** The eventfd poller (2 fds, a thread) is made on first use and kept: make it before counting fds. */
async function warmUp(): Promise<void> {
  const warm = EventFd.create();
  await warm.wait(1);
  warm.close();
  await fs.promises.stat('/');
}

/** Waits for the fd count to come back to `before` (dgram sockets close on the next loop turn), then checks it. */
async function assertFdsBack(before: number, what: string): Promise<void> {
  const end = Date.now() + 2000;
  while (fdCount() !== before && Date.now() < end) await sleep(10);
  if (process.env.FD_DEBUG && fdCount() !== before) {
    for (const fd of fs.readdirSync('/proc/self/fd')) {
      try { console.log(fd, fs.readlinkSync(`/proc/self/fd/${fd}`)); } catch { /* gone */ }
    }
  }
  assert.is(fdCount(), before, `${what}: fd count back to where it was`);
}

function macOf(name: string): Buffer {
  const [link] = JSON.parse(run('ip', ['-j', 'link', 'show', 'dev', name])) as { address: string }[];
  return Buffer.from(link!.address.split(':').map((h) => parseInt(h, 16)));
}

function addressTap(name: string): void {
  run('ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', name]);
  run('ip', ['neigh', 'replace', GUEST_IP, 'lladdr', GUEST_MAC_STRING, 'dev', name, 'nud', 'permanent']);
}

/** Threads of a process, less io_uring's kernel workers (iou-wrk-*), which linger a few seconds idle and are not ours. */
function threadsOf(pid: number | 'self' = 'self'): number {
  return fs.readdirSync(`/proc/${pid}/task`).filter((tid) => {
    try {
      return !fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').startsWith('iou-');
    } catch {
      return false; // just exited
    }
  }).length;
}

interface Resources {
  fds: number;
  threads: number;
}

function resourcesOf(pid: number | 'self' = 'self'): Resources {
  return { fds: fs.readdirSync(`/proc/${pid}/fd`).length, threads: threadsOf(pid) };
}

/** Waits (up to 3 s: sockets close on the next loop turn, threads take a moment to exit) for fds and threads to be back at `start`, then checks. */
async function assertResourcesBack(start: Resources, what: string, pid: number | 'self' = 'self'): Promise<void> {
  const end = Date.now() + 3000;
  while (JSON.stringify(resourcesOf(pid)) !== JSON.stringify(start) && Date.now() < end) await sleep(10);
  if (process.env.FD_DEBUG && resourcesOf(pid).fds !== start.fds) {
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      try { console.log(fd, fs.readlinkSync(`/proc/${pid}/fd/${fd}`)); } catch { /* gone */ }
    }
  }
  assert.equal(resourcesOf(pid), start, `${what}: fds and threads back to where they were`);
}

/**
 * A server on a new tap with `pairs` queue pairs, for `body`. Afterwards this
 * process's fds and threads must be back where they were once the server
 * listened, and stopping the server (what SIGTERM does in the daemon) must take
 * under a second.
 */
async function withServer(pairs: number, body: (rig: Rig) => Promise<void>, options: { messageDeadlineMs?: number } = {}): Promise<void> {
  await warmUp();
  const tap = Tap.create({ name: uniqueName('vvu'), queues: pairs });
  const socket = path.join(tmp, `${tap.name}.sock`);
  const logs: LogEntry[] = [];
  let device: VirtioNetDevice | undefined;
  let server: VhostUserServer | undefined;
  let stopMs = 0;
  try {
    addressTap(tap.name);
    device = new VirtioNetDevice({ tap, controlQueue: 'frontend', mac: GUEST_MAC_STRING });
    server = new VhostUserServer({ device, socketPath: socket, log: (event, fields) => logs.push({ event, ...(fields ? { fields } : {}) }), ...options });
    server.start();
    const start = resourcesOf();
    const s = server;
    const rig: Rig = {
      tap, device, server, socket, logs, hostMac: macOf(tap.name),
      connect: () => VhostUserFrontend.connect(socket),
      released: () => until('the server to release the connection', () => !s.connected),
    };
    await body(rig);
    assert.not.ok(logs.some((l) => l.event === 'connection-crashed'), JSON.stringify(logs.filter((l) => l.event === 'connection-crashed')));
    await rig.released();
    await assertResourcesBack(start, 'after the test');
  } finally {
    const stopping = Date.now();
    await server?.stop();
    stopMs = Date.now() - stopping;
    device?.close();
    tap.close();
  }
  assert.not.ok(fs.existsSync(socket), 'the server removed its socket');
  assert.ok(stopMs < 1000, `the server took ${stopMs} ms to stop`);
}

function numDisabled(name: string): number {
  return readTapLinkInfo(name).numDisabled;
}

function guestFrame(hostMac: Buffer, srcPort: number, dstPort: number, payload: Buffer): Buffer {
  return ethernet(hostMac, GUEST_MAC, 0x0800, ipv4(GUEST_IP, HOST_IP, 17, udp(GUEST_IP, HOST_IP, srcPort, dstPort, payload, 'full')));
}

/** The guest sends datagrams on `pair`; they arrive byte-exact, in order, at a socket in the namespace. */
async function guestToHost(hostMac: Buffer, guest: VhostUserGuest, pair: number, port: number, count = 5): Promise<void> {
  const host = await hostSocket(port);
  try {
    const payloads = Array.from({ length: count }, (_, i) => pattern([1, 64, 333, 1000, 1472][i % 5]!, port * 10 + i));
    for (const p of payloads) await guest.driver.send(pair, guestFrame(hostMac, 4000 + pair, port, p));
    await until(`${count} datagrams from pair ${pair}`, () => host.received.length >= count);
    assert.is(host.received.length, count);
    host.received.forEach((got, i) => assert.ok(got.equals(payloads[i]!), `pair ${pair}: datagram ${i} differs`));
  } finally {
    host.close();
  }
}

/** One datagram per flow from the namespace to the guest; each arrives byte-exact on one of `pairs`. Returns per-pair counts. */
async function hostToGuest(guest: VhostUserGuest, pairs: readonly number[], basePort: number, flows = 64): Promise<number[]> {
  const sender = dgram.createSocket('udp4');
  const got = new Map<number, Buffer>();
  const perPair = pairs.map(() => 0);
  try {
    for (let i = 0; i < flows; i++) await sendTo(sender, pattern(20 + 17 * i, basePort + i), basePort + i);
    const end = Date.now() + 5000;
    await Promise.all(pairs.map(async (pair, k) => {
      while (got.size < flows && Date.now() < end) {
        for (const r of await guest.driver.receive(pair, { timeoutMs: 50 })) {
          const u = parseUdp(r.frame);
          if (!u || u.dstPort < basePort || u.dstPort >= basePort + flows) continue;
          assert.not.ok(got.has(u.dstPort), `flow ${u.dstPort} delivered twice`);
          got.set(u.dstPort, u.payload);
          perPair[k]!++;
        }
      }
    }));
  } finally {
    sender.close();
  }
  assert.is(got.size, flows, `${got.size} of ${flows} flows reached the guest`);
  for (const [port, payload] of got) assert.ok(payload.equals(pattern(20 + 17 * (port - basePort), port)), `flow ${port}: payload differs`);
  return perPair;
}

function failedOrClosed(outcome: Exchange, what: string): void {
  assert.ok(outcome.kind === 'closed' || (outcome.kind === 'ack' && outcome.value !== 0n), `${what}: ${JSON.stringify(outcome, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v))}`);
}

function ackOk(outcome: Exchange, what: string): void {
  assert.ok(outcome.kind === 'ack' && outcome.value === 0n, `${what}: ${JSON.stringify(outcome, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v))}`);
}

// ---------------------------------------------------------------------------

test('negotiation: features, protocol features, queue count, memory slots, config space, status', async () => {
  await withServer(2, async (rig) => {
    const fe = rig.connect();
    try {
      const features = await fe.getFeatures();
      assert.ok(features & PROTOCOL_PROTOCOL_FEATURES, 'VHOST_USER_F_PROTOCOL_FEATURES (bit 30) offered');
      assert.not.ok(features & featureBit(F.VIRTIO_NET_F_CTRL_VQ), 'no CTRL_VQ: the frontend keeps the control queue');
      assert.not.ok(features & featureBit(F.VIRTIO_NET_F_CTRL_RX));
      assert.ok(features & featureBit(F.VIRTIO_NET_F_GUEST_ANNOUNCE), 'GUEST_ANNOUNCE: QEMU asks the backend for it, and announces on its own control queue');
      assert.ok(features & featureBit(F.VIRTIO_F_VERSION_1));
      assert.ok(features & featureBit(F.VIRTIO_NET_F_MQ), 'MQ with 2 pairs');
      // Besides the device's features: vhost-user's own bit 30, and vhost's LOG_ALL (26) for live migration.
      assert.is(features & ~PROTOCOL_PROTOCOL_FEATURES & ~featureBit(VHOST_F_LOG_ALL), rig.device.offeredFeatures);

      const protocol = await fe.getProtocolFeatures();
      for (const bit of [ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK, ProtocolFeature.CONFIG, ProtocolFeature.CONFIGURE_MEM_SLOTS, ProtocolFeature.STATUS, ProtocolFeature.RESET_DEVICE]) {
        assert.ok(protocol & pf(bit), `protocol feature ${ProtocolFeature[bit]} offered`);
      }
      await fe.setProtocolFeatures(protocol);
      assert.is(await fe.getQueueNum(), 2);
      assert.is(await fe.getMaxMemSlots(), MAX_MEM_SLOTS);
      await fe.setOwner();

      const mac = await fe.getConfig(0, 6);
      assert.equal([...mac], [...GUEST_MAC], 'GET_CONFIG: the MAC');
      const config = await fe.getConfig(0, 12);
      assert.is(config.readUInt16LE(6) & 1, 1, 'link up');
      assert.is(config.readUInt16LE(8), 2, 'max_virtqueue_pairs');

      await fe.setStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
      assert.is(await fe.getStatus(), STATUS_ACKNOWLEDGE | STATUS_DRIVER);

      // With REPLY_ACK: refusals come back as a failure ack, and the connection stays.
      failedOrClosed(await fe.exchange(Request.SET_FEATURES, encodeU64(featureBit(F.VIRTIO_NET_F_CTRL_VQ))), 'SET_FEATURES with CTRL_VQ');
      failedOrClosed(await fe.exchange(Request.SET_PROTOCOL_FEATURES, encodeU64(1n << 40n)), 'a protocol feature not offered');
      assert.is(await fe.getQueueNum(), 2, 'connection still up');
      ackOk(await fe.exchange(Request.RESET_DEVICE), 'RESET_DEVICE');
      assert.is(await fe.getQueueNum(), 2);
    } finally {
      fe.close();
    }
    await rig.released();
  });
});

test('SET_FEATURES as QEMU sends it for csum=off,guest_csum=off (TSO, ECN, UFO without CSUM and GUEST_CSUM): accepted, those stay off, one warning, traffic flows', async () => {
  // What QEMU 7.2 sent for `-device virtio-net-pci,...,csum=off,guest_csum=off`: GUEST_TSO4/6, GUEST_ECN,
  // GUEST_UFO, HOST_TSO4/6, HOST_ECN, HOST_UFO, MRG_RXBUF, MQ, INDIRECT_DESC, EVENT_IDX, VERSION_1.
  const QEMU_CSUM_OFF = 0x1_3040_ff80n;
  const offloads = [F.VIRTIO_NET_F_GUEST_TSO4, F.VIRTIO_NET_F_GUEST_TSO6, F.VIRTIO_NET_F_GUEST_ECN, F.VIRTIO_NET_F_GUEST_UFO,
    F.VIRTIO_NET_F_HOST_TSO4, F.VIRTIO_NET_F_HOST_TSO6, F.VIRTIO_NET_F_HOST_ECN, F.VIRTIO_NET_F_HOST_UFO].reduce((m, b) => m | featureBit(b), 0n);
  await withServer(2, async (rig) => {
    const inactive: bigint[] = [];
    rig.device.on('features-inactive', (e) => inactive.push(e.features));
    const fe = rig.connect();
    let guest: VhostUserGuest | undefined;
    try {
      guest = await fe.startDevice(2, { ackedFeatures: QEMU_CSUM_OFF });
      assert.is(rig.device.driverFeatures, QEMU_CSUM_OFF, 'the frontend\'s set, as it sent it');
      assert.is(rig.device.activeFeatures, QEMU_CSUM_OFF & ~offloads, 'the data path leaves every offload without its base off');
      assert.equal(inactive, [offloads], 'reported once, though SET_FEATURES came once per pair');
      const k = ethtoolFeatures(rig.tap.name);
      assert.equal([k['tx-checksumming'], k['tcp-segmentation-offload']], ['off', 'off'], 'TUNSETOFFLOAD: nothing the guest cannot take');
      assert.is(rig.tap.vnetHdrSize(), 12);
      await guestToHost(rig.hostMac, guest, 0, 5150);
      await guestToHost(rig.hostMac, guest, 1, 5151);
      await hostToGuest(guest, [0, 1], 6150);
      assert.not.ok(rig.logs.some((l) => l.event === 'request-failed'), JSON.stringify(rig.logs.filter((l) => l.event === 'request-failed')));
    } finally {
      fe.close();
      await rig.released();
      guest?.close();
    }
  });
});

// The cases that drive rings run on split rings, then on packed ones (VIRTIO_F_RING_PACKED, 2.8).
const LAYOUTS = [false, true] as const;
const layoutName = (ringPacked: boolean): string => (ringPacked ? ' [packed ring]' : '');

/** A packed ring's base in vhost-user's encoding, used == avail at `position` (0x80008000 for a fresh ring). */
const packedBase = (position: PackedRingPosition): number => encodePackedRingBase(position, position);

for (const ringPacked of LAYOUTS) {
  test(`traffic both ways on 2 queue pairs through the backend, byte-exact${layoutName(ringPacked)}`, async () => {
    await withServer(2, async (rig) => {
      const fe = rig.connect();
      let guest: VhostUserGuest | undefined;
      try {
        guest = await fe.startDevice(2, { features: { ringPacked } });
        assert.is(F.hasFeature(rig.device.activeFeatures, F.VIRTIO_F_RING_PACKED), ringPacked, 'VIRTIO_F_RING_PACKED negotiated as the guest asked');
        assert.is(numDisabled(rig.tap.name), 0, 'both tap queues attached');
        assert.ok(rig.device.stats().pairs.every((p) => p.running), 'both pairs run');
        await guestToHost(rig.hostMac, guest, 0, 5100);
        await guestToHost(rig.hostMac, guest, 1, 5101);
        const perPair = await hostToGuest(guest, [0, 1], 6100);
        assert.ok(perPair[0]! > 0 && perPair[1]! > 0, `the tap spread flows over both pairs: ${perPair.join('/')}`);
        const stats = rig.device.stats().pairs;
        assert.is(stats[0]!.tx!.packets, 5);
        assert.is(stats[1]!.tx!.packets, 5);
        assert.ok(stats.every((p) => !p.rxBroken && !p.txBroken));
      } finally {
        fe.close();
        await rig.released();
        guest?.close();
      }
    });
  });
}

test('guest memory through ADD_MEM_REG (CONFIGURE_MEM_SLOTS, as QEMU does) on 2 pairs: traffic flows', async () => {
  await withServer(2, async (rig) => {
    const fe = rig.connect();
    let guest: VhostUserGuest | undefined;
    try {
      guest = await fe.startDevice(2, { memSlots: true });
      await guestToHost(rig.hostMac, guest, 0, 5110);
      await guestToHost(rig.hostMac, guest, 1, 5111);
      const perPair = await hostToGuest(guest, [0, 1], 6200);
      assert.ok(perPair[0]! + perPair[1]! === 64);
    } finally {
      fe.close();
      await rig.released();
      guest?.close();
    }
  });
});

for (const ringPacked of LAYOUTS) {
  test(`SET_VRING_ENABLE: disabling pair 1 detaches its tap queue, enabling attaches it; pair 0 carries traffic throughout${layoutName(ringPacked)}`, async () => {
    await withServer(2, async (rig) => {
      const fe = rig.connect();
      let guest: VhostUserGuest | undefined;
      try {
        guest = await fe.startDevice(2, { features: { ringPacked } });
        assert.is(numDisabled(rig.tap.name), 0);
        let port = 5200;
        for (let round = 0; round < 2; round++) {
          await fe.setPairEnabled(1, false);
          assert.is(numDisabled(rig.tap.name), 1, 'pair 1 disabled: its tap queue detached');
          assert.equal(rig.device.stats().pairs.map((p) => p.running), [true, false]);
          await guestToHost(rig.hostMac, guest, 0, port++);
          const onlyPair0 = await hostToGuest(guest, [0, 1], 6300 + 100 * round, 16);
          assert.equal(onlyPair0, [16, 0], 'everything comes in on pair 0');

          await fe.setPairEnabled(1, true);
          assert.is(numDisabled(rig.tap.name), 0, 'pair 1 enabled: attached again');
          assert.equal(rig.device.stats().pairs.map((p) => p.running), [true, true]);
          await guestToHost(rig.hostMac, guest, 0, port++);
          await guestToHost(rig.hostMac, guest, 1, port++);
        }
        // Disabling one ring of the pair is enough to take the pair out.
        await fe.setVringEnable(3, false);
        assert.is(numDisabled(rig.tap.name), 1);
        await fe.setVringEnable(3, true);
        assert.is(numDisabled(rig.tap.name), 0);
        await guestToHost(rig.hostMac, guest, 1, port++);
        await hostToGuest(guest, [0, 1], 6500, 16);
        assert.ok(rig.device.stats().pairs.every((p) => p.running && !p.rxBroken && !p.txBroken));
      } finally {
        fe.close();
        await rig.released();
        guest?.close();
      }
    });
  });

  // Packed: a queue size that is no power of 2 (2.8.10.1), small enough that the 37 frames wrap
  // the tx ring, so the base carries a wrap counter of 0.
  test(`GET_VRING_BASE stops the ring and returns where it stopped, frames the guest has not reaped counted; SET_VRING_BASE + KICK resume there, nothing lost or repeated${layoutName(ringPacked)}`, async () => {
    await withServer(1, async (rig) => {
      const fe = rig.connect();
      let guest: VhostUserGuest | undefined;
      const host = await hostSocket(5300);
      try {
        guest = await fe.startDevice(1, { features: { ringPacked }, ...(ringPacked ? { queueSize: 24 } : {}) });
        const g = guest;
        const N = 37;
        for (let i = 0; i < N; i++) await g.driver.send(0, guestFrame(rig.hostMac, 4000, 5300, pattern(100, i)));
        await until('the frames at the host', () => host.received.length === N);
        // Frames in flight across the stop: in the rx ring, used by the device, not yet reaped by the guest.
        const K = 5;
        const sender = dgram.createSocket('udp4');
        try {
          for (let i = 0; i < K; i++) await sendTo(sender, pattern(50, 500 + i), 5310);
        } finally {
          sender.close();
        }
        await until('the frames in the rx ring', () => (rig.device.stats().pairs[0]!.rx?.packets ?? 0) >= K);
        await sleep(20);
        const { rx, tx } = g.driver.queueConfig(0);
        const availIdx = (q: { availAddr: number }): number => g.memory.view(q.availAddr + 2, 2).getUint16(0, true);
        const usedIdx = (q: { usedAddr: number }): number => g.memory.view(q.usedAddr + 2, 2).getUint16(0, true);
        const txQueue = g.driver.txQueue(0) as PackedQueueDriver<number>;
        if (!ringPacked) assert.is(availIdx(tx), N);

        const txBase = await fe.getVringBase(1);
        if (ringPacked) {
          assert.equal(txQueue.nextAvail, { index: N % 24, wrap: 0 }, 'the tx ring wrapped');
          assert.is(txBase, packedBase(txQueue.nextAvail), 'tx base: every chain the guest made available, used == avail (0x80008000 encoding)');
        } else {
          assert.is(txBase, N, 'tx base: every chain the guest made available');
        }
        assert.not.ok(rig.device.stats().pairs[0]!.running, 'GET_VRING_BASE stopped the pair');
        const rxBase = await fe.getVringBase(0);
        if (ringPacked) {
          assert.is(rxBase >>> 16, rxBase & 0xffff, `rx base 0x${rxBase.toString(16)}: used == avail (held chains given back)`);
          // Where the device stopped: the driver's position once it has reaped every used descriptor.
          const { unreaped } = packedUsedEnd(g.memory, g.driver.rxQueue(0));
          assert.ok(unreaped >= K, `${unreaped} used rx descriptors wait for the guest`);
          assert.is(rxBase, packedBase(packedUsedEnd(g.memory, g.driver.rxQueue(0)).position), 'rx base: the device\'s used position');
        } else {
          assert.is(rxBase, usedIdx(rx), 'rx base: the chains the device used (held ones given back)');
          assert.ok(availIdx(rx) >= rxBase);
        }

        // While stopped, the guest queues more frames; nothing moves.
        for (let i = 0; i < 3; i++) await g.driver.send(0, guestFrame(rig.hostMac, 4000, 5300, pattern(200, 1000 + i)));
        await sleep(50);
        assert.is(host.received.length, N, 'a stopped ring moves nothing');

        // Restart as QEMU does: NUM, BASE (what GET_VRING_BASE said), ADDR, KICK, CALL per ring.
        for (const [index, q, base] of [[0, rx, rxBase], [1, tx, txBase]] as const) {
          await fe.setVringNum(index, q.size);
          await fe.setVringBase(index, base);
          await fe.setVringAddr(index, q);
          await fe.setVringKick(index, q.kickFd);
          await fe.setVringCall(index, q.callFd);
        }
        assert.ok(rig.device.stats().pairs[0]!.running, 'running again');
        await until('the 3 queued frames', () => host.received.length === N + 3);
        for (let i = 0; i < 3; i++) assert.ok(host.received[N + i]!.equals(pattern(200, 1000 + i)), 'resumed where it stopped: no frame sent twice or skipped');
        // The frames that were in the rx ring at the stop, once each.
        const held: Buffer[] = [];
        const end = Date.now() + 3000;
        while (held.length < K && Date.now() < end) {
          for (const r of await g.driver.receive(0, { timeoutMs: 50 })) {
            const u = parseUdp(r.frame);
            if (u?.dstPort === 5310) held.push(u.payload);
          }
        }
        assert.equal(held, Array.from({ length: K }, (_, i) => pattern(50, 500 + i)), 'the frames in flight at the stop arrive once, in order');
        await sleep(50);
        assert.is(host.received.length, N + 3);
        const perPair = await hostToGuest(g, [0], 6400, 8);
        assert.equal(perPair, [8]);
        await guestToHost(rig.hostMac, g, 0, 5301, 30);
        assert.ok(rig.device.stats().pairs.every((p) => !p.rxBroken && !p.txBroken));
      } finally {
        host.close();
        fe.close();
        await rig.released();
        guest?.close();
      }
    });
  });
}

for (const ringPacked of LAYOUTS) {
  test(`a frontend that disconnects mid-traffic: everything released (workers, tap queues, fds), and the next connection resumes the same guest${layoutName(ringPacked)}`, async () => {
    await withServer(2, async (rig) => {
      const guest = VhostUserGuest.create(2, { timeoutMs: 300, features: { ringPacked } });
      const host = await hostSocket(5400);
      const sender = dgram.createSocket('udp4');
      await new Promise<void>((resolve) => sender.bind(0, resolve)); // its fd exists from here on
      try {
        const fdsBefore = fdCount();
        const fe = rig.connect();
        await fe.startDevice(2, { guest });
        // Traffic both ways on both pairs, then pull the plug.
        let stop = false;
        const pumps = [0, 1].map(async (pair) => {
          let seq = 0;
          while (!stop) {
            const frames = Array.from({ length: 16 }, () => ({ frame: guestFrame(rig.hostMac, 4000 + pair, 5400, pattern(64, seq++)) }));
            try {
              await guest.driver.sendBatch(pair, frames);
            } catch {
              await sleep(5); // the backend is gone: tx buffers stop coming back
            }
            await sleep(1);
          }
        });
        const receivers = [0, 1].map(async (pair) => {
          while (!stop) {
            try {
              await guest.driver.receive(pair, { timeoutMs: 20 });
            } catch {
              await sleep(5);
            }
          }
        });
        const flood = setInterval(() => {
          for (let i = 0; i < 16; i++) sender.send(pattern(64, i), 7000 + i, GUEST_IP);
        }, 2);
        try {
          await until('traffic through the backend', () => host.received.length > 200 && rig.device.stats().pairs.every((p) => (p.rx?.packets ?? 0) > 0));
          fe.close();
          await rig.released();
          const stats = rig.device.stats();
          assert.ok(stats.pairs.every((p) => !p.running), 'every worker stopped');
          assert.is(numDisabled(rig.tap.name), 1, 'tap queues back to one attached');
          assert.is(rig.logs.filter((l) => l.event === 'disconnected').length, 1);
        } finally {
          clearInterval(flood);
          stop = true;
          await Promise.all([...pumps, ...receivers]);
        }
        await sleep(20);
        await assertFdsBack(fdsBefore, 'after the disconnect');

        // Packed rings keep no used index in guest memory: the frontend resumes them from the
        // driver's position, which is the device's once the guest has reaped what it used.
        // (QEMU cannot do even that: see the ring state file tests.)
        if (ringPacked) {
          for (const pair of [0, 1]) {
            guest.driver.reapTx(pair);
            while ((await guest.driver.receive(pair, { timeoutMs: 0 })).length > 0);
          }
        }
        // A second connection on the same socket: QEMU resumes the rings from the used indices.
        const fe2 = rig.connect();
        try {
          await fe2.startDevice(2, { guest, resume: true });
          assert.is(numDisabled(rig.tap.name), 0);
          await until('the guest to get its tx buffers back', () => {
            guest.driver.reapTx(0);
            guest.driver.reapTx(1);
            return guest.driver.txQueue(0).inFlight === 0 && guest.driver.txQueue(1).inFlight === 0;
          });
          await guestToHost(rig.hostMac, guest, 0, 5401);
          await guestToHost(rig.hostMac, guest, 1, 5402);
          // Drain what the flood left in the rx rings, then check fresh flows arrive intact.
          for (const pair of [0, 1]) while ((await guest.driver.receive(pair, { timeoutMs: 50 })).length > 0);
          const perPair = await hostToGuest(guest, [0, 1], 6500);
          assert.is(perPair[0]! + perPair[1]!, 64);
          assert.ok(rig.device.stats().pairs.every((p) => !p.rxBroken && !p.txBroken));
        } finally {
          fe2.close();
          await rig.released();
        }
        await sleep(20);
        await assertFdsBack(fdsBefore, 'after the second connection');
      } finally {
        host.close();
        sender.close();
        guest.close();
      }
    });
  });
}

test('bad messages: failure acks or a closed connection, no fd leaked, the server keeps serving', async () => {
  await withServer(1, async (rig) => {
    const memfd = (size: number): number => native.memfdCreate('vhost-user-test', size);
    const region = (fd: number, size: number, offset = 0, guestPhysAddr = 0): MemRegion => ({ guestPhysAddr, size, fd, offset });
    const withFds = async (fds: number[], body: (fds: number[]) => Promise<Exchange>): Promise<Exchange> => {
      try {
        return await body(fds);
      } finally {
        fds.forEach((fd) => native.closeFd(fd));
      }
    };
    const eventfds = (n: number): number[] => Array.from({ length: n }, () => native.eventfdCreate());
    const cases: { name: string; replyAck?: boolean; run(fe: VhostUserFrontend): Promise<Exchange> }[] = [
      { name: 'SET_VRING_KICK with no fd and without the no-fd flag', run: (fe) => fe.exchange(Request.SET_VRING_KICK, encodeU64(0)) },
      { name: 'SET_VRING_CALL with two fds', run: (fe) => withFds(eventfds(2), (fds) => fe.exchange(Request.SET_VRING_CALL, encodeU64(0), { fds })) },
      { name: 'SET_VRING_KICK with the no-fd flag (polling)', run: (fe) => fe.exchange(Request.SET_VRING_KICK, encodeU64(0x100)) },
      { name: 'SET_VRING_KICK for a ring that does not exist', run: (fe) => withFds(eventfds(1), (fds) => fe.exchange(Request.SET_VRING_KICK, encodeU64(7), { fds })) },
      {
        name: 'SET_MEM_TABLE with fewer fds than regions',
        run: (fe) => withFds([memfd(1 << 20)], ([fd]) => fe.exchange(Request.SET_MEM_TABLE,
          encodeMemTable([region(fd!, 1 << 20), region(fd!, 1 << 20, 0, 1 << 24)]), { fds: [fd!] })),
      },
      {
        name: 'SET_MEM_TABLE with a region larger than its memfd',
        run: (fe) => withFds([memfd(1 << 20)], ([fd]) => fe.exchange(Request.SET_MEM_TABLE, encodeMemTable([region(fd!, 4 << 20)]), { fds: [fd!] })),
      },
      {
        name: 'SET_MEM_TABLE with an mmap offset past the end of the memfd',
        run: (fe) => withFds([memfd(1 << 20)], ([fd]) => fe.exchange(Request.SET_MEM_TABLE, encodeMemTable([region(fd!, 1 << 20, 2 << 20)]), { fds: [fd!] })),
      },
      {
        name: 'SET_MEM_TABLE with an eventfd for memory',
        run: (fe) => withFds(eventfds(1), ([fd]) => fe.exchange(Request.SET_MEM_TABLE, encodeMemTable([region(fd!, 1 << 20)]), { fds: [fd!] })),
      },
      {
        name: 'ADD_MEM_REG with a region larger than its memfd',
        run: (fe) => withFds([memfd(1 << 20)], ([fd]) => fe.exchange(Request.ADD_MEM_REG, encodeSingleRegion(region(fd!, 8 << 20)), { fds: [fd!] })),
      },
      { name: 'ADD_MEM_REG without its fd', run: (fe) => fe.exchange(Request.ADD_MEM_REG, encodeSingleRegion(region(0, 1 << 20))) },
      { name: 'SET_VRING_ADDR in no memory region', run: (fe) => fe.exchange(Request.SET_VRING_ADDR, encodeVringAddr(0, { descAddr: 0, availAddr: 4096, usedAddr: 8192 })) },
      { name: 'SET_VRING_NUM not a power of two', run: (fe) => fe.exchange(Request.SET_VRING_NUM, encodeVringState({ index: 0, num: 100 })) },
      { name: 'SET_VRING_ENABLE with 2', run: (fe) => fe.exchange(Request.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 2 })) },
      { name: 'SET_FEATURES with a short payload', run: (fe) => fe.exchange(Request.SET_FEATURES, Buffer.alloc(4)) },
      { name: 'an unknown request (99)', run: (fe) => fe.exchange(99, Buffer.alloc(8)) },
      { name: 'an unknown request without REPLY_ACK', replyAck: false, run: (fe) => fe.exchange(99, Buffer.alloc(8), { needReply: false }).then(async () => ((await fe.readMessage(2000)) ? { kind: 'none' } : { kind: 'closed' })) },
      { name: 'an unsupported request carrying an fd (SET_BACKEND_REQ_FD)', run: (fe) => withFds(eventfds(1), (fds) => fe.exchange(Request.SET_BACKEND_REQ_FD, Buffer.alloc(0), { fds })) },
      { name: 'a request with 40 fds', run: (fe) => withFds(eventfds(40), (fds) => fe.exchange(Request.GET_FEATURES, Buffer.alloc(0), { fds, expectReply: true })) },
      { name: 'a request with the reply flag set', run: (fe) => fe.exchange(Request.GET_FEATURES, Buffer.alloc(0), { flags: 1 | 4, expectReply: true }) },
      { name: 'a request of protocol version 2', run: (fe) => fe.exchange(Request.GET_FEATURES, Buffer.alloc(0), { flags: 2, expectReply: true }) },
      { name: 'a payload over 4096 bytes', run: (fe) => fe.exchange(Request.SET_CONFIG, Buffer.alloc(5000)) },
    ];
    const fdsBefore = fdCount();
    for (const c of cases) {
      const fe = rig.connect();
      try {
        if (c.replyAck === false) await fe.init({ protocolFeatures: pf(ProtocolFeature.MQ) });
        else await fe.init();
        const outcome = await c.run(fe);
        if (outcome.kind === 'reply') assert.unreachable(`${c.name}: answered as if valid`);
        failedOrClosed(outcome, c.name);
        if (outcome.kind === 'ack') assert.is(await fe.getQueueNum(), 1, `${c.name}: connection still serves`);
      } finally {
        fe.close();
      }
      await rig.released();
      await assertFdsBack(fdsBefore, c.name);
    }
    // A truncated message: a header announcing 40 bytes, 10 sent, then the frontend hangs up.
    const cut = rig.connect();
    await cut.init();
    const eventfd = native.eventfdCreate();
    cut.sendRaw(encodeMessage(Request.SET_VRING_ADDR, 1, Buffer.alloc(40)).subarray(0, 22), [eventfd]);
    native.closeFd(eventfd);
    cut.close();
    await rig.released();
    await assertFdsBack(fdsBefore, 'truncated message');

    // And a well-behaved frontend still gets a working device.
    const fe = rig.connect();
    let guest: VhostUserGuest | undefined;
    try {
      guest = await fe.startDevice(1);
      await guestToHost(rig.hostMac, guest, 0, 5500);
      await hostToGuest(guest, [0], 6600, 8);
    } finally {
      fe.close();
      await rig.released();
      guest?.close();
    }
    assert.ok(rig.server.served >= cases.length + 2);
  });
});

test('ADD_MEM_REG / REM_MEM_REG with a second memfd region (rings at an mmap offset): traffic follows the memory map', async () => {
  await withServer(1, async (rig) => {
    const SIZE_A = 2 << 20;
    const B_GPA = 0x1000_0000;
    const B_OFFSET = 1 << 20;
    const features = { version1: true, mergeableRx: true, eventIdx: true, indirectDesc: false };
    const driverOptions = { queuePairs: 1, queueSize: 256, features, rxBufferSize: 2048, txBufferSize: 2048, timeoutMs: 2000 };
    const sizeB = Math.ceil((VirtioNetDriver.memoryNeeded(driverOptions) + (1 << 20)) / 4096) * 4096;
    const fdA = native.memfdCreate('region-a', SIZE_A);
    const fdB = native.memfdCreate('region-b', B_OFFSET + sizeB);
    const a: MemRegion = { guestPhysAddr: 0, size: SIZE_A, fd: fdA, offset: 0 };
    const b: MemRegion = { guestPhysAddr: B_GPA, size: sizeB, fd: fdB, offset: B_OFFSET };
    const memory = GuestMemory.fromRegions([a, b]);
    // Every ring and buffer in region B.
    const driver = VirtioNetDriver.create({ memory, allocator: new GuestAllocator(memory, B_GPA), ...driverOptions });
    const guest = new VhostUserGuest(memory, driver, virtioFeaturesOf(features));
    const fdsBefore = fdCount();
    const fe = rig.connect();
    try {
      await fe.startDevice(1, { guest, memSlots: true });
      await guestToHost(rig.hostMac, guest, 0, 5600);
      await hostToGuest(guest, [0], 6700, 8);

      await fe.remMemReg(a);
      await guestToHost(rig.hostMac, guest, 0, 5601);
      await hostToGuest(guest, [0], 6710, 8);
      failedOrClosed(await fe.exchange(Request.REM_MEM_REG, encodeSingleRegion(a)), 'REM_MEM_REG of a region no longer there');

      await fe.addMemReg(a);
      await guestToHost(rig.hostMac, guest, 0, 5602);
      const overlap = native.memfdCreate('overlap', 1 << 20);
      try {
        failedOrClosed(await fe.exchange(Request.ADD_MEM_REG, encodeSingleRegion({ guestPhysAddr: B_GPA + 4096, size: 1 << 20, fd: overlap, offset: 0 }), { fds: [overlap] }), 'ADD_MEM_REG overlapping B');
      } finally {
        native.closeFd(overlap);
      }
      // The same region again, as a frontend sends it for every vhost device of a multiqueue NIC.
      const again = await fe.exchange(Request.ADD_MEM_REG, encodeSingleRegion(a), { fds: [fdA] });
      if (again.kind === 'closed') assert.unreachable('ADD_MEM_REG of a region already there closed the connection');
      await guestToHost(rig.hostMac, guest, 0, 5603);
      await hostToGuest(guest, [0], 6720, 8);
      // B (the rings' region) added a second time, as another queue pair would: one
      // REM_MEM_REG then leaves it mapped and the rings running.
      const twice = await fe.exchange(Request.ADD_MEM_REG, encodeSingleRegion(b), { fds: [fdB] });
      if (twice.kind === 'closed') assert.unreachable('a repeated ADD_MEM_REG closed the connection');
      await fe.remMemReg(b);
      await guestToHost(rig.hostMac, guest, 0, 5604);
      await hostToGuest(guest, [0], 6730, 8);
    } finally {
      fe.close();
      await rig.released();
    }
    await assertFdsBack(fdsBefore, 'after ADD/REM_MEM_REG');
    guest.close();
    native.closeFd(fdA);
    native.closeFd(fdB);
  });
});

test('SET_MEM_TABLE while the rings run (a memory hotplug): the pair restarts on the new map and traffic continues', async () => {
  await withServer(1, async (rig) => {
    const fe = rig.connect();
    let guest: VhostUserGuest | undefined;
    const extra = native.memfdCreate('hotplug', 1 << 20);
    try {
      guest = await fe.startDevice(1);
      await guestToHost(rig.hostMac, guest, 0, 5700);
      await fe.setMemTable([...guest.regions(), { guestPhysAddr: 0x4000_0000, size: 1 << 20, fd: extra, offset: 0 }]);
      assert.ok(rig.device.stats().pairs[0]!.running);
      await guestToHost(rig.hostMac, guest, 0, 5701);
      await hostToGuest(guest, [0], 6800, 8);
    } finally {
      native.closeFd(extra);
      fe.close();
      await rig.released();
      guest?.close();
    }
  });
});

for (const ringPacked of LAYOUTS) {
  test(`vm stop and cont as QEMU 7.2 does them (SET_STATUS 0 before GET_VRING_BASE of the last pair): every ring resumes where it stopped${layoutName(ringPacked)}`, async () => {
    await withServer(2, async (rig) => {
      const fe = rig.connect();
      let guest: VhostUserGuest | undefined;
      const host = await hostSocket(5750);
      try {
        guest = await fe.startDevice(2, { features: { ringPacked } });
        assert.is(await fe.getStatus(), STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
        const sent = [7, 11];
        for (const pair of [0, 1]) {
          for (let i = 0; i < sent[pair]!; i++) await guest.driver.send(pair, guestFrame(rig.hostMac, 4000 + pair, 5750, pattern(80, 100 * pair + i)));
        }
        await until('the frames at the host', () => host.received.length === 18);

        const bases = await fe.stopDevice(2);
        assert.ok(rig.device.stats().pairs.every((p) => !p.running), 'stopped');
        const g = guest;
        // Packed: the slot after the last chain in lap 1 (wrap counter 1), for avail and used alike.
        const txBase = (n: number): number => (ringPacked ? packedBase({ index: n, wrap: 1 }) : n);
        assert.equal([bases[1], bases[3]], sent.map(txBase), 'tx bases: what each tx ring had sent');
        // The rx rings: where the device stopped, which is where the guest is once it has reaped everything.
        for (const pair of [0, 1]) while ((await g.driver.receive(pair, { timeoutMs: 0 })).length > 0);
        const rxWhere = [0, 1].map((pair) => resumeBase(g.memory, g.driver.rxQueue(pair), g.driver.queueConfig(pair).rx));
        assert.equal([bases[0], bases[2]], rxWhere, 'rx bases: the used positions');

        // While the vm is stopped the guest has queued one more frame per pair; cont resumes at the bases.
        for (const pair of [0, 1]) await guest.driver.send(pair, guestFrame(rig.hostMac, 4000 + pair, 5750, pattern(90, 900 + pair)));
        await fe.startDevice(2, { guest, bases });
        await until('the 2 frames queued while stopped', () => host.received.length >= 20);
        await sleep(50);
        assert.is(host.received.length, 20, 'nothing sent twice');
        const tail = host.received.slice(18).map((b) => b.toString('hex')).sort();
        assert.equal(tail, [pattern(90, 900), pattern(90, 901)].map((b) => b.toString('hex')).sort());
        const perPair = await hostToGuest(guest, [0, 1], 6750);
        assert.is(perPair[0]! + perPair[1]!, 64);
      } finally {
        host.close();
        fe.close();
        await rig.released();
        guest?.close();
      }
    });
  });
}

test('SET_VRING_CALL while the rings run (QEMU masking a vector): calls go to the new eventfd, traffic goes on, no fd leaks', async () => {
  await withServer(1, async (rig) => {
    const fe = rig.connect();
    let guest: VhostUserGuest | undefined;
    try {
      guest = await fe.startDevice(1);
      const fdsBefore = fdCount();
      for (let round = 0; round < 3; round++) {
        const masked = EventFd.create();
        await fe.setVringCall(0, masked.fd);
        await fe.setVringCall(1, masked.fd);
        assert.ok(rig.device.stats().pairs[0]!.running);
        await hostToGuest(guest, [0], 6850 + 20 * round, 8);
        await guestToHost(rig.hostMac, guest, 0, 5850 + round);
        assert.ok(masked.take() > 0, 'the device signalled the new call eventfd');
        const { rx, tx } = guest.driver.queueConfig(0);
        await fe.setVringCall(0, rx.callFd);
        await fe.setVringCall(1, tx.callFd);
        masked.close();
      }
      await hostToGuest(guest, [0], 6950, 8);
      await assertFdsBack(fdsBefore, 'after replacing call fds');
    } finally {
      fe.close();
      await rig.released();
      guest?.close();
    }
  });
});

test('a frontend without VHOST_USER_F_PROTOCOL_FEATURES: no acks, rings start enabled at SET_VRING_KICK', async () => {
  await withServer(1, async (rig) => {
    const fe = rig.connect();
    const guest = VhostUserGuest.create(1);
    try {
      const offered = await fe.getFeatures();
      await fe.setOwner();
      await fe.setFeatures(guest.features & offered & ~PROTOCOL_PROTOCOL_FEATURES);
      await fe.setMemTable(guest.regions());
      const { rx, tx } = guest.driver.queueConfig(0);
      for (const [index, q] of [[0, rx], [1, tx]] as const) {
        await fe.setVringNum(index, q.size);
        await fe.setVringBase(index, 0);
        await fe.setVringAddr(index, q);
        await fe.setVringKick(index, q.kickFd);
        await fe.setVringCall(index, q.callFd);
      }
      assert.is(await fe.getFeatures(), offered, 'in sync with the backend');
      await until('the pair to run', () => rig.device.stats().pairs[0]!.running);
      guest.driver.fillRx(0);
      await guestToHost(rig.hostMac, guest, 0, 5870);
      await hostToGuest(guest, [0], 6970, 8);
    } finally {
      fe.close();
      await rig.released();
      guest.close();
    }
  });
});

// ---- hostile and unusual frontends ----

type RingConfig = { size: number; descAddr: number; availAddr: number; usedAddr: number; kickFd: number; callFd: number };

/** Features and the memory table as QEMU sends them, then NUM, BASE, ADDR, KICK, CALL for each ring of pair 0. */
async function setUpPair0(fe: VhostUserFrontend, guest: VhostUserGuest, rings: readonly [RingConfig, RingConfig]): Promise<void> {
  await fe.setFeatures((guest.features & fe.offeredFeatures) | PROTOCOL_PROTOCOL_FEATURES);
  await fe.setMemTable(guest.regions());
  for (const [index, q] of rings.entries()) {
    await fe.setVringNum(index, q.size);
    await fe.setVringBase(index, 0);
    await fe.setVringAddr(index, q);
    await fe.setVringKick(index, q.kickFd);
    await fe.setVringCall(index, q.callFd);
  }
}

function ackFailed(outcome: Exchange, what: string): void {
  assert.ok(outcome.kind === 'ack' && outcome.value !== 0n, `${what}: a failure ack, got ${JSON.stringify(outcome, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v))}`);
}

test('RESET_DEVICE closes the rings\' fds once: the fd numbers it freed, taken by others, survive the disconnect', async () => {
  await withServer(1, async (rig) => {
    const fe = rig.connect();
    let guest: VhostUserGuest | undefined;
    const ours: number[] = [];
    try {
      guest = await fe.startDevice(1);
      ackOk(await fe.exchange(Request.RESET_DEVICE), 'RESET_DEVICE');
      // The lowest free numbers: among them those of the kick and call fds the reset closed.
      for (let i = 0; i < 8; i++) ours.push(native.eventfdCreate());
    } finally {
      fe.close();
      await rig.released();
      guest?.close();
    }
    const closedUnderUs = ours.filter((fd) => {
      try {
        fs.fstatSync(fd);
        return false;
      } catch {
        return true;
      }
    });
    ours.filter((fd) => !closedUnderUs.includes(fd)).forEach((fd) => native.closeFd(fd));
    assert.equal(closedUnderUs, [], 'the server closed fds that were no longer its own');
  });
});

test('a frontend that sends a message a byte every 300 ms: timers keep running, the message deadline ends the connection, and the eventfd that came with the first byte is closed', async () => {
  await withServer(1, async (rig) => {
    const fe = rig.connect();
    let dribbler: Worker | undefined;
    try {
      await fe.init();
      const message = encodeMessage(Request.SET_VRING_CALL, VHOST_USER_VERSION | FLAG_NEED_REPLY, encodeU64(0));
      const eventfd = native.eventfdCreate();
      native.sendFds(fe.fd, [eventfd], message.subarray(0, 1));
      native.closeFd(eventfd);
      const firstByteAt = Date.now();
      // The other 19 bytes from another thread, so that this one's timers see the server's event loop.
      dribbler = new Worker(`
        const fs = require('node:fs');
        const { workerData } = require('node:worker_threads');
        const pause = new Int32Array(new SharedArrayBuffer(4));
        for (const byte of workerData.bytes) {
          Atomics.wait(pause, 0, 0, workerData.intervalMs);
          try { fs.writeSync(workerData.fd, Buffer.from([byte])); } catch { break; } // EPIPE: the server hung up
        }
      `, { eval: true, workerData: { fd: fe.fd, bytes: [...message.subarray(1)], intervalMs: 300 } });
      const exited = new Promise((resolve) => dribbler!.once('exit', resolve));
      let longestGap = 0;
      let last = Date.now();
      const ticker = setInterval(() => {
        const now = Date.now();
        longestGap = Math.max(longestGap, now - last);
        last = now;
      }, 10);
      let droppedAfter = Infinity;
      try {
        const dropped = until('the server to drop the slow connection', () => !rig.server.connected, 8000).then(() => {
          droppedAfter = Date.now() - firstByteAt;
        });
        await exited; // once the server hung up, or every byte was sent
        dribbler = undefined;
        assert.ok(longestGap < 1000, `the event loop was held ${longestGap} ms`);
        await dropped;
      } finally {
        clearInterval(ticker);
      }
      assert.ok(droppedAfter < 2500, `the connection was dropped ${droppedAfter} ms after the first byte (deadline 1000 ms)`);
      const error = rig.logs.find((l) => l.event === 'connection-error');
      assert.is(error?.fields?.code, 'ETIMEDOUT', JSON.stringify(error));
    } finally {
      await dribbler?.terminate();
      fe.close();
      await rig.released();
    }
    const next = rig.connect();
    try {
      assert.is((await next.init()).queues, 1, 'the next frontend is served');
    } finally {
      next.close();
    }
  });
});

test('kick, call and err fds must be eventfds: a memfd, a pipe, a socket, /dev/null or an eventfd at the edge of overflow gets a failure ack, changes nothing, and is closed', async () => {
  await withServer(1, async (rig) => {
    const fe = rig.connect();
    let guest: VhostUserGuest | undefined;
    const fifo = path.join(tmp, `${uniqueName('fifo')}`);
    run('mkfifo', [fifo]);
    try {
      guest = await fe.startDevice(1);
      const kinds: [string, () => number[]][] = [
        ['a memfd', () => [native.memfdCreate('not-an-eventfd', 4096)]],
        ['a pipe', () => [fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK)]],
        ['a socket', () => native.socketPair('stream')],
        ['/dev/null', () => [fs.openSync('/dev/null', 'r+')]],
        ['an eventfd at 0xfffffffffffffffe with O_NONBLOCK cleared', () => [native.eventfdCreate(0xfffffffffffffffen, false)]],
      ];
      for (const [what, make] of kinds) {
        for (const request of [Request.SET_VRING_KICK, Request.SET_VRING_CALL, Request.SET_VRING_ERR]) {
          const fds = make();
          try {
            ackFailed(await fe.exchange(request, encodeU64(1), { fds: [fds[0]!] }), `${requestName(request)} with ${what}`);
          } finally {
            fds.forEach((fd) => native.closeFd(fd));
          }
          assert.ok(rig.device.isPairRunning(0), `${requestName(request)} with ${what}: the pair still runs`);
        }
      }
      const refusals = rig.logs.filter((l) => l.event === 'request-failed').map((l) => String(l.fields?.error));
      assert.ok(refusals.some((e) => /is a file, not an eventfd/.test(e)) && refusals.some((e) => /is a pipe, not an eventfd/.test(e)), refusals.join('\n'));
      assert.ok(refusals.some((e) => /edge of overflow/.test(e)), refusals.join('\n'));
      // An eventfd that merely blocks is an eventfd: taken.
      const blocking = native.eventfdCreate(0n, false);
      try {
        await fe.setVringCall(1, blocking);
        await guestToHost(rig.hostMac, guest, 0, 5880);
        await fe.setVringCall(1, guest.driver.queueConfig(0).tx.callFd);
      } finally {
        native.closeFd(blocking);
      }
      await guestToHost(rig.hostMac, guest, 0, 5881);
      await hostToGuest(guest, [0], 7000, 8);
    } finally {
      fe.close();
      await rig.released();
      guest?.close();
      fs.rmSync(fifo, { force: true });
    }
  });
});

test('a ring that cannot start (a misaligned descriptor table) fails the SET_VRING_ENABLE or SET_VRING_KICK that would start it, which changes nothing; once fixed it runs', async () => {
  await withServer(1, async (rig) => {
    const guest = VhostUserGuest.create(1);
    const { rx, tx } = guest.driver.queueConfig(0);
    // virtio 1.x 2.7: the descriptor table is 16-byte aligned.
    const misaligned = { ...rx, descAddr: rx.descAddr + 2 };
    const notStarted = (what: string): void => {
      assert.not.ok(rig.device.isPairRunning(0), `${what}: nothing runs`);
      assert.is(rig.device.status & (STATUS_DRIVER_OK | STATUS_DEVICE_NEEDS_RESET), 0, `${what}: no DRIVER_OK, no NEEDS_RESET`);
    };
    try {
      // QEMU's order: the rings, then SET_VRING_ENABLE; the second ring's enable starts the pair.
      let fe = rig.connect();
      try {
        await fe.init({ rings: 2 });
        await setUpPair0(fe, guest, [misaligned, tx]);
        await fe.setVringEnable(0, true);
        for (const attempt of [1, 2]) {
          ackFailed(await fe.exchange(Request.SET_VRING_ENABLE, encodeVringState({ index: 1, num: 1 })), `SET_VRING_ENABLE 1, attempt ${attempt}`);
          notStarted(`attempt ${attempt}`);
        }
        assert.ok(rig.logs.some((l) => l.event === 'request-failed' && /misaligned/.test(String(l.fields?.error))), 'the log says why');
        await fe.setVringAddr(0, rx);
        await fe.setVringEnable(1, true);
        assert.ok(rig.device.isPairRunning(0), 'fixed: it runs');
        guest.driver.fillRx(0);
        await guestToHost(rig.hostMac, guest, 0, 5890);
        await hostToGuest(guest, [0], 7020, 8);
      } finally {
        fe.close();
        await rig.released();
      }
      // Rings enabled before their kicks: the last SET_VRING_KICK starts the pair.
      fe = rig.connect();
      try {
        await fe.init({ rings: 2 });
        await fe.setFeatures((guest.features & fe.offeredFeatures) | PROTOCOL_PROTOCOL_FEATURES);
        await fe.setMemTable(guest.regions());
        for (const [index, q] of [misaligned, tx].entries()) {
          await fe.setVringNum(index, q.size);
          await fe.setVringBase(index, guest.memory.view(q.usedAddr + 2, 2).getUint16(0, true));
          await fe.setVringAddr(index, q);
          await fe.setVringEnable(index, true);
        }
        await fe.setVringKick(0, rx.kickFd);
        const kick = native.eventfdCreate();
        try {
          ackFailed(await fe.exchange(Request.SET_VRING_KICK, encodeU64(1), { fds: [kick] }), 'the SET_VRING_KICK that starts the pair');
        } finally {
          native.closeFd(kick);
        }
        notStarted('after the failed kick');
      } finally {
        fe.close();
        await rig.released();
      }
    } finally {
      guest.close();
    }
  });
});

test('QEMU-style region merge and split under running rings (REM_MEM_REG, then ADD_MEM_REG): the rings wait while their memory is gone, are translated again in the new map, and traffic resumes', async () => {
  await withServer(1, async (rig) => {
    const half = VhostUserGuest.memoryNeeded(1);
    const fd = native.memfdCreate(uniqueName('vvusplit'), 2 * half);
    const low: MemRegion = { guestPhysAddr: 0, size: half, fd, offset: 0 };
    const high: MemRegion = { guestPhysAddr: half, size: half, fd, offset: half };
    const whole: MemRegion = { guestPhysAddr: 0, size: 2 * half, fd, offset: 0 };
    const memory = GuestMemory.fromRegions([low, high]);
    const guest = VhostUserGuest.inMemory(memory, 1);
    const fe = rig.connect();
    const running = (): boolean => rig.device.isPairRunning(0);
    try {
      await fe.startDevice(1, { guest, memSlots: true });
      assert.ok(guest.driver.queueConfig(0).rx.descAddr < half, 'the rings are in the low half');
      await guestToHost(rig.hostMac, guest, 0, 5895);
      // Merge, as QEMU's vhost_user_add_remove_regions does it: first remove what changed, then add.
      await fe.remMemReg(low);
      assert.not.ok(running(), 'the rings wait while their region is gone');
      await fe.remMemReg(high);
      await fe.addMemReg(whole);
      assert.ok(running(), 'merged: the rings run again');
      await guestToHost(rig.hostMac, guest, 0, 5896);
      await hostToGuest(guest, [0], 7040, 8);
      // And split again.
      await fe.remMemReg(whole);
      await fe.addMemReg(low);
      assert.ok(running(), 'the rings are back in the low half');
      await fe.addMemReg(high);
      await guestToHost(rig.hostMac, guest, 0, 5897);
      await hostToGuest(guest, [0], 7060, 8);
    } finally {
      fe.close();
      await rig.released();
      guest.close();
      native.closeFd(fd);
    }
  });
});

// ---- the daemon, as a child process ----

interface Daemon {
  child: ChildProcess;
  logs: Record<string, unknown>[];
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startDaemon(args: string[]): Daemon {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  let partial = '';
  const logs: Record<string, unknown>[] = [];
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    err += chunk;
    const lines = (partial + chunk).split('\n');
    partial = lines.pop()!; // the start of a line the next chunk ends
    for (const line of lines) {
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not a log line; the full text is in err
      }
    }
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { child, logs, stderr: () => err, exited };
}

async function waitExit(d: Daemon, timeoutMs = 5000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  const timer = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`the daemon did not exit within ${timeoutMs} ms:\n${d.stderr()}`)), timeoutMs).unref());
  return Promise.race([d.exited, timer]);
}

function linkExists(name: string, netns?: string): boolean {
  return spawnSync('ip', [...(netns ? ['-n', netns] : []), 'link', 'show', 'dev', name], { stdio: 'ignore' }).status === 0;
}

interface ServeDaemon extends Daemon {
  socket: string;
  tap: string;
  pid: number;
  /** Lines of the daemon's /proc/PID/maps that name `what` (e.g. a memfd's name). */
  maps(what: string): string[];
  /** Resolves once the daemon has let go of every connection it took (each ended with a log line). */
  released(): Promise<void>;
}

/**
 * `vhost-tap serve` on a new tap of `queues` queues for `body`. Afterwards the
 * daemon's fds and threads must be back where they were when it listened, and
 * SIGTERM must make it exit 0 within a second.
 */
async function withServeDaemon(queues: number, body: (d: ServeDaemon) => Promise<void>): Promise<void> {
  const tap = uniqueName('vvud');
  const socket = path.join(tmp, `${tap}.sock`);
  const d = startDaemon(['serve', '--socket', socket, '--tap', tap, '--queues', String(queues), '--mac', GUEST_MAC_STRING]);
  try {
    await until('the daemon to listen', () => d.logs.some((l) => l.event === 'listening'), 10_000);
    const pid = d.child.pid!;
    const count = (events: string[]): number => d.logs.filter((l) => events.includes(String(l.event))).length;
    const daemon: ServeDaemon = {
      ...d, socket, tap, pid,
      maps: (what) => fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter((l) => l.includes(what)),
      released: () => until('the daemon to release its connections', () => {
        const { exitCode, signalCode } = d.child;
        if (exitCode !== null || signalCode !== null) throw new Error(`the daemon died (exit ${String(exitCode)}, signal ${String(signalCode)}):\n${d.stderr().slice(-2000)}`);
        return count(['disconnected', 'connection-error', 'bad-message', 'send-failed']) >= count(['connected']);
      }),
    };
    const start = resourcesOf(pid);
    await body(daemon);
    await daemon.released();
    await assertResourcesBack(start, 'the daemon, after the test', pid);
    const stopping = Date.now();
    d.child.kill('SIGTERM');
    const { code } = await waitExit(d);
    const stopMs = Date.now() - stopping;
    assert.is(code, 0, d.stderr());
    assert.ok(stopMs < 1000, `the daemon took ${stopMs} ms to exit on SIGTERM`);
  } finally {
    if (d.child.exitCode === null && d.child.signalCode === null) d.child.kill('SIGKILL');
    fs.rmSync(socket, { force: true });
  }
}

function daemonLog(d: Daemon, event: string): Record<string, unknown>[] {
  return d.logs.filter((l) => l.event === event);
}

test('CLI: a frontend that sends a message a byte every 300 ms is dropped at the message deadline, and SIGTERM in the middle of such a message exits within a second', async () => {
  /** Sends a byte every 300 ms; `done` says whether the daemon hung up before the last one. */
  const dribble = (fd: number, bytes: Buffer): { stop(): void; done: Promise<{ hungUp: boolean }> } => {
    let timer: NodeJS.Timeout | undefined;
    let i = 0;
    const done = new Promise<{ hungUp: boolean }>((resolve) => {
      timer = setInterval(() => {
        const hungUp = i < bytes.length && !sendQuietly(fd, bytes.subarray(i, ++i));
        if (hungUp || i >= bytes.length) {
          clearInterval(timer);
          resolve({ hungUp });
        }
      }, 300);
    });
    return { stop: () => clearInterval(timer), done };
  };
  const message = encodeMessage(Request.SET_FEATURES, VHOST_USER_VERSION, encodeU64(0));
  let fe: VhostUserFrontend | undefined;
  await withServeDaemon(1, async (d) => {
    fe = VhostUserFrontend.connect(d.socket);
    await fe.init();
    const started = Date.now();
    const { hungUp } = await dribble(fe.fd, message).done;
    const after = Date.now() - started;
    assert.ok(hungUp && after < 2500, `the daemon ${hungUp ? 'hung up' : 'had not hung up'} ${after} ms after the first byte (deadline 1000 ms)`);
    assert.is(daemonLog(d, 'connection-error').at(-1)?.code, 'ETIMEDOUT', d.stderr());
    fe.close();
  });
  // Now SIGTERM while a message is half there.
  const tap = uniqueName('vvusl');
  const socket = path.join(tmp, `${tap}.sock`);
  const d = startDaemon(['serve', '--socket', socket, '--tap', tap]);
  try {
    await until('the daemon to listen', () => d.logs.some((l) => l.event === 'listening'), 10_000);
    fe = VhostUserFrontend.connect(socket);
    await fe.init();
    const slow = dribble(fe.fd, message);
    await sleep(650);
    const stopping = Date.now();
    d.child.kill('SIGTERM');
    const { code } = await waitExit(d);
    const stopMs = Date.now() - stopping;
    slow.stop();
    assert.is(code, 0, d.stderr());
    assert.ok(stopMs < 1000, `SIGTERM took ${stopMs} ms with a message half read`);
  } finally {
    fe?.close();
    if (d.child.exitCode === null && d.child.signalCode === null) d.child.kill('SIGKILL');
    fs.rmSync(socket, { force: true });
  }
});

test('CLI: REM_MEM_REG of the region the running rings are in is acked: the rings wait, unmapped, and resume when it is added back (20 rounds, no fd left behind)', async () => {
  await withServeDaemon(1, async (d) => {
    addressTap(d.tap);
    const hostMac = macOf(d.tap);
    const guest = VhostUserGuest.create(1);
    const other = native.memfdCreate(uniqueName('vvuother'), 1 << 20);
    const b: MemRegion = { guestPhysAddr: 0x4000_0000, size: 1 << 20, fd: other, offset: 0 };
    const fe = VhostUserFrontend.connect(d.socket);
    try {
      await fe.startDevice(1, { guest, memSlots: true });
      await fe.addMemReg(b);
      await guestToHost(hostMac, guest, 0, 5960);
      const [a] = guest.regions();
      const fds = resourcesOf(d.pid).fds;
      for (let round = 0; round < 20; round++) {
        ackOk(await fe.exchange(Request.REM_MEM_REG, encodeSingleRegion(a!)), `round ${round}: REM_MEM_REG of the rings' region`);
        assert.equal(d.maps('memfd:vhost-tap-guest'), [], `round ${round}: unmapped at once`);
        ackOk(await fe.exchange(Request.ADD_MEM_REG, encodeSingleRegion(a!), { fds: [a!.fd] }), `round ${round}: ADD_MEM_REG of it again`);
        await until(`round ${round}: the daemon's fds back to ${fds}`, () => resourcesOf(d.pid).fds === fds, 2000);
      }
      await guestToHost(hostMac, guest, 0, 5961);
      await hostToGuest(guest, [0], 7100, 8);
    } finally {
      fe.close();
      await d.released();
      guest.close();
      native.closeFd(other);
    }
    assert.equal(d.maps('memfd:'), [], 'no guest memory mapped once the frontend left');
  });
});

test('CLI: REM_MEM_REG of the last region while no ring uses it is acked and unmaps it; removing it again fails; the next ADD_MEM_REG maps it anew and rings run in it', async () => {
  await withServeDaemon(1, async (d) => {
    addressTap(d.tap);
    const guest = VhostUserGuest.create(1);
    const fe = VhostUserFrontend.connect(d.socket);
    const mapped = (): boolean => d.maps('memfd:vhost-tap-guest').length > 0;
    try {
      await fe.init({ rings: 2 });
      await fe.setFeatures((guest.features & fe.offeredFeatures) | PROTOCOL_PROTOCOL_FEATURES);
      const [a] = guest.regions();
      await fe.addMemReg(a!);
      assert.ok(mapped());
      ackOk(await fe.exchange(Request.REM_MEM_REG, encodeSingleRegion(a!)), 'REM_MEM_REG of the only region');
      assert.not.ok(mapped(), 'unmapped at once');
      for (const again of [2, 3]) ackFailed(await fe.exchange(Request.REM_MEM_REG, encodeSingleRegion(a!)), `REM_MEM_REG number ${again}`);
      await fe.addMemReg(a!);
      assert.ok(mapped(), 'the ADD_MEM_REG after them mapped it anew');
      await fe.startDevice(1, { guest, memSlots: true });
      await guestToHost(macOf(d.tap), guest, 0, 5970);
      await hostToGuest(guest, [0], 7120, 8);
    } finally {
      fe.close();
      await d.released();
      guest.close();
    }
  });
});

test('CLI: no mapping outlives its region: 20 rounds of REM_MEM_REG (a region beside the rings, and one whose ring failed to start) leave no mapping behind, at the REM and after the disconnect', async () => {
  await withServeDaemon(1, async (d) => {
    for (let round = 0; round < 20; round++) {
      const guest = VhostUserGuest.create(1);
      const names = [uniqueName('vvumapb'), uniqueName('vvumapc')];
      const [bFd, cFd] = names.map((name) => native.memfdCreate(name, 1 << 20));
      const b: MemRegion = { guestPhysAddr: 0x4000_0000, size: 1 << 20, fd: bFd!, offset: 0 };
      const c: MemRegion = { guestPhysAddr: 0x5000_0000, size: 1 << 20, fd: cFd!, offset: 0 };
      const kicks = [native.eventfdCreate(), native.eventfdCreate()];
      const fe = VhostUserFrontend.connect(d.socket);
      try {
        await fe.startDevice(1, { guest, memSlots: true });
        await fe.addMemReg(b);
        await fe.remMemReg(b);
        assert.equal(d.maps(names[0]!), [], `round ${round}: the region beside the rings unmapped at its REM_MEM_REG`);
        // The rings stopped and moved to region C, where they cannot start (the
        // descriptor table misaligned); then C removed.
        await fe.stopDevice(1);
        await fe.addMemReg(c);
        for (const index of [0, 1]) {
          const base = c.guestPhysAddr + index * 0x10000;
          await fe.setVringAddr(index, { descAddr: base + 2, availAddr: base + 0x4000, usedAddr: base + 0x8000 });
        }
        await fe.setVringKick(0, kicks[0]!);
        ackFailed(await fe.exchange(Request.SET_VRING_KICK, encodeU64(1), { fds: [kicks[1]!] }), `round ${round}: the pair cannot start`);
        await fe.remMemReg(c);
        assert.equal(d.maps(names[1]!), [], `round ${round}: the region of the ring that failed to start unmapped at its REM_MEM_REG`);
      } finally {
        fe.close();
        await d.released();
        guest.close();
        [bFd!, cFd!, ...kicks].forEach((fd) => native.closeFd(fd));
      }
      assert.equal(d.maps('memfd:'), [], `round ${round}: nothing mapped after the disconnect`);
    }
  });
});

test('CLI: a frontend truncates the memfd behind guest memory under running rings: the memory log line said it could, the daemon survives (those pages read as zeros) and says so at the disconnect', async () => {
  await withServeDaemon(1, async (d) => {
    addressTap(d.tap);
    const hostMac = macOf(d.tap);
    const size = VhostUserGuest.memoryNeeded(1);
    // Not sealed against shrinking, as QEMU's memory-backend-file or memory-backend-memfd,seal=off.
    const fd = native.memfdCreate(uniqueName('vvushrink'), size, false);
    const memory = GuestMemory.fromRegions([{ guestPhysAddr: 0, size, fd }]);
    const guest = VhostUserGuest.inMemory(memory, 1);
    const sender = dgram.createSocket('udp4');
    const fe = VhostUserFrontend.connect(d.socket);
    try {
      await fe.startDevice(1, { guest });
      await guestToHost(hostMac, guest, 0, 5980);
      fs.ftruncateSync(fd, 0);
      // The worker reads the rings again on a kick, and on a frame from the tap.
      native.eventfdWrite(guest.driver.queueConfig(0).tx.kickFd);
      for (let i = 0; i < 8; i++) await sendTo(sender, pattern(100, i), 7140 + i);
      await until('the daemon to see a broken ring', () => daemonLog(d, 'queue-error').length > 0, 5000);
      assert.ok(d.child.exitCode === null && d.child.signalCode === null, `the daemon is alive:\n${d.stderr()}`);
      assert.is(await fe.getQueueNum(), 1, 'and still answers');
      const line = daemonLog(d, 'memory').at(-1);
      assert.is(line?.shrinkable, 1, `the memory log line said the region could shrink: ${JSON.stringify(line)}`);
    } finally {
      sender.close();
      fe.close();
      await d.released();
      guest.driver.close();
      memory.close();
      native.closeFd(fd);
    }
    const gone = daemonLog(d, 'disconnected').at(-1);
    assert.ok(Number(gone?.truncatedPages) >= 1, `the disconnect line counts the pages lost: ${JSON.stringify(gone)}`);
    const next = VhostUserFrontend.connect(d.socket);
    try {
      assert.is((await next.init()).queues, 1, 'the next frontend is served');
    } finally {
      next.close();
    }
  });
});

function sendQuietly(fd: number, bytes: Buffer): boolean {
  try {
    native.sendFds(fd, [], bytes);
    return true;
  } catch {
    return false; // the daemon hung up
  }
}

test('CLI: --print-capabilities prints {"type":"net"}', () => {
  const r = spawnSync(process.execPath, [CLI, '--print-capabilities'], { encoding: 'utf8' });
  assert.is(r.status, 0);
  assert.equal(JSON.parse(r.stdout), { type: 'net' });
});

test('CLI: serve with bad arguments exits non-zero and says why', () => {
  const sock = path.join(tmp, 'bad.sock');
  for (const [args, why] of [
    [['serve', '--socket', sock], /--tap NAME is required/],
    [['serve', '--tap', 'vvubad0'], /--socket PATH/],
    [['serve', '--socket', sock, '--tap', 'vvubad0', '--queues', '0'], /--queues takes an integer from 1 to 256/],
    [['serve', '--socket', sock, '--tap', 'vvubad0', '--frobnicate'], /unknown option --frobnicate/],
    [['serve', '--socket', sock, '--fd', '3', '--tap', 'vvubad0'], /not both/],
    [['serve', '--socket', sock, '--tap', 'vvubad0', '--mac', 'zz:zz'], /./],
    [['frobnicate'], /unknown command/],
  ] as [string[], RegExp][]) {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 10_000 });
    assert.ok(r.status !== 0 && r.status !== null, `${args.join(' ')}: exit status ${String(r.status)} (signal ${String(r.signal)})`);
    assert.match(r.stderr, why, `${args.join(' ')}: ${r.stderr}`);
    assert.not.ok(linkExists('vvubad0'), `${args.join(' ')}: no tap left behind`);
    assert.not.ok(fs.existsSync(sock), `${args.join(' ')}: no socket left behind`);
  }
});

test('CLI: serve passes traffic for a frontend in another process; SIGTERM mid-traffic exits 0, removes the socket and the tap', async () => {
  const tapName = uniqueName('vvucli');
  const sock = path.join(tmp, `${tapName}.sock`);
  const d = startDaemon(['serve', '--socket', sock, '--tap', tapName, '--queues', '2', '--mac', GUEST_MAC_STRING]);
  let guest: VhostUserGuest | undefined;
  let fe: VhostUserFrontend | undefined;
  try {
    await until('the daemon to listen', () => d.logs.some((l) => l.event === 'listening'), 10_000);
    assert.ok(fs.statSync(sock).isSocket());
    assert.is(readTapLinkInfo(tapName).numQueues + readTapLinkInfo(tapName).numDisabled, 2);
    addressTap(tapName);
    fe = VhostUserFrontend.connect(sock);
    assert.is((await fe.init({ rings: 4 })).queues, 2);
    guest = await fe.startDevice(2);
    assert.is(readTapLinkInfo(tapName).numDisabled, 0);
    const hostMac = macOf(tapName);
    await guestToHost(hostMac, guest, 0, 5800);
    await guestToHost(hostMac, guest, 1, 5801);
    const perPair = await hostToGuest(guest, [0, 1], 6900);
    assert.ok(perPair[0]! > 0 && perPair[1]! > 0);
    // SIGTERM while frames are flowing.
    const g = guest;
    const pump = g.driver.sendBatch(0, Array.from({ length: 200 }, (_, i) => ({ frame: guestFrame(hostMac, 4000, 5802, pattern(64, i)) }))).catch(() => undefined);
    d.child.kill('SIGTERM');
    const { code, signal } = await waitExit(d);
    await pump;
    assert.is(signal, null);
    assert.is(code, 0, d.stderr());
    assert.ok(d.logs.some((l) => l.event === 'stopped'));
    assert.not.ok(fs.existsSync(sock), 'socket removed');
    assert.not.ok(linkExists(tapName), 'tap gone');
    assert.is(await fe.readMessage(1000), undefined, 'the daemon closed our connection');
  } finally {
    fe?.close();
    guest?.close();
    if (d.child.exitCode === null) d.child.kill('SIGKILL');
  }
});

test('CLI: --tap-fd with --steering-map-fd: the daemon steers through the map a privileged helper handed it; a map fd that is not one is refused', async () => {
  const tapName = uniqueName('vvusm');
  const tap = Tap.create({ name: tapName, queues: 2 });
  const steering = TapSteering.load();
  const notAMap = EventFd.create();
  try {
    steering.attach(tap);
    const start = (mapFd: number, sock: string): Daemon => {
      const child = spawn(process.execPath, [CLI, 'serve', '--socket', sock, '--tap', tapName, '--tap-fd', '3', '4', '--steering-map-fd', '5'], {
        stdio: ['ignore', 'pipe', 'pipe', tap.queues[0]!.fd, tap.queues[1]!.fd, mapFd],
      });
      let err = '';
      const logs: Record<string, unknown>[] = [];
      child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
        err += chunk;
        for (const line of chunk.split('\n')) {
          try {
            logs.push(JSON.parse(line) as Record<string, unknown>);
          } catch {
            // partial or not a log line
          }
        }
      });
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
      return { child, logs, stderr: () => err, exited };
    };
    const d = start(steering.mapFd, path.join(tmp, `${tapName}.sock`));
    try {
      await until('the steering log line', () => d.logs.some((l) => l.event === 'steering'), 10_000);
      assert.is(d.logs.find((l) => l.event === 'steering')?.active, true, `the daemon steers with the handed-over map: ${d.stderr()}`);
      d.child.kill('SIGTERM');
      assert.is((await waitExit(d)).code, 0, d.stderr());
    } finally {
      if (d.child.exitCode === null) d.child.kill('SIGKILL');
    }
    const bad = start(notAMap.fd, path.join(tmp, `${tapName}-2.sock`));
    const { code } = await waitExit(bad);
    assert.ok(code !== 0, 'an eventfd given as the steering map is refused');
    assert.match(bad.stderr(), /not a steering map/);
  } finally {
    notAMap.close();
    steering.close();
    tap.close();
  }
});

test('CLI: --client connects to the frontend\'s socket and reconnects after the frontend closes it', async () => {
  const tapName = uniqueName('vvucl');
  const sock = path.join(tmp, `${tapName}.sock`);
  const listenFd = listenUnix(sock, 'stream');
  const d = startDaemon(['serve', '--client', '--socket', sock, '--tap', tapName, '--reconnect-ms', '100']);
  try {
    for (let round = 0; round < 3; round++) {
      const fd = await acceptUnix(listenFd, 10_000);
      const fe = new VhostUserFrontend(fd);
      try {
        const { queues } = await fe.init({ rings: 2 });
        assert.is(queues, 1);
        assert.equal([...(await fe.getConfig(8, 2))], [1, 0], 'max_virtqueue_pairs 1');
        if (round === 1) {
          addressTap(tapName);
          const guest = await fe.startDevice(1);
          try {
            await guestToHost(macOf(tapName), guest, 0, 5900);
          } finally {
            fe.close();
            guest.close();
          }
        }
      } finally {
        fe.close();
      }
    }
    assert.ok(d.logs.filter((l) => l.event === 'connected').length >= 3, d.stderr());
    d.child.kill('SIGTERM');
    const { code } = await waitExit(d);
    assert.is(code, 0, d.stderr());
    assert.ok(fs.existsSync(sock), 'client mode leaves the frontend\'s socket alone');
    assert.not.ok(linkExists(tapName));
  } finally {
    if (d.child.exitCode === null) d.child.kill('SIGKILL');
    native.closeFd(listenFd);
    fs.rmSync(sock, { force: true });
  }
});

test('CLI: a second daemon given the tap of a running one refuses it, and the first keeps its queues', async () => {
  const tapName = uniqueName('vvutw');
  const first = startDaemon(['serve', '--socket', path.join(tmp, `${tapName}-1.sock`), '--tap', tapName]);
  let second: Daemon | undefined;
  try {
    await until('the first daemon to listen', () => first.logs.some((l) => l.event === 'listening'), 10_000);
    const before = readTapLinkInfo(tapName);
    second = startDaemon(['serve', '--socket', path.join(tmp, `${tapName}-2.sock`), '--tap', tapName]);
    const outcome = await Promise.race([second.exited, sleep(3000).then(() => undefined)]);
    const after = readTapLinkInfo(tapName);
    assert.equal([after.numQueues, after.numDisabled], [before.numQueues, before.numDisabled], 'no queue of the live tap taken');
    assert.ok(outcome && outcome.code !== 0, `the second daemon must refuse a tap in use; it is ${outcome ? `exited ${String(outcome.code)}` : 'running'}:\n${second.stderr()}`);
  } finally {
    if (second && second.child.exitCode === null) second.child.kill('SIGKILL');
    first.child.kill('SIGTERM');
    assert.is((await waitExit(first)).code, 0);
  }
});

test('CLI: a frontend that never reads its replies cannot wedge the daemon: SIGTERM still stops it', async () => {
  const tapName = uniqueName('vvuwg');
  const sock = path.join(tmp, `${tapName}.sock`);
  const d = startDaemon(['serve', '--socket', sock, '--tap', tapName]);
  let fe: VhostUserFrontend | undefined;
  try {
    await until('the daemon to listen', () => d.logs.some((l) => l.event === 'listening'), 10_000);
    fe = VhostUserFrontend.connect(sock);
    // 2000 GET_FEATURES, their replies never read (few enough that our own sends never block).
    const batch = Buffer.concat(Array.from({ length: 1000 }, () => encodeMessage(Request.GET_FEATURES, 1)));
    fe.sendRaw(batch);
    fe.sendRaw(batch);
    await sleep(300);
    d.child.kill('SIGTERM');
    const outcome = await Promise.race([d.exited, sleep(3000).then(() => undefined)]);
    assert.ok(outcome, `the daemon is still running 3 s after SIGTERM:\n${d.stderr().slice(-2000)}`);
    assert.is(outcome!.code, 0, d.stderr());
  } finally {
    if (d.child.exitCode === null) d.child.kill('SIGKILL');
    fe?.close();
    fs.rmSync(sock, { force: true });
  }
});

test('CLI: --netns runs the daemon (and its tap) in that namespace; SIGTERM reaches it and it exits 0', async () => {
  const netns = uniqueName('vvuns');
  const tapName = uniqueName('vvuns');
  const sock = path.join(tmp, `${tapName}.sock`);
  run('ip', ['netns', 'add', netns]);
  const d = startDaemon(['serve', '--netns', netns, '--socket', sock, '--tap', tapName]);
  try {
    await until('the daemon to listen', () => d.logs.some((l) => l.event === 'listening'), 10_000);
    assert.ok(linkExists(tapName, netns), 'the tap is in the namespace');
    assert.not.ok(linkExists(tapName), 'and not in ours');
    const fe = VhostUserFrontend.connect(sock);
    try {
      assert.is((await fe.init()).queues, 1);
    } finally {
      fe.close();
    }
    d.child.kill('SIGTERM');
    const { code } = await waitExit(d);
    assert.is(code, 0, d.stderr());
    assert.not.ok(fs.existsSync(sock));
    assert.not.ok(linkExists(tapName, netns));
  } finally {
    if (d.child.exitCode === null) d.child.kill('SIGKILL');
    run('ip', ['netns', 'delete', netns]);
  }
});

test.after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

test.run();
