#!/bin/sh
# Builds the tiny virtio-net test guest for the end-to-end tests (test/e2e/) from
# Debian packages only: Debian's kernel (virtio_net as modules), busybox-static,
# ethtool and iperf3 with their shared libraries.
#
# Output in $GUEST_DIR (default ${XDG_CACHE_HOME:-$HOME/.cache}/vhost-tap-guest):
#   vmlinux        uncompressed kernel, booted by QEMU through its PVH entry (fast under TCG)
#   vmlinuz        the packaged bzImage
#   initramfs.img  busybox rootfs whose /init runs the test commands and powers off
#
# The guest's /init reads from the kernel command line:
#   gip=ADDR/PLEN       eth0's address (default 10.0.0.2/24)
#   gcmd="cmd; cmd"     shell commands to run (no `"` inside), then power off;
#                       without gcmd: an interactive shell on the console
# and prints "GUEST: ready ..." once eth0 is up, "GUEST: done rc=N" after the commands.
#
# Idempotent: an up-to-date guest (same script) is left alone in a few ms; FORCE=1
# rebuilds, removing $GUEST_DIR/build re-downloads. Runs `apt-get update` itself when
# apt has no package lists yet. Needs apt-get, dpkg-deb, xz, gzip (Debian/Ubuntu host).
set -eu
G=${GUEST_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/vhost-tap-guest}
B=$G/build
mkdir -p "$G"

# One builder at a time per guest dir.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$G/.lock"
  flock 9
fi

SUM=$(cat "$0" | cksum | cut -d' ' -f1)
if [ -z "${FORCE:-}" ] && [ -s "$G/vmlinux" ] && [ -s "$G/initramfs.img" ] &&
   [ "$(cat "$G/stamp" 2>/dev/null || true)" = "$SUM" ]; then
  echo "guest up to date in $G"
  exit 0
fi
rm -f "$G/stamp"

kernel_pkg() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/{print $2; exit}'
}
KPKG=$(kernel_pkg || true)
if [ -z "$KPKG" ]; then
  echo "build-guest: apt knows no linux-image-amd64 yet: running apt-get update" >&2
  apt-get update -q >&2
  KPKG=$(kernel_pkg || true)
fi
[ -n "$KPKG" ] || { echo "build-guest: cannot resolve linux-image-amd64 with apt-cache" >&2; exit 1; }
KVER=${KPKG#linux-image-}

mkdir -p "$B/debs"
cd "$B/debs"
PKGS="$KPKG busybox-static ethtool libmnl0 iperf3 libiperf0 libsctp1 libssl3 libc6"
for p in $PKGS; do
  ls "${p}"_*.deb >/dev/null 2>&1 ||
    apt-get -q -o APT::Sandbox::User=root download "$p" >&2
done

X=$B/x; R=$B/rootfs
rm -rf "$X" "$R"; mkdir -p "$X"
for d in *.deb; do dpkg-deb -x "$d" "$X"; done
mkdir -p "$R/bin" "$R/sbin" "$R/lib/modules" "$R/lib64" "$R/proc" "$R/sys" "$R/dev" \
  "$R/tmp" "$R/etc" "$R/usr/bin" "$R/lib/x86_64-linux-gnu"

# The uncompressed ELF vmlinux (the xz payload of the bzImage): QEMU boots it through
# the PVH entry note, several seconds faster under TCG than decompressing a bzImage.
cp "$X/boot/vmlinuz-$KVER" "$G/vmlinuz.tmp"
OFF=$(LC_ALL=C grep -aob "$(printf '\3757zXZ')" "$G/vmlinuz.tmp" | head -1 | cut -d: -f1)
[ -n "$OFF" ] || { echo "build-guest: no xz payload in vmlinuz-$KVER" >&2; exit 1; }
# xz complains about the trailing bytes after the payload: the output is still complete.
tail -c +$((OFF + 1)) "$G/vmlinuz.tmp" | xz -dcq > "$G/vmlinux.tmp" 2>/dev/null || true
[ -s "$G/vmlinux.tmp" ] || { echo "build-guest: vmlinux extraction failed" >&2; exit 1; }

cp "$X/bin/busybox" "$R/bin/busybox"
cp "$X/sbin/ethtool" "$X/usr/bin/iperf3" "$R/usr/bin/"

# The virtio-net stack is modular in Debian's kernel: copied in load order.
MODS="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net"
for m in $MODS; do
  f=$(find "$X/lib/modules/$KVER" -name "$m.ko" | head -1)
  [ -n "$f" ] || { echo "build-guest: module $m not found in $KPKG" >&2; exit 1; }
  cp "$f" "$R/lib/modules/"
done
echo "$MODS" > "$R/etc/modules"

# Shared libraries, resolved with the packaged ld.so (no host tools involved).
LD=$X/lib64/ld-linux-x86-64.so.2
LP=$X/lib/x86_64-linux-gnu:$X/usr/lib/x86_64-linux-gnu
for b in sbin/ethtool usr/bin/iperf3; do
  "$LD" --library-path "$LP" --list "$X/$b" | awk '/=> \//{print $3}' |
    while read -r l; do cp -L "$l" "$R/lib/x86_64-linux-gnu/"; done
done
cp -L "$LD" "$R/lib64/"

cat > "$R/init" <<'EOF'
#!/bin/busybox sh
# Guest /init. Kernel command line knobs (they reach init as environment variables):
#   gip=10.0.0.2/24   eth0's address (default 10.0.0.2/24)
#   gcmd="cmd; cmd"   shell commands to run, then power off; no gcmd: interactive shell
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin HOME=/tmp
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /etc/modules); do insmod /lib/modules/$m.ko || echo "GUEST: insmod $m failed"; done
ip link set lo up
for i in $(seq 1 50); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
ip link set eth0 up && ip addr add ${gip:-10.0.0.2/24} dev eth0
echo "GUEST: ready uptime=$(cut -d' ' -f1 /proc/uptime)s cpus=$(nproc)" \
  "$(ethtool -l eth0 2>/dev/null | awk '/Combined/{v[n++]=$2} END{printf "combined=%s/%s", v[1], v[0]}')"
if [ -n "${gcmd:-}" ]; then
  eval "$gcmd" 2>&1
  echo "GUEST: done rc=$?"
else
  setsid cttyhack sh
fi
poweroff -f
EOF
chmod +x "$R/init"
(cd "$R" && find . | "$X/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1 > "$G/initramfs.img.tmp")

mv -f "$G/vmlinuz.tmp" "$G/vmlinuz"
mv -f "$G/vmlinux.tmp" "$G/vmlinux"
mv -f "$G/initramfs.img.tmp" "$G/initramfs.img"
echo "$KPKG" > "$G/kernel"
echo "$SUM" > "$G/stamp"
rm -rf "$X" "$R"   # ~430 MB extracted; the .debs stay for the next rebuild
echo "guest built in $G: kernel $KPKG, initramfs $(du -h "$G/initramfs.img" | cut -f1)"
