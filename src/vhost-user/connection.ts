// Reading and answering vhost-user messages on one connected socket.
import { errorCode } from '../errors';
import { native } from '../native';
import { cancelWait, waitReadable } from '../virtio/eventfd';
import type { VirtioNetDevice } from '../virtio/net-device';
import {
  FLAG_REPLY, FLAG_VERSION_MASK, HEADER_SIZE, MAX_FDS, MAX_PAYLOAD, Request, VHOST_USER_VERSION, decodeHeader,
  encodeMessage, encodeU64, requestName,
} from './protocol';
import { VhostUserSession, type Logger } from './session';

/** A message's payload must follow its header within this time, or the connection is dropped. */
const PAYLOAD_TIMEOUT_MS = 500;

/** Requests whose answer is a reply message of their own (not a reply-ack). */
const HAS_REPLY = new Set<number>([
  Request.GET_FEATURES, Request.GET_PROTOCOL_FEATURES, Request.GET_VRING_BASE, Request.GET_QUEUE_NUM,
  Request.GET_CONFIG, Request.GET_MAX_MEM_SLOTS, Request.GET_STATUS,
]);

export class VhostUserConnection {
  readonly session: VhostUserSession;
  #fd: number;
  #closed = false;
  /** Messages handled, for logs and tests. */
  messages = 0;

  constructor(fd: number, device: VirtioNetDevice, private readonly log: Logger) {
    this.#fd = fd;
    this.session = new VhostUserSession(device, log);
  }

  /** Serves the connection until the frontend leaves, breaks the protocol, or close() is called. */
  async run(): Promise<void> {
    try {
      while (!this.#closed) {
        if (!(await waitReadable(this.#fd, 60_000))) continue;
        if (this.#closed || !this.#serveOne()) break;
      }
    } finally {
      this.#release();
    }
  }

  /** Ends the connection from our side (daemon shutdown). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    cancelWait(this.#fd);
  }

  /** Reads and answers one message; false when the connection must end. */
  #serveOne(): boolean {
    let header: { data: Buffer; fds: number[] };
    try {
      header = native.recvHeader(this.#fd, HEADER_SIZE, MAX_FDS, PAYLOAD_TIMEOUT_MS);
    } catch (error) {
      this.log('connection-error', { error: (error as Error).message, code: errorCode(error) });
      return false;
    }
    if (header.data.length === 0) {
      this.log('disconnected', { messages: this.messages });
      return false;
    }
    const { request, flags, size } = decodeHeader(header.data);
    const fail = (why: string): false => {
      closeAll(header.fds);
      this.log('bad-message', { request, flags, size, error: why });
      return false;
    };
    if ((flags & FLAG_VERSION_MASK) !== VHOST_USER_VERSION) return fail(`version ${flags & FLAG_VERSION_MASK}, expected ${VHOST_USER_VERSION}`);
    if (flags & FLAG_REPLY) return fail('a reply where a request was expected');
    if (size > MAX_PAYLOAD) return fail(`payload of ${size} bytes is over ${MAX_PAYLOAD}`);
    let payload: Buffer;
    try {
      payload = size > 0 ? native.readExact(this.#fd, size, PAYLOAD_TIMEOUT_MS) : Buffer.alloc(0);
    } catch (error) {
      return fail((error as Error).message);
    }
    this.messages++;
    const ack = this.session.wantsAck(flags);
    try {
      const { reply } = this.session.handle({ request, flags, payload, fds: header.fds });
      if (reply) this.#send(request, reply);
      else if (ack) this.#send(request, encodeU64(0));
      return true;
    } catch (error) {
      const code = errorCode(error) ?? 'EIO';
      this.log('request-failed', { request: requestName(request), code, error: (error as Error).message });
      if (ack && !HAS_REPLY.has(request)) {
        this.#send(request, encodeU64(1));
        return true;
      }
      // A malformed message, or a question we cannot answer: the frontend cannot go on either.
      return code !== 'EPROTO' && !HAS_REPLY.has(request);
    }
  }

  #send(request: number, payload: Buffer): void {
    try {
      // Never block on a frontend that does not read its replies: drop it instead.
      native.sendFds(this.#fd, [], encodeMessage(request, FLAG_REPLY | VHOST_USER_VERSION, payload), true);
    } catch (error) {
      this.log('send-failed', { request: requestName(request), error: (error as Error).message });
      this.close();
    }
  }

  #release(): void {
    this.#closed = true;
    this.session.close();
    if (this.#fd >= 0) {
      try {
        native.closeFd(this.#fd);
      } catch {
        // already closed
      }
      this.#fd = -1;
    }
  }
}

function closeAll(fds: number[]): void {
  for (const fd of fds) {
    try {
      native.closeFd(fd);
    } catch {
      // already closed
    }
  }
}
