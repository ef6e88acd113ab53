// Split virtqueue layout, virtio 1.x section 2.7. All fields little-endian
// (this code runs on little-endian hosts only, checked at compile time).
#pragma once
#include <cstdint>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "vhost-tap assumes a little-endian host");

namespace vhost_tap {

constexpr uint16_t VRING_DESC_F_NEXT = 1;
constexpr uint16_t VRING_DESC_F_WRITE = 2;
constexpr uint16_t VRING_DESC_F_INDIRECT = 4;
constexpr uint16_t VRING_USED_F_NO_NOTIFY = 1;
constexpr uint16_t VRING_AVAIL_F_NO_INTERRUPT = 1;
constexpr uint32_t kMaxQueueSize = 32768;

struct VringDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(VringDesc) == 16, "descriptor is 16 bytes");

struct VringUsedElem {
  uint32_t id;
  uint32_t len;
};

// Byte sizes of the three parts for a queue of `size` entries (with the
// event-idx trailer, which is always reserved by the driver).
inline uint64_t descTableBytes(uint32_t size) { return 16ull * size; }
inline uint64_t availRingBytes(uint32_t size) { return 6ull + 2ull * size; }
inline uint64_t usedRingBytes(uint32_t size) { return 6ull + 8ull * size; }

// vring_need_event(): has the index moved past the event the other side asked for?
inline bool needEvent(uint16_t eventIdx, uint16_t newIdx, uint16_t oldIdx) {
  return static_cast<uint16_t>(newIdx - eventIdx - 1) < static_cast<uint16_t>(newIdx - oldIdx);
}

}  // namespace vhost_tap
