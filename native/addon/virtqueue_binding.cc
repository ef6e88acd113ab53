// A virtqueue served from JS (the control queue: rare and small), split or packed.
// The device-side walking is the same defensive Virtqueue the workers use;
// JS gets the readable bytes as a copy and hands back what to write.
#include <napi.h>

#include <cstring>
#include <vector>

#include "args.h"
#include "errors.h"
#include "dirty_log_binding.h"
#include "guest_memory_binding.h"
#include "modules.h"
#include "virtqueue.h"

namespace vhost_tap {
namespace {

constexpr int kMaxIov = 64;
constexpr size_t kMaxCommandBytes = 1 << 16;

class VirtqueueBinding : public Napi::ObjectWrap<VirtqueueBinding> {
 public:
  static void Register(Napi::Env env, Napi::Object exports) {
    exports.Set("NativeVirtqueue", DefineClass(env, "NativeVirtqueue",
                                               {
                                                   InstanceMethod("pop", &VirtqueueBinding::Pop),
                                                   InstanceMethod("complete", &VirtqueueBinding::Complete),
                                                   InstanceMethod("needsCall", &VirtqueueBinding::NeedsCall),
                                                   InstanceMethod("enableNotify", &VirtqueueBinding::EnableNotify),
                                                   InstanceMethod("disableNotify", &VirtqueueBinding::DisableNotify),
                                                   InstanceMethod("lastAvailIdx", &VirtqueueBinding::LastAvailIdx),
                                                   InstanceMethod("release", &VirtqueueBinding::Release),
                                               }));
  }

  // new NativeVirtqueue(memory, { size, descAddr, availAddr, usedAddr, eventIdx, indirectDesc, lastAvailIdx })
  explicit VirtqueueBinding(const Napi::CallbackInfo& info) : Napi::ObjectWrap<VirtqueueBinding>(info) {
    Napi::Env env = info.Env();
    std::shared_ptr<GuestMemoryMap> memory = GuestMemoryBinding::MapOf(env, info[0]);
    if (!memory) return;
    if (info.Length() < 2 || !info[1].IsObject()) {
      throwCode(env, "EINVAL", "NativeVirtqueue(memory, config)");
      return;
    }
    Napi::Object o = info[1].As<Napi::Object>();
    QueueConfig c;
    c.packed = o.Get("packed").ToBoolean().Value();
    double size, desc, avail, used, last;
    if (!propInteger(env, o, "size", 1, 32768, &size) || !propInteger(env, o, "descAddr", 0, kMaxSafeInteger, &desc) ||
        !propInteger(env, o, "availAddr", 0, kMaxSafeInteger, &avail) || !propInteger(env, o, "usedAddr", 0, kMaxSafeInteger, &used) ||
        // A split ring's base is its 16-bit last avail index; a packed ring's is vhost-user's 32-bit encoding.
        !propInteger(env, o, "lastAvailIdx", 0, c.packed ? 4294967295.0 : 65535.0, &last))
      return;
    c.size = static_cast<uint32_t>(size);
    c.descAddr = static_cast<uint64_t>(desc);
    c.availAddr = static_cast<uint64_t>(avail);
    c.usedAddr = static_cast<uint64_t>(used);
    c.lastAvailIdx = static_cast<uint32_t>(last);
    c.eventIdx = o.Get("eventIdx").ToBoolean().Value();
    c.indirectDesc = o.Get("indirectDesc").ToBoolean().Value();
    if (!o.Get("dirtyLog").IsUndefined()) {
      c.dirtyLog = DirtyLogSlotOf(env, o.Get("dirtyLog"));
      if (!c.dirtyLog) return;
    }
    if (!o.Get("usedLogAddr").IsUndefined()) {
      double usedLog;
      if (!propInteger(env, o, "usedLogAddr", 0, kMaxSafeInteger, &usedLog)) return;
      c.usedLogAddr = static_cast<uint64_t>(usedLog);
    }
    Status ready = queue_.setup(std::move(memory), c);
    if (!ready) {
      throwStatus(env, ready);
      return;
    }
    iov_.resize(kMaxIov);
  }

