// The loop both ring targets run: a queue (SplitQueue or PackedQueue) set up
// over the fixture's guest memory from a RingSpec, then a sequence of driver
// writes and device operations read from the input. After every operation the
// queue is checked against a model of the layout (Model, one per target) that
// reads the ring the way the spec describes it:
//   - a chain pop() accepts is one the spec allows, and its iovecs are exactly
//     the descriptors' buffers, inside the guest's regions, maxIov at most, their
//     lengths summing to the chain's bytes;
//   - a chain the spec forbids breaks the queue, and once broken every pop()
//     returns kBroken;
//   - ringBase() is where the model says the device stopped;
//   - used entries land where and as the model says; notifications are set as asked;
//   - the device writes nothing outside its own areas, and with a dirty log,
//     marks the page of every byte it wrote.
#pragma once
#include <algorithm>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "fuzz_support.h"
#include "queue_common.h"
#include "queue_fault.h"

namespace vhost_tap {
namespace fuzz {

// What the model says the next pop() must give.
struct Expect {
  enum Kind { kEmpty, kInvalid, kValid } kind = kEmpty;
  uint16_t head = 0;
  uint16_t descCount = 1;
  uint64_t bytes = 0;
  std::vector<struct iovec> segments;  // in the map's host addresses
  size_t readableSegments = 0;
};

constexpr int kMaxOps = 2048;
constexpr int kMaxIovCap = 1024;

template <typename Queue, typename Model>
int runRingInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  GuestFixture& g = GuestFixture::get();
  g.reset();
  const RingSpec spec = RingSpec::read(in);
  const bool logging = (spec.flags & RingSpec::kDirtyLog) != 0;
  Model model(spec, g);

  QueueConfig config;
  config.size = spec.size;
  config.packed = Model::kPacked;
  config.descAddr = spec.desc;
  config.availAddr = spec.avail;
  config.usedAddr = spec.used;
  config.eventIdx = (spec.flags & RingSpec::kEventIdx) != 0;
  config.indirectDesc = (spec.flags & RingSpec::kIndirect) != 0;
  config.lastAvailIdx = spec.base;
  if (logging) config.dirtyLog = FixtureLog::get().slot();
  if (Model::kPacked && (spec.flags & RingSpec::kPositionFile)) {
    PositionFile::get().reset();
    config.positionFile = PositionFile::get().map();
    config.positionOffset = spec.positionOffset();
  }

