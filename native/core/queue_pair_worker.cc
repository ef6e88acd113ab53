#include "queue_pair_worker.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace vhost_tap {
namespace {

// Only the worker writes a counter: a plain load and store is enough, and
// cheaper than an atomic read-modify-write on the per-frame path.
inline void bump(std::atomic<uint64_t>& counter, uint64_t by = 1) {
  counter.store(counter.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
}

enum EpollTag : uint32_t { kTagStop = 0, kTagRxKick = 1, kTagTxKick = 2, kTagTap = 3 };

uint64_t monotonicNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// Copies `len` bytes from `src` into the iovecs, starting `offset` bytes in.
void copyToIov(const struct iovec* iov, int count, uint64_t offset, const uint8_t* src, uint64_t len) {
  for (int i = 0; i < count && len > 0; i++) {
    if (offset >= iov[i].iov_len) {
      offset -= iov[i].iov_len;
      continue;
    }
    uint64_t n = std::min<uint64_t>(len, iov[i].iov_len - offset);
    memcpy(static_cast<uint8_t*>(iov[i].iov_base) + offset, src, n);
    src += n;
    len -= n;
    offset = 0;
  }
}

// Copies `len` bytes out of the iovecs, from their start, into `dst`.
void copyFromIov(const struct iovec* iov, int count, uint8_t* dst, uint64_t len) {
  for (int i = 0; i < count && len > 0; i++) {
    uint64_t n = std::min<uint64_t>(len, iov[i].iov_len);
    memcpy(dst, iov[i].iov_base, n);
    dst += n;
    len -= n;
  }
}

}  // namespace

QueuePairWorker::QueuePairWorker(WorkerOptions options, WorkerEventSink sink)
    : options_(std::move(options)), sink_(std::move(sink)) {}

QueuePairWorker::~QueuePairWorker() { stop(); }

void QueuePairWorker::closeControlFds() {
  if (epoll_ >= 0) close(epoll_);
  if (stopFd_ >= 0) close(stopFd_);
  epoll_ = stopFd_ = -1;
}

void QueuePairWorker::closeAdoptedFds() {
  for (int* fd : {&options_.rx.kickFd, &options_.tx.kickFd, &options_.rx.callFd, &options_.tx.callFd}) {
    if (fdsAdopted_ && *fd >= 0) close(*fd);
    *fd = -1;
  }
}

bool QueuePairWorker::adoptFds(std::string* error, const char** code) {
  *code = "EINVAL";
  if (fdsAdopted_) {
    *error = "the worker already holds its fds";
    return false;
  }
  struct {
    int* fd;
    bool required;
    const char* what;
  } fds[] = {{&options_.rx.kickFd, !options_.txDiscardOnly, "receive kick"},
             {&options_.tx.kickFd, true, "transmit kick"},
             {&options_.rx.callFd, false, "receive call"},
             {&options_.tx.callFd, false, "transmit call"}};
  // Copies first, then checks: the check looks at the very file the worker will use.
  int copies[4] = {-1, -1, -1, -1};
  std::string problem;
  for (int i = 0; i < 4 && problem.empty(); i++) {
    int given = *fds[i].fd;
    if (given < 0) {
      if (fds[i].required) problem = std::string("a ") + fds[i].what + " eventfd is required";
      continue;
    }
    copies[i] = fcntl(given, F_DUPFD_CLOEXEC, 0);
    std::string kind;
    if (copies[i] < 0) {
      if (errno == EBADF) *code = "EBADF";
      problem = std::string("the ") + fds[i].what + " fd " + std::to_string(given) + ": " + strerror(errno);
    } else if (!isEventfd(copies[i], &kind)) {
      problem = std::string("the ") + fds[i].what + " fd " + std::to_string(given) + " is not an eventfd (it is " + kind +
                "): kicks and calls must be eventfds";
    }
  }
  if (!problem.empty()) {
    for (int copy : copies) {
      if (copy >= 0) close(copy);
    }
    *error = problem;
    return false;
  }
  for (int i = 0; i < 4; i++) *fds[i].fd = copies[i];
  fdsAdopted_ = true;
  return true;
}

void QueuePairWorker::release() {
  closeControlFds();
  uring_.reset();
  callNotifier_.close();
  closeAdoptedFds();
  // A stopped worker keeps no guest memory mapped: the VM may be gone.
  rx_.releaseMemory();
  tx_.releaseMemory();
  options_.memory.reset();
}

bool QueuePairWorker::start(std::string* error) {
  if (running()) {
    *error = "the worker is already running";
    return false;
  }
  if (!options_.memory || !fdsAdopted_) {
    *error = !options_.memory ? "a stopped queue pair cannot be restarted (its guest memory was released): create a new one"
                              : "the worker does not hold its kick and call fds (adoptFds)";
    return false;
  }
  // Whatever fails from here releases everything, as stop() would: a failed start leaks nothing.
  auto fail = [&](std::string message) {
    *error = std::move(message);
    release();
    return false;
  };
  if (options_.hdrSize != 10 && options_.hdrSize != 12) return fail("vnet header size must be 10 or 12");
  if (options_.rxMaxFrameBytes != 0 && options_.rxMaxFrameBytes < options_.hdrSize + 14) {
    // The batched reads take any chain that holds rxMaxFrameBytes: it must hold a header and an Ethernet header.
    return fail("rxMaxFrameBytes must be 0 (unknown) or at least the vnet header plus 14 (" +
                std::to_string(options_.hdrSize + 14) + ")");
  }
  const bool forwarding = !options_.txDiscardOnly;
  if (forwarding && options_.tapFd < 0) return fail("a tap fd is required");
  std::string e;
  if (forwarding && !rx_.setup(options_.memory, options_.rx, &e)) return fail("receive queue: " + e);
  if (!tx_.setup(options_.memory, options_.tx, &e)) return fail("transmit queue: " + e);
  if ((options_.rx.callFd >= 0 || options_.tx.callFd >= 0) && !callNotifier_.open(&e)) return fail(e);
  txIov_.assign(kTxIovCapacity, {});
  txBatch_.assign(kTxBatch, {});
  txCqes_.assign(kTxBatch, {});
  rxBatchIov_.assign(kTxIovCapacity, {});
  rxBatch_.assign(kRxBatch, {});
  rxResults_.assign(kRxBatch, 0);
  rxBatchOff_ = false;
  uring_ = forwarding ? std::make_unique<Uring>() : nullptr;
  if (uring_ && !uring_->init(std::max(kTxBatch, kRxBatch))) uring_.reset();
  if (uring_) uring_->registerFile(options_.tapFd);  // best effort: it saves a file lookup per frame
  rxIov_.assign(kMaxIov + 1, {});
  maxHeld_ = options_.mergeableRx ? std::min<size_t>(rx_.size(), kMaxIov) : 1;
  held_.assign(maxHeld_, {});
  heldCount_ = 0;
  heldIov_ = 0;
  heldBytes_ = 0;
  spillFrameBytes_ = 0;
  usedSinceSignal_ = 0;
  rxCallPending_ = txCallPending_ = false;
  overflow_.assign(kOverflowBytes, 0);
  rxBroken_ = false;
  txBroken_ = false;
  tapFailed_ = false;
  rxWaitingForBuffers_ = false;
  txWaitingForTap_ = false;
  stopping_ = false;

  // Fresh per run, closed by stop(): a stopped worker holds no fd.
  epoll_ = epoll_create1(EPOLL_CLOEXEC);
  stopFd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (epoll_ < 0 || stopFd_ < 0) return fail(std::string("epoll/eventfd: ") + strerror(errno));
  struct {
    int fd;
    EpollTag tag;
    const char* what;
  } watches[] = {{stopFd_, kTagStop, "stop eventfd"},
                 {options_.rx.kickFd, kTagRxKick, "receive kick eventfd"},
                 {options_.tx.kickFd, kTagTxKick, "transmit kick eventfd"},
                 {options_.tapFd, kTagTap, "tap queue fd"}};
  for (auto& w : watches) {
    if (!forwarding && (w.tag == kTagRxKick || w.tag == kTagTap)) continue;
    struct epoll_event ev = {};
    // Kicks are edge-triggered: every write to an eventfd queues a new edge, so the
    // counter need not be read back, which saves a system call per kick (~1 us where
    // the kernel isolates its page tables, PTI). The counter only overflows after 2^64 kicks.
    bool kick = w.tag == kTagRxKick || w.tag == kTagTxKick;
    ev.events = kick ? EPOLLIN | EPOLLET : EPOLLIN;
    ev.data.u32 = w.tag;
    if (epoll_ctl(epoll_, EPOLL_CTL_ADD, w.fd, &ev) < 0) return fail(std::string("cannot watch the ") + w.what + ": " + strerror(errno));
  }
  tapEvents_ = forwarding ? static_cast<uint32_t>(EPOLLIN) : 0u;
  thread_ = std::thread([this] { options_.txDiscardOnly ? runDiscardingTx() : run(); });
  return true;
}

void QueuePairWorker::stop(bool discardTx, bool drainRx) {
  if (thread_.joinable()) {
    discardTxOnStop_.store(discardTx, std::memory_order_relaxed);
    drainRxOnStop_.store(drainRx, std::memory_order_relaxed);
    stopping_.store(true, std::memory_order_release);
    uint64_t one = 1;
    ssize_t ignored = write(stopFd_, &one, sizeof one);  // our own non-blocking eventfd
    (void)ignored;
    thread_.join();
  }
  release();
}

int QueuePairWorker::waitForWork(struct epoll_event* events, int max, bool idle, bool* txMore, bool* rxMore) {
  if (!idle) return epoll_wait(epoll_, events, max, 0);
  if (options_.busyPollNs > 0) {
    // Opt-in (vhost-net's busyloop_timeout): a wakeup through a kick or the tap costs
    // microseconds of scheduler latency each way; spinning a little after the last
    // work trades CPU for round-trip time. Never at idle: only after work was done.
    const uint64_t end = monotonicNs() + options_.busyPollNs;
    do {
      if (!txWaitingForTap_ && !txBroken_.load(std::memory_order_relaxed) && tx_.hasAvail()) {
        *txMore = true;
        return 0;
      }
      if (rxWaitingForBuffers_ && !rxBroken_.load(std::memory_order_relaxed) && rx_.hasAvail()) {
        rxWaitingForBuffers_ = false;
        setTapInterest();
        *rxMore = true;
        return 0;
      }
      int n = epoll_wait(epoll_, events, max, 0);
      if (n != 0) return n;
    } while (monotonicNs() < end && !stopping_.load(std::memory_order_acquire));
  }
  // A call that could not be made is retried in a millisecond, never waited for.
  return epoll_wait(epoll_, events, max, rxCallPending_ || txCallPending_ ? 1 : -1);
}

void QueuePairWorker::run() {
  // Look at both queues once: the driver may have posted buffers before we started.
  bool txMore = true;
  bool rxMore = true;
  struct epoll_event events[8];
  while (!stopping_.load(std::memory_order_acquire)) {
    if (txMore) txMore = handleTx();
    if (rxMore) rxMore = handleRx();
    if (rxCallPending_) signal(true);
    if (txCallPending_) signal(false);
    int n = waitForWork(events, 8, !(txMore || rxMore), &txMore, &rxMore);
    if (n < 0) {
      if (errno == EINTR) continue;
      sink_("tap", std::string("epoll_wait failed: ") + strerror(errno));
      break;
    }
    for (int i = 0; i < n; i++) {
      switch (events[i].data.u32) {
        case kTagStop:
          break;
        case kTagRxKick:
          bump(rxStats.kicks);
          rxMore = true;
          if (rxWaitingForBuffers_) {
            rxWaitingForBuffers_ = false;
            setTapInterest();
          }
          break;
        case kTagTxKick:
          bump(txStats.kicks);
          txMore = true;
          break;
        case kTagTap:
          bump(rxStats.wakeups);
          if (events[i].events & EPOLLOUT) {
            txWaitingForTap_ = false;
            setTapInterest();
            txMore = true;
          }
          if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) rxMore = true;
          break;
      }
    }
  }
  // The kernel drops a queue's backlog when it is detached (tun.c), and a stop
  // usually comes right before a detach: read what is queued now into the
  // guest's buffers first. Bounded, so a flood cannot hold the stop up.
  if (drainRxOnStop_.load(std::memory_order_relaxed)) {
    drainRxUntilEmpty();
  } else {
    for (int turn = 0; turn < kStopDrainTurns && handleRx(); turn++) {
    }
  }
  // Nothing of tx is in flight (each chain completes as it is written); rx
  // gives back the buffers it held, dropping (counted) a frame that waited for more.
  giveBackHeldRx();
  if (discardTxOnStop_.load(std::memory_order_relaxed)) discardTx(tx_.size(), false);
  if (rx_.flushUsed() || rxCallPending_) signal(true);
  if (tx_.flushUsed() || txCallPending_) signal(false);
}

