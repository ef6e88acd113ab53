// VirtioNetDevice, the control plane: the device status machine (virtio 1.x 2.1,
// 3.1.1), feature negotiation (5.1.3.1), config space (5.1.4) and the control
// queue (5.1.6.5), driven by the TS guest over a real tap and guest memory.
import dgram from 'node:dgram';
import fs from 'node:fs';
import os from 'node:os';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { Tap, readTapLinkInfo } from '../src';
import {
  VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK, VIRTIO_NET_CTRL_GUEST_OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET,
  VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, VIRTIO_NET_CTRL_MAC_TABLE_SET, VIRTIO_NET_CTRL_MQ,
  VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_ALLMULTI, VIRTIO_NET_CTRL_RX_PROMISC, VIRTIO_NET_ERR,
  VIRTIO_NET_OK, COMMANDS_PER_TURN, ControlQueue, handleControlCommand, type ControlCommandHandler,
} from '../src/virtio/control-queue';
import {
  STATUS_ACKNOWLEDGE as ACK, STATUS_DEVICE_NEEDS_RESET as NEEDS_RESET, STATUS_DRIVER as DRIVER, STATUS_DRIVER_OK as DRIVER_OK,
  STATUS_FAILED as FAILED, STATUS_FEATURES_OK as FEATURES_OK,
} from '../src/virtio/device-status';
import { native } from '../src/native';
import { hasFeature, resolveRequirements } from '../src/virtio/features';
import { EventFd } from '../src/virtio/eventfd';
import { GuestMemory } from '../src/virtio/guest-memory';
import { VIRTIO_NET_S_ANNOUNCE, VIRTIO_NET_S_LINK_UP } from '../src/virtio/net-config';
import { VirtioNetDevice } from '../src/virtio/net-device';
import type { SplitQueueDriver } from '../src/virtio/driver/split-queue-driver';
import { until, sleep } from '../harness/wait';
import { F, bits, ethtoolFeatures, guestDatagram, hostSocket, numDisabled, receiveTagged, sendTo, seqPayload, threadCount, warmUp, withDevice } from './helpers/device';
import { macBytes } from '../harness/packets';
import { RawRing } from './helpers/raw-ring';
import { assertPrivateNetns, fdCount, run, uniqueName } from './helpers/system';

assertPrivateNetns();

const GUEST_OFFLOADS = bits(F.VIRTIO_NET_F_GUEST_CSUM, F.VIRTIO_NET_F_GUEST_TSO4, F.VIRTIO_NET_F_GUEST_TSO6, F.VIRTIO_NET_F_GUEST_ECN,
  F.VIRTIO_NET_F_GUEST_UFO, F.VIRTIO_NET_F_GUEST_USO4, F.VIRTIO_NET_F_GUEST_USO6);

/** Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK: whether FEATURES_OK stuck (3.1.1 step 6). */
function negotiate(device: VirtioNetDevice, features: bigint): boolean {
  device.writeStatus(0);
  device.writeStatus(ACK);
  device.writeStatus(ACK | DRIVER);
  device.setDriverFeatures(features);
  device.writeStatus(ACK | DRIVER | FEATURES_OK);
  return (device.status & FEATURES_OK) !== 0;
}

const u16 = (n: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n);
  return b;
};
const u64 = (n: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
};

test('status: each illegal write is a protocol-error and leaves the status as it was; FAILED and reset are always allowed', async () => {
  await withDevice({}, async ({ device, events }) => {
    const illegal = (value: number, why: RegExp): void => {
      const before = device.status;
      const errors = events.protocolErrors.length;
      const statuses = events.statuses.length;
      device.writeStatus(value);
      assert.is(device.status, before, `0x${value.toString(16)} from 0x${before.toString(16)} must not change the status`);
      assert.is(events.protocolErrors.length, errors + 1, `0x${value.toString(16)} from 0x${before.toString(16)} is a protocol error`);
      assert.match(events.protocolErrors.at(-1)!, why);
      assert.is(events.statuses.length, statuses, 'an ignored write raises no status event');
    };
    const legal = (value: number): void => {
      const errors = events.protocolErrors.length;
      device.writeStatus(value);
      assert.is(device.status, value);
      assert.is(events.statuses.at(-1), value);
      assert.is(events.protocolErrors.length, errors, `0x${value.toString(16)} is legal`);
    };

    assert.is(device.status, 0);
    illegal(DRIVER, /DRIVER without ACKNOWLEDGE/);
    illegal(ACK | FEATURES_OK, /FEATURES_OK without DRIVER/);
    illegal(ACK | DRIVER | DRIVER_OK, /DRIVER_OK without FEATURES_OK/);
    illegal(ACK | NEEDS_RESET, /NEEDS_RESET/);
    illegal(0x100 | ACK, /not a byte/);
    legal(ACK);
    illegal(ACK | FEATURES_OK, /FEATURES_OK without DRIVER/);
    illegal(DRIVER, /may not clear/);
    legal(ACK | DRIVER);
    illegal(ACK, /may not clear/);
    illegal(ACK | DRIVER | DRIVER_OK, /DRIVER_OK without FEATURES_OK/);
    illegal(ACK | DRIVER | NEEDS_RESET, /NEEDS_RESET/);
    illegal(ACK | DRIVER | 0x10, /reserved/);

    const accepted = bits(F.VIRTIO_F_VERSION_1, F.VIRTIO_NET_F_MAC);
    device.setDriverFeatures(accepted);
    legal(ACK | DRIVER | FEATURES_OK);
    assert.is(device.driverFeatures, accepted);
    illegal(ACK | DRIVER, /may not clear/);
    illegal(ACK | FEATURES_OK, /may not clear/);
    illegal(ACK | DRIVER | FEATURES_OK | NEEDS_RESET, /NEEDS_RESET/);

    // Features written after FEATURES_OK are ignored (3.1.1: they are fixed from here on).
    const errors = events.protocolErrors.length;
    device.setDriverFeatures(accepted | bits(F.VIRTIO_NET_F_MRG_RXBUF));
    assert.is(device.driverFeatures, accepted, 'features changed after FEATURES_OK');
    assert.is(events.protocolErrors.length, errors + 1);
    assert.match(events.protocolErrors.at(-1)!, /after FEATURES_OK/);
    assert.is(device.status, ACK | DRIVER | FEATURES_OK);

    legal(ACK | DRIVER | FEATURES_OK | FAILED); // giving up is allowed at any point
    illegal(ACK | DRIVER | FEATURES_OK, /may not clear/);

    const statuses = events.statuses.length;
    device.writeStatus(0);
    assert.is(device.status, 0);
    assert.is(device.driverFeatures, 0n, 'reset forgets the driver features');
    assert.is(events.statuses.length, statuses + 1);
    assert.is(events.statuses.at(-1), 0);
    assert.is(device.describeStatus(), 'RESET');
    // After the reset the machine starts over: DRIVER without ACKNOWLEDGE is wrong again, ACKNOWLEDGE right.
    illegal(DRIVER, /DRIVER without ACKNOWLEDGE/);
    legal(ACK);
  });
});