  Queue queue;
  bool setUp = false;
  bool wasBroken = false;
  std::deque<Chain> outstanding;  // popped, neither used nor given back; oldest first
  for (int ops = 0; ops < kMaxOps && !in.empty(); ops++) {
    const uint8_t op = in.u8() % kRingOpCount;
    if (op == kOpWrite) {
      const uint64_t gpa = in.u32();
      size_t got = 0;
      const uint8_t* bytes = in.bytes(in.u16(), &got);
      g.write(gpa, bytes, got);
      model.driverWrote(gpa, got);
      continue;
    }
    if (op == kOpPublish || op == kOpDesc) {
      model.driverOp(op, in);
      continue;
    }
    // The first device operation sets the queue up, over what the driver wrote so far.
    if (!setUp) {
      Status ready = queue.setup(g.map(), config);
      const bool ok = ready.ok();
      const std::string& error = ready.message;
      FUZZ_CHECK(ok == model.configValid(), "setup() %s a configuration the model %s: %s", ok ? "accepted" : "refused",
                 ok ? "refuses" : "accepts", error.c_str());
      FUZZ_TRACE("setup: %s %s\n", ok ? "ok" : "refused", error.c_str());
      if (!ok) return 0;
      FUZZ_CHECK(!queue.broken() && queue.fault() == QueueFault::kNone, "a fresh queue is broken");
      model.afterSetup();
      setUp = true;
    }
    switch (op) {
      case kOpPop: {
        const uint8_t mode = in.u8() % 3;
        const uint8_t rawIov = in.u8();
        const int maxIov = rawIov == 255 ? kMaxIovCap : rawIov;
        // Exactly maxIov entries: a write past them is a heap overflow ASan reports.
        std::unique_ptr<struct iovec[]> iov(new struct iovec[maxIov > 0 ? maxIov : 1]);
        const ChainDirection direction =
            mode == 0 ? ChainDirection::kReadable : mode == 1 ? ChainDirection::kWritable : ChainDirection::kReadThenWrite;
        const Expect e = model.expectPop(direction);
        const uint32_t baseBefore = queue.ringBase();
        Chain chain;
        int readable = -1;
        PopResult r = mode == 2 ? queue.popMixed(iov.get(), maxIov, &chain, &readable)
                                : queue.pop(mode == 1, iov.get(), maxIov, &chain);
        FUZZ_TRACE("pop mode %d maxIov %d: %s (model %s) head %u bytes %llu iovecs %d%s%s\n", mode, maxIov,
                   r == PopResult::kChain ? "chain" : r == PopResult::kEmpty ? "empty" : r == PopResult::kBroken ? "broken" : "no room",
                   e.kind == Expect::kValid ? "valid" : e.kind == Expect::kEmpty ? "empty" : "invalid", chain.head,
                   (unsigned long long)chain.bytes, chain.iovCount, r == PopResult::kBroken ? ": " : "",
                   r == PopResult::kBroken ? queue.brokenReason().c_str() : "");
        if (wasBroken) {
          FUZZ_CHECK(r == PopResult::kBroken, "pop() on a broken queue returned %d", static_cast<int>(r));
          break;
        }
        switch (r) {
          case PopResult::kEmpty:
            FUZZ_CHECK(e.kind == Expect::kEmpty, "pop() found the ring empty, the model %s",
                       e.kind == Expect::kValid ? "a valid chain" : "an invalid one");
            break;
          case PopResult::kBroken:
            FUZZ_CHECK(e.kind == Expect::kInvalid, "pop() broke the queue (%s: %s) on a chain the model %s",
                       queueFaultCode(queue.fault()), queue.brokenReason().c_str(),
                       e.kind == Expect::kValid ? "accepts" : "sees no chain at all");
            FUZZ_CHECK(queue.broken() && queue.fault() != QueueFault::kNone && !queue.brokenReason().empty(),
                       "kBroken without a fault and a reason");
            wasBroken = true;
            break;
          case PopResult::kNoRoom:
            FUZZ_CHECK(e.kind == Expect::kInvalid || (e.kind == Expect::kValid && e.segments.size() > static_cast<size_t>(maxIov)),
                       "pop() said no room for a chain of %zu segments in %d iovecs", e.segments.size(), maxIov);
            break;
          case PopResult::kChain: {
            FUZZ_CHECK(e.kind == Expect::kValid, "pop() accepted a chain the model %s",
                       e.kind == Expect::kEmpty ? "does not see" : "finds invalid");
            FUZZ_CHECK(chain.iovCount >= 0 && chain.iovCount <= maxIov, "iovCount %d of %d", chain.iovCount, maxIov);
            uint64_t sum = 0;
            for (int i = 0; i < chain.iovCount; i++) {
              FUZZ_CHECK(g.iovInside(iov[i]), "iovec %d is outside the guest's regions", i);
              sum += iov[i].iov_len;
            }
            FUZZ_CHECK(sum == chain.bytes, "the chain's bytes %llu are not the sum of its iovecs %llu",
                       (unsigned long long)chain.bytes, (unsigned long long)sum);
            FUZZ_CHECK(chain.head == e.head && chain.bytes == e.bytes && chain.descCount == e.descCount,
                       "chain head %u bytes %llu slots %u; the model: head %u bytes %llu slots %u", chain.head,
                       (unsigned long long)chain.bytes, chain.descCount, e.head, (unsigned long long)e.bytes, e.descCount);
            FUZZ_CHECK(static_cast<size_t>(chain.iovCount) == e.segments.size(), "%d iovecs, the model %zu", chain.iovCount,
                       e.segments.size());
            for (int i = 0; i < chain.iovCount; i++) {
              FUZZ_CHECK(iov[i].iov_base == e.segments[i].iov_base && iov[i].iov_len == e.segments[i].iov_len,
                         "iovec %d is not the descriptor's buffer", i);
            }
            if (mode == 2) {
              FUZZ_CHECK(readable >= 0 && static_cast<size_t>(readable) == e.readableSegments, "readable iovecs %d, the model %zu",
                         readable, e.readableSegments);
            }
            model.popped(e);
            outstanding.push_back(chain);
            break;
          }
        }
        if (r != PopResult::kChain) {
          FUZZ_CHECK(queue.ringBase() == baseBefore, "a pop() that took no chain moved the ring base");
        }
        break;
      }
      case kOpUnpop: {
        const uint8_t n = static_cast<uint8_t>(in.u8() % (std::min<size_t>(outstanding.size(), model.maxUnpop()) + 1));
        queue.unpop(n);
        for (uint8_t i = 0; i < n; i++) outstanding.pop_back();
        model.unpopped(n);
        break;
      }
      case kOpPushUsed: {
        const uint32_t raw = in.u32();
        if (outstanding.empty()) break;
        const Chain c = outstanding.front();
        outstanding.pop_front();
        const uint32_t len = static_cast<uint32_t>(raw % (c.bytes + 1));
        queue.pushUsed(c.head, len, c.descCount);
        model.pushed(c.head, len, c.descCount);
        break;
      }
      case kOpFlush:
        FUZZ_CHECK(queue.flushUsed() == model.flush(), "flushUsed() and the model disagree on whether there was anything to publish");
        break;
      case kOpNeedsCall:
        queue.needsCall();
        break;
      case kOpEnableNotify: {
        const bool more = queue.enableNotify();
        model.checkNotify(true, more);
        break;
      }
      case kOpDisableNotify:
        queue.disableNotify();
        model.checkNotify(false, false);
        break;
      case kOpHasAvail:
        FUZZ_CHECK(queue.hasAvail() == model.hasAvail(), "hasAvail() %d, the model %d", queue.hasAvail(), model.hasAvail());
        break;
    }
    FUZZ_TRACE("op %d: ring base 0x%08x\n", op, queue.ringBase());
    FUZZ_CHECK(queue.ringBase() == model.ringBase(), "ringBase() 0x%08x, the model 0x%08x", queue.ringBase(), model.ringBase());
    FUZZ_CHECK(queue.broken() == wasBroken, "broken() changed outside pop()");
  }
  // The worker always follows pushUsed() with flushUsed() (at the latest when it
  // stops), and a split ring logs its used entries at the flush: flush as it would.
  if (setUp) FUZZ_CHECK(queue.flushUsed() == model.flush(), "flushUsed() and the model disagree at the end");
  const uint8_t* logged = logging ? FixtureLog::get().take() : nullptr;
  if (setUp) g.checkDeviceWrites(model.deviceAreas(), logged, FixtureLog::kBytes);
  return 0;
}

}  // namespace fuzz
}  // namespace vhost_tap
