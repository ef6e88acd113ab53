// The queue-pair worker (native/core/queue_pair_worker.*) end to end, without
// root: a socketpair(AF_UNIX, SOCK_SEQPACKET) stands in for the tap queue (the
// worker only reads and writes its tap fd, and a seqpacket socket keeps each
// frame one message, as a tap does), eventfds for kicks and calls, and the mock
// driver for the guest. Only the worker's public interface is used.
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mock_driver.h"
#include "queue_pair_worker.h"
#include "test_support.h"

namespace vhost_tap_test {
namespace {

using vhost_tap::QueueConfig;
using vhost_tap::QueueFault;
using vhost_tap::QueuePairWorker;
using vhost_tap::WorkerOptions;

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint32_t kHdr = 12;
constexpr uint64_t kRxRingAt = 0x1000;
constexpr uint64_t kTxRingAt = 0x80000;
constexpr uint64_t kBuffersAt = 0x100000;
constexpr uint64_t kMemory = 16 * kMiB;

// What the worker reported through its sink: where, the typed fault, the message.
class WorkerEvents {
 public:
  vhost_tap::WorkerEventSink sink() {
    return [this](const char* where, vhost_tap::QueueFault fault, const std::string& message) {
      std::lock_guard<std::mutex> hold(lock_);
      events_.push_back({where, fault, message});
    };
  }
  struct Event {
    std::string where;
    vhost_tap::QueueFault fault;
    std::string message;
  };
  std::vector<Event> all() {
    std::lock_guard<std::mutex> hold(lock_);
    return events_;
  }

 private:
  std::mutex lock_;
  std::vector<Event> events_;
};

// Polls `condition` until it holds or `ms` pass.
template <typename F>
bool waitFor(F condition, int ms = 5000) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  return true;
}

// One buffer of a chain, for either layout.
struct Segment {
  uint64_t addr;
  uint32_t len;
  bool writable = false;
};

// A ring of either layout as the tests drive it.
class Ring {
 public:
  virtual ~Ring() = default;
  virtual QueueConfig config() const = 0;
  // Makes a chain available (through an indirect table at `table` if non-zero); returns its buffer ID.
  virtual uint16_t post(const std::vector<Segment>& segments, uint64_t table = 0) = 0;
  virtual bool takeUsed(uint16_t* id, uint32_t* len) = 0;
};

class SplitRing : public Ring {
 public:
  SplitRing(TestMemory& memory, uint64_t at, uint32_t size) : memory_(memory), driver_(memory, at, size) {}
  QueueConfig config() const override { return driver_.config(); }
  uint16_t post(const std::vector<Segment>& segments, uint64_t table) override {
    std::vector<SplitDesc> descs;
    for (const Segment& s : segments) descs.push_back({s.addr, s.len, static_cast<uint16_t>(s.writable ? vhost_tap::VRING_DESC_F_WRITE : 0)});
    if (table == 0) return driver_.addChain(descs);
    for (size_t i = 0; i + 1 < descs.size(); i++) {
      descs[i].flags |= vhost_tap::VRING_DESC_F_NEXT;
      descs[i].next = static_cast<uint16_t>(i + 1);
    }
    SplitDriver::writeTable(memory_, table, descs);
    return driver_.addChain({{table, static_cast<uint32_t>(16 * descs.size()), vhost_tap::VRING_DESC_F_INDIRECT}});
  }
  bool takeUsed(uint16_t* id, uint32_t* len) override {
    vhost_tap::VringUsedElem e;
    if (!driver_.takeUsed(&e)) return false;
    *id = static_cast<uint16_t>(e.id);
    *len = e.len;
    return true;
  }
  SplitDriver& driver() { return driver_; }

