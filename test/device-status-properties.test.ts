// The device status machine and feature negotiation of VirtioNetDevice, as a
// transport drives them (writeStatus, setDriverFeatures, setDriverOk, reset), under
// random sequences checked with fast-check against a model written from virtio 1.x:
//
// 2.1.1 "The driver MUST NOT clear a device status bit. If the driver sets the
//   FAILED bit, the driver MUST later reset the device before attempting to
//   re-initialize."  The device ignores (and reports) a write that clears a bit.
// 2.1.2 "The device MUST NOT consume buffers or send any used buffer notifications
//   to the driver before DRIVER_OK. The device MUST initialize device status to 0
//   upon reset. [...] If DRIVER_OK is set, after it sets DEVICE_NEEDS_RESET, the
//   device MUST send a device configuration change notification to the driver."
// 2.2.2 "The device MUST NOT offer a feature which requires another feature which
//   was not offered. The device SHOULD accept any valid subset of features the
//   driver accepts, otherwise it MUST fail to set the FEATURES_OK device status bit
//   when the driver writes it."
// 3.1.1 The order: ACKNOWLEDGE, DRIVER, features, FEATURES_OK ("The driver MUST NOT
//   accept new feature bits after this step"; it re-reads the status to see whether
//   FEATURES_OK stuck), device setup, DRIVER_OK.
// A failure prints fast-check's seed and path; VHOST_TAP_PROPERTY_SEED=<seed> reruns it.
import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { Tap } from '../src';
import {
  STATUS_ACKNOWLEDGE as ACK, STATUS_DEVICE_NEEDS_RESET as NEEDS_RESET, STATUS_DRIVER as DRIVER, STATUS_DRIVER_OK as DRIVER_OK,
  STATUS_FAILED as FAILED, STATUS_FEATURES_OK as FEATURES_OK,
} from '../src/virtio/device-status';
import * as F from '../src/virtio/features';
import { featureBit, resolveRequirements } from '../src/virtio/features';
import { VirtioNetDevice } from '../src/virtio/net-device';
import { VirtioNetGuest } from '../src/virtio/driver/guest';
import { BUFFER_SIZE, allocateGuestMemory, recordEvents, type DeviceEvents } from './helpers/device';
import { assertPrivateNetns, uniqueName } from './helpers/system';

assertPrivateNetns();

/** Every run: the failure's own error in the report, and the seed from the environment when one is given. */
const PARAMS = { includeErrorInReport: true, ...(process.env.VHOST_TAP_PROPERTY_SEED !== undefined ? { seed: Number(process.env.VHOST_TAP_PROPERTY_SEED) } : {}) };

/** The bits a driver sets (2.1); NEEDS_RESET is the device's, 0x10 and 0x20 are reserved. */
const DRIVER_BITS = ACK | DRIVER | FEATURES_OK | DRIVER_OK | FAILED;

const u64Value = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const statusBits = fc.subarray([ACK, DRIVER, FEATURES_OK, DRIVER_OK, FAILED, NEEDS_RESET, 0x10, 0x20]).map((bits) => bits.reduce((a, b) => a | b, 0));

/** Whether virtio 1.x lets a driver write `next` over `current` (2.1.1, 3.1.1), as this test reads the spec. */
function specAllows(current: number, next: number): boolean {
  if (!Number.isInteger(next) || next < 0 || next > 0xff) return false;
  if (current & DRIVER_BITS & ~next) return false; // 2.1.1: a bit the driver set stays set until reset
  if (next & (0x10 | 0x20)) return false; // reserved
  if (next & NEEDS_RESET & ~current) return false; // the device's bit: the driver may only write back what it read
  if (next & FAILED) return true; // the driver may give up at any step
  if (next & DRIVER && !(next & ACK)) return false;
  if (next & FEATURES_OK && !(next & DRIVER)) return false;
  if (next & DRIVER_OK && !(next & FEATURES_OK)) return false;
  return true;
}

