#include "dirty_log.h"

#include <linux/membarrier.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace vhost_tap {
namespace {

int membarrier(int cmd) { return static_cast<int>(syscall(__NR_membarrier, cmd, 0, 0)); }

// Registers this process for private expedited membarriers once; false where the kernel has none.
bool expeditedMembarrier() {
  static const bool ok = membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0;
  return ok;
}

}  // namespace

Status DirtyLog::map(int fd, uint64_t size, uint64_t offset, std::shared_ptr<DirtyLog>* out) {
  // The log covers size * 8 pages of 4 KiB: 1 TiB of guest memory needs 32 MiB of log.
  if (size == 0 || size > (1ull << 32) || offset > (1ull << 40)) {
    return Status::failure(EINVAL, "log of " + std::to_string(size) + " bytes at offset " + std::to_string(offset) +
                                       " (1 byte to 4 GiB, offset below 1 TiB)");
  }
  struct stat st;
  if (fstat(fd, &st) < 0) {
    return Status::fromErrno(errno, "fstat of the log fd");
  }
  // A mapping past the end of its file kills the process with SIGBUS on first touch.
  if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) < offset + size) {
    return Status::failure(EINVAL, "log of " + std::to_string(size) + " bytes at offset " + std::to_string(offset) +
                                       " ends beyond its file (" + std::to_string(st.st_size) + " bytes)");
  }
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  uint64_t aligned = offset & ~(page - 1);
  size_t length = static_cast<size_t>(size + (offset - aligned));
  void* base = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(aligned));
  if (base == MAP_FAILED) {
    return Status::fromErrno(errno, "mmap of the " + std::to_string(size) + "-byte log");
  }
  std::shared_ptr<DirtyLog> log(new DirtyLog());
  log->mapBase_ = base;
  log->mapLength_ = length;
  log->bits_ = static_cast<uint8_t*>(base) + (offset - aligned);
  log->size_ = size;
  *out = std::move(log);
  return Status::success();
}

DirtyLog::~DirtyLog() {
  if (mapBase_) munmap(mapBase_, mapLength_);
}

void DirtyLog::mark(uint64_t gpa, uint64_t len) {
  if (len == 0) return;
  uint64_t first = gpa >> kPageShift;
  uint64_t last = (gpa + len - 1 < gpa ? ~0ull : gpa + len - 1) >> kPageShift;
  for (uint64_t page = first; page <= last; page++) {
    uint64_t byte = page >> 3;
    if (byte >= size_) {
      outOfRange_.fetch_add(last - page + 1, std::memory_order_relaxed);
      return;
    }
    // Release: the write this mark describes is visible before the bit is.
    __atomic_fetch_or(&bits_[byte], static_cast<uint8_t>(1u << (page & 7)), __ATOMIC_RELEASE);
    if (page == ~0ull) return;
  }
}

void DirtyLog::collect(uint8_t* out, bool clear) {
  uint64_t i = 0;
  if (clear) {
    // Word by word where the bitmap is 8-byte aligned (it is, from mmap), bytes for the tail.
    for (; i + 8 <= size_ && (reinterpret_cast<uintptr_t>(bits_ + i) & 7) == 0; i += 8) {
      uint64_t word = __atomic_exchange_n(reinterpret_cast<uint64_t*>(bits_ + i), 0ull, __ATOMIC_ACQ_REL);
      memcpy(out + i, &word, 8);
    }
    for (; i < size_; i++) out[i] = __atomic_exchange_n(&bits_[i], static_cast<uint8_t>(0), __ATOMIC_ACQ_REL);
    return;
  }
  for (; i < size_; i++) out[i] = __atomic_load_n(&bits_[i], __ATOMIC_ACQUIRE);
}

DirtyLogSlot::DirtyLogSlot() { cursorsMustFence_ = !expeditedMembarrier(); }

void DirtyLogSlot::set(std::shared_ptr<DirtyLog> log) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    log_ = std::move(log);
    generation_.fetch_add(1, std::memory_order_seq_cst);
  }
  // The asymmetric fence: the workers only load the generation after their writes; this
  // barrier on every thread of the process makes those writes visible here before we
  // answer the frontend (who then reads guest memory). Without it, cursors fence themselves.
  if (!cursorsMustFence_) membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED);
}

std::shared_ptr<DirtyLog> DirtyLogSlot::get() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return log_;
}

}  // namespace vhost_tap
