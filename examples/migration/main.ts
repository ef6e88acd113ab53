// `npm run example:migrate`: a TypeScript VMM live-migrates its guest's
// virtio-net device twice while the guest receives a stream, and every byte
// arrives. In a private network namespace: a bridge (the host, 10.9.0.1) with
// two taps on it, as two hosts' would be; the guest (the package's TS driver)
// starts on a device on the first tap, moves to a new device on the second,
// then back to a third device on the first. The host sends a numbered stream
// over UDP, resending what the guest has not acknowledged, so what is lost in
// flight while the device is stopped comes again; the guest keeps the bytes in
// order. Each hop prints its precopy passes and the downtime.
import dgram from 'node:dgram';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';

import { GuestMemory, Tap, VirtioNetDevice, VirtioNetGuest, features as F, type VirtioNetDeviceOptions } from '../../src';
import { enterPrivateNetns } from '../private-netns';
import { liveMigrate, type MigrationReport } from './live-migrate';
import { PausableLoop } from './vcpu';

enterPrivateNetns();

const HOST_IP = '10.9.0.1';
const GUEST_IP = '10.9.0.2';
const GUEST_MAC = '52:54:00:12:34:56';
const DATA_PORT = 7777;
const ACK_PORT = 7778;
const CHUNK = 1024;
const CHUNKS = 24_000; // 24 MiB
const WINDOW = 128;

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8' });
}

function macOf(ifname: string): Buffer {
  const [link] = JSON.parse(ip('-j', 'link', 'show', 'dev', ifname)) as { address: string }[];
  return Buffer.from(link!.address.split(':').map((h) => parseInt(h, 16)));
}

function chunk(seq: number): Buffer {
  const b = Buffer.alloc(CHUNK);
  b.writeUInt32BE(seq, 0);
  for (let i = 4; i < CHUNK; i += 4) b.writeUInt32BE((Math.imul(seq, 2654435761) + i) >>> 0, i);
  return b;
}

/** The guest's side of the stream: in-order chunks by number, a cumulative ack back to the host. */
class GuestStream {
  next = 0;
  readonly hash = createHash('sha256');
  bytes = 0;

  constructor(private readonly hostMac: Buffer) {}

  /** Takes one received frame; true if it carried stream data. */
  take(frame: Buffer): boolean {
    if (frame.length < 42 || frame.readUInt16BE(12) !== 0x0800 || frame[23] !== 17) return false;
    const ihl = (frame[14]! & 0x0f) * 4;
    const udp = 14 + ihl;
    if (frame.readUInt16BE(udp + 2) !== DATA_PORT) return false;
    const payload = frame.subarray(udp + 8, 14 + frame.readUInt16BE(16));
    if (payload.length !== CHUNK) return false;
    if (payload.readUInt32BE(0) === this.next) {
      this.hash.update(payload);
      this.bytes += payload.length;
      this.next++;
    }
    return true;
  }

  /** UDP (checksum 0: none, as IPv4 allows) from the guest to the host's ack port: the next chunk wanted. */
  ack(): Buffer {
    const frame = Buffer.alloc(14 + 20 + 8 + 4);
    this.hostMac.copy(frame, 0);
    Buffer.from(GUEST_MAC.split(':').map((h) => parseInt(h, 16))).copy(frame, 6);
    frame.writeUInt16BE(0x0800, 12);
    frame[14] = 0x45;
    frame.writeUInt16BE(20 + 8 + 4, 16);
    frame[22] = 64;
    frame[23] = 17;
    Buffer.from(GUEST_IP.split('.').map(Number)).copy(frame, 26);
    Buffer.from(HOST_IP.split('.').map(Number)).copy(frame, 30);
    let sum = 0;
    for (let i = 14; i < 34; i += 2) sum += frame.readUInt16BE(i);
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    frame.writeUInt16BE(~sum & 0xffff, 24);
    frame.writeUInt16BE(ACK_PORT, 34);
    frame.writeUInt16BE(ACK_PORT, 36);
    frame.writeUInt16BE(8 + 4, 38);
    frame.writeUInt32BE(this.next, 42);
    return frame;
  }
}

