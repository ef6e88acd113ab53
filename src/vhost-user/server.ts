// The vhost-user socket: a server that listens (the usual case: QEMU connects)
// or a client that connects and reconnects (for frontends that listen). One
// frontend at a time; each connection is a fresh session on the same device.
import fs from 'node:fs';
import { EventEmitter } from 'node:events';

import { errorCode, makeError } from '../errors';
import { native } from '../native';
import { cancelWait, waitReadable } from '../virtio/eventfd';
import type { VirtioNetDevice } from '../virtio/net-device';
import { VhostUserConnection } from './connection';
import { RingPositions } from './ring-positions';
import type { Logger } from './session';

export interface VhostUserServerOptions {
  device: VirtioNetDevice;
  /** Unix socket path to listen on (server) or connect to (client). */
  socketPath?: string;
  /** An already listening socket fd (QEMU's --fd convention), instead of socketPath. */
  listenFd?: number;
  /** Connect to the frontend instead of listening, and reconnect when it goes. */
  client?: boolean;
  /** Client mode: delay between connection attempts. Default 1000 ms. */
  reconnectMs?: number;
  /**
   * Client mode: while the frontend's socket cannot be reached, a reminder is logged
   * this often (`still-waiting`); the first failed attempt logs `waiting-for-frontend`
   * once, however short reconnectMs is. Default 30000 ms.
   */
  waitReminderMs?: number;
  /** A message must be whole this long after its first byte, or its connection is dropped. Default 1000 ms. */
  messageDeadlineMs?: number;
  /**
   * A file where packed rings' positions are kept, so that a server started after
   * this one (the daemon restarted, or crashed) resumes a running guest's packed
   * rings where they were: a frontend has no way to know it (see README,
   * "Restarting the daemon"). Created mode 0600 if missing. Default: none, and a
   * packed ring resumes from the base the frontend gives. Split rings need none.
   */
  ringPositionsPath?: string;
  log?: Logger;
}

export interface VhostUserServerEvents {
  connected: [];
  disconnected: [{ messages: number }];
}

export class VhostUserServer extends EventEmitter<VhostUserServerEvents> {
  readonly #options: VhostUserServerOptions;
  readonly #log: Logger;
  #listenFd = -1;
  #ownsPath = false;
  #connection: VhostUserConnection | undefined;
  #ringPositions: RingPositions | undefined;
  #running = false;
  #loop: Promise<void> = Promise.resolve();
  /** Connections served so far. */
  served = 0;

  constructor(options: VhostUserServerOptions) {
    super();
    if (!options.socketPath && options.listenFd === undefined) throw makeError('EINVAL', 'give a socket path or a listening fd');
    if (options.client && !options.socketPath) throw makeError('EINVAL', 'client mode needs the socket path to connect to');
    this.#options = options;
    this.#log = options.log ?? (() => undefined);
  }

