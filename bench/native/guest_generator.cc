// Benchmark helper (npm run bench), not part of the library's API: a native
// guest driver that plays the guest over split or packed virtqueues in guest
// memory shared with QueuePairs, fast enough to saturate the data path (the TS
// driver is not). This addon cannot take the library addon's GuestMemory
// object (an ObjectWrap belongs to the addon that made it), so it maps the
// same regions again from their fds, MAP_SHARED: the generator and the data
// path then work on the same pages, each through its own GuestMemoryMap. Same ring layouts as the TS drivers (split:
// descriptor table, available ring + used_event, used ring + avail_event;
// packed: descriptor ring, driver and device event suppression areas) and the
// same rules as Linux's virtio_ring with VIRTIO_RING_F_EVENT_IDX:
//
//   tx    one descriptor per frame (vnet header + frame, prebuilt once), the
//         available index published every `batch` chains, a kick only when
//         vring_need_event(avail_event) says the device asked; completions
//         reaped from the used ring; when every descriptor is in flight it
//         asks for an interrupt after 3/4 of them (virtqueue_enable_cb_delayed)
//         and sleeps on the call eventfd.
//   rx    every buffer posted (mergeable rx: one writable descriptor each),
//         used entries reaped and counted (num_buffers), buffers re-posted,
//         kick if asked; with nothing used it asks for an interrupt on the
//         next entry (NAPI) and sleeps on the call eventfd.
//   ping  one tx frame carrying a sequence number, then wait (call eventfd)
//         for the rx frame that carries it back: a round trip.
//
// Packed rings (virtio 1.2 2.8) do the same with one descriptor per frame
// written into the ring in place, buffer ids from a free list (id i always
// names buffer i); a batch is exposed by storing its first descriptor's flags
// last; used descriptors are reaped while AVAIL == USED == the used wrap
// counter; kicks as virtqueue_kick_prepare_packed decides (the device area's
// DESC offset and wrap, else its flags); calls asked for through the driver
// area (DESC with an offset and wrap, as virtqueue_enable_cb_prepare_packed and
// _delayed_packed do) and turned off (DISABLE) once the driver is awake, as
// virtqueue_disable_cb_packed does.
#include <poll.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <napi.h>

#include "bench.h"
#include "errors.h"
#include "guest_memory.h"
#include "vring.h"

namespace vhost_tap {
namespace {

using bench::nowNs;

struct RingSpec {
  uint32_t size = 0;
  uint64_t descAddr = 0, availAddr = 0, usedAddr = 0;
  uint64_t bufAddr = 0;  // `size` buffers of bufSize bytes, one per descriptor
  uint32_t bufSize = 0;
  int kickFd = -1, callFd = -1;
};

// The driver's view of one split ring. The run loops below are written against
// this interface, which PackedRing has too: post(), publish(), reap(),
// waitUsed(), callsOff(), callOnNext(), exposeWithoutKick().
struct SplitRing {
  uint32_t size = 0;
  VringDesc* desc = nullptr;
  uint16_t* availFlags = nullptr;
  uint16_t* availIdx = nullptr;
  uint16_t* availRing = nullptr;
  uint16_t* usedEvent = nullptr;  // trailer of the available ring (written by us)
  uint16_t* usedFlags = nullptr;
  uint16_t* usedIdx = nullptr;
  VringUsedElem* usedRing = nullptr;
  uint16_t* availEvent = nullptr;  // trailer of the used ring (written by the device)
  std::vector<uint8_t*> buffers;
  uint64_t bufAddr = 0;
  uint32_t bufSize = 0;
  int kickFd = -1, callFd = -1;
  uint16_t shadowAvail = 0;   // our next available index
  uint16_t kickedAvail = 0;   // available index at the last publish
  uint16_t lastUsed = 0;      // next used entry to reap
  std::vector<uint16_t> freeIds;

