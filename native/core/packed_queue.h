// The device side of one packed virtqueue (virtio 1.2 section 2.8) in guest
// memory: one ring of descriptors the driver makes available in place and the
// device overwrites with used ones, tracked by wrap counters instead of indices.
// As with the split ring, nothing the driver wrote is trusted: a descriptor is
// read once into a local and checked there, a chain's walk is bounded by the
// queue size, and any violation marks the queue broken with a reason.
#pragma once
#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dirty_log.h"
#include "guest_memory.h"
#include "queue_common.h"
#include "queue_fault.h"
#include "vring.h"

namespace vhost_tap {

class PackedQueue {
 public:
  // Resolves the ring and both event suppression areas in guest memory. False
  // (with *error) if one is not inside it or misaligned, the size is not 1 to
  // 32768 (2.8: it need not be a power of two), or the ring base names a slot
  // past the ring.
  bool setup(std::shared_ptr<GuestMemoryMap> memory, const QueueConfig& config, std::string* error);

  PopResult pop(bool deviceWrites, struct iovec* iov, int maxIov, Chain* out) {
    return walk(deviceWrites ? ChainDirection::kWritable : ChainDirection::kReadable, iov, maxIov, out, nullptr);
  }
  PopResult popMixed(struct iovec* iov, int maxIov, Chain* out, int* readableIov) {
    return walk(ChainDirection::kReadThenWrite, iov, maxIov, out, readableIov);
  }
  // Gives back the last `count` popped chains (not yet pushed as used).
  void unpop(uint16_t count);

  // Adds a used descriptor for buffer `id`, whose chain took `descCount` ring
  // slots; written into the ring at flushUsed().
  void pushUsed(uint16_t id, uint32_t len, uint16_t descCount) {
    // More pending entries than the ring holds cannot come from chains we popped:
    // each took at least one slot. Keep the ring intact whatever a caller does.
    if (pendingCount_ >= size_) return;
    pending_[pendingCount_++] = {id, len, descCount};
  }
  // Writes the pushed used descriptors, the first one's flags last (2.8.14,
  // "Multi-buffer requests": the driver never sees part of a batch); false if none.
  bool flushUsed();

  void logWrite(const struct iovec* iov, int count, uint64_t offset, uint64_t len) {
    logIovWrite(log_, *memory_, iov, count, offset, len);
  }
  bool needsCall();
  void disableNotify();
  bool enableNotify();

  bool hasAvail() const { return isAvailable(loadFlags(lastAvail_), availWrap_); }
  // Where the ring stopped, as vhost-user's GET_VRING_BASE encodes it for a packed ring.
  uint32_t ringBase() const {
    return static_cast<uint32_t>(lastAvail_) | (static_cast<uint32_t>(availWrap_) << kPackedWrapBit) |
           (static_cast<uint32_t>(usedSlot_) << 16) | (static_cast<uint32_t>(usedWrap_) << (16 + kPackedWrapBit));
  }
  uint32_t size() const { return size_; }
  // Why the queue stopped (kNone: it did not), with the particulars in brokenReason().
  QueueFault fault() const { return fault_; }
  const std::string& brokenReason() const { return broken_; }
  bool broken() const { return fault_ != QueueFault::kNone; }
  void markBroken(QueueFault fault, std::string reason) { fail(fault, std::move(reason)); }
  void releaseMemory() {
    log_.detach();
    memory_.reset();
    desc_ = nullptr;
    driverEvent_ = deviceEvent_ = nullptr;
    positionFile_.reset();
    positionRecord_ = nullptr;
  }

 private:
  struct PendingUsed {
    uint16_t id;
    uint32_t len;
    uint16_t descCount;
  };

  PopResult fail(QueueFault fault, std::string reason);
  PopResult walk(ChainDirection direction, struct iovec* iov, int maxIov, Chain* out, int* readableIov);
  uint16_t loadFlags(uint32_t slot) const {
    return static_cast<uint16_t>(__atomic_load_n(&reinterpret_cast<const uint64_t*>(&desc_[slot])[1], __ATOMIC_ACQUIRE) >> 48);
  }
  // 2.8.1: available when AVAIL matches the wrap counter and USED does not.
  static bool isAvailable(uint16_t flags, bool wrap) {
    return ((flags & VIRTQ_DESC_F_AVAIL) != 0) == wrap && ((flags & VIRTQ_DESC_F_USED) != 0) != wrap;
  }
  void advance(uint32_t* slot, bool* wrap, uint32_t by) const {
    *slot += by;
    if (*slot >= size_) {
      *slot -= size_;
      *wrap = !*wrap;
    }
  }
  void writeDeviceEvent(uint16_t offWrap, uint16_t flags, bool withOffset);
  uint32_t usedPosition() const { return usedSlot_ | (static_cast<uint32_t>(usedWrap_) << kPackedWrapBit); }

  std::shared_ptr<GuestMemoryMap> memory_;
  uint32_t size_ = 0;
  bool eventIdx_ = false;
  bool indirect_ = false;
  PackedDesc* desc_ = nullptr;
  PackedEventSuppress* driverEvent_ = nullptr;  // the driver's wishes about our calls
  PackedEventSuppress* deviceEvent_ = nullptr;  // ours about its kicks
  uint32_t lastAvail_ = 0;  // next slot to read
  bool availWrap_ = true;
  uint32_t usedSlot_ = 0;   // next slot to write a used descriptor into
  bool usedWrap_ = true;
  // Where each of the last `size` pops started, for unpop(): entry popCount_ % size.
  std::vector<uint16_t> popStarts_;
  uint64_t popCount_ = 0;  // 64 bits: a 32-bit count wraps after ~71 min at 1 Mpps, and unpop() across the wrap gave back too few
  std::vector<PendingUsed> pending_;
  uint32_t pendingCount_ = 0;
  // Ring slots used since needsCall() last looked, for the event offset check.
  uint32_t usedSinceCheck_ = 0;
  bool signalledValid_ = false;
  uint16_t deviceEventFlags_ = 0xffff;  // what we last wrote, to skip rewriting it
  QueueFault fault_ = QueueFault::kNone;
  std::string broken_;
  DirtyLogCursor log_;
  uint64_t descLogAddr_ = 0;
  uint64_t deviceEventLogAddr_ = 0;
  // QueueConfig::positionFile: [0] the used position (slot | wrap << 15) after the
  // last complete batch, [1] where the batch being written ends.
  std::shared_ptr<GuestMemoryMap> positionFile_;
  uint32_t* positionRecord_ = nullptr;

  // native/tests: sets popCount_ near 2^32, where unpop() once gave back too few
  // chains (a regression test that cannot pop 2^32 chains to get there).
  friend struct PackedQueueTestAccess;
};

}  // namespace vhost_tap
