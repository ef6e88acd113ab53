// Assembling vhost-user messages from non-blocking reads (native recvSome) as
// the fd poller reports the socket readable, so that no peer can hold the event
// loop: a message that arrives a byte at a time costs a read per byte, never a
// wait on the JS thread. A message must be whole within a deadline from its
// first byte; the fds that came with it are the caller's once it is, and are
// closed here if it never is.
import { makeError } from '../errors';
import { native } from '../native';
import { cancelWait, waitReadable } from '../virtio/eventfd';
import { HEADER_SIZE, decodeHeader, type Header } from './protocol';

export interface ReceivedMessage extends Header {
  payload: Buffer;
  /** SCM_RIGHTS fds that came with the message: the caller's to keep or close. */
  fds: number[];
}

export interface MessageReaderOptions {
  /** A larger size in a header fails the read (before the payload is read). */
  maxPayload: number;
  /** More fds on one message fail the read. */
  maxFds: number;
  /** From a message's first byte to its last. */
  deadlineMs: number;
}

/** Longest single wait: timers take at most 2^31 - 1 ms, and a wait this long is idle anyway. */
const MAX_WAIT_MS = 60_000;

export class MessageReader {
  readonly #fd: number;
  readonly #options: MessageReaderOptions;
  readonly #header = Buffer.alloc(HEADER_SIZE);
  #headerBytes = 0;
  #payload: Buffer | undefined;
  #payloadBytes = 0;
  #fds: number[] = [];
  #deadline = 0;
  #cancelled = false;

  constructor(fd: number, options: MessageReaderOptions) {
    this.#fd = fd;
    this.#options = options;
  }

  /**
   * The next whole message; undefined once the peer closed the connection
   * between messages, or after cancel(). Throws when the peer closed it inside a
   * message, sent more than the limits, or did not finish a message within the
   * deadline (ETIMEDOUT), and when no message starts within `idleMs` (ETIMEDOUT).
   * The fds of a message not read whole are closed.
   */
  async next(idleMs = Infinity): Promise<ReceivedMessage | undefined> {
    const idleUntil = Date.now() + idleMs;
    try {
      for (;;) {
        if (this.#cancelled) {
          this.#discard();
          return undefined;
        }
        const got = this.#readWaiting();
        if (got !== 'wait') return got;
        const started = this.#headerBytes > 0;
        const remaining = (started ? this.#deadline : idleUntil) - Date.now();
        if (remaining <= 0) throw this.#timeout(started, idleMs);
        await waitReadable(this.#fd, Math.min(remaining, MAX_WAIT_MS));
      }
    } catch (error) {
      this.#discard();
      throw error;
    }
  }

  /** Ends a pending next() with undefined (and its partial message's fds closed). */
  cancel(): void {
    this.#cancelled = true;
    cancelWait(this.#fd);
  }

  /** Reads what the socket holds for the current message: the message once whole, undefined at a clean end, 'wait' for more. */
  #readWaiting(): ReceivedMessage | undefined | 'wait' {
    for (;;) {
      const inHeader = this.#headerBytes < HEADER_SIZE;
      const need = inHeader ? HEADER_SIZE - this.#headerBytes : this.#payload!.length - this.#payloadBytes;
      const read = native.recvSome(this.#fd, need, this.#options.maxFds - this.#fds.length);
      this.#fds.push(...read.fds);
      if (read.fdsCut) throw makeError('EMSGSIZE', `a message came with more than ${this.#options.maxFds} fds (they were closed)`);
      if (read.data.length === 0) {
        if (!read.end) return 'wait';
        if (this.#headerBytes === 0 && this.#fds.length === 0) return undefined;
        throw makeError('ECONNRESET', `the peer closed the connection inside a message (${this.#received()} bytes of it came)`);
      }
      if (this.#headerBytes === 0) this.#deadline = Date.now() + this.#options.deadlineMs;
      if (inHeader) {
        read.data.copy(this.#header, this.#headerBytes);
        this.#headerBytes += read.data.length;
        if (this.#headerBytes < HEADER_SIZE) continue;
        const { size } = decodeHeader(this.#header);
        if (size > this.#options.maxPayload) throw makeError('EMSGSIZE', `a payload of ${size} bytes is over the ${this.#options.maxPayload} allowed`);
        this.#payload = Buffer.alloc(size);
      } else {
        read.data.copy(this.#payload!, this.#payloadBytes);
        this.#payloadBytes += read.data.length;
      }
      if (this.#payloadBytes === this.#payload!.length) return this.#take();
    }
  }

  #take(): ReceivedMessage {
    const message = { ...decodeHeader(this.#header), payload: this.#payload!, fds: this.#fds };
    this.#fds = [];
    this.#reset();
    return message;
  }

  #received(): number {
    return this.#headerBytes + this.#payloadBytes;
  }

  #timeout(started: boolean, idleMs: number): Error {
    if (!started) return makeError('ETIMEDOUT', `no message within ${idleMs} ms`);
    const total = HEADER_SIZE + (this.#payload?.length ?? 0);
    return makeError('ETIMEDOUT', `a message was not whole ${this.#options.deadlineMs} ms after its first byte (${this.#received()} of ${this.#payload ? total : 'at least 12'} bytes came)`);
  }

  #discard(): void {
    for (const fd of this.#fds.splice(0)) {
      try {
        native.closeFd(fd);
      } catch {
        // already closed
      }
    }
    this.#reset();
  }

  #reset(): void {
    this.#headerBytes = 0;
    this.#payload = undefined;
    this.#payloadBytes = 0;
  }
}