  bool setup(const std::shared_ptr<GuestMemoryMap>& mem, const RingSpec& s, std::string* err) {
    size = s.size;
    if (size == 0 || (size & (size - 1)) || size > 32768) {
      *err = "ring size must be a power of two";
      return false;
    }
    auto* d = mem->translate(s.descAddr, descTableBytes(size));
    auto* a = mem->translate(s.availAddr, availRingBytes(size));
    auto* u = mem->translate(s.usedAddr, usedRingBytes(size));
    if (!d || !a || !u || !mem->translate(s.bufAddr, static_cast<uint64_t>(s.bufSize) * size)) {
      *err = "rings or buffers are not inside guest memory";
      return false;
    }
    desc = reinterpret_cast<VringDesc*>(d);
    availFlags = reinterpret_cast<uint16_t*>(a);
    availIdx = availFlags + 1;
    availRing = availFlags + 2;
    usedEvent = availRing + size;
    usedFlags = reinterpret_cast<uint16_t*>(u);
    usedIdx = usedFlags + 1;
    usedRing = reinterpret_cast<VringUsedElem*>(u + 4);
    availEvent = reinterpret_cast<uint16_t*>(u + 4 + 8ull * size);
    bufAddr = s.bufAddr;
    bufSize = s.bufSize;
    kickFd = s.kickFd;
    callFd = s.callFd;
    memset(d, 0, descTableBytes(size));
    memset(a, 0, availRingBytes(size));
    memset(u, 0, usedRingBytes(size));
    buffers.resize(size);
    for (uint32_t i = 0; i < size; i++) buffers[i] = mem->translate(bufAddr + static_cast<uint64_t>(bufSize) * i, bufSize);
    freeIds.clear();
    for (uint32_t i = size; i-- > 0;) freeIds.push_back(static_cast<uint16_t>(i));
    shadowAvail = kickedAvail = lastUsed = 0;
    return true;
  }

  void setDesc(uint16_t id, uint32_t len, bool writable) {
    desc[id].addr = bufAddr + static_cast<uint64_t>(bufSize) * id;
    desc[id].len = len;
    desc[id].flags = writable ? VRING_DESC_F_WRITE : 0;
    desc[id].next = 0;
  }

  void post(uint16_t id) { availRing[shadowAvail++ & (size - 1)] = id; }

  // Publishes the posted chains; kicks if the device asked (event idx). Returns whether it kicked.
  bool publish() {
    if (shadowAvail == kickedAvail) return false;
    uint16_t old = kickedAvail;
    __atomic_store_n(availIdx, shadowAvail, __ATOMIC_RELEASE);
    kickedAvail = shadowAvail;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);  // avail idx visible before we read avail_event
    uint16_t event = __atomic_load_n(availEvent, __ATOMIC_RELAXED);
    if (!needEvent(event, shadowAvail, old)) return false;
    uint64_t one = 1;
    return write(kickFd, &one, sizeof one) == sizeof one;
  }

  uint16_t usedNow() const { return __atomic_load_n(usedIdx, __ATOMIC_ACQUIRE); }

  // Calls fn(id, len) for every used entry there is now; returns how many.
  template <class F>
  uint32_t reap(F&& fn) {
    uint16_t used = usedNow();
    uint32_t n = 0;
    while (lastUsed != used) {
      const VringUsedElem& e = usedRing[lastUsed & (size - 1)];
      lastUsed++;
      n++;
      fn(e.id, e.len);
    }
    return n;
  }

  // Makes the posted chains available without a kick (before the device runs).
  void exposeWithoutKick() {
    __atomic_store_n(availIdx, shadowAvail, __ATOMIC_RELEASE);
    kickedAvail = shadowAvail;
  }
  // No interrupt: used_event half the index space ahead (re-armed by the caller as it reaps).
  void callsOff() { __atomic_store_n(usedEvent, static_cast<uint16_t>(lastUsed + 0x7fff), __ATOMIC_RELAXED); }
  // An interrupt for the next used entry.
  void callOnNext() { __atomic_store_n(usedEvent, lastUsed, __ATOMIC_RELAXED); }

  // Asks for an interrupt once the used index reaches lastUsed + after, then
  // sleeps on the call eventfd unless entries already arrived. Returns whether it slept.
  bool waitUsed(uint16_t after, int timeoutMs) {
    __atomic_store_n(usedEvent, static_cast<uint16_t>(lastUsed + after - 1), __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);  // used_event visible before we look again
    uint16_t now = usedNow();
    if (static_cast<uint16_t>(now - lastUsed) >= after) return false;
    struct pollfd p = {callFd, POLLIN, 0};
    int r = poll(&p, 1, timeoutMs);
    if (r > 0) {
      uint64_t v;
      ssize_t ignored = read(callFd, &v, sizeof v);
      (void)ignored;
    }
    return true;
  }
};

// The driver's view of one packed ring (virtio 1.2 2.8): descriptors written in
// place, one per buffer, buffer id i naming buffer i.
struct PackedRing {
  uint32_t size = 0;
  PackedDesc* desc = nullptr;
  PackedEventSuppress* driverEvent = nullptr;  // ours: when the device should call
  PackedEventSuppress* deviceEvent = nullptr;  // the device's: when it wants a kick
  std::vector<uint8_t*> buffers;
  uint64_t bufAddr = 0;
  uint32_t bufSize = 0;
  int kickFd = -1, callFd = -1;
  std::vector<uint32_t> lens;        // per id: the descriptor's len
  std::vector<uint16_t> writeFlags;  // per id: VRING_DESC_F_WRITE or 0
  // 2.8.1: the next slot to make available and the Driver Ring Wrap Counter that goes with it.
  uint32_t nextAvail = 0;
  bool availWrap = true;
  // 2.8.22: the next slot a used descriptor is expected in, and its wrap counter.
  uint32_t nextUsed = 0;
  bool usedWrap = true;
  // The batch being posted: its first descriptor's flags are stored last, by publish().
  uint32_t batchCount = 0;
  uint32_t batchFirstSlot = 0;
  uint16_t batchFirstFlags = 0;
  uint16_t callFlags = RING_EVENT_FLAGS_ENABLE;  // what the driver area's flags say now
  std::vector<uint16_t> freeIds;

