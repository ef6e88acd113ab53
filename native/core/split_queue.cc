#include "split_queue.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace vhost_tap {

Status SplitQueue::setup(std::shared_ptr<GuestMemoryMap> memory, const QueueConfig& c) {
  if (c.size == 0 || c.size > kMaxQueueSize || (c.size & (c.size - 1)) != 0) {
    return Status::failure(EINVAL, "queue size " + std::to_string(c.size) + " is not a power of two from 1 to 32768");
  }
  if (c.packed || c.lastAvailIdx > 0xffff) {
    return Status::failure(EINVAL, c.packed ? "a packed ring cannot be driven as a split one"
                                            : "ring base " + std::to_string(c.lastAvailIdx) + " is not a 16-bit index");
  }
  if ((c.descAddr & 15) || (c.availAddr & 1) || (c.usedAddr & 3)) {
    return Status::failure(EINVAL, "ring addresses are misaligned (descriptor table 16, available ring 2, used ring 4 bytes)");
  }
  auto* desc = memory->translate(c.descAddr, descTableBytes(c.size));
  auto* avail = memory->translate(c.availAddr, availRingBytes(c.size));
  auto* used = memory->translate(c.usedAddr, usedRingBytes(c.size));
  if (!desc || !avail || !used) {
    return Status::failure(EINVAL, std::string(!desc ? "descriptor table" : !avail ? "available ring" : "used ring") +
                                       " is not inside guest memory");
  }
  memory_ = std::move(memory);
  size_ = c.size;
  eventIdx_ = c.eventIdx;
  indirect_ = c.indirectDesc;
  desc_ = reinterpret_cast<VringDesc*>(desc);
  availFlags_ = reinterpret_cast<uint16_t*>(avail);
  availIdx_ = availFlags_ + 1;
  availRing_ = availFlags_ + 2;
  usedEvent_ = availRing_ + c.size;
  usedFlags_ = reinterpret_cast<uint16_t*>(used);
  usedIdxPtr_ = usedFlags_ + 1;
  usedRing_ = reinterpret_cast<VringUsedElem*>(used + 4);
  availEvent_ = reinterpret_cast<uint16_t*>(used + 4 + 8ull * c.size);
  lastAvail_ = static_cast<uint16_t>(c.lastAvailIdx);
  // The used index in guest memory is the driver's view of where we are.
  usedIdx_ = __atomic_load_n(usedIdxPtr_, __ATOMIC_ACQUIRE);
  pendingUsed_ = 0;
  signalledUsedValid_ = false;
  broken_.clear();
  fault_ = QueueFault::kNone;
  if (c.dirtyLog) log_.attach(c.dirtyLog);
  else log_.detach();
  usedLogAddr_ = c.usedLogAddr == QueueConfig::kLogAtUsedAddr ? c.usedAddr : c.usedLogAddr;
  return Status::success();
}

PopResult SplitQueue::fail(QueueFault fault, std::string reason) {
  fault_ = fault;
  broken_ = std::move(reason);
  return PopResult::kBroken;
}

namespace {

// The driver may rewrite a descriptor while we look at it: read it once
// (loadDescriptorWords) and check only the copy.
VringDesc readDescriptor(const VringDesc* desc) {
  const DescriptorWords w = loadDescriptorWords(desc, __ATOMIC_RELAXED);
  VringDesc d;
  d.addr = w.addr;
  d.len = static_cast<uint32_t>(w.rest);
  d.flags = static_cast<uint16_t>(w.rest >> 32);
  d.next = static_cast<uint16_t>(w.rest >> 48);
  return d;
}

}  // namespace

