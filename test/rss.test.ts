// VIRTIO_NET_F_RSS in the embedded device (virtio 1.2 5.1.6.5.7): what is
// offered and when, the config space fields, VIRTIO_NET_CTRL_MQ_RSS_CONFIG parsed
// and validated (each bad configuration is ERR and leaves the steering and the
// pairs in force), frames from the host namespace landing on exactly the receive
// queue the guest's table names for their Toeplitz hash (checked against the
// kernel's program and against a Toeplitz of this test's own), the unclassified
// queue, VQ_PAIRS_SET after RSS (5.1.6.5.5: the last command decides), reset,
// and saveState/restoreState.
import dgram from 'node:dgram';
import net from 'node:net';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { GuestMemory, Tap } from '../src';
import {
  RSS_HASH_TYPE_IPV4, RSS_HASH_TYPE_TCPV4, RSS_HASH_TYPE_TCPV6, RSS_HASH_TYPE_UDPV4, RSS_HASH_TYPE_UDPV6, RSS_SUPPORTED_HASH_TYPES,
  TapSteering, type SteeringTable,
} from '../src/tap/steering';
import {
  VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_HASH_CONFIG, VIRTIO_NET_CTRL_MQ_RSS_CONFIG, VIRTIO_NET_ERR, VIRTIO_NET_OK, handleControlCommand,
  type ControlCommandHandler,
} from '../src/virtio/control-queue';
import { STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK } from '../src/virtio/device-status';
import { encodeRssConfig, type RssSettings } from '../src/virtio/driver/control-queue-driver';
import { VirtioNetGuest } from '../src/virtio/driver/guest';
import { hasFeature } from '../src/virtio/features';
import { VirtioNetDevice, type VirtioNetDeviceState } from '../src/virtio/net-device';
import type { RssConfig } from '../src/virtio/rss';
import { BUFFER_SIZE, F, GUEST_IP, HOST_IP, allocateGuestMemory, bits, sendTo, withDevice, type DeviceRig } from './helpers/device';
import { sleep } from '../harness/wait';
import { assertPrivateNetns, run, uniqueName } from './helpers/system';

assertPrivateNetns();

const PAIRS = 4;
const HOST_IP6 = 'fd00:6::1';
const GUEST_IP6 = 'fd00:6::2';
/** The published RSS verification key (Microsoft's "Verifying the RSS Hash Calculation"). */
const KEY = Buffer.from('6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa', 'hex');
const RSS = F.VIRTIO_NET_F_RSS;

// ---- an independent Toeplitz and frame classifier (virtio 1.2 5.1.6.4.3) ----

/** Toeplitz over `input` with `key` as given: key bits past its end are zero. */
function toeplitz(key: Uint8Array, input: Uint8Array): number {
  const keyBit = (i: number): number => (i < key.length * 8 ? (key[i >> 3]! >> (7 - (i & 7))) & 1 : 0);
  let window = 0;
  for (let i = 0; i < 32; i++) window = ((window << 1) | keyBit(i)) >>> 0;
  let hash = 0;
  for (let i = 0; i < input.length * 8; i++) {
    if ((input[i >> 3]! >> (7 - (i & 7))) & 1) hash = (hash ^ window) >>> 0;
    window = ((window << 1) | keyBit(32 + i)) >>> 0;
  }
  return hash;
}

/**
 * The receive queue the spec gives `frame` under `rss`, computed here without
 * the program: undefined for frames this classifier does not cover (IPv6 with
 * extension headers, IPv4 fragments, VLAN tags).
 */
function specQueue(frame: Buffer, rss: RssSettings): number | undefined {
  const types = rss.hashTypes;
  const unclassified = rss.unclassified ?? 0;
  const pick = (input: Buffer): number => rss.table[toeplitz(rss.key, input) & (rss.table.length - 1)]!;
  const etherType = frame.readUInt16BE(12);
  if (etherType === 0x0800) {
    const ip = frame.subarray(14);
    if (ip.readUInt16BE(6) & 0x3fff) return undefined; // a fragment
    const l4 = ip.subarray((ip[0]! & 0x0f) * 4);
    const addresses = ip.subarray(12, 20);
    const protocol = ip[9]!;
    if ((protocol === 6 && types & RSS_HASH_TYPE_TCPV4) || (protocol === 17 && types & RSS_HASH_TYPE_UDPV4)) {
      return pick(Buffer.concat([addresses, l4.subarray(0, 4)]));
    }
    return types & RSS_HASH_TYPE_IPV4 ? pick(addresses) : unclassified;
  }
  if (etherType === 0x86dd) {
    const ip = frame.subarray(14);
    const next = ip[6]!;
    if (next !== 6 && next !== 17 && next !== 58) return undefined; // an extension header
    const addresses = ip.subarray(8, 40);
    if ((next === 6 && types & RSS_HASH_TYPE_TCPV6) || (next === 17 && types & RSS_HASH_TYPE_UDPV6)) {
      return pick(Buffer.concat([addresses, ip.subarray(40, 44)]));
    }
    return types & (1 << 3) ? pick(addresses) : unclassified;
  }
  if (etherType === 0x8100 || etherType === 0x88a8) return undefined;
  return unclassified;
}

