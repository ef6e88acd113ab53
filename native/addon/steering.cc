#include "steering.h"

#include <linux/bpf.h>
#include <linux/if_tun.h>
#include <linux/membarrier.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "bpf/steering_program.h"

namespace vhost_tap {
namespace {

long bpf(int cmd, union bpf_attr* attr) { return syscall(SYS_bpf, cmd, attr, sizeof *attr); }

// The verifier gives up with EAGAIN when a signal is pending for the thread (a child's
// SIGCHLD will do): try again, a few times, as libbpf does (PROG_LOAD_ATTEMPTS).
constexpr int kProgLoadAttempts = 5;

long bpfProgLoad(union bpf_attr* attr) {
  long fd;
  int attempts = kProgLoadAttempts;
  do {
    fd = bpf(BPF_PROG_LOAD, attr);
  } while (fd < 0 && errno == EAGAIN && --attempts > 0);
  return fd;
}

}  // namespace

Status loadSteering(SteeringFds* out) {
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.map_type = BPF_MAP_TYPE_ARRAY;
  attr.key_size = 4;
  attr.value_size = sizeof(SteeringConfig);
  attr.max_entries = 1;
  strncpy(attr.map_name, "vt_steering", sizeof attr.map_name - 1);
  int map = static_cast<int>(bpf(BPF_MAP_CREATE, &attr));
  if (map < 0) return Status::fromErrno(errno, "bpf(BPF_MAP_CREATE)");
  // A zeroed configuration steers everything to queue 0 until the control plane writes one.
  constexpr size_t kCount = sizeof(steering_program::kInstructions) / sizeof(steering_program::kInstructions[0]);
  std::vector<struct bpf_insn> insns(kCount);
  memcpy(insns.data(), steering_program::kInstructions, sizeof(steering_program::kInstructions));
  for (uint32_t at : steering_program::kMapFdInstructions) {
    insns[at].src_reg = BPF_PSEUDO_MAP_FD;
    insns[at].imm = map;
  }
  std::vector<char> log(1 << 16);
  memset(&attr, 0, sizeof attr);
  attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
  attr.insns = reinterpret_cast<uint64_t>(insns.data());
  attr.insn_cnt = static_cast<uint32_t>(insns.size());
  attr.license = reinterpret_cast<uint64_t>(steering_program::kLicense);
  attr.log_buf = reinterpret_cast<uint64_t>(log.data());
  attr.log_size = static_cast<uint32_t>(log.size());
  attr.log_level = 1;
  strncpy(attr.prog_name, "vt_steer", sizeof attr.prog_name - 1);
  int prog = static_cast<int>(bpfProgLoad(&attr));
  if (prog < 0 && errno == ENOSPC) {
    // The log buffer was too small for the verifier's trace: load again without one.
    attr.log_buf = 0;
    attr.log_size = 0;
    attr.log_level = 0;
    prog = static_cast<int>(bpfProgLoad(&attr));
  }
  if (prog < 0) {
    const int err = errno;
    std::string verifierLog;
    if (attr.log_buf) verifierLog.assign(log.data(), strnlen(log.data(), log.size()));
    close(map);
    return Status::fromErrno(err, verifierLog.empty() ? "bpf(BPF_PROG_LOAD)"
                                                      : "bpf(BPF_PROG_LOAD) (verifier: " + verifierLog.substr(0, 2000) + ")");
  }
  out->prog = prog;
  out->map = map;
  return Status::success();
}

Status checkSteeringMap(int mapFd) {
  struct bpf_map_info info;
  memset(&info, 0, sizeof info);
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.info.bpf_fd = static_cast<uint32_t>(mapFd);
  attr.info.info_len = sizeof info;
  attr.info.info = reinterpret_cast<uint64_t>(&info);
  const std::string what = "fd " + std::to_string(mapFd) + " is not a steering map: ";
  if (bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) < 0) return Status::fromErrno(errno, what + "it is not a BPF map");
  if (info.type != BPF_MAP_TYPE_ARRAY || info.key_size != 4 || info.value_size != sizeof(SteeringConfig) || info.max_entries != 1) {
    return Status::failure(EINVAL, what + "it is a BPF map of another shape (type " + std::to_string(info.type) + ", value " +
                                       std::to_string(info.value_size) + " bytes, " + std::to_string(info.max_entries) +
                                       " entries): not this version's steering map");
  }
  return Status::success();
}

Status configureSteering(int mapFd, const SteeringConfig& config) {
  uint32_t key = 0;
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.map_fd = static_cast<uint32_t>(mapFd);
  attr.key = reinterpret_cast<uint64_t>(&key);
  attr.value = reinterpret_cast<uint64_t>(&config);
  attr.flags = BPF_ANY;
  if (bpf(BPF_MAP_UPDATE_ELEM, &attr) < 0) return Status::fromErrno(errno, "bpf(BPF_MAP_UPDATE_ELEM) of the steering map");
  return Status::success();
}

Status attachSteering(int tapFd, int progFd) {
  int fd = progFd;
  if (ioctl(tapFd, TUNSETSTEERINGEBPF, &fd) < 0) return Status::fromErrno(errno, "TUNSETSTEERINGEBPF");
  return Status::success();
}

Status testRunSteering(int progFd, const uint8_t* frame, uint32_t length, uint32_t* retval) {
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.test.prog_fd = static_cast<uint32_t>(progFd);
  attr.test.data_in = reinterpret_cast<uint64_t>(frame);
  attr.test.data_size_in = length;
  attr.test.repeat = 1;
  if (bpf(BPF_PROG_TEST_RUN, &attr) < 0) return Status::fromErrno(errno, "bpf(BPF_PROG_TEST_RUN)");
  *retval = attr.test.retval;
  return Status::success();
}

Status waitForRcuGracePeriod() {
  if (syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) < 0) return Status::fromErrno(errno, "membarrier(MEMBARRIER_CMD_GLOBAL)");
  return Status::success();
}

}  // namespace vhost_tap
