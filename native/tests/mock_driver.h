// The guest's side of virtqueues, in C++, for the unit tests of native/core:
// guest memory backed by memfds, and raw drivers of split (virtio 1.2 2.7) and
// packed (2.8) rings that write what they are told and check nothing, so a test
// can hand the device what a buggy or hostile guest would write, and read back
// exactly what the device wrote. The shapes follow test/helpers/raw-ring.ts and
// test/helpers/raw-packed-ring.ts.
//
// Ring fields the device reads concurrently (avail->idx, a packed descriptor's
// flags, event suppression) are stored with release semantics after what they
// publish, as a driver must (2.7.13, 2.8.21).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "guest_memory.h"
#include "queue_common.h"
#include "vring.h"

namespace vhost_tap_test {

// Guest memory as a VM has it: each region a memfd, mapped twice, once by the
// "guest" (the driver's view, through which the tests write rings and buffers)
// and once by the device (a GuestMemoryMap made from the fds, as the worker maps
// what a frontend sends). Throws std::runtime_error if anything fails.
class TestMemory {
 public:
  struct Region {
    uint64_t gpa;
    uint64_t size;
  };
  explicit TestMemory(const std::vector<Region>& regions);
  ~TestMemory();
  TestMemory(const TestMemory&) = delete;
  TestMemory& operator=(const TestMemory&) = delete;

  const std::shared_ptr<vhost_tap::GuestMemoryMap>& map() const { return map_; }
  // The driver's view of [gpa, gpa + len), which must lie in one region (else throws).
  uint8_t* at(uint64_t gpa, uint64_t len = 1) const;
  void write(uint64_t gpa, const void* data, uint64_t len) const;
  void fill(uint64_t gpa, uint8_t byte, uint64_t len) const;
  std::vector<uint8_t> read(uint64_t gpa, uint64_t len) const;
  // The first guest-physical address past the highest region.
  uint64_t end() const;
  // The memfd behind the region that holds `gpa` (for tests that map it their own way).
  int fdOf(uint64_t gpa) const;

 private:
  struct Backing {
    uint64_t gpa;
    uint64_t size;
    int fd;
    uint8_t* driverView;
  };
  std::vector<Backing> regions_;
  std::shared_ptr<vhost_tap::GuestMemoryMap> map_;
};

// Hands out guest-physical addresses from [from, to), aligned; throws when it runs out.
class Arena {
 public:
  Arena(uint64_t from, uint64_t to) : next_(from), end_(to) {}
  uint64_t take(uint64_t bytes, uint64_t align = 16);

 private:
  uint64_t next_;
  uint64_t end_;
};

// A split ring descriptor as the driver writes it.
struct SplitDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags = 0;
  uint16_t next = 0;
};

class SplitDriver {
 public:
  // Bytes a ring of `size` takes from its start: descriptor table, available ring
  // (with used_event), used ring (4-aligned, with avail_event).
  static uint64_t bytes(uint32_t size);
  // Lays the ring out at `gpa` (16-aligned) and zeroes it.
  SplitDriver(TestMemory& memory, uint64_t gpa, uint32_t size);

  // A QueueConfig for the device: size and addresses (features off, ring base 0).
  vhost_tap::QueueConfig config() const;
  uint32_t size() const { return size_; }
  uint64_t descAddr() const { return descAddr_; }
  uint64_t availAddr() const { return availAddr_; }
  uint64_t usedAddr() const { return usedAddr_; }

  // Writes descriptors into the ring's table from index `first`, as given.
  void writeDescs(uint32_t first, const std::vector<SplitDesc>& descs);
  // Writes descriptors at `gpa` (an indirect table), as given.
  static void writeTable(TestMemory& memory, uint64_t gpa, const std::vector<SplitDesc>& descs);
  // Writes `descs` at the next free table indices, linked with NEXT (all but the
  // last; an INDIRECT one as given), and makes the chain available. Returns its head.
  uint16_t addChain(std::vector<SplitDesc> descs);
  // Sets available ring entry `slot` to `head` (anything a u16 holds).
  void setSlot(uint32_t slot, uint16_t head);
  // Makes `head` available after what is there: the ring entry, then avail->idx.
  void publish(uint16_t head);
  uint16_t availIdx() const;
  void setAvailIdx(uint16_t idx);
  // Starts the ring at index `idx` as a driver that has run a while: avail->idx,
  // used->idx and the driver's own positions (a device is set up with ring base idx).
  void startAt(uint16_t idx);
  void setAvailFlags(uint16_t flags);
  void setUsedEvent(uint16_t idx);