const steeringTable = (rss: RssSettings): SteeringTable => {
  const key = Buffer.alloc(40);
  Buffer.from(rss.key).copy(key);
  return { hashTypes: rss.hashTypes, key, table: [...rss.table], unclassified: rss.unclassified ?? 0 };
};

// ---- traffic from the host namespace ----

interface Landed {
  pair: number;
  frame: Buffer;
}

/** Gives the tap the IPv6 side too: HOST_IP6 on it, GUEST_IP6 a permanent neighbour at the device's MAC. */
function addIpv6(rig: DeviceRig): void {
  run('ip', ['-6', 'addr', 'add', `${HOST_IP6}/64`, 'dev', rig.tap.name, 'nodad']);
  run('ip', ['-6', 'neigh', 'replace', GUEST_IP6, 'lladdr', rig.device.mac, 'dev', rig.tap.name, 'nud', 'permanent']);
}

/** Receives on every pair for `ms`, keeping what arrives and where. */
async function collect(guest: VirtioNetGuest, ms: number): Promise<Landed[]> {
  const landed: Landed[] = [];
  const end = Date.now() + ms;
  await Promise.all(Array.from({ length: guest.driver.queuePairs }, async (_, pair) => {
    while (Date.now() < end) {
      for (const r of await guest.driver.receive(pair, { timeoutMs: 20 })) landed.push({ pair, frame: r.frame });
    }
  }));
  return landed;
}

/** Drains whatever is waiting on every ring (router solicitations and the like). */
async function drain(guest: VirtioNetGuest): Promise<void> {
  await sleep(30);
  for (let pair = 0; pair < guest.driver.queuePairs; pair++) await guest.driver.receive(pair, { timeoutMs: 1 });
}

const udpPort = (f: Buffer): number | undefined => (f.readUInt16BE(12) === 0x0800 && f[23] === 17 ? f.readUInt16BE(36) : undefined);
const isTcpV4 = (f: Buffer): boolean => f.readUInt16BE(12) === 0x0800 && f[23] === 6;
const isUdpV6 = (f: Buffer): boolean => f.readUInt16BE(12) === 0x86dd && f[20] === 17;
const isArp = (f: Buffer): boolean => f.readUInt16BE(12) === 0x0806;

/**
 * Sends, from the namespace to the guest: `udp` IPv4 datagrams over as many
 * destination ports, SYNs of `tcp` TCP connections, `udp6` IPv6 datagrams (if
 * the tap has IPv6), and (with `arp`) datagrams to an address nobody has, so
 * the kernel broadcasts ARP requests. Resolves once they are on their way.
 */
async function sendTraffic(options: { udp?: number; tcp?: number; udp6?: number; arp?: boolean; basePort?: number }): Promise<() => void> {
  const base = options.basePort ?? 7000;
  const cleanups: (() => void)[] = [];
  // Several source ports as well as many destination ports: Toeplitz is linear, and with one
  // source port the low bits of 64 consecutive ports' hashes depend on only 8 bits of the key.
  // 7 of them, so that which one sends is not tied to the destination port's low bits.
  const sockets = await Promise.all(Array.from({ length: 7 }, async () => {
    const socket = dgram.createSocket('udp4');
    cleanups.push(() => socket.close());
    await new Promise<void>((resolve) => socket.bind(0, HOST_IP, resolve));
    return socket;
  }));
  for (let i = 0; i < (options.udp ?? 0); i++) await sendTo(sockets[i % sockets.length]!, Buffer.from(`udp ${i}`), base + i);
  if (options.arp) await sendTo(sockets[0]!, Buffer.from('to nobody'), 9, '10.6.0.77');
  if (options.udp6) {
    const sockets6 = await Promise.all(Array.from({ length: 3 }, async () => {
      const socket6 = dgram.createSocket('udp6');
      cleanups.push(() => socket6.close());
      await new Promise<void>((resolve) => socket6.bind(0, HOST_IP6, resolve));
      return socket6;
    }));
    for (let i = 0; i < options.udp6; i++) await sendTo(sockets6[i % sockets6.length]!, Buffer.from(`udp6 ${i}`), base + 500 + i, GUEST_IP6);
  }
  for (let i = 0; i < (options.tcp ?? 0); i++) {
    const s = net.connect({ host: GUEST_IP, port: base + 1000 + i, localAddress: HOST_IP });
    s.on('error', () => undefined); // nobody answers: the SYNs are all this is for
    cleanups.push(() => s.destroy());
  }
  return () => cleanups.forEach((c) => c());
}

/**
 * Every frame landed on the pair the guest's RSS table names for it: the kernel's
 * program (TapSteering.evaluate, on a program of its own) and this test's own
 * Toeplitz agree with where it went.
 */
