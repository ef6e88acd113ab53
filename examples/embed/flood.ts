// A host process in the namespace flooding UDP flows at the guest, for the
// embed example: `flood <ip> <basePort> <flows> <pps> <seconds>`. It prints
// how many datagrams it sent, as JSON, when done.
import dgram from 'node:dgram';

const [ip = '10.8.0.2', basePort = '9000', flows = '64', pps = '20000', seconds = '5'] = process.argv.slice(2);

async function main(): Promise<void> {
  const socket = dgram.createSocket('udp4');
  const payload = Buffer.alloc(64, 0x42);
  const batch = 64;
  const interval = (1000 * batch) / Number(pps);
  const end = Date.now() + 1000 * Number(seconds);
  let sent = 0;
  let stop = false;
  process.on('SIGTERM', () => { stop = true; });
  while (!stop && Date.now() < end) {
    const started = Date.now();
    await Promise.all(Array.from({ length: batch }, (_, i) => new Promise<void>((resolve) => {
      socket.send(payload, Number(basePort) + ((sent + i) % Number(flows)), ip, () => resolve());
    })));
    sent += batch;
    const wait = interval - (Date.now() - started);
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  }
  socket.close();
  process.stdout.write(`${JSON.stringify({ sent })}\n`);
}

void main();
