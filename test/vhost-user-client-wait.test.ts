// Client mode (`vhost-tap serve --client`) waiting for a frontend that is not there
// yet, as under libvirt while the VM starts: the log says so once, reminds now and
// then, and says how long it took when the frontend appears — not a line per attempt
// (`--reconnect-ms 200` wrote 77 connect-failed lines in 15 s before).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { Tap, VhostUserServer, VirtioNetDevice, listenUnix, acceptUnix, closeFd } from '../src';
import { sleep, until } from '../harness/wait';
import { assertPrivateNetns, uniqueName } from './helpers/system';

assertPrivateNetns();

test('client mode: one waiting line, a reminder per waitReminderMs, the attempts counted when the frontend appears', async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'client-wait-'));
  const sock = path.join(tmp, 'frontend.sock');
  const tap = Tap.create({ name: uniqueName('vcw'), queues: 1 });
  const device = new VirtioNetDevice({ tap });
  const lines: { event: string; fields: Record<string, unknown> }[] = [];
  const server = new VhostUserServer({
    device, socketPath: sock, client: true, reconnectMs: 10, waitReminderMs: 400,
    log: (event, fields) => lines.push({ event, fields: fields ?? {} }),
  });
  let listenFd = -1;
  try {
    server.start();
    await sleep(1000); // ~100 attempts at 10 ms
    const waiting = lines.filter((l) => l.event === 'waiting-for-frontend');
    const reminders = lines.filter((l) => l.event === 'still-waiting');
    assert.is(waiting.length, 1, JSON.stringify(lines));
    assert.is(waiting[0]!.fields.code, 'ENOENT');
    assert.ok(reminders.length >= 1 && reminders.length <= 3, `a reminder every 400 ms over 1 s: ${reminders.length}`);
    assert.ok(Number(reminders.at(-1)!.fields.attempts) > 20, `attempts counted: ${JSON.stringify(reminders.at(-1))}`);
    assert.is(lines.filter((l) => l.event === 'connect-failed').length, 0);

    listenFd = listenUnix(sock, 'stream');
    const fd = await acceptUnix(listenFd, 5000);
    await until('the server connected', () => lines.some((l) => l.event === 'connected'));
    const reached = lines.find((l) => l.event === 'frontend-reached');
    assert.ok(reached, 'the end of the wait is logged');
    assert.ok(Number(reached!.fields.attempts) > 20 && Number(reached!.fields.waitedMs) >= 900, JSON.stringify(reached));

    // The frontend goes and its socket with it: a new wait starts, logged once again.
    closeFd(fd);
    closeFd(listenFd);
    listenFd = -1;
    fs.rmSync(sock, { force: true });
    await until('a second wait is logged', () => lines.filter((l) => l.event === 'waiting-for-frontend').length === 2);
    await sleep(200);
    assert.is(lines.filter((l) => l.event === 'waiting-for-frontend').length, 2, 'once per wait');
  } finally {
    await server.stop();
    if (listenFd >= 0) closeFd(listenFd);
    device.close();
    tap.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test.run();
