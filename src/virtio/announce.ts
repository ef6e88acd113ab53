// Telling the network where a guest is after it moved: the RARP broadcast
// QEMU's announce sends for a NIC (net/announce.c does the same on a tap),
// which switches and bridges use to learn the guest's MAC on its new port. For
// guests without VIRTIO_NET_F_GUEST_ANNOUNCE (which announce themselves, 5.1.6.5.4).

const ETH_P_RARP = 0x8035;
const ARP_OP_REQUEST_REVERSE = 3;
const MIN_FRAME = 60;

/** A RARP "request reverse" broadcast from `mac` (RFC 903), padded to the minimum Ethernet frame. */
export function rarpFrame(mac: Uint8Array): Buffer {
  if (mac.length !== 6) throw new RangeError('a MAC address is 6 bytes');
  const frame = Buffer.alloc(MIN_FRAME);
  frame.fill(0xff, 0, 6);
  Buffer.from(mac).copy(frame, 6);
  frame.writeUInt16BE(ETH_P_RARP, 12);
  frame.writeUInt16BE(1, 14); // hardware: Ethernet
  frame.writeUInt16BE(0x0800, 16); // protocol: IPv4
  frame[18] = 6;
  frame[19] = 4;
  frame.writeUInt16BE(ARP_OP_REQUEST_REVERSE, 20);
  Buffer.from(mac).copy(frame, 22); // sender hardware address; sender IP 0.0.0.0
  Buffer.from(mac).copy(frame, 32); // target hardware address; target IP 0.0.0.0
  return frame;
}
