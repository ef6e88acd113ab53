#!/usr/bin/env bash
# npm run fuzz -- [--seconds N] [--only TARGET] [--parallel N]
# Builds the libFuzzer targets of native/fuzz (clang-14 with ASan and UBSan; a
# build of its own in build-fuzz/, so npm install never needs clang) and runs each
# for N seconds (default 60) on its committed seed corpus. New inputs go to a
# scratch directory, so the committed corpus stays as it is. Prints per target the
# executions and the coverage reached (libFuzzer's cov: edges, ft: features);
# exits non-zero if any target found something, leaving the input that did it in
# build-fuzz/artifacts/<target>/ (reproduce: build-fuzz/fuzz_<target> FILE).
# --parallel N runs up to N targets at once (CI: one per core, so the fuzzing takes
# half the wall time on 2 cores; each target still gets its N seconds).
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=60
only=""
parallel=1
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="${2:-}"; shift 2 ;;
    --seconds=*) seconds="${1#--seconds=}"; shift ;;
    --only) only="${2:-}"; shift 2 ;;
    --only=*) only="${1#--only=}"; shift ;;
    --parallel) parallel="${2:-}"; shift 2 ;;
    --parallel=*) parallel="${1#--parallel=}"; shift ;;
    *) echo "usage: npm run fuzz -- [--seconds N] [--only split_queue|packed_queue|guest_memory|queue_pair_worker] [--parallel N]" >&2; exit 2 ;;
  esac
done
case "$seconds" in '' | *[!0-9]*) echo "--seconds takes a whole number of seconds, not '$seconds'" >&2; exit 2 ;; esac
case "$parallel" in '' | 0 | *[!0-9]*) echo "--parallel takes a number of targets from 1, not '$parallel'" >&2; exit 2 ;; esac

cxx="${FUZZ_CXX:-clang++-14}"
if ! command -v "$cxx" >/dev/null 2>&1; then
  echo "the fuzzers need clang with libFuzzer: apt-get install clang-14 libclang-rt-14-dev (or set FUZZ_CXX)" >&2
  exit 2
fi

build=build-fuzz
cmake -S native/fuzz -B "$build" -DCMAKE_CXX_COMPILER="$cxx" >"$build.configure.log" 2>&1 ||
  { cat "$build.configure.log" >&2; exit 2; }
rm -f "$build.configure.log"
cmake --build "$build" -j "$(nproc)" >/dev/null || { cmake --build "$build" -j 1 >&2; exit 2; }

targets=(split_queue packed_queue guest_memory queue_pair_worker)
[ -n "$only" ] && targets=("$only")

export UBSAN_OPTIONS="print_stacktrace=1:${UBSAN_OPTIONS:-}"
# Runs one target; its report goes to $build/<target>.report, and the exit status
# says whether it found something.
fuzz_one() {
  local target="$1"
  local binary="$build/fuzz_$target"
  local seeds="native/fuzz/corpus/$target"
  local report="$build/$target.report"
  if ! [ -x "$binary" ] || ! [ -d "$seeds" ]; then
    echo "$target: no such fuzz target (or no corpus in $seeds)" >"$report"
    return 1
  fi
  local scratch artifacts="$build/artifacts/$target" log="$build/$target.log"
  scratch=$(mktemp -d)
  mkdir -p "$artifacts"
  # The scratch directory first: libFuzzer adds what it finds to the first corpus directory only.
  "$binary" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$scratch" "$seeds" >"$log" 2>&1
  local status=$?
  rm -rf "$scratch"
  local execs cov ft corp nseeds
  execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
  cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+')
  ft=$(grep -Eo 'ft: [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+')
  corp=$(grep -Eo 'corp: [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+')
  nseeds=$(find "$seeds" -type f | wc -l)
  if [ "$status" = 0 ]; then
    echo "$target: ${execs:-?} executions in ${seconds} s, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?} (from $nseeds seeds)" >"$report"
    return 0
  fi
  {
    echo "$target: FOUND A PROBLEM (exit $status) after ${execs:-?} executions; libFuzzer's report:"
    grep -E -A60 '^==[0-9]+==|invariant violated|runtime error|ERROR: libFuzzer' "$log" | head -120
    echo "$target: the input is in $artifacts/ ; reproduce with: $binary $artifacts/<file>; full log $log"
  } >"$report"
  return 1
}

# Each target's exit status goes to a file: a job reaped by `wait -n` keeps no status to ask for later.
for target in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n; done
  rm -f "$build/$target.status"
  { fuzz_one "$target"; echo $? >"$build/$target.status"; } &
done
wait
failed=()
for target in "${targets[@]}"; do
  [ "$(cat "$build/$target.status" 2>/dev/null)" = 0 ] || failed+=("$target")
  cat "$build/$target.report" 2>/dev/null || echo "$target: no report"
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing failed: ${failed[*]}"
  exit 1
fi
echo "fuzzing: ${#targets[@]} targets, no findings"
