// The dirty page log of live migration (native/core/dirty_log.*): which bits a
// write sets, how the log is collected and cleared, how a queue's cursor follows
// the log the control plane installs, and what the ring walkers mark: the used
// ring (at the frontend's log address when it gives one), packed used
// descriptors and the device event area, and writes made through a chain's
// iovecs across regions.
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "dirty_log.h"
#include "mock_driver.h"
#include "packed_queue.h"
#include "split_queue.h"
#include "test_support.h"

namespace vhost_tap_test {
namespace {

using vhost_tap::Chain;
using vhost_tap::DirtyLog;
using vhost_tap::DirtyLogCursor;
using vhost_tap::DirtyLogSlot;
using vhost_tap::PopResult;
using vhost_tap::QueueConfig;

constexpr uint64_t kLogBytes = 128;  // 1024 pages of 4 KiB: 4 MiB of guest memory
constexpr uint64_t kPage = 4096;
constexpr uint64_t kMiB = 1ull << 20;

// A log in a memfd of its own, the way a frontend hands one over (SET_LOG_BASE).
struct LogFile {
  int fd = -1;
  std::shared_ptr<DirtyLog> log;
  explicit LogFile(uint64_t bytes = kLogBytes) {
    fd = memfd_create("vhost-tap-test-log", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, static_cast<off_t>(bytes)) < 0) throw std::runtime_error("memfd for the log");
    int err = 0;
    std::string what;
    log = DirtyLog::map(fd, bytes, 0, &err, &what);
    if (!log) throw std::runtime_error("DirtyLog::map: " + what);
  }
  ~LogFile() {
    log.reset();
    close(fd);
  }
  // The pages whose bits are set; clears them.
  std::set<uint64_t> take() {
    std::vector<uint8_t> bits(log->bytes());
    log->collect(bits.data(), true);
    std::set<uint64_t> pages;
    for (uint64_t i = 0; i < bits.size() * 8; i++) {
      if (bits[i / 8] & (1u << (i % 8))) pages.insert(i);
    }
    return pages;
  }
};

using Pages = std::set<uint64_t>;

TEST("dirty log: mark sets one bit per 4 KiB page touched; collect copies and clears; pages past the log are counted") {
  LogFile file;
  DirtyLog& log = *file.log;
  log.mark(0x1fff, 2);  // the last byte of page 1 and the first of page 2
  log.mark(0x5000, 1);
  log.mark(0x9000, 0);  // nothing
  std::vector<uint8_t> bits(kLogBytes);
  log.collect(bits.data(), false);  // a look that leaves the bits
  CHECK_EQ(bits[0], static_cast<uint8_t>((1 << 1) | (1 << 2) | (1 << 5)));
  CHECK(file.take() == (Pages{1, 2, 5}));
  CHECK(file.take().empty());
  CHECK_EQ(log.outOfRange(), 0u);
  // The last page of the log, and one page past it.
  log.mark(1024 * kPage - kPage, 2 * kPage);
  CHECK(file.take() == (Pages{1023}));
  CHECK_EQ(log.outOfRange(), 1u);
  // A range that wraps the address space is one page past the log, not a loop over 2^52 pages.
  log.mark(~0ull - 10, 100);
  CHECK_EQ(log.outOfRange(), 2u);
}

TEST("dirty log: map refuses a size of 0, over 4 GiB, and a log past the end of its file") {
  int fd = memfd_create("vhost-tap-test-log", MFD_CLOEXEC);
  REQUIRE(fd >= 0);
  REQUIRE(ftruncate(fd, kPage) == 0);
  int err = 0;
  std::string what;
  CHECK(DirtyLog::map(fd, 0, 0, &err, &what) == nullptr);
  CHECK_EQ(err, EINVAL);
  CHECK(DirtyLog::map(fd, (1ull << 32) + 1, 0, &err, &what) == nullptr);
  CHECK(DirtyLog::map(fd, kPage, 1, &err, &what) == nullptr);
  CHECK_EQ(err, EINVAL);
  CHECK(what.find("ends beyond its file") != std::string::npos);
  auto log = DirtyLog::map(fd, 64, 0x100, &err, &what);  // an offset inside a page
  REQUIRE(log != nullptr);
  log->mark(0, 1);
  uint8_t byte = 0;
  REQUIRE(pread(fd, &byte, 1, 0x100) == 1);
  CHECK_EQ(byte, 1);
  log.reset();
  close(fd);
}

TEST("dirty log: a cursor marks in the log its slot holds now, follows a new one, and marks nothing with none") {
  LogFile a, b;
  auto slot = std::make_shared<DirtyLogSlot>();
  DirtyLogCursor cursor;
  cursor.mark(0x1000, 1);  // not attached: nothing, and no crash
  cursor.attach(slot);
  cursor.mark(0x2000, 1);  // attached, no log yet
  slot->set(a.log);
  cursor.mark(0x3000, 1);
  slot->set(b.log);
  cursor.mark(0x4000, 1);
  slot->set(nullptr);
  cursor.mark(0x5000, 1);
  CHECK(a.take() == (Pages{3}));
  CHECK(b.take() == (Pages{4}));
}

TEST("dirty log: a split queue marks its used ring at flush (at usedLogAddr when given) and what logWrite wrote across regions") {
  TestMemory memory({{0, kMiB}, {kMiB, kMiB}});
  LogFile file;
  auto slot = std::make_shared<DirtyLogSlot>();
  slot->set(file.log);
  SplitDriver driver(memory, 0x1000, 16);  // everything in page 1
  const uint64_t straddling = kMiB - 0x800;  // pages 0xff and 0x100, in two regions
  for (uint64_t logAt : {QueueConfig::kLogAtUsedAddr, uint64_t{0x7000}}) {
    vhost_tap::SplitQueue queue;
    QueueConfig config = driver.config();
    config.dirtyLog = slot;
    config.usedLogAddr = logAt;
    config.lastAvailIdx = driver.availIdx();
    std::string error;
    REQUIRE(queue.setup(memory.map(), config, &error));
    const uint64_t usedPage = logAt == QueueConfig::kLogAtUsedAddr ? driver.usedAddr() / kPage : 7;
    driver.addChain({{straddling, 0x1000, vhost_tap::VRING_DESC_F_WRITE}});
    std::vector<struct iovec> iov(8);
    Chain chain;
    REQUIRE_EQ(queue.pop(true, iov.data(), 8, &chain), PopResult::kChain);
    REQUIRE_EQ(chain.iovCount, 2);
    CHECK(file.take().empty());  // reading marks nothing
    queue.logWrite(iov.data(), chain.iovCount, 0x700, 0x200);  // 0xfff00..0x100100
    CHECK(file.take() == (Pages{0xff, 0x100}));
    queue.logWrite(iov.data(), chain.iovCount, 0x800, 16);  // starts in the second iovec
    CHECK(file.take() == (Pages{0x100}));
    queue.pushUsed(chain.head, 0x200);
    CHECK(file.take().empty());
    queue.flushUsed();
    CHECK(file.take() == (Pages{usedPage}));
    queue.disableNotify();  // the used flags
    CHECK(file.take() == (Pages{usedPage}));
  }
}

TEST("dirty log: a packed queue marks the slots of its used descriptors and, at usedLogAddr, the device event area") {
  TestMemory memory({{0, kMiB}});
  LogFile file;
  auto slot = std::make_shared<DirtyLogSlot>();
  slot->set(file.log);
  // A ring of 300 slots from 0x1000: its used descriptors reach page 2.
  PackedDriver driver(memory, 0x1000, 300);
  QueueConfig config = driver.config();
  config.eventIdx = true;
  config.dirtyLog = slot;
  config.usedLogAddr = 0x9000;  // the frontend's log_guest_addr for the device area
  vhost_tap::PackedQueue queue;
  std::string error;
  REQUIRE(queue.setup(memory.map(), config, &error));
  std::vector<struct iovec> iov(8);
  Chain chain;
  for (uint16_t k = 0; k < 260; k++) {
    driver.post({{0x40000, 64, vhost_tap::VRING_DESC_F_WRITE, k}});
    REQUIRE_EQ(queue.pop(true, iov.data(), 8, &chain), PopResult::kChain);
    queue.pushUsed(chain.head, 64, chain.descCount);
    if (k == 250) {
      queue.flushUsed();  // slots 0..250: 0x1000..0x1fb0, page 1
      CHECK(file.take() == (Pages{1}));
    }
  }
  queue.flushUsed();  // slots 251..259: 0x1fb0..0x2040, pages 1 and 2
  CHECK(file.take() == (Pages{1, 2}));
  queue.enableNotify();  // writes the device event area: logged at 0x9000
  CHECK(file.take() == (Pages{9}));
}

}  // namespace
}  // namespace vhost_tap_test