/** Whether the device must take these driver features at FEATURES_OK (2.2.2: a valid subset of the offer). */
function validSubset(device: VirtioNetDevice, features: bigint, by: 'driver' | 'frontend'): boolean {
  if (features & ~device.offeredFeatures) return false;
  // A frontend's set is taken as it is (DriverFeaturesOptions): what lacks its requirement stays off.
  return by === 'frontend' || resolveRequirements(features).unmet.length === 0;
}

type Op =
  /** The next bit of 3.1.1's sequence (ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK) the status lacks, added as a driver does. */
  | { kind: 'next' }
  | { kind: 'add'; bits: number }
  | { kind: 'write'; value: number }
  | { kind: 'features'; features: bigint; by: 'driver' | 'frontend' }
  | { kind: 'driverOk' }
  | { kind: 'reset' }
  | { kind: 'bringUp'; wanted: bigint; ringPacked: boolean };

function opArb(offered: bigint): fc.Arbitrary<Op> {
  const subset = u64Value.map((r) => offered & r);
  const features = fc.oneof(
    { weight: 2, arbitrary: subset.map((f) => resolveRequirements(f).usable) }, // valid
    { weight: 1, arbitrary: subset }, // mostly breaking a requirement
    { weight: 1, arbitrary: u64Value }, // mostly not offered
  );
  return fc.oneof(
    { weight: 8, arbitrary: fc.constant<Op>({ kind: 'next' }) },
    { weight: 4, arbitrary: statusBits.map((bits): Op => ({ kind: 'add', bits })) },
    { weight: 2, arbitrary: fc.oneof(statusBits, fc.integer({ min: -1, max: 0x1ff })).map((value): Op => ({ kind: 'write', value })) },
    { weight: 3, arbitrary: fc.record({ features, by: fc.constantFrom<'driver' | 'frontend'>('driver', 'driver', 'frontend') }).map((f): Op => ({ kind: 'features', ...f })) },
    { weight: 1, arbitrary: fc.constant<Op>({ kind: 'driverOk' }) },
    { weight: 1, arbitrary: fc.constant<Op>({ kind: 'reset' }) },
    { weight: 1, arbitrary: fc.record({ wanted: subset, ringPacked: fc.boolean() }).map((b): Op => ({ kind: 'bringUp', ...b })) },
  );
}

/** The value a status-writing op writes over `status`; undefined for the other ops. */
function writtenStatus(op: Op, status: number): number | undefined {
  switch (op.kind) {
    case 'next': {
      const missing = [ACK, DRIVER, FEATURES_OK, DRIVER_OK].find((bit) => !(status & bit));
      return status | (missing ?? 0);
    }
    case 'add':
      return status | op.bits;
    case 'write':
      return op.value;
    default:
      return undefined;
  }
}

function describe(op: Op): string {
  return JSON.stringify(op, (_, v: unknown) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v));
}

