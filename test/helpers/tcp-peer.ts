// A minimal TCP endpoint on top of the virtio-net driver, so the guest side of a
// test can hold a real TCP connection with the namespace's stack: passive open
// (SYN-ACK with MSS and window scale), in-order reassembly with a cumulative ACK
// per received segment, FIN handling; and an active open for sending. No
// retransmission of its own: out-of-order data is dropped and re-ACKed (or, with
// `reassemble`, kept until the gap is filled), and the kernel's retransmissions
// fill the gap.
import { checksum, ethernet, ipBytes, ipv4, onesSum, parseIpv4 } from '../../harness/packets';

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;

export function tcpPseudoHeaderSum(src: string, dst: string, length: number): number {
  const pseudo = Buffer.alloc(12);
  ipBytes(src).copy(pseudo, 0);
  ipBytes(dst).copy(pseudo, 4);
  pseudo[9] = 6;
  pseudo.writeUInt16BE(length, 10);
  return onesSum(pseudo);
}

export interface TcpSegmentFields {
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  /** Already padded to a multiple of 4 bytes. */
  options?: Buffer;
  payload?: Buffer;
  /** 'full' computes the checksum; 'partial' leaves the pseudo-header sum (NEEDS_CSUM). */
  checksum?: 'full' | 'partial';
}

/** A TCP header plus payload, the checksum over the IPv4 pseudo-header. */
export function tcp(f: TcpSegmentFields): Buffer {
  const options = f.options ?? Buffer.alloc(0);
  if (options.length % 4 !== 0) throw new Error('TCP options must be padded to 4 bytes');
  const payload = f.payload ?? Buffer.alloc(0);
  const headerLength = 20 + options.length;
  const segment = Buffer.alloc(headerLength + payload.length);
  segment.writeUInt16BE(f.srcPort, 0);
  segment.writeUInt16BE(f.dstPort, 2);
  segment.writeUInt32BE(f.seq >>> 0, 4);
  segment.writeUInt32BE(f.ack >>> 0, 8);
  segment[12] = (headerLength / 4) << 4;
  segment[13] = f.flags;
  segment.writeUInt16BE(f.window, 14);
  options.copy(segment, 20);
  payload.copy(segment, headerLength);
  const pseudo = tcpPseudoHeaderSum(f.src, f.dst, segment.length);
  segment.writeUInt16BE((f.checksum ?? 'full') === 'full' ? checksum(segment, pseudo) : pseudo, 16);
  return segment;
}

export interface ParsedTcp {
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  /** MSS and window scale, when the segment carries them. */
  mss?: number;
  wscale?: number;
  payload: Buffer;
  checksumField: number;
  /** The checksum verifies over the pseudo-header (meaningless for a NEEDS_CSUM frame). */
  checksumOk: boolean;
}

export function parseTcp(frame: Buffer): ParsedTcp | undefined {
  const ip = parseIpv4(frame);
  if (!ip || ip.protocol !== 6 || ip.payload.length < 20) return undefined;
  const s = ip.payload;
  const dataOffset = (s[12]! >> 4) * 4;
  if (dataOffset < 20 || dataOffset > s.length) return undefined;
  const parsed: ParsedTcp = {
    src: ip.src, dst: ip.dst,
    srcPort: s.readUInt16BE(0), dstPort: s.readUInt16BE(2),
    seq: s.readUInt32BE(4), ack: s.readUInt32BE(8),
    flags: s[13]!, window: s.readUInt16BE(14),
    payload: s.subarray(dataOffset),
    checksumField: s.readUInt16BE(16),
    checksumOk: checksum(s, tcpPseudoHeaderSum(ip.src, ip.dst, s.length)) === 0,
  };
  for (let i = 20; i < dataOffset;) {
    const kind = s[i]!;
    if (kind === 0) break;
    if (kind === 1) { i++; continue; }
    const len = s[i + 1] ?? 0;
    if (len < 2 || i + len > dataOffset) break;
    if (kind === 2 && len === 4) parsed.mss = s.readUInt16BE(i + 2);
    if (kind === 3 && len === 3) parsed.wscale = s[i + 2]!;
    i += len;
  }
  return parsed;
}

const seqAdd = (a: number, b: number): number => (a + b) >>> 0;
/** a - b in sequence space, as a signed 32-bit number. */
const seqDiff = (a: number, b: number): number => (a - b) | 0;

export interface TcpPeerOptions {
  mac: Buffer;
  ip: string;
  port: number;
  /** The MAC frames to the remote side go to (the tap's). */
  remoteMac: Buffer;
  /** Window scale shift we advertise (0..14). Default 7. */
  wscale?: number;
  /** Receive window in bytes, before scaling. Default 1 MiB. */
  windowBytes?: number;
  mss?: number;
  isn?: number;
  /**
   * Keep segments that arrive past a gap and take them when it is filled, as a
   * real receiver does. Without it (the default) they are dropped, so after a
   * burst of loss the sender goes back to the gap, one round trip per segment
   * without SACK, and its retransmission timer backs off: seconds per loss.
   */
  reassemble?: boolean;
}