  uint16_t usedIdx() const;
  uint16_t usedFlags() const;
  uint16_t availEvent() const;
  vhost_tap::VringUsedElem usedEntry(uint16_t idx) const;
  // Takes the next used element the device published, if there is one.
  bool takeUsed(vhost_tap::VringUsedElem* out);

 private:
  uint16_t* word(uint64_t gpa) const { return reinterpret_cast<uint16_t*>(memory_.at(gpa, 2)); }

  TestMemory& memory_;
  uint32_t size_;
  uint64_t descAddr_;
  uint64_t availAddr_;
  uint64_t usedAddr_;
  uint16_t nextDesc_ = 0;  // the next descriptor index addChain() writes (round robin: chains are used in order)
  uint16_t lastUsed_ = 0;
};

// A packed ring descriptor as the driver writes it. flags: NEXT, WRITE, INDIRECT;
// post() adds AVAIL/USED from its wrap counter unless `raw` (then flags are
// written as they are: for descriptors the wrap counter does not make available).
struct PackedDescSpec {
  uint64_t addr;
  uint32_t len;
  uint16_t flags = 0;
  uint16_t id = 0;
  bool raw = false;
};

class PackedDriver {
 public:
  // Bytes the layout takes: the descriptor ring, then the driver and device event areas.
  static uint64_t bytes(uint32_t size);
  PackedDriver(TestMemory& memory, uint64_t gpa, uint32_t size);

  vhost_tap::QueueConfig config() const;
  uint32_t size() const { return size_; }
  uint64_t descAddr() const { return descAddr_; }
  uint64_t driverArea() const { return driverArea_; }
  uint64_t deviceArea() const { return deviceArea_; }

  // Makes one chain available from the next slot: every body, then the later
  // descriptors' flags, the head's flags last (2.8.6 "Next Flag: Descriptor
  // Chaining", 2.8.21). NEXT is added to all but the last (not to an INDIRECT one).
  // Returns the slots it took; the buffer ID (the last descriptor's) is remembered
  // with them, for takeUsed().
  uint32_t post(const std::vector<PackedDescSpec>& descs);
  // Writes packed descriptors at `gpa` (an indirect table): flags as given.
  static void writeTable(TestMemory& memory, uint64_t gpa, const std::vector<PackedDescSpec>& descs);

  struct Used {
    uint16_t id;
    uint32_t len;
    uint16_t flags;
  };
  vhost_tap::PackedDesc read(uint32_t slot) const;
  // The next used descriptor if the device wrote it (2.8.2: AVAIL == USED == the used wrap counter).
  bool peekUsed(Used* out) const;
  // Takes it, skipping the slots its buffer's chain took.
  bool takeUsed(Used* out);

  void setDriverEvent(uint16_t flags, uint16_t offWrap = 0);
  vhost_tap::PackedEventSuppress deviceEvent() const;

  // Where the driver is: next slot to make available and its wrap counter, next
  // slot the device writes a used descriptor into and the used wrap counter (2.8.1: both start at 1).
  uint32_t next = 0;
  bool wrap = true;
  uint32_t nextUsed = 0;
  bool usedWrap = true;

 private:
  uint64_t* flagsWord(uint32_t slot) const { return reinterpret_cast<uint64_t*>(memory_.at(descAddr_ + 16ull * slot + 8, 8)); }

  TestMemory& memory_;
  uint32_t size_;
  uint64_t descAddr_;
  uint64_t driverArea_;
  uint64_t deviceArea_;
  std::map<uint16_t, uint32_t> slotsOf_;  // buffer ID -> slots its chain took
};

}  // namespace vhost_tap_test