function assertSteeredBy(landed: Landed[], rss: RssSettings, label: string): void {
  const table = steeringTable(rss);
  for (const { pair, frame } of landed) {
    const what = `${label}: a ${frame.readUInt16BE(12).toString(16)} frame on pair ${pair}`;
    assert.is(TapSteering.evaluate(frame, table), pair, `${what}: the program says ${TapSteering.evaluate(frame, table)}`);
    const own = specQueue(frame, rss);
    if (own !== undefined) assert.is(own, pair, `${what}: the spec's Toeplitz says ${own}`);
  }
}

const perPair = (landed: Landed[], filter: (f: Buffer) => boolean = () => true): number[] => {
  const counts = new Array<number>(PAIRS).fill(0);
  for (const l of landed) if (filter(l.frame)) counts[l.pair]!++;
  return counts;
};

const same = (a: RssConfig | undefined, b: RssSettings): boolean =>
  a !== undefined && a.hashTypes === b.hashTypes && Buffer.from(a.key).equals(Buffer.from(b.key)) && JSON.stringify(a.table) === JSON.stringify(b.table)
  && a.unclassified === (b.unclassified ?? 0) && a.maxTxVq === b.maxTxVq;

const rssOptions = { queues: PAIRS, address: true } as const;

// ---- what is offered, config space ----

test('offered with the steering program over 2+ pairs (not with it off, one pair, or a frontend\'s control queue); config space: 40, 128, 0x3f after duplex; HASH_REPORT never', async () => {
  await withDevice({ queues: PAIRS }, async ({ device, tap }) => {
    assert.ok(device.stats().steering.active, 'the steering program steers (root in a private netns)');
    assert.ok(hasFeature(device.offeredFeatures, RSS), 'RSS offered');
    assert.not.ok(hasFeature(device.offeredFeatures, F.VIRTIO_NET_F_HASH_REPORT), 'HASH_REPORT not offered: tun cannot put the hash in the vnet header');
    const config = device.readConfig(0, 24);
    assert.is(config.readUInt16LE(8), PAIRS, 'max_virtqueue_pairs');
    assert.is(config.readUInt32LE(12), 0xffffffff, 'speed unknown, as before');
    assert.is(config[16], 0xff, 'duplex unknown, as before');
    assert.is(config[17], 40, 'rss_max_key_size at 17');
    assert.is(config.readUInt16LE(18), 128, 'rss_max_indirection_table_length at 18');
    assert.is(config.readUInt32LE(20), 0x3f, 'supported_hash_types at 20: IPv4, TCPv4, UDPv4, IPv6, TCPv6, UDPv6');
    assert.is(device.readConfig(20, 4).readUInt32LE(0), 0x3f, 'read on its own');

    const others: VirtioNetDevice[] = [];
    try {
      for (const [what, options] of [
        ['steering off', { steering: 'off' as const }],
        ['one pair', { maxQueuePairs: 1 }],
        ['a frontend\'s control queue', { controlQueue: 'frontend' as const }],
      ] as const) {
        const other = new VirtioNetDevice({ tap, ...options });
        others.push(other);
        assert.not.ok(hasFeature(other.offeredFeatures, RSS), `${what}: RSS not offered`);
        assert.equal([...other.readConfig(17, 7)], [0, 0, 0, 0, 0, 0, 0], `${what}: no RSS fields`);
        other.close();
      }
      const masked = new VirtioNetDevice({ tap, steering: 'off', features: ~0n });
      others.push(masked);
      assert.not.ok(hasFeature(masked.offeredFeatures, RSS), 'a features mask cannot bring RSS back without the program');
    } finally {
      for (const o of others) o.close();
    }
  });
});

test('RSS requires CTRL_VQ (5.1.3.1): a driver accepting RSS without it gets FEATURES_OK refused; RSS_CONFIG without RSS negotiated is ERR', async () => {
  await withDevice({ queues: PAIRS }, async ({ device, events, bringUp }) => {
    device.writeStatus(STATUS_ACKNOWLEDGE);
    device.writeStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    device.setDriverFeatures(bits(F.VIRTIO_F_VERSION_1, RSS));
    device.writeStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    assert.is(device.status & STATUS_FEATURES_OK, 0, 'FEATURES_OK did not stick');
    assert.ok(events.protocolErrors.some((m) => m.includes('RSS (bit 60) needs CTRL_VQ (bit 17)')), events.protocolErrors.join('; '));

    const guest = bringUp(); // default: RSS not negotiated
    assert.not.ok(hasFeature(guest.features, RSS), 'RSS is opt-in in the test guest');
    assert.is(await guest.setRss({ hashTypes: RSS_SUPPORTED_HASH_TYPES, key: KEY, table: [0], maxTxVq: 1 }), VIRTIO_NET_ERR);
    assert.is(device.rss, undefined);
  });
});

// ---- the command's bytes ----

