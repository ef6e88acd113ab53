import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { Tap, readTapLinkInfo } from '../src';
import { assertPrivateNetns, drainFrames, fdCount, run, udpDestPort, uniqueName } from './helpers/system';
import { routeThroughTap, sendFlows } from './helpers/udp';

assertPrivateNetns();

for (const queues of [1, 4, 16]) {
  test(`create a tap with ${queues} queue(s): the kernel agrees on numqueues, vnet_hdr, multi_queue`, () => {
    const tap = Tap.create({ name: uniqueName('vtc'), queues });
    try {
      assert.is(tap.queues.length, queues);
      assert.ok(tap.ifindex > 0);
      const info = readTapLinkInfo(tap.name);
      assert.is(info.ifindex, tap.ifindex);
      assert.is(info.type, 'tap');
      assert.is(info.numQueues, queues);
      assert.is(info.numDisabled, 0);
      assert.is(info.vnetHdr, true);
      assert.is(info.multiQueue, true);
      assert.is(info.pi, false);
      assert.is(info.persist, false);
      assert.is(info.up, true);
      assert.is(tap.vnetHdrSize(), 12);
      assert.ok(tap.queues.every((q) => q.attached));
      assert.is(new Set(tap.queues.map((q) => q.fd)).size, queues);
    } finally {
      tap.close();
    }
    assert.throws(() => readTapLinkInfo(tap.name), (e: { code?: string }) => e.code === 'ENOENT');
  });
}

test('mtu, mac, vnet header size and persistence are applied', () => {
  const tap = Tap.create({ name: uniqueName('vto'), queues: 2, mtu: 9000, mac: '52:54:00:ab:cd:ef', vnetHdrSize: 10, persist: true, owner: 65534, group: 65534 });
  try {
    assert.is(tap.mtu(), 9000);
    assert.is(tap.mac(), '52:54:00:ab:cd:ef');
    assert.is(tap.vnetHdrSize(), 10);
    tap.setVnetHdrSize(12);
    assert.is(tap.vnetHdrSize(), 12);
    const info = readTapLinkInfo(tap.name);
    assert.is(info.persist, true);
    assert.is(info.owner, 65534);
    assert.is(info.group, 65534);
    const features = tap.features();
    assert.ok(features.tap && features.multiQueue && features.vnetHdr && features.noPi);
  } finally {
    tap.destroy();
  }
  assert.throws(() => readTapLinkInfo(tap.name), (e: { code?: string }) => e.code === 'ENOENT');
});

test('a persistent tap outlives its fds, Tap.open adds queues to it, destroy removes it', () => {
  const name = uniqueName('vtp');
  const first = Tap.create({ name, queues: 2, persist: true });
  first.close();
  const closed = readTapLinkInfo(name);
  assert.is(closed.numQueues, 0);
  assert.is(closed.persist, true);
  const again = Tap.open(name, { queues: 3 });
  try {
    assert.is(again.queues.length, 3);
    assert.is(readTapLinkInfo(name).numQueues, 3);
    assert.is(again.ifindex, closed.ifindex);
  } finally {
    again.destroy();
  }
  assert.throws(() => readTapLinkInfo(name), (e: { code?: string }) => e.code === 'ENOENT');
});

