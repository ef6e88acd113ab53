// What both virtqueue layouts (split, virtio 1.x 2.7; packed, 2.8) share on the
// device side: how a ring is configured, what popping a chain yields, and how
// writes through a chain's iovecs are logged for live migration.
#pragma once
#include <sys/uio.h>

#include <algorithm>
#include <cstdint>
#include <memory>

#include "dirty_log.h"
#include "guest_memory.h"

namespace vhost_tap {

struct QueueConfig {
  uint32_t size = 0;
  // Guest-physical addresses. Split: descriptor table, available ring, used ring.
  // Packed: descriptor ring, driver event suppression ("driver area"), device
  // event suppression ("device area"), as vhost's SET_VRING_ADDR carries them.
  uint64_t descAddr = 0;
  uint64_t availAddr = 0;
  uint64_t usedAddr = 0;
  bool packed = false;  // VIRTIO_F_RING_PACKED
  bool eventIdx = false;
  bool indirectDesc = false;
  // Where to resume (vhost SET_VRING_BASE). Split: the 16-bit last avail index.
  // Packed, as vhost-user encodes it: bits 0-14 the next descriptor to read,
  // bit 15 the avail wrap counter, bits 16-30 the next used slot, bit 31 the
  // used wrap counter (0x80008000 for a ring that never ran).
  uint32_t lastAvailIdx = 0;
  int kickFd = -1;
  int callFd = -1;
  // Live migration: where the device's writes are logged (none: not logging), and
  // the guest-physical address the used ring's writes are logged at (vhost-user's
  // log_guest_addr; the used ring's own address unless the frontend says otherwise).
  static constexpr uint64_t kLogAtUsedAddr = ~0ull;
  std::shared_ptr<DirtyLogSlot> dirtyLog;
  uint64_t usedLogAddr = kLogAtUsedAddr;
  // Packed rings of a daemon that may be restarted: where the ring's used
  // position is kept outside the process (vhost-user's frontend has no way to
  // learn it after a crash: a packed ring keeps no index in guest memory). Two
  // u32 at positionOffset of positionFile: the position after the last batch
  // of used descriptors, and the one the batch being written will end at.
  std::shared_ptr<GuestMemoryMap> positionFile;
  uint64_t positionOffset = 0;
};

// A chain popped from the ring, as iovecs into guest memory.
struct Chain {
  uint16_t head = 0;       // split: the head descriptor; packed: the buffer ID
  uint16_t descCount = 1;  // packed: ring slots the chain took (its used entry skips that many)
  int iovCount = 0;
  uint64_t bytes = 0;  // sum of the descriptors' lengths
};

// kNoRoom: the chain needs more iovecs than were offered; nothing was consumed.
enum class PopResult { kChain, kEmpty, kBroken, kNoRoom };

// Which descriptors a chain may hold: all readable (tx), all writable (rx), or
// readable ones followed by writable ones (a request and its reply).
enum class ChainDirection { kReadable, kWritable, kReadThenWrite };

// virtio 1.2 2.7.5.1 (and 2.8.x likewise): a used element's len is 32 bits, so
// "Drivers MUST NOT add a descriptor chain longer than 2^32 bytes in total".
constexpr uint64_t kMaxChainBytes = 1ull << 32;

// Marks in the dirty log the `len` bytes the device wrote through
// iov[0..count), `offset` bytes in. Every iovec came from translateIov() over
// `memory`, within one region.
inline void logIovWrite(DirtyLogCursor& log, const GuestMemoryMap& memory, const struct iovec* iov, int count,
                        uint64_t offset, uint64_t len) {
  if (!log.attached()) return;
  for (int i = 0; i < count && len > 0; i++) {
    if (offset >= iov[i].iov_len) {
      offset -= iov[i].iov_len;
      continue;
    }
    uint64_t n = std::min<uint64_t>(len, iov[i].iov_len - offset);
    uint64_t gpa;
    if (memory.guestAddress(static_cast<const uint8_t*>(iov[i].iov_base) + offset, &gpa)) log.mark(gpa, n);
    len -= n;
    offset = 0;
  }
}

}  // namespace vhost_tap