test('RSS_CONFIG parsing: truncated at every length, overlong, unnegotiated or HASH_CONFIG is ERR and reaches no handler; a whole one decodes exactly', () => {
  const calls: RssConfig[] = [];
  const handler: ControlCommandHandler = {
    setRxMode: () => true, setMacTable: () => true, setMac: () => true, announceAck: () => true, setQueuePairs: () => true, setGuestOffloads: () => true,
    setRss: (config) => (calls.push(config), true),
  };
  const features = bits(F.VIRTIO_NET_F_CTRL_VQ, RSS);
  const request = (data: Buffer, command = VIRTIO_NET_CTRL_MQ_RSS_CONFIG): Buffer => Buffer.concat([Buffer.from([VIRTIO_NET_CTRL_MQ, command]), data]);
  const settings: RssSettings = { hashTypes: 0x15, key: KEY.subarray(0, 13), table: [3, 1, 0x8001, 2], unclassified: 0xfffe, maxTxVq: 7 };
  const whole = encodeRssConfig(settings);
  assert.is(whole.length, 8 + 4 * 2 + 3 + 13);
  for (let length = 0; length < whole.length; length++) {
    assert.is(handleControlCommand(request(whole.subarray(0, length)), features, handler), VIRTIO_NET_ERR, `cut at ${length} of ${whole.length} bytes`);
  }
  const cases: [string, Buffer, bigint][] = [
    ['a trailing byte', request(Buffer.concat([whole, Buffer.from([0])])), features],
    ['RSS not negotiated (MQ is not enough)', request(whole), bits(F.VIRTIO_NET_F_CTRL_VQ, F.VIRTIO_NET_F_MQ)],
    ['HASH_CONFIG (HASH_REPORT is not offered)', request(whole, VIRTIO_NET_CTRL_MQ_HASH_CONFIG), features | bits(F.VIRTIO_NET_F_HASH_REPORT)],
    ['mask 0xffff with a short body', request(Buffer.concat([whole.subarray(0, 4), Buffer.from([0xff, 0xff]), whole.subarray(6)])), features],
    ['a key length past the end', request(Buffer.concat([whole.subarray(0, 8 + 8 + 2), Buffer.from([40]), Buffer.alloc(39)])), features],
  ];
  for (const [what, req, f] of cases) assert.is(handleControlCommand(req, f, handler), VIRTIO_NET_ERR, what);
  assert.is(calls.length, 0, 'nothing malformed reached the handler');
  const { setRss: _ignored, ...withoutRss } = handler;
  assert.is(handleControlCommand(request(whole), features, withoutRss), VIRTIO_NET_ERR, 'a handler without setRss: ERR');

  assert.is(handleControlCommand(request(whole), features, handler), VIRTIO_NET_OK);
  assert.is(calls.length, 1);
  const got = calls[0]!;
  assert.equal({ ...got, key: got.key.toString('hex') }, {
    hashTypes: 0x15, table: [3, 1, 0x8001, 2], unclassified: 0xfffe, maxTxVq: 7, key: KEY.subarray(0, 13).toString('hex'),
  }, 'every field, little-endian, as sent (the device, not the parser, judges the values)');
  // hash_key_length 0 and one entry: the smallest whole command.
  calls.length = 0;
  assert.is(handleControlCommand(request(encodeRssConfig({ hashTypes: 0, key: Buffer.alloc(0), table: [0], maxTxVq: 1 })), features, handler), VIRTIO_NET_OK);
  assert.equal(calls[0]!.key.length, 0);
});

// ---- validation on a live device ----

