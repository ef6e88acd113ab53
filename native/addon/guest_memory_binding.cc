#include "guest_memory_binding.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

#include "args.h"
#include "errors.h"
#include "modules.h"

namespace vhost_tap {
namespace {

Napi::FunctionReference* constructorRef = nullptr;

bool readUint64(Napi::Env env, Napi::Object obj, const char* key, uint64_t* out, bool optional = false) {
  Napi::Value v = obj.Get(key);
  if (v.IsUndefined() && optional) {
    *out = 0;
    return true;
  }
  if (toUint64(v, out)) return true;
  throwCode(env, "EINVAL", std::string("region.") + key + " must be a non-negative integer");
  return false;
}

// memfdCreate(name, size, sealed = true) -> fd: anonymous shared memory for VMMs
// and tests that have no guest RAM of their own. Sealed against shrinking, so no
// one holding the fd can make our mapping fault; sealed false makes one that a
// frontend could truncate (QEMU's memory-backend-memfd without seal=on), for tests.
Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  int64_t size;
  bool sealed = true;
  if (!argString(info, 0, &name) || !argInt(info, 1, &size)) return env.Undefined();
  if (info.Length() > 2 && !info[2].IsUndefined() && !argBool(info, 2, &sealed)) return env.Undefined();
  if (size <= 0) {
    throwCode(env, "EINVAL", "guest memory size must be positive");
    return env.Undefined();
  }
  int fd = memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) {
    throwErrno(env, errno, "memfd_create");
    return env.Undefined();
  }
  if (ftruncate(fd, size) < 0 || (sealed && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) < 0)) {
    int err = errno;
    close(fd);
    throwErrno(env, err, "sizing guest memory of " + std::to_string(size) + " bytes");
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

// guestMemoryTruncatedPages() -> pages of guest memory replaced with zero pages
// because their file was truncated under the mapping (see guest_memory.cc).
Napi::Value TruncatedPages(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(GuestMemoryMap::truncatedPages()));
}

}  // namespace

GuestMemoryBinding::GuestMemoryBinding(const Napi::CallbackInfo& info) : Napi::ObjectWrap<GuestMemoryBinding>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) {
    throwCode(env, "EINVAL", "NativeGuestMemory takes an array of { guestPhysAddr, size, fd, offset }");
    return;
  }
  Napi::Array list = info[0].As<Napi::Array>();
  if (list.Length() == 0 || list.Length() > 512) {
    throwCode(env, "EINVAL", "guest memory needs 1 to 512 regions");
    return;
  }
  std::vector<RegionSpec> specs;
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Value item = list.Get(i);
    if (!item.IsObject()) {
      throwCode(env, "EINVAL", "each region must be an object { guestPhysAddr, size, fd, offset }");
      return;
    }
    Napi::Object obj = item.As<Napi::Object>();
    RegionSpec spec{};
    uint64_t fd;
    if (!readUint64(env, obj, "guestPhysAddr", &spec.guestPhysAddr) || !readUint64(env, obj, "size", &spec.size) ||
        !readUint64(env, obj, "fd", &fd) || !readUint64(env, obj, "offset", &spec.offset, true))
      return;
    if (fd > INT32_MAX) {
      throwCode(env, "EBADF", "region.fd is not a file descriptor");
      return;
    }
    spec.fd = static_cast<int>(fd);
    specs.push_back(spec);
  }
  Status mapped = GuestMemoryMap::create(specs, &map_);
  if (!mapped) throwStatus(env, mapped.prefixed("mapping guest memory: "));
}

std::shared_ptr<GuestMemoryMap> GuestMemoryBinding::MapOf(Napi::Env env, Napi::Value value) {
  if (!value.IsObject() || !constructorRef || !value.As<Napi::Object>().InstanceOf(constructorRef->Value())) {
    throwCode(env, "EINVAL", "expected a NativeGuestMemory");
    return nullptr;
  }
  GuestMemoryBinding* self = Napi::ObjectWrap<GuestMemoryBinding>::Unwrap(value.As<Napi::Object>());
  if (!self->map_) throwCode(env, "EBADF", "guest memory is closed");
  return self->map_;
}

// buffer(i) -> ArrayBuffer over region i's pages (no copy). The buffer keeps
// the mapping alive until it is garbage-collected.
Napi::Value GuestMemoryBinding::Buffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t index;
  if (!argInt(info, 0, &index)) return env.Undefined();
  if (!map_) {
    throwCode(env, "EBADF", "guest memory is closed");
    return env.Undefined();
  }
  if (index < 0 || static_cast<uint64_t>(index) >= map_->regionCount()) {
    throwCode(env, "EINVAL", "no region " + std::to_string(index));
    return env.Undefined();
  }
  const MappedRegion& r = map_->region(static_cast<size_t>(index));
  auto* hold = new std::shared_ptr<GuestMemoryMap>(map_);
  return Napi::ArrayBuffer::New(env, r.host, static_cast<size_t>(r.size),
                                [](Napi::Env, void*, std::shared_ptr<GuestMemoryMap>* h) { delete h; }, hold);
}

Napi::Value GuestMemoryBinding::Close(const Napi::CallbackInfo& info) {
  map_.reset();
  return info.Env().Undefined();
}

Napi::Value GuestMemoryBinding::RegionCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), map_ ? static_cast<double>(map_->regionCount()) : 0);
}

void GuestMemoryBinding::Register(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = DefineClass(env, "NativeGuestMemory",
                                    {
                                        InstanceMethod("buffer", &GuestMemoryBinding::Buffer),
                                        InstanceMethod("close", &GuestMemoryBinding::Close),
                                        InstanceMethod("regionCount", &GuestMemoryBinding::RegionCount),
                                    });
  constructorRef = new Napi::FunctionReference(Napi::Persistent(ctor));
  exports.Set("NativeGuestMemory", ctor);
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate));
  exports.Set("guestMemoryTruncatedPages", Napi::Function::New(env, TruncatedPages));
}

void registerGuestMemory(Napi::Env env, Napi::Object exports) { GuestMemoryBinding::Register(env, exports); }

}  // namespace vhost_tap
