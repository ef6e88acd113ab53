// Guest memory as vhost sees it: regions of guest-physical address space, each
// backed by an fd mapped MAP_SHARED here. Every address the device touches goes
// through translate(), which refuses anything not wholly inside the regions.
#pragma once
#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "status.h"

namespace vhost_tap {

struct RegionSpec {
  uint64_t guestPhysAddr;
  uint64_t size;
  int fd;
  uint64_t offset;
};

struct MappedRegion {
  uint64_t guestPhysAddr;
  uint64_t size;
  uint8_t* host;      // start of the region in our address space
  void* mapBase;      // what mmap returned (offset rounded down to a page)
  size_t mapLength;
};

class GuestMemoryMap {
 public:
  // Maps every region into *out; on failure maps nothing and says why (EINVAL, or the kernel's errno).
  static Status create(const std::vector<RegionSpec>& specs, std::shared_ptr<GuestMemoryMap>* out);
  ~GuestMemoryMap();
  GuestMemoryMap(const GuestMemoryMap&) = delete;
  GuestMemoryMap& operator=(const GuestMemoryMap&) = delete;

  // Host pointer to [gpa, gpa + len) when it lies wholly within one region, else nullptr.
  uint8_t* translate(uint64_t gpa, uint64_t len) const {
    for (const MappedRegion& r : regions_) {
      if (gpa >= r.guestPhysAddr && gpa - r.guestPhysAddr < r.size && len <= r.size - (gpa - r.guestPhysAddr)) {
        return r.host + (gpa - r.guestPhysAddr);
      }
    }
    return nullptr;
  }

  // Splits [gpa, gpa + len) into iovecs across adjacent regions. Returns the
  // number of iovecs used; -1 if any byte is outside guest memory, -2 if more
  // than maxIov entries would be needed.
  int translateIov(uint64_t gpa, uint64_t len, struct iovec* iov, int maxIov) const;

  // The guest-physical address of a host pointer into one of the regions (the
  // reverse of translate(), for the dirty log of writes made through iovecs).
  bool guestAddress(const void* host, uint64_t* gpa) const {
    const uint8_t* p = static_cast<const uint8_t*>(host);
    for (const MappedRegion& r : regions_) {
      if (p >= r.host && static_cast<uint64_t>(p - r.host) < r.size) {
        *gpa = r.guestPhysAddr + static_cast<uint64_t>(p - r.host);
        return true;
      }
    }
    return false;
  }

  size_t regionCount() const { return regions_.size(); }
  const MappedRegion& region(size_t i) const { return regions_[i]; }

  // Pages of guest memory that faulted because their file was truncated under
  // the mapping (SIGBUS, BUS_ADRERR) and were replaced with private zero pages,
  // since the process started. See the SIGBUS handler in guest_memory.cc.
  static uint64_t truncatedPages();

 private:
  GuestMemoryMap() = default;
  std::vector<MappedRegion> regions_;
};

}  // namespace vhost_tap
