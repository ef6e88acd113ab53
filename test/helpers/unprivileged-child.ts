// Runs as uid 65534 with no capabilities (started through setpriv by
// unprivileged.test.ts). Receives tap queue fds on fd 3, detaches and
// re-attaches one when the parent says so, and reports what it saw.
import fs from 'node:fs';

import { Tap, receiveFds, receiveTapQueues, sendFds } from '../../src';

const CONTROL_FD = 3;

function tell(message: object): void {
  sendFds(CONTROL_FD, [], Buffer.from(JSON.stringify(message)));
}

async function waitFor(word: string): Promise<void> {
  const { data } = await receiveFds(CONTROL_FD, { maxFds: 0, timeoutMs: 20_000 });
  if (data.toString() !== word) throw new Error(`expected "${word}" from the parent, got "${data.toString()}"`);
}

async function main(): Promise<void> {
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  const capEff = /CapEff:\s*(\w+)/.exec(status)?.[1];
  const tap = await receiveTapQueues(CONTROL_FD, 20_000);
  tell({ step: 'received', uid: process.getuid?.(), capEff, name: tap.name, queues: tap.queues.length });

  await waitFor('detach');
  tap.queues[1]!.detach();
  tell({ step: 'detached' });

  await waitFor('attach');
  tap.queues[1]!.attach();
  tell({ step: 'attached' });

  await waitFor('steer');
  // The steering map came with the queues: writing it needs no privilege.
  let steerError = 'none';
  try {
    tap.steering!.configure({ hashTypes: 0x3f, key: Buffer.alloc(40, 7), table: [1], unclassified: 1 });
  } catch (error) {
    steerError = (error as { code?: string }).code ?? String(error);
  }
  tell({ step: 'steered', hasSteering: tap.steering !== undefined, steerError });

  await waitFor('open');
  // /dev/net/tun is 0600 on a bare system but 0666 once a package such as
  // qemu-system installs its udev rule: what must fail either way is making a tap.
  let createError = 'none';
  try {
    Tap.create({ name: 'vtnobody0', queues: 1 }).close();
  } catch (error) {
    createError = (error as { code?: string }).code ?? String(error);
  }
  tap.close();
  tell({ step: 'opened', createError, tunMode: (fs.statSync('/dev/net/tun').mode & 0o777).toString(8) });
}

main().catch((error: unknown) => {
  try {
    tell({ step: 'error', code: (error as { code?: string }).code, message: String((error as Error).message ?? error) });
  } finally {
    process.exit(1);
  }
});
