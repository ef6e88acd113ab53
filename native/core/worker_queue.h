// What the queue-pair worker's two paths (tx_path.h, rx_path.h) share: one
// virtqueue as a worker serves it (its ring, counters, call and broken state),
// the limits of a turn, and how a broken queue is reported.
#pragma once
#include <time.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "call_notifier.h"
#include "queue_fault.h"
#include "virtqueue.h"

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
  std::atomic<uint64_t> dropBadHeader{0};  // tx: chain shorter than the vnet header; rx: a datagram shorter than it (a stand-in's)
  std::atomic<uint64_t> dropTapError{0};   // the tap refused the frame (bad GSO header, link down)
  std::atomic<uint64_t> dropStopped{0};    // rx: a frame waiting for more buffers when the worker stopped or the rx queue broke
  std::atomic<uint64_t> errors{0};         // the queue broke (malformed ring or chain)
};

// Reports a queue that broke or a tap that failed: where ("rx" | "tx" | "tap"), the
// typed reason (queueFaultCode() is what JS sees), and a message with the particulars.
// Called on the worker thread.
using WorkerEventSink = std::function<void(const char* where, QueueFault fault, const std::string& message)>;

namespace worker {
constexpr int kMaxIov = 1024;   // IOV_MAX: one readv/writev
constexpr int kBudget = 256;    // frames per queue (rx: taken from the tap, delivered or dropped) before the other
constexpr int kUsedBatch = 64;  // publish used entries at least this often

// Only the worker writes a counter: a plain load and store is enough, and
// cheaper than an atomic read-modify-write on the per-frame path.
inline void bump(std::atomic<uint64_t>& counter, uint64_t by = 1) {
  counter.store(counter.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
}

inline uint64_t monotonicNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}
}  // namespace worker

// One virtqueue of the pair as the worker serves it.
class WorkerQueue {
 public:
  // `name` is what a report of this queue says ("rx" or "tx"); `stats` outlive the queue.
  WorkerQueue(const char* name, QueueStats* stats) : name_(name), stats_(stats) {}

  Status start(std::shared_ptr<GuestMemoryMap> memory, const QueueConfig& config, CallNotifier* notifier,
               const WorkerEventSink* sink) {
    callFd_ = config.callFd;
    notifier_ = notifier;
    sink_ = sink;
    callPending_ = false;
    broken_.store(false, std::memory_order_release);
    return ring_.setup(std::move(memory), config);
  }
  // A stopped worker keeps no guest memory mapped: the VM may be gone. ringBase() stays readable.
  void release() { ring_.releaseMemory(); }

  Virtqueue& ring() { return ring_; }
  const Virtqueue& ring() const { return ring_; }
  QueueStats& stats() { return *stats_; }

  // The ring looked empty. Turns the driver's notifications on, so that its next
  // chain kicks us, and returns whether it posted one in the meantime: that one
  // will not kick (it came before the enable), so the caller must pop on. By
  // default notifications then go back off for that pop, as while busy;
  // keepArmed leaves them on (a discard completes each chain at once, so no kick
  // can interrupt a batch, and the enable's recheck is the one that matters).
  bool postedWhileArming(bool keepArmed = false) {
    if (!ring_.enableNotify()) return false;
    if (!keepArmed) ring_.disableNotify();
    return true;
  }

  // Calls the driver if it asks for it (event idx or flags), or if an earlier call failed.
  void signal() {
    if (callFd_ < 0) return;
    // needsCall() first, always: with event idx it moves our view of what was signalled.
    if (!ring_.needsCall() && !callPending_) return;
    // Never write(): see CallNotifier for why no write to a frontend's eventfd is safe.
    int err = notifier_->notify(callFd_);
    if (err == 0) {
      worker::bump(stats_->calls);
      callPending_ = false;
      return;
    }
    worker::bump(stats_->callsFailed);
    // No room or memory for a moment: try again soon, since the driver may wait for this
    // very interrupt and event idx would not ask for it again. Anything else stays broken.
    callPending_ = err == EAGAIN || err == ENOMEM;
  }
  // Publishes the used entries pushed so far and calls the driver if it asks.
  void publish() {
    if (ring_.flushUsed()) signal();
  }
  // A call failed for a moment: the loop retries it soon.
  bool callPending() const { return callPending_; }

  bool broken() const { return broken_.load(std::memory_order_acquire); }
  // The queue stops for the reason its ring recorded (Virtqueue::fault()); reported once.
  void reportBroken() {
    worker::bump(stats_->errors);
    broken_.store(true, std::memory_order_release);
    (*sink_)(name_, ring_.fault(), ring_.brokenReason());
  }
  // The same for a fault found outside the ring walk (a chain the worker cannot use).
  void breakWith(QueueFault fault, std::string reason) {
    ring_.markBroken(fault, std::move(reason));
    reportBroken();
  }

 private:
  const char* name_;
  QueueStats* stats_;
  Virtqueue ring_;
  int callFd_ = -1;
  CallNotifier* notifier_ = nullptr;
  const WorkerEventSink* sink_ = nullptr;
  bool callPending_ = false;
  std::atomic<bool> broken_{false};
};

}  // namespace vhost_tap
