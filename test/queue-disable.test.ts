// A queue pair the driver stops using gives back what it left on its tx ring:
// vhost-user.rst "Ring states" (a started but disabled ring discards its TX
// packets). Before, the chains stayed there forever, and a Linux guest's socket
// whose packets they held stayed throttled: after ethtool -L 2 -> 1 and a
// migration, the guest -> host iperf3 stream stalled (test/e2e/migration.test.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { readTapLinkInfo } from '../src';
import { withDevice } from './helpers/device';
import { assertPrivateNetns, sleep } from './helpers/system';

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

test.run();
