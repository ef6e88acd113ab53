#!/usr/bin/env node
// `vhost-tap serve ...`: the vhost-user backend daemon. Follows the conventions
// of QEMU's vhost-user backend programs (--socket-path, --fd,
// --print-capabilities); structured log lines (JSON) go to stderr.
import { spawn } from 'node:child_process';

// The daemon is a consumer of the public API like any VMM: only the package root.
import { Tap, TapSteering, VhostUserServer, VirtioNetDevice, makeError, readTapLinkInfo } from '..';
import { parseServeArguments, usage, type ServeOptions } from './arguments';

const NETNS_MARK = 'VHOST_TAP_IN_NETNS';

function log(event: string, fields: Record<string, unknown> = {}): void {
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), event, ...fields })}\n`);
}

/** With --netns the whole daemon runs in that namespace: re-run it under `ip netns exec`. */
function reexecInNetns(netns: string): void {
  const child = spawn('ip', ['netns', 'exec', netns, process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, [NETNS_MARK]: netns },
  });
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => child.kill(signal));
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
}

function openTap(options: ServeOptions): Tap {
  if (options.tapFds.length > 0) {
    const tap = Tap.fromFds(options.tap, options.tapFds);
    // The steering program's map from the privileged helper: the device steers through it.
    if (options.steeringMapFd !== undefined) tap.steering = TapSteering.fromFds(options.steeringMapFd);
    return tap;
  }
  try {
    return Tap.create({ name: options.tap, queues: options.queues, ...(options.mtu ? { mtu: options.mtu } : {}) });
  } catch (error) {
    // An existing (persistent) tap of that name: take queues of it.
    if ((error as { code?: string }).code === 'EBUSY') {
      // Only a persistent tap nobody holds may be taken: another process's live tap would
      // have part of its guest's traffic steered into our queues, and its offloads rewritten.
      const info = readTapLinkInfo(options.tap);
      if (!info.persist || info.numQueues + info.numDisabled > 0) {
        throw makeError('EBUSY', `tap ${options.tap} is in use by another process: give another --tap name`);
      }
      return Tap.open(options.tap, { queues: options.queues });
    }
    throw error;
  }
}

async function serve(options: ServeOptions): Promise<void> {
  const tap = openTap(options);
  const device = new VirtioNetDevice({
    tap,
    controlQueue: 'frontend',
    maxQueuePairs: tap.queues.length,
    ...(options.mac ? { mac: options.mac } : {}),
    ...(options.mtu ? { mtu: options.mtu } : {}),
    busyPollUs: options.busyPollUs,
    steering: options.steering ? 'auto' : 'off',
  });
  // Once, right after construction: whether queue-count changes are lossless here, and if not, why.
  // A warning unless --no-steering asked for it.
  device.on('steering', (e) => log('steering', {
    active: e.active, ...(e.reason !== undefined ? { reason: e.reason } : {}), ...(!e.active && options.steering ? { level: 'warning' } : {}),
  }));
  device.on('queue-error', (e) => log('queue-error', { pair: e.pair, queue: e.queue, code: e.code, error: e.message }));
  device.on('queue-pairs', (e) => log('queue-pairs-changed', { active: e.active, previous: e.previous, numDisabled: tap.queues.filter((q) => !q.attached).length }));
  device.on('protocol-error', (e) => log('protocol-error', { error: e }));
  device.on('features-inactive', (e) => log('features-inactive', { level: 'warning', features: `0x${e.features.toString(16)}`, reasons: e.reasons }));
  const makeServer = (ringState: string | undefined): VhostUserServer => new VhostUserServer({
    device,
    ...(options.socket ? { socketPath: options.socket } : {}),
    ...(options.listenFd !== undefined ? { listenFd: options.listenFd } : {}),
    client: options.client,
    reconnectMs: options.reconnectMs,
    ...(ringState !== undefined ? { ringPositionsPath: ringState } : {}),
    log,
  });
  let server = makeServer(options.ringState);
  log('starting', {
    tap: tap.name, queues: tap.queues.length, socket: options.socket ?? `fd ${String(options.listenFd)}`,
    mode: options.client ? 'client' : 'server', netns: process.env[NETNS_MARK] ?? null, features: `0x${device.offeredFeatures.toString(16)}`,
    ringState: options.ringState ?? null,
  });
  try {
    server.start();
  } catch (error) {
    // The default file beside the socket (its directory may not be ours to write in): go on
    // without it, and say what a restart then costs a packed-ring guest.
    if (!options.ringStateDefault || options.ringState === undefined || !/ring positions/.test((error as Error).message)) throw error;
    log('ring-state-unavailable', { level: 'warning', path: options.ringState, error: (error as Error).message, consequence: 'after a restart of this daemon, a guest with packed rings loses its network until it resets the device (--ring-state PATH to keep them elsewhere)' });
    server = makeServer(undefined);
    server.start();
  }
  let stopping = false;
  const shutdown = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log('stopping', { signal });
    await server.stop();
    device.close();
    tap.close();
    log('stopped', { served: server.served });
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

async function main(argv: string[]): Promise<void> {
  if (argv.includes('--print-capabilities')) {
    process.stdout.write(`${JSON.stringify({ type: 'net' })}\n`);
    return;
  }
  if (argv.length === 0 || argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(usage());
    return;
  }
  const [command, ...rest] = argv;
  if (command !== 'serve') throw Object.assign(new Error(`unknown command "${command}"\n\n${usage()}`), { code: 'EINVAL' });
  const options = parseServeArguments(rest);
  if (options.netns && process.env[NETNS_MARK] !== options.netns) {
    reexecInNetns(options.netns);
    return;
  }
  await serve(options);
}

main(process.argv.slice(2)).catch((error: unknown) => {
  log('fatal', { code: (error as { code?: string }).code, error: (error as Error).message });
  process.exit(1);
});
