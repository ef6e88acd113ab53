// The packed ring walker (native/core/packed_queue.*, virtio 1.2 2.8) against a
// raw driver: chains, indirect tables, wrap counters over many laps of rings
// whose size is not a power of two, the used descriptors it writes, the ring
// base in vhost-user's encoding, unpop() (and its regression across 2^32 pops),
// event suppression both ways, and every fault a malformed ring makes it report
// (the shapes of test/packed-ring.test.ts).
#include <cstring>
#include <string>
#include <vector>

#include "mock_driver.h"
#include "queue_rig.h"
#include "packed_queue.h"
#include "test_support.h"

namespace vhost_tap {
// Declared a friend in packed_queue.h.
struct PackedQueueTestAccess {
  static void setPopCount(PackedQueue& queue, uint64_t count) { queue.popCount_ = count; }
};
}  // namespace vhost_tap

namespace vhost_tap_test {
namespace {

using vhost_tap::Status;
using vhost_tap::Chain;
using vhost_tap::PackedQueue;
using vhost_tap::PopResult;
using vhost_tap::QueueConfig;
using vhost_tap::QueueFault;
using vhost_tap::RING_EVENT_FLAGS_DESC;
using vhost_tap::RING_EVENT_FLAGS_DISABLE;
using vhost_tap::RING_EVENT_FLAGS_ENABLE;
using vhost_tap::VIRTQ_DESC_F_AVAIL;
using vhost_tap::VIRTQ_DESC_F_USED;
using vhost_tap::VRING_DESC_F_INDIRECT;
using vhost_tap::VRING_DESC_F_NEXT;
using vhost_tap::VRING_DESC_F_WRITE;

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kMemory = 2 * kMiB;  // two adjacent regions of 1 MiB
constexpr uint64_t kRingAt = 0x1000;
constexpr uint64_t kBuffersAt = 0x40000;
constexpr uint32_t kHdr = 12;

struct PackedRig : QueueRig<PackedQueue, PackedDriver> {
  explicit PackedRig(uint32_t size = 5, bool indirect = true, bool eventIdx = true)
      : QueueRig({{0, kMiB}, {kMiB, kMiB}}, kRingAt, Arena(kBuffersAt, kMemory), size, indirect, eventIdx) {}
  // The ring base the driver's own positions say the device should be at.
  uint32_t driverBase() const {
    return (driver.next | (driver.wrap ? 0x8000u : 0)) | ((driver.nextUsed | (driver.usedWrap ? 0x8000u : 0)) << 16);
  }
};

void expectFault(PackedRig& rig, bool deviceWrites, QueueFault fault, const std::string& reason) {
  const uint32_t base = rig.queue.ringBase();
  Chain chain;
  CHECK_EQ(rig.pop(deviceWrites, &chain), PopResult::kBroken);
  CHECK_EQ(rig.queue.fault(), fault);
  CHECK(rig.queue.broken());
  if (rig.queue.brokenReason().find(reason) == std::string::npos) {
    recordFailure(__FILE__, __LINE__, "brokenReason \"" + rig.queue.brokenReason() + "\" does not say \"" + reason + "\"");
  }
  CHECK_EQ(rig.queue.ringBase(), base);
  CHECK_EQ(rig.pop(deviceWrites, &chain), PopResult::kBroken);
  CHECK_EQ(rig.queue.fault(), fault);
  CHECK_EQ(rig.queue.ringBase(), base);
}

// ---- chains that pop, used descriptors, wrap counters ----

TEST("packed: single descriptors, chains and indirect tables over five laps of a 5-slot ring; used descriptors echo the ID and skip the chain") {
  PackedRig rig(5);
  rig.start();
  for (uint32_t k = 0; k < 20; k++) {
    const uint16_t id = static_cast<uint16_t>(40000 + k);  // 2.8: nothing bounds a buffer ID; the device only echoes it
    const uint64_t hdr = rig.buffer(kHdr, k), frame = rig.buffer(100 + k, k + 100);
    std::vector<uint8_t> want = pattern(kHdr, k), body = pattern(100 + k, k + 100);
    want.insert(want.end(), body.begin(), body.end());
    uint32_t slots;
    if (k % 3 == 0) {
      const uint64_t whole = rig.buffers.take(want.size());
      rig.memory.write(whole, want.data(), want.size());
      slots = rig.driver.post({{whole, static_cast<uint32_t>(want.size()), 0, id}});
    } else if (k % 3 == 1) {
      slots = rig.driver.post({{hdr, kHdr}, {frame, 100 + k, 0, id}});
    } else {
      const uint64_t table = rig.buffers.take(32);
      PackedDriver::writeTable(rig.memory, table, {{hdr, kHdr}, {frame, 100 + k}});
      slots = rig.driver.post({{table, 32, VRING_DESC_F_INDIRECT, id}});
    }
    CHECK(rig.queue.hasAvail());
    Chain chain;
    REQUIRE_EQ(rig.pop(false, &chain), PopResult::kChain);
    CHECK_EQ(chain.head, id);
    CHECK_EQ(chain.descCount, static_cast<uint16_t>(slots));
    CHECK_EQ(chain.bytes, static_cast<uint64_t>(want.size()));
    CHECK(gather(rig.iov.data(), chain.iovCount) == want);
    CHECK(!rig.queue.hasAvail());
    rig.queue.pushUsed(chain.head, 0, chain.descCount);
    CHECK(rig.queue.flushUsed());
    const bool wrap = rig.driver.usedWrap;
    PackedDriver::Used used;
    REQUIRE(rig.driver.takeUsed(&used));
    CHECK_EQ(used.id, id);
    CHECK_EQ(used.flags & (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED), wrap ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0);
    CHECK_EQ(used.flags & VRING_DESC_F_WRITE, 0);  // nothing written into a transmit buffer
    CHECK_EQ(rig.queue.ringBase(), rig.driverBase());
  }
  CHECK_EQ(rig.driver.nextUsed, rig.driver.next);
  CHECK_EQ(rig.driver.usedWrap, rig.driver.wrap);
  // 7 chains of 1 slot, 7 of 2, 6 indirect of 1: 27 slots, five laps and two.
  CHECK_EQ(rig.driver.next, 2u);
  CHECK(!rig.driver.wrap);
}

TEST("packed: a batch of used descriptors is written in order with its lengths; WRITE says the device wrote") {
  PackedRig rig(7);
  rig.start();
  for (uint32_t lap = 0; lap < 6; lap++) {
    // 2 + 1 + 2 slots of 7: laps start at different slots.
    std::vector<Chain> chains(3);
    for (uint16_t c = 0; c < 3; c++) {
      const uint16_t id = static_cast<uint16_t>(lap * 3 + c);
      if (c == 1) rig.driver.post({{rig.buffers.take(64), 64, VRING_DESC_F_WRITE, id}});
      else rig.driver.post({{rig.buffers.take(kHdr), kHdr, VRING_DESC_F_WRITE}, {rig.buffers.take(64), 64, VRING_DESC_F_WRITE, id}});
    }
    for (auto& chain : chains) REQUIRE_EQ(rig.pop(true, &chain), PopResult::kChain);
    for (uint16_t c = 0; c < 3; c++) rig.queue.pushUsed(chains[c].head, c == 1 ? 0 : 30 + c, chains[c].descCount);
    PackedDriver::Used used;
    CHECK(!rig.driver.peekUsed(&used));  // nothing before the flush
    CHECK(rig.queue.flushUsed());
    for (uint16_t c = 0; c < 3; c++) {
      REQUIRE(rig.driver.takeUsed(&used));
      CHECK_EQ(used.id, static_cast<uint16_t>(lap * 3 + c));
      CHECK_EQ(used.len, c == 1 ? 0u : 30u + c);
      CHECK_EQ((used.flags & VRING_DESC_F_WRITE) != 0, c != 1);
    }
    CHECK(!rig.driver.peekUsed(&used));
    CHECK_EQ(rig.queue.ringBase(), rig.driverBase());
  }
}

TEST("packed: wrap counters stay in step over 300 laps of a 7-slot ring, chains of 1 to 3 slots, the ring base following") {
  PackedRig rig(7);
  rig.start();
  uint32_t slotsDone = 0;
  for (uint32_t k = 0; slotsDone < 300 * 7; k++) {
    const uint32_t n = 1 + k % 3;
    std::vector<PackedDescSpec> descs;
    for (uint32_t i = 0; i < n; i++) descs.push_back({kBuffersAt + 64 * i, 64});
    descs.back().id = static_cast<uint16_t>(k);
    rig.driver.post(descs);
    Chain chain;
    REQUIRE_EQ(rig.pop(false, &chain), PopResult::kChain);
    CHECK_EQ(chain.head, static_cast<uint16_t>(k));
    REQUIRE_EQ(chain.descCount, static_cast<uint16_t>(n));
    rig.queue.pushUsed(chain.head, 0, chain.descCount);
    rig.queue.flushUsed();
    PackedDriver::Used used;
    REQUIRE(rig.driver.takeUsed(&used));
    REQUIRE_EQ(used.id, static_cast<uint16_t>(k));
    REQUIRE_EQ(rig.queue.ringBase(), rig.driverBase());
    slotsDone += n;
  }
  CHECK(!rig.queue.hasAvail());
}

TEST("packed: a chain needing more iovecs than offered is not consumed (kNoRoom) and pops whole once there is room") {
  PackedRig rig(5);
  rig.start();
  rig.driver.post({{rig.buffer(10), 10}, {rig.buffer(10), 10}, {rig.buffer(10), 10, 0, 9}});
  Chain chain;
  CHECK_EQ(rig.pop(false, &chain, 2), PopResult::kNoRoom);
  CHECK_EQ(rig.queue.ringBase(), 0x80008000u);
  CHECK(!rig.queue.broken());
  REQUIRE_EQ(rig.pop(false, &chain, 3), PopResult::kChain);
  CHECK_EQ(chain.head, 9);
  CHECK_EQ(chain.descCount, 3);
}

// ---- the ring base (vhost-user's packed encoding) ----

TEST("packed ring base: a fresh ring is 0x80008000; 7 slots of 5 give slot 2 of the second lap (0x00020002)") {
  PackedRig rig(5);
  rig.start();
  CHECK_EQ(rig.queue.ringBase(), 0x80008000u);
  for (uint16_t k = 0; k < 7; k++) {
    rig.driver.post({{rig.buffer(8), 8, 0, k}});
    Chain chain;
    REQUIRE_EQ(rig.pop(false, &chain), PopResult::kChain);
    rig.queue.pushUsed(chain.head, 0, chain.descCount);
    rig.queue.flushUsed();
  }
  CHECK_EQ(rig.queue.ringBase(), 0x00020002u);
}

TEST("packed ring base: a queue set up at a base resumes mid-lap; with only the avail half given, used resumes there too") {
  for (bool availHalfOnly : {false, true}) {
    PackedRig rig(5);
    // As a driver that has made 7 slots available and had 7 used: slot 2, wrap 0, both.
    rig.driver.next = rig.driver.nextUsed = 2;
    rig.driver.wrap = rig.driver.usedWrap = false;
    rig.config.lastAvailIdx = availHalfOnly ? 0x0002u : 0x00020002u;
    rig.start();
    CHECK_EQ(rig.queue.ringBase(), 0x00020002u);
    for (uint16_t k = 0; k < 6; k++) {
      rig.driver.post({{rig.buffer(8), 8, 0, static_cast<uint16_t>(100 + k)}});
      Chain chain;
      REQUIRE_EQ(rig.pop(false, &chain), PopResult::kChain);
      CHECK_EQ(chain.head, 100 + k);
      rig.queue.pushUsed(chain.head, 0, chain.descCount);
      rig.queue.flushUsed();
      PackedDriver::Used used;
      REQUIRE(rig.driver.takeUsed(&used));
      CHECK_EQ(used.id, 100 + k);
    }
    CHECK_EQ(rig.queue.ringBase(), rig.driverBase());
    CHECK_EQ(rig.queue.ringBase(), 0x80038003u);  // 13 slots of 5: slot 3 of the third lap (wrap 1)
  }
}

TEST("packed setup refuses a base past the ring, misaligned or outside areas, a split config, a size of 0 or over 32768") {
  PackedRig rig(5);
  auto refused = [&](QueueConfig c, const std::string& says) {
    PackedQueue q;
    Status ready = q.setup(rig.memory.map(), c);
    CHECK(!ready);
    CHECK_EQ(ready.err, EINVAL);
    const std::string& error = ready.message;
    if (error.find(says) == std::string::npos) recordFailure(__FILE__, __LINE__, "error \"" + error + "\" does not say \"" + says + "\"");
  };
  QueueConfig c = rig.config;
  c.lastAvailIdx = 5;
  refused(c, "ring base 0x00000005 names a slot past the ring of 5");
  c.lastAvailIdx = 0x80058000u;
  refused(c, "names a slot past the ring");
  c = rig.config;
  c.availAddr += 2;
  refused(c, "misaligned");
  c = rig.config;
  c.descAddr += 8;
  refused(c, "misaligned");
  c = rig.config;
  c.usedAddr = kMemory;
  refused(c, "device event suppression area is not inside guest memory");
  c = rig.config;
  c.descAddr = kMemory - 64;
  refused(c, "descriptor ring is not inside guest memory");
  c = rig.config;
  c.packed = false;
  refused(c, "a split ring cannot be driven as a packed one");
  c = rig.config;
  c.size = 0;
  refused(c, "is not from 1 to 32768");
  c.size = 32769;
  refused(c, "is not from 1 to 32768");
  c = rig.config;
  c.lastAvailIdx = 0x80048004u;  // slot 4 of 5, both wraps 1: fine
  PackedQueue ok;
  CHECK(ok.setup(rig.memory.map(), c).ok());
}

// ---- unpop ----

TEST("packed: unpop gives back the last chains (of several slots each), and they pop again the same") {
  PackedRig rig(7);
  rig.start();
  rig.driver.post({{rig.buffer(8), 8, 0, 1}});
  rig.driver.post({{rig.buffer(8), 8}, {rig.buffer(8), 8, 0, 2}});
  rig.driver.post({{rig.buffer(8), 8}, {rig.buffer(8), 8}, {rig.buffer(8), 8, 0, 3}});
  Chain chain;
  for (int i = 0; i < 3; i++) REQUIRE_EQ(rig.pop(false, &chain), PopResult::kChain);
  CHECK_EQ(rig.queue.ringBase() & 0xffff, 6u | 0x8000u);
  rig.queue.unpop(2);
  CHECK_EQ(rig.queue.ringBase() & 0xffff, 1u | 0x8000u);
  REQUIRE_EQ(rig.pop(false, &chain), PopResult::kChain);
  CHECK_EQ(chain.head, 2);
  CHECK_EQ(chain.descCount, 2);
  REQUIRE_EQ(rig.pop(false, &chain), PopResult::kChain);
  CHECK_EQ(chain.head, 3);
  // More than were popped: only what was popped comes back.
  rig.queue.unpop(100);
  CHECK_EQ(rig.queue.ringBase() & 0xffff, 0u | 0x8000u);
  REQUIRE_EQ(rig.pop(false, &chain), PopResult::kChain);
  CHECK_EQ(chain.head, 1);
}

TEST("packed regression (fe924fd): unpop across 2^32 pops gives back every chain asked for") {
  // The pop count was 32 bits: after 2^32 pops (~71 min at 1 Mpps) it wrapped, and
  // unpop() clamped what it gave back to the small count, leaking the guest's
  // buffers and moving the ring base: lastAvail 10 where 5 was right.
  PackedRig rig(16);
  rig.start();
  vhost_tap::PackedQueueTestAccess::setPopCount(rig.queue, (1ull << 32) - 10);
  for (uint16_t k = 0; k < 15; k++) rig.driver.post({{rig.buffer(8), 8, 0, k}});
  Chain chain;
  for (uint16_t k = 0; k < 15; k++) {
    REQUIRE_EQ(rig.pop(false, &chain), PopResult::kChain);
    CHECK_EQ(chain.head, k);
  }
  rig.queue.unpop(10);
  CHECK_EQ(rig.queue.ringBase() & 0x7fff, 5u);
  REQUIRE_EQ(rig.pop(false, &chain), PopResult::kChain);
  CHECK_EQ(chain.head, 5);
}

// ---- event suppression (2.8.10) ----

TEST("packed notifications: disableNotify writes DISABLE; enableNotify writes DESC at the next slot with event idx, ENABLE without") {
  {
    PackedRig rig(5, true, true);
    rig.start();
    rig.queue.disableNotify();
    CHECK_EQ(rig.driver.deviceEvent().flags, RING_EVENT_FLAGS_DISABLE);
    CHECK(!rig.queue.enableNotify());
    CHECK_EQ(rig.driver.deviceEvent().flags, RING_EVENT_FLAGS_DESC);
    CHECK_EQ(rig.driver.deviceEvent().offWrap, 0x8000);  // slot 0, wrap 1
    for (uint16_t k = 0; k < 6; k++) {
      rig.driver.post({{rig.buffer(8), 8, 0, k}});
      Chain chain;
      REQUIRE_EQ(rig.pop(false, &chain), PopResult::kChain);
    }
    CHECK(!rig.queue.enableNotify());
    CHECK_EQ(rig.driver.deviceEvent().offWrap, 1);  // slot 1 of the second lap: wrap 0
    rig.driver.post({{rig.buffer(8), 8, 0, 9}});
    rig.queue.disableNotify();
    CHECK(rig.queue.enableNotify());  // one came meanwhile: the caller must go on
  }
  {
    PackedRig rig(5, true, false);
    rig.start();
    rig.queue.disableNotify();
    CHECK_EQ(rig.driver.deviceEvent().flags, RING_EVENT_FLAGS_DISABLE);
    CHECK(!rig.queue.enableNotify());
    CHECK_EQ(rig.driver.deviceEvent().flags, RING_EVENT_FLAGS_ENABLE);
  }
}

TEST("packed needsCall follows the driver's DISABLE and ENABLE, and DESC at an offset and wrap, lap after lap") {
  PackedRig rig(5, true, true);
  rig.start();
  uint16_t nextId = 0;
  auto completeOne = [&] {
    rig.driver.post({{kBuffersAt, 8, 0, nextId}});
    Chain chain;
    REQUIRE_EQ(rig.pop(false, &chain), PopResult::kChain);
    rig.queue.pushUsed(chain.head, 0, chain.descCount);
    rig.queue.flushUsed();
    PackedDriver::Used used;
    REQUIRE(rig.driver.takeUsed(&used));
    nextId++;
  };
  rig.driver.setDriverEvent(RING_EVENT_FLAGS_DISABLE);
  completeOne();
  CHECK(!rig.queue.needsCall());
  rig.driver.setDriverEvent(RING_EVENT_FLAGS_ENABLE);
  completeOne();
  CHECK(rig.queue.needsCall());
  for (int k = 0; k < 12; k++) {
    // DESC at the slot after the next one: the next completion does not reach it, the one after does.
    const uint32_t target = (rig.driver.nextUsed + 1) % 5;
    const bool wrap = rig.driver.nextUsed + 1 >= 5 ? !rig.driver.usedWrap : rig.driver.usedWrap;
    rig.driver.setDriverEvent(RING_EVENT_FLAGS_DESC, static_cast<uint16_t>(target | (wrap ? 0x8000 : 0)));
    completeOne();
    CHECK(!rig.queue.needsCall());
    completeOne();
    CHECK(rig.queue.needsCall());
    CHECK(!rig.queue.needsCall());  // nothing used since
  }
  // A lap or more since the last look passes any offset.
  rig.driver.setDriverEvent(RING_EVENT_FLAGS_DESC, static_cast<uint16_t>(rig.driver.nextUsed | (rig.driver.usedWrap ? 0 : 0x8000)));
  for (int i = 0; i < 5; i++) completeOne();
  CHECK(rig.queue.needsCall());
  // Without event idx, DESC means nothing: always call.
  PackedRig plain(5, true, false);
  plain.start();
  plain.driver.setDriverEvent(RING_EVENT_FLAGS_DESC, 0x8003);
  CHECK(plain.queue.needsCall());
}

// ---- faults: every QueueFault the packed walker reports ----
// (kChainTooLong cannot be reached by a driver that does not race the walk: a
// chain of ring descriptors that runs a whole lap comes back to its head, whose
// flags do not match the flipped wrap counter, so it stops one step earlier as
// descriptor-not-available; the check stays as the walk's bound.)

TEST("packed fault descriptor-not-available: a chain whose second descriptor's AVAIL/USED do not match the wrap counter") {
  PackedRig rig;
  rig.start();
  rig.driver.post({{rig.buffer(kHdr), kHdr, VRING_DESC_F_NEXT}, {rig.buffer(64), 64, VIRTQ_DESC_F_USED, 1, true}});
  expectFault(rig, false, QueueFault::kDescriptorNotAvailable, "descriptor 1 of a chain is not available");
}

TEST("packed fault descriptor-not-available: a chain that runs around the whole ring (NEXT on every descriptor)") {
  PackedRig rig;
  rig.start();
  std::vector<PackedDescSpec> descs(5, {kBuffersAt, 8, static_cast<uint16_t>(VRING_DESC_F_NEXT | VIRTQ_DESC_F_AVAIL), 0, true});
  rig.driver.post(descs);
  expectFault(rig, false, QueueFault::kDescriptorNotAvailable, "descriptor 5 of a chain is not available");
}

TEST("packed fault bad-indirect: an indirect descriptor with NEXT") {
  PackedRig rig;
  rig.start();
  const uint64_t table = rig.buffers.take(16);
  PackedDriver::writeTable(rig.memory, table, {{rig.buffer(64), 64}});
  rig.driver.post({{table, 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT}, {rig.buffer(64), 64}});
  expectFault(rig, false, QueueFault::kBadIndirect, "indirect descriptor in a chain of ring descriptors");
}

TEST("packed fault bad-indirect: an indirect descriptor second in a chain") {
  PackedRig rig;
  rig.start();
  const uint64_t table = rig.buffers.take(16);
  PackedDriver::writeTable(rig.memory, table, {{rig.buffer(64), 64}});
  rig.driver.post({{rig.buffer(kHdr), kHdr, VRING_DESC_F_NEXT}, {table, 16, VRING_DESC_F_INDIRECT}});
  expectFault(rig, false, QueueFault::kBadIndirect, "indirect descriptor in a chain of ring descriptors");
}

TEST("packed fault bad-indirect: an indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC") {
  PackedRig rig(5, false);
  rig.start();
  const uint64_t table = rig.buffers.take(16);
  PackedDriver::writeTable(rig.memory, table, {{rig.buffer(64), 64}});
  rig.driver.post({{table, 16, VRING_DESC_F_INDIRECT}});
  expectFault(rig, false, QueueFault::kBadIndirect, "indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC");
}

TEST("packed fault bad-indirect: an indirect table length that is not a multiple of 16 (24, and 0)") {
  for (uint32_t len : {24u, 0u}) {
    PackedRig rig;
    rig.start();
    rig.driver.post({{rig.buffers.take(32), len, VRING_DESC_F_INDIRECT}});
    expectFault(rig, false, QueueFault::kBadIndirect, "indirect table length " + std::to_string(len) + " is not a multiple of 16");
  }
}

TEST("packed fault bad-indirect: an indirect table of more descriptors than the queue size") {
  PackedRig rig;
  rig.start();
  const uint64_t table = rig.buffers.take(96);
  PackedDriver::writeTable(rig.memory, table, std::vector<PackedDescSpec>(6, {table, 0}));
  rig.driver.post({{table, 96, VRING_DESC_F_INDIRECT}});
  expectFault(rig, false, QueueFault::kBadIndirect, "indirect table of 6 descriptors is larger than the queue size 5");
}

TEST("packed fault bad-indirect: an indirect table that is not 16-byte aligned") {
  PackedRig rig;
  rig.start();
  rig.driver.post({{rig.buffers.take(64) + 8, 32, VRING_DESC_F_INDIRECT}});
  expectFault(rig, false, QueueFault::kBadIndirect, "indirect table is not 16-byte aligned");
}

TEST("packed fault address-out-of-bounds: an indirect table outside guest memory") {
  PackedRig rig;
  rig.start();
  rig.driver.post({{kMemory - 16, 32, VRING_DESC_F_INDIRECT}});
  expectFault(rig, false, QueueFault::kAddressOutOfBounds, "indirect table is not inside guest memory");
}

TEST("packed fault address-out-of-bounds: a buffer past the end of guest memory") {
  PackedRig rig;
  rig.start();
  rig.driver.post({{kMemory - 64, 128}});
  expectFault(rig, false, QueueFault::kAddressOutOfBounds, "descriptor buffer 0x1fffc0+128 is outside guest memory");
}

TEST("packed fault address-out-of-bounds: a buffer near 2^64 (addr + len wraps)") {
  PackedRig rig;
  rig.start();
  rig.driver.post({{0xfffffffffffffff0ull, 4096}});
  expectFault(rig, false, QueueFault::kAddressOutOfBounds, "descriptor buffer 0xfffffffffffffff0+4096 is outside guest memory");
}

TEST("packed fault address-out-of-bounds: an entry of an indirect table outside guest memory") {
  PackedRig rig;
  rig.start();
  const uint64_t table = rig.buffers.take(32);
  PackedDriver::writeTable(rig.memory, table, {{rig.buffer(64), 64}, {kMemory + 0x1000, 64}});
  rig.driver.post({{table, 32, VRING_DESC_F_INDIRECT}});
  expectFault(rig, false, QueueFault::kAddressOutOfBounds, "descriptor buffer 0x201000+64 is outside guest memory");
}

TEST("packed fault bad-direction: a write-only descriptor in a transmit chain") {
  PackedRig rig;
  rig.start();
  rig.driver.post({{rig.buffer(kHdr), kHdr}, {rig.buffer(64), 64, VRING_DESC_F_WRITE}});
  expectFault(rig, false, QueueFault::kBadDirection, "write-only descriptor in a transmit chain");
}

TEST("packed fault bad-direction: a write-only entry in an indirect transmit table") {
  PackedRig rig;
  rig.start();
  const uint64_t table = rig.buffers.take(32);
  PackedDriver::writeTable(rig.memory, table, {{rig.buffer(64), 64}, {rig.buffer(64), 64, VRING_DESC_F_WRITE}});
  rig.driver.post({{table, 32, VRING_DESC_F_INDIRECT}});
  expectFault(rig, false, QueueFault::kBadDirection, "write-only descriptor in a transmit chain");
}

TEST("packed fault bad-direction: a read-only descriptor in a receive chain") {
  PackedRig rig;
  rig.start();
  rig.driver.post({{rig.buffers.take(2048), 2048}});
  expectFault(rig, true, QueueFault::kBadDirection, "read-only descriptor in a receive chain");
}

TEST("packed fault bad-direction: a readable entry after a writable one in an indirect request/reply table") {
  PackedRig rig;
  rig.start();
  const uint64_t table = rig.buffers.take(48);
  PackedDriver::writeTable(rig.memory, table, {{rig.buffer(16), 16}, {rig.buffer(8), 8, VRING_DESC_F_WRITE}, {rig.buffer(16), 16}});
  rig.driver.post({{table, 48, VRING_DESC_F_INDIRECT}});
  Chain chain;
  int readable = 0;
  CHECK_EQ(rig.queue.popMixed(rig.iov.data(), 64, &chain, &readable), PopResult::kBroken);
  CHECK_EQ(rig.queue.fault(), QueueFault::kBadDirection);
  CHECK_EQ(rig.queue.brokenReason(), std::string("read-only descriptor after a write-only one"));
}

TEST("packed fault chain-too-large: an indirect table of four 1 GiB entries (2^32 bytes) pops; one more byte does not") {
  TestMemory memory({{0, kMiB}, {1ull << 30, 1ull << 30}});
  PackedDriver driver(memory, kRingAt, 8);
  QueueConfig config = driver.config();
  config.indirectDesc = true;
  PackedQueue queue;
  REQUIRE(queue.setup(memory.map(), config).ok());
  std::vector<struct iovec> iov(16);
  const PackedDescSpec gib = {1ull << 30, 1u << 30};
  PackedDriver::writeTable(memory, kBuffersAt, {gib, gib, gib, gib});
  driver.post({{kBuffersAt, 64, VRING_DESC_F_INDIRECT, 1}});
  Chain chain;
  REQUIRE_EQ(queue.pop(false, iov.data(), 16, &chain), PopResult::kChain);
  CHECK_EQ(chain.bytes, 1ull << 32);
  PackedDriver::writeTable(memory, kBuffersAt + 0x100, {gib, gib, gib, gib, {kBuffersAt, 1}});
  driver.post({{kBuffersAt + 0x100, 80, VRING_DESC_F_INDIRECT, 2}});
  CHECK_EQ(queue.pop(false, iov.data(), 16, &chain), PopResult::kBroken);
  CHECK_EQ(queue.fault(), QueueFault::kChainTooLarge);
  CHECK_EQ(queue.brokenReason(), std::string("descriptor chain is longer than 2^32 bytes"));
}

}  // namespace
}  // namespace vhost_tap_test
