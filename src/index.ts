/**
 * vhost-tap: a vhost-style virtio-net backend for userspace VMMs.
 *
 * This is the package's one public entry point: everything a VMM author uses is
 * exported here, and nothing else is part of the API (the README's "Public API"
 * says what is in and what stays internal, and why). Examples and the CLI import
 * only from here; test/package.test.ts checks that they do.
 */

// Tap queues
export { Tap, TapQueue, TAP_QUEUE_FLAGS } from './tap/tap';
export type { TapCreateOptions, TapOpenOptions, TapOffloads, TapFeatures, VnetHdrSize } from './tap/tap';
export {
  TapSteering, RSS_HASH_TYPE_IPV4, RSS_HASH_TYPE_TCPV4, RSS_HASH_TYPE_UDPV4, RSS_HASH_TYPE_IPV6, RSS_HASH_TYPE_TCPV6, RSS_HASH_TYPE_UDPV6,
  RSS_SUPPORTED_HASH_TYPES, RSS_KEY_BYTES, RSS_MAX_TABLE_ENTRIES,
} from './tap/steering';
export type { SteeringTable } from './tap/steering';
export {
  socketPair, listenUnix, connectUnix, acceptUnix, sendFds, receiveFds, closeFd, sendTapQueues, receiveTapQueues,
} from './tap/fd-passing';
export type { UnixSocketType, ReceivedFds } from './tap/fd-passing';
export { readTapLinkInfo } from './tap/link-info';
export type { TapLinkInfo } from './tap/link-info';
export { MAX_TAP_QUEUES, MAX_IFNAME_BYTES } from './tap/constants';

// The device a VMM embeds: status, features, config space, queues, control queue
export { VirtioNetDevice } from './virtio/net-device';
export type {
  VirtioNetDeviceOptions, VirtioNetDeviceEvents, DeviceStats, SteeringState, DeviceQueueError, QueuePairsChange, VirtioNetDeviceState,
  RssState,
} from './virtio/net-device';
export type { RssConfig } from './virtio/rss';
export { DEVICE_STATE_VERSION } from './virtio/net-device';
export { DirtyLog, DirtyLogSlot, DIRTY_LOG_PAGE_SIZE, dirtyLogBytes } from './virtio/dirty-log';
export {
  STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK, STATUS_DEVICE_NEEDS_RESET, STATUS_FAILED,
  describeStatus,
} from './virtio/device-status';

// The vhost-user backend, in-process (what `vhost-tap serve` runs)
export { VhostUserServer } from './vhost-user/server';
export type { VhostUserServerOptions, VhostUserServerEvents } from './vhost-user/server';
export type { Logger } from './vhost-user/session';

// Data path: guest memory, virtqueue signals, native queue-pair workers
export { GuestMemory } from './virtio/guest-memory';
export type { GuestMemoryRegion } from './virtio/guest-memory';
export { EventFd } from './virtio/eventfd';
export { QueuePair } from './virtio/queue-pair';
export type {
  QueuePairOptions, VirtqueueConfig, QueueStats, QueuePairStats, QueuePairPosition, QueueErrorEvent,
} from './virtio/queue-pair';
export { QUEUE_FAULT_CODES } from './virtio/queue-fault';
export type { QueueFaultCode } from './virtio/queue-fault';
export * as features from './virtio/features';
export { featureBit, hasFeature, netHdrSize } from './virtio/features';
export { tapOffloadsForGuest } from './virtio/offloads';

// The guest side, for a VMM's own tests and harnesses that play the guest
export { VirtioNetDriver, MAX_GSO_FRAME } from './virtio/driver/net-driver';
export type { VirtioNetDriverOptions, VirtioNetFeatures, DeviceQueueConfig, ReceivedFrame, OutgoingFrame, NetQueueStats } from './virtio/driver/net-driver';
export { SplitQueueDriver } from './virtio/driver/split-queue-driver';
export { PackedQueueDriver } from './virtio/driver/packed-queue-driver';
export { PACKED_RING_BASE_FRESH, encodePackedRingBase, decodePackedRingBase, freshRingBase } from './virtio/ring-base';
export type { PackedRingPosition } from './virtio/ring-base';
export type { PackedQueueOptions } from './virtio/driver/packed-queue-driver';
export type { VirtqueueDriver, VirtqueueLayout, VirtqueueOptions, Segment, UsedBuffer } from './virtio/driver/virtqueue-driver';
export { ControlQueueDriver } from './virtio/driver/control-queue-driver';
export type { RssSettings } from './virtio/driver/control-queue-driver';
export { VirtioNetGuest } from './virtio/driver/guest';
export type { GuestBringUpOptions } from './virtio/driver/guest';
export { GuestAllocator } from './virtio/driver/guest-allocator';
export { encodeNetHdr, decodeNetHdr } from './virtio/driver/net-header';
export type { VirtioNetHdr } from './virtio/driver/net-header';
export * as netHeader from './virtio/driver/net-header';

// Errors
export { makeError, errorCode } from './errors';
export type { VhostTapError, ErrorCode } from './errors';
