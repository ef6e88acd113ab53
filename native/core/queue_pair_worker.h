// One native thread per queue pair: it moves frames with their
// virtio_net_hdr between the tap queue fd and the pair's two virtqueues,
// as vhost-net does in the kernel with tun_get_socket(). Kicks and calls are
// eventfds. Nothing on the per-frame path allocates or calls into JS.
#pragma once
#include <sys/epoll.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "call_notifier.h"
#include "guest_memory.h"
#include "virtqueue.h"
#include "uring.h"

namespace vhost_tap {

// Written only by the worker thread, read by JS at any time.
struct QueueStats {
  std::atomic<uint64_t> packets{0};
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint64_t> kicks{0};         // wakeups by a kick (kicks that came together count once)
  std::atomic<uint64_t> calls{0};
  std::atomic<uint64_t> callsFailed{0};   // calls the kernel would not take at once (retried if it may take them later)
  std::atomic<uint64_t> wakeups{0};
  std::atomic<uint64_t> batches{0};        // io_uring submissions (packets / batches = frames per system call)
  std::atomic<uint64_t> dropTooBig{0};     // rx: the frame did not fit the buffers the driver posted
  std::atomic<uint64_t> dropBadHeader{0};  // tx: chain shorter than the vnet header
  std::atomic<uint64_t> dropTapError{0};   // the tap refused the frame (bad GSO header, link down)
  std::atomic<uint64_t> dropStopped{0};    // rx: a frame waiting for more buffers when the worker stopped or the rx queue broke
  std::atomic<uint64_t> errors{0};         // the queue broke (malformed ring or chain)
};

struct WorkerOptions {
  std::shared_ptr<GuestMemoryMap> memory;
  int tapFd = -1;
  uint32_t hdrSize = 12;        // virtio_net_hdr size, the same as the tap's TUNSETVNETHDRSZ
  bool mergeableRx = false;     // VIRTIO_NET_F_MRG_RXBUF
  uint32_t rxReserveBytes = 0;  // mergeable: room to gather before reading a frame (a typical frame)
  uint32_t rxMaxFrameBytes = 0; // the largest frame (with header) the tap can hand us; 0: unknown (GSO)
  uint64_t busyPollNs = 0;      // after work, look for more this long before sleeping (0: never spin)
  // The pair is out of use while its tx ring stays started (vhost-user.rst "Ring
  // states": a started but disabled ring "must process and discard any TX packets"
  // and supply no new RX packets). The worker then touches neither the tap nor the
  // rx ring (tapFd and rx may be unset) and completes each tx chain unsent as the
  // driver posts it, so a guest never waits for buffers a queue out of use holds.
  bool txDiscardOnly = false;
  QueueConfig rx;
  QueueConfig tx;
};

// Reports a queue that broke or a tap that failed: ("rx" | "tx" | "tap", message).
using WorkerEventSink = std::function<void(const char* where, const std::string& message)>;

class QueuePairWorker {
 public:
  QueuePairWorker(WorkerOptions options, WorkerEventSink sink);
  ~QueuePairWorker();
  QueuePairWorker(const QueuePairWorker&) = delete;
  QueuePairWorker& operator=(const QueuePairWorker&) = delete;

  // Takes the worker's own copies (F_DUPFD_CLOEXEC) of the kick and call fds, which
  // must be eventfds: from here on the caller may close its numbers, and a number
  // it closed and the process reused is never written. Call once, before start().
  // *code: "EBADF" (a number is not open) or "EINVAL".
  bool adoptFds(std::string* error, const char** code);
  // A failed start() releases what the worker holds, as stop() does.
  bool start(std::string* error);
  // Stops and joins the thread, then closes every fd the worker holds and lets go
  // of guest memory. Every chain it popped is completed or given back. Nothing the
  // worker does waits on a frontend's fd, so this returns promptly.
  // discardTx: the pair is being taken out of use while its rings stay started
  // (VQ_PAIRS_SET, SET_VRING_ENABLE 0): chains the driver left on the tx ring are
  // completed unsent, as vhost-user.rst ("Ring states") asks of a started but
  // disabled ring, so the guest gets its buffers (and their sockets' memory) back.
  // drainRx: read the tap queue until it is empty before stopping, not only a bounded
  // amount: for a queue no frame is steered to any more (the steering program took it
  // out of its table), whose backlog the detach that follows would purge. If the
  // driver has posted no buffers for what is left, the worker waits for some a
  // little (kDrainWaitNs), then reads the rest and drops it, counted (drops.stopped).
  void stop(bool discardTx = false, bool drainRx = false);
  bool running() const { return thread_.joinable(); }

  // Valid once stopped: where the device is in each available ring (vhost GET_VRING_BASE).
  // (For a packed ring, the vhost-user encoding of both positions and wrap counters.)
  uint32_t rxLastAvail() const { return rx_.ringBase(); }
  uint32_t txLastAvail() const { return tx_.ringBase(); }
  bool rxBroken() const { return rxBroken_.load(std::memory_order_acquire); }
  bool txBroken() const { return txBroken_.load(std::memory_order_acquire); }

  QueueStats rxStats;
  QueueStats txStats;

