// A TypeScript VMM migrating its own guest's device (examples/migration): the
// device's dirty log during precopy, saveState() on the source, restoreState()
// on a fresh device on another tap of the same bridge, the RARP announce; a real
// TCP connection from the namespace's kernel to the guest survives two hops.
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { DEVICE_STATE_VERSION, GuestMemory, Tap, VirtioNetDevice, VirtioNetGuest, features as F, readTapLinkInfo } from '../src';
import type { VirtioNetDeviceOptions, VirtioNetDeviceState } from '../src';
import { liveMigrate, type MigrationReport } from '../examples/migration/live-migrate';
import { PausableLoop } from '../examples/migration/vcpu';
import { until } from '../harness/wait';
import { threadCount, warmUp } from './helpers/device';
import { TcpPeer, parseTcp } from './helpers/tcp-peer';
import { assertPrivateNetns, newFds, openFds, run, uniqueName } from './helpers/system';

assertPrivateNetns();

const HOST_IP = '10.11.0.1';
const GUEST_IP = '10.11.0.2';
const GUEST_MAC = '52:54:00:12:34:56';
const NO_ANNOUNCE = ((1n << 64n) - 1n) & ~(1n << BigInt(F.VIRTIO_NET_F_GUEST_ANNOUNCE));

function macOf(ifname: string): Buffer {
  const [link] = JSON.parse(run('ip', ['-j', 'link', 'show', 'dev', ifname])) as { address: string }[];
  return Buffer.from(link!.address.split(':').map((h) => parseInt(h, 16)));
}

interface Bridge {
  name: string;
  taps: Tap[];
  /** The bridge port the guest's MAC was last learned on. */
  guestPort(): string | undefined;
}

async function withBridge(queues: number, body: (bridge: Bridge) => Promise<void>): Promise<void> {
  const name = uniqueName('vbm');
  run('ip', ['link', 'add', name, 'type', 'bridge']);
  const taps: Tap[] = [];
  try {
    run('ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', name]);
    for (let i = 0; i < 2; i++) {
      const tap = Tap.create({ name: uniqueName('vtm'), queues });
      taps.push(tap);
      run('ip', ['link', 'set', tap.name, 'master', name]);
    }
    run('ip', ['link', 'set', name, 'up']);
    run('ip', ['neigh', 'replace', GUEST_IP, 'lladdr', GUEST_MAC, 'dev', name, 'nud', 'permanent']);
    await body({
      name, taps,
      guestPort: () => /dev (\S+)/.exec(run('bridge', ['fdb', 'show', 'br', name]).split('\n').find((l) => l.startsWith(GUEST_MAC)) ?? '')?.[1],
    });
  } finally {
    for (const tap of taps) tap.close();
    run('ip', ['link', 'del', name]);
  }
}

const options = (tap: Tap): VirtioNetDeviceOptions => ({ tap, mac: GUEST_MAC, features: NO_ANNOUNCE });

