// A JS callback that native threads may call (a ThreadSafeFunction that does
// not keep the event loop alive). At environment teardown Node destroys the
// thread-safe function itself, possibly before our finalizers run: releasing
// it again then aborts the process, so we track whether it is gone.
#pragma once
#include <napi.h>

#include <atomic>
#include <memory>

namespace vhost_tap {

class JsCallback {
 public:
  void create(Napi::Env env, Napi::Function fn, const char* name) {
    gone_ = std::make_shared<std::atomic<bool>>(false);
    auto* hold = new std::shared_ptr<std::atomic<bool>>(gone_);
    tsfn_ = Napi::ThreadSafeFunction::New(
        env, fn, name, 0, 1,
        [](Napi::Env, std::shared_ptr<std::atomic<bool>>* h) {
          h->get()->store(true, std::memory_order_release);
          delete h;
        },
        hold);
    tsfn_.Unref(env);
  }

  bool alive() const { return gone_ && !gone_->load(std::memory_order_acquire); }

  // From any thread. False when the environment is going away.
  template <typename Data, typename Callback>
  bool call(Data* data, Callback callback) {
    if (!alive()) return false;
    return tsfn_.NonBlockingCall(data, callback) == napi_ok;
  }

  void ref(Napi::Env env) {
    if (alive()) tsfn_.Ref(env);
  }
  void unref(Napi::Env env) {
    if (alive()) tsfn_.Unref(env);
  }

  // From the JS thread, once no native thread will call any more.
  void release() {
    if (alive()) tsfn_.Release();
    gone_.reset();
  }

 private:
  Napi::ThreadSafeFunction tsfn_;
  std::shared_ptr<std::atomic<bool>> gone_;
};

}  // namespace vhost_tap
