#include <napi.h>

#include "modules.h"

namespace {
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  vhost_tap::registerTap(env, exports);
  vhost_tap::registerFdPassing(env, exports);
  vhost_tap::registerGuestMemory(env, exports);
  vhost_tap::registerEventfd(env, exports);
  vhost_tap::registerQueuePair(env, exports);
  vhost_tap::registerVirtqueue(env, exports);
  vhost_tap::registerMessageIo(env, exports);
  vhost_tap::registerDirtyLog(env, exports);
  vhost_tap::registerSteering(env, exports);
  return exports;
}
}  // namespace

NODE_API_MODULE(vhost_tap, Init)
