// Benchmark helpers (npm run bench), not part of the library's API: native loops
// that give the reference figures the data path is compared against.
//
//   tap-write  one write() of the same vnet header + frame per syscall on a tap queue fd
//   tap-read   one read() per frame from a tap queue fd (poll() only when it is empty)
//   tap-ping   write a UDP frame, wait (poll) for its echo on the same queue: round trip
//   udp-flood  sendmmsg() of UDP datagrams over a few connected sockets (the host-side sender)
//   udp-echo   a UDP echo server (recvfrom/sendto), the far end of the ping-pong
//
// Each BenchLoop runs one thread; counters are atomics read at any time by JS,
// and the thread's CPU time comes from its own CPU clock.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <napi.h>

#include "bench.h"
#include "errors.h"

namespace vhost_tap {
namespace bench {

uint64_t nowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

void sleepNs(uint64_t ns) {
  if (ns == 0) return;
  struct timespec ts = {static_cast<time_t>(ns / 1000000000ull), static_cast<long>(ns % 1000000000ull)};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

void pinThisThread(int cpu) {
  if (cpu < 0 || cpu >= CPU_SETSIZE) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

Napi::Object rttSummary(Napi::Env env, std::vector<uint64_t> rtts, uint64_t lost) {
  Napi::Object o = Napi::Object::New(env);
  std::sort(rtts.begin(), rtts.end());
  auto pct = [&](double p) -> double {
    if (rtts.empty()) return 0;
    size_t i = static_cast<size_t>(p * (rtts.size() - 1) + 0.5);
    return rtts[std::min(i, rtts.size() - 1)] / 1000.0;
  };
  o.Set("count", static_cast<double>(rtts.size()));
  o.Set("lost", static_cast<double>(lost));
  o.Set("minUs", pct(0));
  o.Set("p50Us", pct(0.5));
  o.Set("p90Us", pct(0.9));
  o.Set("p99Us", pct(0.99));
  o.Set("maxUs", pct(1));
  return o;
}

double threadCpuSeconds(std::thread& t, std::atomic<bool>& alive, double last) {
  if (!t.joinable() || !alive.load()) return last;
  clockid_t cid;
  if (pthread_getcpuclockid(t.native_handle(), &cid) != 0) return last;
  struct timespec ts;
  if (clock_gettime(cid, &ts) != 0) return last;
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

}  // namespace bench

namespace {

using bench::nowNs;

enum class Mode { kTapWrite, kTapRead, kTapPing, kUdpFlood, kUdpEcho };

std::string getString(Napi::Object o, const char* key, const std::string& dflt = "") {
  Napi::Value v = o.Get(key);
  return v.IsString() ? v.As<Napi::String>().Utf8Value() : dflt;
}
double getNumber(Napi::Object o, const char* key, double dflt) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : dflt;
}

class BenchLoop : public Napi::ObjectWrap<BenchLoop> {
 public:
  static void Register(Napi::Env env, Napi::Object exports) {
    exports.Set("BenchLoop", DefineClass(env, "BenchLoop",
                                         {
                                             InstanceMethod("start", &BenchLoop::Start),
                                             InstanceMethod("stats", &BenchLoop::Stats),
                                             InstanceMethod("stop", &BenchLoop::Stop),
                                         }));
  }

  explicit BenchLoop(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BenchLoop>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) {
      throwCode(env, "EINVAL", "BenchLoop({ mode, ... })");
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    std::string mode = getString(o, "mode");
    if (mode == "tap-write") mode_ = Mode::kTapWrite;
    else if (mode == "tap-read") mode_ = Mode::kTapRead;
    else if (mode == "tap-ping") mode_ = Mode::kTapPing;
    else if (mode == "udp-flood") mode_ = Mode::kUdpFlood;
    else if (mode == "udp-echo") mode_ = Mode::kUdpEcho;
    else {
      throwCode(env, "EINVAL", "mode must be tap-write, tap-read, tap-ping, udp-flood or udp-echo");
      return;
    }
    fd_ = static_cast<int>(getNumber(o, "fd", -1));
    maxSeconds_ = getNumber(o, "maxSeconds", 120);
    Napi::Value frame = o.Get("frame");
    if (frame.IsBuffer()) {
      auto b = frame.As<Napi::Buffer<uint8_t>>();
      frame_.assign(b.Data(), b.Data() + b.Length());
    }
    seqOffset_ = static_cast<size_t>(getNumber(o, "seqOffset", 0));
    count_ = static_cast<uint64_t>(getNumber(o, "count", 1000));
    intervalNs_ = static_cast<uint64_t>(getNumber(o, "intervalUs", 100) * 1000);
    address_ = getString(o, "address", "127.0.0.1");
    port_ = static_cast<int>(getNumber(o, "port", 9));
    sourcePort_ = static_cast<int>(getNumber(o, "sourcePort", 10000));
    flows_ = std::max(1, static_cast<int>(getNumber(o, "flows", 1)));
    payload_ = static_cast<size_t>(getNumber(o, "payload", 18));
    batch_ = std::max(1, std::min(1024, static_cast<int>(getNumber(o, "batch", 64))));
    bool needsFd = mode_ == Mode::kTapWrite || mode_ == Mode::kTapRead || mode_ == Mode::kTapPing;
    if (needsFd && fd_ < 0) throwCode(env, "EBADF", "a tap queue fd is required");
    if ((mode_ == Mode::kTapWrite || mode_ == Mode::kTapPing) && frame_.empty()) throwCode(env, "EINVAL", "frame is required");
    if (mode_ == Mode::kTapPing && seqOffset_ + 4 > frame_.size()) throwCode(env, "EINVAL", "seqOffset past the frame");
  }

  ~BenchLoop() override { halt(); }

 private:
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (thread_.joinable()) {
      throwCode(env, "EINVAL", "already started");
      return env.Undefined();
    }
    // Sockets are made here, so a bad address is an exception rather than a silent thread exit.
    if (mode_ == Mode::kUdpFlood || mode_ == Mode::kUdpEcho) {
      std::string err;
      if (!openSockets(&err)) {
        closeSockets();
        throwCode(env, "EINVAL", err);
        return env.Undefined();
      }
    }
    stop_ = false;
    alive_ = true;
    startNs_ = nowNs();
    thread_ = std::thread([this] {
      tid_ = static_cast<int>(syscall(SYS_gettid));
      run();
      cpuAtExit_ = cpuNow();
      alive_ = false;
    });
    return env.Undefined();
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) { return statsObject(info.Env()); }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    halt();
    Napi::Object o = statsObject(info.Env());
    if (mode_ == Mode::kTapPing) o.Set("rtt", bench::rttSummary(info.Env(), rtts_, lost_));
    return o;
  }

  Napi::Object statsObject(Napi::Env env) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("packets", static_cast<double>(packets_.load()));
    o.Set("bytes", static_cast<double>(bytes_.load()));
    o.Set("errors", static_cast<double>(errors_.load()));
    o.Set("polls", static_cast<double>(polls_.load()));
    o.Set("syscalls", static_cast<double>(syscalls_.load()));
    o.Set("cpuSeconds", alive_ ? bench::threadCpuSeconds(thread_, alive_, cpuAtExit_) : cpuAtExit_);
    o.Set("tid", tid_.load());
    o.Set("done", !alive_.load());
    o.Set("elapsedSeconds", (nowNs() - startNs_) / 1e9);
    if (!lastError_.empty() && !alive_) o.Set("lastError", lastError_);
    return o;
  }