test('status and features: under any sequence of status writes, feature writes, resets and bring-ups, the device keeps virtio 1.x 2.1, 2.2 and 3.1', async () => {
  const tap = Tap.create({ name: uniqueName('vds'), queues: 2 });
  const memory = allocateGuestMemory(2);
  const device = new VirtioNetDevice({ tap });
  const events = recordEvents(device);
  let guest: VirtioNetGuest | undefined;
  const counts = { ops: 0, featuresOk: 0, refused: 0, driverOk: 0, running: 0, needsReset: 0, ignored: 0 };
  try {
    const offered = device.offeredFeatures;
    fc.assert(fc.property(fc.array(opArb(offered), { minLength: 8, maxLength: 30 }), (ops) => {
      device.writeStatus(0);
      /** Who wrote the driver features that count (setDriverFeatures' negotiatedBy). */
      let by: 'driver' | 'frontend' = 'driver';
      for (const op of ops) {
        counts.ops++;
        const before = { status: device.status, features: device.driverFeatures, queueErrors: events.queueErrors.length, configChanges: events.configChanges, protocolErrors: events.protocolErrors.length };
        const where = `${describe(op)} from status 0x${before.status.toString(16)}`;
        const written = writtenStatus(op, before.status);
        switch (op.kind) {
          case 'next':
          case 'add':
          case 'write': {
            const value = written!;
            device.writeStatus(value);
            if (value === 0) {
              by = 'driver';
              break; // a reset: checked below
            }
            if (!specAllows(before.status, value)) {
              // 2.1.1: a write the driver may not make changes nothing, and the device says so.
              assert.is(device.status, before.status, `${where}: an illegal write changed the status`);
              assert.ok(events.protocolErrors.length > before.protocolErrors, `${where}: an illegal write went unreported`);
              counts.ignored++;
              break;
            }
            let expected = value | (before.status & NEEDS_RESET);
            const raisesFeaturesOk = (value & FEATURES_OK) !== 0 && !(before.status & FEATURES_OK);
            if (raisesFeaturesOk) {
              // 2.2.2: a valid subset SHOULD be accepted; anything else MUST be refused (read back without FEATURES_OK, 3.1.1).
              if (validSubset(device, before.features, by)) {
                counts.featuresOk++;
              } else {
                expected &= ~(FEATURES_OK | DRIVER_OK);
                counts.refused++;
              }
            }
            assert.is(device.status & ~NEEDS_RESET, expected & ~NEEDS_RESET, `${where}: status 0x${device.status.toString(16)}, expected 0x${expected.toString(16)}`);
            break;
          }
          case 'features':
            device.setDriverFeatures(op.features, { negotiatedBy: op.by });
            if (before.status & FEATURES_OK) {
              // 3.1.1 step 5: no new feature bits once FEATURES_OK is set.
              assert.is(device.driverFeatures, before.features, `${where}: features changed after FEATURES_OK`);
            } else {
              assert.is(device.driverFeatures, op.features, `${where}: the driver's features were not taken as written`);
              by = op.by;
            }
            assert.is(device.status, before.status, `${where}: writing features changed the status`);
            break;
          case 'driverOk': {
            // The vhost-user path: DRIVER_OK with the rings started, or an Error and the status as it was.
            let threw = false;
            try {
              device.setDriverOk();
            } catch {
              threw = true;
            }
            if (threw) assert.is(device.status, before.status, `${where}: a failed setDriverOk changed the status`);
            else assert.is(device.status, before.status | DRIVER_OK, `${where}: setDriverOk`);
            if (!specAllows(before.status, before.status | DRIVER_OK)) assert.ok(threw || before.status & DRIVER_OK, `${where}: DRIVER_OK out of order was taken`);
            break;
          }
          case 'reset':
            device.reset();
            by = 'driver';
            break;
          case 'bringUp': {
            guest?.close();
            guest = undefined;
            const wanted = resolveRequirements(op.wanted | featureBit(F.VIRTIO_F_VERSION_1)).usable;
            // 3.1.1 end to end: the guest's valid subset must be accepted and the device must come up.
            guest = VirtioNetGuest.bringUp({ device, memory, wantFeatures: wanted, ringPacked: op.ringPacked, rxBufferSize: BUFFER_SIZE, txBufferSize: BUFFER_SIZE });
            by = 'driver';
            assert.is(device.status, ACK | DRIVER | FEATURES_OK | DRIVER_OK, `${where}: a valid bring-up`);
            assert.ok(device.stats().pairs[0]!.running, `${where}: pair 0 runs after DRIVER_OK`);
            break;
          }
        }
        checkInvariants(device, events, before, by, where, op.kind === 'reset' || written === 0);
        const { status } = device;
        if (status & DRIVER_OK) counts.driverOk++;
        if (device.stats().pairs.some((p) => p.running)) counts.running++;
        if (status & NEEDS_RESET && !(before.status & NEEDS_RESET)) counts.needsReset++;
      }
    }), { numRuns: 150, ...PARAMS });
    // The sequences reached every corner: accepted and refused features, running queues, NEEDS_RESET.
    assert.ok(counts.featuresOk > 20 && counts.refused > 10 && counts.running > 20 && counts.needsReset > 5 && counts.ignored > 50, JSON.stringify(counts));
    console.log(`    status: ${JSON.stringify(counts)}`);
  } finally {
    device.close();
    guest?.close();
    memory.close();
    tap.close();
  }
});

