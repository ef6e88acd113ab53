#include "uring.h"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace vhost_tap {
namespace {

int ioUringSetup(unsigned entries, struct io_uring_params* p) {
  return static_cast<int>(syscall(__NR_io_uring_setup, entries, p));
}

int ioUringRegister(int fd, unsigned opcode, const void* arg, unsigned count) {
  return static_cast<int>(syscall(__NR_io_uring_register, fd, opcode, arg, count));
}

int ioUringEnter(int fd, unsigned submit, unsigned minComplete, unsigned flags) {
  return static_cast<int>(syscall(__NR_io_uring_enter, fd, submit, minComplete, flags, nullptr, 0));
}

}  // namespace

Uring::~Uring() {
  // Drop the registered file now: the ring's own teardown is deferred to a kernel
  // worker, and until it runs the tap queue stays open, so its device outlives
  // Tap.close() (measured: the next test's tap lost its traffic to the old one).
  if (registeredFd_ >= 0 && fd_ >= 0) ioUringRegister(fd_, IORING_UNREGISTER_FILES, nullptr, 0);
  if (sqes_) munmap(sqes_, sqesBytes_);
  if (cqRing_ && cqRing_ != sqRing_) munmap(cqRing_, cqRingBytes_);
  if (sqRing_) munmap(sqRing_, sqRingBytes_);
  if (fd_ >= 0) close(fd_);
}

bool Uring::init(unsigned entries) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  fd_ = ioUringSetup(entries, &p);
  if (fd_ < 0) return false;
  sqEntries_ = p.sq_entries;
  sqRingBytes_ = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  cqRingBytes_ = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  bool single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
  if (single && cqRingBytes_ > sqRingBytes_) sqRingBytes_ = cqRingBytes_;
  sqRing_ = mmap(nullptr, sqRingBytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, IORING_OFF_SQ_RING);
  if (sqRing_ == MAP_FAILED) {
    sqRing_ = nullptr;
    return false;
  }
  if (single) {
    cqRing_ = sqRing_;
  } else {
    cqRing_ = mmap(nullptr, cqRingBytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, IORING_OFF_CQ_RING);
    if (cqRing_ == MAP_FAILED) {
      cqRing_ = nullptr;
      return false;
    }
  }
  sqesBytes_ = p.sq_entries * sizeof(struct io_uring_sqe);
  sqes_ = static_cast<struct io_uring_sqe*>(
      mmap(nullptr, sqesBytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, IORING_OFF_SQES));
  if (sqes_ == MAP_FAILED) {
    sqes_ = nullptr;
    return false;
  }
  auto* sq = static_cast<uint8_t*>(sqRing_);
  auto* cq = static_cast<uint8_t*>(cqRing_);
  sqHead_ = reinterpret_cast<unsigned*>(sq + p.sq_off.head);
  sqTail_ = reinterpret_cast<unsigned*>(sq + p.sq_off.tail);
  sqMask_ = *reinterpret_cast<unsigned*>(sq + p.sq_off.ring_mask);
  sqArray_ = reinterpret_cast<unsigned*>(sq + p.sq_off.array);
  cqHead_ = reinterpret_cast<unsigned*>(cq + p.cq_off.head);
  cqTail_ = reinterpret_cast<unsigned*>(cq + p.cq_off.tail);
  cqMask_ = *reinterpret_cast<unsigned*>(cq + p.cq_off.ring_mask);
  cqes_ = reinterpret_cast<struct io_uring_cqe*>(cq + p.cq_off.cqes);
  return true;
}

bool Uring::registerFile(int fd) {
  if (ioUringRegister(fd_, IORING_REGISTER_FILES, &fd, 1) < 0) return false;
  registeredFd_ = fd;
  return true;
}

bool Uring::prepare(uint8_t opcode, int fd, const struct iovec* iov, int count, uint64_t userData, uint8_t sqeFlags,
                    int rwFlags) {
  unsigned tail = *sqTail_;
  unsigned head = __atomic_load_n(sqHead_, __ATOMIC_ACQUIRE);
  if (tail - head >= sqEntries_) return false;
  unsigned index = tail & sqMask_;
  struct io_uring_sqe* sqe = &sqes_[index];
  memset(sqe, 0, sizeof *sqe);
  // One buffer (the usual frame: header and packet in one descriptor): the plain
  // read/write ops skip copying and checking an iovec array per request.
  if (count == 1 && (opcode == IORING_OP_READV || opcode == IORING_OP_WRITEV)) {
    sqe->opcode = opcode == IORING_OP_READV ? IORING_OP_READ : IORING_OP_WRITE;
    sqe->addr = reinterpret_cast<uint64_t>(iov[0].iov_base);
    sqe->len = static_cast<unsigned>(iov[0].iov_len);
  } else {
    sqe->opcode = opcode;
    sqe->addr = reinterpret_cast<uint64_t>(iov);
    sqe->len = static_cast<unsigned>(count);
  }
  if (fd == registeredFd_) {
    sqe->fd = 0;  // index in the registered files
    sqeFlags |= IOSQE_FIXED_FILE;
  } else {
    sqe->fd = fd;
  }
  sqe->off = static_cast<uint64_t>(-1);  // the file position: a tap has none
  sqe->user_data = userData;
  sqe->flags = sqeFlags;
  sqe->rw_flags = rwFlags;
  sqArray_[index] = index;
  __atomic_store_n(sqTail_, tail + 1, __ATOMIC_RELEASE);
  pending_++;
  return true;
}

int Uring::submitAndWait(struct io_uring_cqe* results, unsigned max) {
  unsigned expected = pending_ < max ? pending_ : max;
  unsigned submitted = 0;
  while (submitted < pending_) {
    int rc = ioUringEnter(fd_, pending_ - submitted, expected, IORING_ENTER_GETEVENTS);
    if (rc < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    submitted += static_cast<unsigned>(rc);
  }
  pending_ = 0;
  unsigned reaped = 0;
  for (;;) {
    unsigned head = *cqHead_;
    unsigned tail = __atomic_load_n(cqTail_, __ATOMIC_ACQUIRE);
    while (head != tail && reaped < max) {
      results[reaped++] = cqes_[head & cqMask_];
      head++;
    }
    __atomic_store_n(cqHead_, head, __ATOMIC_RELEASE);
    if (reaped >= expected) break;
    int rc = ioUringEnter(fd_, 0, expected - reaped, IORING_ENTER_GETEVENTS);
    if (rc < 0 && errno != EINTR) return -errno;
  }
  return static_cast<int>(reaped);
}

}  // namespace vhost_tap
