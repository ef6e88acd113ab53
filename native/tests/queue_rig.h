// A device-side queue of either layout over a mock driver in memfd guest memory:
// what the split and packed ring tests set up the same way (memory, driver, a buffer
// arena, the queue and its iovec array), with the layout's driver and queue as
// template parameters.
#pragma once
#include <sys/uio.h>

#include <cstdint>
#include <vector>

#include "mock_driver.h"
#include "queue_common.h"
#include "status.h"
#include "test_runner.h"
#include "test_support.h"

namespace vhost_tap_test {

template <class Queue, class Driver>
struct QueueRig {
  TestMemory memory;
  Driver driver;
  Arena buffers;
  vhost_tap::QueueConfig config;
  Queue queue;
  std::vector<struct iovec> iov = std::vector<struct iovec>(64);

  QueueRig(const std::vector<TestMemory::Region>& regions, uint64_t ringAt, Arena arena, uint32_t size, bool indirect,
           bool eventIdx)
      : memory(regions), driver(memory, ringAt, size), buffers(arena) {
    config = driver.config();
    config.indirectDesc = indirect;
    config.eventIdx = eventIdx;
  }
  void start() {
    vhost_tap::Status ready = queue.setup(memory.map(), config);
    if (!ready) {
      recordFailure(__FILE__, __LINE__, "setup: " + ready.message);
      endCase();
    }
  }
  // A buffer of `len` bytes from the arena, filled with a pattern of `seed`.
  uint64_t buffer(uint32_t len, uint32_t seed = 1) {
    uint64_t at = buffers.take(len);
    std::vector<uint8_t> bytes = pattern(len, seed);
    memory.write(at, bytes.data(), len);
    return at;
  }
  vhost_tap::PopResult pop(bool deviceWrites, vhost_tap::Chain* chain, int maxIov = 64) {
    return queue.pop(deviceWrites, iov.data(), maxIov, chain);
  }
};

}  // namespace vhost_tap_test
