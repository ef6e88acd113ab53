// `npm start`: a VMM in the shape of one written in TypeScript embedding
// vhost-tap. It owns guest memory and a virtio-mmio transport; vhost-tap owns
// the virtio-net device on a 4-queue tap. The guest (the TS driver, talking
// only to the MMIO registers) raises its queue pairs 1 -> 4 -> 2 -> 4 through
// the control queue while a host process in the namespace floods 64 UDP flows
// at it; the table shows the traffic following the active set.
// `npm start -- --packed`: the same with packed virtqueues (VIRTIO_F_RING_PACKED).
import { spawn } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import path from 'node:path';

import { GuestMemory, Tap, VirtioNetDevice, readTapLinkInfo } from '../../src';
import { enterPrivateNetns } from '../private-netns';
import { GuestSignals, initialiseOverMmio } from './guest-over-mmio';
import { MmioTransport } from './mmio-transport';

enterPrivateNetns();

const HOST_IP = '10.8.0.1';
const GUEST_IP = '10.8.0.2';
const GUEST_MAC = '52:54:00:12:34:56';
const FLOWS = 64;
const BASE_PORT = 9000;
const PHASES = [1, 4, 2, 4];
const PHASE_MS = 1200;

async function main(): Promise<void> {
  // The VMM: guest RAM, the NIC's backend, the transport in front of it.
  const memory = GuestMemory.allocate(64 << 20);
  const tap = Tap.create({ name: 'vtembed0', queues: 4 });
  const device = new VirtioNetDevice({ tap, mac: GUEST_MAC, mtu: 1500 });
  const signals = new GuestSignals();
  const mmio = new MmioTransport(device, (queue) => signals.get(queue));
  device.on('queue-error', (e) => console.error(`device error on ${String(e.pair)}/${e.queue} (${e.code}): ${e.message}`));
  device.on('protocol-error', (e) => console.error(`guest broke the protocol: ${e}`));
  device.setMemory(memory);

  execFileSync('ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', tap.name]);
  execFileSync('ip', ['neigh', 'replace', GUEST_IP, 'lladdr', GUEST_MAC, 'dev', tap.name, 'nud', 'permanent']);

  // The guest boots its driver.
  const guest = initialiseOverMmio(mmio, memory, signals, { packed: process.argv.includes('--packed') });
  const layout = (guest.features >> 34n) & 1n ? 'packed' : 'split';
  console.log(`guest: virtio-net ${guest.mac}, ${guest.maxPairs} queue pairs offered, ${layout} rings, features 0x${guest.features.toString(16)}; device status ${device.describeStatus()}`);
  console.log(`tap ${tap.name}: ${tap.queues.length} queues, numdisabled ${readTapLinkInfo(tap.name).numDisabled} (only pair 0 in use until the guest asks)\n`);

  // The guest's receive loops, one per pair, counting what each pair delivers.
  let counts = [0, 0, 0, 0];
  let receiving = true;
  const receivers = Array.from({ length: guest.maxPairs }, async (_, pair) => {
    while (receiving) {
      const frames = await guest.driver.receive(pair, { timeoutMs: 100 });
      counts[pair]! += frames.length;
    }
  });

  const flood = spawn(process.execPath, [path.join(__dirname, 'flood.js'), GUEST_IP, String(BASE_PORT), String(FLOWS), '20000', String((PHASES.length * PHASE_MS) / 1000 + 1)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let floodOutput = '';
  flood.stdout.on('data', (d: Buffer) => { floodOutput += d.toString(); });
  const floodDone = new Promise<void>((resolve) => flood.on('exit', () => resolve()));

  const rows: string[][] = [];
  try {
    for (const pairs of PHASES) {
      const ack = pairs === device.activeQueuePairs && rows.length === 0 ? 0 : await guest.control.setQueuePairs(pairs);
      const numDisabled = readTapLinkInfo(tap.name).numDisabled;
      counts = [0, 0, 0, 0];
      await new Promise((resolve) => setTimeout(resolve, PHASE_MS));
      rows.push([`${pairs} pair${pairs > 1 ? 's' : ''}`, ack === 0 ? 'OK' : 'ERR', String(device.activeQueuePairs), String(numDisabled), ...counts.map(String)]);
    }
  } finally {
    flood.kill('SIGTERM');
    await floodDone;
    receiving = false;
    await Promise.all(receivers);
  }
  const header = ['VQ_PAIRS_SET', 'ack', 'active', 'numdisabled', 'pair0', 'pair1', 'pair2', 'pair3'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  console.log(line(header));
  for (const row of rows) console.log(line(row));
  const stats = device.stats();
  console.log(`\nflood: ${floodOutput.trim()}; device rx per pair: ${stats.pairs.map((p) => p.rx?.packets ?? '-').join(', ')} (stopped pairs show -); control queue: ${stats.control.ok} OK, ${stats.control.err} ERR`);

  // The guest shuts down: reset returns the tap to one attached queue.
  mmio.write(0x070, 0);
  console.log(`after reset: device ${device.describeStatus()}, tap numdisabled ${readTapLinkInfo(tap.name).numDisabled}`);
  guest.control.close();
  guest.driver.close();
  device.close();
  tap.close();
  memory.close();
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
