// Tap device and queue ioctls (drivers/net/tun.c), and the few netdevice
// ioctls a tap needs right after creation (link up, MTU, MAC, ifindex).
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <net/if_arp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "args.h"
#include "errors.h"
#include "modules.h"

namespace vhost_tap {
namespace {

constexpr unsigned kTunMajor = 10;
constexpr unsigned kTunMinor = 200;

bool copyIfName(Napi::Env env, const std::string& name, char (&dst)[IFNAMSIZ]) {
  if (name.size() >= IFNAMSIZ) {
    throwCode(env, "EINVAL", "interface name '" + name + "' is longer than 15 bytes");
    return false;
  }
  memset(dst, 0, IFNAMSIZ);
  memcpy(dst, name.data(), name.size());
  return true;
}

// tunOpen(name, flags) -> { fd, name }: one queue of a (possibly new) tap.
Napi::Value TunOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  int64_t flags;
  if (!argString(info, 0, &name) || !argIntIn(info, 1, 0, 0xffff, &flags)) return env.Undefined();  // ifr_flags: 16 bits
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (!copyIfName(env, name, ifr.ifr_name)) return env.Undefined();
  ifr.ifr_flags = static_cast<short>(flags);

  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    throwErrno(env, errno, "open /dev/net/tun");
    return env.Undefined();
  }
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    close(fd);
    throwErrno(env, err, "TUNSETIFF " + name);
    return env.Undefined();
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", fd);
  out.Set("name", std::string(ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ)));
  return out;
}

// ioctl with an int argument passed by pointer (TUNSETVNETHDRSZ, TUNSETQUEUE-style).
Napi::Value IoctlSetIntPtr(const Napi::CallbackInfo& info, unsigned long request, const char* what) {
  Napi::Env env = info.Env();
  int fd;
  int64_t value;
  if (!argFd(info, 0, &fd) || !argIntIn(info, 1, INT32_MIN, INT32_MAX, &value)) return env.Undefined();
  int v = static_cast<int>(value);
  if (ioctl(fd, request, &v) < 0) throwErrno(env, errno, what);
  return env.Undefined();
}

// ioctl with an unsigned long argument passed by value (TUNSETPERSIST, TUNSETOFFLOAD, ...).
Napi::Value IoctlSetValue(const Napi::CallbackInfo& info, unsigned long request, const char* what) {
  Napi::Env env = info.Env();
  int fd;
  int64_t value;
  if (!argFd(info, 0, &fd) || !argIntIn(info, 1, 0, kMaxSafeInteger, &value)) return env.Undefined();
  if (ioctl(fd, request, static_cast<unsigned long>(value)) < 0) throwErrno(env, errno, what);
  return env.Undefined();
}

Napi::Value TunSetVnetHdrSize(const Napi::CallbackInfo& info) {
  return IoctlSetIntPtr(info, TUNSETVNETHDRSZ, "TUNSETVNETHDRSZ");
}
Napi::Value TunSetOffload(const Napi::CallbackInfo& info) {
  return IoctlSetValue(info, TUNSETOFFLOAD, "TUNSETOFFLOAD");
}
Napi::Value TunSetPersist(const Napi::CallbackInfo& info) {
  return IoctlSetValue(info, TUNSETPERSIST, "TUNSETPERSIST");
}
Napi::Value TunSetOwner(const Napi::CallbackInfo& info) {
  return IoctlSetValue(info, TUNSETOWNER, "TUNSETOWNER");
}
Napi::Value TunSetGroup(const Napi::CallbackInfo& info) {
  return IoctlSetValue(info, TUNSETGROUP, "TUNSETGROUP");
}

Napi::Value TunGetVnetHdrSize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!argFd(info, 0, &fd)) return env.Undefined();
  int size = 0;
  if (ioctl(fd, TUNGETVNETHDRSZ, &size) < 0) {
    throwErrno(env, errno, "TUNGETVNETHDRSZ");
    return env.Undefined();
  }
  return Napi::Number::New(env, size);
}

