// What a table of vhost-user requests says about each one, and the one place
// where a message is checked against its line before its handler runs: the
// request is known, its payload has the size the shape says and decodes, the
// protocol feature it needs was negotiated, and it came with as many fds as it
// must, each of the kind it must be. The table itself lives with the handlers
// (session.ts), as DPDK's lib/vhost/vhost_user.c keeps vhost_message_handlers[]
// beside its handlers, one line per request.
import { makeError } from '../errors';
import { native } from '../native';
import { ProtocolFeature, checkPayloadSize, requestName, type FdKind, type PayloadShape } from './protocol';

/**
 * How a request is answered (vhost-user.rst "Communication" and the REPLY_ACK
 * section): 'always', with a reply payload of its own, whatever the flags say;
 * 'on-need-reply', with a u64 ack (0 success) only when REPLY_ACK was negotiated
 * and the frontend set NEED_REPLY. With REPLY_ACK the frontend may ask for an ack
 * on any request, so no request this backend serves is never answered.
 */
export type ReplyRule = 'always' | 'on-need-reply';

/** What the handler hands back: a reply payload, for the requests answered 'always'. */
export interface Outcome {
  reply?: Buffer;
}

export interface FdRule<T> {
  /** How many: a number, 'optional' (0 or 1), or a count read from the decoded payload (regions, the no-fd flag). */
  count: number | 'optional' | ((value: T) => number);
  kind: FdKind;
}

/** One line of the table: request `T`'s payload decodes to a T, which the handler gets with the checked fds. */
export interface RequestLine<Session, T> {
  payload: PayloadShape<T>;
  /** None when absent. */
  fds?: FdRule<T>;
  /** 'on-need-reply' when absent. */
  reply?: ReplyRule;
  /** The protocol feature without which the request is refused (EPROTO). */
  needs?: ProtocolFeature;
  handle(session: Session, value: T, fds: readonly number[]): Outcome | void;
}

export type RequestTable<Session> = Readonly<Partial<Record<number, RequestLine<Session, unknown>>>>;

/**
 * Makes lines for a table of `Session`'s handlers: each line's payload type is
 * inferred from its shape and checked against its handler, and then forgotten,
 * so that lines of different payloads sit in one table.
 */
export function lineFor<Session>(): <T>(line: RequestLine<Session, T>) => RequestLine<Session, unknown> {
  return (line) => line as RequestLine<Session, unknown>;
}

/** No eventfd gets this far honestly; one a frontend set up there would make our next signal overflow it. */
const EVENTFD_COUNT_LIMIT = 1n << 63n;

/**
 * Checks a message against its line, all before anything changes: EPROTO for an
 * unknown request, a payload of the wrong size or shape, a protocol feature not
 * negotiated, or the wrong number of fds; EINVAL for an fd of the wrong kind.
 * Returns the line and the decoded payload. The fds stay the caller's to close.
 */
export function admit<Session>(
  table: RequestTable<Session>, request: number, payload: Buffer, fds: readonly number[], protocolFeatures: bigint,
): { line: RequestLine<Session, unknown>; value: unknown } {
  const line = table[request];
  if (!line) throw makeError('EPROTO', `${requestName(request)} is not supported by this backend`);
  checkPayloadSize(line.payload, payload, request);
  if (line.needs !== undefined && !(protocolFeatures & (1n << BigInt(line.needs)))) {
    throw makeError('EPROTO', `${requestName(request)} without the ${ProtocolFeature[line.needs]} protocol feature`);
  }
  const value = line.payload.decode(payload, request);
  checkFds(request, line.fds, value, fds);
  return { line, value };
}

function checkFds<T>(request: number, rule: FdRule<T> | undefined, value: T, fds: readonly number[]): void {
  const [min, max] = fdCount(rule, value);
  if (fds.length < min || fds.length > max) {
    const expected = min === max ? String(min) : `${min} to ${max}`;
    throw makeError('EPROTO', `${requestName(request)} came with ${fds.length} fds, expected ${expected}`);
  }
  if (rule) for (const fd of fds) checkFdKind(request, fd, rule.kind);
}

function fdCount<T>(rule: FdRule<T> | undefined, value: T): [number, number] {
  if (!rule) return [0, 0];
  if (rule.count === 'optional') return [0, 1];
  const count = typeof rule.count === 'number' ? rule.count : rule.count(value);
  return [count, count];
}

function checkFdKind(request: number, fd: number, kind: FdKind): void {
  const found = native.describeFd(fd);
  if (kind === 'eventfd') {
    // The data path watches kicks with epoll and writes calls: anything but an eventfd
    // breaks the ring, or blocks its worker (a pipe whose buffer is full).
    if (found.kind !== 'eventfd') throw makeError('EINVAL', `${requestName(request)}: the fd is a ${found.kind}, not an eventfd: give the ring an eventfd`);
    if ((found.eventfdCount ?? 0n) >= EVENTFD_COUNT_LIMIT) {
      throw makeError('EINVAL', `${requestName(request)}: the eventfd's counter is 0x${found.eventfdCount!.toString(16)}, at the edge of overflow: give the ring a fresh eventfd`);
    }
  } else if (found.kind !== 'file') {
    throw makeError('EINVAL', `${requestName(request)}: the fd is a ${found.kind}, not a file to map (memfd, tmpfs or hugetlbfs)`);
  }
}
