// libFuzzer target: the packed ring walker (native/core/packed_queue) over
// fuzzer-written guest memory, checked against a model of virtio 1.2 2.8: wrap
// counters, indirect tables, event suppression, and vhost-user's ring base
// encoding (0x80008000 for a fresh ring; bits 16-31 clear: the used position is
// the avail one). Input: a RingSpec, then operations (ring_harness.h; the
// driver's shortcuts are RingDriver's, fuzz_support.h).
#include <algorithm>
#include <vector>

#include "packed_queue.h"
#include "ring_harness.h"
#include "vring.h"

namespace vhost_tap {
namespace fuzz {
namespace {

class PackedModel {
 public:
  static constexpr bool kPacked = true;
  PackedModel(const RingSpec& spec, GuestFixture& g) : s_(spec), g_(g), driver_(spec, true, g) {}

  bool configValid() const {
    const uint32_t n = s_.size;
    if (n == 0 || n > kMaxQueueSize || (s_.desc & 15) || (s_.avail & 3) || (s_.used & 3)) return false;
    uint32_t availSlot, usedSlot;
    bool availWrap, usedWrap;
    decodeBase(&availSlot, &availWrap, &usedSlot, &usedWrap);
    if ((s_.flags & RingSpec::kPositionFile) && s_.positionOffset() + 8 > PositionFile::kBytes) return false;
    return availSlot < n && usedSlot < n && g_.inOneRegion(s_.desc, 16ull * n) && g_.inOneRegion(s_.avail, 4) &&
           g_.inOneRegion(s_.used, 4);
  }
  void afterSetup() {
    decodeBase(&lastAvail_, &availWrap_, &usedSlot_, &usedWrap_);
    setUp_ = true;
    // The device's own used descriptors land in the ring: if the ring covers the
    // device area, what we last wrote there is not what the flags cache says.
    deviceAreaShared_ = overlaps(s_.used, 4, s_.desc, 16ull * s_.size);
    checkPositionRecord();
  }
  // A restarted daemon resumes from the record: after setup and after every flush,
  // both words are the used position (slot | wrap << 15).
  void checkPositionRecord() const {
    if (!(s_.flags & RingSpec::kPositionFile)) return;
    uint32_t record[2];
    PositionFile::get().read(s_.positionOffset(), record);
    const uint32_t want = usedSlot_ | (static_cast<uint32_t>(usedWrap_) << 15);
    FUZZ_CHECK(record[0] == want && record[1] == want, "position record {0x%x, 0x%x}, the model 0x%x", record[0], record[1], want);
  }
  void driverWrote(uint64_t gpa, uint64_t len) {
    if (overlaps(gpa, len, s_.used, 4)) deviceAreaShared_ = true;
  }
  void driverOp(uint8_t op, Input& in) {
    const GuestFixture::Range wrote = driver_.op(op, in);
    driverWrote(wrote.gpa, wrote.len);
  }

