// Reading framed messages with fds from a stream unix socket (vhost-user),
// without ever waiting: recvSome() takes what is there and returns, and the TS
// layer assembles a message from such reads as the fd poller reports the socket
// readable. A frontend that sends a byte at a time therefore costs the event
// loop a system call per byte, never a wait. describeFd() says what kind of file
// an fd received from a frontend is, so that each request can be checked for
// the kind it needs before anything is changed.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "args.h"
#include "errors.h"
#include "modules.h"

namespace vhost_tap {
namespace {

constexpr int64_t kMaxFdsPerRead = 253;  // SCM_MAX_FD in the kernel

// recvSome(fd, maxBytes, maxFds) -> { data: Buffer, fds: number[], end: boolean, fdsCut: boolean }
// One non-blocking recvmsg of at most maxBytes. data is empty when nothing is
// waiting (and end is false) or when the peer closed the connection (end true).
// fdsCut: more fds came than maxFds; the kernel closed the ones that did not fit.
// The kernel hands over the fds of a sendmsg with the read that takes its first
// byte, and ends that read there (unix_stream_read_generic): reading no more than
// the current message still needs never takes the fds of the next one.
Napi::Value RecvSome(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  int64_t maxBytes, maxFds;
  if (!argFd(info, 0, &fd) || !argInt(info, 1, &maxBytes) || !argInt(info, 2, &maxFds)) return env.Undefined();
  if (maxBytes < 1 || maxBytes > (1 << 20) || maxFds < 0 || maxFds > kMaxFdsPerRead) {
    throwCode(env, "EINVAL", "recvSome: 1 byte to 1 MiB and 0 to 253 fds");
    return env.Undefined();
  }
  std::vector<uint8_t> data(static_cast<size_t>(maxBytes));
  std::vector<char> control(maxFds > 0 ? CMSG_SPACE(sizeof(int) * static_cast<size_t>(maxFds)) : 0);
  struct iovec iov = {data.data(), data.size()};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.empty() ? nullptr : control.data();
  msg.msg_controllen = control.size();
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
    throwErrno(env, errno, "reading a message");
    return env.Undefined();
  }
  Napi::Array fds = Napi::Array::New(env);
  if (n >= 0) {
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const int* p = reinterpret_cast<const int*>(CMSG_DATA(c));
      for (size_t i = 0; i < count; i++) fds.Set(fds.Length(), p[i]);
    }
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("data", Napi::Buffer<uint8_t>::Copy(env, data.data(), n > 0 ? static_cast<size_t>(n) : 0));
  out.Set("fds", fds);
  out.Set("end", Napi::Boolean::New(env, n == 0));
  out.Set("fdsCut", Napi::Boolean::New(env, n >= 0 && (msg.msg_flags & MSG_CTRUNC) != 0));
  return out;
}

// The eventfd counter as /proc shows it ("eventfd-count: <hex>"), or false if absent.
bool readEventfdCount(int fd, uint64_t* count) {
  std::string path = "/proc/self/fdinfo/" + std::to_string(fd);
  FILE* f = fopen(path.c_str(), "re");
  if (!f) return false;
  char line[256];
  bool found = false;
  while (fgets(line, sizeof line, f)) {
    unsigned long long value;
    if (sscanf(line, "eventfd-count: %llx", &value) == 1) {
      *count = value;
      found = true;
      break;
    }
  }
  fclose(f);
  return found;
}

// describeFd(fd) -> { kind, nonBlocking, size?, seals?, eventfdCount? }
// kind: 'eventfd', 'file' (regular: memfd, tmpfs, hugetlbfs...), 'socket', 'pipe',
// 'device', 'directory', or 'other' (another anonymous inode: epoll, timerfd...).
// An eventfd is known by its /proc link: anonymous inodes have no file type of
// their own in fstat (newer kernels report them as regular files).
// seals: F_GET_SEALS of a file, -1 where the file system has no seals.
// Nothing here can block: /proc, fstat of an open fd, fcntl.
Napi::Value DescribeFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!argFd(info, 0, &fd)) return env.Undefined();
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) {
    throwErrno(env, errno, "fd " + std::to_string(fd));
    return env.Undefined();
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("nonBlocking", Napi::Boolean::New(env, (flags & O_NONBLOCK) != 0));
  char link[128];
  std::string self = "/proc/self/fd/" + std::to_string(fd);
  ssize_t len = readlink(self.c_str(), link, sizeof link - 1);
  if (len < 0) {
    throwErrno(env, errno, "readlink " + self + " (is /proc mounted?)");
    return env.Undefined();
  }
  link[len] = '\0';
  if (strncmp(link, "anon_inode:", 11) == 0) {
    if (strcmp(link, "anon_inode:[eventfd]") == 0) {
      out.Set("kind", "eventfd");
      uint64_t count;
      if (readEventfdCount(fd, &count)) out.Set("eventfdCount", Napi::BigInt::New(env, count));
    } else if (strcmp(link, "anon_inode:bpf-map") == 0) {
      out.Set("kind", "bpf-map");
    } else {
      out.Set("kind", "other");
    }
    return out;
  }
  struct stat st;
  if (fstat(fd, &st) < 0) {
    throwErrno(env, errno, "fstat of fd " + std::to_string(fd));
    return env.Undefined();
  }
  const char* kind = S_ISREG(st.st_mode)    ? "file"
                     : S_ISSOCK(st.st_mode) ? "socket"
                     : S_ISFIFO(st.st_mode) ? "pipe"
                     : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "device"
                     : S_ISDIR(st.st_mode)  ? "directory"
                                            : "other";
  out.Set("kind", kind);
  if (S_ISREG(st.st_mode)) {
    out.Set("size", Napi::Number::New(env, static_cast<double>(st.st_size)));
    int seals = fcntl(fd, F_GET_SEALS);
    out.Set("seals", Napi::Number::New(env, seals < 0 ? -1 : seals));
  }
  return out;
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
  exports.Set("recvSome", Napi::Function::New(env, RecvSome));
  exports.Set("describeFd", Napi::Function::New(env, DescribeFd));
  exports.Set("acceptNow", Napi::Function::New(env, AcceptNow));
}

}  // namespace vhost_tap
