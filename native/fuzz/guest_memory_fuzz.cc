// libFuzzer target: guest-memory translation across several regions
// (native/core/guest_memory: create, translate, translateIov, guestAddress) and
// dirty-log marking (native/core/dirty_log: DirtyLog::mark, collect, the cursor,
// logIovWrite), each checked against a model.
//
// Input: u8 region count (1 to 6), per region {u8 placement, u64 gpa or gap,
// u32 size, u32 file offset}; u16 log bytes, u16 log offset; then operations:
//   0 translate     u8 region, u32 delta, u32 len   (or u64 gpa with region 255)
//   1 translateIov  u8 region, u32 delta, u32 len, u8 maxIov
//   2 guestAddress  u8 region, u32 delta (signed)
//   3 mark          u64 gpa, u64 len
//   4 collect       u8 clear
//   5 logIovWrite   u8 region, u32 delta, u32 len, u32 offset, u32 writeLen
// A translated pointer is checked by writing through it and reading the file
// back at the offset the region says (pread): the mapping is the right one.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>

#include "dirty_log.h"
#include "fuzz_support.h"
#include "guest_memory.h"
#include "queue_common.h"

namespace vhost_tap {
namespace fuzz {
namespace {

constexpr uint64_t kFile = 0x20000;  // 128 KiB of file behind the regions
constexpr uint64_t kLogFile = 0x3000;
constexpr int kMaxOps = 512;

struct Region {
  uint64_t gpa, size, offset;
};

struct Files {
  int memory = -1;
  int log = -1;
  Files() {
    memory = memfd_create("vhost-tap-fuzz-memory", MFD_CLOEXEC);
    log = memfd_create("vhost-tap-fuzz-log", MFD_CLOEXEC);
    FUZZ_CHECK(memory >= 0 && log >= 0 && ftruncate(memory, kFile) == 0 && ftruncate(log, kLogFile) == 0, "memfds");
  }
};

Files& files() {
  static Files* f = new Files();
  return *f;
}

bool overlapsGpa(const Region& a, const Region& b) { return a.gpa < b.gpa + b.size && b.gpa < a.gpa + a.size; }

// The region holding gpa, or nullptr.
const Region* holding(const std::vector<Region>& regions, uint64_t gpa) {
  for (const Region& r : regions) {
    if (gpa >= r.gpa && gpa - r.gpa < r.size) return &r;
  }
  return nullptr;
}

uint8_t marker = 1;

// Writes through a host pointer the map gave for `gpa`, reads the file at the
// offset the model says, and compares.
void checkMapsTo(const uint8_t* host, const Region& r, uint64_t gpa) {
  const uint64_t fileOffset = r.offset + (gpa - r.gpa);
  marker = static_cast<uint8_t>(marker * 31 + 7) | 1;
  *const_cast<uint8_t*>(host) = marker;
  uint8_t back = 0;
  FUZZ_CHECK(pread(files().memory, &back, 1, static_cast<off_t>(fileOffset)) == 1 && back == marker,
             "gpa 0x%llx translated to a byte that is not file offset 0x%llx", (unsigned long long)gpa,
             (unsigned long long)fileOffset);
}

uint64_t pickGpa(Input& in, const std::vector<Region>& regions) {
  const uint8_t k = in.u8();
  if (k == 255) return in.u64();
  const Region& r = regions[k % regions.size()];
  return r.gpa + static_cast<uint64_t>(static_cast<int64_t>(static_cast<int32_t>(in.u32())));
}

// The log's model: the bit of every page [gpa, gpa + len) covers, below size * 8 pages.
void modelMark(std::vector<uint8_t>& bits, uint64_t* outOfRange, uint64_t gpa, uint64_t len) {
  if (len == 0) return;
  uint64_t end;
  const uint64_t first = gpa >> 12;
  const uint64_t last = (__builtin_add_overflow(gpa, len - 1, &end) ? ~0ull : end) >> 12;
  const uint64_t pages = bits.size() * 8;
  for (uint64_t p = first; p <= last && p < pages; p++) bits[p / 8] |= static_cast<uint8_t>(1u << (p % 8));
  if (last >= pages) *outOfRange += last - std::max(first, pages) + 1;
}

void checkLog(DirtyLog& log, std::vector<uint8_t>& bits, uint64_t outOfRange, bool clear) {
  std::vector<uint8_t> got(log.bytes());
  log.collect(got.data(), clear);
  for (size_t i = 0; i < got.size(); i++) {
    FUZZ_CHECK(got[i] == bits[i], "dirty log byte %zu is 0x%02x, the model 0x%02x", i, got[i], bits[i]);
  }
  FUZZ_CHECK(log.outOfRange() == outOfRange, "out-of-range pages %llu, the model %llu", (unsigned long long)log.outOfRange(),
             (unsigned long long)outOfRange);
  if (clear) std::fill(bits.begin(), bits.end(), 0);
}

}  // namespace
}  // namespace fuzz
}  // namespace vhost_tap

