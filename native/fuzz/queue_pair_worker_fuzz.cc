// libFuzzer target: the rx and tx paths of the real QueuePairWorker
// (native/core/queue_pair_worker), with a socketpair(AF_UNIX, SOCK_SEQPACKET)
// standing in for the tap (the worker only reads and writes its tap fd; one
// message is one frame, as on a tap), over fuzzer-chosen rings and memory, with
// fuzzer-chosen frames written to the peer end and kicks through eventfds.
//
// The worker is its own thread. To keep an input's run bounded and repeatable,
// the harness works in phases: it makes its changes (driver writes, frames,
// kicks), then waits until the worker is idle, that is, asleep in epoll_wait
// with nothing to do (seen in /proc/self/task/<tid>/syscall) and its counters
// still; then reads what the worker sent. After the last phase it stops the
// worker (the stop itself is synchronous) and checks the books:
//   - every frame the worker wrote reached the peer, and txStats counts them
//     (packets, bytes after the header);
//   - every frame written to the worker is delivered, dropped and counted, or
//     still unread in the socket;
//   - a queue is reported broken (sink "rx"/"tx") exactly when rxBroken()/txBroken();
//   - a worker that never sleeps (a livelock on a malformed ring) is a finding.
//
// Input: u8 options (1 header of 12 bytes, 2 MRG_RXBUF, 4 packed, 8 tx discard only,
// 16 call eventfds, 32 rxMaxFrameBytes, 64 stop(discardTx), 128 stop(drainRx)),
// u16 rxReserveBytes, u16 rxMaxFrameBytes, RingSpec rx, RingSpec tx, then phases
// of u8 action count and actions:
//   0 write        u32 gpa, u16 len, bytes
//   1 publish      u8 ring (0 rx, 1 tx), RingDriver kOpPublish operands
//   2 descriptor   u8 ring, RingDriver kOpDesc operands
//   3 frame        u16 length, u8 fill: a frame of at least header + 14 bytes (and at most 64 KiB)
//   4 kick         u8 (1 rx, 2 tx)
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "fuzz_support.h"
#include "queue_pair_worker.h"

namespace vhost_tap {
namespace fuzz {
namespace {

constexpr int kMaxPhases = 6;
constexpr int kMaxActions = 48;
constexpr int kMaxFrames = 64;
constexpr uint64_t kIdleDeadlineNs = 5000000000ull;  // never asleep for this long: a livelock

uint64_t nowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// What the worker reported through its sink (from its thread).
struct Reports {
  std::atomic<int> rx{0}, tx{0}, tap{0};
};

// The one place the harness meets WorkerEventSink: (where, fault, message).
WorkerEventSink makeSink(Reports* reports) {
  return [reports](const char* where, QueueFault fault, const std::string& message) {
    const std::string w = where ? where : "";
    FUZZ_CHECK(fault != QueueFault::kNone, "the worker reported a %s problem without a fault", w.c_str());
    FUZZ_CHECK(w != "tap" || fault == QueueFault::kTapError || fault == QueueFault::kWorkerError,
               "a tap report with a ring's fault (%s)", queueFaultCode(fault));
    FUZZ_CHECK(w == "rx" || w == "tx" || w == "tap", "the worker reported from \"%s\"", w.c_str());
    FUZZ_CHECK(!message.empty(), "the worker reported a %s problem without a message", w.c_str());
    (w == "rx" ? reports->rx : w == "tx" ? reports->tx : reports->tap).fetch_add(1);
  };
}

std::set<pid_t> threads() {
  std::set<pid_t> out;
  DIR* d = opendir("/proc/self/task");
  if (!d) return out;
  while (struct dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') out.insert(static_cast<pid_t>(atoi(e->d_name)));
  }
  closedir(d);
  return out;
}

// 1: asleep in epoll_wait with no timeout; 2: asleep in epoll_wait with a timeout; 0: anything else.
int sleeping(pid_t tid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[256];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  unsigned long long nr = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0;
  if (sscanf(buf, "%llu 0x%llx 0x%llx 0x%llx 0x%llx", &nr, &a1, &a2, &a3, &a4) != 5) return 0;
  if (nr != 232 && nr != 281) return 0;  // epoll_wait, epoll_pwait (x86-64)
  return static_cast<int>(a4 & 0xffffffffull) == -1 ? 1 : 2;
}

uint64_t snapshot(const QueuePairWorker& w) {
  uint64_t sum = 0;
  for (const QueueStats* s : {&w.rxStats, &w.txStats}) {
    for (const std::atomic<uint64_t>* c : {&s->packets, &s->bytes, &s->kicks, &s->calls, &s->callsFailed, &s->wakeups, &s->batches,
                                           &s->dropTooBig, &s->dropBadHeader, &s->dropTapError, &s->dropStopped, &s->errors}) {
      sum = sum * 1000003 + c->load();
    }
  }
  return sum;
}

// Waits until the worker sleeps with nothing to do.
void waitIdle(const QueuePairWorker& w, pid_t tid) {
  const uint64_t start = nowNs();
  uint64_t last = snapshot(w);
  int quiet = 0;
  uint64_t timedSince = 0;
  for (int spin = 0;; spin++) {
    const int s = sleeping(tid);
    const uint64_t now = snapshot(w);
    if (s != 0 && now == last) {
      if (s == 1 && ++quiet >= 2) return;
      // A timed sleep: a call to retry, or tx chains waiting out the discard grace. Idle enough once still for 20 ms.
      if (s == 2) {
        if (timedSince == 0) timedSince = nowNs();
        if (nowNs() - timedSince > 20000000ull) return;
      }
    } else {
      quiet = 0;
      timedSince = 0;
    }
    last = now;
    FUZZ_CHECK(nowNs() - start < kIdleDeadlineNs, "the worker did not go to sleep within 5 s: it spins");
    if (spin < 50) sched_yield();
    else usleep(100);
  }
}

// Reads every message waiting on fd: their count and total length.
void drain(int fd, uint64_t* count, uint64_t* bytes) {
  static uint8_t buf[256];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0) break;
    (*count)++;
    *bytes += static_cast<uint64_t>(n);
  }
}

}  // namespace
}  // namespace fuzz
}  // namespace vhost_tap

