// The tap steering program (native/addon/bpf/steering.bpf.c): its Toeplitz hash
// against the published RSS verification vectors (Microsoft's "Verifying the
// RSS Hash Calculation", the same table as Intel's 82599 datasheet 7.1.2.8.3),
// run by the kernel itself (BPF_PROG_TEST_RUN); which fields each hash type
// selects; and, attached to a real tap, every frame of every flow arriving on
// the queue the table names.
import dgram from 'node:dgram';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { Tap } from '../src';
import {
  RSS_HASH_TYPE_IPV4, RSS_HASH_TYPE_IPV6, RSS_HASH_TYPE_TCPV4, RSS_HASH_TYPE_TCPV6, RSS_HASH_TYPE_UDPV4, RSS_HASH_TYPE_UDPV6,
  RSS_SUPPORTED_HASH_TYPES, TapSteering, type SteeringTable,
} from '../src/tap/steering';
import { sleep } from '../harness/wait';
import { assertPrivateNetns, drainFrames, run, uniqueName } from './helpers/system';

assertPrivateNetns();

const KEY = Buffer.from('6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa', 'hex');

// [source, source port, destination, destination port, 2-tuple hash, 4-tuple hash]
const IPV4_VECTORS: [string, number, string, number, number, number][] = [
  ['66.9.149.187', 2794, '161.142.100.80', 1766, 0x323e8fc2, 0x51ccc178],
  ['199.92.111.2', 14230, '65.69.140.83', 4739, 0xd718262a, 0xc626b0ea],
  ['24.19.198.95', 12898, '12.22.207.184', 38024, 0xd2d0a5de, 0x5c2b394a],
  ['38.27.205.30', 48228, '209.142.163.6', 2217, 0x82989176, 0xafc7327f],
  ['153.39.163.191', 44251, '202.188.127.2', 1303, 0x5d1809c5, 0x10e828a2],
];
const IPV6_VECTORS: [string, number, string, number, number, number][] = [
  ['3ffe:2501:200:1fff::7', 2794, '3ffe:2501:200:3::1', 1766, 0x2cc18cd5, 0x40207d3d],
  ['3ffe:501:8::260:97ff:fe40:efab', 14230, 'ff02::1', 4739, 0x0f0c461c, 0xdde51bbf],
  ['3ffe:1900:4545:3:200:f8ff:fe21:67cf', 44251, 'fe80::200:f8ff:fe21:67cf', 38024, 0x4b61e985, 0x02d1feef],
];

