// The split ring walker (native/core/split_queue.*, virtio 1.2 2.7) against a
// raw driver: what it pops (direct, chained and indirect chains, across
// regions, across the 16-bit wrap of the indices), what it writes back, event
// suppression, and every fault a malformed ring makes it report. The malformed
// shapes are those of test/malformed.test.ts, here without root, a tap or a
// thread: each case asserts the QueueFault and that the queue stays stopped
// where it was.
#include <cstring>
#include <string>
#include <vector>

#include "mock_driver.h"
#include "queue_rig.h"
#include "split_queue.h"
#include "test_support.h"

namespace vhost_tap_test {
namespace {

using vhost_tap::Status;
using vhost_tap::Chain;
using vhost_tap::PopResult;
using vhost_tap::QueueConfig;
using vhost_tap::QueueFault;
using vhost_tap::SplitQueue;
using vhost_tap::VRING_DESC_F_INDIRECT;
using vhost_tap::VRING_DESC_F_NEXT;
using vhost_tap::VRING_DESC_F_WRITE;
using vhost_tap::VringUsedElem;

constexpr uint64_t kMiB = 1ull << 20;
// Regions: [0, 1 MiB) and [1 MiB, 2 MiB) adjacent, then a gap, then [4 MiB, 5 MiB).
constexpr uint64_t kSecond = 1 * kMiB;
constexpr uint64_t kGap = 2 * kMiB;
constexpr uint64_t kFar = 4 * kMiB;
constexpr uint64_t kRingAt = 0x1000;
constexpr uint64_t kBuffersAt = 0x40000;

struct SplitRig : QueueRig<SplitQueue, SplitDriver> {
  // Three regions with a gap, so chains can cross and miss region edges; buffers in the first.
  explicit SplitRig(uint32_t size = 16, bool indirect = true, bool eventIdx = false)
      : QueueRig({{0, kMiB}, {kSecond, kMiB}, {kFar, kMiB}}, kRingAt, Arena(kBuffersAt, kMiB), size, indirect, eventIdx) {}
};

// The chain must break the queue with `fault`, leave the ring base where it was,
// and keep the queue stopped: popping again reports the same, touching nothing.
void expectFault(SplitRig& rig, bool deviceWrites, QueueFault fault, const std::string& reason) {
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

// ---- chains that pop ----

TEST("split: a one-descriptor chain pops as one iovec onto the guest's bytes; its used entry names the head") {
  SplitRig rig;
  rig.start();
  Chain chain;
  CHECK_EQ(rig.pop(false, &chain), PopResult::kEmpty);
  CHECK(!rig.queue.hasAvail());
  const uint64_t buf = rig.buffer(100, 7);
  const uint16_t head = rig.driver.addChain({{buf, 100}});
  CHECK(rig.queue.hasAvail());
  REQUIRE_EQ(rig.pop(false, &chain), PopResult::kChain);
  CHECK_EQ(chain.head, head);
  CHECK_EQ(chain.iovCount, 1);
  CHECK_EQ(chain.bytes, 100u);
  CHECK(gather(rig.iov.data(), chain.iovCount) == pattern(100, 7));
  CHECK_EQ(rig.queue.ringBase(), 1u);
  CHECK_EQ(rig.pop(false, &chain), PopResult::kEmpty);

  CHECK(!rig.queue.flushUsed());  // nothing pushed
  rig.queue.pushUsed(head, 0);
  CHECK_EQ(rig.driver.usedIdx(), 0);  // not before the flush
  CHECK(rig.queue.flushUsed());
  VringUsedElem used;
  REQUIRE(rig.driver.takeUsed(&used));
  CHECK_EQ(used.id, static_cast<uint32_t>(head));
  CHECK_EQ(used.len, 0u);
  CHECK_EQ(rig.driver.usedIdx(), 1);
  CHECK_EQ(rig.queue.fault(), QueueFault::kNone);
}

TEST("split: a three-descriptor chain, one buffer straddling two adjacent regions, pops in order as four iovecs") {
  SplitRig rig;
  rig.start();
  // The second buffer starts 40 bytes before the end of the first region.
  const std::vector<uint8_t> a = pattern(64, 1), b = pattern(100, 2), c = pattern(30, 3);
  rig.memory.write(kBuffersAt, a.data(), a.size());
  rig.memory.write(kSecond - 40, b.data(), 40);
  rig.memory.write(kSecond, b.data() + 40, 60);
  rig.memory.write(kFar + 0x100, c.data(), c.size());
  rig.driver.addChain({{kBuffersAt, 64}, {kSecond - 40, 100}, {kFar + 0x100, 30}});
  Chain chain;
  REQUIRE_EQ(rig.pop(false, &chain), PopResult::kChain);
  CHECK_EQ(chain.iovCount, 4);
  CHECK_EQ(chain.bytes, 194u);
  CHECK_EQ(rig.iov[1].iov_len, 40u);
  CHECK_EQ(rig.iov[2].iov_len, 60u);
  std::vector<uint8_t> want = a;
  want.insert(want.end(), b.begin(), b.end());
  want.insert(want.end(), c.begin(), c.end());
  CHECK(gather(rig.iov.data(), chain.iovCount) == want);
}

TEST("split: an indirect table pops like a chain; popMixed counts the readable iovecs before the writable ones") {
  SplitRig rig;
  rig.start();
  const uint64_t request = rig.buffer(16, 1), data = rig.buffer(48, 2), reply = rig.buffer(8, 3);
  const uint64_t table = rig.buffers.take(48);
  SplitDriver::writeTable(rig.memory, table,
                          {{request, 16, VRING_DESC_F_NEXT, 1}, {data, 48, VRING_DESC_F_NEXT, 2}, {reply, 8, VRING_DESC_F_WRITE, 0}});
  const uint16_t head = rig.driver.addChain({{table, 48, VRING_DESC_F_INDIRECT}});
  Chain chain;
  int readable = -1;
  REQUIRE_EQ(rig.queue.popMixed(rig.iov.data(), 64, &chain, &readable), PopResult::kChain);
  CHECK_EQ(chain.head, head);
  CHECK_EQ(chain.iovCount, 3);
  CHECK_EQ(readable, 2);
  CHECK_EQ(chain.bytes, 72u);
  CHECK(rig.iov[2].iov_base == rig.memory.map()->translate(reply, 8));

  // A transmit chain through an indirect table: all readable.
  const uint64_t table2 = rig.buffers.take(32);
  SplitDriver::writeTable(rig.memory, table2, {{request, 16, VRING_DESC_F_NEXT, 1}, {data, 48, 0, 0}});
  rig.driver.addChain({{table2, 32, VRING_DESC_F_INDIRECT}});
  REQUIRE_EQ(rig.pop(false, &chain), PopResult::kChain);
  CHECK_EQ(chain.iovCount, 2);
  CHECK_EQ(chain.bytes, 64u);
}

TEST("split: a chain needing more iovecs than offered is not consumed (kNoRoom) and pops whole once there is room") {
  SplitRig rig;
  rig.start();
  rig.driver.addChain({{rig.buffer(10), 10}, {rig.buffer(10), 10}, {rig.buffer(10), 10}});
  Chain chain;
  CHECK_EQ(rig.pop(false, &chain, 2), PopResult::kNoRoom);
  CHECK_EQ(rig.queue.ringBase(), 0u);
  CHECK(!rig.queue.broken());
  CHECK_EQ(rig.pop(false, &chain, 3), PopResult::kChain);
  CHECK_EQ(chain.iovCount, 3);
  CHECK_EQ(rig.queue.ringBase(), 1u);
}

TEST("split: the available and used indices wrap at 2^16 (ring base 65530, 40 chains)") {
  SplitRig rig(8);
  rig.driver.startAt(65530);
  rig.config.lastAvailIdx = 65530;
  rig.start();
  for (uint32_t k = 0; k < 40; k++) {
    // One to three descriptors, some chains outstanding at once.
    const uint32_t n = 1 + k % 3;
    std::vector<SplitDesc> descs;
    for (uint32_t i = 0; i < n; i++) descs.push_back({rig.buffers.take(16), 16});
    const uint16_t head = rig.driver.addChain(descs);
    Chain chain;
    REQUIRE_EQ(rig.pop(false, &chain), PopResult::kChain);
    CHECK_EQ(chain.head, head);
    CHECK_EQ(chain.iovCount, static_cast<int>(n));
    rig.queue.pushUsed(chain.head, k);
    CHECK(rig.queue.flushUsed());
    VringUsedElem used;
    REQUIRE(rig.driver.takeUsed(&used));
    CHECK_EQ(used.id, static_cast<uint32_t>(head));
    CHECK_EQ(used.len, k);
    CHECK_EQ(rig.queue.ringBase(), (65530u + k + 1) & 0xffff);
  }
  CHECK_EQ(rig.driver.usedIdx(), static_cast<uint16_t>(65530 + 40));
  CHECK_EQ(rig.queue.ringBase(), 34u);
}

TEST("split: unpop gives back the last chains popped, and they pop again the same") {
  SplitRig rig;
  rig.start();
  uint16_t heads[3];
  for (int i = 0; i < 3; i++) heads[i] = rig.driver.addChain({{rig.buffer(32, i), 32}, {rig.buffer(8, i), 8}});
  Chain chain;
  for (int i = 0; i < 3; i++) REQUIRE_EQ(rig.pop(false, &chain), PopResult::kChain);
  rig.queue.unpop(2);
  CHECK_EQ(rig.queue.ringBase(), 1u);
  REQUIRE_EQ(rig.pop(false, &chain), PopResult::kChain);
  CHECK_EQ(chain.head, heads[1]);
  std::vector<uint8_t> second = pattern(32, 1), tail = pattern(8, 1);
  second.insert(second.end(), tail.begin(), tail.end());
  CHECK(gather(rig.iov.data(), chain.iovCount) == second);
  REQUIRE_EQ(rig.pop(false, &chain), PopResult::kChain);
  CHECK_EQ(chain.head, heads[2]);
}

// ---- notifications ----

TEST("split: without event idx, needsCall follows VRING_AVAIL_F_NO_INTERRUPT and disable/enableNotify set VRING_USED_F_NO_NOTIFY") {
  SplitRig rig(16, false, false);
  rig.start();
  rig.queue.disableNotify();
  CHECK_EQ(rig.driver.usedFlags(), vhost_tap::VRING_USED_F_NO_NOTIFY);
  CHECK(!rig.queue.enableNotify());  // nothing waiting
  CHECK_EQ(rig.driver.usedFlags(), 0);
  rig.driver.addChain({{rig.buffer(8), 8}});
  rig.queue.disableNotify();
  CHECK(rig.queue.enableNotify());  // a chain came meanwhile: the caller must go on

  CHECK(rig.queue.needsCall());
  rig.driver.setAvailFlags(vhost_tap::VRING_AVAIL_F_NO_INTERRUPT);
  CHECK(!rig.queue.needsCall());
  rig.driver.setAvailFlags(0);
  CHECK(rig.queue.needsCall());
}

TEST("split: with event idx, enableNotify writes avail_event, and needsCall calls once used->idx passes used_event") {
  SplitRig rig(16, false, true);
  rig.start();
  Chain chain;
  for (int i = 0; i < 6; i++) rig.driver.addChain({{rig.buffer(8), 8}});
  auto complete = [&](int n) {
    for (int i = 0; i < n; i++) {
      REQUIRE_EQ(rig.pop(false, &chain), PopResult::kChain);
      rig.queue.pushUsed(chain.head, 0);
    }
    rig.queue.flushUsed();
  };
  CHECK(rig.queue.enableNotify());  // six are waiting
  CHECK_EQ(rig.driver.availEvent(), 0);
  CHECK(rig.queue.needsCall());  // the first look: nothing signalled yet, so call
  rig.driver.setUsedEvent(3);     // "call me when used->idx passes 3" (2.7.10)
  complete(1);                    // used 0 -> 1
  CHECK(!rig.queue.needsCall());
  complete(2);                    // 1 -> 3: entry 3 not yet used
  CHECK(!rig.queue.needsCall());
  complete(1);                    // 3 -> 4: passed it
  CHECK(rig.queue.needsCall());
  CHECK(!rig.queue.needsCall());  // nothing new since
  rig.driver.setUsedEvent(4);
  complete(2);
  CHECK(rig.queue.needsCall());
  rig.queue.disableNotify();     // with event idx: avail_event is left alone
  CHECK_EQ(rig.driver.availEvent(), 0);
  CHECK(!rig.queue.enableNotify());
  CHECK_EQ(rig.driver.availEvent(), 6);  // kick me when entry 6 is made available
}

TEST("split: setup refuses a size that is not a power of two, misaligned rings, rings outside memory, a 17-bit base, a packed config") {
  SplitRig rig;
  auto refused = [&](QueueConfig c, const std::string& says) {
    SplitQueue q;
    Status ready = q.setup(rig.memory.map(), c);
    CHECK(!ready);
    CHECK_EQ(ready.err, EINVAL);
    const std::string& error = ready.message;
    if (error.find(says) == std::string::npos) recordFailure(__FILE__, __LINE__, "error \"" + error + "\" does not say \"" + says + "\"");
  };
  QueueConfig c = rig.config;
  c.size = 12;
  refused(c, "power of two");
  c = rig.config;
  c.size = 65536;
  refused(c, "power of two");
  c = rig.config;
  c.descAddr += 8;
  refused(c, "misaligned");
  c = rig.config;
  c.usedAddr += 2;
  refused(c, "misaligned");
  c = rig.config;
  c.usedAddr = kGap;
  refused(c, "used ring is not inside guest memory");
  c = rig.config;
  c.descAddr = kSecond - 128;  // runs over the region edge: one ring must be in one region
  refused(c, "descriptor table is not inside guest memory");
  c = rig.config;
  c.lastAvailIdx = 0x10000;
  refused(c, "16-bit");
  c = rig.config;
  c.packed = true;
  refused(c, "packed");
  SplitQueue ok;
  CHECK(ok.setup(rig.memory.map(), rig.config).ok());
}

// ---- faults: every QueueFault the split walker reports ----

TEST("split fault avail-index-jump: the available index moves by more than the queue size") {
  SplitRig rig;
  rig.start();
  rig.driver.writeDescs(0, {{rig.buffer(64), 64}});
  for (uint32_t s = 0; s < 16; s++) rig.driver.setSlot(s, 0);
  rig.driver.setAvailIdx(17);
  expectFault(rig, false, QueueFault::kAvailIndexJump, "available index jumped by 17, more than the queue size 16");
}

TEST("split fault avail-index-jump: 2^15 ahead of a device that has moved on") {
  SplitRig rig;
  rig.start();
  Chain chain;
  for (int i = 0; i < 5; i++) rig.driver.addChain({{rig.buffer(8), 8}});
  for (int i = 0; i < 5; i++) REQUIRE_EQ(rig.pop(false, &chain), PopResult::kChain);
  rig.driver.setAvailIdx(static_cast<uint16_t>(5 + 0x8000));
  expectFault(rig, false, QueueFault::kAvailIndexJump, "available index jumped by 32768");
}

TEST("split fault head-out-of-range: the available ring names a descriptor past the table") {
  SplitRig rig;
  rig.start();
  rig.driver.publish(16 + 3);
  expectFault(rig, false, QueueFault::kHeadOutOfRange, "available ring names descriptor 19 of 16");
}

TEST("split fault next-out-of-range: a descriptor's next is past the table") {
  SplitRig rig;
  rig.start();
  rig.driver.writeDescs(0, {{rig.buffer(64), 64, VRING_DESC_F_NEXT, 16 + 6}});
  rig.driver.publish(0);
  expectFault(rig, false, QueueFault::kNextOutOfRange, "descriptor next 22 is past its table");
}

TEST("split fault next-out-of-range: a next past the end of an indirect table (not of the ring's)") {
  SplitRig rig;
  rig.start();
  const uint64_t table = rig.buffers.take(32);
  // next 2 is inside the ring's table of 16, but past this table of 2.
  SplitDriver::writeTable(rig.memory, table, {{rig.buffer(8), 8, VRING_DESC_F_NEXT, 1}, {rig.buffer(8), 8, VRING_DESC_F_NEXT, 2}});
  rig.driver.addChain({{table, 32, VRING_DESC_F_INDIRECT}});
  expectFault(rig, false, QueueFault::kNextOutOfRange, "descriptor next 2 is past its table");
}

TEST("split fault chain-too-long: a chain that loops (next points back)") {
  SplitRig rig;
  rig.start();
  rig.driver.writeDescs(0, {{rig.buffer(64), 64, VRING_DESC_F_NEXT, 1}, {rig.buffer(64), 64, VRING_DESC_F_NEXT, 0}});
  rig.driver.publish(0);
  expectFault(rig, false, QueueFault::kChainTooLong, "descriptor chain is longer than its table or loops");
}

TEST("split fault chain-too-long: a receive chain that loops through zero-length descriptors") {
  SplitRig rig;
  rig.start();
  // Zero-length descriptors take no iovec: only the walk's bound stops them.
  rig.driver.writeDescs(3, {{rig.buffer(8), 0, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 3}});
  rig.driver.publish(3);
  expectFault(rig, true, QueueFault::kChainTooLong, "loops");
}

TEST("split fault chain-too-long: a loop inside an indirect table") {
  SplitRig rig;
  rig.start();
  const uint64_t table = rig.buffers.take(32);
  SplitDriver::writeTable(rig.memory, table, {{rig.buffer(8), 8, VRING_DESC_F_NEXT, 1}, {rig.buffer(8), 8, VRING_DESC_F_NEXT, 0}});
  rig.driver.addChain({{table, 32, VRING_DESC_F_INDIRECT}});
  expectFault(rig, false, QueueFault::kChainTooLong, "loops");
}

TEST("split fault chain-too-large: four 1 GiB descriptors (exactly 2^32 bytes) pop; one byte more does not") {
  // 2.7.5.1: a used element's len is 32 bits. The descriptors overlap in a sparse
  // 1 GiB region: each is inside guest memory, the chain's total is what is too large.
  TestMemory memory({{0, kMiB}, {1ull << 30, 1ull << 30}});
  SplitDriver driver(memory, kRingAt, 16);
  SplitQueue queue;
  REQUIRE(queue.setup(memory.map(), driver.config()).ok());
  std::vector<struct iovec> iov(16);
  const SplitDesc gib = {1ull << 30, 1u << 30};
  driver.addChain({gib, gib, gib, gib});
  Chain chain;
  REQUIRE_EQ(queue.pop(false, iov.data(), 16, &chain), PopResult::kChain);
  CHECK_EQ(chain.bytes, 1ull << 32);
  CHECK_EQ(chain.iovCount, 4);
  driver.addChain({gib, gib, gib, gib, {kBuffersAt, 1}});
  CHECK_EQ(queue.pop(false, iov.data(), 16, &chain), PopResult::kBroken);
  CHECK_EQ(queue.fault(), QueueFault::kChainTooLarge);
  CHECK_EQ(queue.brokenReason(), std::string("descriptor chain is longer than 2^32 bytes"));
  CHECK_EQ(queue.ringBase(), 1u);
}

TEST("split fault bad-direction: a write-only descriptor in a transmit chain") {
  SplitRig rig;
  rig.start();
  rig.driver.addChain({{rig.buffer(64), 64}, {rig.buffer(64), 64, VRING_DESC_F_WRITE}});
  expectFault(rig, false, QueueFault::kBadDirection, "write-only descriptor in a transmit chain");
}

TEST("split fault bad-direction: a read-only descriptor in a receive chain") {
  SplitRig rig;
  rig.start();
  rig.driver.addChain({{rig.buffer(2048), 2048}});
  expectFault(rig, true, QueueFault::kBadDirection, "read-only descriptor in a receive chain");
}

TEST("split fault bad-direction: a readable descriptor after a writable one in a request/reply chain") {
  SplitRig rig;
  rig.start();
  rig.driver.addChain({{rig.buffer(16), 16}, {rig.buffer(8), 8, VRING_DESC_F_WRITE}, {rig.buffer(16), 16}});
  Chain chain;
  int readable = 0;
  CHECK_EQ(rig.queue.popMixed(rig.iov.data(), 64, &chain, &readable), PopResult::kBroken);
  CHECK_EQ(rig.queue.fault(), QueueFault::kBadDirection);
  CHECK_EQ(rig.queue.brokenReason(), std::string("read-only descriptor after a write-only one"));
  CHECK_EQ(rig.queue.ringBase(), 0u);
}

TEST("split fault bad-indirect: an indirect descriptor when VIRTIO_RING_F_INDIRECT_DESC was not negotiated") {
  SplitRig rig(16, false);
  rig.start();
  const uint64_t table = rig.buffers.take(16);
  SplitDriver::writeTable(rig.memory, table, {{rig.buffer(64), 64}});
  rig.driver.addChain({{table, 16, VRING_DESC_F_INDIRECT}});
  expectFault(rig, false, QueueFault::kBadIndirect, "indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC");
}

TEST("split fault bad-indirect: an indirect table inside an indirect table") {
  SplitRig rig;
  rig.start();
  const uint64_t outer = rig.buffers.take(16), inner = rig.buffers.take(32);
  SplitDriver::writeTable(rig.memory, inner, {{rig.buffer(64), 64, VRING_DESC_F_NEXT, 1}, {rig.buffer(64), 64}});
  SplitDriver::writeTable(rig.memory, outer, {{inner, 32, VRING_DESC_F_INDIRECT}});
  rig.driver.addChain({{outer, 16, VRING_DESC_F_INDIRECT}});
  expectFault(rig, false, QueueFault::kBadIndirect, "indirect descriptor inside an indirect table");
}

TEST("split fault bad-indirect: an indirect descriptor that also has NEXT") {
  SplitRig rig;
  rig.start();
  const uint64_t table = rig.buffers.take(16);
  SplitDriver::writeTable(rig.memory, table, {{rig.buffer(64), 64}});
  rig.driver.writeDescs(0, {{table, 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT, 1}, {rig.buffer(64), 64}});
  rig.driver.publish(0);
  expectFault(rig, false, QueueFault::kBadIndirect, "indirect descriptor with the NEXT flag");
}

TEST("split fault bad-indirect: an indirect table whose length is not a multiple of 16 (24, and 0)") {
  for (uint32_t len : {24u, 0u}) {
    SplitRig rig;
    rig.start();
    const uint64_t table = rig.buffers.take(32);
    SplitDriver::writeTable(rig.memory, table, {{rig.buffer(64), 64}, {rig.buffer(64), 64}});
    rig.driver.addChain({{table, len, VRING_DESC_F_INDIRECT}});
    expectFault(rig, false, QueueFault::kBadIndirect, "indirect table length " + std::to_string(len) + " is not a multiple of 16");
  }
}

TEST("split fault bad-indirect: an indirect table of more descriptors than the queue size (zero-length ones)") {
  SplitRig rig;
  rig.start();
  const uint64_t table = rig.buffers.take(16 * 17);
  std::vector<SplitDesc> entries;
  for (uint16_t i = 0; i < 17; i++) entries.push_back({kBuffersAt, i < 16 ? 0u : 64u, static_cast<uint16_t>(i < 16 ? VRING_DESC_F_NEXT : 0), static_cast<uint16_t>(i + 1)});
  SplitDriver::writeTable(rig.memory, table, entries);
  rig.driver.addChain({{table, 16 * 17, VRING_DESC_F_INDIRECT}});
  expectFault(rig, false, QueueFault::kBadIndirect, "indirect table of 17 descriptors is larger than the queue size 16");
}

TEST("split fault bad-indirect: an indirect table that is not 16-byte aligned") {
  SplitRig rig;
  rig.start();
  const uint64_t table = rig.buffers.take(48) + 8;
  SplitDriver::writeTable(rig.memory, table, {{rig.buffer(64), 64}, {rig.buffer(64), 64}});
  rig.driver.addChain({{table, 32, VRING_DESC_F_INDIRECT}});
  expectFault(rig, false, QueueFault::kBadIndirect, "indirect table is not 16-byte aligned");
}

TEST("split fault address-out-of-bounds: a buffer past the end of guest memory") {
  SplitRig rig;
  rig.start();
  rig.driver.addChain({{rig.memory.end() + 0x100000, 200}});
  expectFault(rig, false, QueueFault::kAddressOutOfBounds, "descriptor buffer 0x600000+200 is outside guest memory");
}

TEST("split fault address-out-of-bounds: a buffer near 2^64, where addr + len wraps") {
  SplitRig rig;
  rig.start();
  rig.driver.addChain({{0xfffffffffffffff0ull, 4096}});
  expectFault(rig, false, QueueFault::kAddressOutOfBounds, "descriptor buffer 0xfffffffffffffff0+4096 is outside guest memory");
}

TEST("split fault address-out-of-bounds: a buffer that runs past the end of the last region") {
  SplitRig rig;
  rig.start();
  rig.driver.addChain({{rig.memory.end() - 64, 128}});
  expectFault(rig, false, QueueFault::kAddressOutOfBounds, "is outside guest memory");
}

TEST("split fault address-out-of-bounds: a buffer that runs from a region into the gap after it") {
  SplitRig rig;
  rig.start();
  rig.driver.addChain({{kGap - 50, 100}});
  expectFault(rig, false, QueueFault::kAddressOutOfBounds, "is outside guest memory");
}

TEST("split fault address-out-of-bounds: a receive buffer in the gap between regions") {
  SplitRig rig;
  rig.start();
  rig.driver.addChain({{kGap + 0x1000, 2048, VRING_DESC_F_WRITE}});
  expectFault(rig, true, QueueFault::kAddressOutOfBounds, "descriptor buffer 0x201000+2048 is outside guest memory");
}

TEST("split fault address-out-of-bounds: an indirect table outside guest memory") {
  SplitRig rig;
  rig.start();
  // 16-aligned, starting inside guest memory and ending past it.
  rig.driver.addChain({{rig.memory.end() - 32, 64, VRING_DESC_F_INDIRECT}});
  expectFault(rig, false, QueueFault::kAddressOutOfBounds, "indirect table is not inside guest memory");
}

TEST("split: a broken queue does not touch another queue of the same memory") {
  SplitRig rig;
  rig.start();
  SplitDriver other(rig.memory, kFar, 16);
  SplitQueue otherQueue;
  REQUIRE(otherQueue.setup(rig.memory.map(), other.config()).ok());
  rig.driver.publish(200);
  expectFault(rig, false, QueueFault::kHeadOutOfRange, "names descriptor 200");
  other.addChain({{rig.buffer(8), 8}});
  Chain chain;
  CHECK_EQ(otherQueue.pop(false, rig.iov.data(), 64, &chain), PopResult::kChain);
  CHECK_EQ(otherQueue.fault(), QueueFault::kNone);
}

}  // namespace
}  // namespace vhost_tap_test
