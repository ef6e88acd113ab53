#include "guest_memory.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace vhost_tap {

std::shared_ptr<GuestMemoryMap> GuestMemoryMap::create(const std::vector<RegionSpec>& specs, int* err,
                                                       std::string* what) {
  std::shared_ptr<GuestMemoryMap> map(new GuestMemoryMap());
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  for (size_t i = 0; i < specs.size(); i++) {
    const RegionSpec& s = specs[i];
    std::string where = "region " + std::to_string(i);
    if (s.size == 0 || s.guestPhysAddr + s.size < s.guestPhysAddr || s.offset + s.size < s.offset) {
      *err = EINVAL;
      *what = where + ": size is 0 or the region wraps around the address space";
      return nullptr;
    }
    for (size_t j = 0; j < i; j++) {
      const RegionSpec& o = specs[j];
      if (s.guestPhysAddr < o.guestPhysAddr + o.size && o.guestPhysAddr < s.guestPhysAddr + s.size) {
        *err = EINVAL;
        *what = where + " overlaps region " + std::to_string(j) + " in guest-physical address space";
        return nullptr;
      }
    }
    // Touching a page beyond the end of the file would kill the process with
    // SIGBUS: a region must lie within its file.
    struct stat st;
    if (fstat(s.fd, &st) < 0) {
      *err = errno;
      *what = where + ": fstat of its fd";
      return nullptr;
    }
    if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) < s.offset + s.size) {
      *err = EINVAL;
      *what = where + " ends beyond the end of its file (" + std::to_string(st.st_size) + " bytes)";
      return nullptr;
    }
    uint64_t alignedOffset = s.offset & ~(page - 1);
    uint64_t slack = s.offset - alignedOffset;
    size_t length = static_cast<size_t>(s.size + slack);
    void* base = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, s.fd, static_cast<off_t>(alignedOffset));
    if (base == MAP_FAILED) {
      *err = errno;
      *what = where + ": mmap of " + std::to_string(s.size) + " bytes";
      return nullptr;  // the regions mapped so far are unmapped by ~GuestMemoryMap
    }
    map->regions_.push_back({s.guestPhysAddr, s.size, static_cast<uint8_t*>(base) + slack, base, length});
  }
  std::sort(map->regions_.begin(), map->regions_.end(),
            [](const MappedRegion& a, const MappedRegion& b) { return a.guestPhysAddr < b.guestPhysAddr; });
  return map;
}

GuestMemoryMap::~GuestMemoryMap() {
  for (const MappedRegion& r : regions_) munmap(r.mapBase, r.mapLength);
}

int GuestMemoryMap::translateIov(uint64_t gpa, uint64_t len, struct iovec* iov, int maxIov) const {
  int n = 0;
  while (len > 0) {
    const MappedRegion* hit = nullptr;
    for (const MappedRegion& r : regions_) {
      if (gpa >= r.guestPhysAddr && gpa - r.guestPhysAddr < r.size) {
        hit = &r;
        break;
      }
    }
    if (!hit) return -1;
    if (n >= maxIov) return -2;
    uint64_t within = gpa - hit->guestPhysAddr;
    uint64_t chunk = std::min<uint64_t>(len, hit->size - within);
    iov[n].iov_base = hit->host + within;
    iov[n].iov_len = static_cast<size_t>(chunk);
    n++;
    gpa += chunk;
    len -= chunk;
  }
  return n;
}

}  // namespace vhost_tap
