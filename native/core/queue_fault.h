// Why a virtqueue stopped: one typed reason per kind of driver (or tap) misbehaviour,
// carried from the ring walker to JS (`queue-error` events' and DeviceQueueError's
// `code`) and to the daemon's log, beside a message with the particulars.
#pragma once
#include <cstdint>

namespace vhost_tap {

enum class QueueFault : uint8_t {
  kNone = 0,
  // Split ring (virtio 1.2 2.7.6): the driver's avail index moved further than the
  // queue has descriptors, so it cannot be counting chains it made available.
  kAvailIndexJump,
  // Split ring: the avail ring names a head descriptor past the table.
  kHeadOutOfRange,
  // A descriptor's next field points past its table (2.7.5).
  kNextOutOfRange,
  // A chain is longer than its table or the queue size, or loops (2.7.5.3.1, 2.8.4).
  kChainTooLong,
  // A chain holds more than 2^32 bytes (2.7.5.1: a used element's len is 32 bits).
  kChainTooLarge,
  // A chain needs more segments than the device handles per chain.
  kTooManySegments,
  // A read-only descriptor where the device must write, or the reverse, or a
  // readable one after a writable one (2.7.4.2, 2.8.4).
  kBadDirection,
  // An indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC, nested, chained,
  // misaligned, of a bad length, or larger than the queue (2.7.5.3, 2.8.7).
  kBadIndirect,
  // A buffer or an indirect table outside the guest's memory regions.
  kAddressOutOfBounds,
  // Packed ring: a descriptor inside a chain is not available in the chain's lap
  // (its AVAIL/USED flags do not match the wrap counter; 2.8.6).
  kDescriptorNotAvailable,
  // A receive buffer too small to hold even the virtio-net header.
  kBufferTooSmall,
  // The tap (or what stands in for it) failed a read or a write with an errno
  // that does not clear by itself.
  kTapError,
  // The worker thread could not wait for its events (epoll_wait failed): not the
  // driver's doing, and not seen in practice; the pair stops moving frames.
  kWorkerError,
};

// The code JS sees ("avail-index-jump", ...): stable, part of the public API.
inline const char* queueFaultCode(QueueFault fault) {
  switch (fault) {
    case QueueFault::kNone: return "none";
    case QueueFault::kAvailIndexJump: return "avail-index-jump";
    case QueueFault::kHeadOutOfRange: return "head-out-of-range";
    case QueueFault::kNextOutOfRange: return "next-out-of-range";
    case QueueFault::kChainTooLong: return "chain-too-long";
    case QueueFault::kChainTooLarge: return "chain-too-large";
    case QueueFault::kTooManySegments: return "too-many-segments";
    case QueueFault::kBadDirection: return "bad-direction";
    case QueueFault::kBadIndirect: return "bad-indirect";
    case QueueFault::kAddressOutOfBounds: return "address-out-of-bounds";
    case QueueFault::kDescriptorNotAvailable: return "descriptor-not-available";
    case QueueFault::kBufferTooSmall: return "buffer-too-small";
    case QueueFault::kTapError: return "tap-error";
    case QueueFault::kWorkerError: return "worker-error";
  }
  return "unknown";
}

}  // namespace vhost_tap
