// vhost-user wire format (QEMU docs/interop/vhost-user.rst): a 12-byte header
// (request, flags, size), a payload of `size` bytes, fds in SCM_RIGHTS.
// Everything is little-endian. Parsers here check sizes and never trust a count.
import { makeError } from '../errors';

export const HEADER_SIZE = 12;
export const VHOST_USER_VERSION = 1;
export const FLAG_VERSION_MASK = 0x3;
export const FLAG_REPLY = 1 << 2;
export const FLAG_NEED_REPLY = 1 << 3;
/** Larger than any message this backend takes (GET_CONFIG's 12 + 256 bytes is the largest). */
export const MAX_PAYLOAD = 4096;
/** At most this many fds ride on one message (SET_MEM_TABLE with 8 regions is the most that is legal). */
export const MAX_FDS = 32;
export const MAX_MEM_REGIONS = 8;
export const MAX_MEM_SLOTS = 32;

export enum Request {
  GET_FEATURES = 1,
  SET_FEATURES = 2,
  SET_OWNER = 3,
  RESET_OWNER = 4,
  SET_MEM_TABLE = 5,
  SET_LOG_BASE = 6,
  SET_LOG_FD = 7,
  SET_VRING_NUM = 8,
  SET_VRING_ADDR = 9,
  SET_VRING_BASE = 10,
  GET_VRING_BASE = 11,
  SET_VRING_KICK = 12,
  SET_VRING_CALL = 13,
  SET_VRING_ERR = 14,
  GET_PROTOCOL_FEATURES = 15,
  SET_PROTOCOL_FEATURES = 16,
  GET_QUEUE_NUM = 17,
  SET_VRING_ENABLE = 18,
  SEND_RARP = 19,
  NET_SET_MTU = 20,
  SET_BACKEND_REQ_FD = 21,
  IOTLB_MSG = 22,
  SET_VRING_ENDIAN = 23,
  GET_CONFIG = 24,
  SET_CONFIG = 25,
  RESET_DEVICE = 34,
  GET_MAX_MEM_SLOTS = 36,
  ADD_MEM_REG = 37,
  REM_MEM_REG = 38,
  SET_STATUS = 39,
  GET_STATUS = 40,
}

/** What the fds of a request must be: eventfds (kick, call, err, log), or files to map (guest memory, the log). */
export type FdKind = 'eventfd' | 'memory';

/** VHOST_USER_F_PROTOCOL_FEATURES, a virtio feature bit that vhost-user borrows. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;

export enum ProtocolFeature {
  MQ = 0,
  LOG_SHMFD = 1,
  RARP = 2,
  REPLY_ACK = 3,
  NET_MTU = 4,
  BACKEND_REQ = 5,
  CONFIG = 9,
  RESET_DEVICE = 13,
  CONFIGURE_MEM_SLOTS = 15,
  STATUS = 16,
}

export interface Header {
  request: number;
  flags: number;
  size: number;
}

export function decodeHeader(bytes: Buffer): Header {
  if (bytes.length < HEADER_SIZE) throw makeError('EPROTO', `a message header is ${HEADER_SIZE} bytes, got ${bytes.length}`);
  return { request: bytes.readUInt32LE(0), flags: bytes.readUInt32LE(4), size: bytes.readUInt32LE(8) };
}

export function encodeMessage(request: number, flags: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(HEADER_SIZE);
  header.writeUInt32LE(request, 0);
  header.writeUInt32LE(flags, 4);
  header.writeUInt32LE(payload.length, 8);
  return Buffer.concat([header, payload]);
}

export function requestName(request: number): string {
  return Request[request] ?? `request ${request}`;
}

function malformed(request: number, what: string): Error {
  return makeError('EPROTO', `${requestName(request)}: ${what}`);
}

export function u64(payload: Buffer, request: number): bigint {
  if (payload.length !== 8) throw malformed(request, `payload is ${payload.length} bytes, not 8`);
  return payload.readBigUInt64LE(0);
}

export function encodeU64(value: bigint | number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(value));
  return b;
}

export interface VringState {
  index: number;
  num: number;
}

export function vringState(payload: Buffer, request: number): VringState {
  if (payload.length !== 8) throw malformed(request, `payload is ${payload.length} bytes, not 8`);
  return { index: payload.readUInt32LE(0), num: payload.readUInt32LE(4) };
}

export function encodeVringState(state: VringState): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(state.index, 0);
  b.writeUInt32LE(state.num, 4);
  return b;
}

export interface VringAddress {
  index: number;
  flags: number;
  /** Frontend virtual addresses: translate through the memory table. */
  desc: bigint;
  used: bigint;
  avail: bigint;
  log: bigint;
}

