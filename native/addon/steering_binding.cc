// JS bindings of the steering program (steering.h): load, configure, attach,
// test-run, and the RCU grace period the control plane waits for.
#include <napi.h>
#include <unistd.h>

#include <cstring>

#include "args.h"
#include "errors.h"
#include "modules.h"
#include "steering.h"

namespace vhost_tap {
namespace {

// steeringLoad() -> { prog, map }: two new fds (close-on-exec, as every bpf fd).
Napi::Value SteeringLoad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SteeringFds fds;
  Status loaded = loadSteering(&fds);
  if (!loaded) {
    throwStatus(env, loaded);
    return env.Undefined();
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("prog", fds.prog);
  out.Set("map", fds.map);
  return out;
}

// steeringConfigure(mapFd, { mode, hashTypes, tableMask, unclassified, key: Buffer(40), table: number[] })
Napi::Value SteeringConfigure(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int mapFd;
  if (!argFd(info, 0, &mapFd)) return env.Undefined();
  if (info.Length() < 2 || !info[1].IsObject()) {
    throwCode(env, "EINVAL", "steeringConfigure(mapFd, config)");
    return env.Undefined();
  }
  Napi::Object o = info[1].As<Napi::Object>();
  SteeringConfig c;
  auto u32 = [&](const char* key, uint32_t max, uint32_t* out) {
    double d;
    if (!propInteger(env, o, key, 0, max, &d)) return false;
    *out = static_cast<uint32_t>(d);
    return true;
  };
  uint32_t mode, hashTypes, mask, unclassified;
  if (!u32("mode", 1, &mode) || !u32("hashTypes", 0xffffffffu, &hashTypes) || !u32("tableMask", kSteeringTableEntries - 1, &mask) ||
      !u32("unclassified", 0xffff, &unclassified))
    return env.Undefined();
  if ((mask & (mask + 1)) != 0) {
    throwCode(env, "EINVAL", "tableMask must be a power of two minus one");
    return env.Undefined();
  }
  Napi::Value key = o.Get("key");
  if (!key.IsBuffer() || key.As<Napi::Buffer<uint8_t>>().Length() != kSteeringKeyBytes) {
    throwCode(env, "EINVAL", "key must be a Buffer of 40 bytes");
    return env.Undefined();
  }
  memcpy(c.key, key.As<Napi::Buffer<uint8_t>>().Data(), kSteeringKeyBytes);
  Napi::Value table = o.Get("table");
  if (!table.IsArray() || table.As<Napi::Array>().Length() != mask + 1) {
    throwCode(env, "EINVAL", "table must have tableMask + 1 entries");
    return env.Undefined();
  }
  Napi::Array t = table.As<Napi::Array>();
  for (uint32_t i = 0; i < kSteeringTableEntries; i++) {
    // The program masks with tableMask: entries past it repeat the table, so a mask the
    // map and a reader disagree on can still only name queues of this table.
    double d;
    if (!checkInteger(env, t.Get(i % (mask + 1)), "table entry (a queue index)", 0, 0xffff, &d)) return env.Undefined();
    c.table[i] = static_cast<uint16_t>(d);
  }
  c.mode = mode;
  c.hashTypes = hashTypes;
  c.tableMask = static_cast<uint16_t>(mask);
  c.unclassified = static_cast<uint16_t>(unclassified);
  Status configured = configureSteering(mapFd, c);
  if (!configured) throwStatus(env, configured);
  return env.Undefined();
}

// steeringAttach(tapFd, progFd): progFd -1 detaches.
Napi::Value SteeringAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int tapFd;
  int64_t progFd;
  if (!argFd(info, 0, &tapFd) || !argIntIn(info, 1, -1, INT32_MAX, &progFd)) return env.Undefined();
  Status attached = attachSteering(tapFd, static_cast<int>(progFd));
  if (!attached) throwStatus(env, attached);
  return env.Undefined();
}

// steeringTestRun(progFd, frame) -> the program's return value for that Ethernet frame.
Napi::Value SteeringTestRun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int progFd;
  if (!argFd(info, 0, &progFd)) return env.Undefined();
  if (info.Length() < 2 || !info[1].IsBuffer()) {
    throwCode(env, "EINVAL", "steeringTestRun(progFd, frame: Buffer)");
    return env.Undefined();
  }
  Napi::Buffer<uint8_t> frame = info[1].As<Napi::Buffer<uint8_t>>();
  uint32_t retval = 0;
  Status ran = testRunSteering(progFd, frame.Data(), static_cast<uint32_t>(frame.Length()), &retval);
  if (!ran) {
    throwStatus(env, ran);
    return env.Undefined();
  }
  return Napi::Number::New(env, retval);
}

// steeringCheckMap(mapFd): throws unless it is this version's steering configuration map.
Napi::Value SteeringCheckMap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int mapFd;
  if (!argFd(info, 0, &mapFd)) return env.Undefined();
  Status checked = checkSteeringMap(mapFd);
  if (!checked) throwStatus(env, checked);
  return env.Undefined();
}

// rcuGracePeriod() -> true once every CPU passed a quiescent state; false if the kernel cannot say.
Napi::Value RcuGracePeriod(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), waitForRcuGracePeriod().ok());
}

}  // namespace

void registerSteering(Napi::Env env, Napi::Object exports) {
  exports.Set("steeringLoad", Napi::Function::New(env, SteeringLoad));
  exports.Set("steeringConfigure", Napi::Function::New(env, SteeringConfigure));
  exports.Set("steeringAttach", Napi::Function::New(env, SteeringAttach));
  exports.Set("steeringTestRun", Napi::Function::New(env, SteeringTestRun));
  exports.Set("rcuGracePeriod", Napi::Function::New(env, RcuGracePeriod));
  exports.Set("steeringCheckMap", Napi::Function::New(env, SteeringCheckMap));
}

}  // namespace vhost_tap
