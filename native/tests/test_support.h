// What several test files share: how core types print in a failed check, and
// small helpers around iovecs.
#pragma once
#include <sys/uio.h>

#include <cstdint>
#include <string>
#include <vector>

#include "queue_common.h"
#include "queue_fault.h"
#include "test_runner.h"

namespace vhost_tap_test {

template <>
inline std::string show<vhost_tap::QueueFault>(const vhost_tap::QueueFault& fault) {
  return vhost_tap::queueFaultCode(fault);
}

template <>
inline std::string show<vhost_tap::PopResult>(const vhost_tap::PopResult& result) {
  switch (result) {
    case vhost_tap::PopResult::kChain: return "kChain";
    case vhost_tap::PopResult::kEmpty: return "kEmpty";
    case vhost_tap::PopResult::kBroken: return "kBroken";
    case vhost_tap::PopResult::kNoRoom: return "kNoRoom";
  }
  return "PopResult(" + std::to_string(static_cast<int>(result)) + ")";
}

// The bytes iov[0..count) point at, in order.
inline std::vector<uint8_t> gather(const struct iovec* iov, int count) {
  std::vector<uint8_t> out;
  for (int i = 0; i < count; i++) {
    const uint8_t* p = static_cast<const uint8_t*>(iov[i].iov_base);
    out.insert(out.end(), p, p + iov[i].iov_len);
  }
  return out;
}

// `n` bytes of a pattern that differs with `seed`, so a frame put in the wrong place shows.
inline std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> out(n);
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; i++) {
    x = x * 1103515245u + 12345u;
    out[i] = static_cast<uint8_t>(x >> 16);
  }
  return out;
}

}  // namespace vhost_tap_test
