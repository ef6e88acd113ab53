// Virtqueue layouts: split (virtio 1.x section 2.7) and packed (2.8). All
// fields little-endian (this code runs on little-endian hosts only, checked at
// compile time).
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

// Packed virtqueues (2.8): one ring of descriptors { le64 addr; le32 len; le16 id;
// le16 flags; }, and two event suppression structures { le16 off_wrap; le16 flags; }.
constexpr uint16_t VIRTQ_DESC_F_AVAIL = 1 << 7;
constexpr uint16_t VIRTQ_DESC_F_USED = 1 << 15;
constexpr uint16_t RING_EVENT_FLAGS_ENABLE = 0;
constexpr uint16_t RING_EVENT_FLAGS_DISABLE = 1;
constexpr uint16_t RING_EVENT_FLAGS_DESC = 2;  // only with VIRTIO_F_EVENT_IDX
constexpr uint16_t kPackedWrapBit = 15;          // in off_wrap and in a vhost ring base

struct PackedDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t id;
  uint16_t flags;
};
static_assert(sizeof(PackedDesc) == 16, "packed descriptor is 16 bytes");

struct PackedEventSuppress {
  uint16_t offWrap;
  uint16_t flags;
};
static_assert(sizeof(PackedEventSuppress) == 4, "event suppression structure is 4 bytes");

// Both descriptor layouts are 16 bytes: an 8-byte address, then len and two
// 16-bit fields in the second 8 bytes.
struct DescriptorWords {
  uint64_t addr;
  uint64_t rest;
};

// The driver may rewrite a descriptor while we look at it: read it once, with
// loads the compiler may neither repeat nor defer, and check only the copy. A
// memcpy into a local is one read in today's code generation, but nothing keeps
// an optimiser from fetching a field again from guest memory after its check.
// `restOrder`: a packed ring's flags are in the second word, and seeing them
// AVAIL must order the loads of what the driver wrote before them (acquire).
inline DescriptorWords loadDescriptorWords(const void* desc, int restOrder) {
  const uint64_t* words = static_cast<const uint64_t*>(desc);
  DescriptorWords w;
  w.rest = __atomic_load_n(&words[1], restOrder);
  w.addr = __atomic_load_n(&words[0], __ATOMIC_RELAXED);
  return w;
}

// vring_need_event(): has the index moved past the event the other side asked for?
inline bool needEvent(uint16_t eventIdx, uint16_t newIdx, uint16_t oldIdx) {
  return static_cast<uint16_t>(newIdx - eventIdx - 1) < static_cast<uint16_t>(newIdx - oldIdx);
}

}  // namespace vhost_tap
