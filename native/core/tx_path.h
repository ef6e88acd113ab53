// The transmit half of a queue pair (virtqueue 2i+1): pops the chains the
// driver posts, writes each one (virtio_net_hdr and frame, straight from guest
// memory) to the tap as one datagram, a batch per io_uring_enter or one writev
// each, and completes them on the used ring. Also the discard of a ring that is
// started but out of use (vhost-user.rst "Ring states").
#pragma once
#include <linux/io_uring.h>
#include <sys/uio.h>

#include <cstdint>
#include <vector>

#include "tap_io.h"
#include "worker_queue.h"

namespace vhost_tap {

class TxPath {
 public:
  TxPath(QueueStats* stats, TapIo* tap) : queue_("tx", stats), tap_(tap) {}

  // Sets the ring up for a run (the buffers are allocated here, never per frame).
  Status start(std::shared_ptr<GuestMemoryMap> memory, const QueueConfig& config, uint32_t hdrSize, CallNotifier* notifier,
               const WorkerEventSink* sink);
  void release() { queue_.release(); }

  WorkerQueue& queue() { return queue_; }
  const WorkerQueue& queue() const { return queue_; }

  // Sends what the driver posted, up to a budget. Returns whether more may be waiting.
  bool handle();
  // The driver posted chains that handle() would take now.
  bool hasWork() const { return !waitingForTap_ && !queue_.broken() && queue_.ring().hasAvail(); }
  // The tap's send buffer was full: handle() waits for it to take more.
  bool waitingForTap() const { return waitingForTap_; }
  // The tap has room again (epoll said EPOLLOUT).
  void tapWritable() {
    waitingForTap_ = false;
    tap_->wantWritable(false);
  }

  // Completes up to `budget` chains on the ring without sending them. Returns
  // whether chains may remain (the budget ran out); a malformed chain breaks the
  // queue when `reportBroken`, else the rest is left where it is.
  bool discard(uint32_t budget, bool reportBroken);

 private:
  static constexpr int kBatch = 32;  // chains written with one io_uring_enter
  static constexpr int kIovCapacity = 2 * worker::kMaxIov;

  struct Pending {
    uint16_t head;
    uint16_t descCount;
    int iovStart;
    int iovCount;
    uint64_t bytes;
  };

  // Pops the next chain into iov[0..kMaxIov): a chain the worker cannot write
  // (more segments than one writev) breaks the queue like a malformed one.
  PopResult pop(struct iovec* iov, Chain* chain);
  // Writes batch_[0..count) to the tap and returns them on the used ring;
  // false if the tap would block (the unwritten chains were given back).
  bool transmitBatch(int count);
  void account(const Pending& chain, ssize_t result);

  WorkerQueue queue_;
  TapIo* tap_;
  uint32_t hdrSize_ = 12;
  bool waitingForTap_ = false;
  std::vector<struct iovec> iov_;
  std::vector<Pending> batch_;
  std::vector<struct io_uring_cqe> cqes_;
};

}  // namespace vhost_tap