using namespace vhost_tap;
using namespace vhost_tap::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  Files& f = files();
  std::vector<Region> regions;
  std::vector<RegionSpec> specs;
  const int count = in.u8() % 6 + 1;
  uint64_t end = 0;
  for (int i = 0; i < count; i++) {
    Region r;
    const uint8_t placement = in.u8() % 3;
    const uint64_t raw = in.u64();
    // Adjacent to the last one, after a gap, or anywhere: adjacency is what translateIov crosses.
    r.gpa = placement == 0 ? end : placement == 1 ? end + (raw & 0xffff) : raw;
    r.size = in.u32() & 0x1ffff;
    r.offset = in.u32() & 0x1ffff;
    end = r.gpa + r.size;
    regions.push_back(r);
    specs.push_back({r.gpa, r.size, f.memory, r.offset});
  }
  bool valid = true;
  for (size_t i = 0; i < regions.size(); i++) {
    const Region& r = regions[i];
    uint64_t sum;
    valid = valid && r.size > 0 && !__builtin_add_overflow(r.gpa, r.size, &sum) && r.offset + r.size <= kFile;
    for (size_t j = 0; j < i; j++) valid = valid && !overlapsGpa(r, regions[j]);
  }
  std::shared_ptr<GuestMemoryMap> map;
  Status created = GuestMemoryMap::create(specs, &map);
  FUZZ_CHECK((map != nullptr) == valid && created.ok() == valid, "GuestMemoryMap::create %s regions the model %s (%s)",
             map ? "accepted" : "refused", valid ? "accepts" : "refuses", created.message.c_str());
  if (!map) {
    FUZZ_CHECK(created.err != 0 && !created.message.empty(), "a refused map says why");
    return 0;
  }
  FUZZ_CHECK(map->regionCount() == regions.size(), "region count");
  std::sort(regions.begin(), regions.end(), [](const Region& a, const Region& b) { return a.gpa < b.gpa; });
  for (size_t k = 0; k < regions.size(); k++) {
    FUZZ_CHECK(map->region(k).guestPhysAddr == regions[k].gpa && map->region(k).size == regions[k].size, "region %zu", k);
  }
  auto hostOf = [&](const Region& r) -> const MappedRegion& { return map->region(&r - regions.data()); };

  const uint64_t logBytes = in.u16() % 0x1000 + 1;
  const uint64_t logOffset = in.u16() % 0x1000;
  std::shared_ptr<DirtyLog> log;
  Status mapped = DirtyLog::map(f.log, logBytes, logOffset, &log);
  FUZZ_CHECK(log != nullptr, "DirtyLog::map: %s", mapped.message.c_str());
  std::vector<uint8_t> zero(logBytes);
  log->collect(zero.data(), true);  // the file is shared by every input: start clear
  std::vector<uint8_t> bits(logBytes, 0);
  uint64_t outOfRange = 0;
  auto slot = std::make_shared<DirtyLogSlot>();
  slot->set(log);
  DirtyLogCursor cursor;
  cursor.attach(slot);

  std::vector<struct iovec> iov(9);
  for (int ops = 0; ops < kMaxOps && !in.empty(); ops++) {
    const uint8_t op = in.u8() % 6;
    switch (op) {
      case 0: {
        const uint64_t gpa = pickGpa(in, regions);
        const uint64_t len = in.u32();
        const uint8_t* host = map->translate(gpa, len);
        const Region* r = holding(regions, gpa);
        const bool inside = r && len <= r->size - (gpa - r->gpa);
        FUZZ_CHECK((host != nullptr) == inside, "translate(0x%llx, %llu) %s", (unsigned long long)gpa, (unsigned long long)len,
                   host ? "gave a pointer outside the regions" : "refused a range inside one region");
        if (!host) break;
        FUZZ_CHECK(host == hostOf(*r).host + (gpa - r->gpa), "translate() pointer");
        checkMapsTo(host, *r, gpa);
        if (len > 0) checkMapsTo(host + len - 1, *r, gpa + len - 1);
        break;
      }
      case 1:
      case 5: {
        const bool logWrite = op == 5;
        const uint64_t gpa = pickGpa(in, regions);
        const uint64_t len = in.u32() & 0xfffff;
        const int maxIov = logWrite ? 8 : in.u8() % 9;
        const int n = map->translateIov(gpa, len, iov.data(), maxIov);
        // The model: chunk by chunk through adjacent regions.
        std::vector<std::pair<uint64_t, uint64_t>> chunks;
        uint64_t at = gpa, left = len;
        int want = 0;
        while (left > 0) {
          const Region* r = holding(regions, at);
          if (!r) {
            want = -1;
            break;
          }
          if (want >= maxIov) {
            want = -2;
            break;
          }
          const uint64_t chunk = std::min(left, r->size - (at - r->gpa));
          if (n >= 0 && want < n) {
            FUZZ_CHECK(iov[want].iov_base == hostOf(*r).host + (at - r->gpa) && iov[want].iov_len == chunk,
                       "translateIov() iovec %d", want);
            checkMapsTo(static_cast<uint8_t*>(iov[want].iov_base), *r, at);
            checkMapsTo(static_cast<uint8_t*>(iov[want].iov_base) + chunk - 1, *r, at + chunk - 1);
          }
          chunks.push_back({at, chunk});
          want++;
          at += chunk;
          left -= chunk;
        }
        FUZZ_CHECK(n == want, "translateIov(0x%llx, %llu, %d) returned %d, the model %d", (unsigned long long)gpa,
                   (unsigned long long)len, maxIov, n, want);
        if (logWrite) {
          const uint64_t offset = in.u32() & 0xfffff;
          const uint64_t writeLen = in.u32() & 0xfffff;
          if (n < 0) break;
          logIovWrite(cursor, *map, iov.data(), n, offset, writeLen);
          // The bytes [offset, offset + writeLen) of the buffer, as far as it goes, marked
          // iovec by iovec (a page beyond the log that two iovecs share counts twice).
          uint64_t skip = offset, rest = writeLen;
          for (const auto& c : chunks) {
            if (skip >= c.second) {
              skip -= c.second;
              continue;
            }
            const uint64_t part = std::min(rest, c.second - skip);
            modelMark(bits, &outOfRange, c.first + skip, part);
            rest -= part;
            skip = 0;
          }
          checkLog(*log, bits, outOfRange, false);
        }
        break;
      }
      case 2: {
        const Region& r = regions[in.u8() % regions.size()];
        const int64_t delta = static_cast<int32_t>(in.u32());
        const uintptr_t p = reinterpret_cast<uintptr_t>(hostOf(r).host) + static_cast<uintptr_t>(delta);
        uint64_t gpa = 0;
        const bool found = map->guestAddress(reinterpret_cast<const void*>(p), &gpa);
        // Any region's mapping may hold p (mappings can be neighbours in our address space).
        bool want = false;
        uint64_t wantGpa = 0;
        for (size_t k = 0; k < regions.size() && !want; k++) {
          const uintptr_t h = reinterpret_cast<uintptr_t>(map->region(k).host);
          if (p >= h && p - h < regions[k].size) {
            want = true;
            wantGpa = regions[k].gpa + (p - h);
          }
        }
        FUZZ_CHECK(found == want && (!found || gpa == wantGpa), "guestAddress() %d 0x%llx, the model %d 0x%llx", found,
                   (unsigned long long)gpa, want, (unsigned long long)wantGpa);
        if (found) FUZZ_CHECK(map->translate(gpa, 1) == reinterpret_cast<uint8_t*>(p), "guestAddress() is not translate()'s inverse");
        break;
      }
      case 3: {
        const uint64_t gpa = in.u64();
        const uint64_t len = in.u64();
        log->mark(gpa, len);
        modelMark(bits, &outOfRange, gpa, len);
        checkLog(*log, bits, outOfRange, false);
        break;
      }
      case 4:
        checkLog(*log, bits, outOfRange, in.u8() & 1);
        break;
    }
  }
  return 0;
}
