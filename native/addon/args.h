// Argument checks shared by the bindings: a wrong type from JS is a
// programming error in the TS layer, reported as EINVAL, never a crash.
#pragma once
#include <napi.h>
#include <cstdint>
#include <string>

#include "errors.h"

namespace vhost_tap {

inline bool argInt(const Napi::CallbackInfo& info, size_t i, int64_t* out) {
  if (info.Length() <= i || !info[i].IsNumber()) {
    throwCode(info.Env(), "EINVAL", "argument " + std::to_string(i) + " must be a number");
    return false;
  }
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (v != static_cast<double>(static_cast<int64_t>(v))) {
    throwCode(info.Env(), "EINVAL", "argument " + std::to_string(i) + " must be an integer");
    return false;
  }
  *out = static_cast<int64_t>(v);
  return true;
}

// A JS number (a safe integer) or BigInt as a uint64_t; false if it is neither or does not fit.
inline bool toUint64(Napi::Value v, uint64_t* out) {
  if (v.IsBigInt()) {
    bool lossless = false;
    *out = v.As<Napi::BigInt>().Uint64Value(&lossless);
    return lossless;
  }
  if (!v.IsNumber()) return false;
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 9007199254740991.0) || d != static_cast<double>(static_cast<uint64_t>(d))) return false;
  *out = static_cast<uint64_t>(d);
  return true;
}

inline bool argFd(const Napi::CallbackInfo& info, size_t i, int* out) {
  int64_t v;
  if (!argInt(info, i, &v)) return false;
  if (v < 0 || v > INT32_MAX) {
    throwCode(info.Env(), "EBADF", "argument " + std::to_string(i) + " is not a file descriptor");
    return false;
  }
  *out = static_cast<int>(v);
  return true;
}

inline bool argString(const Napi::CallbackInfo& info, size_t i, std::string* out) {
  if (info.Length() <= i || !info[i].IsString()) {
    throwCode(info.Env(), "EINVAL", "argument " + std::to_string(i) + " must be a string");
    return false;
  }
  *out = info[i].As<Napi::String>().Utf8Value();
  return true;
}

inline bool argBool(const Napi::CallbackInfo& info, size_t i, bool* out) {
  if (info.Length() <= i || !info[i].IsBoolean()) {
    throwCode(info.Env(), "EINVAL", "argument " + std::to_string(i) + " must be a boolean");
    return false;
  }
  *out = info[i].As<Napi::Boolean>().Value();
  return true;
}

}  // namespace vhost_tap