 private:
  TestMemory& memory_;
  SplitDriver driver_;
};

class PackedRing : public Ring {
 public:
  PackedRing(TestMemory& memory, uint64_t at, uint32_t size) : memory_(memory), driver_(memory, at, size) {}
  QueueConfig config() const override { return driver_.config(); }
  uint16_t post(const std::vector<Segment>& segments, uint64_t table) override {
    const uint16_t id = nextId_++;
    std::vector<PackedDescSpec> descs;
    for (const Segment& s : segments) descs.push_back({s.addr, s.len, static_cast<uint16_t>(s.writable ? vhost_tap::VRING_DESC_F_WRITE : 0)});
    if (table == 0) {
      descs.back().id = id;
      driver_.post(descs);
    } else {
      PackedDriver::writeTable(memory_, table, descs);
      driver_.post({{table, static_cast<uint32_t>(16 * descs.size()), vhost_tap::VRING_DESC_F_INDIRECT, id}});
    }
    return id;
  }
  bool takeUsed(uint16_t* id, uint32_t* len) override {
    PackedDriver::Used u;
    if (!driver_.takeUsed(&u)) return false;
    *id = u.id;
    *len = u.len;
    return true;
  }

 private:
  TestMemory& memory_;
  PackedDriver driver_;
  uint16_t nextId_ = 0;
};

struct RigOptions {
  bool packed = false;
  uint32_t size = 64;
  bool mergeableRx = false;
  uint32_t rxMaxFrameBytes = 0;
  bool indirect = true;
  bool eventIdx = true;
};

// A worker between a mock driver and a socketpair. Its destructor stops the
// worker and closes every fd it made.
struct WorkerRig {
  TestMemory memory{{{0, kMemory}}};
  Arena buffers{kBuffersAt, kMemory};
  std::unique_ptr<Ring> rx;
  std::unique_ptr<Ring> tx;
  int tap = -1;      // the worker's end
  int network = -1;  // the test's end: what the tap's host side would send and receive
  int rxKick = -1, txKick = -1, rxCall = -1, txCall = -1;
  WorkerEvents events;
  std::unique_ptr<QueuePairWorker> worker;

  explicit WorkerRig(const RigOptions& o) {
    if (o.packed) {
      rx = std::make_unique<PackedRing>(memory, kRxRingAt, o.size);
      tx = std::make_unique<PackedRing>(memory, kTxRingAt, o.size);
    } else {
      rx = std::make_unique<SplitRing>(memory, kRxRingAt, o.size);
      tx = std::make_unique<SplitRing>(memory, kTxRingAt, o.size);
    }
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) throw std::runtime_error("socketpair");
    tap = pair[0];
    network = pair[1];
    // As a tap queue fd is: the worker never blocks on it.
    fcntl(tap, F_SETFL, fcntl(tap, F_GETFL) | O_NONBLOCK);
    for (int* fd : {&rxKick, &txKick, &rxCall, &txCall}) *fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    WorkerOptions options;
    options.memory = memory.map();
    options.tapFd = tap;
    options.hdrSize = kHdr;
    options.mergeableRx = o.mergeableRx;
    options.rxMaxFrameBytes = o.rxMaxFrameBytes;
    options.rx = rx->config();
    options.tx = tx->config();
    for (QueueConfig* c : {&options.rx, &options.tx}) {
      c->indirectDesc = o.indirect;
      c->eventIdx = o.eventIdx;
    }
    options.rx.kickFd = rxKick;
    options.tx.kickFd = txKick;
    options.rx.callFd = rxCall;
    options.tx.callFd = txCall;
    worker = std::make_unique<QueuePairWorker>(std::move(options), events.sink());
  }
  ~WorkerRig() {
    worker.reset();
    for (int fd : {tap, network, rxKick, txKick, rxCall, txCall}) {
      if (fd >= 0) close(fd);
    }
  }
  void start() {
    vhost_tap::Status status = worker->adoptFds();
    if (status) status = worker->start();
    if (!status) {
      recordFailure(__FILE__, __LINE__, "worker: " + status.message);
      endCase();
    }
  }
  static void kick(int fd) {
    uint64_t one = 1;
    if (write(fd, &one, sizeof one) != sizeof one) throw std::runtime_error("kick");
  }
  // How many calls the eventfd took since the last look.
  static uint64_t calls(int fd) {
    uint64_t n = 0;
    return read(fd, &n, sizeof n) == sizeof n ? n : 0;
  }
  // Guest memory holding `bytes`, a chain's worth to transmit.
  uint64_t place(const std::vector<uint8_t>& bytes) {
    const uint64_t at = buffers.take(bytes.size());
    memory.write(at, bytes.data(), bytes.size());
    return at;
  }
  // The next datagram the worker wrote to the tap, within `ms`.
  bool receive(std::vector<uint8_t>* out, int ms = 5000) {
    struct pollfd p = {network, POLLIN, 0};
    if (poll(&p, 1, ms) != 1) return false;
    out->resize(256 * 1024);
    ssize_t n = recv(network, out->data(), out->size(), MSG_DONTWAIT);
    if (n < 0) return false;
    out->resize(static_cast<size_t>(n));
    return true;
  }
  void send(const std::vector<uint8_t>& datagram) {
    if (::send(network, datagram.data(), datagram.size(), 0) != static_cast<ssize_t>(datagram.size())) {
      throw std::runtime_error(std::string("send to the worker's tap: ") + strerror(errno));
    }
  }
  // Waits for `n` used entries on `ring`, appended to `ids` and `lens`.
  bool takeUsed(Ring& ring, size_t n, std::vector<uint16_t>* ids, std::vector<uint32_t>* lens = nullptr) {
    return waitFor([&] {
      uint16_t id;
      uint32_t len;
      while (ring.takeUsed(&id, &len)) {
        ids->push_back(id);
        if (lens) lens->push_back(len);
      }
      return ids->size() >= n;
    });
  }
  bool waitForEvent() {
    return waitFor([&] { return !events.all().empty(); });
  }
};

