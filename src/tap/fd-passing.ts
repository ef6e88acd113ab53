// Handing file descriptors between processes over unix sockets (SCM_RIGHTS).
// The usual shape: a privileged helper creates the tap, connects to (or shares a
// socketpair with) the unprivileged backend, and sends the queue fds with
// sendTapQueues(); the backend adopts them with receiveTapQueues().
import { errorCode, makeError } from '../errors';
import { native } from '../native';
import { TapSteering } from './steering';
import { Tap } from './tap';

export type UnixSocketType = 'stream' | 'seqpacket';

/** A connected pair of unix sockets; give one end to a child (e.g. in spawn's `stdio`). */
export function socketPair(type: UnixSocketType = 'seqpacket'): [number, number] {
  return native.socketPair(type);
}

/** Listens on a unix socket path; returns the listening fd. The path must not exist. */
export function listenUnix(path: string, type: UnixSocketType = 'seqpacket', backlog = 16): number {
  return native.unixListen(path, type, backlog);
}

/** Connects to a unix socket path; returns the connected fd. */
export function connectUnix(path: string, type: UnixSocketType = 'seqpacket'): number {
  return native.unixConnect(path, type);
}

/** Accepts one connection (on the thread pool, so the event loop keeps running); rejects with ETIMEDOUT. */
export function acceptUnix(listenFd: number, timeoutMs = 30_000): Promise<number> {
  return native.unixAccept(listenFd, timeoutMs);
}

/** Sends fds with a payload of at least one byte. The fds stay open here; the receiver gets its own copies. */
export function sendFds(sockFd: number, fds: readonly number[], payload: Uint8Array = Buffer.from([0])): void {
  native.sendFds(sockFd, [...fds], Buffer.from(payload));
}

export interface ReceivedFds {
  fds: number[];
  data: Buffer;
}

/** Receives one message and the fds it carries; `data` is empty when the peer closed the connection. */
export function receiveFds(sockFd: number, options: { maxFds?: number; maxBytes?: number; timeoutMs?: number } = {}): Promise<ReceivedFds> {
  const { maxFds = 253, maxBytes = 4096, timeoutMs = 30_000 } = options;
  return native.receiveFds(sockFd, maxFds, maxBytes, timeoutMs);
}

/** Closes an fd this process owns (received ones included). */
export function closeFd(fd: number): void {
  native.closeFd(fd);
}

const HANDOVER_MAGIC = 'vhost-tap/queues/1';

/** Sends every queue fd of `tap` with its name, for receiveTapQueues() on the other end. */
export function sendTapQueues(sockFd: number, tap: Tap, options: { steering?: TapSteering } = {}): void {
  const attached = tap.queues.map((q) => q.attached);
  // The steering program's map goes with the queues (after them): the receiver steers
  // by writing it, which needs no privilege; loading and attaching the program did.
  const steering = options.steering ?? tap.steering;
  const payload = Buffer.from(JSON.stringify({ magic: HANDOVER_MAGIC, name: tap.name, queues: tap.queues.length, attached, steeringMap: steering !== undefined }));
  sendFds(sockFd, [...tap.queues.map((q) => q.fd), ...(steering ? [steering.mapFd] : [])], payload);
}

/** Receives queue fds sent by sendTapQueues() and adopts them as a Tap. Fds of a bad message are closed, never leaked. */
export async function receiveTapQueues(sockFd: number, timeoutMs = 30_000): Promise<Tap> {
  const { fds, data } = await receiveFds(sockFd, { timeoutMs });
  try {
    if (data.length === 0) throw makeError('ECONNRESET', 'the sender closed the socket before sending tap queues');
    let message: { magic?: unknown; name?: unknown; queues?: unknown; attached?: unknown; steeringMap?: unknown };
    try {
      message = JSON.parse(data.toString('utf8')) as typeof message;
    } catch {
      throw makeError('EINVAL', 'the message is not a tap queue handover (not JSON): send it with sendTapQueues()');
    }
    const withMap = message.steeringMap === true;
    if (message.magic !== HANDOVER_MAGIC || typeof message.name !== 'string' || message.queues !== fds.length - (withMap ? 1 : 0)) {
      throw makeError('EINVAL', `the message is not a tap queue handover or its fd count (${fds.length}) does not match: send it with sendTapQueues()`);
    }
    const attached = Array.isArray(message.attached) ? (message.attached as boolean[]) : undefined;
    const queueFds = withMap ? fds.slice(0, -1) : fds;
    const steering = withMap ? TapSteering.fromFds(fds[fds.length - 1]!) : undefined;
    const tap = Tap.fromFds(message.name, queueFds, attached ? { attached } : {});
    tap.steering = steering;
    return tap;
  } catch (error) {
    for (const fd of fds) {
      try {
        native.closeFd(fd);
      } catch {
        // already gone
      }
    }
    if (errorCode(error)) throw error;
    throw makeError('EIO', String(error), error);
  }
}