Napi::Value TunGetFeatures(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!argFd(info, 0, &fd)) return env.Undefined();
  unsigned int features = 0;
  if (ioctl(fd, TUNGETFEATURES, &features) < 0) {
    throwErrno(env, errno, "TUNGETFEATURES");
    return env.Undefined();
  }
  return Napi::Number::New(env, features);
}

// tunSetQueue(fd, attach): TUNSETQUEUE with IFF_ATTACH_QUEUE or IFF_DETACH_QUEUE.
Napi::Value TunSetQueue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  bool attach;
  if (!argFd(info, 0, &fd) || !argBool(info, 1, &attach)) return env.Undefined();
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = attach ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE;
  if (ioctl(fd, TUNSETQUEUE, &ifr) < 0) throwErrno(env, errno, attach ? "TUNSETQUEUE attach" : "TUNSETQUEUE detach");
  return env.Undefined();
}

// tunGetIff(fd) -> { name, flags } | null: null when the queue is detached
// (the kernel answers EBADFD for a queue that belongs to no device now).
Napi::Value TunGetIff(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!argFd(info, 0, &fd)) return env.Undefined();
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (ioctl(fd, TUNGETIFF, &ifr) < 0) {
    if (errno == EBADFD) return env.Null();
    throwErrno(env, errno, "TUNGETIFF");
    return env.Undefined();
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("name", std::string(ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ)));
  out.Set("flags", Napi::Number::New(env, static_cast<unsigned short>(ifr.ifr_flags)));
  return out;
}

// isTunFd(fd): the fd is an open /dev/net/tun file (a tun/tap queue, attached or not).
Napi::Value IsTunFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!argFd(info, 0, &fd)) return env.Undefined();
  struct stat st;
  if (fstat(fd, &st) < 0) {
    throwErrno(env, errno, "fstat fd " + std::to_string(fd));
    return env.Undefined();
  }
  bool isTun = S_ISCHR(st.st_mode) && major(st.st_rdev) == kTunMajor && minor(st.st_rdev) == kTunMinor;
  return Napi::Boolean::New(env, isTun);
}

// Netdevice ioctls go through any socket; an AF_UNIX one exists in every namespace.
int controlSocket(Napi::Env env) {
  int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) throwErrno(env, errno, "socket for netdevice ioctl");
  return s;
}

bool netdevIoctl(Napi::Env env, unsigned long request, struct ifreq* ifr, const char* what) {
  int s = controlSocket(env);
  if (s < 0) return false;
  int rc = ioctl(s, request, ifr);
  int err = errno;
  close(s);
  if (rc < 0) {
    throwErrno(env, err, std::string(what) + " " + ifr->ifr_name);
    return false;
  }
  return true;
}

// linkSetUp(name, up)
Napi::Value LinkSetUp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  bool up;
  if (!argString(info, 0, &name) || !argBool(info, 1, &up)) return env.Undefined();
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (!copyIfName(env, name, ifr.ifr_name)) return env.Undefined();
  if (!netdevIoctl(env, SIOCGIFFLAGS, &ifr, "SIOCGIFFLAGS")) return env.Undefined();
  if (up) ifr.ifr_flags |= IFF_UP; else ifr.ifr_flags &= ~IFF_UP;
  netdevIoctl(env, SIOCSIFFLAGS, &ifr, "SIOCSIFFLAGS");
  return env.Undefined();
}

Napi::Value LinkSetMtu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  int64_t mtu;
  if (!argString(info, 0, &name) || !argIntIn(info, 1, 0, INT32_MAX, &mtu)) return env.Undefined();
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (!copyIfName(env, name, ifr.ifr_name)) return env.Undefined();
  ifr.ifr_mtu = static_cast<int>(mtu);
  netdevIoctl(env, SIOCSIFMTU, &ifr, "SIOCSIFMTU");
  return env.Undefined();
}

