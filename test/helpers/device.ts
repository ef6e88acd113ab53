// A VirtioNetDevice over a real tap in this namespace, guest memory, and the TS
// guest (VirtioNetGuest) negotiating with it: the control plane, end to end.
import dgram from 'node:dgram';
import fs from 'node:fs';

import { Tap, readTapLinkInfo } from '../../src';
import { EventFd } from '../../src/virtio/eventfd';
import * as F from '../../src/virtio/features';
import { featureBit } from '../../src/virtio/features';
import { GuestMemory } from '../../src/virtio/guest-memory';
import { VirtioNetDevice, type DeviceQueueError, type QueuePairsChange, type VirtioNetDeviceOptions } from '../../src/virtio/net-device';
import { VirtioNetGuest, type GuestBringUpOptions } from '../../src/virtio/driver/guest';
import { VirtioNetDriver } from '../../src/virtio/driver/net-driver';
import { GUEST_IP, HOST_IP } from './datapath';
import { ethernet, ipv4, macBytes, parseUdp, udp } from '../../harness/packets';
import { run, uniqueName } from './system';

export { GUEST_IP, HOST_IP };

export const bits = (...list: number[]): bigint => list.reduce((mask, bit) => mask | featureBit(bit), 0n);

/** Small buffers, so 4 pairs fit in a few MB of guest memory. */
export const BUFFER_SIZE = 2048;

export function threadCount(): number {
  return fs.readdirSync('/proc/self/task').length;
}

/**
 * The process-wide eventfd poller thread (and its 2 fds) is made on first use and
 * kept; the libuv thread pool likewise. Make both before counting fds or threads.
 */
export async function warmUp(): Promise<void> {
  const warm = EventFd.create();
  await warm.wait(1);
  warm.close();
  await fs.promises.stat('/');
}

/** `ethtool -k` as { feature: 'on' | 'off' }. */
export function ethtoolFeatures(name: string): Record<string, string> {
  return parseEthtoolFeatures(run('ethtool', ['-k', name]));
}

/** The text of `ethtool -k` as { feature: 'on' | 'off' }. */
export function parseEthtoolFeatures(text: string): Record<string, string> {
  return Object.fromEntries(
    text.split('\n').map((l) => l.trim().match(/^([\w-]+): (on|off)/))
      .filter((m): m is RegExpMatchArray => m !== null).map((m) => [m[1]!, m[2]!]),
  );
}

/** Guest memory for a guest of `pairs` pairs with BUFFER_SIZE buffers, its control queue and some room. */
export function allocateGuestMemory(pairs: number, queueSize = 256): GuestMemory {
  const needed = VirtioNetDriver.memoryNeeded({
    queuePairs: pairs, queueSize, rxBufferSize: BUFFER_SIZE, txBufferSize: BUFFER_SIZE,
    features: { version1: true, mergeableRx: true, eventIdx: true, indirectDesc: true },
  });
  return GuestMemory.allocate(needed + (1 << 20));
}

export interface DeviceEvents {
  protocolErrors: string[];
  configChanges: number;
  queueErrors: DeviceQueueError[];
  queuePairs: QueuePairsChange[];
  statuses: number[];
}

export function recordEvents(device: VirtioNetDevice): DeviceEvents {
  const events: DeviceEvents = { protocolErrors: [], configChanges: 0, queueErrors: [], queuePairs: [], statuses: [] };
  device.on('protocol-error', (m) => events.protocolErrors.push(m));
  device.on('config-change', () => events.configChanges++);
  device.on('queue-error', (e) => events.queueErrors.push(e));
  device.on('queue-pairs', (c) => events.queuePairs.push(c));
  device.on('status', (s) => events.statuses.push(s));
  return events;
}

export interface DeviceRig {
  tap: Tap;
  memory: GuestMemory;
  device: VirtioNetDevice;
  events: DeviceEvents;
  /** Brings a guest up (closing the previous one); closed with the rig. */
  bringUp(options?: Omit<GuestBringUpOptions, 'device' | 'memory'>): VirtioNetGuest;
  /** The MAC of the tap, for frames the guest sends to the namespace. */
  hostMac: Buffer;
}

export interface RigOptions {
  queues?: number;
  device?: Omit<VirtioNetDeviceOptions, 'tap' | 'memory'>;
  /** Give the tap HOST_IP and a permanent neighbour GUEST_IP with the device's MAC. Default false. */
  address?: boolean;
}