void QueuePairWorker::drainRxUntilEmpty() {
  uint64_t waitedSince = 0;
  for (int turn = 0; turn < kDrainAllTurns; turn++) {
    if (handleRx()) continue;  // the budget ran out: more to read
    if (rxBroken_ || tapFailed_) return;
    if (!rxWaitingForBuffers_) return;  // the tap queue is empty
    // Frames wait in the tap and the driver has no buffer posted: it may be refilling
    // (a guest refills rx from NAPI while its control command waits for our answer).
    const uint64_t now = monotonicNs();
    if (waitedSince == 0) waitedSince = now;
    if (now - waitedSince < kDrainWaitNs) {
      struct timespec pause = {0, 200000};  // 0.2 ms: a kick cannot wake us here (kicks are not read, see run())
      nanosleep(&pause, nullptr);
      if (rx_.hasAvail()) {
        rxWaitingForBuffers_ = false;
        setTapInterest();
      }
      continue;
    }
    // No buffer came: read what is left and drop it, counted, rather than let the
    // detach purge it unseen.
    uint8_t* sink = overflow_.data();
    for (int i = 0; i < kDrainAllTurns * kBudget; i++) {
      ssize_t n = read(options_.tapFd, sink, overflow_.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      bump(rxStats.dropStopped);
    }
    return;
  }
}

void QueuePairWorker::runDiscardingTx() {
  bool more = true;            // the driver may have posted chains before we started
  uint64_t pendingSince = 0;   // when chains were first seen waiting (0: none seen)
  struct epoll_event events[4];
  while (!stopping_.load(std::memory_order_acquire)) {
    int timeoutMs = txCallPending_ ? 1 : -1;
    if (more) {
      const uint64_t now = monotonicNs();
      if (!txBroken_ && tx_.hasAvail()) {
        if (pendingSince == 0) pendingSince = now;
        if (now - pendingSince >= kDiscardGraceNs) {
          // Everything waiting now has waited long enough or came after (the ring is not
          // in use: a guest posts nothing new on it).
          more = discardTx(kBudget, true);
          if (!more) pendingSince = 0;  // else the rest has waited as long: at once, after a look at the fds
        }
      } else {
        pendingSince = 0;
        more = tx_.enableNotify() && !txBroken_;  // kick us for the next chain; one that came meanwhile is looked at now
      }
      if (pendingSince != 0) {
        const uint64_t left = kDiscardGraceNs - std::min(kDiscardGraceNs, now - pendingSince);
        timeoutMs = static_cast<int>(left / 1000000ull) + 1;
        more = true;
      } else if (more) {
        timeoutMs = 0;
      }
    }
    if (txCallPending_) signal(false);
    int n = epoll_wait(epoll_, events, 4, timeoutMs);
    if (n < 0) {
      if (errno == EINTR) continue;
      sink_("tx", std::string("epoll_wait failed: ") + strerror(errno));
      break;
    }
    for (int i = 0; i < n; i++) {
      if (events[i].data.u32 != kTagTxKick) continue;
      bump(txStats.kicks);
      more = true;
    }
  }
  // Chains posted after the last pass stay on the ring: whoever starts the ring
  // next (a forwarding worker when the pair is used again, or the destination of a
  // migration) takes them from the index we stopped at.
  if (tx_.flushUsed() || txCallPending_) signal(false);
}

bool QueuePairWorker::discardTx(uint32_t budget, bool reportBroken) {
  if (txBroken_) return false;
  // Notifications stay on while the budget lasts: every chain is completed at
  // once, so there is no batch for a kick to interrupt, and the recheck after
  // enableNotify() below is the one that matters (event idx moves avail_event).
  // `looks` bounds the loop by what it reads, not only by what it consumes: a
  // driver flipping avail->idx back and forth could make every recheck say "more".
  for (uint32_t done = 0, looks = 0; done < budget && looks < 2 * budget; looks++) {
    Chain chain;
    PopResult r = tx_.pop(false, txIov_.data(), kMaxIov, &chain);
    if (r == PopResult::kNoRoom) {
      tx_.markBroken(QueueFault::kTooManySegments, "transmit chain has more than " + std::to_string(kMaxIov) + " segments");
      r = PopResult::kBroken;
    }
    if (r == PopResult::kBroken) {
      if (reportBroken) breakQueue(false);
      break;
    }
    if (r == PopResult::kEmpty) {
      if (tx_.enableNotify()) continue;  // posted while we looked: take it too
      break;
    }
    tx_.pushUsed(chain.head, 0, chain.descCount);
    bump(txStats.dropStopped);
    if (++done % kUsedBatch == 0 && tx_.flushUsed()) signal(false);
    if (done == budget) {
      if (tx_.flushUsed()) signal(false);
      return true;
    }
  }
  if (tx_.flushUsed()) signal(false);
  // Out of looks with chains still there: come back after the next epoll_wait, which
  // also sees a stop.
  return !txBroken_ && tx_.hasAvail();
}

void QueuePairWorker::signal(bool rx) {
  const int callFd = rx ? options_.rx.callFd : options_.tx.callFd;
  if (callFd < 0) return;
  bool& pending = rx ? rxCallPending_ : txCallPending_;
  // needsCall() first, always: with event idx it moves our view of what was signalled.
  if (!(rx ? rx_ : tx_).needsCall() && !pending) return;
  QueueStats& stats = rx ? rxStats : txStats;
  // Never write(): see CallNotifier for why no write to a frontend's eventfd is safe.
  int err = callNotifier_.notify(callFd);
  if (err == 0) {
    bump(stats.calls);
    pending = false;
    return;
  }
  bump(stats.callsFailed);
  // No room or memory for a moment: try again soon, since the driver may wait for this
  // very interrupt and event idx would not ask for it again. Anything else stays broken.
  pending = err == EAGAIN || err == ENOMEM;
}

void QueuePairWorker::setTapInterest() {
  uint32_t events = 0;
  if (!rxBroken_ && !tapFailed_ && !rxWaitingForBuffers_) events |= EPOLLIN;
  if (txWaitingForTap_) events |= EPOLLOUT;
  if (events == tapEvents_) return;
  struct epoll_event ev = {};
  ev.events = events;
  ev.data.u32 = kTagTap;
  if (epoll_ctl(epoll_, EPOLL_CTL_MOD, options_.tapFd, &ev) == 0) tapEvents_ = events;
}

void QueuePairWorker::breakQueue(bool rx) {
  Virtqueue& queue = rx ? rx_ : tx_;
  QueueStats& stats = rx ? rxStats : txStats;
  bump(stats.errors);
  (rx ? rxBroken_ : txBroken_).store(true, std::memory_order_release);
  if (rx) giveBackHeldRx();
  setTapInterest();
  sink_(rx ? "rx" : "tx", queue.brokenReason());
}

bool QueuePairWorker::handleTx() {
  if (txBroken_ || txWaitingForTap_) return false;
  tx_.disableNotify();
  int done = 0;
  bool more = false;
  for (;;) {
    if (done >= kBudget) {
      more = true;
      break;
    }
    // Gather a batch of chains, then write them all with one system call.
    int batch = 0;
    int iovUsed = 0;
    bool empty = false;
    bool broken = false;
    while (batch < kTxBatch && done + batch < kBudget && iovUsed + kMaxIov <= kTxIovCapacity) {
      Chain chain;
      PopResult r = tx_.pop(false, txIov_.data() + iovUsed, kMaxIov, &chain);
      if (r == PopResult::kNoRoom) {
        tx_.markBroken(QueueFault::kTooManySegments, "transmit chain has more than " + std::to_string(kMaxIov) + " segments");
        r = PopResult::kBroken;
      }
      if (r == PopResult::kBroken) {
        broken = true;
        break;
      }
      if (r == PopResult::kEmpty) {
        if (tx_.enableNotify()) {
          tx_.disableNotify();
          continue;
        }
        empty = true;
        break;
      }
      txBatch_[batch++] = {chain.head, chain.descCount, iovUsed, chain.iovCount, chain.bytes};
      iovUsed += chain.iovCount;
    }
    bool written = batch == 0 || transmitBatch(batch);
    done += batch;
    if (done / kUsedBatch != (done - batch) / kUsedBatch && tx_.flushUsed()) signal(false);
    if (broken) {
      breakQueue(false);
      break;
    }
    if (empty || !written) break;
  }
  if (tx_.flushUsed()) signal(false);
  return more;
}

bool QueuePairWorker::transmitBatch(int count) {
  const uint32_t hdr = options_.hdrSize;
  auto account = [&](const TxChain& c, ssize_t result) {
    if (result < 0) {
      bump(txStats.dropTapError);
    } else {
      bump(txStats.packets);
      bump(txStats.bytes, c.bytes - hdr);
    }
  };
  if (uring_ && count > 1) {
    int queued = 0;
    for (int i = 0; i < count; i++) {
      const TxChain& c = txBatch_[i];
      if (c.bytes < hdr) continue;
      uring_->prepare(IORING_OP_WRITEV, options_.tapFd, txIov_.data() + c.iovStart, c.iovCount, static_cast<uint64_t>(i));
      queued++;
    }
    int reaped = queued ? uring_->submitAndWait(txCqes_.data(), static_cast<unsigned>(queued)) : 0;
    if (queued) bump(txStats.batches);
    if (reaped < 0) {
      // The ring itself failed: do without it from now on, and write this batch the plain way.
      uring_.reset();
      return transmitBatch(count);
    }
    for (int i = 0; i < reaped; i++) account(txBatch_[txCqes_[i].user_data], txCqes_[i].res);
    for (int i = 0; i < count; i++) {
      if (txBatch_[i].bytes < hdr) bump(txStats.dropBadHeader);
      tx_.pushUsed(txBatch_[i].head, 0, txBatch_[i].descCount);
    }
    return true;
  }
  for (int i = 0; i < count; i++) {
    const TxChain& c = txBatch_[i];
    if (c.bytes < hdr) {
      bump(txStats.dropBadHeader);
      tx_.pushUsed(c.head, 0, c.descCount);
      continue;
    }
    ssize_t n = writev(options_.tapFd, txIov_.data() + c.iovStart, c.iovCount);
    if (n < 0 && errno == EAGAIN) {
      // The tap's send buffer is full: retry from this chain when it is writable.
      tx_.unpop(static_cast<uint16_t>(count - i));
      txWaitingForTap_ = true;
      setTapInterest();
      return false;
    }
    account(c, n);
    tx_.pushUsed(c.head, 0, c.descCount);
  }
  return true;
}

QueuePairWorker::Gather QueuePairWorker::gatherRx(uint64_t want) {
  gatherOutOfIov_ = false;
  while (heldBytes_ < want && heldCount_ < maxHeld_) {
    Chain chain;
    // The readv's last iovec is the overflow buffer: guest segments get kMaxIov - 1.
    PopResult r = rx_.pop(true, rxIov_.data() + heldIov_, kMaxIov - 1 - heldIov_, &chain);
    if (r == PopResult::kNoRoom) {
      if (heldCount_ > 0) {  // room comes back as held chains are used
        gatherOutOfIov_ = true;
        break;
      }
      rx_.markBroken(QueueFault::kTooManySegments, "receive chain has more than " + std::to_string(kMaxIov - 1) + " segments");
      r = PopResult::kBroken;
    }
    if (r == PopResult::kBroken) {
      breakQueue(true);
      return Gather::kBroken;
    }
    if (r == PopResult::kEmpty) {
      if (rx_.enableNotify()) {
        rx_.disableNotify();
        continue;
      }
      break;
    }
    if (chain.bytes < options_.hdrSize) {
      rx_.unpop(1);
      rx_.markBroken(QueueFault::kBufferTooSmall, "receive buffer of " + std::to_string(chain.bytes) + " bytes cannot hold the " +
                     std::to_string(options_.hdrSize) + "-byte header");
      breakQueue(true);
      return Gather::kBroken;
    }
    held_[heldCount_++] = {chain.head, chain.descCount, static_cast<uint32_t>(std::min<uint64_t>(chain.bytes, UINT32_MAX)), heldIov_,
                           chain.iovCount};
    heldIov_ += chain.iovCount;
    heldBytes_ += held_[heldCount_ - 1].bytes;
  }
  if (heldCount_ == 0) {
    // No buffers: stop reading the tap (the kernel holds or drops, we lose
    // nothing of ours) until the driver posts some and kicks.
    rxWaitingForBuffers_ = true;
    setTapInterest();
    return Gather::kWaiting;
  }
  return Gather::kReady;
}

void QueuePairWorker::finishRxFrame(uint64_t frameBytes) {
  size_t used = 0;
  uint64_t covered = 0;
  while (covered < frameBytes && used < heldCount_) covered += held_[used++].bytes;
  if (options_.hdrSize == 12) {
    // num_buffers: the tap leaves the last two header bytes alone.
    uint16_t numBuffers = static_cast<uint16_t>(used);
    copyToIov(rxIov_.data() + held_[0].iovStart, held_[0].iovCount, 10, reinterpret_cast<uint8_t*>(&numBuffers), 2);
    rx_.logWrite(rxIov_.data() + held_[0].iovStart, held_[0].iovCount, 10, 2);
  }
  uint64_t left = frameBytes;
  uint64_t usedBytes = 0;
  for (size_t i = 0; i < used; i++) {
    uint32_t len = static_cast<uint32_t>(std::min<uint64_t>(left, held_[i].bytes));
    rx_.pushUsed(held_[i].head, len, held_[i].descCount);
    left -= len;
    usedBytes += held_[i].bytes;
  }
  bump(rxStats.packets);
  bump(rxStats.bytes, frameBytes - options_.hdrSize);
  // Keep the chains not used for the next frame, moved to the front.
  int iovShift = used < heldCount_ ? held_[used].iovStart : heldIov_;
  if (used < heldCount_) {
    memmove(rxIov_.data(), rxIov_.data() + iovShift, sizeof(struct iovec) * (heldIov_ - iovShift));
    for (size_t i = used; i < heldCount_; i++) {
      held_[i - used] = held_[i];
      held_[i - used].iovStart -= iovShift;
    }
  }
  heldCount_ -= used;
  heldIov_ -= iovShift;
  heldBytes_ -= usedBytes;
  if (++usedSinceSignal_ >= kUsedBatch) {
    usedSinceSignal_ = 0;
    if (rx_.flushUsed()) signal(true);
  }
}

int QueuePairWorker::receiveBatch(int budget, bool* drained) {
  *drained = false;
  const uint32_t hdr = options_.hdrSize;
  const uint64_t maxFrame = options_.rxMaxFrameBytes;
  int sets = 0;
  int iovUsed = 0;
  // Every read past the last frame queued costs a failed read in the kernel, and
  // a wakeup for one frame (a ping) should not pay for 31 of them: the batch grows
  // while the tap keeps filling it and shrinks to what the last one found.
  const int want = std::min(kRxBatch, rxBatchWant_);
  while (sets < want && sets < budget && iovUsed + kMaxIov <= kTxIovCapacity) {
    Chain chain;
    PopResult r = rx_.pop(true, rxBatchIov_.data() + iovUsed, kMaxIov, &chain);
    if (r == PopResult::kBroken) {
      rx_.unpop(static_cast<uint16_t>(sets));
      breakQueue(true);
      return 0;
    }
    if (r == PopResult::kEmpty) {
      if (rx_.enableNotify()) {
        rx_.disableNotify();
        continue;
      }
      break;
    }
    if (r == PopResult::kNoRoom || chain.bytes < maxFrame) {
      // Not a chain that surely holds any frame: leave it (and the rest) to the single path.
      if (r == PopResult::kChain) rx_.unpop(1);
      break;
    }
    rxBatch_[sets++] = {chain.head, chain.descCount, iovUsed, chain.iovCount, chain.bytes};
    iovUsed += chain.iovCount;
  }
  if (sets == 0) return -1;
  // Hard-linked reads run one after the other, in ring order. A plain link would not do:
  // every tap read is "short" (a frame is smaller than the chain), and a short read
  // breaks a link, so only the first read would ever run (measured: 1 frame per batch).
  // A hard link runs them all; those that find the tap empty complete with -EAGAIN.
  for (int i = 0; i < sets; i++) {
    const TxChain& c = rxBatch_[i];
    uring_->prepare(IORING_OP_READV, options_.tapFd, rxBatchIov_.data() + c.iovStart, c.iovCount, static_cast<uint64_t>(i),
                    i + 1 < sets ? IOSQE_IO_HARDLINK : 0, RWF_NOWAIT);
  }
  int reaped = uring_->submitAndWait(txCqes_.data(), static_cast<unsigned>(sets));
  bump(rxStats.batches);
  if (reaped < 0) {
    rx_.unpop(static_cast<uint16_t>(sets));
    uring_.reset();
    return -1;
  }
  for (int i = 0; i < sets; i++) rxResults_[i] = -ECANCELED;
  for (int i = 0; i < reaped; i++) rxResults_[txCqes_[i].user_data] = txCqes_[i].res;
  int frames = 0;  // chains filled, always the first `frames` popped, so the rest can be given back
  for (int i = 0; i < sets; i++) {
    int32_t res = rxResults_[i];
    if (res == -EOPNOTSUPP || res == -EINVAL) {
      // This kernel's tun cannot read without waiting under io_uring: one readv per frame it is.
      rxBatchOff_ = true;
      break;
    }
    if (res <= 0) {
      if (res != -EAGAIN && res != -ECANCELED && res != 0) {
        if (!tapFailed_) {
          tapFailed_ = true;
          setTapInterest();
          sink_("tap", std::string("reading the tap queue failed: ") + strerror(-res));
        }
        break;
      }
      *drained = true;
      continue;  // empty then; a later read may still have caught a frame that came in meanwhile
    }
    const TxChain& target = rxBatch_[frames];
    const uint64_t frameBytes = static_cast<uint64_t>(res);
    // What the kernel wrote into the chain it read into, for the dirty log.
    const TxChain& readInto = rxBatch_[i];
    rx_.logWrite(rxBatchIov_.data() + readInto.iovStart, readInto.iovCount, 0, std::min<uint64_t>(frameBytes, readInto.bytes));
    // A frame read after an earlier read found the tap empty (it arrived in between) is
    // moved down into the first chain still unused, so frames keep their order and the
    // unused chains are the last popped: through the spare buffer, so it must fit that
    // and the chain it goes to as well as the one it was read into.
    const bool moved = i != frames;
    if (frameBytes > rxBatch_[i].bytes || (moved && (frameBytes > target.bytes || frameBytes > overflow_.size()))) {
      // Larger than the tap's frames were said to be (its MTU grew): this one is lost, counted, and
      // the guest gets a runt it drops; from now on every frame goes the single way, with room to spare.
      bump(rxStats.dropTooBig);
      rxBatchOff_ = true;
      rx_.pushUsed(target.head, 0, target.descCount);
      frames++;
      continue;
    }
    if (moved) {
      const TxChain& from = rxBatch_[i];
      copyFromIov(rxBatchIov_.data() + from.iovStart, from.iovCount, overflow_.data(), frameBytes);
      copyToIov(rxBatchIov_.data() + target.iovStart, target.iovCount, 0, overflow_.data(), frameBytes);
      rx_.logWrite(rxBatchIov_.data() + target.iovStart, target.iovCount, 0, frameBytes);
    }
    if (hdr == 12) {
      uint16_t one = 1;
      copyToIov(rxBatchIov_.data() + target.iovStart, target.iovCount, 10, reinterpret_cast<uint8_t*>(&one), 2);
      rx_.logWrite(rxBatchIov_.data() + target.iovStart, target.iovCount, 10, 2);
    }
    rx_.pushUsed(target.head, static_cast<uint32_t>(frameBytes), target.descCount);
    bump(rxStats.packets);
    bump(rxStats.bytes, frameBytes - hdr);
    frames++;
  }
  if (frames < sets) rx_.unpop(static_cast<uint16_t>(sets - frames));
  rxBatchWant_ = *drained ? std::max(2, frames) : std::min(kRxBatch, sets * 2);
  if (frames > 0) {
    usedSinceSignal_ += frames;
    if (usedSinceSignal_ >= kUsedBatch) {
      usedSinceSignal_ = 0;
      if (rx_.flushUsed()) signal(true);
    }
  }
  return frames;
}

void QueuePairWorker::giveBackHeldRx() {
  // A frame read past the buffers held, waiting for more, is lost with them: count it,
  // whether the worker stops or the rx queue broke while the frame waited (that case
  // went uncounted: found by native/fuzz, corpus/queue_pair_worker/repro-spill-lost-on-rx-break).
  if (spillFrameBytes_ > 0) bump(rxStats.dropStopped);
  if (heldCount_ > 0) rx_.unpop(static_cast<uint16_t>(heldCount_));
  heldCount_ = 0;
  heldIov_ = 0;
  heldBytes_ = 0;
  spillFrameBytes_ = 0;
}

bool QueuePairWorker::handleRx() {
  if (rxBroken_ || tapFailed_ || rxWaitingForBuffers_) return false;
  const uint64_t reserve = options_.mergeableRx ? std::max<uint64_t>(options_.rxReserveBytes, options_.hdrSize) : 1;
  rx_.disableNotify();
  // Every frame taken from the tap counts, delivered or dropped: a flood of frames
  // that are all dropped (too big for the buffers) must not keep the worker here,
  // away from tx and from a stop.
  int taken = 0;
  bool more = false;
  for (;;) {
    if (taken >= kBudget) {
      more = true;
      break;
    }
    if (spillFrameBytes_ > 0) {
      // A frame read past the buffers we held: gather the rest, then copy its tail in.
      Gather g = gatherRx(spillFrameBytes_);
      if (g != Gather::kReady) break;
      if (heldBytes_ < spillFrameBytes_) {
        if (heldCount_ < maxHeld_ && !gatherOutOfIov_) {
          rxWaitingForBuffers_ = true;  // the driver has not posted enough yet
          setTapInterest();
          break;
        }
        bump(rxStats.dropTooBig);  // more than the whole ring can hold: give up on it
        spillFrameBytes_ = 0;
        continue;
      }
      const HeldChain& first = held_[spillChain_];
      uint64_t startInChain = 0;
      for (size_t i = 0; i < spillChain_; i++) startInChain += held_[i].bytes;
      // What the read put in the overflow buffer, and never more than the buffer holds,
      // whatever the lengths the guest's descriptors gave make of the arithmetic above.
      const uint64_t spilled = std::min<uint64_t>(spillFrameBytes_ - spillStart_, overflow_.size());
      copyToIov(rxIov_.data() + first.iovStart, heldIov_ - first.iovStart, spillStart_ - startInChain,
                overflow_.data(), spilled);
      rx_.logWrite(rxIov_.data() + first.iovStart, heldIov_ - first.iovStart, spillStart_ - startInChain, spilled);
      uint64_t frameBytes = spillFrameBytes_;
      spillFrameBytes_ = 0;
      finishRxFrame(frameBytes);  // counted when it was read
      continue;
    }
    if (heldCount_ == 0 && uring_ && options_.rxMaxFrameBytes > 0 && !rxBatchOff_) {
      bool drained = false;
      int got = receiveBatch(kBudget - taken, &drained);
      if (got > 0) {
        taken += got;
        if (drained) break;  // the tap is empty now: call the driver, do not ask again
        continue;
      }
      if (got == 0) break;  // the tap is empty (or the queue broke)
    }
    if (gatherRx(reserve) != Gather::kReady) break;
    rxIov_[heldIov_] = {overflow_.data(), overflow_.size()};
    ssize_t n = readv(options_.tapFd, rxIov_.data(), heldIov_ + 1);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) {
        tapFailed_ = true;
        setTapInterest();
        sink_("tap", std::string("reading the tap queue failed: ") + strerror(errno));
      }
      break;
    }
    taken++;
    uint64_t frameBytes = static_cast<uint64_t>(n);
    // What the kernel wrote into the guest's buffers (the overflow buffer is ours).
    rx_.logWrite(rxIov_.data(), heldIov_, 0, std::min<uint64_t>(frameBytes, heldBytes_));
    if (frameBytes <= heldBytes_) {
      finishRxFrame(frameBytes);
      continue;
    }
    if (!options_.mergeableRx || frameBytes > heldBytes_ + overflow_.size()) {
      // Does not fit one chain (no MRG_RXBUF) or any buffer at all: dropped, counted, the chains reused.
      bump(rxStats.dropTooBig);
      continue;
    }
    spillFrameBytes_ = frameBytes;
    spillStart_ = heldBytes_;
    spillChain_ = heldCount_;
  }
  if (rx_.flushUsed()) {
    usedSinceSignal_ = 0;
    signal(true);
  }
  return more;
}

}  // namespace vhost_tap