test('status: the legal sequence of 3.1.1 brings the device up; writeStatus(0) stops it', async () => {
  await withDevice({ queues: 2 }, async ({ device, events, tap, bringUp }) => {
    // A guest that can drive packed rings (and RSS, offered with the steering program) takes every
    // bit; one that cannot leaves RING_PACKED alone.
    const guest = bringUp({ ringPacked: true, rss: true });
    assert.equal(events.statuses, [0, ACK, ACK | DRIVER, ACK | DRIVER | FEATURES_OK, ACK | DRIVER | FEATURES_OK | DRIVER_OK]);
    assert.is(events.protocolErrors.length, 0, events.protocolErrors.join('; '));
    assert.is(device.status, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    assert.is(device.describeStatus(), 'ACKNOWLEDGE|DRIVER|FEATURES_OK|DRIVER_OK');
    assert.is(device.driverFeatures, guest.features);
    assert.is(guest.features, device.offeredFeatures, 'the guest took everything offered');
    const stats = device.stats();
    assert.is(stats.activeQueuePairs, 1, '5.1.6.5.5: one pair until the driver sets more');
    assert.equal(stats.pairs.map((p) => p.running), [true, false]);
    assert.is(numDisabled(tap), 1);
    assert.is(events.queueErrors.length, 0);

    device.writeStatus(0);
    assert.is(device.status, 0);
    assert.equal(device.stats().pairs.map((p) => p.running), [false, false]);
    assert.is(numDisabled(tap), 1);
  });
});

test('features: bits not offered and broken dependencies are refused at FEATURES_OK (read back without it)', async () => {
  await withDevice({ queues: 2 }, async ({ device, events }) => {
    const offered = device.offeredFeatures;
    assert.ok(negotiate(device, offered), 'everything offered is accepted');
    assert.is(device.status, ACK | DRIVER | FEATURES_OK);

    for (const extra of [F.VIRTIO_NET_F_CTRL_VLAN, 40, 63]) {
      assert.not.ok(hasFeature(offered, extra), `bit ${extra} is not offered`);
      const errors = events.protocolErrors.length;
      assert.not.ok(negotiate(device, offered | bits(extra)), `bit ${extra} not offered, yet FEATURES_OK stuck`);
      assert.is(device.status, ACK | DRIVER, 'read back: FEATURES_OK is clear, the rest as written');
      assert.is(events.protocolErrors.length, errors + 1);
      assert.match(events.protocolErrors.at(-1)!, /not offered/);
    }

    // Each: the feature, then a set that meets its requirement (5.1.3.1).
    const dependencies: [number, ...number[]][] = [
      [F.VIRTIO_NET_F_GUEST_TSO4, F.VIRTIO_NET_F_GUEST_CSUM],
      [F.VIRTIO_NET_F_GUEST_ECN, F.VIRTIO_NET_F_GUEST_TSO6, F.VIRTIO_NET_F_GUEST_CSUM],
      [F.VIRTIO_NET_F_HOST_ECN, F.VIRTIO_NET_F_HOST_TSO4, F.VIRTIO_NET_F_CSUM],
      [F.VIRTIO_NET_F_GUEST_TSO6, F.VIRTIO_NET_F_GUEST_CSUM],
      [F.VIRTIO_NET_F_GUEST_USO4, F.VIRTIO_NET_F_GUEST_CSUM],
      [F.VIRTIO_NET_F_HOST_TSO4, F.VIRTIO_NET_F_CSUM],
      [F.VIRTIO_NET_F_HOST_USO, F.VIRTIO_NET_F_CSUM],
      [F.VIRTIO_NET_F_MQ, F.VIRTIO_NET_F_CTRL_VQ],
      [F.VIRTIO_NET_F_RSS, F.VIRTIO_NET_F_CTRL_VQ],
      [F.VIRTIO_NET_F_CTRL_RX, F.VIRTIO_NET_F_CTRL_VQ],
      [F.VIRTIO_NET_F_GUEST_ANNOUNCE, F.VIRTIO_NET_F_CTRL_VQ],
      [F.VIRTIO_NET_F_CTRL_MAC_ADDR, F.VIRTIO_NET_F_CTRL_VQ],
      [F.VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, F.VIRTIO_NET_F_CTRL_VQ],
    ];
    for (const [feature, ...needs] of dependencies) {
      assert.ok(hasFeature(offered, feature) && needs.every((n) => hasFeature(offered, n)), `${feature} and ${needs.join(', ')} are offered`);
      const errors = events.protocolErrors.length;
      // Without the first of `needs`: what is left does not meet the requirement.
      assert.not.ok(negotiate(device, bits(F.VIRTIO_F_VERSION_1, feature, ...needs.slice(1))), `feature ${feature} without ${needs[0]} was accepted`);
      assert.is(device.status, ACK | DRIVER);
      assert.match(events.protocolErrors.at(-1)!, new RegExp(`\\(bit ${feature}\\) needs`));
      assert.is(events.protocolErrors.length, errors + 1);
      assert.ok(negotiate(device, bits(F.VIRTIO_F_VERSION_1, feature, ...needs)), `feature ${feature} with ${needs.join(', ')} was refused`);
      assert.is(device.driverFeatures, bits(F.VIRTIO_F_VERSION_1, feature, ...needs));
      assert.is(device.activeFeatures, device.driverFeatures, 'a driver\'s accepted set is used as it is');
    }
    // Everything offered minus the dependency of one of them: refused too.
    assert.not.ok(negotiate(device, offered & ~bits(F.VIRTIO_NET_F_GUEST_CSUM)));
  });
});

test('features negotiated by a frontend (negotiatedBy "frontend"): offloads without their base are accepted and stay off; the tap and the data path follow', async () => {
  await withDevice({ address: true }, async ({ device, events, tap, bringUp, hostMac }) => {
    const inactive: { features: bigint; reasons: string[] }[] = [];
    device.on('features-inactive', (e) => inactive.push(e));
    const k = (): Record<string, string> => ethtoolFeatures(tap.name);
    const bases = bits(F.VIRTIO_NET_F_CSUM, F.VIRTIO_NET_F_GUEST_CSUM);
    const dependents = bits(F.VIRTIO_NET_F_GUEST_TSO4, F.VIRTIO_NET_F_GUEST_TSO6, F.VIRTIO_NET_F_GUEST_ECN, F.VIRTIO_NET_F_GUEST_UFO,
      F.VIRTIO_NET_F_GUEST_USO4, F.VIRTIO_NET_F_GUEST_USO6, F.VIRTIO_NET_F_HOST_TSO4, F.VIRTIO_NET_F_HOST_TSO6, F.VIRTIO_NET_F_HOST_ECN,
      F.VIRTIO_NET_F_HOST_UFO, F.VIRTIO_NET_F_HOST_USO);
    // What QEMU passes on for csum=off,guest_csum=off: everything else the guest acked.
    const csumOff = device.offeredFeatures & ~bases;
    assert.is(csumOff & dependents, dependents, 'every dependent offload is offered (and so in the set)');

    assert.not.ok(negotiate(device, csumOff), 'a driver\'s set with TSO but no CSUM is still refused (3.1.1, 5.1.3.1)');
    assert.match(events.protocolErrors.at(-1)!, /GUEST_TSO4 \(bit 7\) needs GUEST_CSUM \(bit 1\)/);
    assert.is(inactive.length, 0, 'a refusal reports no inactive features');

    const errors = events.protocolErrors.length;
    device.writeStatus(0);
    device.writeStatus(ACK);
    device.writeStatus(ACK | DRIVER);
    device.setDriverFeatures(csumOff, { negotiatedBy: 'frontend' });
    device.writeStatus(ACK | DRIVER | FEATURES_OK);
    assert.is(device.status, ACK | DRIVER | FEATURES_OK, 'a frontend\'s set is accepted');
    assert.is(events.protocolErrors.length, errors, 'no protocol error');
    assert.is(device.driverFeatures, csumOff, 'driverFeatures: as the frontend wrote them');
    assert.is(device.activeFeatures, csumOff & ~dependents, 'activeFeatures: every offload whose base is missing is off, ECN included');
    assert.is(inactive.length, 1, 'reported once');
    assert.is(inactive[0]!.features, dependents);
    assert.ok(inactive[0]!.reasons.includes('HOST_TSO4 (bit 11) needs CSUM (bit 0)'), inactive[0]!.reasons.join('; '));
    assert.ok(inactive[0]!.reasons.includes('GUEST_ECN (bit 9) needs GUEST_TSO4 (bit 7) or GUEST_TSO6 (bit 8)'), inactive[0]!.reasons.join('; '));
    assert.is(k()['tx-checksumming'], 'off', 'TUNSETOFFLOAD: no partial checksums for a guest without GUEST_CSUM');
    assert.is(k()['tcp-segmentation-offload'], 'off', 'TUNSETOFFLOAD: no TSO frames either');
    device.writeStatus(0);
    assert.is(device.activeFeatures, 0n, 'reset forgets the active set');

    // GUEST_CSUM with ECN but no TSO: partial checksums yes, ECN off (5.1.3.1: it needs TSO4 or TSO6).
    const ecnAlone = bits(F.VIRTIO_F_VERSION_1, F.VIRTIO_NET_F_GUEST_CSUM, F.VIRTIO_NET_F_GUEST_ECN);
    assert.not.ok(negotiate(device, ecnAlone), 'refused from a driver');
    device.writeStatus(0);
    device.writeStatus(ACK);
    device.writeStatus(ACK | DRIVER);
    device.setDriverFeatures(ecnAlone, { negotiatedBy: 'frontend' });
    device.writeStatus(ACK | DRIVER | FEATURES_OK);
    assert.is(device.activeFeatures, ecnAlone & ~bits(F.VIRTIO_NET_F_GUEST_ECN));
    assert.equal([k()['tx-checksumming'], k()['tx-tcp-ecn-segmentation']], ['on', 'off']);
    assert.equal(inactive.at(-1), { features: bits(F.VIRTIO_NET_F_GUEST_ECN), reasons: ['GUEST_ECN (bit 9) needs GUEST_TSO4 (bit 7) or GUEST_TSO6 (bit 8)'] });

    // The data path on the csum=off set: the guest gets whole, fully checksummed frames, and its own go out.
    const guest = bringUp({ wantFeatures: csumOff, negotiatedBy: 'frontend' });
    assert.is(device.status & DRIVER_OK, DRIVER_OK);
    const host = await hostSocket(9310);
    try {
      await sendTo(host.socket, Buffer.alloc(4000, 7), 9311); // more than the MTU: the kernel must fragment, not hand over one big frame
      await sendTo(host.socket, seqPayload(77, 0), 9311);
      const frames: { flags: number; gsoType: number; length: number }[] = [];
      const end = Date.now() + 5000;
      while (!frames.some((f) => f.length < 100) && Date.now() < end) {
        for (const r of await guest.driver.receive(0, { timeoutMs: 50 })) {
          if (r.frame.readUInt16BE(12) === 0x0800 && r.frame[23] === 17) frames.push({ flags: r.hdr.flags, gsoType: r.hdr.gsoType, length: r.frame.length });
        }
      }
      assert.ok(frames.length >= 4, `the fragments and the small datagram arrived: ${JSON.stringify(frames)}`);
      for (const f of frames) {
        assert.is(f.flags & 1, 0, `no NEEDS_CSUM for a guest without GUEST_CSUM (5.1.6.4.1): ${JSON.stringify(f)}`);
        assert.is(f.gsoType, 0, `no GSO frame: ${JSON.stringify(f)}`);
        assert.ok(f.length <= 1514, `no frame above the MTU: ${JSON.stringify(f)}`);
      }
      await guest.driver.send(0, guestDatagram({ device, hostMac }, 9311, 9310, seqPayload(78, 0)));
      await until('the guest\'s datagram', () => host.received.length > 0);
    } finally {
      host.close();
    }
    assert.is(events.queueErrors.length, 0);
  });
});

test('features: the options\' mask, the tap and the pair count bound what is offered; USO is offered on this kernel', () => {
  const tap = Tap.create({ name: uniqueName('vdo'), queues: 2 });
  const devices: VirtioNetDevice[] = [];
  try {
    const make = (options: Partial<ConstructorParameters<typeof VirtioNetDevice>[0]>): VirtioNetDevice => {
      devices.at(-1)?.close();
      const device = new VirtioNetDevice({ tap, ...options });
      devices.push(device);
      return device;
    };
    const full = make({}).offeredFeatures;
    for (const bit of [F.VIRTIO_NET_F_GUEST_USO4, F.VIRTIO_NET_F_GUEST_USO6, F.VIRTIO_NET_F_HOST_USO, F.VIRTIO_NET_F_GUEST_TSO4,
      F.VIRTIO_NET_F_GUEST_CSUM, F.VIRTIO_NET_F_MQ, F.VIRTIO_NET_F_CTRL_VQ, F.VIRTIO_F_VERSION_1, F.VIRTIO_NET_F_MRG_RXBUF]) {
      assert.ok(hasFeature(full, bit), `feature ${bit} is offered over a 2-queue tap on Linux ${os.release()}`);
    }
    assert.not.ok(hasFeature(full, F.VIRTIO_NET_F_MTU), 'no MTU offered without the mtu option');
    assert.not.ok(hasFeature(full, F.VIRTIO_NET_F_CTRL_VLAN), 'not implemented, not offered');

    const excluded = bits(F.VIRTIO_NET_F_MRG_RXBUF, F.VIRTIO_NET_F_GUEST_TSO4, F.VIRTIO_NET_F_GUEST_USO4, F.VIRTIO_NET_F_CTRL_VQ,
      F.VIRTIO_NET_F_MQ, F.VIRTIO_RING_F_EVENT_IDX);
    const mask = ((1n << 64n) - 1n) & ~excluded;
    const masked = make({ features: mask }).offeredFeatures;
    assert.is(masked & ~mask, 0n, `offered 0x${masked.toString(16)} has bits the mask 0x${mask.toString(16)} excluded`);
    // 2.2.2: what needs an excluded feature goes with it (CTRL_VQ's commands: CTRL_RX, CTRL_MAC_ADDR, ...).
    assert.is(masked, resolveRequirements(full & mask).usable, 'the mask removes what it excludes and what needs it');
    assert.not.ok(hasFeature(masked, F.VIRTIO_NET_F_CTRL_RX) || hasFeature(masked, F.VIRTIO_NET_F_GUEST_ANNOUNCE), 'no control queue command without CTRL_VQ');
    assert.ok(hasFeature(masked, F.VIRTIO_NET_F_GUEST_TSO6) && hasFeature(masked, F.VIRTIO_NET_F_GUEST_ECN), 'GUEST_ECN stays with GUEST_TSO6');
    assert.not.ok(hasFeature(masked, F.VIRTIO_NET_F_CTRL_VLAN), 'a mask cannot add what is not implemented');

    const onePair = make({ maxQueuePairs: 1 });
    assert.not.ok(hasFeature(onePair.offeredFeatures, F.VIRTIO_NET_F_MQ), 'MQ needs 2 pairs or more');
    assert.is(onePair.numQueues, 3, 'rx, tx, control');
    assert.is(onePair.readConfig(8, 2).readUInt16LE(0), 1);

    const withMtu = make({ mtu: 1400 });
    assert.ok(hasFeature(withMtu.offeredFeatures, F.VIRTIO_NET_F_MTU));
    assert.is(withMtu.readConfig(10, 2).readUInt16LE(0), 1400);

    assert.throws(() => make({ maxQueuePairs: 3 }), (e: Error & { code?: string }) => e.code === 'EINVAL');
    assert.throws(() => make({ mtu: 20 }), (e: Error & { code?: string }) => e.code === 'EINVAL');
  } finally {
    for (const d of devices) d.close();
    tap.close();
  }
});

test('FEATURES_OK sets the tap\'s vnet header size (12 with VERSION_1 or MRG_RXBUF, else 10) and its offloads from the guest offloads', async () => {
  await withDevice({}, async ({ device, tap }) => {
    const V1 = F.VIRTIO_F_VERSION_1;
    for (const [features, size] of [
      [bits(), 10], [bits(V1), 12], [bits(F.VIRTIO_NET_F_GUEST_CSUM), 10], [bits(F.VIRTIO_NET_F_MRG_RXBUF), 12],
      [bits(F.VIRTIO_NET_F_CSUM), 10], [bits(V1, F.VIRTIO_NET_F_MRG_RXBUF), 12],
    ] as const) {
      assert.ok(negotiate(device, features));
      assert.is(tap.vnetHdrSize(), size, `features 0x${features.toString(16)}`);
    }

    const k = (): Record<string, string> => ethtoolFeatures(tap.name);
    const cases: { features: bigint; csum: string; tso: string; tso4: string; tso6: string; uso: string }[] = [
      { features: bits(V1), csum: 'off', tso: 'off', tso4: 'off', tso6: 'off', uso: 'off' },
      { features: bits(V1, F.VIRTIO_NET_F_GUEST_CSUM), csum: 'on', tso: 'off', tso4: 'off', tso6: 'off', uso: 'off' },
      { features: bits(V1, F.VIRTIO_NET_F_GUEST_CSUM, F.VIRTIO_NET_F_GUEST_TSO4), csum: 'on', tso: 'on', tso4: 'on', tso6: 'off', uso: 'off' },
      { features: bits(V1, F.VIRTIO_NET_F_GUEST_CSUM, F.VIRTIO_NET_F_GUEST_TSO6), csum: 'on', tso: 'on', tso4: 'off', tso6: 'on', uso: 'off' },
      { features: bits(V1, F.VIRTIO_NET_F_GUEST_CSUM, F.VIRTIO_NET_F_GUEST_USO4, F.VIRTIO_NET_F_GUEST_USO6), csum: 'on', tso: 'off', tso4: 'off', tso6: 'off', uso: 'on' },
      // USO4 alone cannot be given to the tap (both or neither): the kernel must not segment UDP for this guest.
      { features: bits(V1, F.VIRTIO_NET_F_GUEST_CSUM, F.VIRTIO_NET_F_GUEST_USO4), csum: 'on', tso: 'off', tso4: 'off', tso6: 'off', uso: 'off' },
      // Host offloads are what the guest sends: they give the tap no tx offload.
      { features: bits(V1, F.VIRTIO_NET_F_CSUM, F.VIRTIO_NET_F_HOST_TSO4, F.VIRTIO_NET_F_HOST_USO), csum: 'off', tso: 'off', tso4: 'off', tso6: 'off', uso: 'off' },
      { features: device.offeredFeatures, csum: 'on', tso: 'on', tso4: 'on', tso6: 'on', uso: 'on' },
    ];
    for (const c of cases) {
      assert.ok(negotiate(device, c.features), `features 0x${c.features.toString(16)} accepted`);
      const now = k();
      const label = `features 0x${c.features.toString(16)}: ${JSON.stringify(now)}`;
      assert.is(now['tx-checksumming'], c.csum, label);
      assert.is(now['tcp-segmentation-offload'], c.tso, label);
      assert.is(now['tx-tcp-segmentation'], c.tso4, label);
      assert.is(now['tx-tcp6-segmentation'], c.tso6, label);
      assert.is(now['tx-udp-segmentation'], c.uso, label);
    }
    device.writeStatus(0);
    assert.is(k()['tx-checksumming'], 'off', 'reset takes the offloads back');
    assert.is(k()['tcp-segmentation-offload'], 'off');
  });
});

test('config space: MAC, status with LINK_UP, max_virtqueue_pairs; link changes, announce and its ack, MAC_ADDR_SET, reset', async () => {
  const mac = '52:54:00:ab:cd:ef';
  await withDevice({ queues: 4, device: { mac } }, async ({ device, events, bringUp }) => {
    assert.ok(device.readConfig(0, 6).equals(macBytes(mac)));
    assert.is(device.mac, mac);
    assert.is(device.readConfig(8, 2).readUInt16LE(0), 4);
    assert.is(device.readConfig(6, 2).readUInt16LE(0), VIRTIO_NET_S_LINK_UP);
    assert.ok(device.readConfig(0, 17).subarray(0, 6).equals(macBytes(mac)), 'one read across fields');
    assert.throws(() => device.readConfig(-1, 2), (e: Error & { code?: string }) => e.code === 'EINVAL');

    const g0 = device.configGeneration;
    device.setLinkUp(false);
    assert.is(events.configChanges, 1);
    assert.is(device.readConfig(6, 2).readUInt16LE(0) & VIRTIO_NET_S_LINK_UP, 0);
    assert.is(device.linkUp, false);
    const g1 = device.configGeneration;
    assert.is.not(g1, g0, 'the generation changes with the config');
    device.setLinkUp(false);
    assert.is(events.configChanges, 1, 'no change, no event');
    assert.is(device.configGeneration, g1);
    device.setLinkUp(true);
    assert.is(events.configChanges, 2);
    assert.is(device.readConfig(6, 2).readUInt16LE(0), VIRTIO_NET_S_LINK_UP);

    assert.throws(() => device.announce(), (e: Error & { code?: string }) => e.code === 'EINVAL', 'announce needs GUEST_ANNOUNCE negotiated');
    const guest = bringUp();
    const control = guest.control!;
    assert.ok(hasFeature(guest.features, F.VIRTIO_NET_F_GUEST_ANNOUNCE));
    const changes = events.configChanges;
    const g2 = device.configGeneration;
    device.announce();
    assert.is(events.configChanges, changes + 1);
    assert.is(device.readConfig(6, 2).readUInt16LE(0), VIRTIO_NET_S_LINK_UP | VIRTIO_NET_S_ANNOUNCE);
    assert.is.not(device.configGeneration, g2);
    assert.is(await control.announceAck(), VIRTIO_NET_OK);
    assert.is(device.readConfig(6, 2).readUInt16LE(0), VIRTIO_NET_S_LINK_UP, 'the ack clears ANNOUNCE');
    assert.is(events.configChanges, changes + 2, 'and raises a config change');

    const newMac = macBytes('02:11:22:33:44:55');
    const g3 = device.configGeneration;
    assert.is(await control.setMac(newMac), VIRTIO_NET_OK);
    assert.ok(device.readConfig(0, 6).equals(newMac), `config MAC is ${device.mac}`);
    assert.is(device.mac, '02:11:22:33:44:55');
    assert.is.not(device.configGeneration, g3);
    assert.is(await control.setMac(macBytes('01:00:5e:00:00:01')), VIRTIO_NET_ERR, 'a multicast MAC is refused');
    assert.is(device.mac, '02:11:22:33:44:55');

    device.writeStatus(0);
    assert.ok(device.readConfig(0, 6).equals(macBytes(mac)), 'reset restores the original MAC');
    assert.is(device.readConfig(6, 2).readUInt16LE(0), VIRTIO_NET_S_LINK_UP);
    assert.is(events.queueErrors.length, 0);
  });
});

test('control queue: malformed, unknown and refused commands get ERR or no ack, never break the device; a valid one then gets OK', async () => {
  await withDevice({ queues: 4 }, async ({ device, events, tap, bringUp }) => {
    // Everything but GUEST_ECN, so one offload is offered and not negotiated.
    const guest = bringUp({ wantFeatures: device.offeredFeatures & ~bits(F.VIRTIO_NET_F_GUEST_ECN) });
    assert.ok(hasFeature(device.offeredFeatures, F.VIRTIO_NET_F_GUEST_ECN));
    const c = guest.control!;
    const { MQ, MAC, RX } = { MQ: VIRTIO_NET_CTRL_MQ, MAC: VIRTIO_NET_CTRL_MAC, RX: VIRTIO_NET_CTRL_RX };
    const cases: [string, () => Promise<number>, number][] = [
      ['VQ_PAIRS_SET with 1 data byte', () => c.command(MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, Buffer.from([2])), VIRTIO_NET_ERR],
      ['VQ_PAIRS_SET with 3 data bytes', () => c.command(MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, Buffer.from([2, 0, 0])), VIRTIO_NET_ERR],
      ['VQ_PAIRS_SET with no data', () => c.command(MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET), VIRTIO_NET_ERR],
      ['an unknown class', () => c.command(200, 0, u16(2)), VIRTIO_NET_ERR],
      ['the VLAN class, not offered', () => c.command(2, 0, u16(5)), VIRTIO_NET_ERR],
      ['an unknown MQ command', () => c.command(MQ, 7, u16(2)), VIRTIO_NET_ERR],
      ['an unknown RX command', () => c.command(RX, 9, Buffer.from([1])), VIRTIO_NET_ERR],
      ['an unknown MAC command', () => c.command(MAC, 9, macBytes('02:00:00:00:00:09')), VIRTIO_NET_ERR],
      ['an unknown ANNOUNCE command', () => c.command(VIRTIO_NET_CTRL_ANNOUNCE, 1), VIRTIO_NET_ERR],
      ['0 queue pairs', () => c.setQueuePairs(0), VIRTIO_NET_ERR],
      ['max + 1 queue pairs', () => c.setQueuePairs(5), VIRTIO_NET_ERR],
      ['0xffff queue pairs', () => c.setQueuePairs(0xffff), VIRTIO_NET_ERR],
      ['GUEST_OFFLOADS_SET with an offload not negotiated', () => c.setGuestOffloads(bits(F.VIRTIO_NET_F_GUEST_CSUM, F.VIRTIO_NET_F_GUEST_TSO4, F.VIRTIO_NET_F_GUEST_ECN)), VIRTIO_NET_ERR],
      ['GUEST_OFFLOADS_SET with a bit that is no offload', () => c.setGuestOffloads(bits(F.VIRTIO_NET_F_GUEST_CSUM, F.VIRTIO_NET_F_MQ)), VIRTIO_NET_ERR],
      ['GUEST_OFFLOADS_SET with TSO4 without CSUM', () => c.setGuestOffloads(bits(F.VIRTIO_NET_F_GUEST_TSO4)), VIRTIO_NET_ERR],
      ['GUEST_OFFLOADS_SET with 4 data bytes', () => c.command(VIRTIO_NET_CTRL_GUEST_OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, Buffer.alloc(4)), VIRTIO_NET_ERR],
      ['MAC_ADDR_SET with 5 bytes', () => c.command(MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, Buffer.from([2, 0, 0, 0, 0])), VIRTIO_NET_ERR],
      ['MAC_TABLE_SET claiming 1000 entries', () => c.command(MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, Buffer.from([0xe8, 3, 0, 0])), VIRTIO_NET_ERR],
      ['RX_PROMISC with 2 data bytes', () => c.command(RX, VIRTIO_NET_CTRL_RX_PROMISC, Buffer.from([1, 1])), VIRTIO_NET_ERR],
      ['a request of 1 byte', () => c.command(MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, u16(2), { requestBytes: 1 }), VIRTIO_NET_ERR],
      ['a request cut before its data', () => c.command(MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, u16(2), { requestBytes: 3 }), VIRTIO_NET_ERR],
      ['a chain with no ack byte', () => c.command(MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, u16(2), { ackBytes: 0 }), -1],
      ['a chain with no ack byte asking for 4 pairs', () => c.command(MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, u16(4), { ackBytes: 0 }), -1],
    ];
    for (const [name, send, expected] of cases) {
      assert.is(await send(), expected, name);
      assert.is(device.activeQueuePairs, 1, `${name}: the pair count did not change`);
      assert.is(device.status & NEEDS_RESET, 0, `${name}: the device does not need a reset`);
      assert.is(events.queueErrors.length, 0, `${name}: ${JSON.stringify(events.queueErrors)}`);
    }
    assert.is(numDisabled(tap), 3);
    assert.equal(device.stats().pairs.map((p) => p.running), [true, false, false, false]);
    assert.equal(device.stats().control, { ok: 0, err: cases.length });
    assert.equal(events.queuePairs, []);

    assert.is(await guest.setQueuePairs(2), VIRTIO_NET_OK, 'a valid command after all that');
    assert.is(device.activeQueuePairs, 2);
    assert.is(numDisabled(tap), 2);
    assert.equal(device.stats().control, { ok: 1, err: cases.length });
    assert.is(await c.setRxMode('promisc', false), VIRTIO_NET_OK);
    assert.is(device.rxFilter.promisc, false);
    assert.is(await c.setGuestOffloads(bits(F.VIRTIO_NET_F_GUEST_CSUM)), VIRTIO_NET_OK);
    assert.equal(events.queuePairs, [{ active: 2, previous: 1 }]);
  });
});

test('DRIVER_OK with a ring outside guest memory: a queue-error with code queue-start-failed, and the device needs a reset', async () => {
  await withDevice({}, async ({ device, events, memory }) => {
    assert.ok(negotiate(device, bits(F.VIRTIO_F_VERSION_1)));
    device.setMemory(memory);
    const kick = EventFd.create();
    try {
      for (const index of [0, 1]) {
        device.setQueueSize(index, 256);
        device.setQueueAddresses(index, { descAddr: Math.ceil(memory.size / 4096) * 4096 + (1 << 20), availAddr: 0x1000, usedAddr: 0x2000 });
        device.setQueueKick(index, kick.fd);
        device.enableQueue(index, true);
      }
      device.writeStatus(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
      assert.equal(events.queueErrors.map((e) => [e.pair, e.queue, e.code]), [[0, 'rx', 'queue-start-failed']]);
      assert.match(events.queueErrors[0]!.message, /descriptor table is not inside guest memory/, events.queueErrors[0]!.message);
      assert.ok(device.status & NEEDS_RESET, 'DEVICE_NEEDS_RESET');
    } finally {
      device.writeStatus(0);
      kick.close();
    }
  });
});

test('the tap deleted under a running device: each pair reports tap-error, and a pair taken out of use then reports tap-detach-failed', async () => {
  await withDevice({ queues: 2 }, async ({ device, events, tap, bringUp }) => {
    const guest = bringUp();
    assert.is(await guest.setQueuePairs(2), VIRTIO_NET_OK);
    run('ip', ['link', 'del', 'dev', tap.name]);
    await until('both pairs to see the tap fail', () => events.queueErrors.filter((e) => e.code === 'tap-error').length === 2);
    device.setActiveQueuePairs(1); // the VMM's call: pair 1 stops, its tap queue cannot be detached from a deleted device
    const codes = events.queueErrors.map((e) => [e.pair, e.queue, e.code]);
    assert.equal(codes.filter(([, , code]) => code === 'tap-error').sort(), [[0, 'tap', 'tap-error'], [1, 'tap', 'tap-error']]);
    assert.equal(codes.filter(([, , code]) => code !== 'tap-error'), [[1, 'tap', 'tap-detach-failed']]);
    assert.match(events.queueErrors.find((e) => e.code === 'tap-detach-failed')!.message, /^could not detach tap queue 1: /);
  });
});

test('control queue: a malformed ring breaks it with the fault\'s code (the EPROTO carries it) and the device needs a reset', async () => {
  await withDevice({ queues: 2 }, async ({ device, events, memory, bringUp }) => {
    const guest = bringUp();
    const q = guest.control!.queue as SplitQueueDriver<number>;
    const ring = new RawRing(memory, q.layout, q.kickEvent);
    ring.push(q.size + 3); // an avail entry naming a head past the table
    ring.kick();
    await until('the control queue to break', () => events.queueErrors.length > 0);
    assert.equal(events.queueErrors.map((e) => [e.pair, e.queue, e.code]), [['ctrl', 'ctrl', 'head-out-of-range']]);
    assert.match(events.queueErrors[0]!.message, new RegExp(`^available ring names descriptor ${q.size + 3} of ${q.size}$`));
    assert.ok(device.status & NEEDS_RESET, 'DEVICE_NEEDS_RESET');
  });
});

test('control queue: once stopped it lets go of guest memory at once, not when garbage is collected', async () => {
  // Only a memfd of our own name, mapped by no ArrayBuffer, so the only holders are GuestMemory and the queue.
  const name = uniqueName('vtcq');
  const fd = native.memfdCreate(name, 1 << 16);
  const kickFd = native.eventfdCreate();
  const mapped = (): boolean => fs.readFileSync('/proc/self/maps', 'utf8').includes(`/memfd:${name} `);
  try {
    fs.writeSync(fd, Buffer.from([5, 0]), 0, 2, 4096 + 2); // the available index: 5 chains, all taken before
    const memory = GuestMemory.fromRegions([{ guestPhysAddr: 0, size: 1 << 16, fd }]);
    const ring = { size: 16, descAddr: 0, availAddr: 4096, usedAddr: 8192, kickFd, lastAvailIdx: 5 };
    const refuseAll: ControlCommandHandler = {
      setRxMode: () => false, setMacTable: () => false, setMac: () => false, announceAck: () => false, setQueuePairs: () => false, setGuestOffloads: () => false,
    };
    const control = new ControlQueue(memory, ring, 0n, refuseAll, () => {
      throw new Error('the queue broke');
    });
    control.start();
    memory.close();
    assert.ok(mapped(), 'a running control queue keeps guest memory mapped after GuestMemory.close()');
    await control.stop();
    assert.not.ok(mapped(), 'the stopped queue released it');
    assert.is(control.lastAvailIdx, 5, 'where the ring stopped is still known');
    assert.is(control.drain(), 0, 'a stopped queue answers nothing, and does not break');
    assert.throws(() => control.start(), (e: Error & { code?: string }) => e.code === 'EINVAL');
  } finally {
    native.closeFd(kickFd);
    native.closeFd(fd);
  }
});

test('control queue: a guest that keeps it full cannot hold the event loop: commands are answered a batch per turn', async () => {
  await warmUp();
  const fdsBefore = fdCount();
  const SIZE = 1 << 16;
  const QUEUE = 1024;
  const fd = native.memfdCreate(uniqueName('vtcqfull'), SIZE);
  const kickFd = native.eventfdCreate();
  const memory = GuestMemory.fromRegions([{ guestPhysAddr: 0, size: SIZE, fd }]);
  const ring = { size: QUEUE, descAddr: 0, availAddr: 16384, usedAddr: 20480, kickFd };
  // One chain (VIRTIO_NET_CTRL_RX_PROMISC on, then a byte for its ack), in every slot of
  // the available ring at once: a guest that re-posts a command as fast as it can.
  const COMMAND = 32768;
  memory.bytes(COMMAND, 3).set([VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, 1]);
  const descs = memory.view(0, 32);
  descs.setBigUint64(0, BigInt(COMMAND), true);
  descs.setUint32(8, 3, true);
  descs.setUint16(12, 1, true); // NEXT
  descs.setUint16(14, 1, true);
  descs.setBigUint64(16, BigInt(COMMAND + 256), true);
  descs.setUint32(24, 1, true);
  descs.setUint16(28, 2, true); // WRITE
  memory.view(ring.availAddr + 2, 2).setUint16(0, QUEUE, true); // the ring slots are all head 0 already
  native.eventfdWrite(kickFd);
  let answered = 0;
  const handler: ControlCommandHandler = {
    setRxMode: () => (answered++, true), setMacTable: () => true, setMac: () => true, announceAck: () => true, setQueuePairs: () => true, setGuestOffloads: () => true,
  };
  const control = new ControlQueue(memory, ring, bits(F.VIRTIO_NET_F_CTRL_VQ, F.VIRTIO_NET_F_CTRL_RX), handler, (message) => {
    throw new Error(`the queue broke: ${message}`);
  });
  try {
    let answeredWhenTimerRan = -1;
    setTimeout(() => (answeredWhenTimerRan = answered), 0);
    control.start();
    assert.is(answered, COMMANDS_PER_TURN, `start() answered one batch, not the ${QUEUE} waiting`);
    await until('every command answered', () => answered === QUEUE, 5000);
    assert.ok(answeredWhenTimerRan >= 0 && answeredWhenTimerRan < QUEUE, `a timer ran while commands were still waiting (it saw ${answeredWhenTimerRan} answered)`);
    assert.equal(control.counts, { ok: QUEUE, err: 0 });
    assert.is(memory.view(ring.usedAddr + 2, 2).getUint16(0, true), QUEUE, 'all of them on the used ring');
  } finally {
    await control.stop();
    memory.close();
    native.closeFd(kickFd);
    native.closeFd(fd);
  }
  assert.is(fdCount(), fdsBefore, 'fds back');
});

test('handleControlCommand: a table of malformed, unknown and unnegotiated requests is ERR and reaches no handler; valid ones decode', () => {
  const calls: string[] = [];
  const handler: ControlCommandHandler = {
    setRxMode: (mode, on) => (calls.push(`rx ${mode} ${on}`), true),
    setMacTable: (u, m) => (calls.push(`table ${u.map((x) => x.toString('hex')).join(',')}/${m.map((x) => x.toString('hex')).join(',')}`), true),
    setMac: (mac) => (calls.push(`mac ${mac.toString('hex')}`), true),
    announceAck: () => (calls.push('announce'), true),
    setQueuePairs: (n) => (calls.push(`pairs ${n}`), n >= 1 && n <= 4),
    setGuestOffloads: (o) => (calls.push(`offloads ${o}`), true),
  };
  const all = bits(F.VIRTIO_NET_F_CTRL_VQ, F.VIRTIO_NET_F_CTRL_RX, F.VIRTIO_NET_F_CTRL_MAC_ADDR, F.VIRTIO_NET_F_GUEST_ANNOUNCE,
    F.VIRTIO_NET_F_MQ, F.VIRTIO_NET_F_CTRL_GUEST_OFFLOADS);
  const without = (bit: number): bigint => all & ~bits(bit);
  const req = (cls: number, cmd: number, ...data: (number | Buffer)[]): Buffer =>
    Buffer.concat([Buffer.from([cls, cmd]), ...data.map((d) => (typeof d === 'number' ? Buffer.from([d]) : d))]);
  const u32 = (n: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(n >>> 0);
    return b;
  };
  const m1 = macBytes('02:00:00:00:00:01');
  const malformed: [string, Buffer, bigint][] = [
    ['empty', Buffer.alloc(0), all],
    ['1 byte', Buffer.from([VIRTIO_NET_CTRL_MQ]), all],
    ['unknown class', req(9, 0, u16(1)), all],
    ['class 255', req(255, 255), all],
    ['VLAN class (not implemented)', req(2, 0, u16(1)), all],
    ['RX promisc, no data', req(VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC), all],
    ['RX promisc, 2 bytes', req(VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, 1, 1), all],
    ['RX unknown command', req(VIRTIO_NET_CTRL_RX, 2, 1), all],
    ['RX without CTRL_RX', req(VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_ALLMULTI, 1), without(F.VIRTIO_NET_F_CTRL_RX)],
    ['MAC_ADDR_SET, 5 bytes', req(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, m1.subarray(0, 5)), all],
    ['MAC_ADDR_SET, 7 bytes', req(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, m1, 0), all],
    ['MAC_ADDR_SET without CTRL_MAC_ADDR', req(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, m1), without(F.VIRTIO_NET_F_CTRL_MAC_ADDR)],
    ['MAC unknown command', req(VIRTIO_NET_CTRL_MAC, 2, m1), all],
    ['MAC_TABLE_SET, no data', req(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET), all],
    ['MAC_TABLE_SET, 3-byte count', req(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, Buffer.alloc(3)), all],
    ['MAC_TABLE_SET, 1 entry, no MAC', req(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, u32(1)), all],
    ['MAC_TABLE_SET, no multicast table', req(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, u32(1), m1), all],
    ['MAC_TABLE_SET, trailing byte', req(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, u32(0), u32(0), 0), all],
    ['MAC_TABLE_SET, 0xffffffff entries', req(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, u32(0xffffffff), u32(0)), all],
    ['MAC_TABLE_SET, 1025 entries', req(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, u32(1025), Buffer.alloc(1025 * 6), u32(0)), all],
    ['MAC_TABLE_SET without CTRL_RX', req(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, u32(0), u32(0)), without(F.VIRTIO_NET_F_CTRL_RX)],
    ['ANNOUNCE_ACK with data', req(VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK, 0), all],
    ['ANNOUNCE unknown command', req(VIRTIO_NET_CTRL_ANNOUNCE, 1), all],
    ['ANNOUNCE_ACK without GUEST_ANNOUNCE', req(VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK), without(F.VIRTIO_NET_F_GUEST_ANNOUNCE)],
    ['VQ_PAIRS_SET, no data', req(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET), all],
    ['VQ_PAIRS_SET, 1 byte', req(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 2), all],
    ['VQ_PAIRS_SET, 3 bytes', req(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, u16(2), 0), all],
    ['MQ RSS_CONFIG (not offered)', req(VIRTIO_NET_CTRL_MQ, 1, Buffer.alloc(16)), all],
    ['MQ HASH_CONFIG (not offered)', req(VIRTIO_NET_CTRL_MQ, 2, Buffer.alloc(16)), all],
    ['VQ_PAIRS_SET without MQ', req(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, u16(2)), without(F.VIRTIO_NET_F_MQ)],
    ['GUEST_OFFLOADS_SET, 7 bytes', req(VIRTIO_NET_CTRL_GUEST_OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, Buffer.alloc(7)), all],
    ['GUEST_OFFLOADS_SET, 9 bytes', req(VIRTIO_NET_CTRL_GUEST_OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, Buffer.alloc(9)), all],
    ['GUEST_OFFLOADS unknown command', req(VIRTIO_NET_CTRL_GUEST_OFFLOADS, 1, Buffer.alloc(8)), all],
    ['GUEST_OFFLOADS_SET without CTRL_GUEST_OFFLOADS', req(VIRTIO_NET_CTRL_GUEST_OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, u64(2n)), without(F.VIRTIO_NET_F_CTRL_GUEST_OFFLOADS)],
    ['any command with no features at all', req(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, u16(2)), 0n],
  ];
  for (const [name, request, features] of malformed) {
    assert.is(handleControlCommand(request, features, handler), VIRTIO_NET_ERR, name);
    assert.equal(calls, [], `${name} reached the handler: ${calls.join('; ')}`);
  }

  // Well-formed: OK, and the handler gets exactly what was sent.
  const valid: [Buffer, string, number][] = [
    [req(VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, 0), 'rx promisc false', VIRTIO_NET_OK],
    [req(VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_ALLMULTI, 7), 'rx allmulti true', VIRTIO_NET_OK],
    [req(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, m1), 'mac 020000000001', VIRTIO_NET_OK],
    [req(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, u32(1), m1, u32(0)), 'table 020000000001/', VIRTIO_NET_OK],
    [req(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, u32(0), u32(2), m1, macBytes('01:00:5e:00:00:01')), 'table /020000000001,01005e000001', VIRTIO_NET_OK],
    [req(VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK), 'announce', VIRTIO_NET_OK],
    [req(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, u16(3)), 'pairs 3', VIRTIO_NET_OK],
    [req(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, u16(0x0100)), 'pairs 256', VIRTIO_NET_ERR], // little-endian, refused by the handler
    [req(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, u16(0)), 'pairs 0', VIRTIO_NET_ERR],
    [req(VIRTIO_NET_CTRL_GUEST_OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, u64(0x8000000000000182n)), `offloads ${0x8000000000000182n}`, VIRTIO_NET_OK],
  ];
  for (const [request, call, ack] of valid) {
    calls.length = 0;
    assert.is(handleControlCommand(request, all, handler), ack, call);
    assert.equal(calls, [call]);
  }

  // A handler that throws is the device's bug, not the guest's: still just ERR.
  const throwing: ControlCommandHandler = { ...handler, setQueuePairs: () => { throw new Error('boom'); } };
  assert.is(handleControlCommand(req(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, u16(2)), all, throwing), VIRTIO_NET_ERR);
});

test('CTRL_GUEST_OFFLOADS_SET: turning GUEST_TSO4 off takes TSO off the tap (TUNSETOFFLOAD re-derived), and back on', async () => {
  await withDevice({}, async ({ device, tap, bringUp, events }) => {
    // Without TSO6 and ECN, so TSO4 is the tap's only TCP segmentation offload.
    const guest = bringUp({ wantFeatures: device.offeredFeatures & ~bits(F.VIRTIO_NET_F_GUEST_TSO6, F.VIRTIO_NET_F_GUEST_ECN) });
    const c = guest.control!;
    const offloads = guest.features & GUEST_OFFLOADS;
    assert.ok(hasFeature(offloads, F.VIRTIO_NET_F_GUEST_TSO4) && hasFeature(offloads, F.VIRTIO_NET_F_GUEST_USO4));
    let k = ethtoolFeatures(tap.name);
    assert.is(k['tcp-segmentation-offload'], 'on');
    assert.is(k['tx-checksumming'], 'on');
    assert.is(k['tx-udp-segmentation'], 'on');

    assert.is(await c.setGuestOffloads(offloads & ~bits(F.VIRTIO_NET_F_GUEST_TSO4)), VIRTIO_NET_OK);
    k = ethtoolFeatures(tap.name);
    assert.is(k['tcp-segmentation-offload'], 'off', 'TSO4 turned off by the guest');
    assert.is(k['tx-checksumming'], 'on', 'checksum offload stays');
    assert.is(k['tx-udp-segmentation'], 'on', 'USO stays');

    assert.is(await c.setGuestOffloads(bits(F.VIRTIO_NET_F_GUEST_TSO4)), VIRTIO_NET_ERR, 'TSO4 without CSUM');
    assert.is(ethtoolFeatures(tap.name)['tcp-segmentation-offload'], 'off', 'a refused command changes nothing');

    assert.is(await c.setGuestOffloads(offloads), VIRTIO_NET_OK);
    assert.is(ethtoolFeatures(tap.name)['tcp-segmentation-offload'], 'on');

    assert.is(await c.setGuestOffloads(0n), VIRTIO_NET_OK);
    k = ethtoolFeatures(tap.name);
    assert.is(k['tx-checksumming'], 'off');
    assert.is(k['tcp-segmentation-offload'], 'off');
    assert.is(k['tx-udp-segmentation'], 'off');
    assert.is(events.queueErrors.length, 0);
  });
});

test('reset mid-traffic: workers stop, only tap queue 0 stays attached, threads and fds return, and the device comes up again', async () => {
  await withDevice({ queues: 4, address: true }, async (rig) => {
    const { device, tap } = rig;
    const host = await hostSocket(7300);
    const sender = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => sender.bind(0, resolve));
    try {
      await warmUp();
      await sendTo(sender, seqPayload(0, 0), 7400); // the socket's first send, before counting
      const fdsBefore = fdCount();
      const threadsBefore = threadCount();

      let guest = rig.bringUp();
      assert.is(await guest.setQueuePairs(4), VIRTIO_NET_OK);
      assert.ok(threadCount() >= threadsBefore + 4, `a worker thread per pair (${threadsBefore} -> ${threadCount()})`);
      assert.is(readTapLinkInfo(tap.name).numDisabled, 0);

      let running = true;
      let rxFrames = 0;
      const guestOf = guest;
      const loops = [
        (async () => {
          for (let seq = 0; running; seq++) {
            const burst = [];
            for (let i = 0; i < 32; i++) burst.push(sendTo(sender, seqPayload(1, seq * 32 + i), 7400 + (i % 64) + (seq % 2) * 32));
            await Promise.all(burst);
            await sleep(1);
          }
        })(),
        ...[0, 1, 2, 3].map(async (pair) => {
          while (running) {
            try {
              rxFrames += (await guestOf.driver.receive(pair, { timeoutMs: 20 })).length;
            } catch {
              break; // closed under the receive
            }
          }
        }),
        (async () => {
          for (let seq = 0; running; seq++) {
            const frames = Array.from({ length: 16 }, (_, i) => ({ frame: guestDatagram(rig, 4000, 7300, seqPayload(2, seq * 16 + i)) }));
            try {
              await guestOf.driver.sendBatch(0, frames);
            } catch {
              break; // the device was reset under the send; the guest is closed below
            }
            await sleep(1);
          }
        })(),
      ];
      await until('traffic both ways', () => host.received.length >= 200 && rxFrames >= 200);
      const busy = device.stats().pairs.filter((p) => (p.rx?.packets ?? 0) > 0).length;
      assert.ok(busy >= 2, `frames from the namespace spread over the pairs (${busy} carried some)`);

      device.writeStatus(0);
      assert.is(device.status, 0);
      const stats = device.stats();
      assert.ok(stats.pairs.every((p) => !p.running), JSON.stringify(stats.pairs.map((p) => p.running)));
      assert.ok(stats.pairs.every((p, i) => p.tapAttached === (i === 0)));
      assert.is(stats.activeQueuePairs, 1);
      const link = readTapLinkInfo(tap.name);
      assert.is(link.numDisabled, device.maxQueuePairs - 1, 'only tap queue 0 attached');
      assert.is(link.numQueues, 1);

      running = false;
      guest.close();
      await Promise.all(loops);
      await until('worker threads gone', () => threadCount() <= threadsBefore, 2000).catch(() => undefined);
      assert.is(threadCount(), threadsBefore, 'threads back (the fd poller was made before counting)');
      assert.is(fdCount(), fdsBefore, 'fds back to before the device was started');
      assert.is(rig.events.queueErrors.length, 0, JSON.stringify(rig.events.queueErrors));

      // Up again, on the same memory: traffic both ways.
      guest = rig.bringUp();
      assert.is(device.status, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
      assert.is(await guest.setQueuePairs(4), VIRTIO_NET_OK);
      const sends = [];
      for (let seq = 0; seq < 128; seq++) sends.push(sendTo(sender, seqPayload(3, seq), 7400 + (seq % 64)));
      await Promise.all(sends);
      const { received } = await receiveTagged(guest, [0, 1, 2, 3], 3, 128);
      assert.is(received, 128, 'every datagram reaches the guest after the second bring-up');
      const hostBefore = host.received.length;
      await guest.driver.sendBatch(0, Array.from({ length: 10 }, (_, i) => ({ frame: guestDatagram(rig, 4001, 7300, seqPayload(4, i)) })));
      await until('the guest\'s datagrams', () => host.received.filter((m) => m.readUInt32BE(0) === 4).length === 10);
      assert.ok(host.received.length >= hostBefore + 10);
    } finally {
      sender.close();
      host.close();
    }
  });
});

test.run();