test('a TCP stream from the host to the guest survives two live migrations between taps, every byte in order', async () => {
  await warmUp();
  const fdMap = openFds();
  const threadsBefore = threadCount();
  await withBridge(1, async (bridge) => {
    let memory = GuestMemory.allocate(32 << 20);
    let device = new VirtioNetDevice(options(bridge.taps[0]!));
    device.setMemory(memory);
    const guest = VirtioNetGuest.bringUp({ device, memory });
    const peer = new TcpPeer({ mac: Buffer.from(GUEST_MAC.split(':').map((h) => parseInt(h, 16))), ip: GUEST_IP, port: 9100, remoteMac: macOf(bridge.name), reassemble: true });
    peer.listen();
    const vcpu = new PausableLoop(async () => {
      const frames = await guest.driver.receive(0, { timeoutMs: 20 });
      const out: Buffer[] = [];
      for (const r of frames) {
        const t = parseTcp(r.frame);
        if (t && peer.matches(t)) out.push(...peer.handle(r.frame));
      }
      if (out.length > 0) await guest.driver.sendBatch(0, out.map((frame) => ({ frame })));
    });
    const data = randomBytes(8 << 20);
    const socket = net.connect({ host: GUEST_IP, port: 9100, localAddress: HOST_IP });
    let socketError: Error | undefined;
    socket.on('error', (e) => { socketError = e; });
    socket.on('connect', () => socket.end(data));
    const hops: MigrationReport[] = [];
    try {
      for (const [hop, at] of [[1, data.length / 4], [0, data.length / 2]] as const) {
        await until(`${at} bytes before hop ${hops.length + 1}`, () => peer.received >= at || socketError !== undefined, 20_000);
        assert.is(bridge.guestPort(), bridge.taps[hop === 1 ? 0 : 1]!.name, 'the bridge has the guest on the source tap');
        const destination = new VirtioNetDevice(options(bridge.taps[hop]!));
        const source = device;
        const report = await liveMigrate({
          source, sourceMemory: memory, destination, guest,
          pauseGuest: () => vcpu.pause(),
          resumeGuest: () => vcpu.resume(),
        });
        assert.ok(report.identical, `hop ${hops.length + 1}: the dirty log missed no page the device wrote`);
        assert.is(bridge.guestPort(), bridge.taps[hop]!.name, `hop ${hops.length + 1}: the RARP moved the guest to the destination tap on the bridge`);
        source.close();
        memory.close();
        device = destination;
        memory = report.destinationMemory;
        hops.push(report);
      }
      await until('the whole stream', () => peer.state === 'done' || socketError !== undefined || peer.resetReceived, 30_000).catch((error: Error) => {
        const rx = guest.driver.rxQueue(0).layout;
        const m = guest.driver.memory;
        const ring = { availIdx: m.view(rx.availAddr + 2, 2).getUint16(0, true), usedIdx: m.view(rx.usedAddr + 2, 2).getUint16(0, true),
          availEvent: m.view(rx.usedAddr + 4 + 8 * rx.size, 2).getUint16(0, true), usedEvent: m.view(rx.availAddr + 4 + 2 * rx.size, 2).getUint16(0, true) };
        error.message += ` (TCP state ${peer.state}, ${peer.received} of ${data.length} bytes, ${peer.outOfOrder} out of order; ${hops.length} hops; ` +
          `guest rx ring ${JSON.stringify(ring)}; device ${JSON.stringify(device.stats().pairs[0])}; ss: ${run('ss', ['-tni'])}; ` +
          `fdb: ${run('bridge', ['fdb', 'show', 'br', bridge.name])}; links: ${bridge.taps.map((t) => JSON.stringify(readTapLinkInfo(t.name).stats)).join(' ')})`;
        throw error;
      });
    } finally {
      await vcpu.stop();
      socket.destroy();
      guest.close();
      device.close();
      memory.close();
    }
    assert.is(socketError, undefined, `socket error: ${socketError?.message}`);
    assert.is(peer.received, data.length, 'every byte arrived');
    assert.is(createHash('sha256').update(peer.stream()).digest('hex'), createHash('sha256').update(data).digest('hex'), 'in order, byte-exact');
    for (const [i, r] of hops.entries()) {
      console.log(`    hop ${i + 1}: pages per pass ${r.pagesPerPass.join('/')}, device downtime ${r.deviceDowntimeMs} ms, guest paused ${r.guestPausedMs} ms`);
    }
  });
  await until('fds and threads back', () => newFds(fdMap).length === 0 && threadCount() <= threadsBefore, 3000).catch(() => undefined);
  assert.equal(newFds(fdMap), [], 'no fd left');
  assert.ok(threadCount() <= threadsBefore, 'no worker thread left');
});

