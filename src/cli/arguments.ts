import { makeError } from '..';

export interface ServeOptions {
  socket?: string;
  listenFd?: number;
  tap: string;
  queues: number;
  tapFds: number[];
  client: boolean;
  reconnectMs: number;
  netns?: string;
  mac?: string;
  mtu?: number;
  busyPollUs: number;
  /** Where packed rings' positions are kept across restarts; undefined with --no-ring-state. */
  ringState?: string;
  /** The path was not given (the default beside the socket): a failure to use it is a warning, not fatal. */
  ringStateDefault: boolean;
  /** --no-steering: no steering program on the tap, tun's own flow hash picks the queues. */
  steering: boolean;
  /** --steering-map-fd: the map of a steering program a privileged helper loaded and attached to the --tap-fd tap. */
  steeringMapFd?: number;
}

export function usage(): string {
  return `Usage: vhost-tap serve --socket PATH --tap NAME [options]

A vhost-user backend for virtio-net: QEMU (or any vhost-user frontend) gets
its guest NIC through this daemon, which moves frames between the guest's
virtqueues and a multiqueue tap.

  --socket PATH, --socket-path PATH   unix socket to listen on (or connect to with --client)
  --fd FD                             an inherited, already listening socket instead
  --tap NAME                          the tap device (created if missing; an existing persistent one is opened)
  --queues N                          queue pairs (tap queues), default 1
  --tap-fd FD [FD...]                 queue fds of a tap made by a privileged helper (then no root is needed)
  --client                            connect to the frontend's socket, and reconnect when it goes
  --reconnect-ms N                    client mode: delay between attempts, default 1000
  --netns NAME                        create/open the tap in network namespace NAME
  --mac MAC                           MAC address in the device's config space
  --mtu N                             MTU of the tap, offered to the guest
  --busy-poll-us N                    after traffic, workers spin N us before sleeping: lower
                                      latency for CPU (default 0: never spin; never at idle)
  --ring-state PATH                   where packed rings' positions are kept, so that the daemon
                                      restarted under a running guest resumes them (QEMU cannot
                                      tell it); default PATH.rings beside --socket
  --no-ring-state                     keep none: after a restart a packed-ring guest needs a reset
  --no-steering                       no steering eBPF program on the tap: tun's own flow hash
                                      picks the queues, and a queue-count change loses the frames
                                      already steered to the queues that leave (for comparison)
  --steering-map-fd FD                with --tap-fd: the map of the steering program the helper loaded
                                      and attached (TapSteering, sendTapQueues): no privilege needed
  --print-capabilities                print {"type":"net"} and exit
`;
}

function integer(flag: string, value: string | undefined, min: number, max: number): number {
  const n = Number(value);
  if (value === undefined || !Number.isInteger(n) || n < min || n > max) {
    throw makeError('EINVAL', `${flag} takes an integer from ${min} to ${max}, got ${String(value)}`);
  }
  return n;
}

export function parseServeArguments(args: string[]): ServeOptions {
  const options: Partial<ServeOptions> & { tapFds: number[]; client: boolean; reconnectMs: number; steering: boolean } = { tapFds: [], client: false, reconnectMs: 1000, busyPollUs: 0, steering: true };
  let ringState: string | false | undefined;
  for (let i = 0; i < args.length; i++) {
    const flag = args[i]!;
    const value = (): string => {
      const v = args[++i];
      if (v === undefined || v.startsWith('--')) throw makeError('EINVAL', `${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--socket':
      case '--socket-path':
        options.socket = value();
        break;
      case '--fd':
        options.listenFd = integer(flag, value(), 0, 0x7fffffff);
        break;
      case '--tap':
        options.tap = value();
        break;
      case '--queues':
        options.queues = integer(flag, value(), 1, 256);
        break;
      case '--tap-fd':
        options.tapFds.push(integer(flag, value(), 0, 0x7fffffff));
        while (args[i + 1] !== undefined && /^\d+$/.test(args[i + 1]!)) options.tapFds.push(Number(args[++i]));
        break;
      case '--client':
        options.client = true;
        break;
      case '--reconnect-ms':
        options.reconnectMs = integer(flag, value(), 10, 600_000);
        break;
      case '--netns':
        options.netns = value();
        break;
      case '--mac':
        options.mac = value();
        break;
      case '--mtu':
        options.mtu = integer(flag, value(), 68, 65535);
        break;
      case '--busy-poll-us':
        options.busyPollUs = integer(flag, value(), 0, 1_000_000);
        break;
      case '--ring-state':
        ringState = value();
        break;
      case '--no-ring-state':
        ringState = false;
        break;
      case '--no-steering':
        options.steering = false;
        break;
      case '--steering-map-fd':
        options.steeringMapFd = integer(flag, value(), 0, 0x7fffffff);
        break;
      default:
        throw makeError('EINVAL', `unknown option ${flag}\n\n${usage()}`);
    }
  }
  if (!options.tap) throw makeError('EINVAL', `--tap NAME is required\n\n${usage()}`);
  if (options.steeringMapFd !== undefined && options.tapFds.length === 0) throw makeError('EINVAL', '--steering-map-fd goes with --tap-fd: the helper that made the tap loaded the program');
  if (options.steeringMapFd !== undefined && !options.steering) throw makeError('EINVAL', 'give --steering-map-fd or --no-steering, not both');
  if (!options.socket && options.listenFd === undefined) throw makeError('EINVAL', `--socket PATH (or --fd) is required\n\n${usage()}`);
  if (options.socket && options.listenFd !== undefined) throw makeError('EINVAL', 'give --socket or --fd, not both');
  if (options.client && !options.socket) throw makeError('EINVAL', '--client needs --socket PATH');
  if (options.tapFds.length > 0 && options.queues !== undefined && options.queues !== options.tapFds.length) {
    throw makeError('EINVAL', `--queues ${options.queues} does not match the ${options.tapFds.length} --tap-fd fds`);
  }
  const ringStateDefault = ringState === undefined;
  const ringStatePath = ringState === false ? undefined : ringState ?? (options.socket ? `${options.socket}.rings` : undefined);
  return {
    ...options, tap: options.tap, queues: options.queues ?? (options.tapFds.length || 1),
    ...(ringStatePath !== undefined ? { ringState: ringStatePath } : {}), ringStateDefault,
  } as ServeOptions;
}