/** What holds after every step, whatever it was. */
function checkInvariants(
  device: VirtioNetDevice, events: DeviceEvents, before: { status: number; queueErrors: number; configChanges: number },
  by: 'driver' | 'frontend', where: string, reset: boolean,
): void {
  const { status } = device;
  assert.ok(Number.isInteger(status) && status >= 0 && status <= 0xff, `${where}: status ${status} is not a byte`);
  if (reset) {
    // 2.1.2: status 0 upon reset; nothing negotiated.
    assert.is(status, 0, `${where}: reset`);
    assert.is(device.driverFeatures, 0n, `${where}: reset keeps driver features`);
  }
  if (!(status & FAILED)) {
    // 3.1.1's order, read back.
    assert.ok(!(status & DRIVER) || status & ACK, `${where}: DRIVER without ACKNOWLEDGE (0x${status.toString(16)})`);
    assert.ok(!(status & FEATURES_OK) || status & DRIVER, `${where}: FEATURES_OK without DRIVER (0x${status.toString(16)})`);
    assert.ok(!(status & DRIVER_OK) || status & FEATURES_OK, `${where}: DRIVER_OK without FEATURES_OK (0x${status.toString(16)})`);
  }
  if (status & FEATURES_OK) {
    // 2.2.2: what FEATURES_OK accepted is a valid subset of the offer.
    assert.ok(validSubset(device, device.driverFeatures, by), `${where}: FEATURES_OK with features 0x${device.driverFeatures.toString(16)}`);
    assert.is(device.activeFeatures & ~device.driverFeatures, 0n, `${where}: active features beyond the driver's`);
  } else {
    assert.is(device.activeFeatures, 0n, `${where}: active features before FEATURES_OK`);
  }
  if (!(status & DRIVER_OK)) {
    // 2.1.2: no buffer consumed before DRIVER_OK.
    assert.ok(device.stats().pairs.every((p) => !p.running && !p.discardingTx), `${where}: a queue runs without DRIVER_OK`);
  }
  if (status & NEEDS_RESET && !(before.status & NEEDS_RESET)) {
    // 2.1.2: the device sets it on an error of its own, and tells a driver past DRIVER_OK.
    assert.ok(events.queueErrors.length > before.queueErrors, `${where}: NEEDS_RESET with no error behind it`);
    if (status & DRIVER_OK) assert.ok(events.configChanges > before.configChanges, `${where}: NEEDS_RESET without a configuration change notification`);
  }
}

test('offer: whatever mask a VMM restricts the features to, the device never offers a feature without what it requires (2.2.2)', () => {
  const tap = Tap.create({ name: uniqueName('vdo'), queues: 2 });
  try {
    fc.assert(fc.property(u64Value, fc.constantFrom<'device' | 'frontend'>('device', 'frontend'), fc.integer({ min: 1, max: 2 }), (mask, controlQueue, pairs) => {
      const device = new VirtioNetDevice({ tap, features: mask, controlQueue, maxQueuePairs: pairs, steering: 'off' });
      try {
        // A frontend that keeps the control queue provides CTRL_VQ itself (DriverFeaturesOptions).
        const provided = controlQueue === 'frontend' ? featureBit(F.VIRTIO_NET_F_CTRL_VQ) : 0n;
        const { unmet } = resolveRequirements(device.offeredFeatures, provided);
        assert.equal(unmet.map(F.describeRequirement), [], `mask 0x${mask.toString(16)}: offered 0x${device.offeredFeatures.toString(16)}`);
        assert.is(device.offeredFeatures & ~mask, 0n, 'nothing outside the mask is offered');
      } finally {
        device.close();
      }
    }), { numRuns: 200, ...PARAMS });
  } finally {
    tap.close();
  }
});

test.run();