  bool setup(const std::shared_ptr<GuestMemoryMap>& mem, const RingSpec& s, std::string* err) {
    size = s.size;
    if (size == 0 || size > 32768) {
      *err = "packed ring size must be from 1 to 32768";
      return false;
    }
    if ((s.descAddr & 15) || (s.availAddr & 3) || (s.usedAddr & 3)) {
      *err = "packed ring areas are misaligned (descriptors 16, event suppression 4 bytes)";
      return false;
    }
    auto* d = mem->translate(s.descAddr, 16ull * size);
    auto* drv = mem->translate(s.availAddr, sizeof(PackedEventSuppress));
    auto* dev = mem->translate(s.usedAddr, sizeof(PackedEventSuppress));
    if (!d || !drv || !dev || !mem->translate(s.bufAddr, static_cast<uint64_t>(s.bufSize) * size)) {
      *err = "rings or buffers are not inside guest memory";
      return false;
    }
    desc = reinterpret_cast<PackedDesc*>(d);
    driverEvent = reinterpret_cast<PackedEventSuppress*>(drv);
    deviceEvent = reinterpret_cast<PackedEventSuppress*>(dev);
    bufAddr = s.bufAddr;
    bufSize = s.bufSize;
    kickFd = s.kickFd;
    callFd = s.callFd;
    memset(d, 0, 16ull * size);  // 2.8.13: the descriptor ring starts zeroed (nothing available)
    memset(drv, 0, sizeof(PackedEventSuppress));
    memset(dev, 0, sizeof(PackedEventSuppress));
    callFlags = RING_EVENT_FLAGS_ENABLE;
    buffers.resize(size);
    lens.assign(size, 0);
    writeFlags.assign(size, 0);
    for (uint32_t i = 0; i < size; i++) buffers[i] = mem->translate(bufAddr + static_cast<uint64_t>(bufSize) * i, bufSize);
    freeIds.clear();
    for (uint32_t i = size; i-- > 0;) freeIds.push_back(static_cast<uint16_t>(i));
    nextAvail = nextUsed = 0;
    availWrap = usedWrap = true;
    batchCount = 0;
    return true;
  }

  void setDesc(uint16_t id, uint32_t len, bool writable) {
    lens[id] = len;
    writeFlags[id] = writable ? VRING_DESC_F_WRITE : 0;
  }

  // Writes buffer `id` into the next slot: available at once, unless it is the
  // first of the batch, whose flags wait for publish().
  void post(uint16_t id) {
    PackedDesc* d = &desc[nextAvail];
    const uint16_t flags = writeFlags[id] | (availWrap ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED);
    d->addr = bufAddr + static_cast<uint64_t>(bufSize) * id;
    if (batchCount++ == 0) {
      // The slot still holds a used descriptor we reaped: the device reads no
      // further than its flags, which stay as they are until publish().
      d->len = lens[id];
      d->id = id;
      batchFirstSlot = nextAvail;
      batchFirstFlags = flags;
    } else {
      // len, id and flags in one store, after addr (2.8.21.1: the barrier before the flags).
      const uint64_t rest = lens[id] | (static_cast<uint64_t>(id) << 32) | (static_cast<uint64_t>(flags) << 48);
      __atomic_store_n(&reinterpret_cast<uint64_t*>(d)[1], rest, __ATOMIC_RELEASE);
    }
    if (++nextAvail == size) {
      nextAvail = 0;
      availWrap = !availWrap;
    }
  }

  void exposeBatch() { __atomic_store_n(&desc[batchFirstSlot].flags, batchFirstFlags, __ATOMIC_RELEASE); }

