import { makeError } from '../../errors';

// virtio 1.x, 5.1.6: struct virtio_net_hdr, which precedes every frame on both queues.
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;

export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

/** 10 bytes: legacy without VIRTIO_NET_F_MRG_RXBUF; 12 bytes: with it, or with VIRTIO_F_VERSION_1. */
export type NetHdrSize = 10 | 12;

export interface VirtioNetHdr {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
  /** Buffers a received frame spans (mergeable rx); 0 on transmit (5.1.6.2). */
  numBuffers: number;
}

const U8_FIELDS = ['flags', 'gsoType'] as const;
const U16_FIELDS = ['hdrLen', 'gsoSize', 'csumStart', 'csumOffset', 'numBuffers'] as const;

/** Encodes a header, little-endian as virtio 1.x requires; missing fields are 0. */
export function encodeNetHdr(hdr: Partial<VirtioNetHdr>, size: NetHdrSize): Buffer {
  assertSize(size);
  for (const key of U8_FIELDS) assertRange(key, hdr[key], 0xff);
  for (const key of U16_FIELDS) assertRange(key, hdr[key], 0xffff);
  if (size === 10 && (hdr.numBuffers ?? 0) !== 0) {
    throw makeError('EINVAL', 'a 10-byte virtio_net_hdr has no num_buffers field: use the 12-byte header (mergeable rx buffers or VIRTIO_F_VERSION_1)');
  }
  const out = Buffer.alloc(size);
  out.writeUInt8(hdr.flags ?? 0, 0);
  out.writeUInt8(hdr.gsoType ?? 0, 1);
  out.writeUInt16LE(hdr.hdrLen ?? 0, 2);
  out.writeUInt16LE(hdr.gsoSize ?? 0, 4);
  out.writeUInt16LE(hdr.csumStart ?? 0, 6);
  out.writeUInt16LE(hdr.csumOffset ?? 0, 8);
  if (size === 12) out.writeUInt16LE(hdr.numBuffers ?? 0, 10);
  return out;
}

/** Decodes the first `size` bytes; a 10-byte header has no num_buffers, which then means one buffer. */
export function decodeNetHdr(bytes: Uint8Array, size: NetHdrSize): VirtioNetHdr {
  assertSize(size);
  if (bytes.length < size) throw makeError('EINVAL', `a ${size}-byte virtio_net_hdr needs ${size} bytes, got ${bytes.length}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, size);
  return {
    flags: view.getUint8(0),
    gsoType: view.getUint8(1),
    hdrLen: view.getUint16(2, true),
    gsoSize: view.getUint16(4, true),
    csumStart: view.getUint16(6, true),
    csumOffset: view.getUint16(8, true),
    numBuffers: size === 12 ? view.getUint16(10, true) : 1,
  };
}

function assertSize(size: number): void {
  if (size !== 10 && size !== 12) throw makeError('EINVAL', `virtio_net_hdr size must be 10 or 12, got ${size}`);
}

function assertRange(key: string, value: number | undefined, max: number): void {
  if (value === undefined) return;
  if (!Number.isInteger(value) || value < 0 || value > max) throw makeError('EINVAL', `virtio_net_hdr ${key} must be an integer in 0..${max}, got ${value}`);
}