Napi::Value LinkGetMtu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  if (!argString(info, 0, &name)) return env.Undefined();
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (!copyIfName(env, name, ifr.ifr_name)) return env.Undefined();
  if (!netdevIoctl(env, SIOCGIFMTU, &ifr, "SIOCGIFMTU")) return env.Undefined();
  return Napi::Number::New(env, ifr.ifr_mtu);
}

// linkSetMac(name, Buffer(6))
Napi::Value LinkSetMac(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  if (!argString(info, 0, &name)) return env.Undefined();
  if (info.Length() < 2 || !info[1].IsBuffer() || info[1].As<Napi::Buffer<uint8_t>>().Length() != 6) {
    throwCode(env, "EINVAL", "MAC address must be 6 bytes");
    return env.Undefined();
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (!copyIfName(env, name, ifr.ifr_name)) return env.Undefined();
  ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
  memcpy(ifr.ifr_hwaddr.sa_data, info[1].As<Napi::Buffer<uint8_t>>().Data(), 6);
  netdevIoctl(env, SIOCSIFHWADDR, &ifr, "SIOCSIFHWADDR");
  return env.Undefined();
}

Napi::Value LinkGetMac(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  if (!argString(info, 0, &name)) return env.Undefined();
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (!copyIfName(env, name, ifr.ifr_name)) return env.Undefined();
  if (!netdevIoctl(env, SIOCGIFHWADDR, &ifr, "SIOCGIFHWADDR")) return env.Undefined();
  return Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<uint8_t*>(ifr.ifr_hwaddr.sa_data), 6);
}

// linkIndex(name) -> ifindex, or 0 when no such device exists in this namespace.
Napi::Value LinkIndex(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  if (!argString(info, 0, &name)) return env.Undefined();
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (!copyIfName(env, name, ifr.ifr_name)) return env.Undefined();
  int s = controlSocket(env);
  if (s < 0) return env.Undefined();
  int rc = ioctl(s, SIOCGIFINDEX, &ifr);
  int err = errno;
  close(s);
  if (rc < 0) {
    if (err == ENODEV) return Napi::Number::New(env, 0);
    throwErrno(env, err, "SIOCGIFINDEX " + name);
    return env.Undefined();
  }
  return Napi::Number::New(env, ifr.ifr_ifindex);
}

}  // namespace

void registerTap(Napi::Env env, Napi::Object exports) {
  exports.Set("tunOpen", Napi::Function::New(env, TunOpen));
  exports.Set("tunSetVnetHdrSize", Napi::Function::New(env, TunSetVnetHdrSize));
  exports.Set("tunGetVnetHdrSize", Napi::Function::New(env, TunGetVnetHdrSize));
  exports.Set("tunSetOffload", Napi::Function::New(env, TunSetOffload));
  exports.Set("tunSetPersist", Napi::Function::New(env, TunSetPersist));
  exports.Set("tunSetOwner", Napi::Function::New(env, TunSetOwner));
  exports.Set("tunSetGroup", Napi::Function::New(env, TunSetGroup));
  exports.Set("tunGetFeatures", Napi::Function::New(env, TunGetFeatures));
  exports.Set("tunSetQueue", Napi::Function::New(env, TunSetQueue));
  exports.Set("tunGetIff", Napi::Function::New(env, TunGetIff));
  exports.Set("isTunFd", Napi::Function::New(env, IsTunFd));
  exports.Set("linkSetUp", Napi::Function::New(env, LinkSetUp));
  exports.Set("linkSetMtu", Napi::Function::New(env, LinkSetMtu));
  exports.Set("linkGetMtu", Napi::Function::New(env, LinkGetMtu));
  exports.Set("linkSetMac", Napi::Function::New(env, LinkSetMac));
  exports.Set("linkGetMac", Napi::Function::New(env, LinkGetMac));
  exports.Set("linkIndex", Napi::Function::New(env, LinkIndex));
}

}  // namespace vhost_tap