test('every validation rule: ERR, and the previous table and pairs stay in force (device.rss, activeQueuePairs, and where frames land)', async () => {
  await withDevice(rssOptions, async (rig) => {
    const { device, events } = rig;
    const guest = rig.bringUp({ rss: true });
    assert.ok(hasFeature(guest.features, RSS));
    const good: RssSettings = { hashTypes: RSS_SUPPORTED_HASH_TYPES, key: KEY, table: [1, 0, 1, 1, 0, 1, 0, 0], unclassified: 1, maxTxVq: 2 };
    assert.is(await guest.setRss(good), VIRTIO_NET_OK);
    assert.is(device.activeQueuePairs, 2);
    assert.ok(same(device.rss, good));
    const pairEvents = events.queuePairs.length;

    const bad: [string, Partial<RssSettings>][] = [
      ['an extension-header hash type (IPv6_EX, bit 6: not supported)', { hashTypes: RSS_SUPPORTED_HASH_TYPES | (1 << 6) }],
      ['hash type bit 31', { hashTypes: 0x80000001 }],
      ['3 entries (mask + 1 not a power of two)', { table: [0, 1, 0] }],
      ['6 entries', { table: [0, 1, 0, 1, 0, 1] }],
      ['256 entries (mask 255, not below rss_max_indirection_table_length 128)', { table: Array.from({ length: 256 }, (_, i) => i % 2) }],
      ['a key of 41 bytes (rss_max_key_size is 40)', { key: Buffer.concat([KEY, Buffer.from([1])]) }],
      ['a table entry naming receive queue 4 (the device has 4)', { table: [0, 1, 4, 1, 0, 1, 0, 0] }],
      ['a table entry with the reserved top bit (0x8001)', { table: [0x8001, 1, 0, 1, 0, 1, 0, 0] }],
      ['unclassified_queue 4', { unclassified: 4 }],
      ['max_tx_vq 0', { maxTxVq: 0 }],
      ['max_tx_vq 5 (max_virtqueue_pairs is 4)', { maxTxVq: 5 }],
    ];
    const queueErrorsBefore = events.queueErrors.length;
    for (const [what, change] of bad) {
      assert.is(await guest.setRss({ ...good, ...change }), VIRTIO_NET_ERR, what);
      assert.is(events.queueErrors.length, queueErrorsBefore, `${what}: refused by the rules, not by a failure further on`);
      assert.ok(same(device.rss, good), `${what}: the previous configuration stays`);
      assert.is(device.activeQueuePairs, 2, `${what}: the pairs stay`);
    }
    const whole = encodeRssConfig({ ...good, hashTypes: RSS_HASH_TYPE_IPV4, table: [3, 2], maxTxVq: 4 }); // valid, but sent broken
    const raw: [string, Buffer][] = [
      ['truncated in the table', whole.subarray(0, 10)],
      ['truncated before hash_key_length', whole.subarray(0, 8 + 4 + 2)],
      ['truncated in the key', whole.subarray(0, whole.length - 1)],
      ['a trailing byte', Buffer.concat([whole, Buffer.from([0])])],
    ];
    for (const [what, data] of raw) {
      assert.is(await guest.control!.command(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_RSS_CONFIG, data), VIRTIO_NET_ERR, what);
      assert.is(events.queueErrors.length, queueErrorsBefore, `${what}: refused by the parser`);
      assert.ok(same(device.rss, good), `${what}: the previous configuration stays`);
      assert.is(device.activeQueuePairs, 2, `${what}: the pairs stay`);
    }
    // Valid, but naming a pair whose receive queue the driver has not enabled: the device cannot
    // start it, so ERR, and nothing changes (not even the pairs that could start).
    device.enableQueue(6, false);
    const queueErrors = events.queueErrors.length;
    assert.is(await guest.setRss({ ...good, table: [3, 2, 1, 0], maxTxVq: 4 }), VIRTIO_NET_ERR, 'a table naming a disabled receive queue');
    assert.ok(events.queueErrors.length > queueErrors, 'reported as a queue error');
    assert.ok(same(device.rss, good));
    assert.is(device.activeQueuePairs, 2);
    assert.equal(device.stats().pairs.map((p) => p.running), [true, true, false, false], 'pairs 2 and 3 are not running');
    device.enableQueue(6, true);
    assert.is(events.queuePairs.length, pairEvents, 'no queue-pairs event for anything refused');

    await drain(guest);
    const stop = await sendTraffic({ udp: 64, tcp: 16, arp: true });
    const landed = await collect(guest, 700);
    stop();
    const udp = perPair(landed, (f) => udpPort(f) !== undefined);
    assert.is(udp[0]! + udp[1]!, 64, `every datagram arrived, on pairs 0 and 1 only: ${udp.join('/')}`);
    assert.ok(udp[0]! > 0 && udp[1]! > 0, `both pairs of the table get flows: ${udp.join('/')}`);
    assert.ok(landed.some((l) => isArp(l.frame)), 'ARP requests arrived');
    assertSteeredBy(landed, good, 'after every refusal');
  });
});

// ---- steering by the guest's configuration ----

test('a valid configuration: UDP, TCP and UDPv6 flows land on the pair the guest\'s 128-entry table names for their hash; ARP on the unclassified queue', async () => {
  await withDevice(rssOptions, async (rig) => {
    const { device } = rig;
    addIpv6(rig);
    const guest = rig.bringUp({ rss: true });
    // An uneven table over all four pairs, and unclassified frames to pair 2.
    const table = Array.from({ length: 128 }, (_, i) => [0, 1, 3, 3, 1, 2, 3, 0][i % 8]!);
    const rss: RssSettings = { hashTypes: RSS_SUPPORTED_HASH_TYPES, key: KEY, table, unclassified: 2, maxTxVq: 4 };
    assert.is(await guest.setRss(rss), VIRTIO_NET_OK);
    assert.is(device.activeQueuePairs, 4, 'pairs in use = max_tx_vq');
    assert.ok(same(device.rss, rss));
    await drain(guest);

    const stop = await sendTraffic({ udp: 96, tcp: 24, udp6: 48, arp: true });
    const landed = await collect(guest, 1200);
    stop();
    const udp = perPair(landed, (f) => udpPort(f) !== undefined);
    const tcp = landed.filter((l) => isTcpV4(l.frame));
    const udp6 = perPair(landed, isUdpV6);
    const arp = landed.filter((l) => isArp(l.frame));
    assert.is(udp.reduce((a, b) => a + b), 96, `every UDP datagram arrived (${udp.join('/')})`);
    assert.is(udp6.reduce((a, b) => a + b), 48, `every UDPv6 datagram arrived (${udp6.join('/')})`);
    assert.ok(new Set(tcp.map((l) => l.frame.readUInt16BE(36))).size >= 20, `SYNs of most of the 24 connections arrived (${tcp.length} frames)`);
    assert.ok(udp.every((c) => c > 0), `96 flows reach all four pairs: ${udp.join('/')}`);
    assert.ok(arp.length > 0 && arp.every((l) => l.pair === 2), `ARP on the unclassified queue, pair 2: ${arp.map((l) => l.pair).join(',')}`);
    assertSteeredBy(landed, rss, 'full key, 128 entries');
  });
});

