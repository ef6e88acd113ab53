// Helpers for tests that touch the real kernel: namespaces, fds, frames.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

import * as assert from 'uvu/assert';

/**
 * The tests make devices: refuse to run in the namespace they were started from.
 * `npm test` records that namespace in VHOST_TAP_HOST_NETNS and runs the suite
 * under `unshare --net`.
 */
export function assertPrivateNetns(): void {
  const self = fs.readlinkSync('/proc/self/ns/net');
  let host = process.env.VHOST_TAP_HOST_NETNS;
  if (!host) {
    try {
      host = fs.readlinkSync('/proc/1/ns/net');
    } catch {
      host = undefined;
    }
  }
  if (host === undefined || self === host) {
    throw new Error('these tests create network devices: run them with `npm test`, which gives them a private network namespace');
  }
}

/**
 * Runs a call that must fail with an Error whose `code` is `code` (and whose message
 * matches `message`, if given), and checks that it left no fd open.
 */
export function failsWith(code: string, call: () => unknown, message?: RegExp): void {
  const before = fdCount();
  let caught: (Error & { code?: string }) | undefined;
  try {
    call();
  } catch (error) {
    caught = error as Error & { code?: string };
  }
  assert.ok(caught, `expected ${code}${message ? ` (${String(message)})` : ''}, but the call succeeded`);
  assert.instance(caught, Error);
  assert.is(caught!.code, code, caught!.message);
  if (message) assert.match(caught!.message, message);
  assert.is(fdCount(), before, 'fd count changed across a failing call');
}

/** Number of open fds of this process. */
export function fdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/** This process's open fds and what each is (the /proc/self/fd link), to name the ones a test left open. */
export function openFds(): Map<string, string> {
  const fds = new Map<string, string>();
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      fds.set(fd, fs.readlinkSync(`/proc/self/fd/${fd}`));
    } catch {
      // closed while we looked (the readdir's own fd, for one)
    }
  }
  return fds;
}

/**
 * The fds open now that were not in `before` (or are another file now), as "fd -> target".
 * /dev/null is left out: Node opens it for its own children's stdio as they are spawned,
 * so another test's child starting at that moment shows one for a while.
 */
export function newFds(before: Map<string, string>): string[] {
  return [...openFds()].filter(([fd, target]) => before.get(fd) !== target && target !== '/dev/null').map(([fd, target]) => `${fd} -> ${target}`);
}

/** Threads of this process, without io_uring's kernel workers (iou-wrk-*, iou-sqp-*): they linger idle a while, and are not ours. */
export function threadCount(): number {
  return fs.readdirSync('/proc/self/task').filter((tid) => {
    try {
      return !fs.readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').startsWith('iou-');
    } catch {
      return false; // exited while we looked
    }
  }).length;
}

export function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

let counter = 0;
/** A tap name unique within this test run (at most 15 bytes). */
export function uniqueName(prefix: string): string {
  counter += 1;
  return `${prefix}${process.pid % 1000}x${counter}`.slice(0, 15);
}

/** Reads every frame waiting on a non-blocking tap queue fd. */
export function drainFrames(fd: number, max = 100_000): Buffer[] {
  const frames: Buffer[] = [];
  const buf = Buffer.alloc(65_600);
  while (frames.length < max) {
    let n: number;
    try {
      n = fs.readSync(fd, buf, 0, buf.length, null);
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code === 'EAGAIN' || code === 'EWOULDBLOCK') break;
      throw error;
    }
    frames.push(Buffer.from(buf.subarray(0, n)));
  }
  return frames;
}

/** UDP destination port of an IPv4 frame behind a vnet header, or undefined for anything else. */
export function udpDestPort(frame: Buffer, vnetHdrSize = 12): number | undefined {
  const eth = vnetHdrSize;
  if (frame.length < eth + 14 + 20 + 8) return undefined;
  if (frame.readUInt16BE(eth + 12) !== 0x0800) return undefined;
  const ip = eth + 14;
  if (frame[ip + 9] !== 17) return undefined;
  const ihl = (frame[ip]! & 0x0f) * 4;
  return frame.readUInt16BE(ip + ihl + 2);
}

