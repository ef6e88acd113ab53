// Each native file registers its own bindings; addon.cc only calls these.
#pragma once
#include <napi.h>

namespace vhost_tap {
void registerTap(Napi::Env env, Napi::Object exports);
void registerFdPassing(Napi::Env env, Napi::Object exports);
void registerGuestMemory(Napi::Env env, Napi::Object exports);
void registerEventfd(Napi::Env env, Napi::Object exports);
void registerQueuePair(Napi::Env env, Napi::Object exports);
void registerVirtqueue(Napi::Env env, Napi::Object exports);
void registerMessageIo(Napi::Env env, Napi::Object exports);
void registerDirtyLog(Napi::Env env, Napi::Object exports);
void registerSteering(Napi::Env env, Napi::Object exports);
}  // namespace vhost_tap
