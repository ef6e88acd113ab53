#!/usr/bin/env bash
# Runs the whole suite under coverage inside a private network namespace that
# dies with the run, so no test can touch the host's interfaces, and ends with
# the line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "npm test must run as root: the tests create tap devices and network namespaces" >&2
  exit 1
fi

# The end-to-end tests boot a guest built from Debian packages; download them here,
# while the network is reachable: inside the test namespace there is none.
if command -v qemu-system-x86_64 >/dev/null 2>&1; then
  sh scripts/build-guest.sh || echo "scripts/build-guest.sh failed: the end-to-end guest tests will fail" >&2
fi

# test/consumer.test.ts installs the packed tarball into an empty project with --offline
# (inside the namespace there is no network): resolve the package's dependencies here once, as
# that install will, so npm's cache holds them. --prefer-offline: no registry round trip once cached.
deps=$(node -p "Object.entries(require('./package.json').dependencies).map(([n, v]) => n + '@' + v).join(' ')")
scratch=$(mktemp -d)
# shellcheck disable=SC2086  # one word per dependency
npm install --prefix "$scratch" --prefer-offline --no-save --no-package-lock --ignore-scripts --no-audit --no-fund $deps >/dev/null 2>&1 ||
  echo "could not fill npm's cache with $deps: test/consumer.test.ts will fail" >&2
rm -rf "$scratch"

export VHOST_TAP_HOST_NETNS
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# A private mount namespace too: namespaces a test makes with `ip netns add`
# live under a /run/netns that exists only for this run.
VHOST_TAP_HOST_NETNS=$(readlink /proc/self/ns/net) unshare --net --mount --propagation private -- bash -c '
  mkdir -p /run/netns && mount -t tmpfs -o mode=0755 vhost-tap-netns /run/netns
  mount -t sysfs sysfs /sys
  ip link set lo up
  exec npx --no-install c8 --reporter=text-summary --exclude "dist/test/**" --exclude "dist/harness/**" \
    uvu dist/test "\.test\.js$" "$@"
' test "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

total=$(grep -Eo 'Total: +[0-9]+' "$log" | grep -Eo '[0-9]+' | tail -1)
passed=$(grep -Eo 'Passed: +[0-9]+' "$log" | grep -Eo '[0-9]+' | tail -1)
skipped=$(grep -Eo 'Skipped: +[0-9]+' "$log" | grep -Eo '[0-9]+' | tail -1)
total=${total:-0}; passed=${passed:-0}; skipped=${skipped:-0}
failed=$((total - passed - skipped))
# A crash before uvu's summary leaves no totals: count it as a failure.
if [ "$status" != 0 ] && [ "$failed" = 0 ]; then failed=1; fi
echo
echo "$passed passed, $failed failed, $skipped skipped"
exit "$status"