  // Exposes the batch (its first flags last); kicks if the device asked, as
  // virtqueue_kick_prepare_packed decides. Returns whether it kicked.
  bool publish() {
    if (batchCount == 0) return false;
    const uint16_t added = static_cast<uint16_t>(batchCount);
    exposeBatch();
    batchCount = 0;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);  // the flags visible before we read the device's wishes
    // off_wrap and flags as one snapshot.
    const uint32_t snap = __atomic_load_n(reinterpret_cast<const uint32_t*>(deviceEvent), __ATOMIC_RELAXED);
    const uint16_t offWrap = static_cast<uint16_t>(snap);
    const uint16_t flags = static_cast<uint16_t>(snap >> 16) & 3;
    bool kick;
    if (flags != RING_EVENT_FLAGS_DESC) {
      kick = flags != RING_EVENT_FLAGS_DISABLE;
    } else {
      uint16_t event = offWrap & 0x7fff;
      if (((offWrap >> kPackedWrapBit) & 1) != static_cast<uint16_t>(availWrap)) event = static_cast<uint16_t>(event - size);
      const uint16_t now = static_cast<uint16_t>(nextAvail);
      kick = needEvent(event, now, static_cast<uint16_t>(now - added));
    }
    if (!kick) return false;
    uint64_t one = 1;
    return write(kickFd, &one, sizeof one) == sizeof one;
  }

  void exposeWithoutKick() {
    if (batchCount == 0) return;
    exposeBatch();
    batchCount = 0;
  }

  bool isUsed(uint32_t slot, bool wrap) const {
    const uint16_t flags = __atomic_load_n(&desc[slot].flags, __ATOMIC_ACQUIRE);
    return ((flags & VIRTQ_DESC_F_AVAIL) != 0) == wrap && ((flags & VIRTQ_DESC_F_USED) != 0) == wrap;
  }

  // Calls fn(id, len) for every used descriptor there is now; returns how many.
  template <class F>
  uint32_t reap(F&& fn) {
    uint32_t n = 0;
    while (isUsed(nextUsed, usedWrap)) {  // acquire: id and len are read after the flags
      const uint16_t id = desc[nextUsed].id;
      const uint32_t len = desc[nextUsed].len;
      if (++nextUsed == size) {  // one descriptor per buffer: the next one follows
        nextUsed = 0;
        usedWrap = !usedWrap;
      }
      n++;
      fn(id, len);
    }
    return n;
  }

  void setCallFlags(uint16_t flags) {
    if (callFlags == flags) return;
    callFlags = flags;
    __atomic_store_n(&driverEvent->flags, flags, __ATOMIC_RELEASE);
  }
  void callsOff() { setCallFlags(RING_EVENT_FLAGS_DISABLE); }
  // An interrupt at the next used descriptor (virtqueue_enable_cb_prepare_packed).
  void callOnNext() {
    __atomic_store_n(&driverEvent->offWrap, static_cast<uint16_t>(nextUsed | (static_cast<uint32_t>(usedWrap) << kPackedWrapBit)), __ATOMIC_RELAXED);
    setCallFlags(RING_EVENT_FLAGS_DESC);
  }

  // Asks for an interrupt when the descriptor `after` used ones from here is
  // used, then sleeps on the call eventfd unless it already is; turns calls off
  // again once awake (the interrupt handler's virtqueue_disable_cb). Returns whether it slept.
  bool waitUsed(uint16_t after, int timeoutMs) {
    uint32_t slot = nextUsed + (after > 0 ? after - 1u : 0u);
    bool wrap = usedWrap;
    if (slot >= size) {
      slot -= size;
      wrap = !wrap;
    }
    __atomic_store_n(&driverEvent->offWrap, static_cast<uint16_t>(slot | (static_cast<uint32_t>(wrap) << kPackedWrapBit)), __ATOMIC_RELAXED);
    setCallFlags(RING_EVENT_FLAGS_DESC);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);  // our wish visible before we look again
    if (isUsed(slot, wrap)) {
      callsOff();
      return false;
    }
    struct pollfd p = {callFd, POLLIN, 0};
    int r = poll(&p, 1, timeoutMs);
    if (r > 0) {
      uint64_t v;
      ssize_t ignored = read(callFd, &v, sizeof v);
      (void)ignored;
    }
    callsOff();
    return true;
  }
};

struct Counters {
  std::atomic<uint64_t> packets{0}, bytes{0}, kicks{0}, sleeps{0}, publishes{0}, errors{0};
};

enum class Mode { kTx, kRx, kPing };