export function encodeVringAddress(a: VringAddress): Buffer {
  const b = Buffer.alloc(40);
  b.writeUInt32LE(a.index, 0);
  b.writeUInt32LE(a.flags, 4);
  b.writeBigUInt64LE(a.desc, 8);
  b.writeBigUInt64LE(a.used, 16);
  b.writeBigUInt64LE(a.avail, 24);
  b.writeBigUInt64LE(a.log, 32);
  return b;
}

export function vringAddress(payload: Buffer, request: number): VringAddress {
  if (payload.length !== 40) throw malformed(request, `payload is ${payload.length} bytes, not 40`);
  return {
    index: payload.readUInt32LE(0),
    flags: payload.readUInt32LE(4),
    desc: payload.readBigUInt64LE(8),
    used: payload.readBigUInt64LE(16),
    avail: payload.readBigUInt64LE(24),
    log: payload.readBigUInt64LE(32),
  };
}

export interface MemoryRegionDescriptor {
  guestPhysAddr: bigint;
  size: bigint;
  userAddr: bigint;
  mmapOffset: bigint;
}

function region(payload: Buffer, offset: number): MemoryRegionDescriptor {
  return {
    guestPhysAddr: payload.readBigUInt64LE(offset),
    size: payload.readBigUInt64LE(offset + 8),
    userAddr: payload.readBigUInt64LE(offset + 16),
    mmapOffset: payload.readBigUInt64LE(offset + 24),
  };
}

function encodeRegion(r: MemoryRegionDescriptor, into: Buffer, offset: number): void {
  into.writeBigUInt64LE(r.guestPhysAddr, offset);
  into.writeBigUInt64LE(r.size, offset + 8);
  into.writeBigUInt64LE(r.userAddr, offset + 16);
  into.writeBigUInt64LE(r.mmapOffset, offset + 24);
}

export function encodeMemoryTable(regions: readonly MemoryRegionDescriptor[]): Buffer {
  const b = Buffer.alloc(8 + 32 * regions.length);
  b.writeUInt32LE(regions.length, 0);
  regions.forEach((r, i) => encodeRegion(r, b, 8 + 32 * i));
  return b;
}

/** SET_MEM_TABLE: u32 nregions, u32 padding, then nregions of 32 bytes (the frontend may send all 8 slots). */
export function memoryTable(payload: Buffer, request: number): MemoryRegionDescriptor[] {
  if (payload.length < 8) throw malformed(request, 'payload shorter than its region count');
  const count = payload.readUInt32LE(0);
  if (count < 1 || count > MAX_MEM_REGIONS) throw malformed(request, `${count} regions (1 to ${MAX_MEM_REGIONS} allowed)`);
  if (payload.length < 8 + 32 * count) throw malformed(request, `payload of ${payload.length} bytes cannot hold ${count} regions`);
  return Array.from({ length: count }, (_, i) => region(payload, 8 + 32 * i));
}

/** ADD_MEM_REG / REM_MEM_REG: u64 padding, then one region. */
export function singleRegion(payload: Buffer, request: number): MemoryRegionDescriptor {
  if (payload.length !== 40) throw malformed(request, `payload is ${payload.length} bytes, not 40`);
  return region(payload, 8);
}

export function encodeSingleRegion(r: MemoryRegionDescriptor): Buffer {
  const b = Buffer.alloc(40);
  encodeRegion(r, b, 8);
  return b;
}

export interface ConfigAccess {
  offset: number;
  size: number;
  flags: number;
  data: Buffer;
}

export function configAccess(payload: Buffer, request: number): ConfigAccess {
  if (payload.length < 12) throw malformed(request, 'payload shorter than its header');
  const offset = payload.readUInt32LE(0);
  const size = payload.readUInt32LE(4);
  if (size > 256 || offset > 256 || payload.length !== 12 + size) throw malformed(request, `config access ${offset}+${size} in a ${payload.length}-byte payload`);
  return { offset, size, flags: payload.readUInt32LE(8), data: payload.subarray(12) };
}

export function encodeConfig(access: ConfigAccess, data: Buffer): Buffer {
  const b = Buffer.alloc(12 + data.length);
  b.writeUInt32LE(access.offset, 0);
  b.writeUInt32LE(data.length, 4);
  b.writeUInt32LE(access.flags, 8);
  data.copy(b, 12);
  return b;
}

export interface VringFdIndex {
  index: number;
  /** Bit 8: no fd comes with the message (the ring is polled, or not signalled). */
  noFd: boolean;
}

