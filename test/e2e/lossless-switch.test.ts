// Queue-count changes lose nothing with a real guest (issue 12): QEMU (TCG) and
// Debian's virtio_net on `vhost-tap serve` with 4 queue pairs; the guest's
// `iperf3 -s` receives UDP from the host's namespace over 16 flows, each with its
// own sequence numbers, first without any change (the baseline: the guest keeps up
// with the rate, 0 lost), then while the guest runs `ethtool -L eth0 combined
// 1 / 2 / 4` 30 times (harness/switch-loss.ts, shared with the bench). With the
// steering program every datagram arrives exactly once. The same run with the
// daemon's --no-steering (tun's own flow hash) and with QEMU's own tap backend
// reports what they lose (not failed: that loss is what the program removes).
// LOSSLESS_E2E_RATE=PPS and LOSSLESS_E2E_CHANGES=N override the rate and the number of changes.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { assertPrivateNetns } from '../helpers/system';
import { seconds } from '../../harness/daemon';
import { describeSwitchRun, switchCounts, switchOnDaemon, switchOnQemuTap, type Phase, type SwitchParams } from '../../harness/switch-loss';

assertPrivateNetns();

const PARAMS: SwitchParams = {
  flows: 16,
  /**
   * Datagrams per second over all flows: half of what the TCG guest's iperf3 was seen to
   * keep up with on a loaded 2-core machine (16000/s, 0 lost in the baseline), so that a
   * busy host does not make the baseline lose.
   */
  rate: Number(process.env.LOSSLESS_E2E_RATE ?? 8000),
  changes: Number(process.env.LOSSLESS_E2E_CHANGES ?? 30),
  baselineMs: 3_000,
};
const { changes: CHANGES, flows: FLOWS } = PARAMS;

/** Every flow: as many received as sent, the highest sequence number the last one sent, no gap. */
function assertWhole(p: Phase, what: string): void {
  const bad = p.flows.map((f, k) => ({ k, ...f })).filter((f) => f.received !== f.sent || f.highest !== f.sent || f.lost !== 0);
  assert.equal(bad, [], `${what}: flows that lost or repeated datagrams (sent, received, highest sequence number, gaps)`);
}

test(`vhost-tap serve with the steering program: ${CHANGES} queue-count changes (ethtool -L) under ${FLOWS} UDP flows, every datagram exactly once`, async () => {
  const t0 = Date.now();
  const r = await switchOnDaemon(true, PARAMS);
  console.log(describeSwitchRun('vhost-tap serve, steering program', r));
  assert.ok(r.steering?.active, `the daemon logged the steering program active: ${JSON.stringify(r.steering)}`);
  assert.ok(r.base.sent > PARAMS.rate * 2, `a real stream in the baseline (${r.base.sent} datagrams)`);
  assertWhole(r.base, 'baseline (no change): the guest keeps up with the rate');
  assert.is(r.failedChanges, 0, 'every ethtool -L succeeded');
  assert.is(r.changes, CHANGES);
  assert.ok(r.daemonChanges! >= CHANGES, `the daemon changed its queue pairs at every ethtool -L (${r.daemonChanges} changes logged)`);
  assert.is(r.daemonActive, switchCounts(CHANGES).at(-1), 'and uses the last count at the end');
  assert.is(r.sw.tapDrops, 0, 'no frame dropped at a full tap queue');
  assertWhole(r.sw, `${CHANGES} changes`);
  console.log(`    (${seconds(t0)})`);
});

test('the same without it (--no-steering) and on QEMU\'s own tap backend: what tun\'s flow hash loses, reported', async () => {
  const t0 = Date.now();
  const off = await switchOnDaemon(false, PARAMS);
  console.log(describeSwitchRun('vhost-tap serve --no-steering', off));
  assert.not.ok(off.steering?.active, 'the daemon logged the steering program off');
  assert.ok(/--no-steering|turned off/.test(off.steering?.reason ?? ''), `the reason says it was turned off: ${off.steering?.reason}`);
  assert.is(off.failedChanges, 0, 'every ethtool -L succeeded');
  assert.ok(off.daemonChanges! >= CHANGES, `the daemon changed its queue pairs at every ethtool -L (${off.daemonChanges} changes logged)`);
  assertWhole(off.base, 'baseline (no change) with --no-steering');
  const qemu = await switchOnQemuTap(PARAMS);
  console.log(describeSwitchRun('QEMU tap backend (tun\'s flow hash)', qemu));
  assertWhole(qemu.base, 'baseline (no change) on QEMU\'s tap backend');
  assert.is(qemu.failedChanges, 0, 'every ethtool -L succeeded');
  console.log(`    (${seconds(t0)})`);
});

test.run();
