// What the fuzz targets share: how an input is read (and how the seed writer
// writes one: the same encoding, field for field), the guest memory they run in,
// and how a target reports a broken invariant (abort(), which libFuzzer records as
// a crash with the input that caused it).
#pragma once
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "dirty_log.h"
#include "guest_memory.h"

namespace vhost_tap {
namespace fuzz {

[[noreturn]] inline void violated(const char* format, ...) {
  va_list args;
  va_start(args, format);
  fprintf(stderr, "\n*** invariant violated: ");
  vfprintf(stderr, format, args);
  fprintf(stderr, "\n");
  va_end(args);
  abort();
}

#define FUZZ_CHECK(cond, ...)                    \
  do {                                           \
    if (!(cond)) ::vhost_tap::fuzz::violated(__VA_ARGS__); \
  } while (0)

// VHOST_TAP_FUZZ_TRACE=1: the targets say what each operation did (on stderr),
// to read a reproducer or check that a seed does what it was written for.
inline bool tracing() {
  static const bool on = getenv("VHOST_TAP_FUZZ_TRACE") != nullptr;
  return on;
}
#define FUZZ_TRACE(...)                                   \
  do {                                                    \
    if (::vhost_tap::fuzz::tracing()) fprintf(stderr, __VA_ARGS__); \
  } while (0)

// Reads fields front to back, little-endian; past the end every field is 0, so
// any byte string is an input.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
  bool empty() const { return p_ >= end_; }
  size_t remaining() const { return static_cast<size_t>(end_ - p_); }
  uint8_t u8() { return p_ < end_ ? *p_++ : 0; }
  uint16_t u16() {
    const uint16_t lo = u8();
    const uint16_t hi = u8();
    return static_cast<uint16_t>(lo | (hi << 8));
  }
  uint32_t u32() {
    const uint32_t lo = u16();
    const uint32_t hi = u16();
    return lo | (hi << 16);
  }
  uint64_t u64() {
    const uint64_t lo = u32();
    const uint64_t hi = u32();
    return lo | (hi << 32);
  }
  // Up to n bytes (fewer at the end of the input); *got says how many.
  const uint8_t* bytes(size_t n, size_t* got) {
    const uint8_t* start = p_;
    *got = n < remaining() ? n : remaining();
    p_ += *got;
    return start;
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

// The seed writer's side of Input.
class Output {
 public:
  void u8(uint8_t v) { b_.push_back(v); }
  void u16(uint16_t v) {
    u8(static_cast<uint8_t>(v));
    u8(static_cast<uint8_t>(v >> 8));
  }
  void u32(uint32_t v) {
    u16(static_cast<uint16_t>(v));
    u16(static_cast<uint16_t>(v >> 16));
  }
  void u64(uint64_t v) {
    u32(static_cast<uint32_t>(v));
    u32(static_cast<uint32_t>(v >> 32));
  }
  void bytes(const void* p, size_t n) {
    const uint8_t* q = static_cast<const uint8_t*>(p);
    b_.insert(b_.end(), q, q + n);
  }
  const std::vector<uint8_t>& data() const { return b_; }

 private:
  std::vector<uint8_t> b_;
};

// One virtqueue's configuration as an input carries it.
struct RingSpec {
  static constexpr uint8_t kEventIdx = 1;
  static constexpr uint8_t kIndirect = 2;
  static constexpr uint8_t kDirtyLog = 4;  // the ring targets: log the device's writes
  // Packed: keep the ring's used position in a file (QueueConfig::positionFile), at
  // offset 4 * (flags >> 4) of 64 bytes (from 60 on, the record does not fit: refused).
  static constexpr uint8_t kPositionFile = 8;
  uint64_t positionOffset() const { return 4ull * (flags >> 4); }
  uint16_t size = 0;
  uint8_t flags = 0;
  uint64_t desc = 0, avail = 0, used = 0;
  uint32_t base = 0;

  static RingSpec read(Input& in) {
    RingSpec s;
    s.size = in.u16();
    s.flags = in.u8();
    s.desc = in.u64();
    s.avail = in.u64();
    s.used = in.u64();
    s.base = in.u32();
    return s;
  }
  void write(Output& out) const {
    out.u16(size);
    out.u8(flags);
    out.u64(desc);
    out.u64(avail);
    out.u64(used);
    out.u32(base);
  }
};

// The operations of the ring targets (split and packed), one byte each, then
// their operands.
enum RingOp : uint8_t {
  kOpWrite = 0,          // u32 gpa, u16 len, bytes: the driver writes guest memory
  kOpPop = 1,            // u8 mode (tx, rx, mixed), u8 maxIov (255: 1024)
  kOpUnpop = 2,          // u8 n: gives back n of the chains popped and not used
  kOpPushUsed = 3,       // u32 len: the oldest chain popped, len bytes written
  kOpFlush = 4,
  kOpNeedsCall = 5,
  kOpEnableNotify = 6,
  kOpDisableNotify = 7,
  kOpPublish = 8,        // split: u16 head into the avail ring, idx + 1; packed: see packed_queue_fuzz.cc
  kOpDesc = 9,           // split: u16 index, u32 addr, u32 len, u16 flags, u16 next
  kOpHasAvail = 10,
  kRingOpCount = 11,
};

// Guest memory for the ring and worker targets: three regions of one memfd, the
// first two adjacent in guest-physical space (a buffer may span them: two
// iovecs) but not in the file, the third after a hole.
struct RegionLayout {
  uint64_t gpa;
  uint64_t size;
  uint64_t fileOffset;
};
constexpr RegionLayout kLayout[] = {{0x0, 0x8000, 0x0}, {0x8000, 0x4000, 0xc000}, {0x20000, 0x4000, 0x8000}};
constexpr size_t kRegions = sizeof kLayout / sizeof kLayout[0];
constexpr uint64_t kFileBytes = 0x10000;

class GuestFixture {
 public:
  static GuestFixture& get() {
    static GuestFixture* fixture = new GuestFixture();  // lives as long as the process
    return *fixture;
  }

  const std::shared_ptr<GuestMemoryMap>& map() const { return map_; }
  int fd() const { return fd_; }

  // Every input starts from zeroed memory, so that a crash replays.
  void reset() {
    memset(view_, 0, kFileBytes);
    shadow_.assign(kFileBytes, 0);
  }

  // The driver's write: the bytes that fall inside the regions land, the rest is dropped.
  void write(uint64_t gpa, const uint8_t* data, size_t len) {
    for (size_t i = 0; i < len; i++) {
      int64_t off = fileOffset(gpa + i);
      if (off < 0) continue;
      view_[off] = data[i];
      shadow_[off] = data[i];
    }
  }
  template <typename T>
  void put(uint64_t gpa, T value) {
    write(gpa, reinterpret_cast<const uint8_t*>(&value), sizeof value);
  }

  // [gpa, gpa + len) inside one region (what translate() must accept).
  bool inOneRegion(uint64_t gpa, uint64_t len) const {
    for (const RegionLayout& r : kLayout) {
      if (gpa >= r.gpa && gpa - r.gpa < r.size && len <= r.size - (gpa - r.gpa)) return true;
    }
    return false;
  }
  // Reads a value wholly inside one region (the caller checked).
  template <typename T>
  T get(uint64_t gpa) const {
    T v;
    memcpy(&v, view_ + fileOffset(gpa), sizeof v);
    return v;
  }

  // The iovecs translateIov() must give for [gpa, gpa + len), in the map's own
  // host addresses; false if some byte is outside the regions.
  bool segments(uint64_t gpa, uint64_t len, std::vector<struct iovec>* out) const {
    while (len > 0) {
      size_t k = 0;
      for (; k < kRegions; k++) {
        if (gpa >= kLayout[k].gpa && gpa - kLayout[k].gpa < kLayout[k].size) break;
      }
      if (k == kRegions) return false;
      const uint64_t within = gpa - kLayout[k].gpa;
      const uint64_t chunk = len < kLayout[k].size - within ? len : kLayout[k].size - within;
      out->push_back({map_->region(k).host + within, static_cast<size_t>(chunk)});
      gpa += chunk;
      len -= chunk;
    }
    return true;
  }

  // Whether an iovec lies wholly within one region's mapping.
  bool iovInside(const struct iovec& v) const {
    const uintptr_t b = reinterpret_cast<uintptr_t>(v.iov_base);
    for (size_t k = 0; k < map_->regionCount(); k++) {
      const MappedRegion& r = map_->region(k);
      const uintptr_t h = reinterpret_cast<uintptr_t>(r.host);
      if (b >= h && b - h <= r.size && v.iov_len <= r.size - (b - h)) return true;
    }
    return false;
  }

  // Every byte the device changed (memory differs from what the driver wrote)
  // must lie inside one of `allowed` (gpa ranges); with `logged`, its page must be
  // marked in that dirty log bitmap (`logBytes` long).
  struct Range {
    uint64_t gpa;
    uint64_t len;
  };
  void checkDeviceWrites(const std::vector<Range>& allowed, const uint8_t* logged, uint64_t logBytes) const {
    for (uint64_t block = 0; block < kFileBytes; block += 64) {
      if (memcmp(view_ + block, shadow_.data() + block, 64) == 0) continue;
      for (uint64_t off = block; off < block + 64; off++) {
        if (view_[off] == shadow_[off]) continue;
        const uint64_t gpa = gpaOfFileOffset(off);
        bool ok = false;
        for (const Range& a : allowed) ok = ok || (gpa >= a.gpa && gpa - a.gpa < a.len);
        FUZZ_CHECK(ok, "the device wrote guest byte 0x%llx, outside the areas it may write", (unsigned long long)gpa);
        if (logged) {
          const uint64_t page = gpa >> 12;
          FUZZ_CHECK(page / 8 < logBytes && (logged[page / 8] >> (page % 8) & 1),
                     "the device wrote guest byte 0x%llx and did not mark its page in the dirty log", (unsigned long long)gpa);
        }
      }
    }
  }
  // After a check: what the device wrote counts as the memory's state from here on.
  void acceptDeviceWrites() { memcpy(shadow_.data(), view_, kFileBytes); }

 private:
  GuestFixture() {
    fd_ = memfd_create("vhost-tap-fuzz-guest", MFD_CLOEXEC);
    FUZZ_CHECK(fd_ >= 0 && ftruncate(fd_, kFileBytes) == 0, "memfd for guest memory");
    view_ = static_cast<uint8_t*>(mmap(nullptr, kFileBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0));
    FUZZ_CHECK(view_ != MAP_FAILED, "mmap of guest memory");
    std::vector<RegionSpec> specs;
    for (const RegionLayout& r : kLayout) specs.push_back({r.gpa, r.size, fd_, r.fileOffset});
    Status created = GuestMemoryMap::create(specs, &map_);
    FUZZ_CHECK(map_ && map_->regionCount() == kRegions, "GuestMemoryMap::create: %s", created.message.c_str());
    for (size_t k = 0; k < kRegions; k++) FUZZ_CHECK(map_->region(k).guestPhysAddr == kLayout[k].gpa, "regions sorted by gpa");
    shadow_.assign(kFileBytes, 0);
  }
  int64_t fileOffset(uint64_t gpa) const {
    for (const RegionLayout& r : kLayout) {
      if (gpa >= r.gpa && gpa - r.gpa < r.size) return static_cast<int64_t>(r.fileOffset + (gpa - r.gpa));
    }
    return -1;
  }
  uint64_t gpaOfFileOffset(uint64_t off) const {
    for (const RegionLayout& r : kLayout) {
      if (off >= r.fileOffset && off - r.fileOffset < r.size) return r.gpa + (off - r.fileOffset);
    }
    return ~0ull;
  }

  int fd_ = -1;
  uint8_t* view_ = nullptr;            // the whole file, our own mapping
  std::vector<uint8_t> shadow_;        // what the driver wrote, by file offset
  std::shared_ptr<GuestMemoryMap> map_;
};

// The driver's shortcuts for making chains available (the ring and worker
// targets; seeds write the same operands):
//   split  kOpPublish: u16 head into the avail ring at its idx, then idx + 1.
//          kOpDesc:    u16 index, u32 addr, u32 len, u16 flags, u16 next: a table descriptor.
//   packed kOpPublish: u32 addr, u32 len, u16 id, u8 bits (1 NEXT, 2 WRITE, 4 INDIRECT,
//                      8 flags of the other lap): the driver's next descriptor.
//          kOpDesc:    u16 slot, u32 addr, u32 len, u16 id, u16 flags: any descriptor, raw.
class RingDriver {
 public:
  RingDriver(const RingSpec& spec, bool packed, GuestFixture& g) : s_(spec), packed_(packed), g_(g) {
    const uint32_t n = s_.size ? s_.size : 1;
    slot_ = (s_.base & 0x7fff) % n;
    wrap_ = (s_.base >> 15) & 1;
  }
  // Returns the guest range it wrote.
  GuestFixture::Range op(uint8_t op, Input& in) {
    const uint32_t n = s_.size ? s_.size : 1;
    if (!packed_ && op == kOpPublish) {
      const uint16_t head = in.u16();
      if (!g_.inOneRegion(s_.avail, 4)) return {0, 0};
      const uint16_t idx = g_.get<uint16_t>(s_.avail + 2);
      g_.put<uint16_t>(s_.avail + 4 + 2ull * (idx % n), head);
      g_.put<uint16_t>(s_.avail + 2, static_cast<uint16_t>(idx + 1));
      return {s_.avail, 6ull + 2ull * n};
    }
    uint8_t d[16];
    uint32_t slot;
    uint64_t addr;
    uint32_t len;
    uint16_t third, flags;
    if (packed_ && op == kOpPublish) {
      addr = in.u32();
      len = in.u32();
      third = in.u16();  // id
      const uint8_t bits = in.u8();
      const bool lap = wrap_ != ((bits & 8) != 0);
      // 2.8.1: available when AVAIL equals the driver's wrap counter and USED does not.
      flags = static_cast<uint16_t>((lap ? 1u << 7 : 1u << 15) | ((bits & 1) ? 1u : 0u) | ((bits & 2) ? 2u : 0u) |
                                    ((bits & 4) ? 4u : 0u));
      slot = slot_;
      if (++slot_ >= n) {
        slot_ = 0;
        wrap_ = !wrap_;
      }
    } else {
      slot = in.u16() % n;
      addr = in.u32();
      len = in.u32();
      if (packed_) {
        third = in.u16();  // id
        flags = in.u16();
      } else {
        flags = in.u16();
        third = in.u16();  // next
      }
    }
    // Split: {addr, len, flags, next}; packed: {addr, len, id, flags}.
    memcpy(d, &addr, 8);
    memcpy(d + 8, &len, 4);
    const uint16_t a = packed_ ? third : flags;
    const uint16_t b = packed_ ? flags : third;
    memcpy(d + 12, &a, 2);
    memcpy(d + 14, &b, 2);
    g_.write(s_.desc + 16ull * slot, d, sizeof d);
    return {s_.desc + 16ull * slot, 16};
  }

 private:
  const RingSpec s_;
  const bool packed_;
  GuestFixture& g_;
  uint32_t slot_ = 0;
  bool wrap_ = true;
};

// The packed ring target's position file (QueueConfig::positionFile): 64 bytes of
// a memfd of its own, zeroed per input; read back with pread, not through the map.
class PositionFile {
 public:
  static constexpr uint64_t kBytes = 64;
  static PositionFile& get() {
    static PositionFile* file = new PositionFile();
    return *file;
  }
  const std::shared_ptr<GuestMemoryMap>& map() const { return map_; }
  void reset() {
    static const uint8_t zero[kBytes] = {};
    FUZZ_CHECK(pwrite(fd_, zero, kBytes, 0) == static_cast<ssize_t>(kBytes), "pwrite of the position file");
  }
  void read(uint64_t offset, uint32_t record[2]) const {
    FUZZ_CHECK(pread(fd_, record, 8, static_cast<off_t>(offset)) == 8, "pread of the position file");
  }

 private:
  PositionFile() {
    fd_ = memfd_create("vhost-tap-fuzz-position", MFD_CLOEXEC);
    FUZZ_CHECK(fd_ >= 0 && ftruncate(fd_, kBytes) == 0, "memfd for the position file");
    Status created = GuestMemoryMap::create({{0, kBytes, fd_, 0}}, &map_);
    FUZZ_CHECK(map_ != nullptr, "position file map: %s", created.message.c_str());
  }
  int fd_ = -1;
  std::shared_ptr<GuestMemoryMap> map_;
};

// One dirty log (a memfd of its own) for the ring targets, cleared per input.
class FixtureLog {
 public:
  static constexpr uint64_t kBytes = 64;  // 512 pages: 2 MiB of guest-physical space, all of the fixture's
  static FixtureLog& get() {
    static FixtureLog* log = new FixtureLog();
    return *log;
  }
  const std::shared_ptr<DirtyLogSlot>& slot() const { return slot_; }
  // The bitmap as it is, and cleared for the next input.
  const uint8_t* take() {
    log_->collect(bits_, true);
    return bits_;
  }

 private:
  FixtureLog() {
    int fd = memfd_create("vhost-tap-fuzz-log", MFD_CLOEXEC);
    FUZZ_CHECK(fd >= 0 && ftruncate(fd, kBytes) == 0, "memfd for the dirty log");
    Status mapped = DirtyLog::map(fd, kBytes, 0, &log_);
    close(fd);
    FUZZ_CHECK(log_ != nullptr, "DirtyLog::map: %s", mapped.message.c_str());
    slot_ = std::make_shared<DirtyLogSlot>();
    slot_->set(log_);
  }
  std::shared_ptr<DirtyLog> log_;
  std::shared_ptr<DirtyLogSlot> slot_;
  uint8_t bits_[kBytes];
};

}  // namespace fuzz
}  // namespace vhost_tap
