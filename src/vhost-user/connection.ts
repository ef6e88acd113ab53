// Reading and answering vhost-user messages on one connected socket. Messages
// are assembled from non-blocking reads (MessageReader): however slowly a
// frontend sends, the event loop never waits on it, and a message not whole
// within the deadline ends the connection.
import { errorCode } from '../errors';
import { native } from '../native';
import type { VirtioNetDevice } from '../virtio/net-device';
import { MessageReader, type ReceivedMessage } from './message-reader';
import {
  FLAG_REPLY, FLAG_VERSION_MASK, MAX_FDS, MAX_PAYLOAD, VHOST_USER_VERSION, encodeMessage, encodeU64, requestName,
} from './protocol';
import type { RingPositions } from './ring-positions';
import { VhostUserSession, type Logger } from './session';

/** A message must be whole this long after its first byte, or the connection is dropped. */
export const DEFAULT_MESSAGE_DEADLINE_MS = 1000;

/** Messages served back to back before the event loop gets a turn (a frontend that floods must not starve timers). */
const MESSAGES_PER_TURN = 16;

export class VhostUserConnection {
  readonly session: VhostUserSession;
  #fd: number;
  readonly #reader: MessageReader;
  #closed = false;
  readonly #truncatedPagesBefore = native.guestMemoryTruncatedPages();
  /** Messages handled, for logs and tests. */
  messages = 0;

  constructor(fd: number, device: VirtioNetDevice, private readonly log: Logger, messageDeadlineMs = DEFAULT_MESSAGE_DEADLINE_MS, ringPositions?: RingPositions) {
    this.#fd = fd;
    this.#reader = new MessageReader(fd, { maxPayload: MAX_PAYLOAD, maxFds: MAX_FDS, deadlineMs: messageDeadlineMs });
    this.session = new VhostUserSession(device, log, ringPositions);
  }

  /** Serves the connection until the frontend leaves, breaks the protocol, or close() is called. */
  async run(): Promise<void> {
    // How the connection ended, logged once it is released: a reader of the log (an
    // operator, a test reading /proc/PID/maps) may rely on the guest's memory being
    // unmapped and the workers gone by the time it sees the line.
    let farewell: (() => void) | undefined;
    try {
      for (let read = 1; !this.#closed; read++) {
        if (read % MESSAGES_PER_TURN === 0) await new Promise((resolve) => setImmediate(resolve));
        let message: ReceivedMessage | undefined;
        try {
          message = await this.#reader.next();
        } catch (error) {
          const details = { error: (error as Error).message, code: errorCode(error), ...this.#memoryFaults() };
          farewell = () => this.log('connection-error', details);
          break;
        }
        if (!message) {
          if (!this.#closed) {
            const details = { messages: this.messages, ...this.#memoryFaults() };
            farewell = () => this.log('disconnected', details);
          }
          break;
        }
        if (this.#closed) {
          closeAll(message.fds);
          break;
        }
        if (!this.#serveOne(message)) break;
      }
    } finally {
      this.#release();
      farewell?.();
    }
  }

  /**
   * Pages of guest memory that faulted while this connection was served because
   * the frontend truncated their file, and now read as zeros (see GuestMemory).
   */
  #memoryFaults(): { truncatedPages?: number } {
    const pages = native.guestMemoryTruncatedPages() - this.#truncatedPagesBefore;
    return pages > 0 ? { truncatedPages: pages } : {};
  }

  /** Ends the connection from our side (daemon shutdown). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#reader.cancel();
  }

  /** Answers one message; false when the connection must end. */
  #serveOne(message: ReceivedMessage): boolean {
    const { request, flags, size, payload, fds } = message;
    const fail = (why: string): false => {
      closeAll(fds);
      this.log('bad-message', { request, flags, size, error: why });
      return false;
    };
    if ((flags & FLAG_VERSION_MASK) !== VHOST_USER_VERSION) return fail(`version ${flags & FLAG_VERSION_MASK}, expected ${VHOST_USER_VERSION}`);
    if (flags & FLAG_REPLY) return fail('a reply where a request was expected');
    this.messages++;
    const ack = this.session.wantsAck(flags);
    // Unknown requests are answered as acked ones: with a failure ack if asked for, else the end of the connection.
    const repliesAlways = VhostUserSession.replyRule(request) === 'always';
    try {
      const { reply } = this.session.handle({ request, flags, payload, fds });
      if (reply) this.#send(request, reply);
      else if (ack) this.#send(request, encodeU64(0));
      return true;
    } catch (error) {
      const code = errorCode(error) ?? 'EIO';
      this.log('request-failed', { request: requestName(request), code, error: (error as Error).message });
      if (ack && !repliesAlways) {
        this.#send(request, encodeU64(1));
        return true;
      }
      // A malformed message, or a question we cannot answer: the frontend cannot go on either.
      return code !== 'EPROTO' && !repliesAlways;
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
