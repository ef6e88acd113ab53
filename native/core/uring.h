// A minimal io_uring (no liburing: it is not on every system we build on):
// enough to submit a batch of writev/readv on one fd and reap their results
// with one system call, which is how the data path spends fewer syscalls than
// frames.
#pragma once
#include <linux/io_uring.h>
#include <sys/uio.h>

#include <cstdint>

namespace vhost_tap {

class Uring {
 public:
  Uring() = default;
  ~Uring();
  Uring(const Uring&) = delete;
  Uring& operator=(const Uring&) = delete;

  // False (errno set) when io_uring is unavailable (old kernel, disabled by sysctl, seccomp).
  bool init(unsigned entries);
  bool ready() const { return fd_ >= 0; }
  // Registers `fd` with the ring: requests on it then skip the per-request file
  // lookup (fget/fput). False if the kernel refused; requests still work unregistered.
  bool registerFile(int fd);
  unsigned capacity() const { return sqEntries_; }

  // Queues a readv or writev of iov[0..count) on fd; false when the ring is full.
  // rwFlags RWF_NOWAIT: complete with -EAGAIN instead of waiting for data (io_uring
  // otherwise ignores O_NONBLOCK and waits for a pollable file to become ready).
  bool prepare(uint8_t opcode, int fd, const struct iovec* iov, int count, uint64_t userData, uint8_t sqeFlags = 0,
               int rwFlags = 0);
  // Submits what was prepared and waits for all of it; returns completions reaped
  // into results[] (by user data order of arrival), or -errno.
  int submitAndWait(struct io_uring_cqe* results, unsigned max);

 private:
  int fd_ = -1;
  int registeredFd_ = -1;
  unsigned sqEntries_ = 0;
  unsigned pending_ = 0;
  void* sqRing_ = nullptr;
  size_t sqRingBytes_ = 0;
  void* cqRing_ = nullptr;
  size_t cqRingBytes_ = 0;
  struct io_uring_sqe* sqes_ = nullptr;
  size_t sqesBytes_ = 0;
  unsigned* sqHead_ = nullptr;
  unsigned* sqTail_ = nullptr;
  unsigned sqMask_ = 0;
  unsigned* sqArray_ = nullptr;
  unsigned* cqHead_ = nullptr;
  unsigned* cqTail_ = nullptr;
  unsigned cqMask_ = 0;
  struct io_uring_cqe* cqes_ = nullptr;
};

}  // namespace vhost_tap
