// libFuzzer target: the split ring walker (native/core/split_queue) over
// fuzzer-written guest memory, checked against a model of virtio 1.2 2.7.
// Input: a RingSpec, then operations (ring_harness.h).
#include "ring_harness.h"
#include "split_queue.h"
#include "vring.h"

namespace vhost_tap {
namespace fuzz {
namespace {

class SplitModel {
 public:
  static constexpr bool kPacked = false;
  SplitModel(const RingSpec& spec, GuestFixture& g) : s_(spec), g_(g), driver_(spec, false, g) {}

  // 2.7: a power of two up to 32768; 2.7.10.1 (and vhost): alignments 16, 2, 4.
  bool configValid() const {
    const uint32_t n = s_.size;
    return n != 0 && n <= kMaxQueueSize && (n & (n - 1)) == 0 && s_.base <= 0xffff && !(s_.desc & 15) && !(s_.avail & 1) &&
           !(s_.used & 3) && g_.inOneRegion(s_.desc, 16ull * n) && g_.inOneRegion(s_.avail, 6ull + 2ull * n) &&
           g_.inOneRegion(s_.used, 6ull + 8ull * n);
  }
  void afterSetup() {
    lastAvail_ = static_cast<uint16_t>(s_.base);
    usedIdx_ = g_.get<uint16_t>(s_.used + 2);  // the device resumes at the used index the driver sees
    setUp_ = true;
  }
  void driverWrote(uint64_t gpa, uint64_t len) {
    if (setUp_ && overlaps(gpa, len, s_.used, 6ull + 8ull * s_.size)) usedTouched_ = true;
  }
  void driverOp(uint8_t op, Input& in) {
    const GuestFixture::Range wrote = driver_.op(op, in);
    driverWrote(wrote.gpa, wrote.len);
  }

  Expect expectPop(ChainDirection direction) const {
    Expect e;
    const uint16_t availIdx = g_.get<uint16_t>(s_.avail + 2);
    const uint16_t pending = static_cast<uint16_t>(availIdx - lastAvail_);
    if (pending == 0) return e;  // empty
    e.kind = Expect::kInvalid;
    // 2.7.6: the driver never makes more chains available than the queue holds.
    if (pending > s_.size) return e;
    e.head = g_.get<uint16_t>(s_.avail + 4 + 2ull * (lastAvail_ % s_.size));
    if (e.head >= s_.size) return e;
    uint64_t table = s_.desc;
    uint32_t tableSize = s_.size;
    uint32_t index = e.head;
    uint32_t seen = 0;
    bool inIndirect = false;
    bool seenWritable = false;
    for (;;) {
      // 2.7.5.3.1: a chain no longer than the queue (its table): a longer one loops.
      if (++seen > tableSize) return e;
      const VringDesc d = g_.get<VringDesc>(table + 16ull * index);
      if (d.flags & VRING_DESC_F_INDIRECT) {
        // 2.7.5.3.1: only with the feature, never nested, never with NEXT; a whole
        // number of descriptors, no more than the queue size; the table in memory.
        if (!(s_.flags & RingSpec::kIndirect) || inIndirect || (d.flags & VRING_DESC_F_NEXT)) return e;
        if (d.len == 0 || d.len % 16 || d.len / 16 > s_.size || (d.addr & 15) || !g_.inOneRegion(d.addr, d.len)) return e;
        table = d.addr;
        tableSize = d.len / 16;
        index = 0;
        seen = 0;
        inIndirect = true;
        continue;
      }
      const bool writable = (d.flags & VRING_DESC_F_WRITE) != 0;
      // 2.7.4.2: tx chains are readable, rx chains writable, a request's reply follows it.
      if (direction == ChainDirection::kReadable && writable) return e;
      if (direction == ChainDirection::kWritable && !writable) return e;
      if (direction == ChainDirection::kReadThenWrite && seenWritable && !writable) return e;
      seenWritable = seenWritable || writable;
      if (e.bytes + d.len > kMaxChainBytes) return e;  // 2.7.5.1: a used len is 32 bits
      if (!g_.segments(d.addr, d.len, &e.segments)) return e;
      if (!writable) e.readableSegments = e.segments.size();
      e.bytes += d.len;
      if (!(d.flags & VRING_DESC_F_NEXT)) break;
      index = d.next;
      if (index >= tableSize) return e;
    }
    e.kind = Expect::kValid;
    return e;
  }
  void popped(const Expect&) { lastAvail_++; }
  size_t maxUnpop() const { return 0xffff; }
  void unpopped(uint16_t n) { lastAvail_ = static_cast<uint16_t>(lastAvail_ - n); }

