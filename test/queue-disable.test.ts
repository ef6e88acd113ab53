// A queue pair the driver stops using gives back what it left on its tx ring:
// vhost-user.rst "Ring states" (a started but disabled ring discards its TX
// packets). Before, the chains stayed there forever, and a Linux guest's socket
// whose packets they held stayed throttled: after ethtool -L 2 -> 1 and a
// migration, the guest -> host iperf3 stream stalled (test/e2e/migration.test.ts).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { Tap, VhostUserServer, VirtioNetDevice, readTapLinkInfo } from '../src';
import * as F from '../src/virtio/features';
import type { GuestMemory } from '../src/virtio/guest-memory';
import type { PackedQueueDriver } from '../src/virtio/driver/packed-queue-driver';
import { encodePackedRingBase } from '../src/virtio/ring-base';
import type { VirtqueueDriver } from '../src/virtio/driver/virtqueue-driver';
import { until, sleep } from '../harness/wait';
import { withDevice } from './helpers/device';
import { assertPrivateNetns, uniqueName } from './helpers/system';
import { Request, VHOST_VRING_F_LOG } from '../src/vhost-user/protocol';
import { VhostUserFrontend, VhostUserGuest, encodeVringAddr } from './helpers/vhost-user-frontend';

assertPrivateNetns();

test('VQ_PAIRS_SET 2 -> 1: chains the driver left on pair 1\'s tx ring are completed unsent', async () => {
  await withDevice({ queues: 2, device: { maxQueuePairs: 2 } }, async (rig) => {
    const guest = rig.bringUp();
    assert.is(await guest.setQueuePairs(2), 0);
    await sleep(50); // pair 1's worker is asleep, waiting for a kick
    const tx = guest.driver.txQueue(1);
    // Three chains published without a kick (as a guest does when the device said it needs
    // none, or right before it switches queues): the worker has not seen them.
    const spare = rig.memory.size - 3 * 4096;
    for (let i = 0; i < 3; i++) tx.add([{ addr: spare + i * 4096, len: 12 + 60, writable: false }], 1000 + i);
    tx.publish();
    const usedIdx = (): number => rig.memory.view(tx.layout.usedAddr + 2, 2).getUint16(0, true);
    const availIdx = (): number => rig.memory.view(tx.layout.availAddr + 2, 2).getUint16(0, true);
    const usedBefore = usedIdx();
    assert.is((availIdx() - usedBefore) & 0xffff, 3, 'three chains wait on the tx ring of pair 1');
    const sentBefore = readTapLinkInfo(rig.tap.name).stats.rxPackets;
    assert.is(await guest.setQueuePairs(1), 0);
    assert.is(usedIdx(), availIdx(), 'the device completed every chain of the pair it took out of use');
    assert.is(readTapLinkInfo(rig.tap.name).stats.rxPackets, sentBefore, 'unsent: nothing reached the tap');
    assert.is(rig.device.activeQueuePairs, 1);
  });
});

/** Chains of one 60-byte frame each, published on `tx` from spare memory; kicked if asked. */
function postFrames(memory: GuestMemory, tx: VirtqueueDriver<number>, count: number, kick: boolean): void {
  const spare = memory.size - 8 * 4096;
  for (let i = 0; i < count; i++) tx.add([{ addr: spare + (i % 8) * 4096, len: 12 + 60, writable: false }], 2000 + i);
  tx.publish();
  if (kick) tx.kick();
}

const ringIdx = (memory: GuestMemory, addr: number): number => memory.view(addr + 2, 2).getUint16(0, true);

test('a pair out of use goes on completing the tx chains posted after the switch, unsent; back in use, it sends them', async () => {
  await withDevice({ queues: 2, device: { maxQueuePairs: 2 } }, async (rig) => {
    const guest = rig.bringUp();
    assert.is(await guest.setQueuePairs(2), 0);
    assert.is(await guest.setQueuePairs(1), 0);
    const tx = guest.driver.txQueue(1);
    const used = (): number => ringIdx(rig.memory, tx.layout.usedAddr);
    const avail = (): number => ringIdx(rig.memory, tx.layout.availAddr);
    const sentBefore = readTapLinkInfo(rig.tap.name).stats.rxPackets;
    // A guest's skbs queued on the old queue as it switched: before, they waited there for ever.
    postFrames(rig.memory, tx, 5, true);
    await until('pair 1 to complete the chains posted after it went out of use', () => used() === avail());
    const stats = rig.device.stats().pairs[1]!;
    assert.ok(stats.discardingTx && !stats.running, JSON.stringify(stats));
    assert.is(stats.tx!.drops.stopped, 5);
    assert.is(readTapLinkInfo(rig.tap.name).stats.rxPackets, sentBefore, 'unsent: nothing reached the tap');

    assert.is(await guest.setQueuePairs(2), 0);
    postFrames(rig.memory, tx, 3, true);
    await until('pair 1, back in use, to send what is posted', () => readTapLinkInfo(rig.tap.name).stats.rxPackets >= sentBefore + 3);
    assert.ok(rig.device.stats().pairs[1]!.running);
  });
});