 private:
  static constexpr int kMaxIov = 1024;  // IOV_MAX: one readv/writev
  static constexpr int kBudget = 256;   // frames per queue (rx: taken from the tap, delivered or dropped) before the other
  static constexpr int kUsedBatch = 64; // publish used entries at least this often
  static constexpr size_t kOverflowBytes = 65536 + 1024;
  static constexpr int kStopDrainTurns = 4;  // at most 4 x kBudget frames taken from the tap on the way out
  static constexpr int kDrainAllTurns = 1024;  // drainRx: up to 256K frames, more than a tap queue holds (txqueuelen)
  static constexpr uint64_t kDrainWaitNs = 50000000ull;  // drainRx: how long to wait for rx buffers from the driver
  static constexpr int kTxBatch = 32;        // chains written with one io_uring_enter
  static constexpr int kTxIovCapacity = 2 * kMaxIov;
  static constexpr int kRxBatch = 32;        // frames read with one io_uring_enter
  // A disabled tx ring's chains are discarded only once they have waited this long. QEMU
  // sends SET_VRING_ENABLE without waiting for the backend, and the guest transmits on a
  // queue it just enabled before the daemon has read that message: a chain seen at once
  // would be dropped (a ping after `ethtool -L` was). A chain left on a ring that really is
  // disabled (a guest's last skbs after `ethtool -L` down) is freed a second later.
  static constexpr uint64_t kDiscardGraceNs = 1000000000ull;

  struct TxChain {
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

  void run();
  // Completes up to `budget` chains on the tx ring without sending them. Returns
  // whether chains may remain (the budget ran out); a malformed chain breaks the
  // queue when `reportBroken`, else the rest is left where it is.
  bool discardTx(uint32_t budget, bool reportBroken);
  // The loop of a txDiscardOnly worker.
  void runDiscardingTx();
  int waitForWork(struct epoll_event* events, int max, bool idle, bool* txMore, bool* rxMore);
  bool handleTx();
  // Writes chains txBatch_[0..count) to the tap and returns them on the used ring;
  // false if the tap would block (the unwritten chains were given back).
  bool transmitBatch(int count);
  // Reads frames straight into up to `budget` chains with one io_uring_enter. Returns
  // the frames read, 0 when the tap was empty or the queue broke, -1 when this batch
  // cannot be used (the single path takes over); *drained: a read found the tap empty.
  int receiveBatch(int budget, bool* drained);
  bool handleRx();
  // Calls the driver of the rx (or tx) queue if it asks for it, or if an earlier call failed.
  void signal(bool rx);
  void release();
  void closeAdoptedFds();
  void setTapInterest();
  void breakQueue(bool rx);
  void giveBackHeldRx();
  // drainRx at stop: see stop().
  void drainRxUntilEmpty();
  enum class Gather { kReady, kWaiting, kBroken };
  Gather gatherRx(uint64_t want);
  void finishRxFrame(uint64_t frameBytes);
  void closeControlFds();

  WorkerOptions options_;
  WorkerEventSink sink_;
  Virtqueue rx_;
  Virtqueue tx_;
  std::thread thread_;
  bool fdsAdopted_ = false;
  CallNotifier callNotifier_;
  int epoll_ = -1;
  int stopFd_ = -1;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> discardTxOnStop_{false};
  std::atomic<bool> drainRxOnStop_{false};
  std::atomic<bool> rxBroken_{false};
  std::atomic<bool> txBroken_{false};
  bool tapFailed_ = false;
  bool rxWaitingForBuffers_ = false;
  bool txWaitingForTap_ = false;
  uint32_t tapEvents_ = 0;

  std::vector<struct iovec> txIov_;
  std::vector<TxChain> txBatch_;
  std::vector<struct io_uring_cqe> txCqes_;
  std::unique_ptr<Uring> uring_;  // null when io_uring is unavailable: one writev per frame then
  std::vector<struct iovec> rxBatchIov_;
  std::vector<TxChain> rxBatch_;   // the same shape: head, iovecs, bytes
  std::vector<int32_t> rxResults_;
  bool rxBatchOff_ = false;        // a frame larger than rxMaxFrameBytes came: batching is off for good
  int rxBatchWant_ = 2;            // reads in the next batch: doubles while batches fill, falls to what the last one found
  std::vector<struct iovec> rxIov_;  // guest segments of the held chains, then the overflow
  std::vector<HeldChain> held_;      // rx chains popped and not yet used
  size_t heldCount_ = 0;
  int heldIov_ = 0;
  uint64_t heldBytes_ = 0;
  std::vector<uint8_t> overflow_;    // the part of a frame beyond the buffers held when it was read
  size_t maxHeld_ = 1;
  uint64_t spillFrameBytes_ = 0;     // > 0: a frame read past the held buffers waits for more
  uint64_t spillStart_ = 0;          // frame offset where the overflow begins
  size_t spillChain_ = 0;            // first held chain the overflow goes into
  int usedSinceSignal_ = 0;
  bool rxCallPending_ = false;       // a call failed for a moment: retry it
  bool txCallPending_ = false;
  bool gatherOutOfIov_ = false;      // the last gather stopped because the iovec array was full
};

}  // namespace vhost_tap