test('detach 2 of 4: numdisabled is 2, 64 flows land only on attached queues and none is lost; re-attach spreads over all 4', async () => {
  const tap = Tap.create({ name: uniqueName('vtq'), queues: 4 });
  try {
    routeThroughTap(tap.name, '10.77.0.1', '10.77.0.2');
    for (const q of tap.queues) drainFrames(q.fd); // router solicitations and the like

    tap.queues[1]!.detach();
    tap.queues[3]!.detach();
    assert.is(readTapLinkInfo(tap.name).numDisabled, 2);
    assert.equal(tap.queues.map((q) => q.attached), [true, false, true, false]);

    const ports = Array.from({ length: 64 }, (_, i) => 20_000 + i);
    await sendFlows('10.77.0.2', ports);
    const perQueue = tap.queues.map((q) => drainFrames(q.fd).map((f) => udpDestPort(f)).filter((p): p is number => p !== undefined && p >= 20_000 && p < 20_064));
    assert.is(perQueue[1]!.length, 0, 'detached queue 1 got frames');
    assert.is(perQueue[3]!.length, 0, 'detached queue 3 got frames');
    const seen = [...perQueue[0]!, ...perQueue[2]!].sort((a, b) => a - b);
    assert.equal(seen, ports, 'every flow arrives exactly once on the attached queues');

    tap.queues[1]!.attach();
    tap.queues[3]!.attach();
    assert.is(readTapLinkInfo(tap.name).numDisabled, 0);
    const ports2 = Array.from({ length: 64 }, (_, i) => 30_000 + i);
    await sendFlows('10.77.0.2', ports2);
    const counts = tap.queues.map((q) => drainFrames(q.fd).filter((f) => (udpDestPort(f) ?? 0) >= 30_000).length);
    assert.is(counts.reduce((a, b) => a + b, 0), 64);
    assert.ok(counts.every((c) => c > 0), `all 4 queues carry flows after re-attach: ${counts.join(',')}`);
  } finally {
    tap.close();
  }
});

test('double detach and double attach give EINVAL with a message that says which', () => {
  const tap = Tap.create({ name: uniqueName('vtd'), queues: 2 });
  try {
    assert.throws(() => tap.queues[0]!.attach(), (e: Error & { code?: string }) => e.code === 'EINVAL' && /already attached/.test(e.message));
    tap.queues[0]!.detach();
    assert.throws(() => tap.queues[0]!.detach(), (e: Error & { code?: string }) => e.code === 'EINVAL' && /already detached/.test(e.message));
    assert.is(tap.queues[0]!.probeAttached(), false);
    tap.queues[0]!.attach();
    assert.is(tap.queues[0]!.probeAttached(), true);
    assert.is(readTapLinkInfo(tap.name).numDisabled, 0);
  } finally {
    tap.close();
  }
});

test('offloads set with setOffload show in ethtool -k', () => {
  const tap = Tap.create({ name: uniqueName('vtk'), queues: 1 });
  const features = (): Record<string, string> => Object.fromEntries(
    run('ethtool', ['-k', tap.name]).split('\n').map((l) => l.trim().match(/^([\w-]+): (on|off)/)).filter((m): m is RegExpMatchArray => m !== null).map((m) => [m[1]!, m[2]!]),
  );
  try {
    tap.setOffload({});
    let k = features();
    assert.is(k['tx-checksumming'], 'off');
    assert.is(k['tcp-segmentation-offload'], 'off');
    assert.is(k['tx-udp-segmentation'], 'off');
    tap.setOffload({ csum: true, tso4: true, tso6: true, ecn: true, uso4: true, uso6: true });
    k = features();
    assert.is(k['tx-checksumming'], 'on');
    assert.is(k['tx-tcp-segmentation'], 'on');
    assert.is(k['tx-tcp6-segmentation'], 'on');
    assert.is(k['tx-tcp-ecn-segmentation'], 'on');
    assert.is(k['tx-udp-segmentation'], 'on');
    tap.setOffload({ csum: true });
    k = features();
    assert.is(k['tx-checksumming'], 'on');
    assert.is(k['tx-tcp-segmentation'], 'off');
    assert.is(k['tx-udp-segmentation'], 'off');
    assert.throws(() => tap.setOffload({ tso4: true }), (e: { code?: string }) => e.code === 'EINVAL');
    assert.throws(() => tap.setOffload({ csum: true, uso4: true }), (e: { code?: string }) => e.code === 'EINVAL');
  } finally {
    tap.close();
  }
});

test.run();
