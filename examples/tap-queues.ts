// `npm start`: a 4-queue tap in a private network namespace. UDP traffic over
// 64 flows runs towards it the whole time while queues are detached and
// re-attached; the table shows per phase what the kernel reports (numdisabled)
// and how many frames each queue's fd delivered. Detached queues get nothing new.
// A queue is read dry just before it is detached, since the kernel drops the
// backlog of a queue it detaches; the last line accounts for every frame sent.
import dgram from 'node:dgram';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

import { Tap, readTapLinkInfo } from '../src';
import { enterPrivateNetns } from './private-netns';

enterPrivateNetns();

const TAP_ADDR = '10.99.0.1';
const PEER_ADDR = '10.99.0.2';
const FLOWS = 64;
const BASE_PORT = 40_000;
const PHASE_MS = 700;

const phases: { name: string; attached: boolean[] }[] = [
  { name: 'all 4 attached', attached: [true, true, true, true] },
  { name: 'detach 2 and 3', attached: [true, true, false, false] },
  { name: 'detach 1 too', attached: [true, false, false, false] },
  { name: 're-attach 1 and 3', attached: [true, true, false, true] },
  { name: 're-attach all', attached: [true, true, true, true] },
];

/** Reads everything waiting on a queue fd; counts only our UDP flows (the stack may send other frames). */
function drain(fd: number, buf: Buffer): number {
  let ours = 0;
  for (;;) {
    let n: number;
    try {
      n = fs.readSync(fd, buf, 0, buf.length, null);
    } catch (error) {
      if ((error as { code?: string }).code === 'EAGAIN') return ours;
      throw error;
    }
    const ip = 12 + 14;
    if (n >= ip + 28 && buf.readUInt16BE(12 + 12) === 0x0800 && buf[ip + 9] === 17) {
      const port = buf.readUInt16BE(ip + 20 + 2);
      if (port >= BASE_PORT && port < BASE_PORT + FLOWS) ours += 1;
    }
  }
}

async function main(): Promise<void> {
  const tap = Tap.create({ name: 'vtapdemo', queues: 4 });
  const socket = dgram.createSocket('udp4');
  try {
    execFileSync('ip', ['addr', 'add', `${TAP_ADDR}/24`, 'dev', tap.name]);
    execFileSync('ip', ['neigh', 'replace', PEER_ADDR, 'lladdr', '02:00:00:00:00:02', 'dev', tap.name, 'nud', 'permanent']);
    console.log(`tap ${tap.name} (ifindex ${tap.ifindex}) with ${tap.queues.length} queues, fds ${tap.queues.map((q) => q.fd).join(',')}, vnet header ${tap.vnetHdrSize()} bytes`);
    console.log(`sending UDP over ${FLOWS} flows ${TAP_ADDR} -> ${PEER_ADDR}:${BASE_PORT}-${BASE_PORT + FLOWS - 1} while queues change\n`);

    const payload = Buffer.alloc(32, 0x61);
    let sent = 0;
    let sending = true;
    const sender = (async () => {
      while (sending) {
        const batch: Promise<void>[] = [];
        for (let flow = 0; flow < FLOWS; flow++) {
          batch.push(new Promise((resolve, reject) => socket.send(payload, BASE_PORT + flow, PEER_ADDR, (e) => (e ? reject(e) : resolve()))));
        }
        await Promise.all(batch);
        sent += FLOWS;
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    })();

    const buf = Buffer.alloc(65_600);
    const rows: { phase: string; queues: string; numDisabled: number; counts: number[] }[] = [];
    for (const phase of phases) {
      phase.attached.forEach((want, i) => {
        const queue = tap.queues[i]!;
        if (want && !queue.attached) queue.attach();
        if (!want && queue.attached) {
          // The kernel purges a queue's backlog when it is detached (tun.c): read it
          // first. Those frames arrived in the previous phase and count there.
          rows[rows.length - 1]!.counts[i]! += drain(queue.fd, buf);
          queue.detach();
        }
      });
      const row = { phase: phase.name, queues: phase.attached.map((a) => (a ? 'A' : '-')).join(''), numDisabled: readTapLinkInfo(tap.name).numDisabled, counts: [0, 0, 0, 0] };
      rows.push(row);
      const until = Date.now() + PHASE_MS;
      while (Date.now() < until) {
        tap.queues.forEach((q, i) => { row.counts[i]! += drain(q.fd, buf); });
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    }
    sending = false;
    await sender;
    // Let the last frames in flight land, then read them.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const tail = tap.queues.reduce((sum, q) => sum + drain(q.fd, buf), 0);
    const received = tail + rows.reduce((sum, r) => sum + r.counts.reduce((x, y) => x + y, 0), 0);

    const header = ['phase', 'queues', 'numdisabled', 'q0', 'q1', 'q2', 'q3'];
    const cells = rows.map((r) => [r.phase, r.queues, String(r.numDisabled), ...r.counts.map(String)]);
    const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
    const line = (row: string[]): string => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
    console.log(line(header));
    for (const row of cells) console.log(line(row));
    // A queue's ring holds txqueuelen frames; when the reader falls behind, the kernel drops and counts.
    const dropped = readTapLinkInfo(tap.name).stats.txDropped;
    // Frames still waiting in the qdisc of a tx queue that detaching takes away are dropped by the qdisc.
    const qdiscs = JSON.parse(execFileSync('tc', ['-s', '-j', 'qdisc', 'show', 'dev', tap.name], { encoding: 'utf8' })) as { root?: boolean; drops?: number }[];
    const qdiscDrops = qdiscs.filter((q) => !q.root).reduce((sum, q) => sum + (q.drops ?? 0), 0);
    console.log(`\nsent ${sent} datagrams; read ${received} from the queues (${tail} after the last phase)`);
    console.log(`dropped by the kernel: ${dropped} on full queue rings, ${qdiscDrops} in the qdisc, ${sent - received - dropped - qdiscDrops} purged with a detaching queue's backlog (frames that arrived between the last read and the detach)`);
  } finally {
    socket.close();
    tap.close();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
