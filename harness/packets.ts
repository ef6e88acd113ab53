// Building and checking Ethernet/IPv4/UDP/TCP/ARP frames byte by byte, so
// tests can compare what crossed the data path with what was sent.

export const GUEST_MAC = Buffer.from([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
export const BROADCAST_MAC = Buffer.alloc(6, 0xff);

export function macBytes(mac: string): Buffer {
  return Buffer.from(mac.split(':').map((h) => parseInt(h, 16)));
}

export function ipBytes(ip: string): Buffer {
  return Buffer.from(ip.split('.').map(Number));
}

/** The 16-bit one's complement sum of RFC 1071, folded, not inverted. */
export function onesSum(data: Uint8Array, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < data.length; i += 2) sum += (data[i]! << 8) | data[i + 1]!;
  if (data.length % 2) sum += data[data.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

export function checksum(data: Uint8Array, initial = 0): number {
  return ~onesSum(data, initial) & 0xffff;
}

export function ethernet(dst: Buffer, src: Buffer, etherType: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(14);
  dst.copy(header, 0);
  src.copy(header, 6);
  header.writeUInt16BE(etherType, 12);
  return Buffer.concat([header, payload]);
}

export function ipv4(src: string, dst: string, protocol: number, payload: Buffer, id = 1): Buffer {
  const header = Buffer.alloc(20);
  header[0] = 0x45;
  header.writeUInt16BE(20 + payload.length, 2);
  header.writeUInt16BE(id, 4);
  header.writeUInt16BE(0x4000, 6); // don't fragment
  header[8] = 64;
  header[9] = protocol;
  ipBytes(src).copy(header, 12);
  ipBytes(dst).copy(header, 16);
  header.writeUInt16BE(checksum(header), 10);
  return Buffer.concat([header, payload]);
}

function pseudoHeaderSum(src: string, dst: string, protocol: number, length: number): number {
  const pseudo = Buffer.alloc(12);
  ipBytes(src).copy(pseudo, 0);
  ipBytes(dst).copy(pseudo, 4);
  pseudo[9] = protocol;
  pseudo.writeUInt16BE(length, 10);
  return onesSum(pseudo);
}

/**
 * A UDP datagram. checksum 'full' computes it; 'partial' leaves the pseudo-header
 * sum for a NEEDS_CSUM frame (the device or kernel completes it); 'none' is 0.
 */
export function udp(src: string, dst: string, srcPort: number, dstPort: number, payload: Buffer, mode: 'full' | 'partial' | 'none' = 'full'): Buffer {
  const datagram = Buffer.alloc(8 + payload.length);
  datagram.writeUInt16BE(srcPort, 0);
  datagram.writeUInt16BE(dstPort, 2);
  datagram.writeUInt16BE(datagram.length, 4);
  payload.copy(datagram, 8);
  const pseudo = pseudoHeaderSum(src, dst, 17, datagram.length);
  if (mode === 'full') datagram.writeUInt16BE(checksum(datagram, pseudo) || 0xffff, 6);
  if (mode === 'partial') datagram.writeUInt16BE(pseudo, 6);
  return datagram;
}

export function arpRequest(senderMac: Buffer, senderIp: string, targetIp: string): Buffer {
  const arp = Buffer.alloc(28);
  arp.writeUInt16BE(1, 0); // Ethernet
  arp.writeUInt16BE(0x0800, 2);
  arp[4] = 6;
  arp[5] = 4;
  arp.writeUInt16BE(1, 6); // request
  senderMac.copy(arp, 8);
  ipBytes(senderIp).copy(arp, 14);
  ipBytes(targetIp).copy(arp, 24);
  return ethernet(BROADCAST_MAC, senderMac, 0x0806, arp);
}

export interface ParsedIpv4 {
  src: string;
  dst: string;
  protocol: number;
  headerOk: boolean;
  payload: Buffer;
}

export function parseIpv4(frame: Buffer): ParsedIpv4 | undefined {
  if (frame.length < 34 || frame.readUInt16BE(12) !== 0x0800) return undefined;
  const ip = frame.subarray(14);
  const ihl = (ip[0]! & 0x0f) * 4;
  const total = ip.readUInt16BE(2);
  return {
    src: Array.from(ip.subarray(12, 16)).join('.'),
    dst: Array.from(ip.subarray(16, 20)).join('.'),
    protocol: ip[9]!,
    headerOk: checksum(ip.subarray(0, ihl)) === 0,
    payload: ip.subarray(ihl, total),
  };
}

export interface ParsedUdp {
  srcPort: number;
  dstPort: number;
  payload: Buffer;
  /** The checksum in the datagram verifies (or is 0, "none"). */
  checksumOk: boolean;
  checksumField: number;
}

export function parseUdp(frame: Buffer): (ParsedUdp & { ip: ParsedIpv4 }) | undefined {
  const ip = parseIpv4(frame);
  if (!ip || ip.protocol !== 17 || ip.payload.length < 8) return undefined;
  const d = ip.payload;
  const field = d.readUInt16BE(6);
  const ok = field === 0 || checksum(d, pseudoHeaderSum(ip.src, ip.dst, 17, d.length)) === 0;
  return { ip, srcPort: d.readUInt16BE(0), dstPort: d.readUInt16BE(2), payload: d.subarray(8, d.readUInt16BE(4)), checksumOk: ok, checksumField: field };
}

export function tcpChecksumOk(frame: Buffer): boolean {
  const ip = parseIpv4(frame);
  if (!ip || ip.protocol !== 6) return false;
  return checksum(ip.payload, pseudoHeaderSum(ip.src, ip.dst, 6, ip.payload.length)) === 0;
}

/** Bytes of payload, deterministic per seed, to check data byte for byte. */
export function pattern(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}