  Expect expectPop(ChainDirection direction) {
    Expect e;
    uint32_t slot = lastAvail_;
    bool wrap = availWrap_;
    uint32_t slots = 0;
    bool seenWritable = false;
    auto element = [&](uint64_t addr, uint32_t len, bool writable) {
      if (direction == ChainDirection::kReadable && writable) return false;
      if (direction == ChainDirection::kWritable && !writable) return false;
      if (direction == ChainDirection::kReadThenWrite && seenWritable && !writable) return false;  // 2.8.4
      seenWritable = seenWritable || writable;
      if (e.bytes + len > kMaxChainBytes) return false;
      if (!g_.segments(addr, len, &e.segments)) return false;
      if (!writable) e.readableSegments = e.segments.size();
      e.bytes += len;
      return true;
    };
    for (;;) {
      const PackedDesc d = g_.get<PackedDesc>(s_.desc + 16ull * slot);
      if (!available(d.flags, wrap)) {
        e.kind = slots == 0 ? Expect::kEmpty : Expect::kInvalid;  // 2.8.6: every descriptor of a chain in the same lap
        return e;
      }
      e.kind = Expect::kInvalid;
      if (++slots > s_.size) return e;  // 2.8.4: no longer than the queue
      e.head = d.id;                    // 2.8.6: the buffer ID is the last descriptor's
      if (++slot >= s_.size) {
        slot = 0;
        wrap = !wrap;
      }
      if (d.flags & VRING_DESC_F_INDIRECT) {
        // 2.8.7: with the feature only, alone (no NEXT, not after ring descriptors), a
        // whole number of descriptors no more than the queue size, in guest memory.
        if (!(s_.flags & RingSpec::kIndirect) || slots > 1 || (d.flags & VRING_DESC_F_NEXT)) return e;
        if (d.len == 0 || d.len % 16 || d.len / 16 > s_.size || (d.addr & 15) || !g_.inOneRegion(d.addr, d.len)) return e;
        for (uint32_t i = 0; i < d.len / 16; i++) {
          const PackedDesc t = g_.get<PackedDesc>(d.addr + 16ull * i);
          if (!element(t.addr, t.len, (t.flags & VRING_DESC_F_WRITE) != 0)) return e;
        }
        break;
      }
      if (!element(d.addr, d.len, (d.flags & VRING_DESC_F_WRITE) != 0)) return e;
      if (!(d.flags & VRING_DESC_F_NEXT)) break;
    }
    e.kind = Expect::kValid;
    e.descCount = static_cast<uint16_t>(slots);
    nextSlot_ = slot;
    nextWrap_ = wrap;
    return e;
  }
  void popped(const Expect&) {
    starts_.push_back(lastAvail_ | (static_cast<uint32_t>(availWrap_) << 15));
    peak_ = std::max(peak_, starts_.size());
    lastAvail_ = nextSlot_;
    availWrap_ = nextWrap_;
  }
  // PackedQueue remembers where the last `size` pops began (pop numbers peak - size
  // onward, peak the most it ever reached): a chain popped before those cannot be
  // given back. The worker never needs to: it gives back chains it holds, and a
  // driver that keeps to the spec never lets it hold more than a ring's worth. (A
  // driver that republishes slots the device holds can make it pop more; what it
  // gets back then is a wrong position in its own ring, never one outside it.)
  size_t maxUnpop() const { return s_.size - (peak_ - starts_.size()); }
  void unpopped(uint16_t n) {
    if (n == 0) return;
    const uint32_t start = starts_[starts_.size() - n];
    starts_.resize(starts_.size() - n);
    lastAvail_ = start & 0x7fff;
    availWrap_ = (start >> 15) & 1;
  }