test('saveState/restoreState carries the active queue pairs, the MAC the guest set and the ring positions', async () => {
  await withBridge(2, async (bridge) => {
    const memory = GuestMemory.allocate(64 << 20);
    const source = new VirtioNetDevice({ ...options(bridge.taps[0]!), maxQueuePairs: 2 });
    source.setMemory(memory);
    const guest = VirtioNetGuest.bringUp({ device: source, memory });
    let destination: VirtioNetDevice | undefined;
    try {
      assert.is(await guest.setQueuePairs(2), 0);
      assert.is(await guest.control!.setMac(Buffer.from([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc])), 0);
      const state = source.saveState();
      assert.is(state.version, DEVICE_STATE_VERSION);
      assert.equal(JSON.parse(JSON.stringify(state)), state, 'the state is plain JSON');
      assert.not.ok(source.isPairRunning(0) || source.isPairRunning(1), 'saveState quiesced the source');
      destination = new VirtioNetDevice({ ...options(bridge.taps[1]!), maxQueuePairs: 2 });
      destination.setMemory(memory);
      for (const { index, kickFd, callFd } of guest.queueSignals()) {
        destination.setQueueKick(index, kickFd);
        destination.setQueueCall(index, callFd);
      }
      destination.restoreState(state);
      assert.is(destination.activeQueuePairs, 2);
      assert.ok(destination.isPairRunning(0) && destination.isPairRunning(1), 'both pairs run on the destination');
      assert.is(readTapLinkInfo(bridge.taps[1]!.name).numDisabled, 0, 'the destination tap has both queues attached');
      assert.is(destination.mac, '52:54:00:aa:bb:cc', 'the MAC the guest set moved with it');
      // Rings resume where they stopped: tx and control exactly (the guest sends nothing meanwhile);
      // rx may have moved on by frames the bridge floods to the new port after the restore.
      const after = destination.saveState().queues.map((q) => q.lastAvailIdx);
      state.queues.forEach((q, i) => {
        if (i % 2 === 1 || i === 4) assert.is(after[i], q.lastAvailIdx, `queue ${i} resumed at ${q.lastAvailIdx}`);
        else assert.ok(((after[i]! - q.lastAvailIdx) & 0xffff) < 64, `rx queue ${i} resumed at ${q.lastAvailIdx} (now ${after[i]})`);
      });
    } finally {
      guest.close();
      destination?.close();
      source.close();
      memory.close();
    }
  });
});

test('a state of another version, another shape or another device is refused with EINVAL, and nothing changes', async () => {
  await withBridge(1, async (bridge) => {
    const memory = GuestMemory.allocate(64 << 20);
    const source = new VirtioNetDevice(options(bridge.taps[0]!));
    source.setMemory(memory);
    const guest = VirtioNetGuest.bringUp({ device: source, memory });
    const target = new VirtioNetDevice(options(bridge.taps[1]!));
    try {
      const good = source.saveState();
      const bad: [string, unknown][] = [
        ['another version', { ...good, version: 99 }],
        ['another kind', { ...good, kind: 'something-else' }],
        ['more queue pairs', { ...good, maxQueuePairs: 4 }],
        ['a feature not offered here', { ...good, driverFeatures: '0x8000000000000000' }],
        ['a malformed MAC', { ...good, mac: 'zz:zz' }],
        ['too few queues', { ...good, queues: good.queues.slice(1) }],
        ['a bad ring index', { ...good, queues: good.queues.map((q) => ({ ...q, lastAvailIdx: 70000 })) }],
        ['not an object', 'state'],
      ];
      for (const [what, state] of bad) {
        assert.throws(() => target.restoreState(state as VirtioNetDeviceState), (e: Error & { code?: string }) => e.code === 'EINVAL', what);
        assert.is(target.status, 0, `${what}: the target is untouched`);
        assert.not.ok(target.isPairRunning(0), `${what}: nothing started`);
      }
    } finally {
      guest.close();
      target.close();
      source.close();
      memory.close();
    }
  });
});

test.run();