class BenchGuest : public Napi::ObjectWrap<BenchGuest> {
 public:
  static void Register(Napi::Env env, Napi::Object exports) {
    exports.Set("BenchGuest", DefineClass(env, "BenchGuest",
                                          {
                                              InstanceMethod("start", &BenchGuest::Start),
                                              InstanceMethod("stats", &BenchGuest::Stats),
                                              InstanceMethod("stop", &BenchGuest::Stop),
                                          }));
  }

  explicit BenchGuest(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BenchGuest>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) {
      throwCode(env, "EINVAL", "BenchGuest({ regions, mode, pairs, frame, ... })");
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    memory_ = mapRegions(env, o.Get("regions"));
    if (!memory_) return;
    std::string mode = o.Get("mode").IsString() ? o.Get("mode").As<Napi::String>().Utf8Value() : "";
    if (mode == "tx") mode_ = Mode::kTx;
    else if (mode == "rx") mode_ = Mode::kRx;
    else if (mode == "ping") mode_ = Mode::kPing;
    else {
      throwCode(env, "EINVAL", "mode must be tx, rx or ping");
      return;
    }
    auto num = [&](const char* key, double dflt) {
      Napi::Value v = o.Get(key);
      return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : dflt;
    };
    batch_ = std::max(1, static_cast<int>(num("batch", 32)));
    pollTx_ = o.Get("pollTx").ToBoolean().Value();
    packed_ = o.Get("packed").ToBoolean().Value();
    hdrSize_ = static_cast<uint32_t>(num("hdrSize", 12));
    maxSeconds_ = num("maxSeconds", 120);
    count_ = static_cast<uint64_t>(num("count", 1000));
    intervalNs_ = static_cast<uint64_t>(num("intervalUs", 100) * 1000);
    seqOffset_ = static_cast<size_t>(num("seqOffset", 0));
    cpu_ = static_cast<int>(num("cpu", -1));
    nice_ = static_cast<int>(num("nice", 0));
    if (o.Get("frame").IsBuffer()) {
      auto b = o.Get("frame").As<Napi::Buffer<uint8_t>>();
      frame_.assign(b.Data(), b.Data() + b.Length());
    }
    if (mode_ != Mode::kRx && frame_.size() <= hdrSize_) {
      throwCode(env, "EINVAL", "frame (vnet header + frame) is required for tx and ping");
      return;
    }
    Napi::Value pv = o.Get("pairs");
    if (!pv.IsArray() || pv.As<Napi::Array>().Length() == 0) {
      throwCode(env, "EINVAL", "pairs: [{ rx: ring, tx: ring }] is required");
      return;
    }
    Napi::Array pairs = pv.As<Napi::Array>();
    for (uint32_t i = 0; i < pairs.Length(); i++) {
      Napi::Object p = pairs.Get(i).As<Napi::Object>();
      auto ring = [&](const char* which) {
        RingSpec s;
        Napi::Object r = p.Get(which).As<Napi::Object>();
        auto n = [&](const char* key) { return r.Get(key).As<Napi::Number>().DoubleValue(); };
        s.size = static_cast<uint32_t>(n("size"));
        s.descAddr = static_cast<uint64_t>(n("descAddr"));
        s.availAddr = static_cast<uint64_t>(n("availAddr"));
        s.usedAddr = static_cast<uint64_t>(n("usedAddr"));
        s.bufAddr = static_cast<uint64_t>(n("bufAddr"));
        s.bufSize = static_cast<uint32_t>(n("bufSize"));
        s.kickFd = static_cast<int>(n("kickFd"));
        s.callFd = static_cast<int>(n("callFd"));
        return s;
      };
      std::string err;
      bool ok = packed_ ? addPair<PackedRing>(ring("rx"), ring("tx"), &err) : addPair<SplitRing>(ring("rx"), ring("tx"), &err);
      if (!ok) {
        throwCode(env, "EINVAL", "pair " + std::to_string(i) + ": " + err);
        return;
      }
      if (mode_ == Mode::kPing) break;  // one pair is enough for a ping-pong
    }
  }

  ~BenchGuest() override { halt(); }

