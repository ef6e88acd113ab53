// The tap's steering eBPF program (native/bpf/steering.bpf.c): loaded with the
// bpf() system call, attached with TUNSETSTEERINGEBPF, configured through its
// one-entry array map. No libbpf: the program is committed bytecode
// (native/bpf/steering_program.h) with one map fd to patch in.
#pragma once
#include <cstdint>
#include <string>

#include "status.h"

namespace vhost_tap {

constexpr uint32_t kSteeringKeyBytes = 40;       // virtio-net rss_max_key_size
constexpr uint32_t kSteeringTableEntries = 128;  // rss_max_indirection_table_length

// Must match struct steering_config in native/bpf/steering.bpf.c.
struct SteeringConfig {
  uint32_t mode = 0;  // 0: steer (return the table's queue); 1: return the hash (tests)
  uint32_t hashTypes = 0;
  uint16_t tableMask = 0;
  uint16_t unclassified = 0;
  uint8_t key[kSteeringKeyBytes] = {};
  uint16_t table[kSteeringTableEntries] = {};
};
static_assert(sizeof(SteeringConfig) == 8 + 4 + kSteeringKeyBytes + 2 * kSteeringTableEntries, "no padding");

struct SteeringFds {
  int prog = -1;
  int map = -1;
};

// Creates the map and loads the program. Fails with the kernel's errno (EPERM: no
// CAP_BPF / CAP_SYS_ADMIN, or unprivileged BPF is off; the verifier's complaint in
// the message if it refused the program); nothing is left open.
Status loadSteering(SteeringFds* out);
// Whether `mapFd` is a steering configuration map (an array of one SteeringConfig):
// a map handed over by another process is checked before anything is written to it.
Status checkSteeringMap(int mapFd);
// Writes the configuration into the map (what the program reads for the next frame).
Status configureSteering(int mapFd, const SteeringConfig& config);
// TUNSETSTEERINGEBPF on any queue fd of the tap: progFd, or -1 to detach.
Status attachSteering(int tapFd, int progFd);
// BPF_PROG_TEST_RUN over one Ethernet frame: the program's return value.
Status testRunSteering(int progFd, const uint8_t* frame, uint32_t length, uint32_t* retval);
// Waits until every CPU has passed a quiescent state (membarrier MEMBARRIER_CMD_GLOBAL,
// which is synchronize_rcu()): a steering program that read the old configuration has
// finished, and its frame is in the queue it chose. Fails if the kernel cannot (nohz_full).
Status waitForRcuGracePeriod();

}  // namespace vhost_tap