function ipv6Bytes(address: string): Buffer {
  const [head, tail] = address.split('::') as [string, string | undefined];
  const words = (s: string | undefined): number[] => (s ? s.split(':').map((w) => parseInt(w, 16)) : []);
  const h = words(head);
  const t = words(tail);
  const all = tail === undefined ? h : [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
  const b = Buffer.alloc(16);
  all.forEach((w, i) => b.writeUInt16BE(w, 2 * i));
  return b;
}

/** An Ethernet frame carrying IPv4 or IPv6 with a transport header whose ports are set (the rest zero). */
function frame(src: string, srcPort: number, dst: string, dstPort: number, protocol: number, options: { vlan?: boolean; fragmentOffset?: number } = {}): Buffer {
  const v6 = src.includes(':');
  const l4 = Buffer.alloc(20);
  l4.writeUInt16BE(srcPort, 0);
  l4.writeUInt16BE(dstPort, 2);
  let ip: Buffer;
  if (v6) {
    ip = Buffer.alloc(40);
    ip[0] = 0x60;
    ip.writeUInt16BE(l4.length, 4);
    ip[6] = protocol;
    ip[7] = 64;
    ipv6Bytes(src).copy(ip, 8);
    ipv6Bytes(dst).copy(ip, 24);
  } else {
    ip = Buffer.alloc(20);
    ip[0] = 0x45;
    ip.writeUInt16BE(20 + l4.length, 2);
    ip.writeUInt16BE(options.fragmentOffset ?? 0, 6);
    ip[8] = 64;
    ip[9] = protocol;
    Buffer.from(src.split('.').map(Number)).copy(ip, 12);
    Buffer.from(dst.split('.').map(Number)).copy(ip, 16);
  }
  const ethType = Buffer.alloc(2);
  ethType.writeUInt16BE(v6 ? 0x86dd : 0x0800);
  const macs = Buffer.from('020000000001020000000002', 'hex');
  const vlan = options.vlan ? Buffer.from([0x81, 0x00, 0x00, 0x05]) : Buffer.alloc(0);
  return Buffer.concat([macs, vlan, ethType, ip, l4]);
}

const table = (hashTypes: number, entries: number[] = [0], unclassified = 0): SteeringTable => ({ hashTypes, key: KEY, table: entries, unclassified });
const hashOf = (f: Buffer, hashTypes: number): number => TapSteering.evaluate(f, table(hashTypes), { hashOnly: true });

test('Toeplitz: the published IPv4 vectors, 2-tuple (IPv4) and 4-tuple (TCPv4, UDPv4), computed by the program in the kernel', () => {
  for (const [src, sp, dst, dp, h2, h4] of IPV4_VECTORS) {
    const tcp = frame(src, sp, dst, dp, 6);
    const udp = frame(src, sp, dst, dp, 17);
    assert.is(hashOf(tcp, RSS_HASH_TYPE_IPV4), h2, `${src} -> ${dst}: IPv4`);
    assert.is(hashOf(tcp, RSS_HASH_TYPE_IPV4 | RSS_HASH_TYPE_TCPV4), h4, `${src}:${sp} -> ${dst}:${dp}: TCPv4`);
    assert.is(hashOf(udp, RSS_HASH_TYPE_IPV4 | RSS_HASH_TYPE_UDPV4), h4, 'UDPv4 hashes the same fields');
    // A type not selected falls back to the addresses, or to nothing.
    assert.is(hashOf(udp, RSS_HASH_TYPE_IPV4 | RSS_HASH_TYPE_TCPV4), h2, 'UDP without UDPv4: the addresses only');
    assert.is(hashOf(tcp, RSS_HASH_TYPE_TCPV6 | RSS_HASH_TYPE_IPV6), 0, 'IPv4 with IPv6 types only: no hash');
  }
});

test('Toeplitz: the published IPv6 vectors, 2-tuple (IPv6) and 4-tuple (TCPv6, UDPv6)', () => {
  for (const [src, sp, dst, dp, h2, h4] of IPV6_VECTORS) {
    const tcp = frame(src, sp, dst, dp, 6);
    assert.is(hashOf(tcp, RSS_HASH_TYPE_IPV6), h2, `${src} -> ${dst}: IPv6`);
    assert.is(hashOf(tcp, RSS_HASH_TYPE_IPV6 | RSS_HASH_TYPE_TCPV6), h4, `[${src}]:${sp} -> [${dst}]:${dp}: TCPv6`);
    assert.is(hashOf(frame(src, sp, dst, dp, 17), RSS_HASH_TYPE_UDPV6), h4, 'UDPv6');
  }
});

test('the fields: a VLAN tag is looked through; a non-first IPv4 fragment has no ports; non-IP frames are unclassified', () => {
  const [src, sp, dst, dp, h2, h4] = IPV4_VECTORS[0]!;
  assert.is(hashOf(frame(src, sp, dst, dp, 6, { vlan: true }), RSS_SUPPORTED_HASH_TYPES), h4, 'behind an 802.1Q tag');
  assert.is(hashOf(frame(src, sp, dst, dp, 6, { fragmentOffset: 0x0010 }), RSS_SUPPORTED_HASH_TYPES), h2, 'a fragment at offset 128: addresses only');
  assert.is(hashOf(frame(src, sp, dst, dp, 6, { fragmentOffset: 0x2000 }), RSS_SUPPORTED_HASH_TYPES), h2, 'a first fragment (MF): addresses only');
  const arp = Buffer.concat([Buffer.alloc(12, 0xff), Buffer.from([0x08, 0x06]), Buffer.alloc(28)]);
  assert.is(TapSteering.evaluate(arp, table(RSS_SUPPORTED_HASH_TYPES, [1, 2], 3)), 3, 'ARP goes to the unclassified queue');
  assert.is(TapSteering.evaluate(frame(src, sp, dst, dp, 6), table(0, [1, 2], 3)), 3, 'no hash type selected: unclassified');
  const longHeader = frame(src, sp, dst, dp, 6);
  longHeader[14] = 0x4f; // IHL 15: 60 bytes of IPv4 header, so the ports would be past the end of the frame
  assert.is(hashOf(longHeader, RSS_SUPPORTED_HASH_TYPES), h2, 'a transport header past the end: addresses only, never a fault');
  const v6 = frame(...(IPV6_VECTORS[0]!.slice(0, 4) as [string, number, string, number]), 0);
  v6[14 + 6] = 0; // a hop-by-hop header that is not there (the frame ends inside it)
  assert.is(TapSteering.evaluate(v6.subarray(0, 14 + 40 + 4), table(RSS_SUPPORTED_HASH_TYPES, [1], 2)), 2, 'an extension header cut short: unclassified');
});

test('the indirection table: hash & (entries - 1) picks the entry', () => {
  const entries = Array.from({ length: 128 }, (_, i) => (i * 7) % 13);
  for (const [src, sp, dst, dp, , h4] of IPV4_VECTORS) {
    const q = TapSteering.evaluate(frame(src, sp, dst, dp, 6), table(RSS_SUPPORTED_HASH_TYPES, entries));
    assert.is(q, entries[h4 & 127]);
  }
  const [src, sp, dst, dp, , h4] = IPV6_VECTORS[0]!;
  assert.is(TapSteering.evaluate(frame(src, sp, dst, dp, 6), table(RSS_SUPPORTED_HASH_TYPES, [5, 6, 7, 8])), [5, 6, 7, 8][h4 & 3]);
});

test('attached to a 4-queue tap: every frame of 64 UDP flows arrives on the queue the table names', async () => {
  const tap = Tap.create({ name: uniqueName('vst'), queues: 4, vnetHdrSize: 12 });
  const steering = TapSteering.load();
  const socket = dgram.createSocket('udp4');
  try {
    run('ip', ['addr', 'add', '10.7.0.1/24', 'dev', tap.name]);
    run('ip', ['neigh', 'replace', '10.7.0.2', 'lladdr', '52:54:00:12:34:56', 'dev', tap.name, 'nud', 'permanent']);
    steering.attach(tap);
    // Queues 3 and 1 only, in an uneven table: tun's own hash would use all four.
    const entries = Array.from({ length: 16 }, (_, i) => (i % 4 === 0 ? 1 : 3));
    steering.configure({ hashTypes: RSS_SUPPORTED_HASH_TYPES, key: KEY, table: entries, unclassified: 0 });
    await sleep(50);
    for (const q of tap.queues) drainFrames(q.fd); // router solicitations and the like
    await new Promise<void>((resolve) => socket.bind(0, '10.7.0.1', resolve));
    for (let port = 5000; port < 5064; port++) {
      for (let i = 0; i < 3; i++) await new Promise<void>((resolve, reject) => socket.send(Buffer.from(`flow ${port} #${i}`), port, '10.7.0.2', (e) => (e ? reject(e) : resolve())));
    }
    await sleep(100);
    const perQueue = tap.queues.map((q) => drainFrames(q.fd).map((f) => f.subarray(12)).filter((f) => f.readUInt16BE(12) === 0x0800 && f[23] === 17));
    assert.is(perQueue[0]!.length + perQueue[2]!.length, 0, 'nothing on the queues the table leaves out');
    assert.is(perQueue[1]!.length + perQueue[3]!.length, 64 * 3, 'every datagram on queue 1 or 3');
    for (const [queue, frames] of perQueue.entries()) {
      for (const f of frames) assert.is(TapSteering.evaluate(f, steering.table!), queue, `the program says ${queue} for this frame too`);
    }
    assert.ok(perQueue[1]!.length > 0 && perQueue[3]!.length > 0, 'both queues of the table get flows');
  } finally {
    socket.close();
    steering.close();
    tap.close();
  }
});

test.run();
