// Errors thrown to JS carry the errno name in `code`, so the TS layer can
// branch on it and add a message that tells the user what to do.
#pragma once
#include <napi.h>
#include <string>

namespace vhost_tap {

// Name of an errno value ("EPERM", "EINVAL", ...), or "E<number>" for unknown ones.
const char* errnoName(int err);

// Throws Error(message + ": " + strerror(err)) with code = errnoName(err), errno = err.
void throwErrno(Napi::Env env, int err, const std::string& message);

// Throws Error(message) with the given code (for checks done here, not by the kernel).
void throwCode(Napi::Env env, const char* code, const std::string& message);

}  // namespace vhost_tap
