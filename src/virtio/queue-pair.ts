import { EventEmitter } from 'node:events';

import { errorCode, makeError } from '../errors';
import { native, type NativeQueuePair, type NativeQueueStats } from '../native';
import type { TapQueue } from '../tap/tap';
import type { DirtyLogSlot } from './dirty-log';
import type { GuestMemory } from './guest-memory';
import { queueFaultCode, type QueueFaultCode } from './queue-fault';
import { freshRingBase } from './ring-base';

/** Where one virtqueue lives and how it signals: what vhost's SET_VRING_* messages carry. */
export interface VirtqueueConfig {
  /** Number of entries: up to 32768; a power of two for a split ring (a packed one need not be). */
  size: number;
  /**
   * Guest-physical addresses. Split ring: the descriptor table, available ring and
   * used ring. Packed ring: the descriptor ring, the driver event suppression area
   * ("driver area") and the device event suppression area ("device area").
   */
  descAddr: number;
  availAddr: number;
  usedAddr: number;
  /** VIRTIO_F_RING_PACKED negotiated: the ring has the packed layout (virtio 1.2, 2.8). Default false. */
  packed?: boolean;
  /**
   * Eventfd the driver signals when it adds buffers (KVM ioeventfd). The queue pair
   * takes its own copy when it is constructed (and closes it at stop()): the caller
   * may close this fd at any time after.
   */
  kickFd: number;
  /** Eventfd the device signals to interrupt the driver (KVM irqfd); omit to never interrupt. Copied like kickFd. */
  callFd?: number;
  /** VIRTIO_RING_F_EVENT_IDX negotiated. */
  eventIdx?: boolean;
  /** VIRTIO_RING_F_INDIRECT_DESC negotiated. */
  indirectDesc?: boolean;
  /**
   * Where to resume (vhost SET_VRING_BASE). Split ring: the 16-bit index in the
   * available ring, default 0. Packed ring, as vhost-user encodes it: bits 0-14 the
   * next descriptor to read, bit 15 its wrap counter, bits 16-30 the next used
   * slot, bit 31 its wrap counter; default 0x80008000, a ring that never ran. A
   * value with bits 16-31 clear resumes with nothing in flight (used = avail).
   */
  lastAvailIdx?: number;
  /** Live migration: the guest-physical address the used ring's writes are logged at (vhost's log_guest_addr). Default usedAddr. */
  usedLogAddr?: number;
  /**
   * A packed ring whose position must outlive this process (a vhost-user daemon
   * that may be restarted): the worker writes its used position after every
   * batch into two u32 at `offset` of `file`. See RingPositions.
   */
  positionRecord?: { file: GuestMemory; offset: number };
}

export interface QueuePairOptions {
  memory: GuestMemory;
  /** The tap queue this pair moves frames through (or its fd). Not used with txDiscardOnly. */
  tapQueue?: TapQueue | number;
  /** virtio_net_hdr size: must equal the tap's TUNSETVNETHDRSZ. */
  hdrSize: 10 | 12;
  /** VIRTIO_NET_F_MRG_RXBUF negotiated: a received frame may span several chains. */
  mergeableRx: boolean;
  /** With mergeable buffers, how much room to gather before each read: a typical frame. Default 1514 + 18 + header. */
  rxReserveBytes?: number;
  /**
   * The largest frame, header included, the tap can hand over: header + 18 + MTU when
   * the tap has no segmentation offloads. With it, rx reads up to 32 frames per
   * system call into buffers that hold it. Default 0: unknown (GSO frames may come),
   * one read per frame.
   */
  rxMaxFrameBytes?: number;
  /**
   * After the last frame, keep looking for work this many microseconds before
   * sleeping (vhost-net's busyloop_timeout). Cuts the wakeup latency of a kick or a
   * readable tap out of each round trip, at the cost of a core spinning while
   * traffic is sparse. Default 0: never spin; at idle the worker never spins.
   */
  busyPollUs?: number;
  /**
   * Live migration: the worker marks every byte it writes into guest memory in
   * the slot's current log (none: nothing is logged). The slot can be switched
   * while the worker runs.
   */
  dirtyLog?: DirtyLogSlot;
  /**
   * The pair is out of use while its tx ring stays started: the worker supplies no
   * rx frames, touches neither the tap nor the rx ring, and completes every chain
   * the driver posts on the tx ring unsent, as vhost-user.rst ("Ring states") asks
   * of a started but disabled ring, so the guest gets those buffers (and their
   * sockets' memory) back. tapQueue and rx are then not needed.
   */
  txDiscardOnly?: boolean;
  /** Virtqueue 2i (not needed with txDiscardOnly). */
  rx?: VirtqueueConfig;
  /** Virtqueue 2i+1. */
  tx: VirtqueueConfig;
}

export interface QueueStats {
  packets: number;
  bytes: number;
  /** Wakeups by the driver's kick (kicks that came while the worker was busy count once). */
  kicks: number;
  /** Interrupts sent to the driver (the call eventfd signalled). */
  calls: number;
  /** Interrupts that could not be sent at once and were dropped: the worker never waits on a call eventfd. */
  callsFailed: number;
  /** Wakeups by the tap (frames to read, or room to write again). */
  wakeups: number;
  /** io_uring submissions: packets / batches is how many frames each system call moved. */
  batches: number;
  /** Times the queue broke (0 or 1). */
  errors: number;
  drops: { tooBig: number; badHeader: number; tapError: number; stopped: number };
}

export interface QueuePairStats {
  rx: QueueStats;
  tx: QueueStats;
  rxBroken: boolean;
  txBroken: boolean;
}

/** Where the device stopped in each ring (vhost GET_VRING_BASE; for a packed ring, the encoding of VirtqueueConfig.lastAvailIdx). */
export interface QueuePairPosition {
  rxLastAvailIdx: number;
  txLastAvailIdx: number;
}

