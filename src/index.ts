/**
 * vhost-tap: a vhost-style virtio-net backend for userspace VMMs.
 *
 * This is the package's one public entry point.
 */
export { Tap, TapQueue, TAP_QUEUE_FLAGS } from './tap/tap';
export type { TapCreateOptions, TapOpenOptions, TapOffloads, TapFeatures, VnetHdrSize } from './tap/tap';
export {
  socketPair, listenUnix, connectUnix, acceptUnix, sendFds, receiveFds, closeFd, sendTapQueues, receiveTapQueues,
} from './tap/fd-passing';
export type { UnixSocketType, ReceivedFds } from './tap/fd-passing';
export { readTapLinkInfo } from './tap/link-info';
export type { TapLinkInfo } from './tap/link-info';
export { MAX_TAP_QUEUES, MAX_IFNAME_BYTES } from './tap/constants';
export { makeError, errorCode } from './errors';
export type { VhostTapError, ErrorCode } from './errors';
