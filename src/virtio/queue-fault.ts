/**
 * Why a queue stopped: the machine-readable `code` of a 'queue-error' event
 * (QueueErrorEvent, DeviceQueueError), beside a message with the particulars. The
 * ring faults are the native walker's (native/core/queue_fault.h, queueFaultCode());
 * the device-level codes are the device model's own.
 *
 * The driver broke a ring rule (the queue stops; virtio 1.2 section in brackets):
 * - `avail-index-jump`: a split ring's avail index moved further than the queue size (2.7.6).
 * - `head-out-of-range`: a split ring's avail ring names a head past the descriptor table.
 * - `next-out-of-range`: a descriptor's `next` points past its table (2.7.5).
 * - `chain-too-long`: a chain longer than its table or the queue size, or looping (2.7.5.3.1, 2.8.4).
 * - `chain-too-large`: a chain of more than 2^32 bytes (2.7.5.1).
 * - `too-many-segments`: a chain of more segments than one readv/writev takes (1024 for tx,
 *   1023 for rx, 64 for the control queue).
 * - `bad-direction`: a read-only descriptor where the device writes, or the reverse, or a
 *   readable one after a writable one (2.7.4.2, 2.8.4).
 * - `bad-indirect`: an indirect descriptor not negotiated, nested, chained, misaligned, of a
 *   bad length or larger than the queue (2.7.5.3, 2.8.7).
 * - `address-out-of-bounds`: a buffer or indirect table outside guest memory.
 * - `descriptor-not-available`: a packed ring's chained descriptor not available in the
 *   chain's lap (2.8.6).
 * - `buffer-too-small`: a receive buffer smaller than the virtio-net header.
 *
 * The data path failed (not the driver's doing):
 * - `tap-error`: reading the tap queue failed with an errno that does not clear (the
 *   queue was detached under the worker: EBADFD); the pair stops receiving.
 * - `worker-error`: the worker thread could not wait for its events (epoll_wait failed).
 *
 * The device model failed (VirtioNetDevice only; no ring is at fault):
 * - `queue-start-failed`: queues could not be started: at DRIVER_OK (the device needs a
 *   reset; reported on pair 0), or the worker that discards a started but disabled
 *   pair's tx chains (vhost-user.rst "Ring states"). The message has the errno's words.
 * - `queue-switch-failed`: a change of the queue pairs in use, or of the RSS
 *   configuration, asked for by the control queue could not be made (a tap queue would
 *   not attach, a worker would not start); the previous set stays and the guest got
 *   VIRTIO_NET_ERR. Reported on the control queue.
 * - `tap-detach-failed`: a tap queue of a pair taken out of use would not detach.
 * - `control-queue-error`: serving the control queue failed for a reason other than a ring fault.
 */
export type QueueFaultCode =
  | 'avail-index-jump' | 'head-out-of-range' | 'next-out-of-range' | 'chain-too-long' | 'chain-too-large'
  | 'too-many-segments' | 'bad-direction' | 'bad-indirect' | 'address-out-of-bounds' | 'descriptor-not-available'
  | 'buffer-too-small' | 'tap-error' | 'worker-error'
  | 'queue-start-failed' | 'queue-switch-failed' | 'tap-detach-failed' | 'control-queue-error';

/** Every QueueFaultCode, in the order above. */
export const QUEUE_FAULT_CODES: readonly QueueFaultCode[] = [
  'avail-index-jump', 'head-out-of-range', 'next-out-of-range', 'chain-too-long', 'chain-too-large',
  'too-many-segments', 'bad-direction', 'bad-indirect', 'address-out-of-bounds', 'descriptor-not-available',
  'buffer-too-small', 'tap-error', 'worker-error',
  'queue-start-failed', 'queue-switch-failed', 'tap-detach-failed', 'control-queue-error',
];

/**
 * The code the addon gave, as a QueueFaultCode. An addon and a TS layer of different
 * versions could disagree; a code this layer does not know is passed on as it is
 * rather than hidden (the type is then a lie only about that one string).
 */
export function queueFaultCode(code: unknown, fallback: QueueFaultCode): QueueFaultCode {
  return typeof code === 'string' && code !== '' && code !== 'none' ? (code as QueueFaultCode) : fallback;
}