export interface QueueErrorEvent {
  /** Which side failed: a virtqueue or the tap. */
  queue: 'rx' | 'tx' | 'tap';
  /** Why, machine-readable: a ring fault ('bad-indirect', ...), 'tap-error' or 'worker-error' (see QueueFaultCode). */
  code: QueueFaultCode;
  /** The particulars, for a person: which descriptor, which address, the kernel's words. */
  message: string;
}

export interface QueuePairEvents {
  'queue-error': [QueueErrorEvent];
}

/**
 * A native worker thread for one queue pair (rx = virtqueue 2i, tx = 2i+1) that
 * moves frames between the virtqueues in guest memory and a tap queue. A
 * malformed ring or chain breaks that queue only, reported as a 'queue-error'
 * event; the process and the other queues go on.
 */
export class QueuePair extends EventEmitter<QueuePairEvents> {
  readonly #native: NativeQueuePair;
  /** See QueuePairOptions.txDiscardOnly. */
  readonly txDiscardOnly: boolean;

  constructor(options: QueuePairOptions) {
    super();
    const { memory, tapQueue, hdrSize, mergeableRx, rx, tx } = options;
    const txDiscardOnly = options.txDiscardOnly === true;
    this.txDiscardOnly = txDiscardOnly;
    if (hdrSize !== 10 && hdrSize !== 12) throw makeError('EINVAL', `hdrSize must be 10 or 12, got ${String(hdrSize)}`);
    if (!txDiscardOnly && tapQueue === undefined) throw makeError('EINVAL', 'a tap queue is required (only a txDiscardOnly pair has none)');
    const tapFd = tapQueue === undefined ? -1 : typeof tapQueue === 'number' ? tapQueue : tapQueue.fd;
    const rxReserveBytes = options.rxReserveBytes ?? 1514 + 18 + hdrSize;
    const ring = (q: VirtqueueConfig, which: string) => {
      if (!q || typeof q !== 'object') throw makeError('EINVAL', `${which} queue config is missing`);
      return {
        size: q.size, descAddr: q.descAddr, availAddr: q.availAddr, usedAddr: q.usedAddr,
        lastAvailIdx: q.lastAvailIdx ?? freshRingBase(q.packed ?? false), packed: q.packed ?? false, kickFd: q.kickFd, callFd: q.callFd ?? -1,
        eventIdx: q.eventIdx ?? false, indirectDesc: q.indirectDesc ?? false,
        ...(q.usedLogAddr !== undefined ? { usedLogAddr: q.usedLogAddr } : {}),
        ...(q.positionRecord && q.packed ? { positionFile: q.positionRecord.file.native, positionOffset: q.positionRecord.offset } : {}),
      };
    };
    try {
      this.#native = new native.NativeQueuePair(
        { memory: memory.native, tapFd, hdrSize, mergeableRx, rxReserveBytes, rxMaxFrameBytes: options.rxMaxFrameBytes ?? 0, busyPollUs: options.busyPollUs ?? 0, ...(txDiscardOnly ? { txDiscardOnly } : { rx: ring(rx!, 'rx') }), tx: ring(tx, 'tx'), ...(options.dirtyLog ? { dirtyLog: options.dirtyLog.native } : {}) },
        (where, message, code) => {
          const queue = where as QueueErrorEvent['queue'];
          this.emit('queue-error', { queue, code: queueFaultCode(code, queue === 'tap' ? 'tap-error' : 'worker-error'), message });
        },
      );
    } catch (error) {
      throw makeError(errorCode(error) ?? 'EINVAL', `invalid queue pair configuration: ${(error as Error).message}`, error);
    }
  }

  /**
   * Starts the worker thread. Throws EINVAL if the rings are not inside guest memory or
   * misaligned, or the errno of the system call that failed (EMFILE, ENOMEM, EPERM when
   * Linux AIO is refused...); a failed start releases what the pair holds (its fds, guest memory), as
   * stop() does: make a new QueuePair to try again.
   */
  start(): void {
    try {
      this.#native.start();
    } catch (error) {
      throw makeError(errorCode(error) ?? 'EINVAL', `cannot start the queue pair: ${(error as Error).message}`, error);
    }
  }

  /**
   * Stops and joins the worker (promptly: it never waits on the guest's or frontend's fds);
   * every chain it took is completed or given back, and its fds and guest memory are
   * released. Returns where each ring stopped.
   */
  stop(options: { discardTx?: boolean; drainRx?: boolean } = {}): QueuePairPosition {
    // discardTx: the pair goes out of use while its rings stay started (a queue-pair
    // change): what the driver left on the tx ring is completed unsent, so it gets
    // those buffers back (vhost-user.rst "Ring states": a started but disabled ring
    // discards its TX packets). Never for a stop that keeps the ring where it is
    // (GET_VRING_BASE, a migration): those chains are the destination's to send.
    // drainRx: no frame is steered to this queue any more (a steering program took it out
    // of its table, TapSteering): read it empty, since the detach that follows purges it.
    const { rxLastAvailIdx, txLastAvailIdx } = this.#native.stop(options.discardTx ?? false, options.drainRx ?? false);
    return { rxLastAvailIdx, txLastAvailIdx };
  }

  get running(): boolean {
    return this.#native.running();
  }

  /** Counters, read without stopping the worker. */
  stats(): QueuePairStats {
    const s = this.#native.stats();
    const copy = (q: NativeQueueStats): QueueStats => ({ ...q, drops: { ...q.drops } });
    return { rx: copy(s.rx), tx: copy(s.tx), rxBroken: s.rxBroken, txBroken: s.txBroken };
  }
}
