// The control virtqueue (virtio 1.x 5.1.6.5), served in JS: commands are rare
// and small. Each chain is a request (class, command, data) followed by a
// one-byte ack the device writes. The ring itself is walked by the same
// defensive native code as the data path.
import { errorCode, makeError } from '../errors';
import { native, type NativeVirtqueue } from '../native';
import type { DirtyLogSlot } from './dirty-log';
import { EventFd } from './eventfd';
import {
  VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, VIRTIO_NET_F_CTRL_MAC_ADDR, VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_GUEST_ANNOUNCE,
  VIRTIO_NET_F_MQ, VIRTIO_NET_F_RSS, hasFeature,
} from './features';
import type { GuestMemory } from './guest-memory';
import type { VirtqueueConfig } from './queue-pair';
import { queueFaultCode, type QueueFaultCode } from './queue-fault';
import { freshRingBase } from './ring-base';
import { parseRssConfig, type RssConfig } from './rss';

export const VIRTIO_NET_OK = 0;
export const VIRTIO_NET_ERR = 1;

export const VIRTIO_NET_CTRL_RX = 0;
export const VIRTIO_NET_CTRL_RX_PROMISC = 0;
export const VIRTIO_NET_CTRL_RX_ALLMULTI = 1;
export const VIRTIO_NET_CTRL_MAC = 1;
export const VIRTIO_NET_CTRL_MAC_TABLE_SET = 0;
export const VIRTIO_NET_CTRL_MAC_ADDR_SET = 1;
export const VIRTIO_NET_CTRL_ANNOUNCE = 3;
export const VIRTIO_NET_CTRL_ANNOUNCE_ACK = 0;
export const VIRTIO_NET_CTRL_MQ = 4;
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET = 0;
export const VIRTIO_NET_CTRL_MQ_RSS_CONFIG = 1;
export const VIRTIO_NET_CTRL_MQ_HASH_CONFIG = 2;
export const VIRTIO_NET_CTRL_GUEST_OFFLOADS = 5;
export const VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET = 0;

/** What the device does for each command; each returns whether it succeeded. */
export interface ControlCommandHandler {
  setRxMode(mode: 'promisc' | 'allmulti', on: boolean): boolean;
  setMacTable(unicast: Buffer[], multicast: Buffer[]): boolean;
  setMac(mac: Buffer): boolean;
  announceAck(): boolean;
  setQueuePairs(pairs: number): boolean;
  setGuestOffloads(offloads: bigint): boolean;
  /** VIRTIO_NET_CTRL_MQ_RSS_CONFIG, decoded but not checked (see rssConfigError). Without it the command is ERR. */
  setRss?(config: RssConfig): boolean;
}

/** Parses one MAC table of a MAC_TABLE_SET: u32 entries, then 6 bytes each. */
function macTable(data: Buffer, offset: number): { macs: Buffer[]; end: number } | undefined {
  if (offset + 4 > data.length) return undefined;
  const entries = data.readUInt32LE(offset);
  const end = offset + 4 + entries * 6;
  if (entries > 1024 || end > data.length) return undefined;
  const macs: Buffer[] = [];
  for (let i = 0; i < entries; i++) macs.push(Buffer.from(data.subarray(offset + 4 + i * 6, offset + 10 + i * 6)));
  return { macs, end };
}

/**
 * Decodes one command and runs it; returns the ack. Anything malformed, unknown,
 * not negotiated or out of range is VIRTIO_NET_ERR; nothing here throws.
 */
export function handleControlCommand(request: Buffer, features: bigint, handler: ControlCommandHandler): number {
  if (request.length < 2) return VIRTIO_NET_ERR;
  const cls = request[0]!;
  const command = request[1]!;
  const data = request.subarray(2);
  const ok = (result: boolean): number => (result ? VIRTIO_NET_OK : VIRTIO_NET_ERR);
  try {
    switch (cls) {
      case VIRTIO_NET_CTRL_RX:
        if (!hasFeature(features, VIRTIO_NET_F_CTRL_RX) || data.length !== 1) return VIRTIO_NET_ERR;
        if (command === VIRTIO_NET_CTRL_RX_PROMISC) return ok(handler.setRxMode('promisc', data[0] !== 0));
        if (command === VIRTIO_NET_CTRL_RX_ALLMULTI) return ok(handler.setRxMode('allmulti', data[0] !== 0));
        return VIRTIO_NET_ERR;
      case VIRTIO_NET_CTRL_MAC:
        if (command === VIRTIO_NET_CTRL_MAC_ADDR_SET) {
          if (!hasFeature(features, VIRTIO_NET_F_CTRL_MAC_ADDR) || data.length !== 6) return VIRTIO_NET_ERR;
          return ok(handler.setMac(Buffer.from(data)));
        }
        if (command === VIRTIO_NET_CTRL_MAC_TABLE_SET) {
          if (!hasFeature(features, VIRTIO_NET_F_CTRL_RX)) return VIRTIO_NET_ERR;
          const unicast = macTable(data, 0);
          const multicast = unicast && macTable(data, unicast.end);
          if (!unicast || !multicast || multicast.end !== data.length) return VIRTIO_NET_ERR;
          return ok(handler.setMacTable(unicast.macs, multicast.macs));
        }
        return VIRTIO_NET_ERR;
      case VIRTIO_NET_CTRL_ANNOUNCE:
        if (!hasFeature(features, VIRTIO_NET_F_GUEST_ANNOUNCE) || command !== VIRTIO_NET_CTRL_ANNOUNCE_ACK || data.length !== 0) return VIRTIO_NET_ERR;
        return ok(handler.announceAck());
      case VIRTIO_NET_CTRL_MQ:
        if (command === VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET) {
          if (!hasFeature(features, VIRTIO_NET_F_MQ) || data.length !== 2) return VIRTIO_NET_ERR;
          return ok(handler.setQueuePairs(data.readUInt16LE(0)));
        }
        if (command === VIRTIO_NET_CTRL_MQ_RSS_CONFIG) {
          // 5.1.6.5.7.1: only with VIRTIO_NET_F_RSS negotiated (MQ is not needed).
          if (!hasFeature(features, VIRTIO_NET_F_RSS) || !handler.setRss) return VIRTIO_NET_ERR;
          const config = parseRssConfig(data);
          return config ? ok(handler.setRss(config)) : VIRTIO_NET_ERR;
        }
        return VIRTIO_NET_ERR; // HASH_CONFIG needs VIRTIO_NET_F_HASH_REPORT, not offered
      case VIRTIO_NET_CTRL_GUEST_OFFLOADS:
        if (!hasFeature(features, VIRTIO_NET_F_CTRL_GUEST_OFFLOADS) || command !== VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET || data.length !== 8) {
          return VIRTIO_NET_ERR;
        }
        return ok(handler.setGuestOffloads(data.readBigUInt64LE(0)));
      default:
        return VIRTIO_NET_ERR;
    }
  } catch {
    return VIRTIO_NET_ERR;
  }
}

