#pragma once
#include <napi.h>

#include <memory>

#include "guest_memory.h"

namespace vhost_tap {

// JS handle on a GuestMemoryMap. Workers and ArrayBuffers handed to JS hold
// their own references, so close() here never unmaps pages still in use.
class GuestMemoryBinding : public Napi::ObjectWrap<GuestMemoryBinding> {
 public:
  static void Register(Napi::Env env, Napi::Object exports);
  explicit GuestMemoryBinding(const Napi::CallbackInfo& info);

  // The map of a NativeGuestMemory object, or nullptr (with a JS exception) if it is not one or is closed.
  static std::shared_ptr<GuestMemoryMap> MapOf(Napi::Env env, Napi::Value value);

 private:
  Napi::Value Buffer(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value RegionCount(const Napi::CallbackInfo& info);

  std::shared_ptr<GuestMemoryMap> map_;
};

}  // namespace vhost_tap
