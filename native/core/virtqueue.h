// One virtqueue as the data path sees it, whichever layout the driver
// negotiated: split (virtio 1.x 2.7) or packed (2.8, VIRTIO_F_RING_PACKED).
// The workers and the control queue call this, never a layout directly; each
// call is one predictable branch on a flag fixed at setup, so the per-frame
// path pays no virtual call.
#pragma once
#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>

#include "packed_queue.h"
#include "queue_common.h"
#include "split_queue.h"
#include "status.h"

namespace vhost_tap {

class Virtqueue {
 public:
  // EINVAL (with what is wrong) if the rings are not inside guest memory, misaligned or misshapen.
  Status setup(std::shared_ptr<GuestMemoryMap> memory, const QueueConfig& config) {
    packed_ = config.packed;
    return packed_ ? packedRing_.setup(std::move(memory), config) : split_.setup(std::move(memory), config);
  }
  bool packed() const { return packed_; }

  // Pops the next available chain into iov[0..maxIov). deviceWrites: an rx
  // chain (all descriptors writable) rather than a tx chain (all readable).
  PopResult pop(bool deviceWrites, struct iovec* iov, int maxIov, Chain* out) {
    return packed_ ? packedRing_.pop(deviceWrites, iov, maxIov, out) : split_.pop(deviceWrites, iov, maxIov, out);
  }
  // Pops a request/reply chain; *readableIov is how many iovecs are readable (the rest are writable).
  PopResult popMixed(struct iovec* iov, int maxIov, Chain* out, int* readableIov) {
    return packed_ ? packedRing_.popMixed(iov, maxIov, out, readableIov) : split_.popMixed(iov, maxIov, out, readableIov);
  }
  // Gives back the last `count` popped chains (they were not used).
  void unpop(uint16_t count) { packed_ ? packedRing_.unpop(count) : split_.unpop(count); }
  // Returns a chain as used: `head` and `descCount` as pop() gave them, `len` bytes written.
  // Visible to the driver at flushUsed().
  void pushUsed(uint16_t head, uint32_t len, uint16_t descCount) {
    packed_ ? packedRing_.pushUsed(head, len, descCount) : split_.pushUsed(head, len);
  }
  // Publishes the pushed used entries; false if there were none.
  bool flushUsed() { return packed_ ? packedRing_.flushUsed() : split_.flushUsed(); }
  // Marks in the dirty log (if one is current) the `len` bytes the device wrote
  // through iov[0..count), `offset` bytes in: call it once the write is complete,
  // before the used entry that hands the buffer to the driver.
  void logWrite(const struct iovec* iov, int count, uint64_t offset, uint64_t len) {
    packed_ ? packedRing_.logWrite(iov, count, offset, len) : split_.logWrite(iov, count, offset, len);
  }
  // Whether the driver wants an interrupt for what flushUsed() published since the last call.
  bool needsCall() { return packed_ ? packedRing_.needsCall() : split_.needsCall(); }
  // Driver-to-device notifications: off while the worker is busy with this queue.
  void disableNotify() { packed_ ? packedRing_.disableNotify() : split_.disableNotify(); }
  // Turns notifications on; true if buffers arrived meanwhile (the caller must keep going).
  bool enableNotify() { return packed_ ? packedRing_.enableNotify() : split_.enableNotify(); }
  bool hasAvail() const { return packed_ ? packedRing_.hasAvail() : split_.hasAvail(); }
  // Where the ring stopped, as vhost GET_VRING_BASE reports it (see QueueConfig::lastAvailIdx).
  uint32_t ringBase() const { return packed_ ? packedRing_.ringBase() : split_.ringBase(); }
  uint32_t size() const { return packed_ ? packedRing_.size() : split_.size(); }
  const std::string& brokenReason() const { return packed_ ? packedRing_.brokenReason() : split_.brokenReason(); }
  bool broken() const { return packed_ ? packedRing_.broken() : split_.broken(); }
  QueueFault fault() const { return packed_ ? packedRing_.fault() : split_.fault(); }
  void markBroken(QueueFault fault, std::string reason) {
    packed_ ? packedRing_.markBroken(fault, std::move(reason)) : split_.markBroken(fault, std::move(reason));
  }
  // Lets go of guest memory (a stopped queue must not keep a departed VM's RAM
  // mapped until JS collects it). ringBase() stays readable; setup() again to use it.
  void releaseMemory() { packed_ ? packedRing_.releaseMemory() : split_.releaseMemory(); }

 private:
  bool packed_ = false;
  SplitQueue split_;
  PackedQueue packedRing_;
};

}  // namespace vhost_tap
