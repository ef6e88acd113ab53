// The dirty page log of live migration (QEMU docs/interop/vhost-user.rst,
// "Migration"): one bit per 4 KiB page of guest-physical address space, set by
// the device for every byte it writes into guest memory, while the VMM reads
// and clears it to know which pages to send again.
//
// Three pieces:
//   DirtyLog        one mapped bitmap (the frontend's SET_LOG_BASE fd, or a VMM's memfd).
//   DirtyLogSlot    which log is current for a device: none, or one; changed by
//                   the control plane while the workers run.
//   DirtyLogCursor  a queue's view of the slot: marks into the current log.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "status.h"

namespace vhost_tap {

class DirtyLog {
 public:
  static constexpr uint64_t kPageShift = 12;  // VHOST_LOG_PAGE: 4 KiB

  // Maps `size` bytes of bitmap found `offset` bytes into the file, into *out. On
  // failure (EINVAL, or the kernel's errno) nothing is left mapped.
  static Status map(int fd, uint64_t size, uint64_t offset, std::shared_ptr<DirtyLog>* out);
  ~DirtyLog();
  DirtyLog(const DirtyLog&) = delete;
  DirtyLog& operator=(const DirtyLog&) = delete;

  // Sets the bit of every page [gpa, gpa + len) touches. The VMM clears bits
  // while we set them, so each is an atomic read-modify-write on its byte (the
  // bitmap is byte-addressed: bit p % 8 of byte p / 8). Pages beyond the log
  // are not marked and are counted (the frontend sized the log too small).
  void mark(uint64_t gpa, uint64_t len);

  // Copies the bitmap into out[0..bytes()) and, with clear, zeroes it word by
  // word with an atomic exchange, so that no bit set meanwhile is lost.
  void collect(uint8_t* out, bool clear);

  uint64_t bytes() const { return size_; }
  uint64_t outOfRange() const { return outOfRange_.load(std::memory_order_relaxed); }

 private:
  DirtyLog() = default;
  uint8_t* bits_ = nullptr;
  uint64_t size_ = 0;
  void* mapBase_ = nullptr;
  size_t mapLength_ = 0;
  std::atomic<uint64_t> outOfRange_{0};
};

class DirtyLogSlot {
 public:
  DirtyLogSlot();
  // Makes `log` (or none) current. When this returns, every write a worker did
  // before it last looked at the slot is visible to this thread (membarrier),
  // so a write that was not marked in the new log happened before the change
  // and is seen by whoever reads guest memory after it.
  void set(std::shared_ptr<DirtyLog> log);
  std::shared_ptr<DirtyLog> get() const;
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  // True when the kernel has no private expedited membarrier: cursors then fence on every look.
  bool cursorsMustFence() const { return cursorsMustFence_; }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<DirtyLog> log_;
  std::atomic<uint64_t> generation_{0};
  bool cursorsMustFence_ = false;
};

class DirtyLogCursor {
 public:
  void attach(std::shared_ptr<DirtyLogSlot> slot) {
    slot_ = std::move(slot);
    generation_ = ~0ull;
    log_.reset();
  }
  void detach() {
    slot_.reset();
    log_.reset();
  }
  bool attached() const { return slot_ != nullptr; }

  // Marks [gpa, gpa + len) in the current log, if there is one. Called after
  // the write it describes is complete. Cheap when logging is off: one load.
  void mark(uint64_t gpa, uint64_t len) {
    if (!slot_ || len == 0) return;
    for (;;) {
      if (slot_->cursorsMustFence()) std::atomic_thread_fence(std::memory_order_seq_cst);
      uint64_t g = slot_->generation();
      if (g != generation_) refresh(g);
      if (!log_) return;
      log_->mark(gpa, len);
      // A log installed while we marked (QEMU replaces it when guest memory grows,
      // then syncs and frees the old one): mark in the new one too.
      if (slot_->generation() == g) return;
    }
  }

 private:
  void refresh(uint64_t g) {
    log_ = slot_->get();
    generation_ = g;
  }
  std::shared_ptr<DirtyLogSlot> slot_;
  std::shared_ptr<DirtyLog> log_;
  uint64_t generation_ = ~0ull;
};

}  // namespace vhost_tap
