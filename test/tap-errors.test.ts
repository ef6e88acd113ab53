import fs from 'node:fs';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { Tap, socketPair, closeFd, sendFds, receiveTapQueues } from '../src';
import { assertPrivateNetns, failsWith, fdCount, uniqueName } from './helpers/system';

assertPrivateNetns();

test('a name longer than 15 bytes, or not a valid interface name, is EINVAL', () => {
  failsWith('EINVAL', () => Tap.create({ name: 'a'.repeat(16), queues: 1 }), /at most 15 bytes/);
  failsWith('EINVAL', () => Tap.create({ name: 'é'.repeat(8), queues: 1 }), /16 bytes/);
  failsWith('EINVAL', () => Tap.create({ name: 'bad/name', queues: 1 }));
  failsWith('EINVAL', () => Tap.create({ name: '', queues: 1 }));
});

test('0, 257 or a fractional number of queues is EINVAL', () => {
  failsWith('EINVAL', () => Tap.create({ name: uniqueName('vte'), queues: 0 }), /1 to 256/);
  failsWith('EINVAL', () => Tap.create({ name: uniqueName('vte'), queues: 257 }), /1 to 256/);
  failsWith('EINVAL', () => Tap.create({ name: uniqueName('vte'), queues: 1.5 }));
});

test('bad vnet header size, mtu, mac, owner are EINVAL', () => {
  failsWith('EINVAL', () => Tap.create({ name: uniqueName('vte'), queues: 1, vnetHdrSize: 11 as 12 }));
  failsWith('EINVAL', () => Tap.create({ name: uniqueName('vte'), queues: 1, mtu: 10 }));
  failsWith('EINVAL', () => Tap.create({ name: uniqueName('vte'), queues: 1, mac: '01:00:5e:00:00:01' }), /multicast/);
  failsWith('EINVAL', () => Tap.create({ name: uniqueName('vte'), queues: 1, mac: 'nope' }));
  failsWith('EINVAL', () => Tap.create({ name: uniqueName('vte'), queues: 1, owner: -1 }));
});

test('a taken name is EBUSY and closes every fd it opened', () => {
  const tap = Tap.create({ name: uniqueName('vtb'), queues: 2 });
  try {
    failsWith('EBUSY', () => Tap.create({ name: tap.name, queues: 4 }), /already exists/);
    failsWith('EBUSY', () => Tap.create({ name: 'lo', queues: 1 }));
  } finally {
    tap.close();
  }
});

test('a failure after some queues were opened closes them all (the 257th queue of a device)', () => {
  const name = uniqueName('vtl');
  const tap = Tap.create({ name, queues: 200, persist: true });
  try {
    // 200 + 100 > 256: the kernel refuses queue 57 of the open; the 56 opened before it must be closed.
    failsWith('E2BIG', () => Tap.open(name, { queues: 100 }), /256 queues/);
  } finally {
    tap.destroy();
  }
});

test('Tap.open of a missing device is ENOENT; of a non-tap device EINVAL', () => {
  failsWith('ENOENT', () => Tap.open(uniqueName('vtn'), { queues: 1 }), /Tap.create/);
  failsWith('EINVAL', () => Tap.open('lo', { queues: 1 }));
});

test('fromFds: an fd that is not a tap queue is EINVAL, a closed fd EBADF, another device\'s queue EINVAL', () => {
  const nullFd = fs.openSync('/dev/null', 'r');
  try {
    failsWith('EINVAL', () => Tap.fromFds('vtx0', [nullFd]), /not a tap queue/);
  } finally {
    fs.closeSync(nullFd);
  }
  failsWith('EBADF', () => Tap.fromFds('vtx0', [987_654]));
  failsWith('EINVAL', () => Tap.fromFds('vtx0', []));
  const tap = Tap.create({ name: uniqueName('vtf'), queues: 1 });
  try {
    failsWith('EINVAL', () => Tap.fromFds('othername', [tap.queues[0]!.fd]), /is a queue of/);
  } finally {
    tap.close();
  }
});

test('using a closed tap is EBADF', () => {
  const tap = Tap.create({ name: uniqueName('vtz'), queues: 1 });
  const queue = tap.queues[0]!;
  tap.close();
  tap.close();
  failsWith('EBADF', () => queue.detach());
  failsWith('EBADF', () => tap.setOffload({ csum: true }));
});

test('receiveTapQueues closes the fds of a message that is not a handover', async () => {
  const [a, b] = socketPair();
  const tap = Tap.create({ name: uniqueName('vth'), queues: 2 });
  try {
    const before = fdCount();
    sendFds(a, tap.queues.map((q) => q.fd), Buffer.from('{"not":"a handover"}'));
    let caught: (Error & { code?: string }) | undefined;
    try {
      await receiveTapQueues(b, 5000);
    } catch (error) {
      caught = error as Error & { code?: string };
    }
    assert.is(caught?.code, 'EINVAL');
    assert.is(fdCount(), before);
  } finally {
    tap.close();
    closeFd(a);
    closeFd(b);
  }
});

test.run();
