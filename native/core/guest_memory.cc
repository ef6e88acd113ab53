#include "guest_memory.h"

#include <linux/magic.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

namespace vhost_tap {
namespace {

// A frontend may truncate the file behind guest memory while it is mapped here
// (only a memfd sealed with F_SEAL_SHRINK rules that out). The data path's
// system calls then fail with EFAULT on the missing pages, but a plain load or
// store there (the rings, a frame copy, a JS view) raises SIGBUS, whose default
// action kills the daemon and every guest it serves. So every guest mapping is
// listed here, and a SIGBUS on one of them replaces the page with a private zero
// page and lets the access go on: the guest that lost its memory reads zeros
// (its queue most likely breaks on them), everything else goes on. Faults
// anywhere else go to the handler that was there before (or the default).
//
// The handler may take no lock: mappings live in a fixed table of atomics.
// A slot is valid while its start is non-zero; it is filled end first and
// cleared start first, and the handler reads start again after end, so it never
// pairs the start of one mapping with the end of another.
struct MappingSlot {
  std::atomic<uintptr_t> start{0};
  std::atomic<uintptr_t> end{0};
  std::atomic<uintptr_t> page{0};  // the mapping's page size: a hugetlbfs page is replaced whole
};
constexpr size_t kMappingSlots = 1024;  // beyond that a mapping is not covered (and crashes as before)
MappingSlot mappingSlots[kMappingSlots];
std::mutex slotsLock;  // between threads that add and remove mappings; never taken by the handler
std::atomic<uint64_t> truncatedPageCount{0};
struct sigaction previousSigbus;
std::once_flag sigbusInstalled;

void onSigbus(int sig, siginfo_t* info, void* context) {
  if (info->si_code == BUS_ADRERR) {
    uintptr_t addr = reinterpret_cast<uintptr_t>(info->si_addr);
    for (MappingSlot& slot : mappingSlots) {
      uintptr_t start = slot.start.load(std::memory_order_acquire);
      if (start == 0 || addr < start) continue;
      uintptr_t end = slot.end.load(std::memory_order_acquire);
      uintptr_t page = slot.page.load(std::memory_order_acquire);
      if (slot.start.load(std::memory_order_acquire) != start || addr >= end) continue;
      uintptr_t first = addr & ~(page - 1);
      if (first < start || first + page > end) break;  // a partial page at the edge: not ours to replace
      void* base = reinterpret_cast<void*>(first);
      if (mmap(base, page, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) != MAP_FAILED) {
        truncatedPageCount.fetch_add(1, std::memory_order_relaxed);
        return;  // the access is retried, on the zero page
      }
      break;
    }
  }
  if ((previousSigbus.sa_flags & SA_SIGINFO) && previousSigbus.sa_sigaction) {
    previousSigbus.sa_sigaction(sig, info, context);
  } else if (previousSigbus.sa_handler != SIG_DFL && previousSigbus.sa_handler != SIG_IGN) {
    previousSigbus.sa_handler(sig);
  } else {
    signal(SIGBUS, SIG_DFL);  // the access faults again, with the default action
  }
}

void installSigbusHandler() {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = onSigbus;
  action.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&action.sa_mask);
  sigaction(SIGBUS, &action, &previousSigbus);
}

void addMapping(uintptr_t start, size_t length, size_t page) {
  std::call_once(sigbusInstalled, installSigbusHandler);
  std::lock_guard<std::mutex> hold(slotsLock);
  for (MappingSlot& slot : mappingSlots) {
    if (slot.start.load(std::memory_order_relaxed) != 0) continue;
    slot.end.store(start + length, std::memory_order_release);
    slot.page.store(page, std::memory_order_release);
    slot.start.store(start, std::memory_order_release);
    return;
  }
}

void removeMapping(uintptr_t start) {
  std::lock_guard<std::mutex> hold(slotsLock);
  for (MappingSlot& slot : mappingSlots) {
    if (slot.start.load(std::memory_order_relaxed) != start) continue;
    slot.start.store(0, std::memory_order_release);
    slot.end.store(0, std::memory_order_release);
    return;
  }
}

// hugetlbfs maps in huge pages (its block size); every other file in base pages.
size_t mappingPageSize(int fd, uint64_t basePage) {
  struct statfs fs;
  if (fstatfs(fd, &fs) == 0 && fs.f_type == HUGETLBFS_MAGIC && fs.f_bsize > 0) return static_cast<size_t>(fs.f_bsize);
  return static_cast<size_t>(basePage);
}

}  // namespace

uint64_t GuestMemoryMap::truncatedPages() { return truncatedPageCount.load(std::memory_order_relaxed); }

Status GuestMemoryMap::create(const std::vector<RegionSpec>& specs, std::shared_ptr<GuestMemoryMap>* out) {
  std::shared_ptr<GuestMemoryMap> map(new GuestMemoryMap());
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  for (size_t i = 0; i < specs.size(); i++) {
    const RegionSpec& s = specs[i];
    std::string where = "region " + std::to_string(i);
    if (s.size == 0 || s.guestPhysAddr + s.size < s.guestPhysAddr || s.offset + s.size < s.offset) {
      return Status::failure(EINVAL, where + ": size is 0 or the region wraps around the address space");
    }
    for (size_t j = 0; j < i; j++) {
      const RegionSpec& o = specs[j];
      if (s.guestPhysAddr < o.guestPhysAddr + o.size && o.guestPhysAddr < s.guestPhysAddr + s.size) {
        return Status::failure(EINVAL, where + " overlaps region " + std::to_string(j) + " in guest-physical address space");
      }
    }
    // Touching a page beyond the end of the file would kill the process with
    // SIGBUS: a region must lie within its file.
    struct stat st;
    if (fstat(s.fd, &st) < 0) {
      return Status::fromErrno(errno, where + ": fstat of its fd");
    }
    if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) < s.offset + s.size) {
      return Status::failure(EINVAL, where + " ends beyond the end of its file (" + std::to_string(st.st_size) + " bytes)");
    }
    uint64_t alignedOffset = s.offset & ~(page - 1);
    uint64_t slack = s.offset - alignedOffset;
    size_t length = static_cast<size_t>(s.size + slack);
    void* base = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, s.fd, static_cast<off_t>(alignedOffset));
    if (base == MAP_FAILED) {
      // The regions mapped so far are unmapped by ~GuestMemoryMap.
      return Status::fromErrno(errno, where + ": mmap of " + std::to_string(s.size) + " bytes");
    }
    map->regions_.push_back({s.guestPhysAddr, s.size, static_cast<uint8_t*>(base) + slack, base, length});
    addMapping(reinterpret_cast<uintptr_t>(base), length, mappingPageSize(s.fd, page));
  }
  std::sort(map->regions_.begin(), map->regions_.end(),
            [](const MappedRegion& a, const MappedRegion& b) { return a.guestPhysAddr < b.guestPhysAddr; });
  *out = std::move(map);
  return Status::success();
}

GuestMemoryMap::~GuestMemoryMap() {
  for (const MappedRegion& r : regions_) {
    removeMapping(reinterpret_cast<uintptr_t>(r.mapBase));
    munmap(r.mapBase, r.mapLength);
  }
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
