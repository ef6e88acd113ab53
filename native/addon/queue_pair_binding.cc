// JS handle on a QueuePairWorker. Events (a queue broke, the tap failed) reach
// JS through a thread-safe function; they are rare, never per frame.
#include <napi.h>

#include <memory>
#include <utility>

#include "args.h"
#include "errors.h"
#include "dirty_log_binding.h"
#include "guest_memory_binding.h"
#include "js_callback.h"
#include "modules.h"
#include "queue_pair_worker.h"

namespace vhost_tap {
namespace {

bool readQueue(Napi::Env env, Napi::Value value, const char* which, QueueConfig* q) {
  if (!value.IsObject()) {
    throwCode(env, "EINVAL", std::string(which) + " queue config is missing");
    return false;
  }
  Napi::Object o = value.As<Napi::Object>();
  double size, desc, avail, used, last, kick, call;
  if (!propInteger(env, o, "size", 1, 32768, &size) || !propInteger(env, o, "descAddr", 0, kMaxSafeInteger, &desc) ||
      !propInteger(env, o, "availAddr", 0, kMaxSafeInteger, &avail) ||
      !propInteger(env, o, "usedAddr", 0, kMaxSafeInteger, &used) ||
      !propInteger(env, o, "lastAvailIdx", 0, o.Get("packed").ToBoolean().Value() ? 4294967295.0 : 65535, &last) || !propInteger(env, o, "kickFd", 0, INT32_MAX, &kick) ||
      !propInteger(env, o, "callFd", -1, INT32_MAX, &call))
    return false;
  q->size = static_cast<uint32_t>(size);
  q->descAddr = static_cast<uint64_t>(desc);
  q->availAddr = static_cast<uint64_t>(avail);
  q->usedAddr = static_cast<uint64_t>(used);
  q->lastAvailIdx = static_cast<uint32_t>(last);
  q->packed = o.Get("packed").ToBoolean().Value();
  q->kickFd = static_cast<int>(kick);
  q->callFd = static_cast<int>(call);
  q->eventIdx = o.Get("eventIdx").ToBoolean().Value();
  q->indirectDesc = o.Get("indirectDesc").ToBoolean().Value();
  if (!o.Get("usedLogAddr").IsUndefined()) {
    double usedLog;
    if (!propInteger(env, o, "usedLogAddr", 0, kMaxSafeInteger, &usedLog)) return false;
    q->usedLogAddr = static_cast<uint64_t>(usedLog);
  }
  if (!o.Get("positionFile").IsUndefined()) {
    // A packed ring's used position, kept in a file that outlives the process (see QueueConfig).
    double offset;
    q->positionFile = GuestMemoryBinding::MapOf(env, o.Get("positionFile"));
    if (!q->positionFile || !propInteger(env, o, "positionOffset", 0, kMaxSafeInteger, &offset)) return false;
    q->positionOffset = static_cast<uint64_t>(offset);
  }
  return true;
}

struct WorkerEvent {
  std::string where;
  QueueFault fault;
  std::string message;
};

class QueuePairBinding : public Napi::ObjectWrap<QueuePairBinding> {
 public:
  static void Register(Napi::Env env, Napi::Object exports) {
    exports.Set("NativeQueuePair", DefineClass(env, "NativeQueuePair",
                                               {
                                                   InstanceMethod("start", &QueuePairBinding::Start),
                                                   InstanceMethod("stop", &QueuePairBinding::Stop),
                                                   InstanceMethod("stats", &QueuePairBinding::Stats),
                                                   InstanceMethod("running", &QueuePairBinding::Running),
                                               }));
  }

  explicit QueuePairBinding(const Napi::CallbackInfo& info) : Napi::ObjectWrap<QueuePairBinding>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction()) {
      throwCode(env, "EINVAL", "NativeQueuePair(config, onEvent)");
      return;
    }
    Napi::Object c = info[0].As<Napi::Object>();
    WorkerOptions options;
    options.memory = GuestMemoryBinding::MapOf(env, c.Get("memory"));
    if (!options.memory) return;
    // txDiscardOnly: a pair out of use whose tx ring stays started (see WorkerOptions):
    // no tap, no rx ring.
    options.txDiscardOnly = c.Get("txDiscardOnly").ToBoolean().Value();
    double tapFd, hdrSize, reserve, maxFrame, busyPollUs;
    if (!propInteger(env, c, "tapFd", options.txDiscardOnly ? -1 : 0, INT32_MAX, &tapFd) || !propInteger(env, c, "hdrSize", 10, 12, &hdrSize) ||
        !propInteger(env, c, "rxReserveBytes", 0, 1 << 20, &reserve) ||
        !propInteger(env, c, "rxMaxFrameBytes", 0, 1 << 20, &maxFrame) ||
        !propInteger(env, c, "busyPollUs", 0, 1000000, &busyPollUs))
      return;
    options.busyPollNs = static_cast<uint64_t>(busyPollUs * 1000);
    options.rxMaxFrameBytes = static_cast<uint32_t>(maxFrame);
    options.tapFd = static_cast<int>(tapFd);
    options.hdrSize = static_cast<uint32_t>(hdrSize);
    options.rxReserveBytes = static_cast<uint32_t>(reserve);
    options.mergeableRx = c.Get("mergeableRx").ToBoolean().Value();
    if ((!options.txDiscardOnly && !readQueue(env, c.Get("rx"), "rx", &options.rx)) ||
        !readQueue(env, c.Get("tx"), "tx", &options.tx))
      return;
    if (!c.Get("dirtyLog").IsUndefined()) {
      // Live migration: both rings log their writes to the device's slot.
      std::shared_ptr<DirtyLogSlot> slot = DirtyLogSlotOf(env, c.Get("dirtyLog"));
      if (!slot) return;
      options.rx.dirtyLog = slot;
      options.tx.dirtyLog = slot;
    }
    rxStartIdx_ = options.rx.lastAvailIdx;
    txStartIdx_ = options.tx.lastAvailIdx;