// A frame as the tap hands it over: a vnet header (its num_buffers bytes set to
// a value the worker must overwrite), then `n` bytes of payload.
std::vector<uint8_t> datagram(size_t n, uint32_t seed) {
  std::vector<uint8_t> d(kHdr, 0);
  d[0] = 1;  // VIRTIO_NET_HDR_F_NEEDS_CSUM: any header bytes pass through as they are
  d[10] = d[11] = 0xee;
  std::vector<uint8_t> payload = pattern(n, seed);
  d.insert(d.end(), payload.begin(), payload.end());
  return d;
}

// ---- tx ----

void transmitChainsOfEveryShape(bool packed) {
  WorkerRig rig({packed});
  rig.start();
  std::vector<std::vector<uint8_t>> sent;
  std::vector<uint16_t> ids;
  for (uint32_t k = 0; k < 9; k++) {
    std::vector<uint8_t> frame = datagram(60 + 37 * k, k);
    const uint64_t at = rig.place(frame);
    const uint32_t body = static_cast<uint32_t>(frame.size() - kHdr);
    if (k % 3 == 0) ids.push_back(rig.tx->post({{at, static_cast<uint32_t>(frame.size())}}));
    else if (k % 3 == 1) ids.push_back(rig.tx->post({{at, kHdr}, {at + kHdr, 20}, {at + kHdr + 20, body - 20}}));
    else ids.push_back(rig.tx->post({{at, kHdr}, {at + kHdr, body}}, rig.buffers.take(32)));
    sent.push_back(frame);
    if (k % 4 == 3) WorkerRig::kick(rig.txKick);  // some chains come together, some alone
  }
  WorkerRig::kick(rig.txKick);
  for (size_t k = 0; k < sent.size(); k++) {
    std::vector<uint8_t> got;
    REQUIRE(rig.receive(&got));
    if (got != sent[k]) recordFailure(__FILE__, __LINE__, "datagram " + std::to_string(k) + " is not the chain's bytes, header first");
  }
  std::vector<uint16_t> used;
  std::vector<uint32_t> lens;
  REQUIRE(rig.takeUsed(*rig.tx, sent.size(), &used, &lens));
  CHECK(used == ids);
  for (uint32_t len : lens) CHECK_EQ(len, 0u);  // nothing written into a transmit buffer
  CHECK_EQ(rig.worker->txStats.packets.load(), 9u);
  uint64_t bytes = 0;
  for (const auto& f : sent) bytes += f.size() - kHdr;
  CHECK_EQ(rig.worker->txStats.bytes.load(), bytes);
  CHECK(waitFor([&] { return WorkerRig::calls(rig.txCall) > 0; }));
  CHECK(rig.events.all().empty());
  CHECK(!rig.worker->txBroken());
}