export async function withDevice(options: RigOptions, body: (rig: DeviceRig) => Promise<void>): Promise<void> {
  const queues = options.queues ?? 1;
  const tap = Tap.create({ name: uniqueName('vdv'), queues });
  let memory: GuestMemory | undefined;
  let device: VirtioNetDevice | undefined;
  let guest: VirtioNetGuest | undefined;
  try {
    memory = allocateGuestMemory(options.device?.maxQueuePairs ?? queues);
    device = new VirtioNetDevice({ tap, ...options.device });
    if (options.address) {
      run('ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', tap.name]);
      run('ip', ['neigh', 'replace', GUEST_IP, 'lladdr', device.mac, 'dev', tap.name, 'nud', 'permanent']);
    }
    const dev = device;
    const mem = memory;
    const rig: DeviceRig = {
      tap, memory, device, events: recordEvents(device), hostMac: macBytes(tap.mac()),
      bringUp: (bringUpOptions = {}) => {
        guest?.close();
        guest = undefined;
        guest = VirtioNetGuest.bringUp({ rxBufferSize: BUFFER_SIZE, txBufferSize: BUFFER_SIZE, ...bringUpOptions, device: dev, memory: mem });
        return guest;
      },
    };
    await body(rig);
  } finally {
    device?.close();
    guest?.close();
    memory?.close();
    tap.close();
  }
}

/** A datagram from the guest to HOST_IP:dstPort, as an Ethernet frame the guest sends. */
export function guestDatagram(rig: { device: VirtioNetDevice; hostMac: Buffer }, srcPort: number, dstPort: number, payload: Buffer): Buffer {
  return ethernet(rig.hostMac, macBytes(rig.device.mac), 0x0800, ipv4(GUEST_IP, HOST_IP, 17, udp(GUEST_IP, HOST_IP, srcPort, dstPort, payload, 'full')));
}

/** A UDP socket bound in the namespace that counts what it receives. */
export async function hostSocket(port: number): Promise<{ socket: dgram.Socket; port: number; received: Buffer[]; close(): void }> {
  const socket = dgram.createSocket('udp4');
  const received: Buffer[] = [];
  socket.on('message', (m) => received.push(m));
  await new Promise<void>((resolve) => socket.bind(port, HOST_IP, resolve));
  return { socket, port, received, close: () => socket.close() };
}

export function sendTo(socket: dgram.Socket, payload: Buffer, port: number, address = GUEST_IP): Promise<void> {
  return new Promise((resolve, reject) => socket.send(payload, port, address, (e) => (e ? reject(e) : resolve())));
}

/** A datagram payload: a tag and a sequence number, so the receiver can tell its own from anything else. */
export function seqPayload(tag: number, seq: number): Buffer {
  const b = Buffer.alloc(16, 0x5a);
  b.writeUInt32BE(tag, 0);
  b.writeUInt32BE(seq, 4);
  return b;
}

/**
 * Receives on `pairs` until every sequence number below `count` with `tag` has
 * arrived (or `timeoutMs` passed); returns how many did, and how many on each pair.
 */
export async function receiveTagged(guest: VirtioNetGuest, pairs: readonly number[], tag: number, count: number, timeoutMs = 5000): Promise<{ received: number; perPair: number[] }> {
  const seen = new Uint8Array(count);
  let received = 0;
  const perPair = pairs.map(() => 0);
  const end = Date.now() + timeoutMs;
  await Promise.all(pairs.map(async (pair, i) => {
    while (received < count && Date.now() < end) {
      for (const r of await guest.driver.receive(pair, { timeoutMs: 50 })) {
        const u = parseUdp(r.frame);
        if (!u || u.payload.length !== 16 || u.payload.readUInt32BE(0) !== tag) continue;
        const seq = u.payload.readUInt32BE(4);
        if (seq < count && !seen[seq]) {
          seen[seq] = 1;
          received++;
          perPair[i]!++;
        }
      }
    }
  }));
  return { received, perPair };
}

/** The used index the device last published on a guest virtqueue, read from guest memory. */
export function usedIdx(memory: GuestMemory, layout: { usedAddr: number }): number {
  return memory.view(layout.usedAddr + 2, 2).getUint16(0, true);
}

/** The kernel's view of which queues are detached. */
export function numDisabled(tap: Tap): number {
  return readTapLinkInfo(tap.name).numDisabled;
}

export { F };