test('a shorter key is used as given (Toeplitz over its bits, zero past the end); hash types select the fields; a table naming a pair above max_tx_vq puts it in use', async () => {
  await withDevice(rssOptions, async (rig) => {
    const { device } = rig;
    addIpv6(rig);
    const guest = rig.bringUp({ rss: true });
    // 20 bytes of key: enough for the IPv4 4-tuple (96 bits of input need 127 key bits), not for IPv6's
    // (288 bits need 319), so the UDPv6 hashes depend on the key's zero padding. TCP has no type selected:
    // hashed by its addresses (IPv4). IPv6 other than UDP: unclassified.
    const rss: RssSettings = {
      hashTypes: RSS_HASH_TYPE_IPV4 | RSS_HASH_TYPE_UDPV4 | RSS_HASH_TYPE_UDPV6, key: KEY.subarray(0, 20), table: [3, 1, 3, 2], unclassified: 0, maxTxVq: 1,
    };
    assert.is(await guest.setRss(rss), VIRTIO_NET_OK);
    assert.is(device.activeQueuePairs, 4, 'max_tx_vq is 1, but receive queue 3 is in the table: 4 pairs in use');
    await drain(guest);
    const stop = await sendTraffic({ udp: 64, tcp: 16, udp6: 16, basePort: 7200 });
    const landed = await collect(guest, 1000);
    stop();
    const udp = perPair(landed, (f) => udpPort(f) !== undefined);
    assert.is(udp.reduce((a, b) => a + b), 64, `every datagram arrived (${udp.join('/')})`);
    assert.is(udp[0], 0, 'the table does not name pair 0');
    assert.ok(udp[1]! > 0 && udp[2]! > 0 && udp[3]! > 0, `the three pairs of the table get flows: ${udp.join('/')}`);
    const tcpPairs = new Set(landed.filter((l) => isTcpV4(l.frame)).map((l) => l.pair));
    assert.is(tcpPairs.size, 1, `TCP is hashed by its addresses only (no TCPv4 type): one pair for all connections, got ${[...tcpPairs].join(',')}`);
    assert.is(perPair(landed, isUdpV6).reduce((a, b) => a + b), 16, 'every UDPv6 datagram arrived');
    assertSteeredBy(landed, rss, '20-byte key');

    // hash_key_length 0: a key of all zeros, so every hash is 0 and every hashed frame goes to table[0].
    const zero: RssSettings = { hashTypes: RSS_SUPPORTED_HASH_TYPES, key: Buffer.alloc(0), table: [2, 1], unclassified: 3, maxTxVq: 4 };
    assert.is(await guest.setRss(zero), VIRTIO_NET_OK, 'an empty key is a key');
    await drain(guest);
    const stop2 = await sendTraffic({ udp: 16, basePort: 7400 });
    const landed2 = await collect(guest, 500);
    stop2();
    assert.equal(perPair(landed2, (f) => udpPort(f) !== undefined), [0, 0, 16, 0], 'all to table[0]');
    assertSteeredBy(landed2, zero, 'empty key');
  });
});

test('RSS without MQ: every pair exists (5.1.2), the control queue is virtqueue 2N, RSS_CONFIG sets the pairs, VQ_PAIRS_SET is ERR', async () => {
  await withDevice(rssOptions, async (rig) => {
    const { device } = rig;
    const guest = rig.bringUp({ rss: true, wantFeatures: rig.device.offeredFeatures & ~bits(F.VIRTIO_NET_F_MQ) });
    assert.ok(hasFeature(guest.features, RSS) && !hasFeature(guest.features, F.VIRTIO_NET_F_MQ));
    assert.is(guest.driver.queuePairs, PAIRS, 'the guest set up all four pairs');
    assert.is(device.activeQueuePairs, 1, 'one pair at DRIVER_OK');
    assert.is(await guest.setQueuePairs(2), VIRTIO_NET_ERR, 'VQ_PAIRS_SET needs MQ');
    const rss: RssSettings = { hashTypes: RSS_SUPPORTED_HASH_TYPES, key: KEY, table: [0, 1, 2], maxTxVq: 3 };
    assert.is(await guest.setRss({ ...rss, table: [0, 1, 2] }), VIRTIO_NET_ERR, '3 entries');
    const valid = { ...rss, table: [0, 1, 2, 1] };
    assert.is(await guest.setRss(valid), VIRTIO_NET_OK, 'answered on the control queue at virtqueue 8');
    assert.is(device.activeQueuePairs, 3);
    await drain(guest);
    const stop = await sendTraffic({ udp: 48, basePort: 7600 });
    const landed = await collect(guest, 700);
    stop();
    const udp = perPair(landed, (f) => udpPort(f) !== undefined);
    assert.is(udp[0]! + udp[1]! + udp[2]!, 48, `every datagram on pairs 0-2: ${udp.join('/')}`);
    assertSteeredBy(landed, valid, 'RSS without MQ');
  });
});

