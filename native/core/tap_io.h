// The tap queue as the queue-pair worker uses it, the one seam between the data
// path and the tap. The worker only ever reads and writes the fd (readv/writev,
// io_uring READV/WRITEV, reads with RWF_NOWAIT) and watches it with epoll: no
// ioctl, no check of what kind of file it is. A frame is one datagram, the
// virtio_net_hdr first. So any non-blocking datagram fd stands in for a tap
// queue, e.g. one end of socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK) in
// tests and fuzzers.
#pragma once
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "queue_fault.h"
#include "status.h"
#include "uring.h"
#include "worker_queue.h"

namespace vhost_tap {

class TapIo {
 public:
  // Takes `fd` (not owned) for a run. io_uring is used when the kernel allows it
  // (`uringEntries` > 0), else one system call per frame. The fd is watched for
  // reading by `epoll` under `tag`, already added with EPOLLIN by the caller
  // (watchInterest); `sink` hears of a failure. fd < 0: no tap (a pair that only
  // discards tx), and nothing here touches one.
  // Fails with EINVAL if the fd is blocking: the worker reads until a read finds
  // nothing, and a blocking read of an empty queue would hold it (and its stop) for ever.
  Status open(int fd, unsigned uringEntries, const WorkerEventSink* sink) {
    if (fd >= 0) {
      const int flags = fcntl(fd, F_GETFL);
      if (flags < 0) return Status::fromErrno(errno, "the tap fd " + std::to_string(fd));
      if ((flags & O_NONBLOCK) == 0) {
        return Status::failure(EINVAL, "the tap fd " + std::to_string(fd) +
                                           " is blocking: a queue's fd must be O_NONBLOCK (Tap.fromFds sets it)");
      }
    }
    fd_ = fd;
    sink_ = sink;
    failed_ = false;
    wantRead_ = fd >= 0;
    wantWrite_ = false;
    epoll_ = -1;
    registered_ = 0;
    watched_ = false;
    uring_.reset();
    if (fd < 0 || uringEntries == 0) return Status::success();
    uring_ = std::make_unique<Uring>();
    if (!uring_->init(uringEntries)) uring_.reset();
    if (uring_) uring_->registerFile(fd);  // best effort: it saves a file lookup per frame
    return Status::success();
  }
  // The events to add the fd to an epoll set with (EPOLLIN while frames are wanted).
  uint32_t watchInterest(int epoll, uint32_t tag) {
    epoll_ = epoll;
    tag_ = tag;
    registered_ = interest();
    watched_ = true;
    return registered_;
  }
  void close() {
    uring_.reset();
    fd_ = -1;
    epoll_ = -1;
  }

  int fd() const { return fd_; }
  // Null when io_uring is unavailable (disabled by sysctl, seccomp) or failed.
  Uring* uring() const { return uring_.get(); }
  // The ring itself failed: do without it from now on.
  void dropUring() { uring_.reset(); }

  ssize_t readv(const struct iovec* iov, int count) const { return ::readv(fd_, iov, count); }
  ssize_t writev(const struct iovec* iov, int count) const { return ::writev(fd_, iov, count); }

  // What the worker wants to hear of: frames to read (rx has buffers and works),
  // room to write (tx found the tap full). Changes the epoll set only on a change.
  void wantReadable(bool on) {
    wantRead_ = on;
    updateInterest();
  }
  void wantWritable(bool on) {
    wantWrite_ = on;
    updateInterest();
  }

  // A read failed with an errno that does not clear by itself (the tap was deleted
  // under us: EBADFD): stop reading, and report it once (kTapError). The fd then
  // leaves the epoll set: a deleted tap polls EPOLLERR for ever, which epoll reports
  // whatever the interest, and the worker would spin on it.
  void fail(int err, const char* doing) { failWith(std::string(doing) + " failed: " + strerror(err)); }
  // A read returned end of file: never from a tap; a stand-in's peer closed (a
  // zero-length datagram reads the same, and is taken for it).
  void hungUp() { failWith("reading the tap queue found its end (the other side closed)"); }
  bool failed() const { return failed_; }

 private:
  void failWith(std::string message) {
    if (failed_) return;
    failed_ = true;
    updateInterest();
    (*sink_)("tap", QueueFault::kTapError, message);
  }
  uint32_t interest() const {
    uint32_t events = 0;
    if (wantRead_ && !failed_) events |= EPOLLIN;
    if (wantWrite_) events |= EPOLLOUT;
    return events;
  }
  void updateInterest() {
    const uint32_t events = interest();
    if (epoll_ < 0 || fd_ < 0) return;
    if (failed_ && events == 0) {
      if (watched_ && epoll_ctl(epoll_, EPOLL_CTL_DEL, fd_, nullptr) == 0) watched_ = false;
      return;
    }
    if (watched_ && events == registered_) return;
    struct epoll_event ev = {};
    ev.events = events;
    ev.data.u32 = tag_;
    if (epoll_ctl(epoll_, watched_ ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd_, &ev) == 0) {
      registered_ = events;
      watched_ = true;
    }
  }

  int fd_ = -1;
  int epoll_ = -1;
  uint32_t tag_ = 0;
  uint32_t registered_ = 0;
  bool watched_ = false;  // the fd is in the epoll set
  bool wantRead_ = false;
  bool wantWrite_ = false;
  bool failed_ = false;
  const WorkerEventSink* sink_ = nullptr;
  std::unique_ptr<Uring> uring_;
};

}  // namespace vhost_tap
