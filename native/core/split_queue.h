// The device side of one split virtqueue in guest memory. It trusts nothing
// the driver wrote: every index, descriptor and address is checked, and any
// violation marks the queue broken with a reason instead of touching memory
// outside the guest's regions.
#pragma once
#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>

#include "dirty_log.h"
#include "guest_memory.h"
#include "queue_common.h"
#include "queue_fault.h"
#include "status.h"
#include "vring.h"

namespace vhost_tap {

class SplitQueue {
 public:
  // Resolves the rings in guest memory. False (with *error) if they are not all
  // inside it, misaligned, or the size is not a power of two up to 32768.
  Status setup(std::shared_ptr<GuestMemoryMap> memory, const QueueConfig& config);

  // Pops the next available chain into iov[0..maxIov). deviceWrites: an rx
  // chain (all descriptors writable) rather than a tx chain (all readable).
  PopResult pop(bool deviceWrites, struct iovec* iov, int maxIov, Chain* out) {
    return walk(deviceWrites ? ChainDirection::kWritable : ChainDirection::kReadable, iov, maxIov, out, nullptr);
  }
  // Pops a request/reply chain; *readableIov is how many iovecs are readable (the rest are writable).
  PopResult popMixed(struct iovec* iov, int maxIov, Chain* out, int* readableIov) {
    return walk(ChainDirection::kReadThenWrite, iov, maxIov, out, readableIov);
  }
  // Gives back the last `count` popped chains (they were not used).
  void unpop(uint16_t count) { lastAvail_ = static_cast<uint16_t>(lastAvail_ - count); }

  // Adds a used entry; visible to the driver at flushUsed().
  void pushUsed(uint16_t head, uint32_t len, uint16_t /*descCount: a packed ring's*/ = 1) {
    VringUsedElem* e = &usedRing_[static_cast<uint16_t>(usedIdx_ + pendingUsed_) & (size_ - 1)];
    e->id = head;
    e->len = len;
    pendingUsed_++;
  }
  // Publishes the pushed used entries; false if there were none.
  bool flushUsed();

  // Marks in the dirty log (if one is current) the `len` bytes the device wrote
  // through iov[0..count), `offset` bytes in: call it once the write is complete,
  // before the used entry that hands the buffer to the driver.
  void logWrite(const struct iovec* iov, int count, uint64_t offset, uint64_t len) {
    logIovWrite(log_, *memory_, iov, count, offset, len);
  }
  // Whether the driver wants an interrupt for what flushUsed() published since the last call.
  bool needsCall();

  // Driver-to-device notifications: off while the worker is busy with this queue.
  void disableNotify();
  // Turns notifications on; true if buffers arrived meanwhile (the caller must keep going).
  bool enableNotify();

  bool hasAvail() const { return __atomic_load_n(availIdx_, __ATOMIC_ACQUIRE) != lastAvail_; }
  // Where the ring stopped, as vhost GET_VRING_BASE gives it: the last avail index.
  uint32_t ringBase() const { return lastAvail_; }
  uint16_t usedIdx() const { return usedIdx_; }
  uint32_t size() const { return size_; }
  // Why the queue stopped (kNone: it did not), with the particulars in brokenReason().
  QueueFault fault() const { return fault_; }
  const std::string& brokenReason() const { return broken_; }
  bool broken() const { return fault_ != QueueFault::kNone; }
  void markBroken(QueueFault fault, std::string reason) { fail(fault, std::move(reason)); }
  // Lets go of guest memory (a stopped queue must not keep a departed VM's RAM
  // mapped until JS collects it). The indexes stay readable; setup() again to use it.
  void releaseMemory() {
    log_.detach();
    memory_.reset();
    desc_ = nullptr;
    availFlags_ = availIdx_ = availRing_ = usedEvent_ = usedFlags_ = usedIdxPtr_ = availEvent_ = nullptr;
    usedRing_ = nullptr;
  }

 private:
  PopResult fail(QueueFault fault, std::string reason);
  PopResult walk(ChainDirection direction, struct iovec* iov, int maxIov, Chain* out, int* readableIov);
  // Marks bytes [offset, offset + len) of the used ring in the dirty log.
  void logUsed(uint64_t offset, uint64_t len) { log_.mark(usedLogAddr_ + offset, len); }

  std::shared_ptr<GuestMemoryMap> memory_;
  uint32_t size_ = 0;
  bool eventIdx_ = false;
  bool indirect_ = false;
  VringDesc* desc_ = nullptr;
  uint16_t* availFlags_ = nullptr;
  uint16_t* availIdx_ = nullptr;
  uint16_t* availRing_ = nullptr;
  uint16_t* usedEvent_ = nullptr;  // trailer of the avail ring
  uint16_t* usedFlags_ = nullptr;
  uint16_t* usedIdxPtr_ = nullptr;
  VringUsedElem* usedRing_ = nullptr;
  uint16_t* availEvent_ = nullptr;  // trailer of the used ring
  uint16_t lastAvail_ = 0;
  uint16_t usedIdx_ = 0;
  uint16_t pendingUsed_ = 0;
  uint16_t signalledUsed_ = 0;
  bool signalledUsedValid_ = false;
  QueueFault fault_ = QueueFault::kNone;
  std::string broken_;
  DirtyLogCursor log_;
  uint64_t usedLogAddr_ = 0;
};

}  // namespace vhost_tap