PopResult SplitQueue::walk(ChainDirection direction, struct iovec* iov, int maxIov, Chain* out, int* readableIov) {
  if (fault_ != QueueFault::kNone) return PopResult::kBroken;
  uint16_t availIdx = __atomic_load_n(availIdx_, __ATOMIC_ACQUIRE);
  uint16_t pending = static_cast<uint16_t>(availIdx - lastAvail_);
  if (pending == 0) return PopResult::kEmpty;
  if (pending > size_) {
    return fail(QueueFault::kAvailIndexJump, "available index jumped by " + std::to_string(pending) + ", more than the queue size " +
                std::to_string(size_));
  }
  uint16_t head = __atomic_load_n(&availRing_[lastAvail_ & (size_ - 1)], __ATOMIC_RELAXED);
  if (head >= size_) return fail(QueueFault::kHeadOutOfRange, "available ring names descriptor " + std::to_string(head) + " of " + std::to_string(size_));

  const VringDesc* table = desc_;
  uint32_t tableSize = size_;
  uint32_t index = head;
  uint32_t visited = 0;
  bool inIndirect = false;
  int iovCount = 0;
  int readableCount = 0;
  bool seenWritable = false;
  uint64_t bytes = 0;
  // The walk's time to live, as rust-vmm's virtio-queue keeps one: at most the
  // table's size of descriptors in each table (the ring's, then one indirect one),
  // so a chain costs at most twice the queue size of steps, loops included.
  for (;;) {
    if (++visited > tableSize) return fail(QueueFault::kChainTooLong, "descriptor chain is longer than its table or loops");
    const VringDesc d = readDescriptor(&table[index]);
    if (d.flags & VRING_DESC_F_INDIRECT) {
      if (!indirect_) return fail(QueueFault::kBadIndirect, "indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC");
      if (inIndirect) return fail(QueueFault::kBadIndirect, "indirect descriptor inside an indirect table");
      if (d.flags & VRING_DESC_F_NEXT) return fail(QueueFault::kBadIndirect, "indirect descriptor with the NEXT flag");
      if (d.len == 0 || d.len % sizeof(VringDesc) != 0) {
        return fail(QueueFault::kBadIndirect, "indirect table length " + std::to_string(d.len) + " is not a multiple of 16");
      }
      // virtio 1.2 2.7.5.3.1: "A driver MUST NOT create a descriptor chain longer than
      // the Queue Size of the device." A larger table would let one chain cost the
      // worker up to 65536 steps (zero-length descriptors consume no iovec), and the
      // same table can back every head in the ring.
      if (d.len / sizeof(VringDesc) > size_) {
        return fail(QueueFault::kBadIndirect, "indirect table of " + std::to_string(d.len / sizeof(VringDesc)) +
                    " descriptors is larger than the queue size " + std::to_string(size_));
      }
      if (d.addr & 15) return fail(QueueFault::kBadIndirect, "indirect table is not 16-byte aligned");
      const uint8_t* t = memory_->translate(d.addr, d.len);
      if (!t) return fail(QueueFault::kAddressOutOfBounds, "indirect table is not inside guest memory");
      table = reinterpret_cast<const VringDesc*>(t);
      tableSize = d.len / sizeof(VringDesc);
      index = 0;
      visited = 0;
      inIndirect = true;
      continue;
    }
    bool writable = (d.flags & VRING_DESC_F_WRITE) != 0;
    if (direction == ChainDirection::kWritable && !writable) return fail(QueueFault::kBadDirection, "read-only descriptor in a receive chain");
    if (direction == ChainDirection::kReadable && writable) return fail(QueueFault::kBadDirection, "write-only descriptor in a transmit chain");
    if (direction == ChainDirection::kReadThenWrite && seenWritable && !writable) {
      return fail(QueueFault::kBadDirection, "read-only descriptor after a write-only one");
    }
    seenWritable = seenWritable || writable;
    // At most 2 x 32768 lengths of 32 bits are summed: the uint64 cannot overflow.
    if (bytes + d.len > kMaxChainBytes) return fail(QueueFault::kChainTooLarge, "descriptor chain is longer than 2^32 bytes");
    int n = memory_->translateIov(d.addr, d.len, iov + iovCount, maxIov - iovCount);
    if (n == -2) return PopResult::kNoRoom;
    if (n < 0) {
      char range[64];
      snprintf(range, sizeof range, "0x%llx+%u", static_cast<unsigned long long>(d.addr), d.len);
      return fail(QueueFault::kAddressOutOfBounds, std::string("descriptor buffer ") + range + " is outside guest memory");
    }
    iovCount += n;
    if (!writable) readableCount = iovCount;
    bytes += d.len;
    if (!(d.flags & VRING_DESC_F_NEXT)) break;
    index = d.next;
    if (index >= tableSize) return fail(QueueFault::kNextOutOfRange, "descriptor next " + std::to_string(index) + " is past its table");
  }
  lastAvail_++;
  if (readableIov) *readableIov = readableCount;
  out->head = head;
  out->iovCount = iovCount;
  out->bytes = bytes;
  return PopResult::kChain;
}

bool SplitQueue::flushUsed() {
  if (pendingUsed_ == 0) return false;
  const uint16_t first = usedIdx_;
  const uint16_t count = pendingUsed_;
  usedIdx_ = static_cast<uint16_t>(usedIdx_ + pendingUsed_);
  pendingUsed_ = 0;
  __atomic_store_n(usedIdxPtr_, usedIdx_, __ATOMIC_RELEASE);
  if (log_.attached()) {
    // The entries written since the last flush (they may wrap around the ring), then flags and idx.
    const uint32_t start = first & (size_ - 1);
    const uint32_t run = std::min<uint32_t>(count, size_ - start);
    logUsed(4 + 8ull * start, 8ull * run);
    if (run < count) logUsed(4, 8ull * (count - run));
    logUsed(0, 4);
  }
  return true;
}

bool SplitQueue::needsCall() {
  // The used index store must be visible before we read the driver's request.
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (!eventIdx_) return (__atomic_load_n(availFlags_, __ATOMIC_RELAXED) & VRING_AVAIL_F_NO_INTERRUPT) == 0;
  uint16_t old = signalledUsed_;
  bool valid = signalledUsedValid_;
  signalledUsed_ = usedIdx_;
  signalledUsedValid_ = true;
  if (!valid) return true;
  if (old == usedIdx_) return false;
  return needEvent(__atomic_load_n(usedEvent_, __ATOMIC_RELAXED), usedIdx_, old);
}

void SplitQueue::disableNotify() {
  if (!eventIdx_) {
    __atomic_store_n(usedFlags_, static_cast<uint16_t>(VRING_USED_F_NO_NOTIFY), __ATOMIC_RELAXED);
    logUsed(0, 2);
  }
  // With event idx, not moving avail_event forward is what suppresses kicks.
}

bool SplitQueue::enableNotify() {
  if (eventIdx_) {
    __atomic_store_n(availEvent_, lastAvail_, __ATOMIC_RELAXED);
    logUsed(4 + 8ull * size_, 2);
  } else {
    __atomic_store_n(usedFlags_, static_cast<uint16_t>(0), __ATOMIC_RELAXED);
    logUsed(0, 2);
  }
  // Our request must be visible before we look at the index again, or a kick could be lost.
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  return hasAvail();
}

}  // namespace vhost_tap