using namespace vhost_tap;
using namespace vhost_tap::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  GuestFixture& g = GuestFixture::get();
  g.reset();
  const uint8_t opts = in.u8();
  const uint32_t hdr = (opts & 1) ? 12 : 10;
  const bool packed = (opts & 4) != 0;
  const bool discardOnly = (opts & 8) != 0;
  const uint16_t reserve = in.u16();
  const uint16_t maxFrame = in.u16();
  const RingSpec rxSpec = RingSpec::read(in);
  const RingSpec txSpec = RingSpec::read(in);

  int sv[2];
  FUZZ_CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
  const int tap = sv[0], peer = sv[1];
  int kicks[2] = {eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
  int calls[2] = {eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};

  WorkerOptions o;
  o.memory = g.map();
  o.tapFd = discardOnly ? -1 : tap;
  o.hdrSize = hdr;
  o.mergeableRx = (opts & 2) != 0;
  o.rxReserveBytes = reserve;
  o.rxMaxFrameBytes = (opts & 32) ? maxFrame : 0;
  o.txDiscardOnly = discardOnly;
  auto ring = [&](QueueConfig& c, const RingSpec& s, int i) {
    c.size = s.size;
    c.packed = packed;
    c.descAddr = s.desc;
    c.availAddr = s.avail;
    c.usedAddr = s.used;
    c.eventIdx = (s.flags & RingSpec::kEventIdx) != 0;
    c.indirectDesc = (s.flags & RingSpec::kIndirect) != 0;
    c.lastAvailIdx = s.base;
    c.kickFd = kicks[i];
    c.callFd = (opts & 16) ? calls[i] : -1;
  };
  ring(o.rx, rxSpec, 0);
  ring(o.tx, txSpec, 1);
  RingDriver drivers[2] = {RingDriver(rxSpec, packed, g), RingDriver(txSpec, packed, g)};

  Reports reports;
  std::unique_ptr<QueuePairWorker> worker(new QueuePairWorker(o, makeSink(&reports)));
  Status adopted = worker->adoptFds();
  FUZZ_CHECK(adopted.ok(), "adoptFds: %s", adopted.message.c_str());

  bool started = false;
  pid_t tid = 0;
  uint64_t framesSent = 0, framesOut = 0, bytesOut = 0;
  std::vector<uint8_t> frame;
  for (int phase = 0; phase < kMaxPhases && (phase == 0 || !in.empty()); phase++) {
    const int actions = in.u8() % kMaxActions;
    for (int a = 0; a < actions && !in.empty(); a++) {
      const uint8_t action = in.u8() % 5;
      if (action == 0) {
        const uint64_t gpa = in.u32();
        size_t got = 0;
        const uint8_t* bytes = in.bytes(in.u16(), &got);
        g.write(gpa, bytes, got);
      } else if (action == 1 || action == 2) {
        const uint8_t which = in.u8() & 1;
        drivers[which].op(action == 1 ? kOpPublish : kOpDesc, in);
      } else if (action == 3) {
        // A tap hands over at least the vnet header and an Ethernet header, at most 64 KiB after the header.
        const uint16_t rawLen = in.u16();
        const uint8_t fill = in.u8();
        const uint32_t len = std::max<uint32_t>(rawLen, hdr + 14);
        if (framesSent >= kMaxFrames) continue;
        frame.assign(len, fill);
        if (send(peer, frame.data(), frame.size(), MSG_DONTWAIT) == static_cast<ssize_t>(frame.size())) framesSent++;
      } else {
        const uint8_t which = in.u8();
        const uint64_t one = 1;
        for (int i = 0; i < 2; i++) {
          if (which & (1 << i)) FUZZ_CHECK(write(kicks[i], &one, 8) == 8, "kick");
        }
      }
    }
    if (!started) {
      const std::set<pid_t> before = threads();
      Status startStatus = worker->start();
      if (!startStatus) {
        FUZZ_TRACE("start: %s\n", startStatus.message.c_str());
        break;  // a configuration start() refuses: nothing ran
      }
      started = true;
      for (pid_t t : threads()) {
        if (!before.count(t)) tid = t;
      }
      FUZZ_CHECK(tid != 0, "the worker's thread");
    }
    // Idle, then read what it sent; reading makes room, which may wake it to send more.
    for (int round = 0; round < 64; round++) {
      waitIdle(*worker, tid);
      const uint64_t before = framesOut;
      drain(peer, &framesOut, &bytesOut);
      if (framesOut == before) break;
    }
  }
  if (started) {
    worker->stop((opts & 64) != 0, (opts & 128) != 0);
    drain(peer, &framesOut, &bytesOut);
    uint64_t unread = 0, unreadBytes = 0;
    drain(tap, &unread, &unreadBytes);
    const QueueStats& rx = worker->rxStats;
    const QueueStats& tx = worker->txStats;
    FUZZ_TRACE("frames in %llu: rx packets %llu too big %llu stopped %llu unread %llu errors %llu; tx packets %llu out %llu "
               "bad header %llu tap error %llu stopped %llu errors %llu; reports rx %d tx %d tap %d\n",
               (unsigned long long)framesSent, (unsigned long long)rx.packets.load(), (unsigned long long)rx.dropTooBig.load(),
               (unsigned long long)rx.dropStopped.load(), (unsigned long long)unread, (unsigned long long)rx.errors.load(),
               (unsigned long long)tx.packets.load(), (unsigned long long)framesOut, (unsigned long long)tx.dropBadHeader.load(),
               (unsigned long long)tx.dropTapError.load(), (unsigned long long)tx.dropStopped.load(), (unsigned long long)tx.errors.load(),
               reports.rx.load(), reports.tx.load(), reports.tap.load());
    FUZZ_CHECK(framesOut == tx.packets.load(), "the peer received %llu frames, txStats counts %llu", (unsigned long long)framesOut,
               (unsigned long long)tx.packets.load());
    FUZZ_CHECK(bytesOut - framesOut * hdr == tx.bytes.load(), "the peer received %llu bytes after headers, txStats counts %llu",
               (unsigned long long)(bytesOut - framesOut * hdr), (unsigned long long)tx.bytes.load());
    const uint64_t accounted = rx.packets.load() + rx.dropTooBig.load() + rx.dropStopped.load() + unread;
    FUZZ_CHECK(accounted == framesSent,
               "%llu frames written to the worker; %llu delivered, %llu dropped too big, %llu dropped at stop, %llu unread",
               (unsigned long long)framesSent, (unsigned long long)rx.packets.load(), (unsigned long long)rx.dropTooBig.load(),
               (unsigned long long)rx.dropStopped.load(), (unsigned long long)unread);
    FUZZ_CHECK(worker->rxBroken() == (reports.rx.load() > 0), "rxBroken() %d after %d rx reports", worker->rxBroken(),
               reports.rx.load());
    FUZZ_CHECK(worker->txBroken() == (reports.tx.load() > 0), "txBroken() %d after %d tx reports", worker->txBroken(),
               reports.tx.load());
    (void)worker->rxLastAvail();
    (void)worker->txLastAvail();
  }
  worker.reset();
  for (int fd : {tap, peer, kicks[0], kicks[1], calls[0], calls[1]}) close(fd);
  return 0;
}