/** The host's side: sends chunks ahead of the guest's ack by at most WINDOW, resends from the ack when it stalls. */
function startHostSender(): { done: Promise<{ resent: number }>; close(): void } {
  const socket = dgram.createSocket('udp4');
  let acked = 0;
  let sent = 0;
  let resent = 0;
  let lastProgress = Date.now();
  let finish: (v: { resent: number }) => void = () => undefined;
  const done = new Promise<{ resent: number }>((resolve) => { finish = resolve; });
  const pump = (): void => {
    while (sent < Math.min(CHUNKS, acked + WINDOW)) socket.send(chunk(sent++), DATA_PORT, GUEST_IP);
  };
  socket.on('message', (m) => {
    const next = m.readUInt32BE(0);
    if (next > acked) {
      acked = next;
      lastProgress = Date.now();
      if (acked >= CHUNKS) {
        clearInterval(timer);
        finish({ resent });
        return;
      }
      pump();
    }
  });
  const timer = setInterval(() => {
    if (Date.now() - lastProgress < 30) return;
    resent += sent - acked;
    sent = acked; // go back: whatever was in flight is sent again
    lastProgress = Date.now();
    pump();
  }, 10);
  socket.bind(ACK_PORT, HOST_IP, () => pump());
  return { done, close: () => { clearInterval(timer); socket.close(); } };
}

async function main(): Promise<void> {
  ip('link', 'add', 'br0', 'type', 'bridge');
  ip('addr', 'add', `${HOST_IP}/24`, 'dev', 'br0');
  const taps = [Tap.create({ name: 'vtmig0', queues: 1 }), Tap.create({ name: 'vtmig1', queues: 1 })];
  for (const tap of taps) ip('link', 'set', tap.name, 'master', 'br0');
  ip('link', 'set', 'br0', 'up');
  ip('neigh', 'replace', GUEST_IP, 'lladdr', GUEST_MAC, 'dev', 'br0', 'nud', 'permanent');

  // Both hosts' devices take the same options, as migration needs. This guest does not announce
  // itself (no GUEST_ANNOUNCE), so the destination device sends the RARP.
  const deviceOptions = (tap: Tap): VirtioNetDeviceOptions => ({ tap, mac: GUEST_MAC, features: ~(1n << BigInt(F.VIRTIO_NET_F_GUEST_ANNOUNCE)) & ((1n << 64n) - 1n) });
  let memory = GuestMemory.allocate(32 << 20);
  let device = new VirtioNetDevice(deviceOptions(taps[0]!));
  device.setMemory(memory);
  const guest = VirtioNetGuest.bringUp({ device, memory });
  const stream = new GuestStream(macOf('br0'));

  // The guest's vCPU: receive, keep the stream, ack.
  const vcpu = new PausableLoop(async () => {
    const frames = await guest.driver.receive(0, { timeoutMs: 20 });
    let data = false;
    for (const f of frames) data = stream.take(f.frame) || data;
    if (data) await guest.driver.send(0, stream.ack());
  });

  const started = Date.now();
  const sender = startHostSender();
  const hops: { to: string; report: MigrationReport }[] = [];
  for (const [hop, at] of [[1, CHUNKS / 3], [0, (2 * CHUNKS) / 3]] as const) {
    while (stream.next < at) await new Promise((resolve) => setTimeout(resolve, 5));
    const destination = new VirtioNetDevice(deviceOptions(taps[hop]!));
    const source = device;
    const report = await liveMigrate({
      source, sourceMemory: memory, destination, guest,
      pauseGuest: () => vcpu.pause(),
      resumeGuest: () => vcpu.resume(),
    });
    source.close();
    memory.close();
    device = destination;
    memory = report.destinationMemory;
    hops.push({ to: taps[hop]!.name, report });
  }
  const { resent } = await sender.done;
  const seconds = (Date.now() - started) / 1000;
  await vcpu.stop();
  sender.close();

  const expected = createHash('sha256');
  for (let i = 0; i < CHUNKS; i++) expected.update(chunk(i));
  const same = stream.hash.digest('hex') === expected.digest('hex');
  for (const [i, { to, report }] of hops.entries()) {
    console.log(`hop ${i + 1} to a new device on ${to}: pages sent per pass ${report.pagesPerPass.join(' / ')}; ` +
      `device downtime ${report.deviceDowntimeMs} ms, guest paused ${report.guestPausedMs} ms; ` +
      `destination memory ${report.identical ? 'identical to the source\'s' : 'DIFFERENT from the source\'s'}`);
  }
  console.log(`stream: ${stream.bytes} of ${CHUNKS * CHUNK} bytes in order in ${seconds.toFixed(1)} s, sha256 ${same ? 'matches' : 'DIFFERS'}; ${resent} chunks sent again`);

  guest.close();
  device.close();
  memory.close();
  for (const tap of taps) tap.close();
  ip('link', 'del', 'br0');
  if (!same || hops.some((h) => !h.report.identical)) process.exit(1);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
