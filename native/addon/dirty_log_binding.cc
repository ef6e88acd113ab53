// JS handles on the dirty log: NativeDirtyLog (one mapped bitmap) and
// NativeDirtyLogSlot (which log a device's queues write to, switched while they run).
#include "dirty_log_binding.h"

#include "args.h"
#include "errors.h"
#include "modules.h"

namespace vhost_tap {
namespace {

Napi::FunctionReference* logConstructor = nullptr;
Napi::FunctionReference* slotConstructor = nullptr;

bool argUint64(const Napi::CallbackInfo& info, size_t i, const char* what, uint64_t* out) {
  if (info.Length() > i && toUint64(info[i], out)) return true;
  throwCode(info.Env(), "EINVAL", std::string(what) + " must be a non-negative integer");
  return false;
}

class DirtyLogBinding : public Napi::ObjectWrap<DirtyLogBinding> {
 public:
  static void Register(Napi::Env env, Napi::Object exports) {
    Napi::Function ctor = DefineClass(env, "NativeDirtyLog",
                                      {
                                          InstanceMethod("bytes", &DirtyLogBinding::Bytes),
                                          InstanceMethod("collect", &DirtyLogBinding::Collect),
                                          InstanceMethod("outOfRange", &DirtyLogBinding::OutOfRange),
                                          InstanceMethod("close", &DirtyLogBinding::Close),
                                      });
    logConstructor = new Napi::FunctionReference(Napi::Persistent(ctor));
    exports.Set("NativeDirtyLog", ctor);
  }

  // new NativeDirtyLog(fd, size, offset): maps the bitmap; the fd stays the caller's.
  explicit DirtyLogBinding(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DirtyLogBinding>(info) {
    int fd;
    uint64_t size, offset;
    if (!argFd(info, 0, &fd) || !argUint64(info, 1, "log size", &size) || !argUint64(info, 2, "log offset", &offset)) return;
    Status mapped = DirtyLog::map(fd, size, offset, &log_);
    if (!mapped) throwStatus(info.Env(), mapped.prefixed("mapping the dirty log: "));
  }

  static std::shared_ptr<DirtyLog> LogOf(Napi::Env env, Napi::Value value) {
    if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(logConstructor->Value())) {
      throwCode(env, "EINVAL", "expected a NativeDirtyLog");
      return nullptr;
    }
    DirtyLogBinding* self = Unwrap(value.As<Napi::Object>());
    if (!self->log_) throwCode(env, "EBADF", "the dirty log is closed");
    return self->log_;
  }

 private:
  bool open(Napi::Env env) {
    if (!log_) throwCode(env, "EBADF", "the dirty log is closed");
    return log_ != nullptr;
  }
  Napi::Value Bytes(const Napi::CallbackInfo& info) {
    if (!open(info.Env())) return info.Env().Undefined();
    return Napi::Number::New(info.Env(), static_cast<double>(log_->bytes()));
  }
  // collect(clear) -> Buffer: a copy of the bitmap; with clear, the bits are taken (atomically).
  Napi::Value Collect(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bool clear;
    if (!open(env) || !argBool(info, 0, &clear)) return env.Undefined();
    Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(env, static_cast<size_t>(log_->bytes()));
    log_->collect(out.Data(), clear);
    return out;
  }
  Napi::Value OutOfRange(const Napi::CallbackInfo& info) {
    if (!open(info.Env())) return info.Env().Undefined();
    return Napi::Number::New(info.Env(), static_cast<double>(log_->outOfRange()));
  }
  // The mapping goes when the last worker holding it lets go as well.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    log_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<DirtyLog> log_;
};

class DirtyLogSlotBinding : public Napi::ObjectWrap<DirtyLogSlotBinding> {
 public:
  static void Register(Napi::Env env, Napi::Object exports) {
    Napi::Function ctor = DefineClass(env, "NativeDirtyLogSlot", {InstanceMethod("set", &DirtyLogSlotBinding::Set)});
    slotConstructor = new Napi::FunctionReference(Napi::Persistent(ctor));
    exports.Set("NativeDirtyLogSlot", ctor);
  }

  explicit DirtyLogSlotBinding(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<DirtyLogSlotBinding>(info), slot_(std::make_shared<DirtyLogSlot>()) {}

  std::shared_ptr<DirtyLogSlot> slot() const { return slot_; }

 private:
  // set(log | null): the queues write to `log` from now on (or log nothing).
  Napi::Value Set(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || info[0].IsNull() || info[0].IsUndefined()) {
      slot_->set(nullptr);
      return env.Undefined();
    }
    std::shared_ptr<DirtyLog> log = DirtyLogBinding::LogOf(env, info[0]);
    if (log) slot_->set(std::move(log));
    return env.Undefined();
  }

  std::shared_ptr<DirtyLogSlot> slot_;
};

}  // namespace

std::shared_ptr<DirtyLogSlot> DirtyLogSlotOf(Napi::Env env, Napi::Value value) {
  if (!value.IsObject() || !slotConstructor || !value.As<Napi::Object>().InstanceOf(slotConstructor->Value())) {
    throwCode(env, "EINVAL", "expected a NativeDirtyLogSlot");
    return nullptr;
  }
  return Napi::ObjectWrap<DirtyLogSlotBinding>::Unwrap(value.As<Napi::Object>())->slot();
}

void registerDirtyLog(Napi::Env env, Napi::Object exports) {
  DirtyLogBinding::Register(env, exports);
  DirtyLogSlotBinding::Register(env, exports);
}

}  // namespace vhost_tap
