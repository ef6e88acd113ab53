#!/usr/bin/env bash
# Runs the data-path tests against an AddressSanitizer build of the addon, in a
# private network namespace (as scripts/test.sh does), and fails if ASan reports
# anything or a test fails.
#
#   bash scripts/asan.sh                 # build:asan, tsc, then every data-path test file
#   bash scripts/asan.sh malformed       # only the test files whose name matches
#   ASAN_SKIP_BUILD=1 bash scripts/asan.sh   # reuse build-asan/ and dist/ as they are
#
# The addon is built into build-asan/ (`npm run build:asan`), never build/, so
# it does not disturb the normal build. Node itself is not instrumented: libasan
# is preloaded so that its allocator and interceptors are in place before the
# addon loads. Leak detection is off because Node leaks by design at exit (it
# does not free its heap, isolates or static state), so LeakSanitizer would
# report thousands of "leaks" that are not ours; everything else (overflows,
# use-after-free, double free, bad frees) stays on and halts the run. The
# quarantine of freed memory is cut from 256 to 16 MB: Node frees a Buffer or two
# per frame, and a full quarantine shows up as RSS growth that the stress test's
# memory check rejects; 16 MB still holds the last several thousand frees.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "asan.sh must run as root: the tests create tap devices and network namespaces" >&2
  exit 1
fi

addon="$PWD/build-asan/Release/vhost_tap.node"
if [ -z "${ASAN_SKIP_BUILD:-}" ]; then
  npm run --silent build:asan || { echo "asan.sh: npm run build:asan failed" >&2; exit 1; }
  npx --no-install tsc -p tsconfig.json || { echo "asan.sh: tsc failed" >&2; exit 1; }
fi
if [ ! -f "$addon" ]; then
  echo "asan.sh: $addon is missing: run npm run build:asan" >&2
  exit 1
fi
if ! nm -D "$addon" 2>/dev/null | grep '__asan_' >/dev/null; then  # not -q: nm would die of SIGPIPE under pipefail
  echo "asan.sh: $addon is not built with AddressSanitizer (cmake -DVHOST_TAP_ASAN=ON)" >&2
  exit 1
fi
libasan=$(gcc -print-file-name=libasan.so)
if [ ! -e "$libasan" ]; then
  echo "asan.sh: libasan.so not found (gcc -print-file-name=libasan.so gave '$libasan')" >&2
  exit 1
fi

# The data-path test files: datapath, malformed, and any other that drives a QueuePair.
files=()
for f in dist/test/*.test.js; do
  name=$(basename "$f" .test.js)
  if [ "$name" = datapath ] || [ "$name" = malformed ] || grep -qE "helpers/datapath|QueuePair" "$f"; then
    if [ $# -eq 0 ] || printf '%s\n' "$@" | grep -qxF "$name"; then files+=("$name"); fi
  fi
done
if [ ${#files[@]} -eq 0 ]; then
  echo "asan.sh: no data-path test files in dist/test matched: run tsc first" >&2
  exit 1
fi
pattern="^($(IFS='|'; echo "${files[*]}"))\\.test\\.js$"
echo "asan.sh: $addon"
echo "asan.sh: test files: ${files[*]}"

logdir=$(mktemp -d)
trap 'rm -rf "$logdir"' EXIT

# log_path: every process (the test runner and anything it spawns) writes its
# report to its own file, so a report cannot be lost in the test output.
export VHOST_TAP_HOST_NETNS
VHOST_TAP_HOST_NETNS=$(readlink /proc/self/ns/net) \
VHOST_TAP_ADDON="$addon" \
ASAN_LIB="$libasan" \
ASAN_OPTIONS="detect_leaks=0:quarantine_size_mb=16:halt_on_error=1:abort_on_error=0:detect_stack_use_after_return=0:log_path=$logdir/asan" \
NO_COLOR=1 \
unshare --net --mount --propagation private -- bash -c '
  mkdir -p /run/netns && mount -t tmpfs -o mode=0755 vhost-tap-netns /run/netns
  mount -t sysfs sysfs /sys
  ip link set lo up
  # Children of node (ip, ethtool) inherit the preload too; harmless, and their reports would count.
  exec env LD_PRELOAD="$ASAN_LIB" node node_modules/uvu/bin.js dist/test "$1"
' asan "$pattern"
status=$?

reports=$(find "$logdir" -type f -size +0 | sort)
if [ -n "$reports" ]; then
  for r in $reports; do
    echo "==== AddressSanitizer report: $r"
    cat "$r"
  done
  echo "asan.sh: FAILED: AddressSanitizer reported errors" >&2
  exit 1
fi
if [ "$status" != 0 ]; then
  echo "asan.sh: FAILED: the tests failed (exit $status) with no ASan report" >&2
  exit "$status"
fi
echo "asan.sh: OK: ${files[*]} passed under AddressSanitizer, no reports"