export type TcpState = 'closed' | 'listen' | 'syn-sent' | 'established' | 'close-wait' | 'last-ack' | 'fin-wait' | 'done';

/**
 * One TCP connection seen from the guest. `handle` takes every frame the driver
 * received and returns the frames to send back (each with a full checksum).
 */
export class TcpPeer {
  readonly mac: Buffer;
  readonly ip: string;
  readonly port: number;
  readonly remoteMac: Buffer;
  readonly wscale: number;
  readonly windowBytes: number;
  readonly mss: number;
  state: TcpState = 'closed';
  remoteIp: string | undefined;
  remotePort: number | undefined;
  /** What the remote side offered in its SYN. */
  remoteMss: number | undefined;
  remoteWscale: number | undefined;
  remoteWindow = 0;
  sndUna: number;
  sndNxt: number;
  rcvNxt = 0;
  /** In-order bytes received, reassembled. */
  readonly chunks: Buffer[] = [];
  received = 0;
  /** Segments for this connection that carried data out of order (dropped, re-ACKed). */
  outOfOrder = 0;
  finReceived = false;
  resetReceived = false;
  readonly #reassemble: boolean;
  /** Out-of-order payloads by sequence number (with reassemble). */
  readonly #ahead = new Map<number, Buffer>();
  #ipId = 1;

  constructor(o: TcpPeerOptions) {
    this.mac = o.mac;
    this.ip = o.ip;
    this.port = o.port;
    this.remoteMac = o.remoteMac;
    this.wscale = o.wscale ?? 7;
    this.windowBytes = o.windowBytes ?? 1 << 20;
    this.mss = o.mss ?? 1460;
    this.sndUna = this.sndNxt = (o.isn ?? 0x1000_0000) >>> 0;
    this.#reassemble = o.reassemble ?? false;
  }

  listen(): void {
    this.state = 'listen';
  }

  /** Active open: returns the SYN to send. */
  connect(remoteIp: string, remotePort: number): Buffer {
    this.remoteIp = remoteIp;
    this.remotePort = remotePort;
    this.state = 'syn-sent';
    const syn = this.#frame(TCP_SYN, this.#synOptions());
    this.sndNxt = seqAdd(this.sndNxt, 1);
    return syn;
  }

  /** The reassembled byte stream. */
  stream(): Buffer {
    return Buffer.concat(this.chunks);
  }

  /** Whether the frame belongs to this connection (or is a SYN for a listening peer). */
  matches(t: ParsedTcp): boolean {
    if (t.dst !== this.ip || t.dstPort !== this.port) return false;
    if (this.remoteIp === undefined) return this.state === 'listen';
    return t.src === this.remoteIp && t.srcPort === this.remotePort;
  }

