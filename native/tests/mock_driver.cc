#include "mock_driver.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace vhost_tap_test {

using vhost_tap::PackedDesc;
using vhost_tap::PackedEventSuppress;
using vhost_tap::QueueConfig;
using vhost_tap::VringUsedElem;

TestMemory::TestMemory(const std::vector<Region>& regions) {
  std::vector<vhost_tap::RegionSpec> specs;
  for (const Region& r : regions) {
    int fd = memfd_create("vhost-tap-test-guest", MFD_CLOEXEC);
    if (fd < 0) throw std::runtime_error(std::string("memfd_create: ") + strerror(errno));
    // Sparse: a region of gigabytes costs nothing until a page is written.
    if (ftruncate(fd, static_cast<off_t>(r.size)) < 0) {
      close(fd);
      throw std::runtime_error(std::string("ftruncate: ") + strerror(errno));
    }
    void* view = mmap(nullptr, r.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (view == MAP_FAILED) {
      close(fd);
      throw std::runtime_error(std::string("mmap: ") + strerror(errno));
    }
    regions_.push_back({r.gpa, r.size, fd, static_cast<uint8_t*>(view)});
    specs.push_back({r.gpa, r.size, fd, 0});
  }
  int err = 0;
  std::string what;
  map_ = vhost_tap::GuestMemoryMap::create(specs, &err, &what);
  if (!map_) throw std::runtime_error("GuestMemoryMap::create: " + what + ": " + strerror(err));
}

TestMemory::~TestMemory() {
  for (const Backing& b : regions_) {
    munmap(b.driverView, b.size);
    close(b.fd);
  }
}

uint8_t* TestMemory::at(uint64_t gpa, uint64_t len) const {
  for (const Backing& b : regions_) {
    if (gpa >= b.gpa && gpa - b.gpa < b.size && len <= b.size - (gpa - b.gpa)) return b.driverView + (gpa - b.gpa);
  }
  throw std::runtime_error("the test wrote outside its guest memory at 0x" + std::to_string(gpa));
}

void TestMemory::write(uint64_t gpa, const void* data, uint64_t len) const {
  if (len > 0) memcpy(at(gpa, len), data, len);
}

void TestMemory::fill(uint64_t gpa, uint8_t byte, uint64_t len) const {
  if (len > 0) memset(at(gpa, len), byte, len);
}

std::vector<uint8_t> TestMemory::read(uint64_t gpa, uint64_t len) const {
  const uint8_t* p = len > 0 ? at(gpa, len) : nullptr;
  return std::vector<uint8_t>(p, p + len);
}

uint64_t TestMemory::end() const {
  uint64_t end = 0;
  for (const Backing& b : regions_) end = std::max(end, b.gpa + b.size);
  return end;
}

int TestMemory::fdOf(uint64_t gpa) const {
  for (const Backing& b : regions_) {
    if (gpa >= b.gpa && gpa - b.gpa < b.size) return b.fd;
  }
  throw std::runtime_error("no region holds 0x" + std::to_string(gpa));
}

uint64_t Arena::take(uint64_t bytes, uint64_t align) {
  uint64_t at = (next_ + align - 1) & ~(align - 1);
  if (at + bytes > end_) throw std::runtime_error("the test's arena of guest memory is used up");
  next_ = at + bytes;
  return at;
}

// ---- split ----

uint64_t SplitDriver::bytes(uint32_t size) {
  const uint64_t used = (vhost_tap::descTableBytes(size) + vhost_tap::availRingBytes(size) + 3) & ~3ull;
  return used + vhost_tap::usedRingBytes(size);
}

SplitDriver::SplitDriver(TestMemory& memory, uint64_t gpa, uint32_t size)
    : memory_(memory),
      size_(size),
      descAddr_(gpa),
      availAddr_(gpa + vhost_tap::descTableBytes(size)),
      usedAddr_((availAddr_ + vhost_tap::availRingBytes(size) + 3) & ~3ull) {
  memory_.fill(gpa, 0, bytes(size));
}

QueueConfig SplitDriver::config() const {
  QueueConfig c;
  c.size = size_;
  c.descAddr = descAddr_;
  c.availAddr = availAddr_;
  c.usedAddr = usedAddr_;
  return c;
}

void SplitDriver::writeTable(TestMemory& memory, uint64_t gpa, const std::vector<SplitDesc>& descs) {
  for (size_t i = 0; i < descs.size(); i++) {
    vhost_tap::VringDesc d = {descs[i].addr, descs[i].len, descs[i].flags, descs[i].next};
    memory.write(gpa + 16 * i, &d, sizeof d);
  }
}

void SplitDriver::writeDescs(uint32_t first, const std::vector<SplitDesc>& descs) {
  writeTable(memory_, descAddr_ + 16ull * first, descs);
}

uint16_t SplitDriver::addChain(std::vector<SplitDesc> descs) {
  const uint16_t head = nextDesc_;
  for (size_t i = 0; i < descs.size(); i++) {
    const uint16_t index = static_cast<uint16_t>((head + i) % size_);
    if (i + 1 < descs.size() && !(descs[i].flags & vhost_tap::VRING_DESC_F_INDIRECT)) {
      descs[i].flags |= vhost_tap::VRING_DESC_F_NEXT;
      descs[i].next = static_cast<uint16_t>((index + 1) % size_);
    }
    writeDescs(index, {descs[i]});
  }
  nextDesc_ = static_cast<uint16_t>((head + descs.size()) % size_);
  publish(head);
  return head;
}

void SplitDriver::setSlot(uint32_t slot, uint16_t head) { *word(availAddr_ + 4 + 2ull * slot) = head; }

void SplitDriver::publish(uint16_t head) {
  const uint16_t idx = availIdx();
  setSlot(idx % size_, head);
  setAvailIdx(static_cast<uint16_t>(idx + 1));
}

uint16_t SplitDriver::availIdx() const { return __atomic_load_n(word(availAddr_ + 2), __ATOMIC_ACQUIRE); }

void SplitDriver::setAvailIdx(uint16_t idx) { __atomic_store_n(word(availAddr_ + 2), idx, __ATOMIC_RELEASE); }

void SplitDriver::startAt(uint16_t idx) {
  setAvailIdx(idx);
  __atomic_store_n(word(usedAddr_ + 2), idx, __ATOMIC_RELEASE);
  lastUsed_ = idx;
}

void SplitDriver::setAvailFlags(uint16_t flags) { __atomic_store_n(word(availAddr_), flags, __ATOMIC_RELEASE); }

void SplitDriver::setUsedEvent(uint16_t idx) { __atomic_store_n(word(availAddr_ + 4 + 2ull * size_), idx, __ATOMIC_RELEASE); }

uint16_t SplitDriver::usedIdx() const { return __atomic_load_n(word(usedAddr_ + 2), __ATOMIC_ACQUIRE); }

uint16_t SplitDriver::usedFlags() const { return __atomic_load_n(word(usedAddr_), __ATOMIC_ACQUIRE); }

uint16_t SplitDriver::availEvent() const { return __atomic_load_n(word(usedAddr_ + 4 + 8ull * size_), __ATOMIC_ACQUIRE); }

VringUsedElem SplitDriver::usedEntry(uint16_t idx) const {
  VringUsedElem e;
  memcpy(&e, memory_.at(usedAddr_ + 4 + 8ull * (idx % size_), 8), sizeof e);
  return e;
}

bool SplitDriver::takeUsed(VringUsedElem* out) {
  if (usedIdx() == lastUsed_) return false;
  *out = usedEntry(lastUsed_);
  lastUsed_++;
  return true;
}

// ---- packed ----

uint64_t PackedDriver::bytes(uint32_t size) { return 16ull * size + 8; }

PackedDriver::PackedDriver(TestMemory& memory, uint64_t gpa, uint32_t size)
    : memory_(memory), size_(size), descAddr_(gpa), driverArea_(gpa + 16ull * size), deviceArea_(gpa + 16ull * size + 4) {
  memory_.fill(gpa, 0, bytes(size));
}

QueueConfig PackedDriver::config() const {
  QueueConfig c;
  c.size = size_;
  c.descAddr = descAddr_;
  c.availAddr = driverArea_;
  c.usedAddr = deviceArea_;
  c.packed = true;
  c.lastAvailIdx = 0x80008000u;  // a ring that never ran: slot 0, both wrap counters 1
  return c;
}

void PackedDriver::writeTable(TestMemory& memory, uint64_t gpa, const std::vector<PackedDescSpec>& descs) {
  for (size_t i = 0; i < descs.size(); i++) {
    PackedDesc d = {descs[i].addr, descs[i].len, descs[i].id, descs[i].flags};
    memory.write(gpa + 16 * i, &d, sizeof d);
  }
}

uint32_t PackedDriver::post(const std::vector<PackedDescSpec>& descs) {
  struct Pending {
    uint32_t slot;
    uint64_t rest;
  };
  std::vector<Pending> pending;
  uint32_t slot = next;
  bool w = wrap;
  for (size_t i = 0; i < descs.size(); i++) {
    const PackedDescSpec& d = descs[i];
    uint16_t flags = d.flags;
    if (!d.raw) {
      if (i + 1 < descs.size() && !(flags & vhost_tap::VRING_DESC_F_INDIRECT)) flags |= vhost_tap::VRING_DESC_F_NEXT;
      // 2.8.1: available when AVAIL is the wrap counter and USED its inverse.
      flags |= w ? vhost_tap::VIRTQ_DESC_F_AVAIL : vhost_tap::VIRTQ_DESC_F_USED;
    }
    memcpy(memory_.at(descAddr_ + 16ull * slot, 8), &d.addr, 8);
    pending.push_back({slot, static_cast<uint64_t>(d.len) | (static_cast<uint64_t>(d.id) << 32) |
                                 (static_cast<uint64_t>(flags) << 48)});
    if (++slot == size_) {
      slot = 0;
      w = !w;
    }
  }
  // len, id and flags share a word: each is stored whole, the head's last.
  for (size_t i = 1; i < pending.size(); i++) __atomic_store_n(flagsWord(pending[i].slot), pending[i].rest, __ATOMIC_RELEASE);
  if (!pending.empty()) __atomic_store_n(flagsWord(pending[0].slot), pending[0].rest, __ATOMIC_RELEASE);
  next = slot;
  wrap = w;
  if (!descs.empty()) slotsOf_[descs.back().id] = static_cast<uint32_t>(descs.size());
  return static_cast<uint32_t>(descs.size());
}

PackedDesc PackedDriver::read(uint32_t slot) const {
  const uint64_t rest = __atomic_load_n(flagsWord(slot), __ATOMIC_ACQUIRE);
  PackedDesc d;
  memcpy(&d.addr, memory_.at(descAddr_ + 16ull * slot, 8), 8);
  d.len = static_cast<uint32_t>(rest);
  d.id = static_cast<uint16_t>(rest >> 32);
  d.flags = static_cast<uint16_t>(rest >> 48);
  return d;
}

bool PackedDriver::peekUsed(Used* out) const {
  const PackedDesc d = read(nextUsed);
  const bool avail = (d.flags & vhost_tap::VIRTQ_DESC_F_AVAIL) != 0;
  const bool used = (d.flags & vhost_tap::VIRTQ_DESC_F_USED) != 0;
  if (avail != usedWrap || used != usedWrap) return false;
  *out = {d.id, d.len, d.flags};
  return true;
}

bool PackedDriver::takeUsed(Used* out) {
  if (!peekUsed(out)) return false;
  auto known = slotsOf_.find(out->id);
  nextUsed += known != slotsOf_.end() ? known->second : 1;
  while (nextUsed >= size_) {
    nextUsed -= size_;
    usedWrap = !usedWrap;
  }
  return true;
}

void PackedDriver::setDriverEvent(uint16_t flags, uint16_t offWrap) {
  auto* e = reinterpret_cast<PackedEventSuppress*>(memory_.at(driverArea_, 4));
  __atomic_store_n(&e->offWrap, offWrap, __ATOMIC_RELEASE);
  __atomic_store_n(&e->flags, flags, __ATOMIC_RELEASE);
}

PackedEventSuppress PackedDriver::deviceEvent() const {
  const auto* e = reinterpret_cast<const PackedEventSuppress*>(memory_.at(deviceArea_, 4));
  return {__atomic_load_n(&e->offWrap, __ATOMIC_ACQUIRE), __atomic_load_n(&e->flags, __ATOMIC_ACQUIRE)};
}

}  // namespace vhost_tap_test