 private:
  // regions: [{ guestPhysAddr, size, fd, offset }] as GuestMemory#regions has them, their fds
  // open until this returns (the mappings stay). nullptr with a JS exception if they do not map.
  static std::shared_ptr<GuestMemoryMap> mapRegions(Napi::Env env, Napi::Value value) {
    if (!value.IsArray() || value.As<Napi::Array>().Length() == 0) {
      throwCode(env, "EINVAL", "regions: [{ guestPhysAddr, size, fd, offset }] (GuestMemory#regions) is required");
      return nullptr;
    }
    Napi::Array list = value.As<Napi::Array>();
    std::vector<RegionSpec> specs;
    for (uint32_t i = 0; i < list.Length(); i++) {
      Napi::Value item = list.Get(i);
      if (!item.IsObject()) {
        throwCode(env, "EINVAL", "region " + std::to_string(i) + " is not an object");
        return nullptr;
      }
      Napi::Object r = item.As<Napi::Object>();
      double field[4];
      const char* names[4] = {"guestPhysAddr", "size", "fd", "offset"};
      for (int k = 0; k < 4; k++) {
        Napi::Value v = r.Get(names[k]);
        double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
        if (!(d >= 0 && d <= 9007199254740991.0) || d != static_cast<double>(static_cast<uint64_t>(d))) {
          throwCode(env, "EINVAL", "region " + std::to_string(i) + "." + names[k] + " must be a non-negative integer");
          return nullptr;
        }
        field[k] = d;
      }
      if (field[2] > INT32_MAX) {
        throwCode(env, "EBADF", "region " + std::to_string(i) + ".fd is not a file descriptor");
        return nullptr;
      }
      specs.push_back({static_cast<uint64_t>(field[0]), static_cast<uint64_t>(field[1]), static_cast<int>(field[2]),
                       static_cast<uint64_t>(field[3])});
    }
    int err = 0;
    std::string what;
    std::shared_ptr<GuestMemoryMap> map = GuestMemoryMap::create(specs, &err, &what);
    if (!map) throwErrno(env, err, "mapping guest memory: " + what);
    return map;
  }

  // What a generator thread keeps, whatever its rings' layout.
  struct PairState {
    virtual ~PairState() = default;
    std::function<void()> run;  // the mode's loop over this pair's rings
    Counters c;
    std::thread thread;
    std::atomic<bool> alive{false};
    std::atomic<int> tid{0};
    double cpuAtExit = 0;
    std::vector<uint64_t> rtts;
    uint64_t lost = 0;
    uint32_t rxPending = 0;  // later buffers of a merged rx frame still to come
  };
  template <class R>
  struct Pair : PairState {
    R rx, tx;
  };

  template <class R>
  bool addPair(const RingSpec& rx, const RingSpec& tx, std::string* err) {
    auto pair = std::make_unique<Pair<R>>();
    if (!pair->rx.setup(memory_, rx, err) || !pair->tx.setup(memory_, tx, err)) return false;
    if (mode_ != Mode::kRx && pair->tx.bufSize < frame_.size()) {
      *err = "tx buffers are smaller than the frame";
      return false;
    }
    // The rings must be laid out before the device starts (it reads them then).
    prepare(*pair);
    Pair<R>* p = pair.get();
    pair->run = [this, p] {
      if (mode_ == Mode::kTx) runTx(*p);
      else if (mode_ == Mode::kRx) runRx(*p);
      else runPing(*p);
    };
    pairs_.push_back(std::move(pair));
    return true;
  }