  void pushed(uint16_t head, uint32_t len, uint16_t) {
    if (pending_.empty()) usedTouched_ = false;
    pending_.push_back({head, len});
  }
  // 2.7.8: entries at used idx onward, then idx moves past them.
  bool flush() {
    if (pending_.empty()) return false;
    const uint16_t first = usedIdx_;
    usedIdx_ = static_cast<uint16_t>(usedIdx_ + pending_.size());
    const uint16_t seenIdx = g_.get<uint16_t>(s_.used + 2);
    FUZZ_CHECK(seenIdx == usedIdx_, "used idx %u after flushUsed(), the model %u", seenIdx, usedIdx_);
    // The entries are written at pushUsed(): the driver may have overwritten them since.
    if (!usedTouched_) {
      for (size_t i = 0; i < pending_.size(); i++) {
        const uint64_t at = s_.used + 4 + 8ull * ((first + i) % s_.size);
        const VringUsedElem u = g_.get<VringUsedElem>(at);
        if (pending_.size() > s_.size && i < pending_.size() - s_.size) continue;  // overwritten by a later entry
        FUZZ_CHECK(u.id == pending_[i].id && u.len == pending_[i].len, "used entry %zu is {%u, %u}, the model {%u, %u}", i, u.id,
                   u.len, pending_[i].id, pending_[i].len);
      }
    }
    pending_.clear();
    return true;
  }
  void checkNotify(bool enabled, bool result) {
    const bool eventIdx = (s_.flags & RingSpec::kEventIdx) != 0;
    if (enabled) {
      FUZZ_CHECK(result == hasAvail(), "enableNotify() returned %d with%s buffers waiting", result, hasAvail() ? "" : " no");
      // 2.7.10: avail_event is the next index we will read; else used->flags clear.
      if (eventIdx) FUZZ_CHECK(g_.get<uint16_t>(s_.used + 4 + 8ull * s_.size) == lastAvail_, "avail_event is not last avail");
      else FUZZ_CHECK(g_.get<uint16_t>(s_.used) == 0, "enableNotify() left VRING_USED_F_NO_NOTIFY set");
    } else if (!eventIdx) {
      FUZZ_CHECK(g_.get<uint16_t>(s_.used) == VRING_USED_F_NO_NOTIFY, "disableNotify() did not set VRING_USED_F_NO_NOTIFY");
    }
  }
  bool hasAvail() const { return g_.get<uint16_t>(s_.avail + 2) != lastAvail_; }
  uint32_t ringBase() const { return setUp_ ? lastAvail_ : 0; }
  std::vector<GuestFixture::Range> deviceAreas() const { return {{s_.used, 6ull + 8ull * s_.size}}; }

 private:
  static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
    return alen > 0 && blen > 0 && a < b + blen && b < a + alen;
  }
  struct Used {
    uint32_t id;
    uint32_t len;
  };
  const RingSpec s_;
  GuestFixture& g_;
  RingDriver driver_;
  bool setUp_ = false;
  uint16_t lastAvail_ = 0;
  uint16_t usedIdx_ = 0;
  std::vector<Used> pending_;
  bool usedTouched_ = false;  // the driver wrote into the used ring since the pending entries were pushed
};

}  // namespace
}  // namespace fuzz
}  // namespace vhost_tap

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return vhost_tap::fuzz::runRingInput<vhost_tap::SplitQueue, vhost_tap::fuzz::SplitModel>(data, size);
}
