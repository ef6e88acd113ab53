// Errors thrown to JS carry the errno name in `code`, so the TS layer can
// branch on it and add a message that tells the user what to do.
#pragma once
#include <napi.h>
#include <string>

#include "status.h"

namespace vhost_tap {

// Name of an errno value ("EPERM", "EINVAL", ...), or "E<number>" for unknown ones.
const char* errnoName(int err);

// Throws Error(message + ": " + strerror(err)) with code = errnoName(err), errno = err.
void throwErrno(Napi::Env env, int err, const std::string& message);

// Throws Error(message) with the given code (for checks done here, not by the kernel).
void throwCode(Napi::Env env, const char* code, const std::string& message);

// Throws a failed Status from the core: Error(status.message) with code = errnoName(status.err),
// errno = status.err and, when a virtqueue broke, fault = queueFaultCode(status.fault).
void throwStatus(Napi::Env env, const Status& status);

}  // namespace vhost_tap