  void pushed(uint16_t id, uint32_t len, uint16_t descCount) {
    if (pending_.size() >= s_.size) return;  // PackedQueue keeps at most a ring's worth
    pending_.push_back({id, len, descCount});
  }
  // 2.8.2, 2.8.3: one used descriptor per buffer, at the used position, skipping the
  // chain's slots; AVAIL and USED equal to the used wrap counter, WRITE when len > 0.
  bool flush() {
    if (pending_.empty()) return false;
    struct Landed {
      uint32_t slot;
      PackedDesc d;
    };
    std::vector<Landed> landed;
    for (const Used& u : pending_) {
      PackedDesc d;
      d.addr = 0;
      d.len = u.len;
      d.id = u.id;
      d.flags = static_cast<uint16_t>((usedWrap_ ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0) | (u.len ? VRING_DESC_F_WRITE : 0));
      landed.push_back({usedSlot_, d});
      const uint32_t skip = u.descCount >= 1 && u.descCount <= s_.size ? u.descCount : 1;
      usedSlot_ += skip;
      if (usedSlot_ >= s_.size) {
        usedSlot_ -= s_.size;
        usedWrap_ = !usedWrap_;
      }
    }
    // The first entry is written last (its flags hand the whole batch over), so in a
    // batch longer than a lap (only a driver that republished slots the device held
    // can make one) it is the one left in its slot; later entries overwrite earlier ones.
    std::vector<Landed> final;
    auto land = [&](const Landed& l) {
      for (Landed& f : final) {
        if (f.slot == l.slot) {
          f = l;
          return;
        }
      }
      final.push_back(l);
    };
    for (size_t i = 1; i < landed.size(); i++) land(landed[i]);
    land(landed[0]);
    for (const Landed& l : final) {
      const PackedDesc d = g_.get<PackedDesc>(s_.desc + 16ull * l.slot);
      FUZZ_CHECK(d.id == l.d.id && d.len == l.d.len && d.flags == l.d.flags,
                 "used descriptor in slot %u is {id %u, len %u, flags 0x%x}, the model {id %u, len %u, flags 0x%x}", l.slot, d.id,
                 d.len, d.flags, l.d.id, l.d.len, l.d.flags);
    }
    pending_.clear();
    checkPositionRecord();
    return true;
  }
  void checkNotify(bool enabled, bool result) {
    const bool eventIdx = (s_.flags & RingSpec::kEventIdx) != 0;
    const PackedEventSuppress ev = g_.get<PackedEventSuppress>(s_.used);
    if (enabled) {
      FUZZ_CHECK(result == hasAvail(), "enableNotify() returned %d with%s buffers waiting", result, hasAvail() ? "" : " no");
      // 2.8.10: with event idx, a kick for the descriptor we read next.
      if (eventIdx) {
        const uint16_t want = static_cast<uint16_t>(lastAvail_ | (static_cast<uint32_t>(availWrap_) << 15));
        FUZZ_CHECK(deviceAreaShared_ || ev.offWrap == want, "device event off_wrap 0x%04x, the model 0x%04x", ev.offWrap, want);
      }
      if (!deviceAreaShared_) {
        FUZZ_CHECK(ev.flags == (eventIdx ? RING_EVENT_FLAGS_DESC : RING_EVENT_FLAGS_ENABLE), "device event flags %u after enableNotify()",
                   ev.flags);
      }
    } else if (!deviceAreaShared_) {
      FUZZ_CHECK(ev.flags == RING_EVENT_FLAGS_DISABLE, "device event flags %u after disableNotify()", ev.flags);
    }
  }
  bool hasAvail() const { return available(g_.get<PackedDesc>(s_.desc + 16ull * lastAvail_).flags, availWrap_); }
  uint32_t ringBase() const {
    return lastAvail_ | (static_cast<uint32_t>(availWrap_) << 15) | (usedSlot_ << 16) | (static_cast<uint32_t>(usedWrap_) << 31);
  }
  std::vector<GuestFixture::Range> deviceAreas() const { return {{s_.desc, 16ull * s_.size}, {s_.used, 4}}; }

 private:
  // vhost-user's packed ring base: bits 0-14 the avail slot, 15 its wrap counter,
  // 16-30 the used slot, 31 its wrap counter; with bits 16-31 all clear (DPDK's
  // virtio_user sends only the avail half) the used position is the avail one.
  void decodeBase(uint32_t* availSlot, bool* availWrap, uint32_t* usedSlot, bool* usedWrap) const {
    *availSlot = s_.base & 0x7fff;
    *availWrap = (s_.base >> 15) & 1;
    if ((s_.base >> 16) == 0) {
      *usedSlot = *availSlot;
      *usedWrap = *availWrap;
    } else {
      *usedSlot = (s_.base >> 16) & 0x7fff;
      *usedWrap = (s_.base >> 31) & 1;
    }
  }
  static bool available(uint16_t flags, bool wrap) {
    return ((flags & VIRTQ_DESC_F_AVAIL) != 0) == wrap && ((flags & VIRTQ_DESC_F_USED) != 0) != wrap;
  }
  static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
    return alen > 0 && blen > 0 && a < b + blen && b < a + alen;
  }
  struct Used {
    uint16_t id;
    uint32_t len;
    uint16_t descCount;
  };
  const RingSpec s_;
  GuestFixture& g_;
  RingDriver driver_;
  bool setUp_ = false;
  uint32_t lastAvail_ = 0, usedSlot_ = 0, nextSlot_ = 0;
  bool availWrap_ = true, usedWrap_ = true, nextWrap_ = true;
  std::vector<uint32_t> starts_;  // where each pop not given back began (slot | wrap << 15)
  size_t peak_ = 0;               // the most pops there ever were
  std::vector<Used> pending_;
  bool deviceAreaShared_ = false;  // someone else wrote the device event area: its flags are not only ours
};

}  // namespace
}  // namespace fuzz
}  // namespace vhost_tap

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return vhost_tap::fuzz::runRingInput<vhost_tap::PackedQueue, vhost_tap::fuzz::PackedModel>(data, size);
}
