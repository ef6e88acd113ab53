// Writes the seed corpora: valid rings of both layouts (and a few broken ones)
// in each target's input encoding. `fuzz_seeds DIR` writes DIR/<target>/<name>.
// The corpora in native/fuzz/corpus are its output plus any reproducer a
// finding left (named repro-*), which this program never overwrites.
#include <sys/stat.h>

#include <cstdio>
#include <functional>
#include <string>

#include "fuzz_support.h"
#include "vring.h"

using namespace vhost_tap;
using namespace vhost_tap::fuzz;

namespace {

std::string root;
int written = 0;

void save(const char* target, const char* name, const Output& o) {
  const std::string dir = root + "/" + target;
  mkdir(root.c_str(), 0755);
  mkdir(dir.c_str(), 0755);
  const std::string path = dir + "/" + name;
  FILE* f = fopen(path.c_str(), "wb");
  if (!f || fwrite(o.data().data(), 1, o.data().size(), f) != o.data().size() || fclose(f) != 0) {
    perror(path.c_str());
    exit(1);
  }
  written++;
}

RingSpec spec(uint16_t size, uint8_t flags, uint64_t desc, uint64_t avail, uint64_t used, uint32_t base) {
  RingSpec s;
  s.size = size;
  s.flags = flags;
  s.desc = desc;
  s.avail = avail;
  s.used = used;
  s.base = base;
  return s;
}

// Ring target operations.
void write(Output& o, uint32_t gpa, const void* p, uint16_t n) {
  o.u8(kOpWrite);
  o.u32(gpa);
  o.u16(n);
  o.bytes(p, n);
}
void write16(Output& o, uint32_t gpa, uint16_t v) { write(o, gpa, &v, 2); }
void splitDescOperands(Output& o, uint16_t index, uint32_t addr, uint32_t len, uint16_t flags, uint16_t next) {
  o.u16(index);
  o.u32(addr);
  o.u32(len);
  o.u16(flags);
  o.u16(next);
}
void splitDesc(Output& o, uint16_t index, uint32_t addr, uint32_t len, uint16_t flags, uint16_t next) {
  o.u8(kOpDesc);
  splitDescOperands(o, index, addr, len, flags, next);
}
void splitPublish(Output& o, uint16_t head) {
  o.u8(kOpPublish);
  o.u16(head);
}
constexpr uint8_t kNext = 1, kWrite = 2, kIndirect = 4, kOtherLap = 8;
void packedPublishOperands(Output& o, uint32_t addr, uint32_t len, uint16_t id, uint8_t bits) {
  o.u32(addr);
  o.u32(len);
  o.u16(id);
  o.u8(bits);
}
void packedPublish(Output& o, uint32_t addr, uint32_t len, uint16_t id, uint8_t bits) {
  o.u8(kOpPublish);
  packedPublishOperands(o, addr, len, id, bits);
}
void pop(Output& o, uint8_t mode, uint8_t maxIov = 255) {
  o.u8(kOpPop);
  o.u8(mode);
  o.u8(maxIov);
}
void push(Output& o, uint32_t len) {
  o.u8(kOpPushUsed);
  o.u32(len);
}
void op(Output& o, RingOp op) { o.u8(op); }
void unpop(Output& o, uint8_t n) {
  o.u8(kOpUnpop);
  o.u8(n);
}
void finish(Output& o) {
  op(o, kOpFlush);
  op(o, kOpNeedsCall);
  op(o, kOpEnableNotify);
  op(o, kOpHasAvail);
  op(o, kOpDisableNotify);
}

void splitSeeds() {
  const char* t = "split_queue";
  {
    Output o;
    spec(16, 0, 0x0, 0x100, 0x200, 0).write(o);
    splitDesc(o, 0, 0x2000, 64, VRING_DESC_F_NEXT, 1);
    splitDesc(o, 1, 0x3000, 100, 0, 0);
    splitPublish(o, 0);
    pop(o, 0);
    push(o, 0);
    finish(o);
    save(t, "tx-two-descriptors", o);
  }
  {
    Output o;
    spec(16, RingSpec::kEventIdx, 0x1000, 0x1100, 0x1200, 0).write(o);
    splitDesc(o, 0, 0x7f00, 0x200, VRING_DESC_F_WRITE, 0);  // across regions 0 and 1: two iovecs
    splitPublish(o, 0);
    op(o, kOpDisableNotify);
    pop(o, 1);
    push(o, 0x150);
    finish(o);
    pop(o, 1);
    save(t, "rx-across-regions-event-idx", o);
  }
  {
    Output o;
    spec(8, RingSpec::kIndirect, 0x0, 0x100, 0x200, 0).write(o);
    VringDesc table[3] = {{0x5000, 14, VRING_DESC_F_NEXT, 1}, {0x20100, 50, VRING_DESC_F_NEXT, 2}, {0x5200, 100, 0, 0}};
    write(o, 0x4000, table, sizeof table);
    splitDesc(o, 3, 0x4000, sizeof table, VRING_DESC_F_INDIRECT, 0);
    splitPublish(o, 3);
    pop(o, 0);
    push(o, 0);
    finish(o);
    save(t, "indirect-table", o);
  }
  {
    Output o;
    spec(4, 0, 0x0, 0x100, 0x200, 0).write(o);
    splitDesc(o, 0, 0x2000, 16, VRING_DESC_F_NEXT, 1);
    splitDesc(o, 1, 0x2100, 1, VRING_DESC_F_WRITE, 0);
    splitPublish(o, 0);
    pop(o, 2);
    push(o, 1);
    finish(o);
    save(t, "request-and-reply", o);
  }
  {
    Output o;
    spec(8, 0, 0x0, 0x100, 0x200, 0).write(o);
    splitDesc(o, 0, 0x2000, 60, 0, 0);
    splitDesc(o, 1, 0x2100, 60, 0, 0);
    splitPublish(o, 0);
    splitPublish(o, 1);
    pop(o, 0);
    pop(o, 0);
    unpop(o, 1);
    pop(o, 0, 0);  // no room
    pop(o, 0);
    push(o, 0);
    push(o, 0);
    finish(o);
    save(t, "unpop-and-no-room", o);
  }
  {
    Output o;
    spec(16, RingSpec::kDirtyLog | RingSpec::kEventIdx, 0x20000, 0x20100, 0x20200, 0).write(o);
    splitDesc(o, 0, 0x21000, 1500, VRING_DESC_F_WRITE, 0);
    splitPublish(o, 0);
    pop(o, 1);
    push(o, 1000);
    finish(o);
    save(t, "dirty-log", o);
  }
  {
    Output o;
    spec(4, 0, 0x0, 0x100, 0x200, 0xfffe).write(o);
    write16(o, 0x102, 0xfffe);  // avail idx
    write16(o, 0x202, 0xfffe);  // used idx
    for (uint16_t i = 0; i < 4; i++) splitDesc(o, i, 0x2000 + 0x100 * i, 64, 0, 0);
    for (uint16_t i = 0; i < 4; i++) splitPublish(o, i);
    for (int i = 0; i < 4; i++) pop(o, 0);
    for (int i = 0; i < 4; i++) push(o, 0);
    finish(o);
    save(t, "indexes-wrap", o);
  }
  {
    Output o;
    spec(8, 0, 0x0, 0x100, 0x200, 0).write(o);
    splitDesc(o, 0, 0x2000, 10, VRING_DESC_F_NEXT, 0);  // loops on itself
    splitPublish(o, 0);
    pop(o, 0);
    pop(o, 0);
    op(o, kOpFlush);
    save(t, "loop-breaks", o);
  }
  {
    Output o;
    spec(1024, RingSpec::kEventIdx | RingSpec::kIndirect, 0x0, 0x4000, 0x5000, 0).write(o);
    splitDesc(o, 1000, 0x8000, 100, VRING_DESC_F_NEXT, 1001);
    splitDesc(o, 1001, 0x8100, 100, VRING_DESC_F_NEXT, 1002);
    splitDesc(o, 1002, 0x20000, 100, 0, 0);
    splitPublish(o, 1000);
    pop(o, 0);
    push(o, 0);
    finish(o);
    save(t, "queue-of-1024", o);
  }
}

void packedSeeds() {
  const char* t = "packed_queue";
  {
    Output o;
    spec(16, 0, 0x0, 0x100, 0x104, 0x80008000).write(o);
    packedPublish(o, 0x2000, 64, 0, kNext);
    packedPublish(o, 0x3000, 100, 7, 0);
    pop(o, 0);
    push(o, 0);
    finish(o);
    save(t, "fresh-ring-chain", o);
  }
  {
    Output o;
    spec(16, 0, 0x0, 0x100, 0x104, 0x8000).write(o);  // bits 16-31 clear: used = avail
    packedPublish(o, 0x7f00, 0x200, 1, kWrite);
    pop(o, 1);
    push(o, 0x100);
    finish(o);
    save(t, "avail-half-only-rx", o);
  }
  {
    Output o;
    spec(8, RingSpec::kIndirect, 0x0, 0x100, 0x104, 0x80008000).write(o);
    PackedDesc table[2] = {{0x5000, 14, 0, 0}, {0x5100, 50, 0, VRING_DESC_F_WRITE}};
    write(o, 0x4000, table, sizeof table);
    packedPublish(o, 0x4000, sizeof table, 5, kIndirect);
    pop(o, 2);
    push(o, 20);
    finish(o);
    save(t, "indirect-table", o);
  }
  {
    Output o;
    spec(4, RingSpec::kEventIdx, 0x0, 0x100, 0x104, 0x80008000).write(o);
    for (int lap = 0; lap < 3; lap++) {
      for (uint16_t i = 0; i < 3; i++) packedPublish(o, 0x2000 + 0x100 * i, 64, i, 0);
      for (int i = 0; i < 3; i++) pop(o, 0);
      for (int i = 0; i < 3; i++) push(o, 0);
      finish(o);
    }
    save(t, "wrap-around", o);
  }
  {
    Output o;
    spec(8, RingSpec::kEventIdx, 0x0, 0x100, 0x104, 0x80008000).write(o);
    const uint16_t driverEvent[2] = {0x8002, RING_EVENT_FLAGS_DESC};  // call at used slot 2, wrap 1
    write(o, 0x100, driverEvent, sizeof driverEvent);
    for (uint16_t i = 0; i < 4; i++) packedPublish(o, 0x20000 + 0x100 * i, 64, i, kWrite);
    for (int i = 0; i < 4; i++) {
      pop(o, 1);
      push(o, 10);
      op(o, kOpFlush);
      op(o, kOpNeedsCall);
    }
    op(o, kOpEnableNotify);
    save(t, "event-idx", o);
  }
  {
    Output o;
    spec(8, 0, 0x0, 0x100, 0x104, 0x80028003).write(o);  // avail slot 3, used slot 2 (one in flight), both wrap 1
    packedPublish(o, 0x2000, 64, 1, 0);
    pop(o, 0);
    push(o, 0);
    finish(o);
    save(t, "base-with-one-in-flight", o);
  }
  {
    Output o;
    spec(8, 0, 0x0, 0x100, 0x104, 0x80008000).write(o);
    packedPublish(o, 0x2000, 64, 0, kNext);
    packedPublish(o, 0x2100, 64, 0, 0);
    packedPublish(o, 0x2200, 64, 1, 0);
    pop(o, 0);
    pop(o, 0);
    unpop(o, 2);
    pop(o, 0, 1);  // no room
    pop(o, 0);
    pop(o, 0);
    push(o, 0);
    push(o, 0);
    finish(o);
    save(t, "unpop-and-no-room", o);
  }
  {
    Output o;
    spec(16, RingSpec::kDirtyLog | RingSpec::kEventIdx, 0x20000, 0x20100, 0x20104, 0x80008000).write(o);
    packedPublish(o, 0x21000, 1500, 3, kWrite);
    pop(o, 1);
    push(o, 1000);
    finish(o);
    save(t, "dirty-log", o);
  }
  {
    Output o;
    spec(8, 0, 0x0, 0x100, 0x104, 0x80008000).write(o);
    packedPublish(o, 0x2000, 64, 0, kNext);
    packedPublish(o, 0x2100, 64, 0, kOtherLap);  // not available in this lap
    pop(o, 0);
    pop(o, 0);
    save(t, "chain-across-laps-breaks", o);
  }
  {
    Output o;
    // The used position kept in a file, 8 bytes in (a daemon that restarts resumes from it).
    spec(4, RingSpec::kPositionFile | (2 << 4), 0x0, 0x100, 0x104, 0x80008000).write(o);
    for (int lap = 0; lap < 2; lap++) {
      packedPublish(o, 0x2000, 64, 0, kNext);
      packedPublish(o, 0x2100, 64, 1, 0);
      packedPublish(o, 0x2200, 64, 2, 0);
      pop(o, 0);
      pop(o, 0);
      push(o, 0);
      push(o, 0);
      finish(o);
      packedPublish(o, 0x2300, 64, 3, 0);
      pop(o, 0);
      push(o, 0);
      op(o, kOpFlush);
    }
    save(t, "position-file", o);
  }
  {
    Output o;
    spec(5, 0, 0x0, 0x100, 0x104, 0x80008000).write(o);  // a packed ring need not be a power of two
    for (int lap = 0; lap < 3; lap++) {
      packedPublish(o, 0x2000, 64, 0, kNext);
      packedPublish(o, 0x2100, 64, 0, kNext);
      packedPublish(o, 0x2200, 64, 9, 0);
      pop(o, 0);
      push(o, 0);
      finish(o);
    }
    save(t, "size-5-chains-of-3", o);
  }
}

// Guest memory target.
void region(Output& o, uint8_t placement, uint64_t raw, uint32_t size, uint32_t offset) {
  o.u8(placement);
  o.u64(raw);
  o.u32(size);
  o.u32(offset);
}
void at(Output& o, uint8_t r, int32_t delta) {
  o.u8(r);
  o.u32(static_cast<uint32_t>(delta));
}

void guestMemorySeeds() {
  const char* t = "guest_memory";
  {
    Output o;
    o.u8(2);  // 3 regions
    region(o, 2, 0x100000, 0x3000, 0x1000);
    region(o, 0, 0, 0x2000, 0x8000);       // adjacent to the first
    region(o, 1, 0x5000, 0x1000, 0x123);  // after a gap, at an unaligned file offset
    o.u16(63);                             // 64 bytes of log
    o.u16(5);                              // at file offset 5
    o.u8(0), at(o, 0, 0x10), o.u32(0x100);            // translate inside
    o.u8(0), at(o, 0, 0x2f00), o.u32(0x200);          // across the boundary: refused
    o.u8(1), at(o, 0, 0x2f00), o.u32(0x200), o.u8(8); // translateIov: two iovecs
    o.u8(1), at(o, 0, 0x2f00), o.u32(0x200), o.u8(1); // one iovec is not enough
    o.u8(1), at(o, 1, 0x1f00), o.u32(0x200), o.u8(8); // into the gap
    o.u8(2), at(o, 1, 0x10);                          // guestAddress
    o.u8(2), at(o, 2, -1);
    o.u8(3), o.u64(0x100000), o.u64(0x5000);          // mark
    o.u8(4), o.u8(1);                                 // collect and clear
    o.u8(5), at(o, 0, 0x2f00), o.u32(0x200), o.u32(0x80), o.u32(0x100);  // logIovWrite
    o.u8(3), o.u64(~0ull - 0xfff), o.u64(0x2000);     // a range that wraps
    o.u8(4), o.u8(0);
    save(t, "three-regions", o);
  }
  {
    Output o;
    o.u8(0);  // 1 region, at the top of the address space
    region(o, 2, ~0ull - 0x1fff, 0x1000, 0x2000);
    o.u16(0xfff);
    o.u16(0);
    o.u8(0), at(o, 0, 0xfff), o.u32(1);
    o.u8(0), at(o, 0, 0x1000), o.u32(1);
    o.u8(0), o.u8(255), o.u64(~0ull), o.u32(1);
    o.u8(1), at(o, 0, 0), o.u32(0x1000), o.u8(1);
    o.u8(3), o.u64(~0ull - 0x1fff), o.u64(0x1000);
    o.u8(4), o.u8(1);
    save(t, "top-of-address-space", o);
  }
  {
    Output o;
    o.u8(5);  // 6 regions, adjacent, small and unaligned
    region(o, 2, 0x10000, 0x123, 0x0);
    region(o, 0, 0, 0x456, 0x1000);
    region(o, 0, 0, 0x789, 0x3000);
    region(o, 0, 0, 0x1000, 0x5000);
    region(o, 0, 0, 0x1, 0x7001);
    region(o, 0, 0, 0x2000, 0x9000);
    o.u16(7);
    o.u16(0x123);
    o.u8(1), at(o, 0, 0), o.u32(0x123 + 0x456 + 0x789 + 0x1000 + 1 + 0x2000), o.u8(8);
    o.u8(5), at(o, 0, 0x100), o.u32(0x3000), o.u32(0x10), o.u32(0x2000);
    o.u8(4), o.u8(1);
    save(t, "six-adjacent-regions", o);
  }
  {
    Output o;
    o.u8(1);  // 2 regions that overlap: refused
    region(o, 2, 0x1000, 0x2000, 0);
    region(o, 2, 0x2000, 0x1000, 0x4000);
    save(t, "overlapping-regions", o);
  }
}

// Worker target.
void phase(Output& o, const std::vector<std::vector<uint8_t>>& actions) {
  o.u8(static_cast<uint8_t>(actions.size()));
  for (const auto& a : actions) o.bytes(a.data(), a.size());
}
std::vector<uint8_t> act(const std::function<void(Output&)>& f) {
  Output o;
  f(o);
  return o.data();
}
std::vector<uint8_t> splitDescAction(uint8_t ring, uint16_t index, uint32_t addr, uint32_t len, uint16_t flags, uint16_t next) {
  return act([&](Output& o) {
    o.u8(2);
    o.u8(ring);
    splitDescOperands(o, index, addr, len, flags, next);
  });
}
std::vector<uint8_t> splitPublishAction(uint8_t ring, uint16_t head) {
  return act([&](Output& o) {
    o.u8(1);
    o.u8(ring);
    o.u16(head);
  });
}
std::vector<uint8_t> packedPublishAction(uint8_t ring, uint32_t addr, uint32_t len, uint16_t id, uint8_t bits) {
  return act([&](Output& o) {
    o.u8(1);
    o.u8(ring);
    packedPublishOperands(o, addr, len, id, bits);
  });
}
std::vector<uint8_t> frameAction(uint16_t len, uint8_t fill) {
  return act([&](Output& o) {
    o.u8(3);
    o.u16(len);
    o.u8(fill);
  });
}
std::vector<uint8_t> kickAction(uint8_t which) {
  return act([&](Output& o) {
    o.u8(4);
    o.u8(which);
  });
}
std::vector<uint8_t> writeAction(uint32_t gpa, const void* p, uint16_t n) {
  return act([&](Output& o) {
    o.u8(0);
    o.u32(gpa);
    o.u16(n);
    o.bytes(p, n);
  });
}

constexpr uint8_t kHdr12 = 1, kMergeable = 2, kPacked = 4, kDiscardOnly = 8, kCalls = 16, kMaxFrame = 32, kStopDiscardTx = 64,
                  kStopDrainRx = 128;

void workerHeader(Output& o, uint8_t opts, uint16_t reserve, uint16_t maxFrame, const RingSpec& rx, const RingSpec& tx) {
  o.u8(opts);
  o.u16(reserve);
  o.u16(maxFrame);
  rx.write(o);
  tx.write(o);
}

void workerSeeds() {
  const char* t = "queue_pair_worker";
  const uint8_t hdr[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0};
  {
    Output o;
    workerHeader(o, kHdr12 | kCalls, 0, 0, spec(16, 0, 0x0, 0x100, 0x200, 0), spec(16, 0, 0x1000, 0x1100, 0x1200, 0));
    std::vector<std::vector<uint8_t>> a;
    for (uint16_t i = 0; i < 4; i++) a.push_back(splitDescAction(0, i, 0x2000 + 0x800 * i, 0x800, VRING_DESC_F_WRITE, 0));
    for (uint16_t i = 0; i < 4; i++) a.push_back(splitPublishAction(0, i));
    a.push_back(writeAction(0x4000, hdr, 12));
    a.push_back(splitDescAction(1, 0, 0x4000, 12, VRING_DESC_F_NEXT, 1));
    a.push_back(splitDescAction(1, 1, 0x4100, 60, 0, 0));
    a.push_back(splitPublishAction(1, 0));
    a.push_back(frameAction(74, 0xaa));
    a.push_back(frameAction(200, 0xbb));
    a.push_back(frameAction(1500, 0xcc));
    a.push_back(kickAction(3));
    phase(o, a);
    phase(o, {frameAction(600, 0xdd), splitDescAction(1, 2, 0x7f00, 0x200, 0, 0), splitPublishAction(1, 2), kickAction(2)});
    save(t, "split-rx-and-tx", o);
  }
  {
    Output o;
    workerHeader(o, kHdr12 | kCalls | kMergeable | kPacked | kMaxFrame, 1526, 1526, spec(16, 0, 0x0, 0x100, 0x104, 0x80008000),
                 spec(16, RingSpec::kEventIdx, 0x1000, 0x1100, 0x1104, 0x80008000));
    std::vector<std::vector<uint8_t>> a;
    for (uint16_t i = 0; i < 4; i++) a.push_back(packedPublishAction(0, 0x2000 + 0x800 * i, 0x800, i, kWrite));
    a.push_back(packedPublishAction(1, 0x4000, 12, 0, kNext));
    a.push_back(packedPublishAction(1, 0x4100, 60, 0, 0));
    a.push_back(packedPublishAction(1, 0x7f00, 0x200, 1, 0));
    a.push_back(frameAction(74, 0xaa));
    a.push_back(frameAction(1500, 0xcc));
    a.push_back(kickAction(3));
    phase(o, a);
    phase(o, {frameAction(3000, 0xdd), packedPublishAction(0, 0x20000, 0x1000, 4, kWrite), kickAction(1)});
    save(t, "packed-mergeable-batched", o);
  }
  {
    Output o;
    workerHeader(o, kHdr12 | kMergeable, 0, 0, spec(16, RingSpec::kEventIdx, 0x0, 0x100, 0x200, 0),
                 spec(16, 0, 0x1000, 0x1100, 0x1200, 0));
    std::vector<std::vector<uint8_t>> a;
    for (uint16_t i = 0; i < 8; i++) a.push_back(splitDescAction(0, i, 0x2000 + 0x100 * i, 0x100, VRING_DESC_F_WRITE, 0));
    for (uint16_t i = 0; i < 8; i++) a.push_back(splitPublishAction(0, i));
    a.push_back(frameAction(1500, 0x11));
    a.push_back(frameAction(400, 0x22));
    a.push_back(kickAction(1));
    phase(o, a);
    phase(o, {splitPublishAction(0, 0), splitPublishAction(0, 1), kickAction(1)});
    save(t, "split-mergeable-small-buffers", o);
  }
  {
    Output o;
    workerHeader(o, kStopDiscardTx | kStopDrainRx, 0, 0, spec(8, 0, 0x0, 0x100, 0x200, 0), spec(8, 0, 0x1000, 0x1100, 0x1200, 0));
    std::vector<std::vector<uint8_t>> a;
    a.push_back(splitDescAction(0, 0, 0x2000, 0x800, VRING_DESC_F_WRITE, 0));
    a.push_back(splitPublishAction(0, 0));
    a.push_back(frameAction(100, 1));
    a.push_back(frameAction(100, 2));
    a.push_back(kickAction(1));
    phase(o, a);
    phase(o, {splitDescAction(1, 0, 0x4000, 100, 0, 0), splitPublishAction(1, 0)});  // no kick: discarded at stop
    save(t, "split-stop-discard-and-drain", o);
  }
  {
    Output o;
    workerHeader(o, kPacked | kDiscardOnly | kCalls, 0, 0, spec(8, 0, 0x0, 0x100, 0x104, 0x80008000),
                 spec(8, 0, 0x1000, 0x1100, 0x1104, 0x80008000));
    phase(o, {packedPublishAction(1, 0x4000, 100, 0, 0), packedPublishAction(1, 0x4100, 100, 1, 0), kickAction(2)});
    save(t, "packed-tx-discard-only", o);
  }
  {
    Output o;
    workerHeader(o, kHdr12 | kCalls | kMaxFrame, 0, 1526, spec(16, RingSpec::kEventIdx, 0x0, 0x100, 0x200, 0),
                 spec(16, RingSpec::kEventIdx | RingSpec::kIndirect, 0x1000, 0x1100, 0x1200, 0));
    VringDesc table[2] = {{0x4000, 12, VRING_DESC_F_NEXT, 1}, {0x4100, 1000, 0, 0}};
    std::vector<std::vector<uint8_t>> a;
    for (uint16_t i = 0; i < 8; i++) a.push_back(splitDescAction(0, i, 0x2000 + 0x600 * i, 0x600, VRING_DESC_F_WRITE, 0));
    for (uint16_t i = 0; i < 8; i++) a.push_back(splitPublishAction(0, i));
    a.push_back(writeAction(0x5000, table, sizeof table));
    a.push_back(splitDescAction(1, 5, 0x5000, sizeof table, VRING_DESC_F_INDIRECT, 0));
    a.push_back(splitPublishAction(1, 5));
    for (int i = 0; i < 6; i++) a.push_back(frameAction(static_cast<uint16_t>(60 + 200 * i), static_cast<uint8_t>(i)));
    a.push_back(kickAction(3));
    phase(o, a);
    save(t, "split-batched-rx-indirect-tx", o);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s CORPUS_DIR   (writes CORPUS_DIR/<target>/<seed>)\n", argv[0]);
    return 2;
  }
  root = argv[1];
  splitSeeds();
  packedSeeds();
  guestMemorySeeds();
  workerSeeds();
  printf("%d seeds written under %s\n", written, root.c_str());
  return 0;
}