/** SET_VRING_KICK/CALL/ERR: bits 0-7 the ring, bit 8 set when no fd comes (polling). */
export function vringFdIndex(payload: Buffer, request: number): VringFdIndex {
  const value = u64(payload, request);
  return { index: Number(value & 0xffn), noFd: (value & 0x100n) !== 0n };
}

export function encodeVringFdIndex(value: VringFdIndex): Buffer {
  return encodeU64(BigInt(value.index & 0xff) | (value.noFd ? 0x100n : 0n));
}

/** VHOST_F_LOG_ALL: a feature bit of vhost's own: log every write to guest memory (live migration). */
export const VHOST_F_LOG_ALL = 26;

/** VHOST_VRING_F_LOG in SET_VRING_ADDR's flags: log_guest_addr is valid, log the used ring's writes there. */
export const VHOST_VRING_F_LOG = 1 << 0;

export interface LogDescription {
  mmapSize: bigint;
  mmapOffset: bigint;
}

/** SET_LOG_BASE with LOG_SHMFD: the log region's size and offset in the fd that comes with it. */
export function logDescription(payload: Buffer, request: number): LogDescription {
  if (payload.length !== 16) throw malformed(request, `payload is ${payload.length} bytes, not 16 (mmap size, mmap offset)`);
  return { mmapSize: payload.readBigUInt64LE(0), mmapOffset: payload.readBigUInt64LE(8) };
}

export function encodeLogDescription(d: LogDescription): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(d.mmapSize, 0);
  b.writeBigUInt64LE(d.mmapOffset, 8);
  return b;
}

/** SEND_RARP: a u64 whose first 6 bytes are the guest's MAC address. */
export function rarpMac(payload: Buffer, request: number): string {
  if (payload.length !== 8) throw malformed(request, `payload is ${payload.length} bytes, not 8`);
  return Array.from(payload.subarray(0, 6), (b) => b.toString(16).padStart(2, '0')).join(':');
}

export function encodeRarpMac(mac: string): Buffer {
  const b = Buffer.alloc(8);
  Buffer.from(mac.split(':').map((h) => parseInt(h, 16))).copy(b);
  return b;
}

/**
 * What a request's payload must be: its size in bytes, checked before anything
 * reads it, and its decoder. The size is exact, or a range for the payloads that
 * say their own length (a memory table's region count, a config access's size),
 * which their decoder then checks against the bytes that came; 'ignored' for the
 * few requests whose payload is never read.
 */
export interface PayloadShape<T> {
  readonly size: number | { readonly min: number; readonly max: number } | 'ignored';
  decode(payload: Buffer, request: number): T;
}

/** The payload shapes of vhost-user.rst "Message Specification", as this backend takes them. */
export const PAYLOAD = {
  /** "N/A": no payload at all. */
  none: { size: 0, decode: (): undefined => undefined },
  /** "N/A" as well, but read by nobody: any size is let through (see each use for why). */
  ignored: { size: 'ignored', decode: (): undefined => undefined },
  u64: { size: 8, decode: u64 },
  vringState: { size: 8, decode: vringState },
  /** A u64: the ring in bits 0-7, bit 8 when no fd comes. */
  vringFdIndex: { size: 8, decode: vringFdIndex },
  vringAddress: { size: 40, decode: vringAddress },
  /** Up to 8 regions of 32 bytes after the count and its padding. */
  memoryTable: { size: { min: 8, max: 8 + 32 * MAX_MEM_REGIONS }, decode: memoryTable },
  singleRegion: { size: 40, decode: singleRegion },
  /** offset, size, flags, then up to 256 bytes of config space. */
  configAccess: { size: { min: 12, max: 12 + 256 }, decode: configAccess },
  logDescription: { size: 16, decode: logDescription },
  rarpMac: { size: 8, decode: rarpMac },
} as const satisfies Record<string, PayloadShape<unknown>>;

/** Throws EPROTO unless the payload's size fits the shape. */
export function checkPayloadSize(shape: PayloadShape<unknown>, payload: Buffer, request: number): void {
  const { size } = shape;
  if (size === 'ignored') return;
  if (typeof size === 'number') {
    if (payload.length !== size) throw malformed(request, size === 0 ? `takes no payload, got ${payload.length} bytes` : `payload is ${payload.length} bytes, not ${size}`);
  } else if (payload.length < size.min || payload.length > size.max) {
    throw malformed(request, `payload is ${payload.length} bytes, not ${size.min} to ${size.max}`);
  }
}
