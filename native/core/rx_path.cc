#include "rx_path.h"

#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

namespace vhost_tap {

using worker::bump;
using worker::kBudget;
using worker::kMaxIov;
using worker::kUsedBatch;

namespace {

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

Status RxPath::start(std::shared_ptr<GuestMemoryMap> memory, const QueueConfig& config, const RxOptions& options,
                     CallNotifier* notifier, const WorkerEventSink* sink) {
  options_ = options;
  Status status = queue_.start(std::move(memory), config, notifier, sink);
  if (!status) return status;
  waitingForBuffers_ = false;
  batchIov_.assign(kBatchIovCapacity, {});
  batch_.assign(kBatch, {});
  batchResults_.assign(kBatch, 0);
  cqes_.assign(kBatch, {});
  batchOff_ = false;
  batchWant_ = 2;
  iov_.assign(kMaxIov + 1, {});
  maxHeld_ = options_.mergeable ? std::min<size_t>(queue_.ring().size(), kMaxIov) : 1;
  held_.assign(maxHeld_, {});
  heldCount_ = 0;
  heldIov_ = 0;
  heldBytes_ = 0;
  spillFrameBytes_ = 0;
  usedSinceSignal_ = 0;
  overflow_.assign(kOverflowBytes, 0);
  return status;
}

void RxPath::breakQueue() {
  giveBackHeld();
  queue_.reportBroken();
  updateTapInterest();
}

void RxPath::writeNumBuffers(const struct iovec* iov, int count, uint16_t numBuffers) {
  // Only the 12-byte header (VERSION_1 or MRG_RXBUF) has the field.
  if (options_.hdrSize != 12) return;
  copyToIov(iov, count, 10, reinterpret_cast<const uint8_t*>(&numBuffers), 2);
  queue_.ring().logWrite(iov, count, 10, 2);
}

RxPath::Gather RxPath::gather(uint64_t want) {
  Virtqueue& ring = queue_.ring();
  gatherOutOfIov_ = false;
  while (heldBytes_ < want && heldCount_ < maxHeld_) {
    Chain chain;
    // The readv's last iovec is the overflow buffer: guest segments get kMaxIov - 1.
    PopResult r = ring.pop(true, iov_.data() + heldIov_, kMaxIov - 1 - heldIov_, &chain);
    if (r == PopResult::kNoRoom) {
      if (heldCount_ > 0) {  // room comes back as held chains are used
        gatherOutOfIov_ = true;
        break;
      }
      ring.markBroken(QueueFault::kTooManySegments, "receive chain has more than " + std::to_string(kMaxIov - 1) + " segments");
      r = PopResult::kBroken;
    }
    if (r == PopResult::kBroken) {
      breakQueue();
      return Gather::kBroken;
    }
    if (r == PopResult::kEmpty) {
      if (queue_.postedWhileArming()) continue;
      break;
    }
    if (chain.bytes < options_.hdrSize) {
      ring.unpop(1);
      ring.markBroken(QueueFault::kBufferTooSmall, "receive buffer of " + std::to_string(chain.bytes) + " bytes cannot hold the " +
                                                        std::to_string(options_.hdrSize) + "-byte header");
      breakQueue();
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
    awaitBuffers();
    return Gather::kWaiting;
  }
  return Gather::kReady;
}

void RxPath::finishFrame(uint64_t frameBytes) {
  Virtqueue& ring = queue_.ring();
  size_t used = 0;
  uint64_t covered = 0;
  while (covered < frameBytes && used < heldCount_) covered += held_[used++].bytes;
  writeNumBuffers(iov_.data() + held_[0].iovStart, held_[0].iovCount, static_cast<uint16_t>(used));
  uint64_t left = frameBytes;
  uint64_t usedBytes = 0;
  for (size_t i = 0; i < used; i++) {
    uint32_t len = static_cast<uint32_t>(std::min<uint64_t>(left, held_[i].bytes));
    ring.pushUsed(held_[i].head, len, held_[i].descCount);
    left -= len;
    usedBytes += held_[i].bytes;
  }
  bump(queue_.stats().packets);
  bump(queue_.stats().bytes, frameBytes - options_.hdrSize);
  // Keep the chains not used for the next frame, moved to the front.
  int iovShift = used < heldCount_ ? held_[used].iovStart : heldIov_;
  if (used < heldCount_) {
    memmove(iov_.data(), iov_.data() + iovShift, sizeof(struct iovec) * (heldIov_ - iovShift));
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
    queue_.publish();
  }
}

int RxPath::receiveBatch(int budget, bool* drained) {
  *drained = false;
  Virtqueue& ring = queue_.ring();
  QueueStats& stats = queue_.stats();
  Uring* uring = tap_->uring();
  const uint32_t hdr = options_.hdrSize;
  const uint64_t maxFrame = options_.maxFrameBytes;
  int sets = 0;
  int iovUsed = 0;
  // Every read past the last frame queued costs a failed read in the kernel, and
  // a wakeup for one frame (a ping) should not pay for 31 of them: the batch grows
  // while the tap keeps filling it and shrinks to what the last one found.
  const int want = std::min(kBatch, batchWant_);
  while (sets < want && sets < budget && iovUsed + kMaxIov <= kBatchIovCapacity) {
    Chain chain;
    PopResult r = ring.pop(true, batchIov_.data() + iovUsed, kMaxIov, &chain);
    if (r == PopResult::kBroken) {
      ring.unpop(static_cast<uint16_t>(sets));
      breakQueue();
      return 0;
    }
    if (r == PopResult::kEmpty) {
      if (queue_.postedWhileArming()) continue;
      break;
    }
    if (r == PopResult::kNoRoom || chain.bytes < maxFrame) {
      // Not a chain that surely holds any frame: leave it (and the rest) to the single path.
      if (r == PopResult::kChain) ring.unpop(1);
      break;
    }
    batch_[sets++] = {chain.head, chain.descCount, iovUsed, chain.iovCount, chain.bytes};
    iovUsed += chain.iovCount;
  }
  if (sets == 0) return -1;
  // Hard-linked reads run one after the other, in ring order. A plain link would not do:
  // every tap read is "short" (a frame is smaller than the chain), and a short read
  // breaks a link, so only the first read would ever run (measured: 1 frame per batch).
  // A hard link runs them all; those that find the tap empty complete with -EAGAIN.
  for (int i = 0; i < sets; i++) {
    const BatchChain& c = batch_[i];
    uring->prepare(IORING_OP_READV, tap_->fd(), batchIov_.data() + c.iovStart, c.iovCount, static_cast<uint64_t>(i),
                   i + 1 < sets ? IOSQE_IO_HARDLINK : 0, RWF_NOWAIT);
  }
  int reaped = uring->submitAndWait(cqes_.data(), static_cast<unsigned>(sets));
  bump(stats.batches);
  if (reaped < 0) {
    ring.unpop(static_cast<uint16_t>(sets));
    tap_->dropUring();
    return -1;
  }
  for (int i = 0; i < sets; i++) batchResults_[i] = -ECANCELED;
  for (int i = 0; i < reaped; i++) batchResults_[cqes_[i].user_data] = cqes_[i].res;
  int frames = 0;  // chains filled, always the first `frames` popped, so the rest can be given back
  for (int i = 0; i < sets; i++) {
    int32_t res = batchResults_[i];
    if (res == -EOPNOTSUPP || res == -EINVAL) {
      // This kernel's tun cannot read without waiting under io_uring: one readv per frame it is.
      batchOff_ = true;
      break;
    }
    if (res <= 0) {
      if (res != -EAGAIN && res != -ECANCELED && res != 0) {
        tap_->fail(-res, "reading the tap queue");
        break;
      }
      *drained = true;
      continue;  // empty then; a later read may still have caught a frame that came in meanwhile
    }
    const BatchChain& target = batch_[frames];
    const uint64_t frameBytes = static_cast<uint64_t>(res);
    if (frameBytes < hdr) {
      // Shorter than its own header: never from a tap; from a stand-in, dropped. Its
      // chain goes back used and empty, as a frame too big for the batch does.
      bump(stats.dropBadHeader);
      ring.pushUsed(target.head, 0, target.descCount);
      frames++;
      continue;
    }
    // What the kernel wrote into the chain it read into, for the dirty log.
    const BatchChain& readInto = batch_[i];
    ring.logWrite(batchIov_.data() + readInto.iovStart, readInto.iovCount, 0, std::min<uint64_t>(frameBytes, readInto.bytes));
    // A frame read after an earlier read found the tap empty (it arrived in between) is
    // moved down into the first chain still unused, so frames keep their order and the
    // unused chains are the last popped: through the spare buffer, so it must fit that
    // and the chain it goes to as well as the one it was read into.
    const bool moved = i != frames;
    if (frameBytes > batch_[i].bytes || (moved && (frameBytes > target.bytes || frameBytes > overflow_.size()))) {
      // Larger than the tap's frames were said to be (its MTU grew): this one is lost, counted, and
      // the guest gets a runt it drops; from now on every frame goes the single way, with room to spare.
      bump(stats.dropTooBig);
      batchOff_ = true;
      ring.pushUsed(target.head, 0, target.descCount);
      frames++;
      continue;
    }
    if (moved) {
      const BatchChain& from = batch_[i];
      copyFromIov(batchIov_.data() + from.iovStart, from.iovCount, overflow_.data(), frameBytes);
      copyToIov(batchIov_.data() + target.iovStart, target.iovCount, 0, overflow_.data(), frameBytes);
      ring.logWrite(batchIov_.data() + target.iovStart, target.iovCount, 0, frameBytes);
    }
    writeNumBuffers(batchIov_.data() + target.iovStart, target.iovCount, 1);
    ring.pushUsed(target.head, static_cast<uint32_t>(frameBytes), target.descCount);
    bump(stats.packets);
    bump(stats.bytes, frameBytes - hdr);
    frames++;
  }
  if (frames < sets) ring.unpop(static_cast<uint16_t>(sets - frames));
  batchWant_ = *drained ? std::max(2, frames) : std::min(kBatch, sets * 2);
  if (frames > 0) {
    usedSinceSignal_ += frames;
    if (usedSinceSignal_ >= kUsedBatch) {
      usedSinceSignal_ = 0;
      queue_.publish();
    }
  }
  return frames;
}

void RxPath::giveBackHeld() {
  // A frame read past the buffers held, waiting for more, is lost with them: count it,
  // whether the worker stops or the rx queue broke while the frame waited (that case
  // went uncounted: found by the fuzz branch's worker fuzzer, 1a24335 there).
  if (spillFrameBytes_ > 0) bump(queue_.stats().dropStopped);
  if (heldCount_ > 0) queue_.ring().unpop(static_cast<uint16_t>(heldCount_));
  heldCount_ = 0;
  heldIov_ = 0;
  heldBytes_ = 0;
  spillFrameBytes_ = 0;
}

bool RxPath::handle() {
  if (queue_.broken() || tap_->failed() || waitingForBuffers_) return false;
  Virtqueue& ring = queue_.ring();
  QueueStats& stats = queue_.stats();
  const uint64_t reserve = options_.mergeable ? std::max<uint64_t>(options_.reserveBytes, options_.hdrSize) : 1;
  ring.disableNotify();
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
      Gather g = gather(spillFrameBytes_);
      if (g != Gather::kReady) break;
      if (heldBytes_ < spillFrameBytes_) {
        if (heldCount_ < maxHeld_ && !gatherOutOfIov_) {
          awaitBuffers();  // the driver has not posted enough yet
          break;
        }
        bump(stats.dropTooBig);  // more than the whole ring can hold: give up on it
        spillFrameBytes_ = 0;
        continue;
      }
      const HeldChain& first = held_[spillChain_];
      uint64_t startInChain = 0;
      for (size_t i = 0; i < spillChain_; i++) startInChain += held_[i].bytes;
      // What the read put in the overflow buffer, and never more than the buffer holds,
      // whatever the lengths the guest's descriptors gave make of the arithmetic above.
      const uint64_t spilled = std::min<uint64_t>(spillFrameBytes_ - spillStart_, overflow_.size());
      copyToIov(iov_.data() + first.iovStart, heldIov_ - first.iovStart, spillStart_ - startInChain, overflow_.data(), spilled);
      ring.logWrite(iov_.data() + first.iovStart, heldIov_ - first.iovStart, spillStart_ - startInChain, spilled);
      uint64_t frameBytes = spillFrameBytes_;
      spillFrameBytes_ = 0;
      finishFrame(frameBytes);  // counted when it was read
      continue;
    }
    if (heldCount_ == 0 && tap_->uring() && options_.maxFrameBytes > 0 && !batchOff_) {
      bool drained = false;
      int got = receiveBatch(kBudget - taken, &drained);
      if (got > 0) {
        taken += got;
        if (drained) break;  // the tap is empty now: call the driver, do not ask again
        continue;
      }
      if (got == 0) break;  // the tap is empty (or the queue broke)
    }
    if (gather(reserve) != Gather::kReady) break;
    iov_[heldIov_] = {overflow_.data(), overflow_.size()};
    ssize_t n = tap_->readv(iov_.data(), heldIov_ + 1);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      if (n == 0) tap_->hungUp();
      else if (errno != EAGAIN) tap_->fail(errno, "reading the tap queue");
      break;
    }
    taken++;
    uint64_t frameBytes = static_cast<uint64_t>(n);
    // What the kernel wrote into the guest's buffers (the overflow buffer is ours).
    ring.logWrite(iov_.data(), heldIov_, 0, std::min<uint64_t>(frameBytes, heldBytes_));
    if (frameBytes < options_.hdrSize) {
      // Shorter than its own header: never from a tap; from a stand-in, dropped, the chains reused.
      bump(stats.dropBadHeader);
      continue;
    }
    if (frameBytes <= heldBytes_) {
      finishFrame(frameBytes);
      continue;
    }
    if (!options_.mergeable || frameBytes > heldBytes_ + overflow_.size()) {
      // Does not fit one chain (no MRG_RXBUF) or any buffer at all: dropped, counted, the chains reused.
      bump(stats.dropTooBig);
      continue;
    }
    spillFrameBytes_ = frameBytes;
    spillStart_ = heldBytes_;
    spillChain_ = heldCount_;
  }
  if (ring.flushUsed()) {
    usedSinceSignal_ = 0;
    queue_.signal();
  }
  return more;
}