// ---- VQ_PAIRS_SET, reset ----

test('VQ_PAIRS_SET after RSS_CONFIG: the last command decides (5.1.6.5.5): automatic steering over the new pairs; a refused count keeps RSS; RSS_CONFIG again takes over', async () => {
  await withDevice(rssOptions, async (rig) => {
    const { device } = rig;
    const guest = rig.bringUp({ rss: true });
    // Only pairs 1 and 3: under automatic steering pairs 0 and 2 get flows too.
    const rss: RssSettings = { hashTypes: RSS_SUPPORTED_HASH_TYPES, key: KEY, table: [1, 3, 3, 1], unclassified: 3, maxTxVq: 4 };
    assert.is(await guest.setRss(rss), VIRTIO_NET_OK);

    for (const badCount of [0, 5]) {
      assert.is(await guest.setQueuePairs(badCount), VIRTIO_NET_ERR, `${badCount} pairs`);
      assert.ok(same(device.rss, rss), `a refused VQ_PAIRS_SET ${badCount} leaves RSS in force`);
    }
    assert.throws(() => device.setActiveQueuePairs(2), (e: Error & { code?: string }) => e.code === 'EINVAL' && /RSS/.test(e.message),
      'the VMM cannot take pairs the guest\'s table steers to');
    assert.is(device.activeQueuePairs, 4);

    await drain(guest);
    let stop = await sendTraffic({ udp: 64, basePort: 7700 });
    let landed = await collect(guest, 600);
    stop();
    assert.equal(perPair(landed, (f) => udpPort(f) !== undefined).map((c) => c > 0), [false, true, false, true], 'RSS: pairs 1 and 3 only');

    // The same count, by VQ_PAIRS_SET: automatic steering over all four.
    assert.is(await guest.setQueuePairs(4), VIRTIO_NET_OK);
    assert.is(device.rss, undefined, 'VQ_PAIRS_SET ended RSS');
    await drain(guest);
    stop = await sendTraffic({ udp: 64, basePort: 7800 });
    landed = await collect(guest, 600);
    stop();
    let udp = perPair(landed, (f) => udpPort(f) !== undefined);
    assert.is(udp.reduce((a, b) => a + b), 64);
    assert.ok(udp[0]! + udp[2]! > 0, `automatic steering uses the pairs the RSS table left out: ${udp.join('/')}`);

    // RSS again, then fewer pairs by VQ_PAIRS_SET: the leaving pairs are read empty and detached, as always.
    assert.is(await guest.setRss(rss), VIRTIO_NET_OK);
    assert.is(await guest.setQueuePairs(2), VIRTIO_NET_OK);
    assert.is(device.rss, undefined);
    assert.is(device.activeQueuePairs, 2);
    await drain(guest);
    stop = await sendTraffic({ udp: 64, basePort: 7900 });
    landed = await collect(guest, 600);
    stop();
    udp = perPair(landed, (f) => udpPort(f) !== undefined);
    assert.is(udp[0]! + udp[1]!, 64, `automatic steering over pairs 0 and 1: ${udp.join('/')}`);
    assert.ok(udp[0]! > 0 && udp[1]! > 0);

    // And RSS_CONFIG after VQ_PAIRS_SET takes over again, with its own pairs.
    assert.is(await guest.setRss(rss), VIRTIO_NET_OK);
    assert.is(device.activeQueuePairs, 4);
    assert.ok(same(device.rss, rss));
  });
});

test('a reset forgets RSS: after it, the guest gets one pair and automatic steering until it configures again', async () => {
  await withDevice(rssOptions, async (rig) => {
    const { device } = rig;
    let guest = rig.bringUp({ rss: true });
    const rss: RssSettings = { hashTypes: RSS_SUPPORTED_HASH_TYPES, key: KEY, table: [3], unclassified: 3, maxTxVq: 4 };
    assert.is(await guest.setRss(rss), VIRTIO_NET_OK);
    device.writeStatus(0);
    assert.is(device.rss, undefined, 'reset cleared it');
    assert.is(device.activeQueuePairs, 1);

    guest = rig.bringUp({ rss: true });
    assert.is(device.rss, undefined);
    assert.is(await guest.setQueuePairs(4), VIRTIO_NET_OK);
    await drain(guest);
    const stop = await sendTraffic({ udp: 64, basePort: 8100 });
    const landed = await collect(guest, 600);
    stop();
    const udp = perPair(landed, (f) => udpPort(f) !== undefined);
    assert.is(udp.reduce((a, b) => a + b), 64);
    assert.ok(udp.filter((c) => c > 0).length >= 2, `not the old table (everything to pair 3): ${udp.join('/')}`);
  });
});

// ---- migration ----

