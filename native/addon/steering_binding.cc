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
  int err = 0;
  std::string what, verifierLog;
  if (!loadSteering(&fds, &err, &what, &verifierLog)) {
    throwErrno(env, err, verifierLog.empty() ? what : what + " (verifier: " + verifierLog.substr(0, 2000) + ")");
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
    Napi::Value v = o.Get(key);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0 && d <= max) || d != static_cast<double>(static_cast<uint32_t>(d))) {
      throwCode(env, "EINVAL", std::string(key) + " must be an integer from 0 to " + std::to_string(max));
      return false;
    }
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
    Napi::Value v = t.Get(i % (mask + 1));
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0 && d <= 0xffff) || d != static_cast<double>(static_cast<uint16_t>(d))) {
      throwCode(env, "EINVAL", "table entries must be queue indexes from 0 to 65535");
      return env.Undefined();
    }
    c.table[i] = static_cast<uint16_t>(d);
  }
  c.mode = mode;
  c.hashTypes = hashTypes;
  c.tableMask = static_cast<uint16_t>(mask);
  c.unclassified = static_cast<uint16_t>(unclassified);
  int err = 0;
  if (!configureSteering(mapFd, c, &err)) throwErrno(env, err, "bpf(BPF_MAP_UPDATE_ELEM) of the steering map");
  return env.Undefined();
}

// steeringAttach(tapFd, progFd): progFd -1 detaches.
Napi::Value SteeringAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int tapFd;
  int64_t progFd;
  if (!argFd(info, 0, &tapFd) || !argInt(info, 1, &progFd)) return env.Undefined();
  int err = 0;
  if (!attachSteering(tapFd, static_cast<int>(progFd), &err)) throwErrno(env, err, "TUNSETSTEERINGEBPF");
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
  int err = 0;
  if (!testRunSteering(progFd, frame.Data(), static_cast<uint32_t>(frame.Length()), &retval, &err)) {
    throwErrno(env, err, "bpf(BPF_PROG_TEST_RUN)");
    return env.Undefined();
  }
  return Napi::Number::New(env, retval);
}

// steeringCheckMap(mapFd): throws unless it is this version's steering configuration map.
Napi::Value SteeringCheckMap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int mapFd;
  if (!argFd(info, 0, &mapFd)) return env.Undefined();
  int err = 0;
  std::string why;
  if (!isSteeringMap(mapFd, &err, &why)) throwErrno(env, err, "fd " + std::to_string(mapFd) + " is not a steering map: " + why);
  return env.Undefined();
}

// rcuGracePeriod() -> true once every CPU passed a quiescent state; false if the kernel cannot say.
Napi::Value RcuGracePeriod(const Napi::CallbackInfo& info) {
  int err = 0;
  return Napi::Boolean::New(info.Env(), waitForRcuGracePeriod(&err));
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
