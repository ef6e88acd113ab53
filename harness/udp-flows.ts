// A UDP sender for the guest's `iperf3 -s`, as a child process in the host's
// namespace: it speaks iperf3's client protocol (3.x: cookie, parameters, one
// connected UDP socket per stream, results exchange), so the guest's iperf3
// counts every stream's datagrams by their sequence numbers; but, unlike
// `iperf3 -c`, it decides when the test ends. iperf3's client sends TEST_END
// right after its last datagram, and the server stops reading its sockets at
// TEST_END: whatever was still in flight (in the tap, the rings, the guest's
// socket buffers) is counted lost. Here, after the last datagram, the sender
// waits (graceMs) before it ends the test, so that every datagram still on its
// way is counted: a loss is a loss on the way, not one at the finish line.
//
//   node udp-flows.js '{"host":"10.0.2.2","flows":16,"pps":4000}'
//
// stdout, one JSON line each: {"event":"running"} once datagrams flow, then, after
// "stop" on stdin, {"event":"done","seconds","flows":[{"sent","received","highest","lost"}...]}
// (the server's own counts per stream: datagrams received, highest sequence number
// seen, and the gaps iperf3 counted as lost; seconds: how long it sent).
// {"event":"error","error"} on failure.
// Stream k carries sequence numbers 1..sent in order; each stream is its own flow
// (its own source port), so the tap steers each one on its own.
import dgram from 'node:dgram';
import net from 'node:net';
import { randomBytes } from 'node:crypto';

export interface SenderOptions {
  host: string;
  /** iperf3's port (default 5201). */
  port?: number;
  /** Streams: UDP flows from distinct source ports. */
  flows: number;
  /** Datagrams per second over all flows. */
  pps: number;
  /** UDP payload bytes (iperf3's -l; at least its 12-byte header). Default 64. */
  len?: number;
  /** Wait after the last datagram before TEST_END (default 1500 ms). */
  graceMs?: number;
}

export interface FlowCount {
  /** Datagrams this sender sent on the flow (sequence numbers 1..sent). */
  sent: number;
  /** Datagrams the guest's iperf3 received on it (its byte count / len). */
  received: number;
  /** The highest sequence number it saw. */
  highest: number;
  /** Gaps in the sequence it counted as lost (net of late arrivals). */
  lost: number;
}

/** iperf3's control states (iperf_api.h). */
const TEST_START = 1;
const TEST_RUNNING = 2;
const TEST_END = 4;
const PARAM_EXCHANGE = 9;
const CREATE_STREAMS = 10;
const EXCHANGE_RESULTS = 13;
const DISPLAY_RESULTS = 14;
const IPERF_DONE = 16;
const SERVER_ERROR = -1 & 0xff;
const ACCESS_DENIED = -2 & 0xff;
/** UDP_CONNECT_MSG and UDP_CONNECT_REPLY as iperf3 puts them on the wire (host order, x86). */
const UDP_HELLO = Buffer.from('9876');
const UDP_HELLO_REPLY = '6789';

/** Reads a TCP stream in exact pieces. */
class Reader {
  #buffered = Buffer.alloc(0);
  #waiting: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  #error: Error | undefined;

  constructor(socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.#buffered = Buffer.concat([this.#buffered, chunk]);
      this.#serve();
    });
    const fail = (error: Error): void => {
      this.#error ??= error;
      this.#serve();
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('the iperf3 server closed the control connection')));
  }

  read(n: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.#waiting = { n, resolve, reject };
      this.#serve();
    });
  }

  async state(expected: number, what: string): Promise<void> {
    const got = (await this.read(1))[0]!;
    if (got === expected) return;
    const meaning = got === SERVER_ERROR ? ' (SERVER_ERROR)' : got === ACCESS_DENIED ? ' (ACCESS_DENIED: busy)' : '';
    throw new Error(`${what}: the iperf3 server sent state ${got}${meaning}, expected ${expected}`);
  }

  #serve(): void {
    const w = this.#waiting;
    if (!w) return;
    if (this.#buffered.length >= w.n) {
      this.#waiting = undefined;
      const out = this.#buffered.subarray(0, w.n);
      this.#buffered = this.#buffered.subarray(w.n);
      w.resolve(Buffer.from(out));
    } else if (this.#error) {
      this.#waiting = undefined;
      w.reject(this.#error);
    }
  }
}