void RxPath::finish(bool untilEmpty) {
  if (untilEmpty) {
    drainUntilEmpty();
  } else {
    for (int turn = 0; turn < kStopDrainTurns && handle(); turn++) {
    }
  }
  // Rx gives back the buffers it held, dropping (counted) a frame that waited for more.
  giveBackHeld();
}

void RxPath::drainUntilEmpty() {
  uint64_t waitedSince = 0;
  for (int turn = 0; turn < kDrainAllTurns; turn++) {
    if (handle()) continue;  // the budget ran out: more to read
    if (queue_.broken() || tap_->failed()) return;
    if (!waitingForBuffers_) return;  // the tap queue is empty
    // Frames wait in the tap and the driver has no buffer posted: it may be refilling
    // (a guest refills rx from NAPI while its control command waits for our answer).
    const uint64_t now = worker::monotonicNs();
    if (waitedSince == 0) waitedSince = now;
    if (now - waitedSince < kDrainWaitNs) {
      struct timespec pause = {0, 200000};  // 0.2 ms: a kick cannot wake us here (kicks are not read, see the worker's loop)
      nanosleep(&pause, nullptr);
      if (queue_.ring().hasAvail()) resumeReading();
      continue;
    }
    // No buffer came: read what is left and drop it, counted, rather than let the
    // detach purge it unseen.
    const struct iovec sink = {overflow_.data(), overflow_.size()};
    for (int i = 0; i < kDrainAllTurns * kBudget; i++) {
      ssize_t n = tap_->readv(&sink, 1);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      bump(queue_.stats().dropStopped);
    }
    return;
  }
}

}  // namespace vhost_tap
