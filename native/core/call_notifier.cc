#include "call_notifier.h"

#include <linux/aio_abi.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <mutex>

namespace vhost_tap {
namespace {

// Completions are never waited for, only reaped so the ring has room: every
// kReapEvery submissions, and whenever io_submit finds it full.
constexpr unsigned kContextEvents = 256;
constexpr unsigned kReapEvery = 32;
constexpr long kReapBatch = 64;

// One AIO context for the process, made by the first worker and never
// destroyed: io_destroy() waits for an RCU grace period (35 ms measured), which
// every stop() would pay. It holds no fd and no thread, only its ring's pages.
std::mutex contextMutex;
aio_context_t sharedContext = 0;

Status processContext(aio_context_t* out) {
  std::lock_guard<std::mutex> lock(contextMutex);
  if (sharedContext == 0) {
    aio_context_t context = 0;
    if (syscall(__NR_io_setup, kContextEvents, &context) < 0) {
      const int err = errno;
      return Status::failure(err, std::string("the kernel refuses Linux AIO (io_setup: ") + strerror(err) +
                                      "), which signals call eventfds without blocking: allow io_setup/io_submit/io_getevents");
    }
    sharedContext = context;
  }
  *out = sharedContext;
  return Status::success();
}

}  // namespace

bool isEventfd(int fd, std::string* kind) {
  char path[32];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  char target[PATH_MAX];
  ssize_t n = readlink(path, target, sizeof target - 1);
  // No /proc to ask (a sandbox without it): let it through. A call fd that is not an
  // eventfd then fails each notify (counted), and a kick fd that cannot be polled
  // fails epoll_ctl; neither can block.
  if (n < 0) return true;
  target[n] = '\0';
  if (strcmp(target, "anon_inode:[eventfd]") == 0) return true;
  *kind = target;
  return false;
}

Status CallNotifier::open() {
  close();
  Status context = processContext(&context_);
  if (!context) return context;
  source_ = memfd_create("vhost-tap-call", MFD_CLOEXEC);
  if (source_ < 0) return Status::fromErrno(errno, "memfd_create");
  submittedSinceReap_ = 0;
  return Status::success();
}

void CallNotifier::close() {
  if (source_ >= 0) ::close(source_);
  source_ = -1;
  // Completions still in the shared ring are anyone's to reap.
}

void CallNotifier::reap() {
  struct io_event events[kReapBatch];
  struct timespec now = {0, 0};  // take what is there, never wait
  for (int round = 0; round < 8; round++) {
    if (syscall(__NR_io_getevents, context_, 0, kReapBatch, events, &now) < kReapBatch) break;
  }
  submittedSinceReap_ = 0;
}

int CallNotifier::notify(int fd) {
  if (source_ < 0 || fd < 0) return EBADF;
  static uint8_t nothing;
  struct iocb request;
  memset(&request, 0, sizeof request);
  request.aio_lio_opcode = IOCB_CMD_PREAD;
  request.aio_fildes = static_cast<uint32_t>(source_);
  request.aio_buf = reinterpret_cast<uint64_t>(&nothing);
  request.aio_nbytes = 0;
  request.aio_offset = 0;
  request.aio_flags = IOCB_FLAG_RESFD;
  request.aio_resfd = static_cast<uint32_t>(fd);
  struct iocb* batch[1] = {&request};
  if (submittedSinceReap_ >= kReapEvery) reap();
  int err = 0;
  for (int attempt = 0; attempt < 2; attempt++) {
    if (syscall(__NR_io_submit, context_, 1, batch) == 1) {
      submittedSinceReap_++;
      return 0;
    }
    err = errno;
    if (err != EAGAIN) break;
    reap();  // the completion ring is full (other workers share it): make room, once
  }
  return err;
}

}  // namespace vhost_tap
