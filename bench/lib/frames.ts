// The frames every case moves, built once: the same bytes for the raw loops,
// the native guest, and (same shape) what DPDK's txonly engine sends.
import { encodeNetHdr, type VirtioNetHdr } from '../../src/virtio/driver/net-header';
import { ethernet, ipBytes, ipv4, macBytes, onesSum, udp } from '../../harness/packets';

export const VNET_HDR = 12;
export const GUEST_MAC = '52:54:00:12:34:56';
/** Not the tap's: frames written to the tap are taken in and dropped as "not for this host" (as testpmd's txonly frames are). */
export const PEER_MAC = '02:00:00:00:00:01';
export const HOST_IP = '10.77.0.1';
export const GUEST_IP = '10.77.0.2';
export const PREFIX = 24;
export const GSO_SIZE = 1448;

/** The 12-byte virtio_net_hdr (VERSION_1) the frames start with: the library's own encoder. */
export function vnetHdr(h: Partial<VirtioNetHdr> = {}): Buffer {
  return encodeNetHdr(h, VNET_HDR);
}

/** An Ethernet/IPv4/UDP frame of exactly `frameBytes` bytes (no FCS), UDP checksum 0 (none). */
export function udpFrame(o: { frameBytes: number; dstMac: string; srcMac: string; src: string; dst: string; sport: number; dport: number }): Buffer {
  const payload = o.frameBytes - 14 - 20 - 8;
  if (payload < 0) throw new Error(`a UDP frame needs at least 42 bytes, not ${o.frameBytes}`);
  const datagram = udp(o.src, o.dst, o.sport, o.dport, Buffer.alloc(payload, 0x5a), 'none');
  return ethernet(macBytes(o.dstMac), macBytes(o.srcMac), 0x0800, ipv4(o.src, o.dst, 17, datagram));
}

/** The guest-to-host frame of a throughput case, with its vnet header: what one write() or one tx chain carries. */
export function txFrame(frameBytes: number): Buffer {
  return Buffer.concat([vnetHdr(), udpFrame({ frameBytes, dstMac: PEER_MAC, srcMac: GUEST_MAC, src: '198.18.0.1', dst: '198.18.0.2', sport: 9, dport: 9 })]);
}

/**
 * A 64 KB TCP/IPv4 GSO frame as a guest with TSO hands it over: IPv4 total
 * length 65535, NEEDS_CSUM with the TCP pseudo-header sum in place (Linux's
 * CHECKSUM_PARTIAL), GSO_TCPV4 with gso_size 1448.
 */
export function gsoFrame(): Buffer {
  const payload = 65535 - 40;
  const [src, dst] = ['198.18.0.1', '198.18.0.2'];
  const tcp = Buffer.alloc(20);
  tcp.writeUInt16BE(40000, 0);
  tcp.writeUInt16BE(5201, 2);
  tcp.writeUInt32BE(1, 4);
  tcp.writeUInt32BE(1, 8);
  tcp[12] = 5 << 4;
  tcp[13] = 0x18; // PSH|ACK
  tcp.writeUInt16BE(65535, 14);
  const pseudo = Buffer.concat([ipBytes(src), ipBytes(dst), Buffer.from([0, 6]), Buffer.from([(20 + payload) >> 8, (20 + payload) & 0xff])]);
  tcp.writeUInt16BE(onesSum(pseudo), 16); // partial: the device (here the host stack) completes it
  const hdr = vnetHdr({ flags: 1 /* NEEDS_CSUM */, gsoType: 1 /* TCPV4 */, hdrLen: 54, gsoSize: GSO_SIZE, csumStart: 34, csumOffset: 16 });
  const segment = Buffer.concat([tcp, Buffer.alloc(payload, 0x6b)]);
  return Buffer.concat([hdr, ethernet(macBytes(PEER_MAC), macBytes(GUEST_MAC), 0x0800, ipv4(src, dst, 6, segment))]);
}

/** The ping frame (vnet header + 64-byte frame) to the host's UDP echo; the sequence number goes at `seqOffset`. */
export function pingFrame(tapMac: string): { frame: Buffer; seqOffset: number } {
  const frame = Buffer.concat([vnetHdr(), udpFrame({ frameBytes: 64, dstMac: tapMac, srcMac: GUEST_MAC, src: GUEST_IP, dst: HOST_IP, sport: 4000, dport: 7 })]);
  return { frame, seqOffset: VNET_HDR + 42 };
}

/** UDP payload that makes an Ethernet frame of `frameBytes`. */
export function udpPayloadFor(frameBytes: number): number {
  return frameBytes - 42;
}
