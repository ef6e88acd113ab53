#include "errors.h"

#include <cerrno>
#include <cstring>

namespace vhost_tap {

const char* errnoName(int err) {
  switch (err) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case ENODEV: return "ENODEV";
    case ENOTTY: return "ENOTTY";
    case EINVAL: return "EINVAL";
    case ENFILE: return "ENFILE";
    case EMFILE: return "EMFILE";
    case ENOSPC: return "ENOSPC";
    case EPIPE: return "EPIPE";
    case ERANGE: return "ERANGE";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENOSYS: return "ENOSYS";
    case EBADFD: return "EBADFD";
    case ENOTSOCK: return "ENOTSOCK";
    case EMSGSIZE: return "EMSGSIZE";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EADDRINUSE: return "EADDRINUSE";
    case ECONNRESET: return "ECONNRESET";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ENOTCONN: return "ENOTCONN";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EINTR: return "EINTR";
    case EIO: return "EIO";
    case ENXIO: return "ENXIO";
    case E2BIG: return "E2BIG";
    case EOVERFLOW: return "EOVERFLOW";
    case EPROTO: return "EPROTO";
    default: {
      static thread_local char buf[16];
      snprintf(buf, sizeof buf, "E%d", err);
      return buf;
    }
  }
}

void throwErrno(Napi::Env env, int err, const std::string& message) {
  std::string full = message + ": " + strerror(err);
  Napi::Error error = Napi::Error::New(env, full);
  error.Set("code", Napi::String::New(env, errnoName(err)));
  error.Set("errno", Napi::Number::New(env, err));
  error.ThrowAsJavaScriptException();
}

void throwStatus(Napi::Env env, const Status& status) {
  Napi::Error error = Napi::Error::New(env, status.message);
  error.Set("code", Napi::String::New(env, errnoName(status.err)));
  error.Set("errno", Napi::Number::New(env, status.err));
  if (status.fault != QueueFault::kNone) error.Set("fault", Napi::String::New(env, queueFaultCode(status.fault)));
  error.ThrowAsJavaScriptException();
}

void throwCode(Napi::Env env, const char* code, const std::string& message) {
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  error.ThrowAsJavaScriptException();
}

}  // namespace vhost_tap
