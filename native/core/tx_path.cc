#include "tx_path.h"

#include <cerrno>
#include <string>

namespace vhost_tap {

using worker::bump;
using worker::kBudget;
using worker::kMaxIov;
using worker::kUsedBatch;

Status TxPath::start(std::shared_ptr<GuestMemoryMap> memory, const QueueConfig& config, uint32_t hdrSize,
                     CallNotifier* notifier, const WorkerEventSink* sink) {
  hdrSize_ = hdrSize;
  waitingForTap_ = false;
  iov_.assign(kIovCapacity, {});
  batch_.assign(kBatch, {});
  cqes_.assign(kBatch, {});
  return queue_.start(std::move(memory), config, notifier, sink);
}

PopResult TxPath::pop(struct iovec* iov, Chain* chain) {
  PopResult r = queue_.ring().pop(false, iov, kMaxIov, chain);
  if (r == PopResult::kNoRoom) {
    queue_.ring().markBroken(QueueFault::kTooManySegments, "transmit chain has more than " + std::to_string(kMaxIov) + " segments");
    r = PopResult::kBroken;
  }
  return r;
}

bool TxPath::handle() {
  if (queue_.broken() || waitingForTap_) return false;
  Virtqueue& ring = queue_.ring();
  ring.disableNotify();
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
    while (batch < kBatch && done + batch < kBudget && iovUsed + kMaxIov <= kIovCapacity) {
      Chain chain;
      PopResult r = pop(iov_.data() + iovUsed, &chain);
      if (r == PopResult::kBroken) {
        broken = true;
        break;
      }
      if (r == PopResult::kEmpty) {
        if (queue_.postedWhileArming()) continue;
        empty = true;
        break;
      }
      batch_[batch++] = {chain.head, chain.descCount, iovUsed, chain.iovCount, chain.bytes};
      iovUsed += chain.iovCount;
    }
    bool written = batch == 0 || transmitBatch(batch);
    done += batch;
    if (done / kUsedBatch != (done - batch) / kUsedBatch) queue_.publish();
    if (broken) {
      queue_.reportBroken();
      break;
    }
    if (empty || !written) break;
  }
  queue_.publish();
  return more;
}

void TxPath::account(const Pending& chain, ssize_t result) {
  QueueStats& stats = queue_.stats();
  if (result < 0) {
    bump(stats.dropTapError);
  } else {
    bump(stats.packets);
    bump(stats.bytes, chain.bytes - hdrSize_);
  }
}

bool TxPath::transmitBatch(int count) {
  const uint32_t hdr = hdrSize_;
  Virtqueue& ring = queue_.ring();
  QueueStats& stats = queue_.stats();
  Uring* uring = tap_->uring();
  if (uring && count > 1) {
    int queued = 0;
    for (int i = 0; i < count; i++) {
      const Pending& c = batch_[i];
      if (c.bytes < hdr) continue;
      uring->prepare(IORING_OP_WRITEV, tap_->fd(), iov_.data() + c.iovStart, c.iovCount, static_cast<uint64_t>(i));
      queued++;
    }
    int reaped = queued ? uring->submitAndWait(cqes_.data(), static_cast<unsigned>(queued)) : 0;
    if (queued) bump(stats.batches);
    if (reaped < 0) {
      // The ring itself failed: do without it from now on, and write this batch the plain way.
      tap_->dropUring();
      return transmitBatch(count);
    }
    for (int i = 0; i < reaped; i++) account(batch_[cqes_[i].user_data], cqes_[i].res);
    for (int i = 0; i < count; i++) {
      if (batch_[i].bytes < hdr) bump(stats.dropBadHeader);
      ring.pushUsed(batch_[i].head, 0, batch_[i].descCount);
    }
    return true;
  }
  for (int i = 0; i < count; i++) {
    const Pending& c = batch_[i];
    if (c.bytes < hdr) {
      bump(stats.dropBadHeader);
      ring.pushUsed(c.head, 0, c.descCount);
      continue;
    }
    ssize_t n = tap_->writev(iov_.data() + c.iovStart, c.iovCount);
    if (n < 0 && errno == EAGAIN) {
      // The tap's send buffer is full: retry from this chain when it is writable.
      ring.unpop(static_cast<uint16_t>(count - i));
      waitingForTap_ = true;
      tap_->wantWritable(true);
      return false;
    }
    account(c, n);
    ring.pushUsed(c.head, 0, c.descCount);
  }
  return true;
}

bool TxPath::discard(uint32_t budget, bool reportBroken) {
  if (queue_.broken()) return false;
  Virtqueue& ring = queue_.ring();
  // Notifications stay on while the budget lasts (postedWhileArming(true)): every
  // chain is completed at once, so there is no batch for a kick to interrupt.
  // `looks` bounds the loop by what it reads, not only by what it consumes: a
  // driver flipping avail->idx back and forth could make every recheck say "more".
  for (uint32_t done = 0, looks = 0; done < budget && looks < 2 * budget; looks++) {
    Chain chain;
    PopResult r = pop(iov_.data(), &chain);
    if (r == PopResult::kBroken) {
      if (reportBroken) queue_.reportBroken();
      break;
    }
    if (r == PopResult::kEmpty) {
      if (queue_.postedWhileArming(true)) continue;  // posted while we looked: take it too
      break;
    }
    ring.pushUsed(chain.head, 0, chain.descCount);
    bump(queue_.stats().dropStopped);
    if (++done % kUsedBatch == 0) queue_.publish();
    if (done == budget) {
      queue_.publish();
      return true;
    }
  }
  queue_.publish();
  // Out of looks with chains still there: come back after the next epoll_wait, which
  // also sees a stop.
  return !queue_.broken() && ring.hasAvail();
}

}  // namespace vhost_tap
