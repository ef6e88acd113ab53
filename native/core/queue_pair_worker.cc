#include "queue_pair_worker.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace vhost_tap {

using worker::bump;
using worker::kBudget;
using worker::monotonicNs;

namespace {

enum EpollTag : uint32_t { kTagStop = 0, kTagRxKick = 1, kTagTxKick = 2, kTagTap = 3 };

// Reads through io_uring and writes through it come in batches of at most 32.
constexpr unsigned kUringEntries = 32;

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

Status QueuePairWorker::adoptFds() {
  if (fdsAdopted_) return Status::failure(EINVAL, "the worker already holds its fds");
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
  Status problem;
  for (int i = 0; i < 4 && problem.ok(); i++) {
    int given = *fds[i].fd;
    if (given < 0) {
      if (fds[i].required) problem = Status::failure(EINVAL, std::string("a ") + fds[i].what + " eventfd is required");
      continue;
    }
    copies[i] = fcntl(given, F_DUPFD_CLOEXEC, 0);
    std::string kind;
    if (copies[i] < 0) {
      problem = Status::fromErrno(errno, std::string("the ") + fds[i].what + " fd " + std::to_string(given));
    } else if (!isEventfd(copies[i], &kind)) {
      problem = Status::failure(EINVAL, std::string("the ") + fds[i].what + " fd " + std::to_string(given) +
                                            " is not an eventfd (it is " + kind + "): kicks and calls must be eventfds");
    }
  }
  if (!problem.ok()) {
    for (int copy : copies) {
      if (copy >= 0) close(copy);
    }
    return problem;
  }
  for (int i = 0; i < 4; i++) *fds[i].fd = copies[i];
  fdsAdopted_ = true;
  return Status::success();
}

void QueuePairWorker::release() {
  closeControlFds();
  tap_.close();
  callNotifier_.close();
  closeAdoptedFds();
  // A stopped worker keeps no guest memory mapped: the VM may be gone.
  rx_.release();
  tx_.release();
  options_.memory.reset();
}

Status QueuePairWorker::start() {
  if (running()) return Status::failure(EINVAL, "the worker is already running");
  if (!options_.memory) {
    return Status::failure(EINVAL, "a stopped queue pair cannot be restarted (its guest memory was released): create a new one");
  }
  if (!fdsAdopted_) return Status::failure(EINVAL, "the worker does not hold its kick and call fds (adoptFds)");
  // Whatever fails from here releases everything, as stop() would: a failed start leaks nothing.
  auto fail = [&](Status status) {
    release();
    return status;
  };
  if (options_.hdrSize != 10 && options_.hdrSize != 12) return fail(Status::failure(EINVAL, "vnet header size must be 10 or 12"));
  if (options_.rxMaxFrameBytes != 0 && options_.rxMaxFrameBytes < options_.hdrSize + 14) {
    // The batched reads take any chain that holds rxMaxFrameBytes: it must hold a header and an Ethernet header.
    return fail(Status::failure(EINVAL, "rxMaxFrameBytes must be 0 (unknown) or at least the vnet header plus 14 (" +
                                            std::to_string(options_.hdrSize + 14) + ")"));
  }
  const bool forwarding = !options_.txDiscardOnly;
  if (forwarding && options_.tapFd < 0) return fail(Status::failure(EINVAL, "a tap fd is required"));
  if (forwarding) {
    RxOptions rx;
    rx.hdrSize = options_.hdrSize;
    rx.mergeable = options_.mergeableRx;
    rx.reserveBytes = options_.rxReserveBytes;
    rx.maxFrameBytes = options_.rxMaxFrameBytes;
    Status s = rx_.start(options_.memory, options_.rx, rx, &callNotifier_, &sink_);
    if (!s) return fail(s.prefixed("receive queue: "));
  }
  Status s = tx_.start(options_.memory, options_.tx, options_.hdrSize, &callNotifier_, &sink_);
  if (!s) return fail(s.prefixed("transmit queue: "));
  if (options_.rx.callFd >= 0 || options_.tx.callFd >= 0) {
    s = callNotifier_.open();
    if (!s) return fail(s);
  }
  s = tap_.open(forwarding ? options_.tapFd : -1, kUringEntries, &sink_);
  if (!s) return fail(s);
  stopping_ = false;

  // Fresh per run, closed by stop(): a stopped worker holds no fd.
  epoll_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_ < 0) return fail(Status::fromErrno(errno, "epoll_create1"));
  stopFd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stopFd_ < 0) return fail(Status::fromErrno(errno, "eventfd"));
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
    ev.events = EPOLLIN;
    if (w.tag == kTagRxKick || w.tag == kTagTxKick) ev.events = EPOLLIN | EPOLLET;
    if (w.tag == kTagTap) ev.events = tap_.watchInterest(epoll_, kTagTap);
    ev.data.u32 = w.tag;
    if (epoll_ctl(epoll_, EPOLL_CTL_ADD, w.fd, &ev) < 0) {
      return fail(Status::fromErrno(errno, std::string("cannot watch the ") + w.what));
    }
  }
  thread_ = std::thread([this] { options_.txDiscardOnly ? runDiscardingTx() : run(); });
  return Status::success();
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