/**
 * Commands answered before the event loop gets a turn. A guest can re-post a
 * command as fast as the device answers it, and the VMM's timers, I/O and the
 * other devices on this thread must not wait for it to stop.
 */
export const COMMANDS_PER_TURN = 64;

/** Serves the control virtqueue: waits for kicks, answers each command, calls. */
export class ControlQueue {
  readonly #queue: NativeVirtqueue;
  readonly #kick: EventFd;
  readonly #callFd: number;
  #running = false;
  #released = false;
  #served: Promise<void> = Promise.resolve();
  /** Commands answered, by ack. */
  readonly counts = { ok: 0, err: 0 };

  constructor(
    memory: GuestMemory,
    ring: VirtqueueConfig & { dirtyLog?: DirtyLogSlot },
    private readonly features: bigint,
    private readonly handler: ControlCommandHandler,
    private readonly onBroken: (message: string, code: QueueFaultCode) => void,
  ) {
    this.#queue = new native.NativeVirtqueue(memory.native, {
      size: ring.size, descAddr: ring.descAddr, availAddr: ring.availAddr, usedAddr: ring.usedAddr,
      lastAvailIdx: ring.lastAvailIdx ?? freshRingBase(ring.packed ?? false), packed: ring.packed ?? false,
      eventIdx: ring.eventIdx ?? false, indirectDesc: ring.indirectDesc ?? false,
      ...(ring.dirtyLog ? { dirtyLog: ring.dirtyLog.native } : {}),
      ...(ring.usedLogAddr !== undefined ? { usedLogAddr: ring.usedLogAddr } : {}),
    });
    this.#kick = EventFd.borrow(ring.kickFd);
    this.#callFd = ring.callFd ?? -1;
  }

  start(): void {
    if (this.#released) throw makeError('EINVAL', 'a stopped control queue cannot be restarted: make a new ControlQueue');
    if (this.#running) return;
    this.#running = true;
    this.#served = this.#serve();
  }

  /** Stops serving; resolves once the loop has ended. Where the ring stopped is lastAvailIdx. */
  async stop(): Promise<void> {
    this.#running = false;
    this.#kick.close(); // wakes the wait; the fd stays the VMM's
    await this.#served;
    // The VMM may unmap guest memory right after a reset: do not hold it until GC.
    this.#released = true;
    this.#queue.release();
  }

  get lastAvailIdx(): number {
    return this.#queue.lastAvailIdx();
  }

  /** Answers the commands waiting now, at most `budget` of them; returns how many. */
  drain(budget = COMMANDS_PER_TURN): number {
    if (this.#released) return 0;
    let answered = 0;
    while (answered < budget) {
      let chain: ReturnType<NativeVirtqueue['pop']>;
      try {
        this.#queue.disableNotify();
        chain = this.#queue.pop();
      } catch (error) {
        this.#running = false;
        // EPROTO: the driver broke a ring rule, named by the error's `fault`.
        if (errorCode(error) === 'EPROTO') this.onBroken((error as Error).message, queueFaultCode((error as { fault?: unknown }).fault, 'control-queue-error'));
        else this.onBroken(String(error), 'control-queue-error');
        return answered;
      }
      if (chain === null) {
        if (this.#queue.enableNotify()) continue;
        break;
      }
      // Without a writable byte there is nowhere to put the ack: return the chain unanswered.
      const ack = chain.writable >= 1 ? handleControlCommand(chain.readable, this.features, this.handler) : VIRTIO_NET_ERR;
      this.#queue.complete(chain.writable >= 1 ? Buffer.from([ack]) : undefined);
      if (ack === VIRTIO_NET_OK) this.counts.ok++;
      else this.counts.err++;
      answered++;
      if (this.#callFd >= 0 && this.#queue.needsCall()) native.eventfdWrite(this.#callFd);
    }
    return answered;
  }

  async #serve(): Promise<void> {
    while (this.#running) {
      const answered = this.drain();
      if (!this.#running) break;
      if (answered >= COMMANDS_PER_TURN) {
        // The budget ran out with commands maybe still waiting (notifications are
        // still off): come back after the event loop's other work, not on a kick.
        await new Promise((resolve) => setImmediate(resolve));
        continue;
      }
      await this.#kick.wait(1000);
    }
  }
}
