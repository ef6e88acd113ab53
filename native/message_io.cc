// Reading framed messages with fds from a stream unix socket (vhost-user):
// the header is read with recvmsg so the fds sent with the message come with
// it; the payload follows with plain reads. Called from the JS thread once the
// fd poller says the socket is readable, so waits are short and bounded.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "args.h"
#include "errors.h"
#include "modules.h"

namespace vhost_tap {
namespace {

// Waits for more bytes; 0, ETIMEDOUT or an errno.
int waitIn(int fd, int timeoutMs) {
  struct pollfd p = {fd, POLLIN, 0};
  for (;;) {
    int rc = poll(&p, 1, timeoutMs);
    if (rc > 0) return 0;
    if (rc == 0) return ETIMEDOUT;
    if (errno != EINTR) return errno;
  }
}

void closeAll(const std::vector<int>& fds) {
  for (int f : fds) close(f);
}

// recvHeader(fd, bytes, maxFds, timeoutMs) -> { data: Buffer, fds: number[] };
// data is empty if the peer closed the connection before sending anything.
Napi::Value RecvHeader(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  int64_t bytes, maxFds, timeoutMs;
  if (!argFd(info, 0, &fd) || !argInt(info, 1, &bytes) || !argInt(info, 2, &maxFds) || !argInt(info, 3, &timeoutMs))
    return env.Undefined();
  if (bytes < 1 || bytes > 4096 || maxFds < 0 || maxFds > 253) {
    throwCode(env, "EINVAL", "recvHeader: 1..4096 bytes and 0..253 fds");
    return env.Undefined();
  }
  std::vector<uint8_t> data(static_cast<size_t>(bytes));
  std::vector<int> fds;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * (maxFds ? maxFds : 1)));
  size_t got = 0;
  int err = 0;
  bool truncatedFds = false;
  while (got < data.size()) {
    struct iovec iov = {data.data() + got, data.size() - got};
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        if ((err = waitIn(fd, static_cast<int>(timeoutMs))) != 0) break;
        continue;
      }
      err = errno;
      break;
    }
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const int* p = reinterpret_cast<const int*>(CMSG_DATA(c));
      for (size_t i = 0; i < count; i++) fds.push_back(p[i]);
    }
    if (msg.msg_flags & MSG_CTRUNC) truncatedFds = true;
    if (n == 0) {
      if (got == 0) break;  // clean end of stream
      err = ECONNRESET;
      break;
    }
    got += static_cast<size_t>(n);
  }
  if (err || truncatedFds) {
    closeAll(fds);
    if (truncatedFds && !err) {
      throwCode(env, "EMSGSIZE", "message carried more fds than allowed; they were closed");
    } else {
      throwErrno(env, err, got ? "message header cut short" : "reading a message header");
    }
    return env.Undefined();
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("data", Napi::Buffer<uint8_t>::Copy(env, data.data(), got));
  Napi::Array list = Napi::Array::New(env, fds.size());
  for (size_t i = 0; i < fds.size(); i++) list.Set(static_cast<uint32_t>(i), fds[i]);
  out.Set("fds", list);
  return out;
}

// readExact(fd, bytes, timeoutMs) -> Buffer of exactly `bytes`; throws on EOF or timeout.
Napi::Value ReadExact(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  int64_t bytes, timeoutMs;
  if (!argFd(info, 0, &fd) || !argInt(info, 1, &bytes) || !argInt(info, 2, &timeoutMs)) return env.Undefined();
  if (bytes < 0 || bytes > (1 << 20)) {
    throwCode(env, "EINVAL", "readExact: at most 1 MiB");
    return env.Undefined();
  }
  std::vector<uint8_t> data(static_cast<size_t>(bytes));
  size_t got = 0;
  while (got < data.size()) {
    ssize_t n = recv(fd, data.data() + got, data.size() - got, MSG_DONTWAIT);
    if (n > 0) {
      got += static_cast<size_t>(n);
      continue;
    }
    if (n == 0) {
      throwCode(env, "ECONNRESET", "the peer closed the connection inside a message");
      return env.Undefined();
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      int err = waitIn(fd, static_cast<int>(timeoutMs));
      if (err) {
        throwErrno(env, err, "message payload cut short");
        return env.Undefined();
      }
      continue;
    }
    throwErrno(env, errno, "reading a message payload");
    return env.Undefined();
  }
  return Napi::Buffer<uint8_t>::Copy(env, data.data(), data.size());
}

// acceptNow(listenFd) -> fd, or -1 when no connection is waiting.
Napi::Value AcceptNow(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!argFd(info, 0, &fd)) return env.Undefined();
  // A connection the poller saw may be gone by now: never block the JS thread in accept.
  int flags = fcntl(fd, F_GETFL);
  if (flags >= 0 && !(flags & O_NONBLOCK)) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  int c = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
  if (c < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED) return Napi::Number::New(env, -1);
    throwErrno(env, errno, "accept");
    return env.Undefined();
  }
  return Napi::Number::New(env, c);
}

}  // namespace

void registerMessageIo(Napi::Env env, Napi::Object exports) {
  exports.Set("recvHeader", Napi::Function::New(env, RecvHeader));
  exports.Set("readExact", Napi::Function::New(env, ReadExact));
  exports.Set("acceptNow", Napi::Function::New(env, AcceptNow));
}

}  // namespace vhost_tap
