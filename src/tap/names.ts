import { makeError } from '../errors';
import { MAX_IFNAME_BYTES, MAX_TAP_QUEUES } from './constants';

/** Checks an interface name as the kernel's dev_valid_name() would, with a message that says how to fix it. */
export function checkInterfaceName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || name.length === 0) {
    throw makeError('EINVAL', 'tap name must be a non-empty string, e.g. "vtap0"');
  }
  const bytes = Buffer.byteLength(name);
  if (bytes > MAX_IFNAME_BYTES) {
    throw makeError('EINVAL', `tap name "${name}" is ${bytes} bytes; Linux interface names are at most ${MAX_IFNAME_BYTES} bytes: choose a shorter name`);
  }
  if (name === '.' || name === '..' || /[\s/:\0]/.test(name)) {
    throw makeError('EINVAL', `tap name "${name}" is not a valid interface name: no "/", ":", whitespace, and not "." or ".."`);
  }
}

/** Checks a queue count against the kernel's limit for one device. */
export function checkQueueCount(queues: unknown): asserts queues is number {
  if (typeof queues !== 'number' || !Number.isInteger(queues) || queues < 1 || queues > MAX_TAP_QUEUES) {
    throw makeError('EINVAL', `queues must be an integer from 1 to ${MAX_TAP_QUEUES} (the kernel's limit per tap), got ${String(queues)}`);
  }
}

/** Parses "52:54:00:12:34:56" (or takes a 6-byte Buffer) into 6 bytes. */
export function parseMac(mac: string | Uint8Array): Buffer {
  if (typeof mac !== 'string') {
    if (mac.length !== 6) throw makeError('EINVAL', `a MAC address is 6 bytes, got ${mac.length}`);
    return Buffer.from(mac);
  }
  const parts = mac.split(':');
  if (parts.length !== 6 || !parts.every((p) => /^[0-9a-fA-F]{2}$/.test(p))) {
    throw makeError('EINVAL', `MAC address "${mac}" must look like 52:54:00:12:34:56`);
  }
  const bytes = Buffer.from(parts.map((p) => parseInt(p, 16)));
  if (bytes[0]! & 1) throw makeError('EINVAL', `MAC address "${mac}" is multicast (lowest bit of the first byte set): use a unicast address such as 52:54:00:...`);
  return bytes;
}

export function formatMac(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(':');
}
