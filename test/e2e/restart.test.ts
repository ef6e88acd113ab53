// The daemon restarted under a running guest: QEMU (chardev reconnect=1)
// connects to the new `vhost-tap serve` on the same socket and tap name, sets
// the rings up again from what it knows, and the guest's network goes on
// without the guest doing anything. Once per ring layout (split, and packed,
// where QEMU has no used index in guest memory to resume from: see the README's
// "Restarting the daemon") and per way the daemon goes: SIGTERM (a clean stop,
// which still tells QEMU nothing about the rings) and SIGKILL (a crash).
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { sleep } from '../../harness/wait';
import { assertPrivateNetns } from '../helpers/system';
import { hostToGuest, says, seconds, serveOnce, startDaemon, type Daemon } from '../../harness/daemon';
import { Netns } from '../../harness/netns';
import { ensureGuest, startGuest } from '../../harness/qemu-guest';
import { requireTools, tail } from '../../harness/tools';

assertPrivateNetns();

const QUEUES = 2;
const HOST = '10.0.3.1';
const GUEST = '10.0.3.2';

for (const layout of ['split', 'packed'] as const) {
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    test(`daemon restarted under a running guest (${layout} rings, ${signal}): QEMU reconnects, traffic goes on both ways`, async () => {
      requireTools('qemu-system-x86_64', 'iperf3', 'ip', 'setpriv', 'ping');
      ensureGuest();
      const t0 = Date.now();
      const ns = Netns.create('e2erst');
      let daemon: Daemon | undefined;
      try {
        const start = (): Promise<Daemon> => startDaemon(ns, { tap: 'vtr0', queues: QUEUES, hostIp: `${HOST}/24` });
        daemon = await start();
        ns.spawn('iperf3', ['-s']);
        // Traffic before, a pause while the host restarts the daemon, traffic after (each
        // serveOnce waits for one host -> guest test), then the guest's own pings and an upload.
        const guest = startGuest({
          netns: ns,
          netdev: { kind: 'vhost-user', socket: daemon.socket, queues: QUEUES, reconnectSeconds: 1 },
          guestIp: `${GUEST}/24`,
          device: layout === 'packed' ? { packed: 'on' } : {},
          commands: `echo GUEST: features=$(cat /sys/bus/virtio/devices/virtio0/features); ping -c 2 -W 2 ${HOST} > /dev/null && echo GUEST: up; ` +
            `iperf3 -c ${HOST} -n 8M > /dev/null && echo GUEST: upload before ok; ${serveOnce('before')}; ${serveOnce('after')}; ` +
            `ping -c 3 -W 3 ${HOST} > /dev/null && echo GUEST: ping after ok; iperf3 -c ${HOST} -n 8M > /dev/null && echo GUEST: upload after ok`,
          timeoutMs: 150_000,
        });
        try {
          await guest.waitForOutput('GUEST: before', 90_000);
          const bit34 = /GUEST: features=([01]+)/.exec(guest.output)?.[1]?.[34];
          assert.is(bit34, layout === 'packed' ? '1' : '0', `VIRTIO_F_RING_PACKED ${layout === 'packed' ? 'negotiated' : 'not negotiated'}`);
          assert.match(guest.output, /GUEST: up/, `the guest pinged the host${says(guest.output)}`);
          assert.match(guest.output, /GUEST: upload before ok/, `guest -> host before the restart${says(guest.output)}`);
          await hostToGuest(ns, guest, GUEST, ['-n', '8M'], 'before the restart');

          // The daemon goes: its tap goes with it (not persistent); QEMU sees the socket close.
          if (signal === 'SIGTERM') await daemon.stop();
          else {
            process.kill(daemon.servingPid(), 'SIGKILL');
            await waitDead(daemon);
          }
          await sleep(500);
          daemon = await start();
          await daemon.waitFor('queue-pairs-changed', { timeoutMs: 30_000 });

          await guest.waitForOutput('GUEST: after', 30_000);
          await hostToGuest(ns, guest, GUEST, ['-n', '8M'], 'after the restart');
          const { output, rc } = await guest.exited;
          assert.match(output, /GUEST: ping after ok/, `guest -> host ping after the restart${says(output)}`);
          assert.match(output, /GUEST: upload after ok/, `guest -> host iperf3 after the restart${says(output)}`);
          assert.is(rc, 0, `guest commands${says(output)}`);
          const failures = [...daemon.events('request-failed'), ...daemon.events('queue-error')];
          assert.equal(failures, [], 'the new daemon logged no failure');
          // Packed rings: QEMU gave the stale bases of when the rings first started, and the
          // new daemon took the positions the old one left in the ring state file instead.
          const resumed = daemon.events('ring-resumed').length;
          if (layout === 'packed') assert.ok(resumed >= 2, `the new daemon resumed the packed rings from the ring state file (${resumed} ring-resumed lines)`);
          else assert.is(resumed, 0, 'split rings resume from guest memory: nothing to take from the file');
        } catch (error) {
          (error as Error).message += `\n--- daemon log ---\n${tail(daemon.log(), 25)}`;
          throw error;
        } finally {
          await guest.kill().catch(() => undefined);
        }
        await daemon.stop();
      } finally {
        ns.delete();
      }
      console.log(`    (${seconds(t0)})`);
    });
  }
}

async function waitDead(daemon: Daemon): Promise<void> {
  for (let i = 0; i < 100 && daemon.alive(); i++) await sleep(50);
  assert.not.ok(daemon.alive(), 'the daemon died of SIGKILL');
}

test.run();
