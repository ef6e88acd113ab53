// Argument checks shared by the bindings: a wrong type from JS is a
// programming error in the TS layer, reported as EINVAL, never a crash.
#pragma once
#include <napi.h>
#include <cstdint>
#include <cstdio>
#include <string>

#include "errors.h"

namespace vhost_tap {

// The largest integer a JS number holds exactly (Number.MAX_SAFE_INTEGER).
constexpr double kMaxSafeInteger = 9007199254740991.0;

// The one check every number from JS goes through: a number, not NaN or infinite,
// an integer, from min to max (within +-2^53 - 1); else EINVAL saying which and what
// was given. Nothing is ever cast before it is known to fit, so a value out of range
// is refused, never wrapped.
inline bool checkInteger(Napi::Env env, Napi::Value v, const std::string& what, double min, double max, double* out) {
  if (!v.IsNumber()) {
    throwCode(env, "EINVAL", what + " must be a number");
    return false;
  }
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= min && d <= max) || d != static_cast<double>(static_cast<int64_t>(d))) {
    char given[32];
    snprintf(given, sizeof given, "%.17g", d);
    throwCode(env, "EINVAL", what + " must be an integer from " + std::to_string(static_cast<int64_t>(min)) + " to " +
                                 std::to_string(static_cast<int64_t>(max)) + ", got " + given);
    return false;
  }
  *out = d;
  return true;
}

// Property `key` of a config object, checked as above.
inline bool propInteger(Napi::Env env, Napi::Object obj, const char* key, double min, double max, double* out) {
  return checkInteger(env, obj.Get(key), key, min, max, out);
}

inline bool argInt(const Napi::CallbackInfo& info, size_t i, int64_t* out) {
  double d;
  if (!checkInteger(info.Env(), info.Length() > i ? info[i] : info.Env().Undefined(), "argument " + std::to_string(i),
                    -kMaxSafeInteger, kMaxSafeInteger, &d))
    return false;
  *out = static_cast<int64_t>(d);
  return true;
}

// Argument i, an integer from min to max (as checkInteger): for a value the callee narrows.
inline bool argIntIn(const Napi::CallbackInfo& info, size_t i, double min, double max, int64_t* out) {
  double d;
  if (!checkInteger(info.Env(), info.Length() > i ? info[i] : info.Env().Undefined(), "argument " + std::to_string(i), min, max, &d))
    return false;
  *out = static_cast<int64_t>(d);
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
  if (!(d >= 0 && d <= kMaxSafeInteger) || d != static_cast<double>(static_cast<uint64_t>(d))) return false;
  *out = static_cast<uint64_t>(d);
  return true;
}

// A file descriptor number: an integer from 0 to INT32_MAX, never wrapped (2^32 + 3 is not fd 3).
inline bool toFd(Napi::Value v, int* out) {
  if (!v.IsNumber()) return false;
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= INT32_MAX) || d != static_cast<double>(static_cast<int>(d))) return false;
  *out = static_cast<int>(d);
  return true;
}

// Argument i as a file descriptor: EINVAL if it is not an integer, EBADF if it cannot be one.
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