  /**
   * Processes one received Ethernet frame; returns the frames to send. Frames
   * not for this connection return []. The checksum of incoming segments is not
   * checked here: callers decide (a NEEDS_CSUM frame carries a partial sum).
   */
  handle(frame: Buffer): Buffer[] {
    const t = parseTcp(frame);
    if (!t || !this.matches(t)) return [];
    if (t.flags & TCP_RST) {
      this.resetReceived = true;
      this.state = 'done';
      return [];
    }
    if (t.flags & TCP_SYN) return this.#handleSyn(t);
    if (this.state === 'listen' || this.state === 'closed' || this.state === 'syn-sent') return [];
    if (t.flags & TCP_ACK) {
      if (seqDiff(t.ack, this.sndUna) > 0 && seqDiff(t.ack, this.sndNxt) <= 0) this.sndUna = t.ack;
      this.remoteWindow = t.window << (this.remoteWscale ?? 0);
      if (this.state === 'last-ack' && this.sndUna === this.sndNxt) this.state = 'done';
      if (this.state === 'fin-wait' && this.sndUna === this.sndNxt && this.finReceived) this.state = 'done';
    }
    let respond = false;
    if (t.payload.length > 0) {
      respond = true;
      const offset = seqDiff(this.rcvNxt, t.seq);
      if (offset >= 0 && offset < t.payload.length) {
        // In order (possibly overlapping what we have: take only the new bytes).
        this.#take(t.payload.subarray(offset));
        this.#takeAhead();
      } else if (offset < 0) {
        this.outOfOrder++;
        if (this.#reassemble && this.#ahead.size < 4096 && !this.#ahead.has(t.seq)) this.#ahead.set(t.seq, Buffer.from(t.payload));
      }
    }
    const out: Buffer[] = [];
    if ((t.flags & TCP_FIN) && seqAdd(t.seq, t.payload.length) === this.rcvNxt && !this.finReceived) {
      this.finReceived = true;
      this.rcvNxt = seqAdd(this.rcvNxt, 1);
      respond = false;
      if (this.state === 'established') {
        // Passive close: ACK their FIN and send ours in one segment.
        out.push(this.#frame(TCP_FIN | TCP_ACK));
        this.sndNxt = seqAdd(this.sndNxt, 1);
        this.state = 'last-ack';
      } else {
        out.push(this.#frame(TCP_ACK));
        if (this.state === 'fin-wait' && this.sndUna === this.sndNxt) this.state = 'done';
      }
    } else if (t.flags & TCP_FIN) {
      respond = true; // a FIN we already took, or one past a gap: re-ACK
    }
    if (respond) out.push(this.#frame(TCP_ACK));
    return out;
  }

  #take(fresh: Buffer): void {
    this.chunks.push(Buffer.from(fresh));
    this.received += fresh.length;
    this.rcvNxt = seqAdd(this.rcvNxt, fresh.length);
  }

  /** Takes kept segments the in-order data has reached, as long as there are some. */
  #takeAhead(): void {
    for (let progress = true; progress && this.#ahead.size > 0;) {
      progress = false;
      for (const [seq, payload] of this.#ahead) {
        const offset = seqDiff(this.rcvNxt, seq);
        if (offset < 0) continue;
        this.#ahead.delete(seq);
        if (offset < payload.length) {
          this.#take(payload.subarray(offset));
          progress = true;
        }
      }
    }
  }

  /**
   * A data segment (ACK|PSH) of `payload` at sndNxt, which it advances. With
   * `partial` the checksum field holds the pseudo-header sum for NEEDS_CSUM.
   */
  data(payload: Buffer, partial = false): Buffer {
    this.#assertEstablished();
    const frame = this.#frame(TCP_ACK | TCP_PSH, undefined, payload, undefined, partial ? 'partial' : 'full');
    this.sndNxt = seqAdd(this.sndNxt, payload.length);
    return frame;
  }

  /** Our FIN (active close). */
  close(): Buffer {
    this.#assertEstablished();
    const frame = this.#frame(TCP_FIN | TCP_ACK);
    this.sndNxt = seqAdd(this.sndNxt, 1);
    this.state = 'fin-wait';
    return frame;
  }

  #assertEstablished(): void {
    if (this.state !== 'established') throw new Error(`TCP peer is ${this.state}, not established`);
  }

  #handleSyn(t: ParsedTcp): Buffer[] {
    if (this.state === 'listen' || (this.state === 'established' && t.seq === seqAdd(this.rcvNxt, -1) && !(t.flags & TCP_ACK))) {
      // A new SYN, or the remote side retransmitting it because our SYN-ACK was slow.
      if (this.state === 'listen') {
        this.remoteIp = t.src;
        this.remotePort = t.srcPort;
        this.rcvNxt = seqAdd(t.seq, 1);
        this.remoteMss = t.mss;
        this.remoteWscale = t.wscale;
        this.remoteWindow = t.window;
        this.sndNxt = seqAdd(this.sndNxt, 1);
        this.state = 'established';
      }
      return [this.#frame(TCP_SYN | TCP_ACK, this.#synOptions(), undefined, seqAdd(this.sndNxt, -1))];
    }
    if (this.state === 'syn-sent' && (t.flags & TCP_ACK) && t.ack === this.sndNxt) {
      this.rcvNxt = seqAdd(t.seq, 1);
      this.sndUna = t.ack;
      this.remoteMss = t.mss;
      this.remoteWscale = t.wscale;
      // The window in a SYN is never scaled.
      this.remoteWindow = t.window;
      this.state = 'established';
      return [this.#frame(TCP_ACK)];
    }
    if (this.state === 'established' && (t.flags & TCP_ACK) && seqAdd(t.seq, 1) === this.rcvNxt) {
      return [this.#frame(TCP_ACK)]; // a retransmitted SYN-ACK: our ACK was lost
    }
    return [];
  }

  #synOptions(): Buffer {
    // MSS, NOP, window scale: 4 + 1 + 3 = 8 bytes.
    const o = Buffer.alloc(8);
    o[0] = 2; o[1] = 4; o.writeUInt16BE(this.mss, 2);
    o[4] = 1;
    o[5] = 3; o[6] = 3; o[7] = this.wscale;
    return o;
  }

  #frame(flags: number, options?: Buffer, payload?: Buffer, seq = this.sndNxt, mode: 'full' | 'partial' = 'full'): Buffer {
    if (this.remoteIp === undefined || this.remotePort === undefined) throw new Error('TCP peer has no remote side yet');
    // A SYN's window is never scaled; afterwards the field is windowBytes >> wscale.
    const window = flags & TCP_SYN ? Math.min(0xffff, this.windowBytes) : Math.min(0xffff, this.windowBytes >>> this.wscale);
    const segment = tcp({
      src: this.ip, dst: this.remoteIp, srcPort: this.port, dstPort: this.remotePort,
      seq, ack: flags & TCP_ACK ? this.rcvNxt : 0, flags, window, options, payload, checksum: mode,
    });
    const id = this.#ipId;
    this.#ipId = (this.#ipId + 1) & 0xffff;
    return ethernet(this.remoteMac, this.mac, 0x0800, ipv4(this.ip, this.remoteIp, 6, segment, id));
  }
}
