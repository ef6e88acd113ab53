// Eventfds (the kick and call signals of a virtqueue, as KVM's ioeventfd and
// irqfd and vhost-user use them) and a poller that tells JS when an fd becomes
// readable without blocking the event loop or a libuv pool thread.
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <thread>

#include "args.h"
#include "errors.h"
#include "js_callback.h"
#include "modules.h"

namespace vhost_tap {
namespace {

// eventfdCreate(initial = 0n, nonBlocking = true) -> fd. Ours are always 0 and
// non-blocking; the other forms are what a hostile frontend may hand over (a
// counter at the edge of overflow, O_NONBLOCK cleared), for tests.
Napi::Value EventfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t initial = 0;
  bool nonBlocking = true;
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    bool lossless = false;
    if (info[0].IsBigInt()) initial = info[0].As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless || initial == UINT64_MAX) {
      throwCode(env, "EINVAL", "eventfdCreate: the initial count is a bigint below 2^64 - 1");
      return env.Undefined();
    }
  }
  if (info.Length() > 1 && !info[1].IsUndefined() && !argBool(info, 1, &nonBlocking)) return env.Undefined();
  int fd = eventfd(0, EFD_CLOEXEC | (nonBlocking ? EFD_NONBLOCK : 0));
  if (fd < 0) {
    throwErrno(env, errno, "eventfd");
    return env.Undefined();
  }
  // eventfd() takes only 32 bits of initial count; a write takes the full 64.
  if (initial > 0 && write(fd, &initial, sizeof initial) != sizeof initial) {
    int err = errno;
    close(fd);
    throwErrno(env, err, "eventfd initial count");
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

// eventfdWrite(fd): adds 1 (a kick or a call).
Napi::Value EventfdWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!argFd(info, 0, &fd)) return env.Undefined();
  uint64_t one = 1;
  ssize_t n;
  do {
    n = write(fd, &one, sizeof one);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && errno != EAGAIN) throwErrno(env, errno, "eventfd write");
  return env.Undefined();
}

// eventfdRead(fd) -> count since the last read (0 if none).
Napi::Value EventfdRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!argFd(info, 0, &fd)) return env.Undefined();
  uint64_t value = 0;
  ssize_t n;
  do {
    n = read(fd, &value, sizeof value);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return Napi::Number::New(env, 0);
    throwErrno(env, errno, "eventfd read");
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(value));
}

// One epoll thread; each watched fd is one-shot: JS handles the event and
// re-arms it, so a busy fd cannot flood the event loop with callbacks.
class FdPoller : public Napi::ObjectWrap<FdPoller> {
 public:
  static void Register(Napi::Env env, Napi::Object exports) {
    exports.Set("FdPoller", DefineClass(env, "FdPoller",
                                        {
                                            InstanceMethod("add", &FdPoller::Add),
                                            InstanceMethod("rearm", &FdPoller::Rearm),
                                            InstanceMethod("remove", &FdPoller::Remove),
                                            InstanceMethod("close", &FdPoller::Close),
                                        }));
  }

  explicit FdPoller(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdPoller>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsFunction()) {
      throwCode(env, "EINVAL", "FdPoller takes a callback (fd) => void");
      return;
    }
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    stop_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (epoll_ < 0 || stop_ < 0) {
      throwErrno(env, errno, "FdPoller epoll/eventfd");
      cleanupFds();
      return;
    }
    struct epoll_event ev = {};
    ev.events = EPOLLIN;
    ev.data.fd = stop_;
    epoll_ctl(epoll_, EPOLL_CTL_ADD, stop_, &ev);
    ready_.create(env, info[0].As<Napi::Function>(), "vhost-tap fd poller");
    thread_ = std::thread([this] { run(); });
  }

  ~FdPoller() override { shutdown(); }

 private:
  void run() {
    struct epoll_event events[16];
    for (;;) {
      int n = epoll_wait(epoll_, events, 16, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        return;
      }
      for (int i = 0; i < n; i++) {
        int fd = events[i].data.fd;
        if (fd == stop_) return;
        int* data = new int(fd);
        bool sent = ready_.call(data, [](Napi::Env env, Napi::Function cb, int* p) {
          int readyFd = *p;
          delete p;
          // napi_call_function, not cb.Call: a readiness queued just before its fd was
          // unwatched can arrive while Node tears the environment down, where no JS can
          // run, and cb.Call's throw of that failure aborts the process. An exception the
          // JS callback throws is left to Node, as for any N-API callback (as before).
          if (env != nullptr) {
            napi_value arg = Napi::Number::New(env, readyFd);
            napi_call_function(env, env.Undefined(), cb, 1, &arg, nullptr);
          }
        });
        if (!sent) {
          delete data;
          return;  // the environment is going away
        }
      }
    }
  }

  bool ctl(const Napi::CallbackInfo& info, int op, const char* what) {
    Napi::Env env = info.Env();
    int fd;
    if (!argFd(info, 0, &fd)) return false;
    if (epoll_ < 0) {
      throwCode(env, "EBADF", "the fd poller is closed");
      return false;
    }
    struct epoll_event ev = {};
    ev.events = EPOLLIN | EPOLLONESHOT;
    ev.data.fd = fd;
    if (epoll_ctl(epoll_, op, fd, op == EPOLL_CTL_DEL ? nullptr : &ev) < 0) {
      // Unwatching an fd that was closed meanwhile (closing removes it from epoll) is done
      // already. Throwing here would abort the process when it happens in a callback that
      // runs while Node tears the environment down, where no exception can be thrown.
      if (op == EPOLL_CTL_DEL && (errno == EBADF || errno == ENOENT)) return true;
      throwErrno(env, errno, std::string(what) + " fd " + std::to_string(fd));
      return false;
    }
    return true;
  }

  Napi::Value Add(const Napi::CallbackInfo& info) {
    if (ctl(info, EPOLL_CTL_ADD, "watching") && watched_++ == 0) ready_.ref(info.Env());
    return info.Env().Undefined();
  }
  Napi::Value Rearm(const Napi::CallbackInfo& info) {
    ctl(info, EPOLL_CTL_MOD, "re-arming");
    return info.Env().Undefined();
  }
  Napi::Value Remove(const Napi::CallbackInfo& info) {
    if (ctl(info, EPOLL_CTL_DEL, "unwatching") && --watched_ == 0) ready_.unref(info.Env());
    return info.Env().Undefined();
  }
  Napi::Value Close(const Napi::CallbackInfo& info) {
    shutdown();
    return info.Env().Undefined();
  }

  void shutdown() {
    if (thread_.joinable()) {
      uint64_t one = 1;
      ssize_t ignored = write(stop_, &one, sizeof one);
      (void)ignored;
      thread_.join();
      ready_.release();
    }
    cleanupFds();
  }

  void cleanupFds() {
    if (epoll_ >= 0) close(epoll_);
    if (stop_ >= 0) close(stop_);
    epoll_ = stop_ = -1;
  }

  int epoll_ = -1;
  int stop_ = -1;
  int watched_ = 0;
  JsCallback ready_;
  std::thread thread_;
};

}  // namespace

void registerEventfd(Napi::Env env, Napi::Object exports) {
  exports.Set("eventfdCreate", Napi::Function::New(env, EventfdCreate));
  exports.Set("eventfdWrite", Napi::Function::New(env, EventfdWrite));
  exports.Set("eventfdRead", Napi::Function::New(env, EventfdRead));
  FdPoller::Register(env, exports);
}

}  // namespace vhost_tap
