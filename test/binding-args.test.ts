// The addon's raw bindings (src/native.ts) take numbers from JS unchecked by the
// TS layer above them. Each one is checked the one way (native/addon/args.h): a
// number, an integer, in its range; anything else is EINVAL (EBADF for an fd),
// never cast first. A cast would wrap: 2^32 + 16 is a 16-entry ring to a uint32_t,
// 2^32 + 3 is fd 3 to an int, and NaN or -1 cast to an unsigned is undefined.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { Tap } from '../src';
import { native, type NativeQueueRing } from '../src/native';
import { EventFd } from '../src/virtio/eventfd';
import { GuestMemory } from '../src/virtio/guest-memory';
import { assertPrivateNetns, failsWith, uniqueName } from './helpers/system';

assertPrivateNetns();

// A well-formed split ring of 16 at the start of 64 KiB of guest memory.
const RING = { size: 16, descAddr: 0, availAddr: 4096, usedAddr: 8192, lastAvailIdx: 0, packed: false, eventIdx: false, indirectDesc: false };

const BAD_NUMBERS: [string, number][] = [
  ['NaN', NaN], ['-1', -1], ['Infinity', Infinity], ['-Infinity', -Infinity], ['1.5', 1.5],
  ['2^32 + 16 (wraps to 16 as a uint32)', 2 ** 32 + 16], ['2^53', 2 ** 53], ['2^64', 2 ** 64],
];

test('control queue ring config (NativeVirtqueue): NaN, negative, fractional and out-of-range numbers are EINVAL, never wrapped', () => {
  const memory = GuestMemory.allocate(1 << 16);
  try {
    new native.NativeVirtqueue(memory.native, RING).release(); // the well-formed one is taken
    for (const key of ['size', 'descAddr', 'availAddr', 'usedAddr', 'lastAvailIdx', 'usedLogAddr'] as const) {
      for (const [name, value] of BAD_NUMBERS) {
        if (key !== 'size' && key !== 'lastAvailIdx' && value === 2 ** 32 + 16) continue; // an address that may be valid
        failsWith('EINVAL', () => new native.NativeVirtqueue(memory.native, { ...RING, [key]: value }), new RegExp(`^${key} must be an integer from`));
        assert.ok(true, `${key} = ${name}`);
      }
      failsWith('EINVAL', () => new native.NativeVirtqueue(memory.native, { ...RING, [key]: '16' as unknown as number }), new RegExp(`^${key} must be a number`));
    }
    failsWith('EINVAL', () => new native.NativeVirtqueue(memory.native, { ...RING, size: 2 ** 32 + 16 }), /^size must be an integer from 1 to 32768, got 4294967312$/);
    failsWith('EINVAL', () => new native.NativeVirtqueue(memory.native, { ...RING, lastAvailIdx: 65536 }), /^lastAvailIdx must be an integer from 0 to 65535, got 65536$/);
  } finally {
    memory.close();
  }
});

test('queue pair config (NativeQueuePair): fds, sizes and ring numbers out of range are EINVAL, never wrapped', () => {
  const memory = GuestMemory.allocate(1 << 16);
  const kicks = [EventFd.create(), EventFd.create()];
  const [tapFd, peer] = native.socketPair('seqpacket');
  const ring = (kick: EventFd): NativeQueueRing => ({ ...RING, kickFd: kick.fd, callFd: -1 });
  const config = {
    memory: memory.native, tapFd, hdrSize: 12, mergeableRx: false, rxReserveBytes: 0, rxMaxFrameBytes: 0, busyPollUs: 0,
    rx: ring(kicks[0]!), tx: { ...ring(kicks[1]!), descAddr: 16384, availAddr: 20480, usedAddr: 24576 },
  };
  const make = (change: Record<string, unknown>, where?: 'rx' | 'tx') =>
    () => new native.NativeQueuePair((where ? { ...config, [where]: { ...config[where], ...change } } : { ...config, ...change }) as typeof config, () => {});
  try {
    make({})().stop(); // the well-formed one is taken
    for (const [name, value] of BAD_NUMBERS) {
      for (const key of ['tapFd', 'hdrSize', 'rxReserveBytes', 'rxMaxFrameBytes', 'busyPollUs']) {
        failsWith('EINVAL', make({ [key]: value }), new RegExp(`^${key} must be an integer from`));
      }
      for (const key of ['size', 'kickFd', 'callFd', 'lastAvailIdx']) {
        if (key === 'callFd' && value === -1) continue; // -1: no call fd
        failsWith('EINVAL', make({ [key]: value }, 'tx'), new RegExp(`^${key} must be an integer from`));
      }
      assert.ok(true, name);
    }
    // 2^32 + the fd is not the fd.
    failsWith('EINVAL', make({ kickFd: 2 ** 32 + kicks[1]!.fd }, 'tx'), /^kickFd must be an integer from 0 to 2147483647, got 4294967\d+$/);
  } finally {
    for (const k of kicks) k.close();
    native.closeFd(tapFd);
    native.closeFd(peer);
    memory.close();
  }
});

test('plain arguments: a number that would wrap (2^32 + n), NaN or a fraction is refused, not narrowed', () => {
  const [a, b] = native.socketPair('seqpacket');
  try {
    // As an int, 2^32 + b is b: the old check let it through and sent fd b.
    failsWith('EBADF', () => native.sendFds(a, [2 ** 32 + b], Buffer.from('x')), /^fds\[0\] is not a file descriptor$/);
    failsWith('EBADF', () => native.sendFds(a, [b + 0.5], Buffer.from('x')), /^fds\[0\] is not a file descriptor$/);
    failsWith('EBADF', () => native.sendFds(a, [NaN], Buffer.from('x')), /^fds\[0\] is not a file descriptor$/);
    failsWith('EINVAL', () => native.memfdCreate('vt-args', NaN), /^argument 1 must be an integer from/);
    failsWith('EINVAL', () => native.memfdCreate('vt-args', Infinity), /^argument 1 must be an integer from/);
    failsWith('EINVAL', () => native.closeFd(NaN), /^argument 0 must be an integer from/);
    failsWith('EBADF', () => native.closeFd(2 ** 32 + b), /^argument 0 is not a file descriptor$/);
  } finally {
    native.closeFd(a);
    native.closeFd(b);
  }
  const tap = Tap.create({ name: uniqueName('vtarg'), queues: 1, vnetHdrSize: 10 });
  try {
    // As an int, 2^32 + 12 is 12: the header size would have changed.
    failsWith('EINVAL', () => native.tunSetVnetHdrSize(tap.queues[0]!.fd, 2 ** 32 + 12), /^argument 1 must be an integer from -2147483648 to 2147483647, got 4294967308$/);
    assert.is(tap.vnetHdrSize(), 10, 'the header size did not change');
    failsWith('EINVAL', () => native.linkSetMtu(tap.name, 2 ** 32 + 1400), /^argument 1 must be an integer from 0 to 2147483647/);
    failsWith('EINVAL', () => native.linkSetMtu(tap.name, -1), /^argument 1 must be an integer from 0 to 2147483647/);
    assert.is(tap.mtu(), 1500, 'the MTU did not change');
    failsWith('EINVAL', () => native.tunSetOffload(tap.queues[0]!.fd, -1), /^argument 1 must be an integer from 0 to 9007199254740991/);
  } finally {
    tap.close();
  }
});

test.run();