for (const ringPacked of [false, true]) {
  test(`vhost-user: a tx ring started but disabled discards what waits and what comes, until GET_VRING_BASE stops it${ringPacked ? ' [packed ring]' : ''}`, async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'queue-disable-'));
    const tap = Tap.create({ name: uniqueName('vqd'), queues: 2 });
    const device = new VirtioNetDevice({ tap, controlQueue: 'frontend' });
    const server = new VhostUserServer({ device, socketPath: path.join(tmp, 'sock') });
    server.start();
    const guest = VhostUserGuest.create(2, { features: { ringPacked } });
    const frontend = VhostUserFrontend.connect(path.join(tmp, 'sock'));
    try {
      const tx = guest.driver.txQueue(1);
      // Every chain posted completed: the driver reaps them itself (a packed ring has no
      // indices in memory), and none is left in flight.
      let completed = 0;
      const allCompleted = (): boolean => {
        completed += tx.takeUsed().length;
        return tx.inFlight === 0;
      };
      // The destination of a migration after ethtool -L 2 -> 1: pair 1's rings are started from
      // the source's bases, with chains the source left on tx 1, and never enabled.
      postFrames(guest.memory, tx, 4, false);
      await frontend.startDevice(2, { guest, enable: 1 });
      assert.is(F.hasFeature(device.activeFeatures, F.VIRTIO_F_RING_PACKED), ringPacked);
      await until('the chains left on the disabled tx ring to be completed', allCompleted);
      postFrames(guest.memory, tx, 3, true);
      await until('chains posted later to be completed too', allCompleted);
      assert.is(completed, 7);
      assert.is(device.stats().pairs[1]!.tx!.drops.stopped, 7);
      assert.is(readTapLinkInfo(tap.name).stats.rxPackets, 0, 'unsent');

      // A migration starting: QEMU sends every started ring's address again with VHOST_VRING_F_LOG,
      // the disabled pair's too (this was refused with EBUSY, and QEMU gave up the migration).
      const config = guest.driver.queueConfig(1);
      await frontend.ok(Request.SET_VRING_ADDR, encodeVringAddr(2, config.rx, VHOST_VRING_F_LOG));
      await frontend.ok(Request.SET_VRING_ADDR, encodeVringAddr(3, config.tx, VHOST_VRING_F_LOG));
      postFrames(guest.memory, tx, 2, true);
      await until('the disabled ring to discard on, logging', allCompleted);
      assert.is(device.stats().pairs[1]!.tx!.drops.stopped, 2, 'counted by the worker started again on the logged ring');

      // Stopped, the ring is left alone: what comes now is for whoever starts it next. The base:
      // split, the avail index; packed, the next descriptor for avail and used alike.
      const stoppedAt = ringPacked
        ? encodePackedRingBase((tx as PackedQueueDriver<number>).nextAvail, (tx as PackedQueueDriver<number>).nextAvail)
        : ringIdx(guest.memory, tx.layout.availAddr);
      assert.is(await frontend.getVringBase(3), stoppedAt);
      postFrames(guest.memory, tx, 2, true);
      await sleep(100);
      assert.is(tx.takeUsed().length, 0, 'a stopped ring keeps its chains');
      assert.is(tx.inFlight, 2);
      assert.not.ok(device.stats().pairs[1]!.discardingTx);
      assert.is(readTapLinkInfo(tap.name).stats.rxPackets, 0, 'nothing of pair 1 was sent');
    } finally {
      frontend.close();
      await server.stop();
      guest.close();
      device.close();
      tap.close();
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
}

test('vhost-user: what a guest posts on a disabled pair right before it is enabled again is sent, not discarded', async () => {
  // QEMU sends SET_VRING_ENABLE without waiting for the backend and acks the guest's
  // VQ_PAIRS_SET at once: after `ethtool -L combined 4` the guest transmits on a queue the
  // daemon has not read the enable of yet. Its chains must not be taken for leftovers.
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'queue-disable-'));
  const tap = Tap.create({ name: uniqueName('vqd'), queues: 2 });
  const device = new VirtioNetDevice({ tap, controlQueue: 'frontend' });
  const server = new VhostUserServer({ device, socketPath: path.join(tmp, 'sock') });
  server.start();
  const guest = VhostUserGuest.create(2);
  const frontend = VhostUserFrontend.connect(path.join(tmp, 'sock'));
  try {
    await frontend.startDevice(2, { guest, enable: 2 });
    await frontend.setPairEnabled(1, false); // ethtool -L combined 1
    await until('pair 1 to discard, out of use', () => device.stats().pairs[1]!.discardingTx);
    const tx = guest.driver.txQueue(1);
    const sentBefore = readTapLinkInfo(tap.name).stats.rxPackets;
    for (let round = 0; round < 3; round++) {
      // ethtool -L combined 2: the guest posts on queue 1 the moment the enable is sent.
      postFrames(guest.memory, tx, 2, true);
      await sleep(20); // the daemon is slow to read the enable (a busy host)
      await frontend.setPairEnabled(1, true);
      await until(`round ${round}: the frames posted as the pair came back reach the tap`, () => readTapLinkInfo(tap.name).stats.rxPackets >= sentBefore + 2 * (round + 1));
      await frontend.setPairEnabled(1, false);
      await until(`round ${round}: pair 1 out of use again`, () => device.stats().pairs[1]!.discardingTx);
    }
    assert.is(readTapLinkInfo(tap.name).stats.rxPackets, sentBefore + 6, 'each frame sent once');
  } finally {
    frontend.close();
    await server.stop();
    guest.close();
    device.close();
    tap.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test.run();
