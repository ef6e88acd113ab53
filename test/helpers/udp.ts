// Sending UDP flows from this namespace's stack towards a tap.
import dgram from 'node:dgram';

import { run } from './system';

/** Gives the tap an address and a permanent neighbour, so datagrams to `peer` leave through the tap at once. */
export function routeThroughTap(tapName: string, local: string, peer: string, peerMac = '02:00:00:00:00:02'): void {
  run('ip', ['addr', 'add', `${local}/24`, 'dev', tapName]);
  run('ip', ['neigh', 'replace', peer, 'lladdr', peerMac, 'dev', tapName, 'nud', 'permanent']);
}

/** Sends one datagram to each of `ports` on `peer`; resolves when the kernel has taken all of them. */
export async function sendFlows(peer: string, ports: readonly number[], payload = Buffer.from('vhost-tap')): Promise<void> {
  const socket = dgram.createSocket('udp4');
  try {
    await Promise.all(ports.map((port) => new Promise<void>((resolve, reject) => {
      socket.send(payload, port, peer, (error) => (error ? reject(error) : resolve()));
    })));
  } finally {
    socket.close();
  }
}

/** Sends `payloads` in order from `local` to `peer`:`port`; resolves when the kernel has taken all of them. */
export async function sendDatagrams(local: string, peer: string, port: number, payloads: readonly Buffer[]): Promise<void> {
  const socket = dgram.createSocket('udp4');
  try {
    await new Promise<void>((resolve) => socket.bind(0, local, resolve));
    for (const p of payloads) {
      await new Promise<void>((resolve, reject) => socket.send(p, port, peer, (error) => (error ? reject(error) : resolve())));
    }
  } finally {
    socket.close();
  }
}