  double cpuNow() {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
  }

  void halt() {
    stop_ = true;
    if (thread_.joinable()) {
      // Blocking receivers (echo) are woken by shutting their socket down.
      for (int s : sockets_) shutdown(s, SHUT_RDWR);
      thread_.join();
    }
    closeSockets();
  }

  void closeSockets() {
    for (int s : sockets_) close(s);
    sockets_.clear();
  }

  bool openSockets(std::string* err) {
    struct sockaddr_in addr = {};
    addr.sin_family = AF_INET;
    if (inet_pton(AF_INET, address_.c_str(), &addr.sin_addr) != 1) {
      *err = "bad IPv4 address " + address_;
      return false;
    }
    addr.sin_port = htons(static_cast<uint16_t>(port_));
    int n = mode_ == Mode::kUdpEcho ? 1 : flows_;
    for (int i = 0; i < n; i++) {
      int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      if (s < 0) {
        *err = std::string("socket: ") + strerror(errno);
        return false;
      }
      sockets_.push_back(s);
      if (mode_ == Mode::kUdpEcho) {
        if (bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
          *err = "bind " + address_ + ":" + std::to_string(port_) + ": " + strerror(errno);
          return false;
        }
        continue;
      }
      int big = 4 << 20;
      setsockopt(s, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
      struct sockaddr_in src = {};
      src.sin_family = AF_INET;
      src.sin_port = htons(static_cast<uint16_t>(sourcePort_ + i));
      if (bind(s, reinterpret_cast<sockaddr*>(&src), sizeof src) < 0 ||
          connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
        *err = "bind/connect to " + address_ + ": " + strerror(errno);
        return false;
      }
    }
    return true;
  }

  bool expired() const { return stop_.load(std::memory_order_relaxed) || (nowNs() - startNs_) > maxSeconds_ * 1e9; }

  void run() {
    switch (mode_) {
      case Mode::kTapWrite: runTapWrite(); break;
      case Mode::kTapRead: runTapRead(); break;
      case Mode::kTapPing: runTapPing(); break;
      case Mode::kUdpFlood: runUdpFlood(); break;
      case Mode::kUdpEcho: runUdpEcho(); break;
    }
  }

  // One write() per frame, the frame never changing: the kernel's cost alone.
  void runTapWrite() {
    const size_t len = frame_.size();
    uint64_t n = 0;
    for (;;) {
      if ((n & 255) == 0 && expired()) break;
      ssize_t r = write(fd_, frame_.data(), len);
      syscalls_.fetch_add(1, std::memory_order_relaxed);
      if (r == static_cast<ssize_t>(len)) {
        packets_.fetch_add(1, std::memory_order_relaxed);
        bytes_.fetch_add(len, std::memory_order_relaxed);
      } else if (r < 0 && errno == EAGAIN) {
        struct pollfd p = {fd_, POLLOUT, 0};
        poll(&p, 1, 10);
        polls_.fetch_add(1, std::memory_order_relaxed);
      } else {
        errors_.fetch_add(1, std::memory_order_relaxed);
        if (r < 0) lastError_ = strerror(errno);
      }
      n++;
    }
  }

  // One read() per frame; poll() only when the queue is empty.
  void runTapRead() {
    std::vector<uint8_t> buf(65536 + 64);
    for (;;) {
      if (expired()) break;
      ssize_t r = read(fd_, buf.data(), buf.size());
      syscalls_.fetch_add(1, std::memory_order_relaxed);
      if (r > 0) {
        packets_.fetch_add(1, std::memory_order_relaxed);
        bytes_.fetch_add(static_cast<uint64_t>(r), std::memory_order_relaxed);
        continue;
      }
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
        struct pollfd p = {fd_, POLLIN, 0};
        poll(&p, 1, 20);
        polls_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      errors_.fetch_add(1, std::memory_order_relaxed);
      if (r < 0) lastError_ = strerror(errno);
      bench::sleepNs(1000000);
    }
  }

  // Ping-pong: write a frame carrying a sequence number, wait for the frame
  // that carries it back (an echo in the host's stack answers), one at a time.
  void runTapPing() {
    std::vector<uint8_t> frame = frame_;
    std::vector<uint8_t> buf(65536 + 64);
    rtts_.clear();
    rtts_.reserve(count_);
    lost_ = 0;
    // Anything already queued (neighbour chatter) is not ours.
    while (read(fd_, buf.data(), buf.size()) > 0) {
    }
    for (uint64_t i = 0; i < count_ && !expired(); i++) {
      uint32_t seq = static_cast<uint32_t>(i + 1);
      memcpy(frame.data() + seqOffset_, &seq, 4);
      uint64_t t0 = nowNs();
      if (write(fd_, frame.data(), frame.size()) != static_cast<ssize_t>(frame.size())) {
        errors_.fetch_add(1);
        lastError_ = strerror(errno);
        continue;
      }
      bool got = false;
      while (!got) {
        ssize_t r = read(fd_, buf.data(), buf.size());
        if (r < 0 && errno == EAGAIN) {
          struct pollfd p = {fd_, POLLIN, 0};
          uint64_t waited = (nowNs() - t0) / 1000000;
          if (waited >= 1000) break;  // lost
          poll(&p, 1, static_cast<int>(1000 - waited));
          continue;
        }
        if (r <= 0) break;
        if (static_cast<size_t>(r) >= seqOffset_ + 4 && memcmp(buf.data() + seqOffset_, &seq, 4) == 0) {
          rtts_.push_back(nowNs() - t0);
          packets_.fetch_add(1);
          got = true;
        }
      }
      if (!got) lost_++;
      bench::sleepNs(intervalNs_);
    }
  }

  // The sender for host-to-guest runs: connected UDP sockets (one per flow, so a
  // multiqueue tap spreads them), sendmmsg of `batch` datagrams per call.
  void runUdpFlood() {
    std::vector<uint8_t> payload(std::max<size_t>(payload_, 1), 0x5a);
    std::vector<struct mmsghdr> msgs(batch_);
    struct iovec iov = {payload.data(), payload_};
    for (auto& m : msgs) {
      memset(&m, 0, sizeof m);
      m.msg_hdr.msg_iov = &iov;
      m.msg_hdr.msg_iovlen = 1;
    }
    uint64_t round = 0;
    while (!expired()) {
      int s = sockets_[round++ % sockets_.size()];
      int r = sendmmsg(s, msgs.data(), batch_, MSG_DONTWAIT);
      syscalls_.fetch_add(1, std::memory_order_relaxed);
      if (r > 0) {
        packets_.fetch_add(r, std::memory_order_relaxed);
        bytes_.fetch_add(static_cast<uint64_t>(r) * payload_, std::memory_order_relaxed);
      } else if (r < 0 && (errno == EAGAIN || errno == ENOBUFS)) {
        polls_.fetch_add(1, std::memory_order_relaxed);
        struct pollfd p = {s, POLLOUT, 0};
        poll(&p, 1, 5);
      } else if (r < 0) {
        errors_.fetch_add(1, std::memory_order_relaxed);
        lastError_ = strerror(errno);
        bench::sleepNs(1000000);
      }
    }
  }

  void runUdpEcho() {
    int s = sockets_[0];
    std::vector<uint8_t> buf(65536);
    while (!stop_.load()) {
      struct sockaddr_in from = {};
      socklen_t fromLen = sizeof from;
      ssize_t r = recvfrom(s, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &fromLen);
      if (r < 0) {
        if (errno == EINTR) continue;
        break;  // shut down
      }
      if (r == 0 && stop_.load()) break;
      packets_.fetch_add(1, std::memory_order_relaxed);
      sendto(s, buf.data(), static_cast<size_t>(r), 0, reinterpret_cast<sockaddr*>(&from), fromLen);
    }
  }

  Mode mode_ = Mode::kTapWrite;
  int fd_ = -1;
  double maxSeconds_ = 120;
  std::vector<uint8_t> frame_;
  size_t seqOffset_ = 0;
  uint64_t count_ = 1000;
  uint64_t intervalNs_ = 100000;
  std::string address_;
  int port_ = 9;
  int sourcePort_ = 10000;
  int flows_ = 1;
  size_t payload_ = 18;
  int batch_ = 64;
  std::vector<int> sockets_;

  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> alive_{false};
  std::atomic<int> tid_{0};
  uint64_t startNs_ = 0;
  double cpuAtExit_ = 0;
  std::atomic<uint64_t> packets_{0};
  std::atomic<uint64_t> bytes_{0};
  std::atomic<uint64_t> errors_{0};
  std::atomic<uint64_t> polls_{0};
  std::atomic<uint64_t> syscalls_{0};
  std::string lastError_;
  std::vector<uint64_t> rtts_;
  uint64_t lost_ = 0;
};

}  // namespace

// What one system call costs on this machine, in nanoseconds: the best of 5 rounds of
// getppid() (which does nothing but enter and leave the kernel) on a thread pinned to
// `cpu`. The ratios against the raw one-syscall-per-frame loops depend on it (page table
// isolation, a paravirtualised kernel): the report shows it next to the machine.
Napi::Value SyscallCostNs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int cpu = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : -1;
  double best = 0;
  std::thread probe([&] {
    bench::pinThisThread(cpu);
    constexpr int kCalls = 200000;
    for (int round = 0; round < 5; round++) {
      uint64_t start = bench::nowNs();
      for (int i = 0; i < kCalls; i++) syscall(SYS_getppid);
      double ns = static_cast<double>(bench::nowNs() - start) / kCalls;
      if (round == 0 || ns < best) best = ns;
    }
  });
  probe.join();
  return Napi::Number::New(env, best);
}

void bench::registerRawLoops(Napi::Env env, Napi::Object exports) {
  exports.Set("syscallCostNs", Napi::Function::New(env, SyscallCostNs, "syscallCostNs"));
  BenchLoop::Register(env, exports);
}

}  // namespace vhost_tap