test('saveState/restoreState carries the RSS configuration: the destination steers by the guest\'s table; bad RSS states are refused', async () => {
  const taps = [Tap.create({ name: uniqueName('vrs'), queues: PAIRS }), Tap.create({ name: uniqueName('vrd'), queues: PAIRS })];
  const memory: GuestMemory = allocateGuestMemory(PAIRS);
  const devices: VirtioNetDevice[] = [];
  let guest: VirtioNetGuest | undefined;
  try {
    // The destination tap carries the traffic after the move: it gets the addresses.
    const source = new VirtioNetDevice({ tap: taps[0]!, mac: '52:54:00:12:34:56' });
    devices.push(source);
    guest = VirtioNetGuest.bringUp({ device: source, memory, rss: true, rxBufferSize: BUFFER_SIZE, txBufferSize: BUFFER_SIZE });
    const rss: RssSettings = { hashTypes: RSS_SUPPORTED_HASH_TYPES, key: KEY.subarray(0, 36), table: [2, 3, 2, 1, 3, 3, 1, 2], unclassified: 1, maxTxVq: 4 };
    assert.is(await guest.setRss(rss), VIRTIO_NET_OK);
    const state = source.saveState();
    assert.equal(state.rss, { hashTypes: rss.hashTypes, key: KEY.subarray(0, 36).toString('hex'), table: [...rss.table], unclassified: 1, maxTxVq: 4 });
    assert.equal(JSON.parse(JSON.stringify(state)), state, 'plain JSON');

    const fresh = (options: { steering?: 'off' } = {}): VirtioNetDevice => {
      const d = new VirtioNetDevice({ tap: taps[1]!, mac: '52:54:00:12:34:56', ...options });
      devices.push(d);
      d.setMemory(memory);
      for (const { index, kickFd, callFd } of guest!.queueSignals()) {
        d.setQueueKick(index, kickFd);
        d.setQueueCall(index, callFd);
      }
      return d;
    };
    const refused: [string, VirtioNetDeviceState][] = [
      ['rss without RSS negotiated', { ...state, driverFeatures: `0x${(BigInt(state.driverFeatures) & ~bits(RSS)).toString(16)}` }],
      ['3 table entries', { ...state, rss: { ...state.rss!, table: [1, 2, 3] } }],
      ['a table entry out of range', { ...state, rss: { ...state.rss!, table: [1, 2, 3, 4] } }],
      ['a 41-byte key', { ...state, rss: { ...state.rss!, key: Buffer.alloc(41).toString('hex') } }],
      ['a key that is not hex', { ...state, rss: { ...state.rss!, key: 'xyz' } }],
      ['unsupported hash types', { ...state, rss: { ...state.rss!, hashTypes: 0x1ff } }],
      ['fewer pairs in use than the table names', { ...state, activeQueuePairs: 2 }],
      ['rss before DRIVER_OK', { ...state, status: state.status & ~STATUS_DRIVER_OK }],
      ['rss not an object', { ...state, rss: 'x' as unknown as VirtioNetDeviceState['rss'] }],
    ];
    const target = fresh();
    for (const [what, bad] of refused) {
      assert.throws(() => target.restoreState(bad), (e: Error & { code?: string }) => e.code === 'EINVAL', what);
      assert.is(target.status, 0, `${what}: untouched`);
      assert.is(target.rss, undefined);
    }
    const noRss = fresh({ steering: 'off' });
    assert.throws(() => noRss.restoreState(state), (e: Error & { code?: string }) => e.code === 'EINVAL' && /not offered/.test(e.message),
      'a destination that cannot offer RSS refuses a guest that negotiated it');

    target.restoreState(state);
    assert.ok(same(target.rss, rss), 'the destination has the guest\'s configuration');
    assert.is(target.activeQueuePairs, 4);
    guest.moveTo(target, memory);
    source.close();

    // Traffic to the destination tap, now the guest's.
    run('ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', taps[1]!.name]);
    run('ip', ['neigh', 'replace', GUEST_IP, 'lladdr', target.mac, 'dev', taps[1]!.name, 'nud', 'permanent']);
    await drain(guest);
    const stop = await sendTraffic({ udp: 64, tcp: 8, arp: true, basePort: 8300 });
    const landed = await collect(guest, 800);
    stop();
    const udp = perPair(landed, (f) => udpPort(f) !== undefined);
    assert.is(udp.reduce((a, b) => a + b), 64, `every datagram arrived at the destination: ${udp.join('/')}`);
    assert.is(udp[0], 0, 'the table does not name pair 0');
    assertSteeredBy(landed, rss, 'after restoreState');

    // A version 1 state without rss (what this device wrote before RSS): restored with automatic steering.
    target.writeStatus(0);
    guest.close();
    guest = VirtioNetGuest.bringUp({ device: target, memory, rss: true, rxBufferSize: BUFFER_SIZE, txBufferSize: BUFFER_SIZE });
    assert.is(await guest.setQueuePairs(3), VIRTIO_NET_OK);
    const plain = target.saveState();
    assert.is(plain.rss, undefined, 'no rss under automatic steering');
    const again = fresh();
    again.restoreState(plain);
    assert.is(again.rss, undefined);
    assert.is(again.activeQueuePairs, 3);
  } finally {
    guest?.close();
    for (const d of devices) d.close();
    memory.close();
    for (const t of taps) t.close();
  }
});

test.run();
