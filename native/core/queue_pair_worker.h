// One native thread per queue pair: it moves frames with their virtio_net_hdr
// between the tap queue fd and the pair's two virtqueues, as vhost-net does in
// the kernel with tun_get_socket(). Kicks and calls are eventfds. Nothing on the
// per-frame path allocates or calls into JS.
//
// Three parts: the transmit path (tx_path.h), the receive path (rx_path.h), and
// this, the worker's event loop: its thread, the epoll set (the tap, both kicks,
// a stop eventfd), stop and drain, and the counters JS reads.
//
// The tap fd is only ever read and written (readv/writev, io_uring READV/WRITEV)
// and watched with epoll, through TapIo (tap_io.h): no ioctl, no check of what it
// is (only that it is non-blocking). Any non-blocking datagram fd can stand in for
// the tap, e.g. one end of socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK): a
// datagram is a frame, header first.
#pragma once
#include <sys/epoll.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "call_notifier.h"
#include "guest_memory.h"
#include "rx_path.h"
#include "status.h"
#include "tap_io.h"
#include "tx_path.h"
#include "worker_queue.h"

namespace vhost_tap {

struct WorkerOptions {
  std::shared_ptr<GuestMemoryMap> memory;
  int tapFd = -1;               // the tap queue, or any datagram fd standing in for it (see above)
  uint32_t hdrSize = 12;        // virtio_net_hdr size, the same as the tap's TUNSETVNETHDRSZ
  bool mergeableRx = false;     // VIRTIO_NET_F_MRG_RXBUF
  uint32_t rxReserveBytes = 0;  // mergeable: room to gather before reading a frame (a typical frame)
  uint32_t rxMaxFrameBytes = 0; // the largest frame (with header) the tap can hand us; 0: unknown (GSO)
  uint64_t busyPollNs = 0;      // after work, look for more this long before sleeping (0: never spin)
  // The pair is out of use while its tx ring stays started (vhost-user.rst "Ring
  // states": a started but disabled ring "must process and discard any TX packets"
  // and supply no new RX packets). The worker then touches neither the tap nor the
  // rx ring (tapFd and rx may be unset) and completes each tx chain unsent as the
  // driver posts it, so a guest never waits for buffers a queue out of use holds.
  bool txDiscardOnly = false;
  QueueConfig rx;
  QueueConfig tx;
};

class QueuePairWorker {
 public:
  QueuePairWorker(WorkerOptions options, WorkerEventSink sink);
  ~QueuePairWorker();
  QueuePairWorker(const QueuePairWorker&) = delete;
  QueuePairWorker& operator=(const QueuePairWorker&) = delete;

  // Takes the worker's own copies (F_DUPFD_CLOEXEC) of the kick and call fds, which
  // must be eventfds: from here on the caller may close its numbers, and a number
  // it closed and the process reused is never written. Call once, before start().
  // Fails with EBADF (a number is not open), EINVAL (not an eventfd, or missing) or
  // the errno of the copy (EMFILE...).
  Status adoptFds();
  // Fails with EINVAL (a ring outside guest memory, misaligned...) or the errno of
  // the system call that failed. A failed start() releases what the worker holds, as stop() does.
  Status start();
  // Stops and joins the thread, then closes every fd the worker holds and lets go
  // of guest memory. Every chain it popped is completed or given back. Nothing the
  // worker does waits on a frontend's fd, so this returns promptly.
  // discardTx: the pair is being taken out of use while its rings stay started
  // (VQ_PAIRS_SET, SET_VRING_ENABLE 0): chains the driver left on the tx ring are
  // completed unsent, as vhost-user.rst ("Ring states") asks of a started but
  // disabled ring, so the guest gets its buffers (and their sockets' memory) back.
  // drainRx: read the tap queue until it is empty before stopping, not only a bounded
  // amount: for a queue no frame is steered to any more (the steering program took it
  // out of its table), whose backlog the detach that follows would purge. If the
  // driver has posted no buffers for what is left, the worker waits for some a
  // little, then reads the rest and drops it, counted (drops.stopped).
  void stop(bool discardTx = false, bool drainRx = false);
  bool running() const { return thread_.joinable(); }

  // Valid once stopped: where the device is in each available ring (vhost GET_VRING_BASE).
  // (For a packed ring, the vhost-user encoding of both positions and wrap counters.)
  uint32_t rxLastAvail() const { return rx_.queue().ring().ringBase(); }
  uint32_t txLastAvail() const { return tx_.queue().ring().ringBase(); }
  bool rxBroken() const { return rx_.queue().broken(); }
  bool txBroken() const { return tx_.queue().broken(); }

  QueueStats rxStats;
  QueueStats txStats;

 private:
  // A disabled tx ring's chains are discarded only once they have waited this long. QEMU
  // sends SET_VRING_ENABLE without waiting for the backend, and the guest transmits on a
  // queue it just enabled before the daemon has read that message: a chain seen at once
  // would be dropped (a ping after `ethtool -L` was). A chain left on a ring that really is
  // disabled (a guest's last skbs after `ethtool -L` down) is freed a second later.
  static constexpr uint64_t kDiscardGraceNs = 1000000000ull;

  void run();
  // The loop of a txDiscardOnly worker.
  void runDiscardingTx();
  int waitForWork(struct epoll_event* events, int max, bool idle, bool* txMore, bool* rxMore);
  // The worker's own wait failed: nothing more can be moved.
  void reportWaitFailed(const char* where, int err);
  void release();
  void closeAdoptedFds();
  void closeControlFds();

  WorkerOptions options_;
  WorkerEventSink sink_;
  TapIo tap_;
  RxPath rx_{&rxStats, &tap_};
  TxPath tx_{&txStats, &tap_};
  std::thread thread_;
  bool fdsAdopted_ = false;
  CallNotifier callNotifier_;
  int epoll_ = -1;
  int stopFd_ = -1;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> discardTxOnStop_{false};
  std::atomic<bool> drainRxOnStop_{false};
};

}  // namespace vhost_tap
