// The receive half of a queue pair (virtqueue 2i): gathers the chains the driver
// posts, reads each frame from the tap straight into them (virtio_net_hdr first),
// and completes them on the used ring. With VIRTIO_NET_F_MRG_RXBUF a frame may
// span several chains (num_buffers says how many); one that runs past the chains
// held when it was read spills into the worker's overflow buffer and is finished
// once the driver posts more. Without GSO frames, up to 32 frames are read per
// io_uring_enter. At stop, what the tap holds is read into the guest's buffers
// first (bounded, or until empty for a queue about to be detached).
#pragma once
#include <linux/io_uring.h>
#include <sys/uio.h>

#include <cstdint>
#include <vector>

#include "tap_io.h"
#include "worker_queue.h"

namespace vhost_tap {

struct RxOptions {
  uint32_t hdrSize = 12;         // virtio_net_hdr size, the same as the tap's TUNSETVNETHDRSZ
  bool mergeable = false;        // VIRTIO_NET_F_MRG_RXBUF
  uint32_t reserveBytes = 0;     // mergeable: room to gather before reading a frame (a typical frame)
  uint32_t maxFrameBytes = 0;    // the largest frame (with header) the tap can hand us; 0: unknown (GSO)
};

class RxPath {
 public:
  RxPath(QueueStats* stats, TapIo* tap) : queue_("rx", stats), tap_(tap) {}

  // Sets the ring up for a run (the buffers are allocated here, never per frame).
  Status start(std::shared_ptr<GuestMemoryMap> memory, const QueueConfig& config, const RxOptions& options,
               CallNotifier* notifier, const WorkerEventSink* sink);
  void release() { queue_.release(); }

  WorkerQueue& queue() { return queue_; }
  const WorkerQueue& queue() const { return queue_; }

  // Reads frames from the tap into the driver's buffers, up to a budget (every frame
  // taken from the tap counts, delivered or dropped). Returns whether more may be waiting.
  bool handle();

  // With no buffers posted the worker stops reading the tap (the kernel queues or
  // drops; nothing of ours is lost) until the driver posts some.
  bool waitingForBuffers() const { return waitingForBuffers_; }
  // While waiting: the driver has posted buffers (seen without a kick, when polling).
  bool buffersPosted() const { return waitingForBuffers_ && !queue_.broken() && queue_.ring().hasAvail(); }
  // The driver kicked or posted: read the tap again.
  void resumeReading() {
    waitingForBuffers_ = false;
    updateTapInterest();
  }

  // The worker stops: read what the tap queue holds into the guest's buffers first
  // (the kernel purges a queue's backlog when it is detached, and a stop usually
  // comes right before a detach), then give back every chain held. untilEmpty: read
  // it empty, waiting for buffers a little (kDrainWaitNs) and dropping (counted in
  // dropStopped) what finds none; else a bounded amount, so a flood cannot hold the stop up.
  void finish(bool untilEmpty);

 private:
  static constexpr int kBatch = 32;  // frames read with one io_uring_enter
  static constexpr int kBatchIovCapacity = 2 * worker::kMaxIov;
  static constexpr size_t kOverflowBytes = 65536 + 1024;
  static constexpr int kStopDrainTurns = 4;    // at most 4 x kBudget frames taken from the tap on the way out
  static constexpr int kDrainAllTurns = 1024;  // untilEmpty: up to 256K frames, more than a tap queue holds (txqueuelen)
  static constexpr uint64_t kDrainWaitNs = 50000000ull;  // untilEmpty: how long to wait for rx buffers from the driver

  struct BatchChain {
    uint16_t head;
    uint16_t descCount;
    int iovStart;
    int iovCount;
    uint64_t bytes;
  };
  struct HeldChain {
    uint16_t head;
    uint16_t descCount;
    uint32_t bytes;
    int iovStart;
    int iovCount;
  };
  enum class Gather { kReady, kWaiting, kBroken };

  // Holds chains until they cover `want` bytes (one chain without MRG_RXBUF).
  Gather gather(uint64_t want);
  // Completes the held chains a frame of `frameBytes` (header included) filled.
  void finishFrame(uint64_t frameBytes);
  // Reads frames straight into up to `budget` chains with one io_uring_enter. Returns
  // the frames read, 0 when the tap was empty or the queue broke, -1 when this batch
  // cannot be used (the single path takes over); *drained: a read found the tap empty.
  int receiveBatch(int budget, bool* drained);
  // Writes num_buffers (virtio 1.2 5.1.6.4: the number of chains the frame took) into
  // the header at the start of iov[0..count), where the tap left those two bytes alone.
  void writeNumBuffers(const struct iovec* iov, int count, uint16_t numBuffers);
  void drainUntilEmpty();
  void giveBackHeld();
  // No buffers to read into: stop reading the tap until the driver posts some.
  void awaitBuffers() {
    waitingForBuffers_ = true;
    updateTapInterest();
  }
  void breakQueue();
  void updateTapInterest() { tap_->wantReadable(!queue_.broken() && !waitingForBuffers_); }

  WorkerQueue queue_;
  TapIo* tap_;
  RxOptions options_;
  bool waitingForBuffers_ = false;

  std::vector<struct iovec> batchIov_;
  std::vector<BatchChain> batch_;
  std::vector<int32_t> batchResults_;
  std::vector<struct io_uring_cqe> cqes_;
  bool batchOff_ = false;  // a frame larger than maxFrameBytes came: batching is off for good
  int batchWant_ = 2;      // reads in the next batch: doubles while batches fill, falls to what the last one found

  std::vector<struct iovec> iov_;  // guest segments of the held chains, then the overflow
  std::vector<HeldChain> held_;    // chains popped and not yet used
  size_t heldCount_ = 0;
  int heldIov_ = 0;
  uint64_t heldBytes_ = 0;
  size_t maxHeld_ = 1;
  std::vector<uint8_t> overflow_;  // the part of a frame beyond the buffers held when it was read
  uint64_t spillFrameBytes_ = 0;   // > 0: a frame read past the held buffers waits for more
  uint64_t spillStart_ = 0;        // frame offset where the overflow begins
  size_t spillChain_ = 0;          // first held chain the overflow goes into
  int usedSinceSignal_ = 0;
  bool gatherOutOfIov_ = false;    // the last gather stopped because the iovec array was full
};

}  // namespace vhost_tap