 private:
  // pop() -> { head, readable: Buffer, writable: number } | null. Throws EPROTO
  // (with the reason, and its QueueFault code as `fault`) if the driver's ring or chain is malformed.
  Napi::Value Pop(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (released(env)) return env.Undefined();
    if (pending_) {
      throwCode(env, "EBUSY", "complete the popped chain first");
      return env.Undefined();
    }
    Chain chain;
    // A control chain is readable descriptors then writable ones: walk it in two passes.
    PopResult r = queue_.popMixed(iov_.data(), kMaxIov, &chain, &readableIov_);
    if (r == PopResult::kEmpty) return env.Null();
    if (r == PopResult::kNoRoom) queue_.markBroken(QueueFault::kTooManySegments, "control chain has more than 64 segments");
    if (r != PopResult::kChain) {
      throwStatus(env, Status::queueFault(queue_.fault(), queue_.brokenReason()));
      return env.Undefined();
    }
    size_t readable = 0, writable = 0;
    for (int i = 0; i < chain.iovCount; i++) (i < readableIov_ ? readable : writable) += iov_[i].iov_len;
    if (readable > kMaxCommandBytes) readable = kMaxCommandBytes;
    Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(env, readable);
    size_t copied = 0;
    for (int i = 0; i < readableIov_ && copied < readable; i++) {
      size_t n = std::min(iov_[i].iov_len, readable - copied);
      memcpy(out.Data() + copied, iov_[i].iov_base, n);
      copied += n;
    }
    pending_ = true;
    head_ = chain.head;
    descCount_ = chain.descCount;
    iovCount_ = chain.iovCount;
    Napi::Object result = Napi::Object::New(env);
    result.Set("head", head_);
    result.Set("readable", out);
    result.Set("writable", Napi::Number::New(env, static_cast<double>(writable)));
    return result;
  }

  // complete(bytes: Buffer): writes into the popped chain's writable part and
  // returns it on the used ring with the written length.
  Napi::Value Complete(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (released(env)) return env.Undefined();
    if (!pending_) {
      throwCode(env, "EINVAL", "no chain is popped");
      return env.Undefined();
    }
    size_t written = 0;
    if (info.Length() > 0 && info[0].IsBuffer()) {
      Napi::Buffer<uint8_t> data = info[0].As<Napi::Buffer<uint8_t>>();
      for (int i = readableIov_; i < iovCount_ && written < data.Length(); i++) {
        size_t n = std::min(iov_[i].iov_len, data.Length() - written);
        memcpy(iov_[i].iov_base, data.Data() + written, n);
        written += n;
      }
      queue_.logWrite(iov_.data() + readableIov_, iovCount_ - readableIov_, 0, written);
    }
    queue_.pushUsed(head_, static_cast<uint32_t>(written), descCount_);
    queue_.flushUsed();
    pending_ = false;
    return Napi::Number::New(env, static_cast<double>(written));
  }

  Napi::Value NeedsCall(const Napi::CallbackInfo& info) {
    if (released(info.Env())) return info.Env().Undefined();
    return Napi::Boolean::New(info.Env(), queue_.needsCall());
  }
  Napi::Value EnableNotify(const Napi::CallbackInfo& info) {
    if (released(info.Env())) return info.Env().Undefined();
    return Napi::Boolean::New(info.Env(), queue_.enableNotify());
  }
  Napi::Value DisableNotify(const Napi::CallbackInfo& info) {
    if (!released(info.Env())) queue_.disableNotify();
    return info.Env().Undefined();
  }
  // Still valid after release(): where the ring stopped (vhost GET_VRING_BASE).
  Napi::Value LastAvailIdx(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), queue_.ringBase()); }

  // release(): lets go of guest memory now rather than when the object is collected,
  // so a stopped control queue does not keep a VM's memory mapped (the VMM may unmap
  // or free it right after the reset). Only lastAvailIdx() works afterwards.
  Napi::Value Release(const Napi::CallbackInfo& info) {
    queue_.releaseMemory();
    released_ = true;
    pending_ = false;
    return info.Env().Undefined();
  }

  bool released(Napi::Env env) {
    if (released_) throwCode(env, "EINVAL", "the control queue was stopped and its guest memory released: make a new NativeVirtqueue");
    return released_;
  }

  Virtqueue queue_;
  std::vector<struct iovec> iov_;
  int readableIov_ = 0;
  int iovCount_ = 0;
  uint16_t head_ = 0;
  uint16_t descCount_ = 1;
  bool pending_ = false;
  bool released_ = false;
};

}  // namespace

void registerVirtqueue(Napi::Env env, Napi::Object exports) { VirtqueueBinding::Register(env, exports); }

}  // namespace vhost_tap