function lengthPrefixed(json: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(json));
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length);
  return Buffer.concat([head, body]);
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer from the iperf3 server after ${ms} ms`)), ms);
    }),
  ]);
}

export interface SendResult {
  flows: FlowCount[];
  /** From the first datagram to the last. */
  seconds: number;
}

/** Runs one iperf3 UDP test against the server until `stop` resolves; the per-flow counts. */
export async function sendFlows(options: SenderOptions, stop: Promise<void>, onRunning: () => void = () => {}): Promise<SendResult> {
  const port = options.port ?? 5201;
  const len = options.len ?? 64;
  if (len < 12) throw new Error('len must hold iperf3\'s 12-byte header');
  const control = net.connect({ host: options.host, port });
  await withTimeout(new Promise<void>((resolve, reject) => {
    control.once('connect', resolve);
    control.once('error', reject);
  }), 10_000, 'connecting');
  control.setNoDelay(true);
  const reader = new Reader(control);
  const sockets: dgram.Socket[] = [];
  try {
    // The cookie: 36 characters of iperf3's alphabet and a NUL.
    const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
    const cookie = [...randomBytes(36)].map((b) => alphabet[b & 31]).join('');
    control.write(Buffer.concat([Buffer.from(cookie), Buffer.alloc(1)]));
    await withTimeout(reader.state(PARAM_EXCHANGE, 'parameters'), 10_000, 'parameters');
    control.write(lengthPrefixed({
      udp: true, omit: 0, time: 3600, num: 0, blockcount: 0, parallel: options.flows, len,
      bandwidth: Math.round(options.pps * len * 8), pacing_timer: 1000, client_version: '3.12',
    }));
    await withTimeout(reader.state(CREATE_STREAMS, 'streams'), 10_000, 'streams');
    // One stream at a time: the server takes each hello on its listening socket and
    // connects a socket of its own to that stream's source port.
    for (let k = 0; k < options.flows; k++) {
      const socket = dgram.createSocket({ type: 'udp4', sendBufferSize: 1 << 20 });
      sockets.push(socket);
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.connect(port, options.host, () => resolve());
      });
      const reply = new Promise<void>((resolve, reject) => {
        socket.once('message', (m) => (m.toString() === UDP_HELLO_REPLY ? resolve() : reject(new Error(`stream ${k}: unexpected reply ${m.toString('hex')}`))));
      });
      socket.send(UDP_HELLO);
      // Never sent twice: a second hello would reach the stream's socket as a datagram.
      await withTimeout(reply, 10_000, `stream ${k}'s hello`);
    }
    await withTimeout(reader.state(TEST_START, 'start'), 10_000, 'start');
    await withTimeout(reader.state(TEST_RUNNING, 'running'), 10_000, 'running');

    const sent = new Array<number>(options.flows).fill(0);
    let total = 0;
    let sendErrors = 0;
    let firstError: Error | undefined;
    let stopped = false;
    void stop.then(() => (stopped = true));
    onRunning();
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      const tick = (): void => {
        if (stopped) return resolve();
        const due = Math.floor(((performance.now() - t0) * options.pps) / 1000) - total;
        for (let i = 0; i < due; i++) {
          const k = total % options.flows;
          const seq = ++sent[k]!;
          total++;
          const now = Date.now();
          const b = Buffer.alloc(len);
          b.writeUInt32BE(Math.floor(now / 1000), 0);
          b.writeUInt32BE((now % 1000) * 1000, 4);
          b.writeUInt32BE(seq, 8);
          sockets[k]!.send(b, (error) => {
            if (error) {
              sendErrors++;
              firstError ??= error;
            }
          });
        }
        setTimeout(tick, 1);
      };
      tick();
    });
    const seconds = (performance.now() - t0) / 1000;
    // Every send's callback has run once the sockets' queues are empty.
    await new Promise((resolve) => setTimeout(resolve, 50));
    if (sendErrors) throw new Error(`${sendErrors} datagrams could not be sent (first: ${firstError?.message}): not a loss on the way`);
    await new Promise((resolve) => setTimeout(resolve, options.graceMs ?? 1500));
    const elapsed = (performance.now() - t0) / 1000;

    control.write(Buffer.from([TEST_END]));
    await withTimeout(reader.state(EXCHANGE_RESULTS, 'results'), 20_000, 'results');
    control.write(lengthPrefixed({
      cpu_util_total: 0, cpu_util_user: 0, cpu_util_system: 0, sender_has_retransmits: 0,
      streams: sent.map((n, k) => ({
        id: k === 0 ? 1 : k + 2, // iperf_add_stream's numbering: 1, 3, 4, ...
        bytes: n * len, retransmits: -1, jitter: 0, errors: 0, packets: n, start_time: 0, end_time: elapsed,
      })),
    }));
    const size = (await withTimeout(reader.read(4), 20_000, 'results')).readUInt32BE(0);
    const results = JSON.parse((await withTimeout(reader.read(size), 20_000, 'results')).toString()) as {
      streams: Array<{ id: number; bytes: number; errors: number; packets: number }>;
    };
    await withTimeout(reader.state(DISPLAY_RESULTS, 'display'), 20_000, 'display');
    control.write(Buffer.from([IPERF_DONE]));
    const flows = sent.map((n, k) => {
      const s = results.streams.find((r) => r.id === (k === 0 ? 1 : k + 2));
      if (!s) throw new Error(`no server results for stream ${k}: ${JSON.stringify(results)}`);
      return { sent: n, received: s.bytes / len, highest: s.packets, lost: s.errors };
    });
    return { flows, seconds };
  } finally {
    for (const s of sockets) s.close();
    control.end();
    control.destroy();
  }
}

if (require.main === module) {
  const print = (line: object): void => void process.stdout.write(`${JSON.stringify(line)}\n`);
  const stop = new Promise<void>((resolve) => {
    let input = '';
    process.stdin.setEncoding('utf8').on('data', (d: string) => {
      input += d;
      if (input.includes('stop')) resolve();
    });
    process.stdin.on('end', () => resolve());
    process.on('SIGTERM', () => resolve());
  });
  sendFlows(JSON.parse(process.argv[2]!) as SenderOptions, stop, () => print({ event: 'running' })).then(
    (result) => {
      print({ event: 'done', ...result });
      process.exit(0);
    },
    (error: Error) => {
      print({ event: 'error', error: error.message });
      process.exit(1);
    },
  );
}