void QueuePairWorker::reportWaitFailed(const char* where, int err) {
  sink_(where, QueueFault::kWorkerError, std::string("epoll_wait failed: ") + strerror(err));
}

int QueuePairWorker::waitForWork(struct epoll_event* events, int max, bool idle, bool* txMore, bool* rxMore) {
  if (!idle) return epoll_wait(epoll_, events, max, 0);
  if (options_.busyPollNs > 0) {
    // Opt-in (vhost-net's busyloop_timeout): a wakeup through a kick or the tap costs
    // microseconds of scheduler latency each way; spinning a little after the last
    // work trades CPU for round-trip time. Never at idle: only after work was done.
    const uint64_t end = monotonicNs() + options_.busyPollNs;
    do {
      if (tx_.hasWork()) {
        *txMore = true;
        return 0;
      }
      if (rx_.buffersPosted()) {
        rx_.resumeReading();
        *rxMore = true;
        return 0;
      }
      int n = epoll_wait(epoll_, events, max, 0);
      if (n != 0) return n;
    } while (monotonicNs() < end && !stopping_.load(std::memory_order_acquire));
  }
  // A call that could not be made is retried in a millisecond, never waited for.
  const bool callPending = rx_.queue().callPending() || tx_.queue().callPending();
  return epoll_wait(epoll_, events, max, callPending ? 1 : -1);
}

void QueuePairWorker::run() {
  // Look at both queues once: the driver may have posted buffers before we started.
  bool txMore = true;
  bool rxMore = true;
  struct epoll_event events[8];
  while (!stopping_.load(std::memory_order_acquire)) {
    if (txMore) txMore = tx_.handle();
    if (rxMore) rxMore = rx_.handle();
    if (rx_.queue().callPending()) rx_.queue().signal();
    if (tx_.queue().callPending()) tx_.queue().signal();
    int n = waitForWork(events, 8, !(txMore || rxMore), &txMore, &rxMore);
    if (n < 0) {
      if (errno == EINTR) continue;
      reportWaitFailed("tap", errno);
      break;
    }
    for (int i = 0; i < n; i++) {
      switch (events[i].data.u32) {
        case kTagStop:
          break;
        case kTagRxKick:
          bump(rxStats.kicks);
          rxMore = true;
          if (rx_.waitingForBuffers()) rx_.resumeReading();
          break;
        case kTagTxKick:
          bump(txStats.kicks);
          txMore = true;
          break;
        case kTagTap:
          bump(rxStats.wakeups);
          if (events[i].events & EPOLLOUT) {
            tx_.tapWritable();
            txMore = true;
          }
          if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) rxMore = true;
          break;
      }
    }
  }
  // The kernel drops a queue's backlog when it is detached (tun.c), and a stop
  // usually comes right before a detach: rx reads what is queued now into the
  // guest's buffers first, then gives back the chains it held. Nothing of tx is in
  // flight (each chain completes as it is written).
  rx_.finish(drainRxOnStop_.load(std::memory_order_relaxed));
  if (discardTxOnStop_.load(std::memory_order_relaxed)) tx_.discard(tx_.queue().ring().size(), false);
  for (WorkerQueue* q : {&rx_.queue(), &tx_.queue()}) {
    if (q->ring().flushUsed() || q->callPending()) q->signal();
  }
}

void QueuePairWorker::runDiscardingTx() {
  WorkerQueue& tx = tx_.queue();
  bool more = true;            // the driver may have posted chains before we started
  uint64_t pendingSince = 0;   // when chains were first seen waiting (0: none seen)
  struct epoll_event events[4];
  while (!stopping_.load(std::memory_order_acquire)) {
    int timeoutMs = tx.callPending() ? 1 : -1;
    if (more) {
      const uint64_t now = monotonicNs();
      if (!tx.broken() && tx.ring().hasAvail()) {
        if (pendingSince == 0) pendingSince = now;
        if (now - pendingSince >= kDiscardGraceNs) {
          // Everything waiting now has waited long enough or came after (the ring is not
          // in use: a guest posts nothing new on it).
          more = tx_.discard(kBudget, true);
          if (!more) pendingSince = 0;  // else the rest has waited as long: at once, after a look at the fds
        }
      } else {
        pendingSince = 0;
        // Kick us for the next chain; one that came meanwhile is looked at now.
        more = tx.postedWhileArming(true) && !tx.broken();
      }
      if (pendingSince != 0) {
        const uint64_t left = kDiscardGraceNs - std::min(kDiscardGraceNs, now - pendingSince);
        timeoutMs = static_cast<int>(left / 1000000ull) + 1;
        more = true;
      } else if (more) {
        timeoutMs = 0;
      }
    }
    if (tx.callPending()) tx.signal();
    int n = epoll_wait(epoll_, events, 4, timeoutMs);
    if (n < 0) {
      if (errno == EINTR) continue;
      reportWaitFailed("tx", errno);
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
  if (tx.ring().flushUsed() || tx.callPending()) tx.signal();
}

}  // namespace vhost_tap
