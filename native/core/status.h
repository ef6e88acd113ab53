// The one way native code says that something failed: an errno (the `code` JS sees:
// "EINVAL", "EBADF", ... with the kernel's own number when the kernel refused), the
// queue fault when a virtqueue broke (its `fault` in JS), and a message that says
// what to do. Core functions return it; the bindings throw it (throwStatus).
#pragma once
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "queue_fault.h"

namespace vhost_tap {

struct [[nodiscard]] Status {
  int err = 0;  // 0: success
  QueueFault fault = QueueFault::kNone;
  std::string message;

  bool ok() const { return err == 0; }
  explicit operator bool() const { return ok(); }

  static Status success() { return {}; }
  // A check of ours refused: `err` names the kind (EINVAL, EBADF, ERANGE...), `message` says what.
  static Status failure(int err, std::string message) { return {err, QueueFault::kNone, std::move(message)}; }
  // A system call failed with `err`: the message is `doing` and the kernel's words for it.
  static Status fromErrno(int err, const std::string& doing) {
    return {err, QueueFault::kNone, doing + ": " + strerror(err)};
  }
  // The driver broke a ring rule (the queue stops): EPROTO, with its fault.
  static Status queueFault(QueueFault fault, std::string message) { return {EPROTO, fault, std::move(message)}; }

  // The same failure with `context` in front of the message ("receive queue: ...").
  Status& prefixed(const std::string& context) {
    message = context + message;
    return *this;
  }
};

}  // namespace vhost_tap
