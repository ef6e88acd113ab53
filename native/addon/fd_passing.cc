// Unix sockets that carry file descriptors (SCM_RIGHTS): Node's net module
// cannot send or receive fds, and handing tap queue fds from a privileged
// process to an unprivileged one is how libvirt gives QEMU its taps.
//
// Blocking waits (accept, recvmsg) run on the libuv thread pool with a poll()
// timeout, so a peer that never sends cannot hold a pool thread forever.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "args.h"
#include "errors.h"
#include "modules.h"

namespace vhost_tap {
namespace {

constexpr int kMaxFdsPerMessage = 253;  // SCM_MAX_FD in the kernel

int socketType(const std::string& type) {
  if (type == "stream") return SOCK_STREAM;
  if (type == "seqpacket") return SOCK_SEQPACKET;
  return -1;
}

bool fillAddress(Napi::Env env, const std::string& path, struct sockaddr_un* addr) {
  memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr->sun_path) {
    throwCode(env, "ENAMETOOLONG",
              "unix socket path must be 1 to " + std::to_string(sizeof addr->sun_path - 1) + " bytes: '" + path + "'");
    return false;
  }
  memcpy(addr->sun_path, path.data(), path.size());
  return true;
}

// socketPair(type) -> [fd, fd]
Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string type;
  if (!argString(info, 0, &type)) return env.Undefined();
  int st = socketType(type);
  if (st < 0) {
    throwCode(env, "EINVAL", "socket type must be 'stream' or 'seqpacket'");
    return env.Undefined();
  }
  int sv[2];
  if (socketpair(AF_UNIX, st | SOCK_CLOEXEC, 0, sv) < 0) {
    throwErrno(env, errno, "socketpair");
    return env.Undefined();
  }
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, sv[0]);
  out.Set(1u, sv[1]);
  return out;
}

// unixListen(path, type, backlog) -> fd
Napi::Value UnixListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path, type;
  int64_t backlog;
  if (!argString(info, 0, &path) || !argString(info, 1, &type) || !argIntIn(info, 2, 0, INT32_MAX, &backlog)) return env.Undefined();
  int st = socketType(type);
  if (st < 0) {
    throwCode(env, "EINVAL", "socket type must be 'stream' or 'seqpacket'");
    return env.Undefined();
  }
  struct sockaddr_un addr;
  if (!fillAddress(env, path, &addr)) return env.Undefined();
  int fd = socket(AF_UNIX, st | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throwErrno(env, errno, "socket");
    return env.Undefined();
  }
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&addr), sizeof addr) < 0 ||
      listen(fd, static_cast<int>(backlog)) < 0) {
    int err = errno;
    close(fd);
    throwErrno(env, err, "listen on " + path);
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

// unixConnect(path, type) -> fd
Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path, type;
  if (!argString(info, 0, &path) || !argString(info, 1, &type)) return env.Undefined();
  int st = socketType(type);
  if (st < 0) {
    throwCode(env, "EINVAL", "socket type must be 'stream' or 'seqpacket'");
    return env.Undefined();
  }
  struct sockaddr_un addr;
  if (!fillAddress(env, path, &addr)) return env.Undefined();
  int fd = socket(AF_UNIX, st | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throwErrno(env, errno, "socket");
    return env.Undefined();
  }
  int rc;
  do {
    rc = connect(fd, reinterpret_cast<struct sockaddr*>(&addr), sizeof addr);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    int err = errno;
    close(fd);
    throwErrno(env, err, "connect to " + path);
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

// Waits until fd is readable; returns 0, ETIMEDOUT or an errno.
int waitReadable(int fd, int timeoutMs) {
  struct pollfd pfd = {fd, POLLIN, 0};
  for (;;) {
    int rc = poll(&pfd, 1, timeoutMs);
    if (rc > 0) return 0;
    if (rc == 0) return ETIMEDOUT;
    if (errno != EINTR) return errno;
  }
}

class AcceptWorker : public Napi::AsyncWorker {
 public:
  AcceptWorker(Napi::Env env, int fd, int timeoutMs)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), fd_(fd), timeoutMs_(timeoutMs) {}
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    err_ = waitReadable(fd_, timeoutMs_);
    if (err_) return;
    result_ = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (result_ < 0) err_ = errno;
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (err_) {
      Napi::Error e = Napi::Error::New(env, std::string("accept: ") + strerror(err_));
      e.Set("code", Napi::String::New(env, errnoName(err_)));
      deferred_.Reject(e.Value());
      return;
    }
    deferred_.Resolve(Napi::Number::New(env, result_));
  }

 private:
  Napi::Promise::Deferred deferred_;
  int fd_;
  int timeoutMs_;
  int err_ = 0;
  int result_ = -1;
};

