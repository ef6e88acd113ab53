#include "packed_queue.h"

#include <algorithm>
#include <cstdio>

namespace vhost_tap {

Status PackedQueue::setup(std::shared_ptr<GuestMemoryMap> memory, const QueueConfig& c) {
  if (!c.packed) {
    return Status::failure(EINVAL, "a split ring cannot be driven as a packed one");
  }
  // 2.8: "Packed virtqueues support up to 2^15 entries"; the size need not be a power of 2.
  if (c.size == 0 || c.size > kMaxQueueSize) {
    return Status::failure(EINVAL, "queue size " + std::to_string(c.size) + " is not from 1 to 32768");
  }
  // 2.8.10.1 ("Structure Size and Alignment"): descriptor ring 16, both event structures 4.
  if ((c.descAddr & 15) || (c.availAddr & 3) || (c.usedAddr & 3)) {
    return Status::failure(EINVAL, "ring addresses are misaligned (descriptor ring 16, driver and device areas 4 bytes)");
  }
  const uint32_t availSlot = c.lastAvailIdx & 0x7fff;
  const uint32_t usedHalf = c.lastAvailIdx >> 16;
  // A frontend that gives only the avail half (DPDK's virtio_user sends 1 << 15 for a
  // fresh ring) resumes a ring with nothing in flight: the used position is the same.
  const uint32_t usedSlot = usedHalf == 0 ? availSlot : usedHalf & 0x7fff;
  if (availSlot >= c.size || usedSlot >= c.size) {
    char base[16];
    snprintf(base, sizeof base, "0x%08x", c.lastAvailIdx);
    return Status::failure(EINVAL, std::string("ring base ") + base + " names a slot past the ring of " + std::to_string(c.size));
  }
  uint32_t* positionRecord = nullptr;
  if (c.positionFile) {
    positionRecord = reinterpret_cast<uint32_t*>(c.positionFile->translate(c.positionOffset, 8));
    if (!positionRecord || (c.positionOffset & 3)) {
      return Status::failure(EINVAL, "the ring position record is not inside its file or misaligned");
    }
  }
  auto* desc = memory->translate(c.descAddr, 16ull * c.size);
  auto* driverArea = memory->translate(c.availAddr, sizeof(PackedEventSuppress));
  auto* deviceArea = memory->translate(c.usedAddr, sizeof(PackedEventSuppress));
  if (!desc || !driverArea || !deviceArea) {
    return Status::failure(EINVAL, std::string(!desc ? "descriptor ring" : !driverArea ? "driver event suppression area" : "device event suppression area") +
             " is not inside guest memory");
  }
  memory_ = std::move(memory);
  size_ = c.size;
  eventIdx_ = c.eventIdx;
  indirect_ = c.indirectDesc;
  desc_ = reinterpret_cast<PackedDesc*>(desc);
  driverEvent_ = reinterpret_cast<PackedEventSuppress*>(driverArea);
  deviceEvent_ = reinterpret_cast<PackedEventSuppress*>(deviceArea);
  lastAvail_ = availSlot;
  availWrap_ = (c.lastAvailIdx >> kPackedWrapBit) & 1;
  usedSlot_ = usedSlot;
  usedWrap_ = usedHalf == 0 ? availWrap_ : ((usedHalf >> kPackedWrapBit) & 1) != 0;
  popStarts_.assign(size_, 0);
  popCount_ = 0;
  pending_.assign(size_, {});
  pendingCount_ = 0;
  usedSinceCheck_ = 0;
  signalledValid_ = false;
  deviceEventFlags_ = 0xffff;
  broken_.clear();
  fault_ = QueueFault::kNone;
  if (c.dirtyLog) log_.attach(c.dirtyLog);
  else log_.detach();
  descLogAddr_ = c.descAddr;
  // vhost-user's log_guest_addr is where QEMU logs "the used ring": for a packed ring,
  // the device area. Used descriptors go into the descriptor ring, logged at its own address.
  deviceEventLogAddr_ = c.usedLogAddr == QueueConfig::kLogAtUsedAddr ? c.usedAddr : c.usedLogAddr;
  positionFile_ = c.positionFile;
  positionRecord_ = positionRecord;
  if (positionRecord_) {
    __atomic_store_n(&positionRecord_[1], usedPosition(), __ATOMIC_RELAXED);
    __atomic_store_n(&positionRecord_[0], usedPosition(), __ATOMIC_RELEASE);
  }
  return Status::success();
}

PopResult PackedQueue::fail(QueueFault fault, std::string reason) {
  fault_ = fault;
  broken_ = std::move(reason);
  return PopResult::kBroken;
}

PopResult PackedQueue::walk(ChainDirection direction, struct iovec* iov, int maxIov, Chain* out, int* readableIov) {
  if (fault_ != QueueFault::kNone) return PopResult::kBroken;
  uint32_t slot = lastAvail_;
  bool wrap = availWrap_;
  int iovCount = 0;
  int readableCount = 0;
  bool seenWritable = false;
  uint64_t bytes = 0;
  uint16_t id = 0;
  uint32_t slots = 0;  // ring slots this chain takes

  // Checks one buffer element and appends its iovecs; kChain to go on.
  auto element = [&](uint64_t addr, uint32_t len, bool writable) -> PopResult {
    if (direction == ChainDirection::kWritable && !writable) return fail(QueueFault::kBadDirection, "read-only descriptor in a receive chain");
    if (direction == ChainDirection::kReadable && writable) return fail(QueueFault::kBadDirection, "write-only descriptor in a transmit chain");
    // 2.8.4 ("Scatter-Gather Support"): writable elements follow every readable one.
    if (direction == ChainDirection::kReadThenWrite && seenWritable && !writable) {
      return fail(QueueFault::kBadDirection, "read-only descriptor after a write-only one");
    }
    seenWritable = seenWritable || writable;
    // At most 32768 lengths of 32 bits are summed per table: the uint64 cannot overflow.
    if (bytes + len > kMaxChainBytes) return fail(QueueFault::kChainTooLarge, "descriptor chain is longer than 2^32 bytes");
    int n = memory_->translateIov(addr, len, iov + iovCount, maxIov - iovCount);
    if (n == -2) return PopResult::kNoRoom;
    if (n < 0) {
      char range[64];
      snprintf(range, sizeof range, "0x%llx+%u", static_cast<unsigned long long>(addr), len);
      return fail(QueueFault::kAddressOutOfBounds, std::string("descriptor buffer ") + range + " is outside guest memory");
    }
    iovCount += n;
    if (!writable) readableCount = iovCount;
    bytes += len;
    return PopResult::kChain;
  };

  // The walk's time to live: a chain of ring descriptors is at most the queue
  // size long (2.8.4: "A driver MUST NOT create a descriptor list longer than the
  // Queue Size"), so it ends within one lap whatever the driver wrote.
  for (;;) {
    // The head's flags decide whether there is a chain at all; every later
    // descriptor must be made available in the same lap (2.8.6: "all flags ...
    // must be set/cleared correctly in all descriptors in the list").
    const DescriptorWords w = loadDescriptorWords(&desc_[slot], __ATOMIC_ACQUIRE);
    const uint16_t flags = static_cast<uint16_t>(w.rest >> 48);
    if (!isAvailable(flags, wrap)) {
      if (slots == 0) return PopResult::kEmpty;
      return fail(QueueFault::kDescriptorNotAvailable, "descriptor " + std::to_string(slots) + " of a chain is not available (its AVAIL/USED flags do not match the wrap counter)");
    }
    if (++slots > size_) return fail(QueueFault::kChainTooLong, "descriptor chain is longer than the queue");
    const uint32_t len = static_cast<uint32_t>(w.rest);
    id = static_cast<uint16_t>(w.rest >> 32);  // 2.8.6: the buffer ID is in the chain's last descriptor
    advance(&slot, &wrap, 1);
    if (flags & VRING_DESC_F_INDIRECT) {
      // 2.8.7: a table of packed descriptors in place of the chain; only WRITE counts
      // in its entries, and an indirect descriptor is never part of a NEXT list.
      if (!indirect_) return fail(QueueFault::kBadIndirect, "indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC");
      if (slots > 1 || (flags & VRING_DESC_F_NEXT)) return fail(QueueFault::kBadIndirect, "indirect descriptor in a chain of ring descriptors");
      if (len == 0 || len % sizeof(PackedDesc) != 0) {
        return fail(QueueFault::kBadIndirect, "indirect table length " + std::to_string(len) + " is not a multiple of 16");
      }
      const uint32_t entries = len / sizeof(PackedDesc);
      if (entries > size_) {
        return fail(QueueFault::kBadIndirect, "indirect table of " + std::to_string(entries) + " descriptors is larger than the queue size " +
                    std::to_string(size_));
      }
      if (w.addr & 15) return fail(QueueFault::kBadIndirect, "indirect table is not 16-byte aligned");
      const uint8_t* table = memory_->translate(w.addr, len);
      if (!table) return fail(QueueFault::kAddressOutOfBounds, "indirect table is not inside guest memory");
      const PackedDesc* entry = reinterpret_cast<const PackedDesc*>(table);
      for (uint32_t i = 0; i < entries; i++) {
        const DescriptorWords e = loadDescriptorWords(&entry[i], __ATOMIC_RELAXED);
        const uint16_t entryFlags = static_cast<uint16_t>(e.rest >> 48);
        PopResult r = element(e.addr, static_cast<uint32_t>(e.rest), (entryFlags & VRING_DESC_F_WRITE) != 0);
        if (r != PopResult::kChain) return r;
      }
      break;
    }
    PopResult r = element(w.addr, len, (flags & VRING_DESC_F_WRITE) != 0);
    if (r != PopResult::kChain) return r;
    if (!(flags & VRING_DESC_F_NEXT)) break;
  }
  popStarts_[popCount_ % size_] = static_cast<uint16_t>(lastAvail_ | (static_cast<uint32_t>(availWrap_) << kPackedWrapBit));
  popCount_++;
  lastAvail_ = slot;
  availWrap_ = wrap;
  if (readableIov) *readableIov = readableCount;
  out->head = id;
  out->descCount = static_cast<uint16_t>(slots);
  out->iovCount = iovCount;
  out->bytes = bytes;
  return PopResult::kChain;
}

void PackedQueue::unpop(uint16_t count) {
  if (count == 0 || size_ == 0) return;
  // Only chains still popped can be given back: never more than were popped, or the ring holds.
  if (count > popCount_ || count > size_) count = static_cast<uint16_t>(std::min<uint64_t>(popCount_, size_));
  popCount_ -= count;
  const uint16_t start = popStarts_[popCount_ % size_];
  lastAvail_ = start & 0x7fff;
  availWrap_ = (start >> kPackedWrapBit) & 1;
}

bool PackedQueue::flushUsed() {
  if (pendingCount_ == 0) return false;
  const uint32_t firstSlot = usedSlot_;
  uint64_t firstRest = 0;
  uint32_t slotsUsed = 0;
  if (positionRecord_) {
    // Where this batch ends, before any of it is written: a daemon that dies in the middle
    // resumes at [0] if the first descriptor's flags never landed, else at [1].
    uint32_t slot = usedSlot_;
    bool wrap = usedWrap_;
    for (uint32_t i = 0; i < pendingCount_; i++) {
      const uint16_t n = pending_[i].descCount;
      advance(&slot, &wrap, n >= 1 && n <= size_ ? n : 1);
    }
    __atomic_store_n(&positionRecord_[1], slot | (static_cast<uint32_t>(wrap) << kPackedWrapBit), __ATOMIC_RELEASE);
  }
  for (uint32_t i = 0; i < pendingCount_; i++) {
    const PendingUsed& u = pending_[i];
    // 2.8.2: the device marks a descriptor used with AVAIL and USED both equal to its wrap counter.
    const uint16_t flags = static_cast<uint16_t>((usedWrap_ ? (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED) : 0) |
                                                 (u.len > 0 ? VRING_DESC_F_WRITE : 0));  // 2.8.3: WRITE says "len bytes written"
    PackedDesc* d = &desc_[usedSlot_];
    // id and len share the second 8 bytes with flags: store them as one word
    // for every entry but the first, whose flags wait until the rest is out.
    const uint64_t rest = static_cast<uint64_t>(u.len) | (static_cast<uint64_t>(u.id) << 32);
    uint64_t* word = &reinterpret_cast<uint64_t*>(d)[1];
    if (i == 0) {
      // Not even id and len yet: until its flags say used, the driver may still read
      // this slot as the available descriptor it wrote, and so may a restarted daemon.
      firstRest = rest | (static_cast<uint64_t>(flags) << 48);
    } else {
      __atomic_store_n(word, rest | (static_cast<uint64_t>(flags) << 48), __ATOMIC_RELEASE);
    }
    if (log_.attached()) log_.mark(descLogAddr_ + 16ull * usedSlot_ + 8, 8);
    // A chain of n slots is skipped over as a whole (2.8.6); a count outside 1..size
    // cannot come from a chain we popped: move by one so the ring stays in step.
    const uint32_t skip = u.descCount >= 1 && u.descCount <= size_ ? u.descCount : 1;
    advance(&usedSlot_, &usedWrap_, skip);
    slotsUsed += skip;
  }
  __atomic_store_n(&reinterpret_cast<uint64_t*>(&desc_[firstSlot])[1], firstRest, __ATOMIC_RELEASE);
  if (positionRecord_) __atomic_store_n(&positionRecord_[0], usedPosition(), __ATOMIC_RELEASE);
  usedSinceCheck_ += slotsUsed;
  pendingCount_ = 0;
  return true;
}

bool PackedQueue::needsCall() {
  // The used descriptors must be visible before we read the driver's wishes.
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  const uint32_t since = usedSinceCheck_;
  usedSinceCheck_ = 0;
  const bool valid = signalledValid_;
  signalledValid_ = true;
  const PackedEventSuppress e = {__atomic_load_n(&driverEvent_->offWrap, __ATOMIC_RELAXED),
                                 __atomic_load_n(&driverEvent_->flags, __ATOMIC_RELAXED)};
  const uint16_t flags = e.flags & 3;
  if (flags == RING_EVENT_FLAGS_DISABLE) return false;
  if (!eventIdx_ || flags != RING_EVENT_FLAGS_DESC) return true;  // ENABLE (or DESC without event idx, or reserved 3)
  if (!valid) return true;
  if (since == 0) return false;
  if (since >= size_) return true;  // a lap or more since the last look: it passed any offset
  // 2.8.10 event offset and wrap counter: positions of this lap; an event in the
  // other lap counts a ring's length back (as the Linux driver folds its wrap in).
  const int32_t newPos = static_cast<int32_t>(usedSlot_);
  const int32_t oldPos = newPos - static_cast<int32_t>(since);
  int32_t event = e.offWrap & 0x7fff;
  if (((e.offWrap >> kPackedWrapBit) & 1) != static_cast<uint16_t>(usedWrap_)) event -= static_cast<int32_t>(size_);
  return needEvent(static_cast<uint16_t>(event), static_cast<uint16_t>(newPos), static_cast<uint16_t>(oldPos));
}

void PackedQueue::writeDeviceEvent(uint16_t offWrap, uint16_t flags, bool withOffset) {
  if (withOffset) {
    __atomic_store_n(&deviceEvent_->offWrap, offWrap, __ATOMIC_RELAXED);
    if (log_.attached()) log_.mark(deviceEventLogAddr_, 2);
  }
  if (flags == deviceEventFlags_) return;
  __atomic_store_n(&deviceEvent_->flags, flags, __ATOMIC_RELAXED);
  deviceEventFlags_ = flags;
  if (log_.attached()) log_.mark(deviceEventLogAddr_ + 2, 2);
}

void PackedQueue::disableNotify() { writeDeviceEvent(0, RING_EVENT_FLAGS_DISABLE, false); }

bool PackedQueue::enableNotify() {
  if (eventIdx_) {
    // Kick us when the next descriptor we would read is made available.
    writeDeviceEvent(static_cast<uint16_t>(lastAvail_ | (static_cast<uint32_t>(availWrap_) << kPackedWrapBit)),
                     RING_EVENT_FLAGS_DESC, true);
  } else {
    writeDeviceEvent(0, RING_EVENT_FLAGS_ENABLE, false);
  }
  // Our request must be visible before we look at the ring again, or a kick could be lost.
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  return hasAvail();
}

}  // namespace vhost_tap