  /** Starts listening (or connecting, in client mode); returns once the socket is ready. */
  start(): void {
    if (this.#running) return;
    if (this.#options.ringPositionsPath !== undefined && !this.#ringPositions) {
      try {
        this.#ringPositions = RingPositions.open(this.#options.ringPositionsPath);
      } catch (error) {
        throw makeError(errorCode(error) ?? 'EINVAL', `cannot use ${this.#options.ringPositionsPath} to keep ring positions: ${(error as Error).message} (give another path, or none)`, error);
      }
    }
    this.#running = true;
    if (this.#options.client) {
      this.#loop = this.#connectLoop();
      return;
    }
    if (this.#options.listenFd !== undefined) {
      this.#listenFd = this.#options.listenFd;
    } else {
      const path = this.#options.socketPath!;
      removeStaleSocket(path);
      this.#listenFd = native.unixListen(path, 'stream', 1);
      this.#ownsPath = true;
    }
    this.#loop = this.#acceptLoop();
    // Logged once the accept loop waits (and the fd poller it waits on exists): a frontend may connect now.
    this.#log('listening', { socket: this.#options.socketPath ?? `fd ${this.#listenFd}` });
  }

  /** Closes the connection and the socket; resolves when everything is released. */
  async stop(): Promise<void> {
    if (!this.#running) return;
    this.#running = false;
    this.#connection?.close();
    if (this.#listenFd >= 0) cancelWait(this.#listenFd);
    await this.#loop;
    if (this.#listenFd >= 0) {
      native.closeFd(this.#listenFd);
      this.#listenFd = -1;
    }
    if (this.#ownsPath) fs.rmSync(this.#options.socketPath!, { force: true });
    // The file stays: it is for the server that comes after this one.
    this.#ringPositions?.close();
    this.#ringPositions = undefined;
  }

  get connected(): boolean {
    return this.#connection !== undefined;
  }

  async #acceptLoop(): Promise<void> {
    while (this.#running) {
      if (!(await waitReadable(this.#listenFd, 60_000)) || !this.#running) continue;
      const fd = native.acceptNow(this.#listenFd);
      if (fd < 0) continue;
      await this.#serve(fd);
    }
  }

  async #connectLoop(): Promise<void> {
    const path = this.#options.socketPath!;
    const delay = this.#options.reconnectMs ?? 1000;
    const reminderMs = this.#options.waitReminderMs ?? 30_000;
    // A frontend that is not there yet (a VM still starting under libvirt) is the usual
    // case, not an error: one line when the wait starts, a reminder now and then, and the
    // number of attempts when it ends, rather than a line per attempt.
    let waitingSince: number | undefined;
    let attempts = 0;
    let lastCode: string | undefined;
    let lastReminder = 0;
    while (this.#running) {
      let fd: number;
      try {
        fd = native.unixConnect(path, 'stream');
      } catch (error) {
        const code = errorCode(error);
        const now = Date.now();
        attempts++;
        if (waitingSince === undefined || code !== lastCode) {
          waitingSince ??= now;
          lastReminder = now;
          this.#log('waiting-for-frontend', { socket: path, code, retryMs: delay });
        } else if (now - lastReminder >= reminderMs) {
          lastReminder = now;
          this.#log('still-waiting', { socket: path, code, attempts, waitedMs: now - waitingSince });
        }
        lastCode = code;
        await new Promise((resolve) => setTimeout(resolve, delay));
        continue;
      }
      if (waitingSince !== undefined) {
        this.#log('frontend-reached', { socket: path, attempts: attempts + 1, waitedMs: Date.now() - waitingSince });
        waitingSince = undefined;
        attempts = 0;
        lastCode = undefined;
      }
      await this.#serve(fd);
      if (this.#running) await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  async #serve(fd: number): Promise<void> {
    this.served++;
    this.#log('connected', { connection: this.served });
    const connection = new VhostUserConnection(fd, this.#options.device, this.#log, this.#options.messageDeadlineMs, this.#ringPositions);
    this.#connection = connection;
    this.emit('connected');
    try {
      await connection.run();
    } catch (error) {
      this.#log('connection-crashed', { error: String(error) });
    } finally {
      this.#connection = undefined;
      this.emit('disconnected', { messages: connection.messages });
    }
  }
}

/** A socket file nobody listens on (a previous run died) is removed; a live one is EADDRINUSE. */
function removeStaleSocket(path: string): void {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(path);
  } catch {
    return;
  }
  if (!stat.isSocket()) throw makeError('EEXIST', `${path} exists and is not a socket: choose another path`);
  try {
    native.closeFd(native.unixConnect(path, 'stream'));
  } catch (error) {
    if (errorCode(error) === 'ECONNREFUSED') {
      fs.rmSync(path, { force: true });
      return;
    }
    throw error;
  }
  throw makeError('EADDRINUSE', `another backend is listening on ${path}`);
}