// unixAccept(listenFd, timeoutMs) -> Promise<fd>
Napi::Value UnixAccept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  int64_t timeoutMs;
  if (!argFd(info, 0, &fd) || !argIntIn(info, 1, -1, INT32_MAX, &timeoutMs)) return env.Undefined();
  auto* worker = new AcceptWorker(env, fd, static_cast<int>(timeoutMs));
  Napi::Promise p = worker->promise();
  worker->Queue();
  return p;
}

// sendFds(sockFd, fds[], payload: Buffer, dontWait?) -> bytes sent. The payload must be
// at least one byte: a stream socket cannot carry control data alone. dontWait:
// EAGAIN instead of blocking on a peer that does not read (a server's replies).
Napi::Value SendFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock;
  if (!argFd(info, 0, &sock)) return env.Undefined();
  if (info.Length() < 3 || !info[1].IsArray() || !info[2].IsBuffer()) {
    throwCode(env, "EINVAL", "sendFds(sockFd, fds[], payload Buffer)");
    return env.Undefined();
  }
  Napi::Array fdArray = info[1].As<Napi::Array>();
  Napi::Buffer<uint8_t> payload = info[2].As<Napi::Buffer<uint8_t>>();
  bool dontWait = info.Length() > 3 && info[3].ToBoolean().Value();
  uint32_t count = fdArray.Length();
  if (count > kMaxFdsPerMessage) {
    throwCode(env, "EINVAL", "at most 253 fds fit in one message");
    return env.Undefined();
  }
  if (payload.Length() == 0) {
    throwCode(env, "EINVAL", "payload must be at least one byte");
    return env.Undefined();
  }
  std::vector<int> fds(count);
  for (uint32_t i = 0; i < count; i++) {
    if (!toFd(fdArray.Get(i), &fds[i])) {
      throwCode(env, "EBADF", "fds[" + std::to_string(i) + "] is not a file descriptor");
      return env.Undefined();
    }
  }
  struct iovec iov = {payload.Data(), payload.Length()};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * (count ? count : 1)), 0);
  if (count) {
    msg.msg_control = control.data();
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * count);
    struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * count);
    memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * count);
  }
  ssize_t n;
  do {
    n = sendmsg(sock, &msg, MSG_NOSIGNAL | (dontWait ? MSG_DONTWAIT : 0));
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    throwErrno(env, errno, "sendmsg with " + std::to_string(count) + " fds");
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

class ReceiveWorker : public Napi::AsyncWorker {
 public:
  ReceiveWorker(Napi::Env env, int fd, int maxFds, int maxBytes, int timeoutMs)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        fd_(fd),
        maxFds_(maxFds),
        timeoutMs_(timeoutMs),
        data_(static_cast<size_t>(maxBytes)) {}
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    err_ = waitReadable(fd_, timeoutMs_);
    if (err_) return;
    struct iovec iov = {data_.data(), data_.size()};
    std::vector<char> control(CMSG_SPACE(sizeof(int) * maxFds_));
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    ssize_t n;
    do {
      n = recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      err_ = errno;
      return;
    }
    bytes_ = static_cast<size_t>(n);
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const int* p = reinterpret_cast<const int*>(CMSG_DATA(c));
      for (size_t i = 0; i < nfds; i++) fds_.push_back(p[i]);
    }
    // Truncated control data means some fds were dropped by the kernel: the
    // message is unusable, and the fds we did get must not leak.
    if (msg.msg_flags & MSG_CTRUNC) {
      for (int f : fds_) close(f);
      fds_.clear();
      err_ = EMSGSIZE;
      truncatedFds_ = true;
    } else if (msg.msg_flags & MSG_TRUNC) {
      for (int f : fds_) close(f);
      fds_.clear();
      err_ = EMSGSIZE;
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (err_) {
      std::string what = err_ == ETIMEDOUT ? "no message within the timeout"
                         : truncatedFds_   ? "message carried more fds than expected; they were closed"
                         : err_ == EMSGSIZE ? "message larger than expected; it was discarded"
                                            : std::string("recvmsg: ") + strerror(err_);
      Napi::Error e = Napi::Error::New(env, what);
      e.Set("code", Napi::String::New(env, errnoName(err_)));
      deferred_.Reject(e.Value());
      return;
    }
    Napi::Object out = Napi::Object::New(env);
    Napi::Array fds = Napi::Array::New(env, fds_.size());
    for (size_t i = 0; i < fds_.size(); i++) fds.Set(static_cast<uint32_t>(i), fds_[i]);
    out.Set("fds", fds);
    out.Set("data", Napi::Buffer<uint8_t>::Copy(env, data_.data(), bytes_));
    deferred_.Resolve(out);
  }

 private:
  Napi::Promise::Deferred deferred_;
  int fd_;
  int maxFds_;
  int timeoutMs_;
  std::vector<uint8_t> data_;
  std::vector<int> fds_;
  size_t bytes_ = 0;
  int err_ = 0;
  bool truncatedFds_ = false;
};

