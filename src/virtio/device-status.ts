// Device status field, virtio 1.x section 2.1.

export const STATUS_ACKNOWLEDGE = 1;
export const STATUS_DRIVER = 2;
export const STATUS_DRIVER_OK = 4;
export const STATUS_FEATURES_OK = 8;
export const STATUS_DEVICE_NEEDS_RESET = 64;
export const STATUS_FAILED = 128;

const DRIVER_BITS = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK | STATUS_FEATURES_OK | STATUS_FAILED;

/**
 * Why the driver may not move the status from `current` to `next` (virtio 1.x
 * 2.1.1, 3.1.1), or undefined if it may. Writing 0 (reset) is always allowed.
 */
export function statusTransitionError(current: number, next: number): string | undefined {
  if (next === 0) return undefined;
  if (!Number.isInteger(next) || next < 0 || next > 0xff) return `status ${next} is not a byte`;
  // A driver writes back the status it read with a bit added (Linux's virtio_add_status): a
  // NEEDS_RESET the device set may come back; one it did not set may not.
  if (next & ~DRIVER_BITS & ~(current & STATUS_DEVICE_NEEDS_RESET)) return `the driver may not set DEVICE_NEEDS_RESET or reserved bits (0x${next.toString(16)})`;
  const driverSet = current & DRIVER_BITS;
  if ((next & driverSet) !== driverSet) return `the driver may not clear status bits (0x${current.toString(16)} -> 0x${next.toString(16)}); write 0 to reset`;
  if (next & STATUS_FAILED) return undefined; // giving up is allowed at any point
  if ((next & STATUS_DRIVER) && !(next & STATUS_ACKNOWLEDGE)) return 'DRIVER without ACKNOWLEDGE';
  if ((next & STATUS_FEATURES_OK) && !(next & STATUS_DRIVER)) return 'FEATURES_OK without DRIVER';
  if ((next & STATUS_DRIVER_OK) && !(next & STATUS_FEATURES_OK)) return 'DRIVER_OK without FEATURES_OK';
  return undefined;
}

export function describeStatus(status: number): string {
  const names: [number, string][] = [
    [STATUS_ACKNOWLEDGE, 'ACKNOWLEDGE'], [STATUS_DRIVER, 'DRIVER'], [STATUS_FEATURES_OK, 'FEATURES_OK'],
    [STATUS_DRIVER_OK, 'DRIVER_OK'], [STATUS_DEVICE_NEEDS_RESET, 'NEEDS_RESET'], [STATUS_FAILED, 'FAILED'],
  ];
  const set = names.filter(([bit]) => status & bit).map(([, name]) => name);
  return set.length ? set.join('|') : 'RESET';
}