    events_.create(env, info[1].As<Napi::Function>(), "vhost-tap queue pair events");
    // onEvent(where, message, code): code is queueFaultCode(), the QueueFaultCode of the TS side.
    worker_ = std::make_unique<QueuePairWorker>(std::move(options), [this](const char* where, QueueFault fault, const std::string& message) {
      auto* event = new WorkerEvent{where, fault, message};
      bool sent = events_.call(event, [](Napi::Env env, Napi::Function cb, WorkerEvent* e) {
        std::unique_ptr<WorkerEvent> owned(e);
        if (env != nullptr) {
          cb.Call({Napi::String::New(env, owned->where), Napi::String::New(env, owned->message),
                   Napi::String::New(env, queueFaultCode(owned->fault))});
        }
      });
      if (!sent) delete event;
    });
    Status adopted = worker_->adoptFds();
    if (!adopted) {
      throwStatus(env, adopted);
      return;
    }
    // A worker still running when the environment goes away must stop before it does.
    cleanupHook_ = std::make_unique<CleanupHook>(env.AddCleanupHook(stopAtExit, this));
  }

  ~QueuePairBinding() override {
    // After the hook ran (environment teardown) it is gone: removing it again would corrupt N-API's list.
    if (cleanupHook_ && !cleanupHookRan_) cleanupHook_->Remove(Env());
    if (worker_) worker_->stop();
    worker_.reset();
    events_.release();
  }

 private:
  Napi::Value Start(const Napi::CallbackInfo& info) {
    if (!worker_) {
      throwCode(info.Env(), "EINVAL", "this queue pair failed to start and let go of its guest memory: create a new one");
      return info.Env().Undefined();
    }
    Status started = worker_->start();
    if (!started) {
      // It holds guest memory that the frontend may be taking away right now:
      // let go of it at once, not when this object is garbage-collected.
      worker_.reset();
      throwStatus(info.Env(), started);
    }
    return info.Env().Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    // stop(discardTx?, drainRx?): see QueuePairWorker::stop.
    const bool discardTx = info.Length() > 0 && info[0].IsBoolean() && info[0].As<Napi::Boolean>().Value();
    const bool drainRx = info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
    if (worker_) worker_->stop(discardTx, drainRx);
    Napi::Object out = Napi::Object::New(env);
    // A pair that never ran stopped where it was told to start.
    out.Set("rxLastAvailIdx", worker_ ? worker_->rxLastAvail() : rxStartIdx_);
    out.Set("txLastAvailIdx", worker_ ? worker_->txLastAvail() : txStartIdx_);
    out.Set("rxBroken", worker_ && worker_->rxBroken());
    out.Set("txBroken", worker_ && worker_->txBroken());
    return out;
  }

  Napi::Value Running(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), worker_ && worker_->running()); }

  static Napi::Object statsObject(Napi::Env env, const QueueStats& s) {
    Napi::Object o = Napi::Object::New(env);
    auto put = [&](const char* key, const std::atomic<uint64_t>& v) {
      o.Set(key, Napi::Number::New(env, static_cast<double>(v.load(std::memory_order_relaxed))));
    };
    put("packets", s.packets);
    put("bytes", s.bytes);
    put("kicks", s.kicks);
    put("calls", s.calls);
    put("callsFailed", s.callsFailed);
    put("wakeups", s.wakeups);
    put("batches", s.batches);
    put("errors", s.errors);
    Napi::Object drops = Napi::Object::New(env);
    drops.Set("tooBig", Napi::Number::New(env, static_cast<double>(s.dropTooBig.load(std::memory_order_relaxed))));
    drops.Set("badHeader", Napi::Number::New(env, static_cast<double>(s.dropBadHeader.load(std::memory_order_relaxed))));
    drops.Set("tapError", Napi::Number::New(env, static_cast<double>(s.dropTapError.load(std::memory_order_relaxed))));
    drops.Set("stopped", Napi::Number::New(env, static_cast<double>(s.dropStopped.load(std::memory_order_relaxed))));
    o.Set("drops", drops);
    return o;
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    static const QueueStats none;  // a pair that failed to start moved nothing
    Napi::Object out = Napi::Object::New(env);
    out.Set("rx", statsObject(env, worker_ ? worker_->rxStats : none));
    out.Set("tx", statsObject(env, worker_ ? worker_->txStats : none));
    out.Set("rxBroken", worker_ && worker_->rxBroken());
    out.Set("txBroken", worker_ && worker_->txBroken());
    return out;
  }

  static void stopAtExit(QueuePairBinding* self) {
    self->cleanupHookRan_ = true;
    if (self->worker_) self->worker_->stop();
  }
  using CleanupHook = Napi::Env::CleanupHook<void (*)(QueuePairBinding*), QueuePairBinding>;

  std::unique_ptr<QueuePairWorker> worker_;  // null once a start failed
  uint32_t rxStartIdx_ = 0;
  uint32_t txStartIdx_ = 0;
  std::unique_ptr<CleanupHook> cleanupHook_;
  bool cleanupHookRan_ = false;
  JsCallback events_;
};

}  // namespace

void registerQueuePair(Napi::Env env, Napi::Object exports) { QueuePairBinding::Register(env, exports); }

}  // namespace vhost_tap