// receiveFds(sockFd, maxFds, maxBytes, timeoutMs) -> Promise<{ fds, data }>.
// data is empty when the peer closed the connection.
Napi::Value ReceiveFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  int64_t maxFds, maxBytes, timeoutMs;
  if (!argFd(info, 0, &fd) || !argInt(info, 1, &maxFds) || !argInt(info, 2, &maxBytes) ||
      !argIntIn(info, 3, -1, INT32_MAX, &timeoutMs))
    return env.Undefined();
  if (maxFds < 0 || maxFds > kMaxFdsPerMessage || maxBytes < 1 || maxBytes > (1 << 20)) {
    throwCode(env, "EINVAL", "maxFds must be 0..253 and maxBytes 1..1048576");
    return env.Undefined();
  }
  auto* worker = new ReceiveWorker(env, fd, static_cast<int>(maxFds ? maxFds : 1), static_cast<int>(maxBytes),
                                   static_cast<int>(timeoutMs));
  Napi::Promise p = worker->promise();
  worker->Queue();
  return p;
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!argFd(info, 0, &fd)) return env.Undefined();
  if (close(fd) < 0 && errno != EINTR) throwErrno(env, errno, "close fd " + std::to_string(fd));
  return env.Undefined();
}

// setNonBlocking(fd): sets O_NONBLOCK on the file description, as QEMU does to the
// tap fds it is handed (a worker must never wait in a read of an empty queue).
Napi::Value SetNonBlocking(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!argFd(info, 0, &fd)) return env.Undefined();
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || ((flags & O_NONBLOCK) == 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)) {
    throwErrno(env, errno, "setting O_NONBLOCK on fd " + std::to_string(fd));
  }
  return env.Undefined();
}

}  // namespace

void registerFdPassing(Napi::Env env, Napi::Object exports) {
  exports.Set("socketPair", Napi::Function::New(env, SocketPair));
  exports.Set("unixListen", Napi::Function::New(env, UnixListen));
  exports.Set("unixConnect", Napi::Function::New(env, UnixConnect));
  exports.Set("unixAccept", Napi::Function::New(env, UnixAccept));
  exports.Set("sendFds", Napi::Function::New(env, SendFds));
  exports.Set("receiveFds", Napi::Function::New(env, ReceiveFds));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd));
  exports.Set("setNonBlocking", Napi::Function::New(env, SetNonBlocking));
}

}  // namespace vhost_tap