TEST("worker tx, split ring: direct, chained and indirect chains arrive as datagrams with their vnet header, in order, and are used") {
  transmitChainsOfEveryShape(false);
}

TEST("worker tx, packed ring: direct, chained and indirect chains arrive as datagrams with their vnet header, in order, and are used") {
  transmitChainsOfEveryShape(true);
}

TEST("worker tx: a frame the tap refuses (EMSGSIZE) is dropped and counted, its chain used, and the next frame goes out") {
  WorkerRig rig({});
  // A seqpacket message larger than the send buffer is refused whole, as a tap refuses a bad GSO frame.
  int small = 4096;
  REQUIRE(setsockopt(rig.tap, SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
  rig.start();
  std::vector<uint8_t> huge = datagram(200000, 1), fine = datagram(100, 2);
  const uint16_t first = rig.tx->post({{rig.place(huge), static_cast<uint32_t>(huge.size())}});
  WorkerRig::kick(rig.txKick);
  std::vector<uint16_t> used;
  REQUIRE(rig.takeUsed(*rig.tx, 1, &used));
  CHECK_EQ(used[0], first);
  CHECK_EQ(rig.worker->txStats.dropTapError.load(), 1u);
  rig.tx->post({{rig.place(fine), static_cast<uint32_t>(fine.size())}});
  WorkerRig::kick(rig.txKick);
  std::vector<uint8_t> got;
  REQUIRE(rig.receive(&got));
  CHECK(got == fine);
  CHECK(!rig.worker->txBroken());
}

// ---- rx ----

// Posts `count` receive chains: header and frame buffers (or one buffer of
// `mergeableBytes` each with MRG_RXBUF). Returns the address of each ID's buffer.
std::vector<uint64_t> postReceiveBuffers(WorkerRig& rig, size_t count, uint32_t mergeableBytes) {
  std::vector<uint64_t> at;
  for (size_t i = 0; i < count; i++) {
    if (mergeableBytes > 0) {
      const uint64_t b = rig.buffers.take(mergeableBytes);
      const uint16_t id = rig.rx->post({{b, mergeableBytes, true}});
      if (at.size() <= id) at.resize(id + 1u);
      at[id] = b;
    } else {
      const uint64_t b = rig.buffers.take(kHdr + 2048);
      const uint16_t id = rig.rx->post({{b, kHdr, true}, {b + kHdr, 2048, true}});
      if (at.size() <= id) at.resize(id + 1u);
      at[id] = b;
    }
  }
  WorkerRig::kick(rig.rxKick);
  return at;
}

void receiveWholeFrames(bool packed, uint32_t rxMaxFrameBytes) {
  RigOptions o;
  o.packed = packed;
  o.rxMaxFrameBytes = rxMaxFrameBytes;
  WorkerRig rig(o);
  rig.start();
  std::vector<uint64_t> bufferOf = postReceiveBuffers(rig, 8, 0);
  std::vector<std::vector<uint8_t>> sent;
  for (uint32_t k = 0; k < 5; k++) {
    sent.push_back(datagram(50 + 300 * k, 10 + k));
    rig.send(sent.back());
  }
  std::vector<uint16_t> ids;
  std::vector<uint32_t> lens;
  REQUIRE(rig.takeUsed(*rig.rx, sent.size(), &ids, &lens));
  for (size_t k = 0; k < sent.size(); k++) {
    CHECK_EQ(lens[k], static_cast<uint32_t>(sent[k].size()));
    REQUIRE(ids[k] < bufferOf.size());
    std::vector<uint8_t> want = sent[k];
    want[10] = 1;  // num_buffers: one chain per frame without MRG_RXBUF
    want[11] = 0;
    if (rig.memory.read(bufferOf[ids[k]], want.size()) != want) {
      recordFailure(__FILE__, __LINE__, "frame " + std::to_string(k) + " did not land whole in its buffer");
    }
  }
  CHECK_EQ(rig.worker->rxStats.packets.load(), 5u);
  CHECK(waitFor([&] { return WorkerRig::calls(rig.rxCall) > 0; }));
  CHECK(rig.events.all().empty());
}

TEST("worker rx, split ring: datagrams land whole in posted buffers, num_buffers 1, used len the datagram's") {
  receiveWholeFrames(false, 0);
}

TEST("worker rx, packed ring: datagrams land whole in posted buffers, num_buffers 1, used len the datagram's") {
  receiveWholeFrames(true, 0);
}

TEST("worker rx, split ring, batched reads (rxMaxFrameBytes): datagrams land whole, num_buffers 1") {
  receiveWholeFrames(false, kHdr + 2048);
}

TEST("worker rx, packed ring, batched reads (rxMaxFrameBytes): datagrams land whole, num_buffers 1") {
  receiveWholeFrames(true, kHdr + 2048);
}

void receiveMergeable(bool packed) {
  RigOptions o;
  o.packed = packed;
  o.mergeableRx = true;
  WorkerRig rig(o);
  rig.start();
  std::vector<uint64_t> bufferOf = postReceiveBuffers(rig, 16, 128);
  // 300 bytes take three buffers of 128 (128 + 128 + 44); 100 take one; 1000 take eight.
  const size_t sizes[] = {300, 100, 1000};
  const uint16_t expectBuffers[] = {3, 1, 8};
  std::vector<uint16_t> ids;
  std::vector<uint32_t> lens;
  for (size_t k = 0; k < 3; k++) {
    std::vector<uint8_t> d = datagram(sizes[k] - kHdr, 20 + static_cast<uint32_t>(k));
    rig.send(d);
    const size_t before = ids.size();
    REQUIRE(rig.takeUsed(*rig.rx, before + expectBuffers[k], &ids, &lens));
    REQUIRE_EQ(ids.size(), before + expectBuffers[k]);
    std::vector<uint8_t> whole;
    for (size_t i = before; i < ids.size(); i++) {
      CHECK_EQ(lens[i], static_cast<uint32_t>(std::min<size_t>(128, d.size() - 128 * (i - before))));
      std::vector<uint8_t> part = rig.memory.read(bufferOf[ids[i]], lens[i]);
      whole.insert(whole.end(), part.begin(), part.end());
    }
    REQUIRE_EQ(whole.size(), d.size());
    CHECK_EQ(whole[10] | (whole[11] << 8), static_cast<int>(expectBuffers[k]));  // num_buffers
    whole[10] = d[10];
    whole[11] = d[11];
    if (whole != d) recordFailure(__FILE__, __LINE__, "frame " + std::to_string(k) + " is not the datagram's bytes across its buffers");
  }
  CHECK(rig.events.all().empty());
  CHECK_EQ(rig.worker->rxStats.packets.load(), 3u);
}

TEST("worker rx, split ring, MRG_RXBUF: a frame spans as many buffers as it needs; num_buffers says how many") {
  receiveMergeable(false);
}

TEST("worker rx, packed ring, MRG_RXBUF: a frame spans as many buffers as it needs; num_buffers says how many") {
  receiveMergeable(true);
}

// ---- faults: one queue breaks, the other goes on ----

TEST("worker: a malformed tx chain (write-only descriptor) breaks tx only; the sink names tx; rx still delivers") {
  WorkerRig rig({});
  rig.start();
  postReceiveBuffers(rig, 4, 0);
  rig.tx->post({{rig.buffers.take(64), 64}, {rig.buffers.take(64), 64, true}});
  WorkerRig::kick(rig.txKick);
  REQUIRE(rig.waitForEvent());
  auto events = rig.events.all();
  CHECK_EQ(events[0].where, std::string("tx"));
  CHECK(events[0].fault == QueueFault::kBadDirection);
  CHECK_EQ(events[0].message, std::string("write-only descriptor in a transmit chain"));
  CHECK(rig.worker->txBroken());
  CHECK(!rig.worker->rxBroken());
  CHECK_EQ(rig.worker->txStats.errors.load(), 1u);
  // More on the broken queue changes nothing; the other queue of the pair goes on.
  rig.tx->post({{rig.place(datagram(40, 1)), kHdr + 40}});
  WorkerRig::kick(rig.txKick);
  std::vector<uint8_t> d = datagram(200, 3);
  rig.send(d);
  std::vector<uint16_t> ids;
  REQUIRE(rig.takeUsed(*rig.rx, 1, &ids));
  std::vector<uint8_t> got;
  CHECK(!rig.receive(&got, 50));  // nothing was sent from the broken queue
  CHECK_EQ(rig.events.all().size(), 1u);
  rig.worker->stop();
  CHECK_EQ(rig.worker->txLastAvail(), 0u);  // the malformed chain was not consumed
}

TEST("worker: a malformed rx chain (read-only descriptor, packed ring) breaks rx only; the sink names rx; tx still sends") {
  RigOptions o;
  o.packed = true;
  WorkerRig rig(o);
  rig.start();
  rig.rx->post({{rig.buffers.take(2048), 2048}});
  WorkerRig::kick(rig.rxKick);
  REQUIRE(rig.waitForEvent());
  auto events = rig.events.all();
  CHECK_EQ(events[0].where, std::string("rx"));
  CHECK(events[0].fault == QueueFault::kBadDirection);
  CHECK_EQ(events[0].message, std::string("read-only descriptor in a receive chain"));
  CHECK(rig.worker->rxBroken());
  CHECK(!rig.worker->txBroken());
  std::vector<uint8_t> frame = datagram(80, 4);
  rig.tx->post({{rig.place(frame), static_cast<uint32_t>(frame.size())}});
  WorkerRig::kick(rig.txKick);
  std::vector<uint8_t> got;
  REQUIRE(rig.receive(&got));
  CHECK(got == frame);
  CHECK_EQ(rig.events.all().size(), 1u);
}

// Found by native/fuzz (corpus/queue_pair_worker/repro-spill-lost-on-rx-break): the
// frame was taken from the tap and then counted nowhere.
TEST("worker rx, MRG_RXBUF: a frame waiting for more buffers when rx breaks is dropped and counted in drops.stopped") {
  RigOptions o;
  o.mergeableRx = true;
  WorkerRig rig(o);
  rig.start();
  rig.rx->post({{rig.buffers.take(256), 256, true}});
  WorkerRig::kick(rig.rxKick);
  // 1000 bytes read past the one 256-byte buffer: the rest waits for the driver to post more.
  rig.send(datagram(1000 - kHdr, 7));
  REQUIRE(waitFor([&] {
    char byte;
    return recv(rig.tap, &byte, 1, MSG_PEEK | MSG_DONTWAIT) < 0 && errno == EAGAIN;
  }));
  // What comes is a read-only buffer: rx breaks with the frame half delivered.
  rig.rx->post({{rig.buffers.take(2048), 2048}});
  WorkerRig::kick(rig.rxKick);
  REQUIRE(rig.waitForEvent());
  CHECK_EQ(rig.events.all()[0].message, std::string("read-only descriptor in a receive chain"));
  CHECK(rig.worker->rxBroken());
  rig.worker->stop();
  CHECK_EQ(rig.worker->rxStats.packets.load(), 0u);
  CHECK_EQ(rig.worker->rxStats.dropStopped.load(), 1u);  // counted once: at the break, not again at the stop
}

TEST("worker: a transmit chain of more segments than one writev takes (1025) breaks tx with too-many-segments") {
  RigOptions o;
  o.size = 2048;
  WorkerRig rig(o);
  rig.start();
  std::vector<Segment> segments;
  const uint64_t data = rig.buffers.take(16 * 1025);
  for (uint32_t i = 0; i < 1025; i++) segments.push_back({data + 16 * i, 16});
  rig.tx->post(segments, rig.buffers.take(16 * 1025));
  WorkerRig::kick(rig.txKick);
  REQUIRE(rig.waitForEvent());
  CHECK_EQ(rig.events.all()[0].where, std::string("tx"));
  CHECK(rig.events.all()[0].fault == QueueFault::kTooManySegments);
  CHECK_EQ(rig.events.all()[0].message, std::string("transmit chain has more than 1024 segments"));
  CHECK(rig.worker->txBroken());
}

TEST("worker: a receive buffer smaller than the vnet header breaks rx with buffer-too-small") {
  for (bool mergeable : {false, true}) {
    RigOptions o;
    o.mergeableRx = mergeable;
    WorkerRig rig(o);
    rig.start();
    rig.rx->post({{rig.buffers.take(16), 4, true}});
    WorkerRig::kick(rig.rxKick);
    rig.send(datagram(100, 1));
    REQUIRE(rig.waitForEvent());
    CHECK_EQ(rig.events.all()[0].where, std::string("rx"));
    CHECK(rig.events.all()[0].fault == QueueFault::kBufferTooSmall);
    CHECK_EQ(rig.events.all()[0].message, std::string("receive buffer of 4 bytes cannot hold the 12-byte header"));
    CHECK(rig.worker->rxBroken());
    CHECK(!rig.worker->txBroken());
    rig.worker->stop();
    CHECK_EQ(rig.worker->rxLastAvail(), 0u);  // the small buffer was given back, not consumed
  }
}

TEST("worker: stop reports where each ring stopped, and gives back the rx buffers it held") {
  for (bool packed : {false, true}) {
    RigOptions o;
    o.packed = packed;
    o.size = 8;
    WorkerRig rig(o);
    rig.start();
    postReceiveBuffers(rig, 3, 0);  // 6 slots of a packed ring, 3 heads of a split one
    for (uint32_t k = 0; k < 3; k++) {
      const uint64_t frame = rig.place(datagram(64, k));
      rig.tx->post({{frame, kHdr}, {frame + kHdr, 64}});
    }
    WorkerRig::kick(rig.txKick);
    std::vector<uint16_t> ids;
    REQUIRE(rig.takeUsed(*rig.tx, 3, &ids));
    rig.send(datagram(100, 9));
    std::vector<uint16_t> rxIds;
    REQUIRE(rig.takeUsed(*rig.rx, 1, &rxIds));
    rig.worker->stop();
    if (packed) {
      // tx: 3 chains of 2 slots, all used: slot 6, wrap 1, both halves. rx: one chain of 2 used.
      CHECK_EQ(rig.worker->txLastAvail(), 0x80068006u);
      CHECK_EQ(rig.worker->rxLastAvail(), 0x80028002u);
    } else {
      CHECK_EQ(rig.worker->txLastAvail(), 3u);
      CHECK_EQ(rig.worker->rxLastAvail(), 1u);
    }
    CHECK(!rig.worker->running());
  }
}

}  // namespace
}  // namespace vhost_tap_test
