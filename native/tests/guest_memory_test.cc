// Guest memory (native/core/guest_memory.*): translation of guest-physical
// ranges across several regions, at their edges, and back from host pointers;
// and the regions it refuses to map.
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "guest_memory.h"
#include "mock_driver.h"
#include "test_support.h"

namespace vhost_tap_test {
namespace {

using vhost_tap::GuestMemoryMap;
using vhost_tap::RegionSpec;

constexpr uint64_t kPage = 4096;
// Three regions: A [0x10000, +64 KiB) and B right after it, then a gap, then C at 1 MiB.
constexpr uint64_t kA = 0x10000, kB = 0x20000, kC = 0x100000, kSize = 0x10000;

TEST("guest memory: translate takes a range wholly inside one region, up to its last byte, nothing past or across an edge") {
  TestMemory memory({{kA, kSize}, {kB, kSize}, {kC, kSize}});
  const GuestMemoryMap& map = *memory.map();
  CHECK_EQ(map.regionCount(), 3u);
  // The device's view and the driver's are the same bytes.
  memory.fill(kB + 5, 0xab, 1);
  const uint8_t* p = map.translate(kB + 5, 1);
  REQUIRE(p != nullptr);
  CHECK_EQ(*p, 0xab);
  CHECK(map.translate(kA, kSize) != nullptr);          // a whole region
  CHECK(map.translate(kA + kSize - 1, 1) != nullptr);  // its last byte
  CHECK(map.translate(kA + kSize - 1, 2) == nullptr);  // one byte into the next region: two regions, no one pointer
  CHECK(map.translate(kB + kSize - 8, 16) == nullptr); // into the gap
  CHECK(map.translate(kB + kSize, 1) == nullptr);      // the gap itself
  CHECK(map.translate(kA - 1, 1) == nullptr);          // below the first region
  CHECK(map.translate(kC + kSize, 0) == nullptr);      // zero bytes, but at no region
  CHECK(map.translate(kC, kSize + 1) == nullptr);
  CHECK(map.translate(0xfffffffffffffff0ull, 0x20) == nullptr);  // gpa + len wraps
  CHECK(map.translate(kC + 16, ~0ull) == nullptr);
}

TEST("guest memory: translateIov splits a range over adjacent regions, refuses a gap (-1) and too few iovecs (-2)") {
  TestMemory memory({{kA, kSize}, {kB, kSize}, {kC, kSize}});
  const GuestMemoryMap& map = *memory.map();
  struct iovec iov[4];
  // From 100 bytes before A's end to 50 bytes into B.
  REQUIRE_EQ(map.translateIov(kB - 100, 150, iov, 4), 2);
  CHECK(iov[0].iov_base == memory.map()->translate(kB - 100, 100));
  CHECK_EQ(iov[0].iov_len, 100u);
  CHECK(iov[1].iov_base == memory.map()->translate(kB, 50));
  CHECK_EQ(iov[1].iov_len, 50u);
  // The driver's bytes come through in order.
  std::vector<uint8_t> bytes = pattern(150, 3);
  memory.write(kB - 100, bytes.data(), 100);
  memory.write(kB, bytes.data() + 100, 50);
  CHECK(gather(iov, 2) == bytes);
  // Exactly both regions.
  CHECK_EQ(map.translateIov(kA, 2 * kSize, iov, 4), 2);
  CHECK_EQ(map.translateIov(kA, 2 * kSize, iov, 1), -2);
  CHECK_EQ(map.translateIov(kA, 2 * kSize + 1, iov, 4), -1);  // one byte into the gap
  CHECK_EQ(map.translateIov(kC - 1, 2, iov, 4), -1);          // from the gap into C
  CHECK_EQ(map.translateIov(kC + kSize - 1, 1, iov, 4), 1);
  CHECK_EQ(map.translateIov(kC + kSize - 1, 2, iov, 4), -1);
  CHECK_EQ(map.translateIov(0xfffffffffffffff0ull, 0x1000, iov, 4), -1);
  CHECK_EQ(map.translateIov(kA, 0, iov, 0), 0);  // nothing to translate: no iovec
}

TEST("guest memory: guestAddress maps a host pointer back into each region, and nothing outside them") {
  TestMemory memory({{kA, kSize}, {kB, kSize}, {kC, kSize}});
  const GuestMemoryMap& map = *memory.map();
  for (uint64_t gpa : {kA, kA + 123, kB + kSize - 1, kC, kC + kSize - 1}) {
    uint64_t back = 0;
    REQUIRE(map.guestAddress(map.translate(gpa, 1), &back));
    CHECK_EQ(back, gpa);
  }
  uint64_t back = 0;
  // One past C's mapping is not C's: it is outside every region, or (mmap placed
  // another region's mapping right there) that other region's first byte.
  const uint8_t* cEnd = map.translate(kC + kSize - 1, 1) + 1;
  if (map.guestAddress(cEnd, &back)) {
    CHECK(back != kC + kSize);
    CHECK(map.translate(back, 1) == cEnd);
  }
  uint8_t local = 0;
  CHECK(!map.guestAddress(&local, &back));
  CHECK(!map.guestAddress(nullptr, &back));
}

TEST("guest memory: regions given out of order are sorted; a file offset that is not page-aligned is honoured") {
  int fd = memfd_create("vhost-tap-test-offset", MFD_CLOEXEC);
  REQUIRE(fd >= 0);
  REQUIRE(ftruncate(fd, 4 * kPage) == 0);
  // Bytes at file offsets 0x1800 and 0x3000, written through a mapping of our own.
  uint8_t* file = static_cast<uint8_t*>(mmap(nullptr, 4 * kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  REQUIRE(file != MAP_FAILED);
  memcpy(file + 0x1800, "region one", 10);
  memcpy(file + 0x3000, "region two", 10);
  int err = 0;
  std::string what;
  auto map = GuestMemoryMap::create({{0x900000, kPage, fd, 0x3000}, {0x800000, 0x1000, fd, 0x1800}}, &err, &what);
  REQUIRE(map != nullptr);
  CHECK_EQ(map->region(0).guestPhysAddr, 0x800000u);
  CHECK_EQ(map->region(1).guestPhysAddr, 0x900000u);
  const uint8_t* one = map->translate(0x800000, 10);
  const uint8_t* two = map->translate(0x900000, 10);
  REQUIRE(one != nullptr && two != nullptr);
  CHECK(memcmp(one, "region one", 10) == 0);
  CHECK(memcmp(two, "region two", 10) == 0);
  CHECK(map->translate(0x800000 + 0x1000 - 1, 1) != nullptr);
  CHECK(map->translate(0x800000 + 0x1000, 1) == nullptr);
  map.reset();
  munmap(file, 4 * kPage);
  close(fd);
}

TEST("guest memory: create refuses overlapping regions, a size of 0, a region past its file's end, one that wraps") {
  int fd = memfd_create("vhost-tap-test-refused", MFD_CLOEXEC);
  REQUIRE(fd >= 0);
  REQUIRE(ftruncate(fd, 4 * kPage) == 0);
  auto refused = [&](std::vector<RegionSpec> specs, const std::string& says) {
    int err = 0;
    std::string what;
    auto map = GuestMemoryMap::create(specs, &err, &what);
    CHECK(map == nullptr);
    CHECK_EQ(err, EINVAL);
    if (what.find(says) == std::string::npos) recordFailure(__FILE__, __LINE__, "\"" + what + "\" does not say \"" + says + "\"");
  };
  refused({{0, kPage, fd, 0}, {kPage / 2, kPage, fd, 0}}, "region 1 overlaps region 0");
  refused({{0x10000, 2 * kPage, fd, 0}, {0x8000, 0x8001, fd, 0}}, "region 1 overlaps region 0");
  refused({{0, 0, fd, 0}}, "size is 0");
  refused({{0, 4 * kPage, fd, kPage}}, "ends beyond the end of its file");
  refused({{0xfffffffffffff000ull, 2 * kPage, fd, 0}}, "wraps around the address space");
  int err = 0;
  std::string what;
  CHECK(GuestMemoryMap::create({{0, kPage, -1, 0}}, &err, &what) == nullptr);
  CHECK_EQ(err, EBADF);
  CHECK(GuestMemoryMap::create({{0, 2 * kPage, fd, 2 * kPage}, {2 * kPage, kPage, fd, 0}}, &err, &what) != nullptr);
  close(fd);
}

}  // namespace
}  // namespace vhost_tap_test
