// What the bench addon's files share: its registration functions, and the
// clock, pinning and round-trip summary both kinds of generator use.
#pragma once
#include <napi.h>

#include <cstdint>
#include <vector>

namespace vhost_tap {
namespace bench {

// CLOCK_MONOTONIC in nanoseconds.
uint64_t nowNs();
// nanosleep through EINTR.
void sleepNs(uint64_t ns);
// Pins the calling thread to `cpu` (nothing when cpu < 0).
void pinThisThread(int cpu);
// p50/p99/... of round trips in nanoseconds, as a JS object (microseconds).
Napi::Object rttSummary(Napi::Env env, std::vector<uint64_t> rtts, uint64_t lost);

// raw_loops.cc: BenchLoop and syscallCostNs.
void registerRawLoops(Napi::Env env, Napi::Object exports);
// guest_generator.cc: BenchGuest.
void registerGuestGenerator(Napi::Env env, Napi::Object exports);

}  // namespace bench
}  // namespace vhost_tap
