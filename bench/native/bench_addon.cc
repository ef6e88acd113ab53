// vhost_tap_bench.node: the bench's own addon (npm run bench), beside the
// library's vhost_tap.node and on the same core library, so that the addon a
// user installs carries no bench code. It shares no objects with the library's
// addon (Node-API objects do not cross addons): the guest generator maps guest
// memory again from its fds.
#include <napi.h>

#include "bench.h"

namespace {
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  vhost_tap::bench::registerRawLoops(env, exports);
  vhost_tap::bench::registerGuestGenerator(env, exports);
  return exports;
}
}  // namespace

NODE_API_MODULE(vhost_tap_bench, Init)