  template <class R>
  void prepare(Pair<R>& p) {
    if (mode_ == Mode::kTx || mode_ == Mode::kPing) {
      // Every tx buffer holds the frame already: posting a chain is writing one ring entry.
      for (uint32_t i = 0; i < p.tx.size; i++) {
        memcpy(p.tx.buffers[i], frame_.data(), frame_.size());
        p.tx.setDesc(static_cast<uint16_t>(i), static_cast<uint32_t>(frame_.size()), false);
      }
    }
    for (uint32_t i = 0; i < p.rx.size; i++) p.rx.setDesc(static_cast<uint16_t>(i), p.rx.bufSize, true);
    if (mode_ == Mode::kRx || mode_ == Mode::kPing) {
      // All rx buffers posted before the device starts (the driver does this before DRIVER_OK).
      while (!p.rx.freeIds.empty()) {
        p.rx.post(p.rx.freeIds.back());
        p.rx.freeIds.pop_back();
      }
      p.rx.exposeWithoutKick();
    }
    // Interrupts: rx wants one for the first entry, tx none until it runs out.
    p.rx.callOnNext();
    p.tx.callsOff();
  }

  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (started_) {
      throwCode(env, "EINVAL", "already started");
      return env.Undefined();
    }
    started_ = true;
    stop_ = false;
    startNs_ = nowNs();
    for (auto& up : pairs_) {
      PairState* p = up.get();
      p->alive = true;
      p->thread = std::thread([this, p] {
        p->tid = static_cast<int>(syscall(SYS_gettid));
        // The guest's vCPU: pinned, so the device thread has the other core, as with a real VMM.
        bench::pinThisThread(cpu_);
        // A vCPU that gets its core when it needs it, even beside a busy host process.
        if (nice_ != 0) setpriority(PRIO_PROCESS, static_cast<id_t>(p->tid.load()), nice_);
        p->run();
        struct timespec ts;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        p->cpuAtExit = ts.tv_sec + ts.tv_nsec / 1e9;
        p->alive = false;
      });
    }
    return env.Undefined();
  }

  double cpuOf(PairState& p) {
    if (!p.alive || !p.thread.joinable()) return p.cpuAtExit;
    clockid_t cid;
    struct timespec ts;
    if (pthread_getcpuclockid(p.thread.native_handle(), &cid) != 0 || clock_gettime(cid, &ts) != 0) return p.cpuAtExit;
    return ts.tv_sec + ts.tv_nsec / 1e9;
  }

  Napi::Object statsObject(Napi::Env env) {
    Napi::Object o = Napi::Object::New(env);
    uint64_t packets = 0, bytes = 0, kicks = 0, sleeps = 0, publishes = 0, errors = 0;
    double cpu = 0;
    bool done = true;
    Napi::Array per = Napi::Array::New(env);
    Napi::Array tids = Napi::Array::New(env);
    for (size_t i = 0; i < pairs_.size(); i++) {
      PairState& p = *pairs_[i];
      Napi::Object q = Napi::Object::New(env);
      q.Set("packets", static_cast<double>(p.c.packets.load()));
      q.Set("kicks", static_cast<double>(p.c.kicks.load()));
      q.Set("sleeps", static_cast<double>(p.c.sleeps.load()));
      per.Set(static_cast<uint32_t>(i), q);
      tids.Set(static_cast<uint32_t>(i), p.tid.load());
      packets += p.c.packets;
      bytes += p.c.bytes;
      kicks += p.c.kicks;
      sleeps += p.c.sleeps;
      publishes += p.c.publishes;
      errors += p.c.errors;
      cpu += cpuOf(p);
      done = done && !p.alive;
    }
    o.Set("packets", static_cast<double>(packets));
    o.Set("bytes", static_cast<double>(bytes));
    o.Set("kicks", static_cast<double>(kicks));
    o.Set("sleeps", static_cast<double>(sleeps));
    o.Set("publishes", static_cast<double>(publishes));
    o.Set("errors", static_cast<double>(errors));
    o.Set("cpuSeconds", cpu);
    o.Set("done", started_ && done);
    o.Set("tids", tids);
    o.Set("pairs", per);
    return o;
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) { return statsObject(info.Env()); }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    halt();
    Napi::Object o = statsObject(info.Env());
    if (mode_ == Mode::kPing && !pairs_.empty()) o.Set("rtt", bench::rttSummary(info.Env(), pairs_[0]->rtts, pairs_[0]->lost));
    return o;
  }

  void halt() {
    stop_ = true;
    for (auto& p : pairs_)
      if (p->thread.joinable()) p->thread.join();
  }

  bool expired() const { return stop_.load(std::memory_order_relaxed) || (nowNs() - startNs_) > maxSeconds_ * 1e9; }

  // Reaps tx completions; returns how many.
  template <class R>
  static uint32_t reapTx(Pair<R>& p) {
    R& t = p.tx;
    return t.reap([&](uint32_t id, uint32_t) { t.freeIds.push_back(static_cast<uint16_t>(id)); });
  }

  template <class R>
  void runTx(Pair<R>& p) {
    R& t = p.tx;
    const uint64_t frameBytes = frame_.size() - hdrSize_;
    uint64_t iter = 0;
    while ((++iter & 63) != 0 || !expired()) {
      uint32_t done = reapTx(p);
      // Polling: the device never needs to call (split: used_event kept half the index space
      // ahead; packed: the driver area's flags say DISABLE, written once).
      if (pollTx_) t.callsOff();
      if (done) {
        p.c.packets.fetch_add(done, std::memory_order_relaxed);
        p.c.bytes.fetch_add(done * frameBytes, std::memory_order_relaxed);
      }
      if (t.freeIds.empty()) {
        if (pollTx_) {
          __builtin_ia32_pause();
          continue;
        }
        // Every descriptor in flight: interrupt after 3/4 of them complete.
        if (t.waitUsed(static_cast<uint16_t>(t.size * 3 / 4), 2)) p.c.sleeps.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      int n = 0;
      while (!t.freeIds.empty() && n < batch_) {
        t.post(t.freeIds.back());
        t.freeIds.pop_back();
        n++;
      }
      p.c.publishes.fetch_add(1, std::memory_order_relaxed);
      if (t.publish()) p.c.kicks.fetch_add(1, std::memory_order_relaxed);
    }
  }

  // Reaps rx entries, counts frames, re-posts the buffers. Returns entries reaped.
  template <class R>
  uint32_t reapRx(Pair<R>& p, uint32_t* matchSeq = nullptr, bool* matched = nullptr) {
    R& r = p.rx;
    return r.reap([&](uint32_t usedId, uint32_t len) {
      if (usedId >= r.size) {
        p.c.errors.fetch_add(1);
        return;
      }
      const uint16_t id = static_cast<uint16_t>(usedId);
      if (p.rxPending > 0) {
        p.rxPending--;  // a later buffer of a merged frame
        p.c.bytes.fetch_add(len, std::memory_order_relaxed);
      } else {
        const uint8_t* buf = r.buffers[id];
        uint16_t numBuffers = 1;
        if (hdrSize_ == 12) memcpy(&numBuffers, buf + 10, 2);
        p.rxPending = numBuffers > 0 ? numBuffers - 1 : 0;
        p.c.packets.fetch_add(1, std::memory_order_relaxed);
        p.c.bytes.fetch_add(len >= hdrSize_ ? len - hdrSize_ : 0, std::memory_order_relaxed);
        if (matchSeq && len >= seqOffset_ + 4 && memcmp(buf + seqOffset_, matchSeq, 4) == 0) *matched = true;
      }
      r.post(id);
    });
  }

  template <class R>
  void runRx(Pair<R>& p) {
    R& r = p.rx;
    p.rxPending = 0;
    // The buffers were posted before the device started; one kick in case it is already waiting.
    uint64_t one = 1;
    if (write(r.kickFd, &one, sizeof one) == sizeof one) p.c.kicks.fetch_add(1);
    uint64_t iter = 0;
    while ((++iter & 63) != 0 || !expired()) {
      if (reapRx(p) > 0) {
        p.c.publishes.fetch_add(1, std::memory_order_relaxed);
        if (r.publish()) p.c.kicks.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      // Nothing used: interrupt on the next entry (NAPI re-enabling its callback), then sleep.
      if (r.waitUsed(1, 2)) p.c.sleeps.fetch_add(1, std::memory_order_relaxed);
    }
  }

  template <class R>
  void runPing(Pair<R>& p) {
    R& t = p.tx;
    R& r = p.rx;
    p.rxPending = 0;
    uint64_t one = 1;
    if (write(r.kickFd, &one, sizeof one) == sizeof one) p.c.kicks.fetch_add(1);
    bench::sleepNs(20000000);  // let the device settle; drop whatever chatter arrived
    if (reapRx(p) > 0) r.publish();
    p.rtts.reserve(count_);
    for (uint64_t i = 0; i < count_ && !expired(); i++) {
      reapTx(p);
      if (t.freeIds.empty()) {
        t.waitUsed(1, 100);
        p.lost++;
        continue;
      }
      uint32_t seq = static_cast<uint32_t>(i + 1);
      uint16_t id = t.freeIds.back();
      t.freeIds.pop_back();
      memcpy(t.buffers[id] + seqOffset_, &seq, 4);
      uint64_t t0 = nowNs();
      t.post(id);
      if (t.publish()) p.c.kicks.fetch_add(1, std::memory_order_relaxed);
      bool matched = false;
      while (!matched) {
        if (reapRx(p, &seq, &matched) > 0) {
          if (r.publish()) p.c.kicks.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        if ((nowNs() - t0) > 1000000000ull) break;
        if (r.waitUsed(1, 100)) p.c.sleeps.fetch_add(1, std::memory_order_relaxed);
      }
      if (matched) p.rtts.push_back(nowNs() - t0);
      else p.lost++;
      bench::sleepNs(intervalNs_);
    }
  }

  std::shared_ptr<GuestMemoryMap> memory_;
  Mode mode_ = Mode::kTx;
  int batch_ = 32;
  bool pollTx_ = false;  // tx: reap completions by polling, no interrupts (as DPDK's virtio PMD does)
  bool packed_ = false;  // packed rings (VIRTIO_F_RING_PACKED) rather than split ones
  uint32_t hdrSize_ = 12;
  double maxSeconds_ = 120;
  uint64_t count_ = 1000;
  uint64_t intervalNs_ = 100000;
  size_t seqOffset_ = 0;
  int cpu_ = -1;
  int nice_ = 0;
  std::vector<uint8_t> frame_;
  std::vector<std::unique_ptr<PairState>> pairs_;
  std::atomic<bool> stop_{false};
  bool started_ = false;
  uint64_t startNs_ = 0;
};

}  // namespace

void bench::registerGuestGenerator(Napi::Env env, Napi::Object exports) { BenchGuest::Register(env, exports); }

}  // namespace vhost_tap
