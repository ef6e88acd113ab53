/**
 * vhost-tap: a vhost-style virtio-net backend for userspace VMMs.
 *
 * This is the package's one public entry point.
 */

// Tap queues
export { Tap, TapQueue, TAP_QUEUE_FLAGS } from './tap/tap';
export type { TapCreateOptions, TapOpenOptions, TapOffloads, TapFeatures, VnetHdrSize } from './tap/tap';
export {
  socketPair, listenUnix, connectUnix, acceptUnix, sendFds, receiveFds, closeFd, sendTapQueues, receiveTapQueues,
} from './tap/fd-passing';
export type { UnixSocketType, ReceivedFds } from './tap/fd-passing';
export { readTapLinkInfo } from './tap/link-info';
export type { TapLinkInfo } from './tap/link-info';
export { MAX_TAP_QUEUES, MAX_IFNAME_BYTES } from './tap/constants';

// Data path: guest memory, virtqueue signals, native queue-pair workers
export { GuestMemory } from './virtio/guest-memory';
export type { GuestMemoryRegion } from './virtio/guest-memory';
export { EventFd } from './virtio/eventfd';
export { QueuePair } from './virtio/queue-pair';
export type {
  QueuePairOptions, VirtqueueConfig, QueueStats, QueuePairStats, QueuePairPosition, QueueErrorEvent,
} from './virtio/queue-pair';
export * as features from './virtio/features';
export { featureBit, hasFeature, netHdrSize } from './virtio/features';
export { tapOffloadsForGuest } from './virtio/offloads';

// The guest side, for tests, examples and harnesses that play the guest
export { VirtioNetDriver, MAX_GSO_FRAME } from './virtio/driver/net-driver';
export type { VirtioNetDriverOptions, VirtioNetFeatures, DeviceQueueConfig, ReceivedFrame, OutgoingFrame, NetQueueStats } from './virtio/driver/net-driver';
export { SplitQueueDriver } from './virtio/driver/split-queue-driver';
export { GuestAllocator } from './virtio/driver/guest-allocator';
export { encodeNetHdr, decodeNetHdr } from './virtio/driver/net-header';
export type { VirtioNetHdr } from './virtio/driver/net-header';
export * as netHeader from './virtio/driver/net-header';

// Errors
export { makeError, errorCode } from './errors';
export type { VhostTapError, ErrorCode } from './errors';
