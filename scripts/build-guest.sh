#!/usr/bin/env bash
# Build (once) the tiny test guest: Debian's cloud kernel plus an initramfs of busybox-static and
# the virtio-net modules whose /init brings every eth* up, takes a DHCP lease, pings the router,
# prints marker lines on ttyS0 and powers off. Boot it with -append 'console=ttyS0 quiet'.
#
# Output: $PINCUS_GUEST_CACHE (default <repo>/.cache/guest)/vmlinuz and /initrd.img; their paths
# are also the last two lines printed. Beside them, modules/lib/modules/<version>/ keeps the
# kernel's networking modules, indexed by depmod, for the guest that runs tests against a
# kernel with the features the host lacks (tests/guestkernel/image.py). A second run is a
# no-op while this script is unchanged.
# Needs root on Debian 12 with apt, busybox-static and cpio (scripts/setup.sh installs them).
#
# Markers the guest prints (one per line, on ttyS0):
#   PINCUS-GUEST MAC <iface> <mac>       for every eth*, before DHCP
#   PINCUS-GUEST LEASE <iface> <ip>      when udhcpc got an address
#   PINCUS-GUEST NOLEASE <iface>         when it did not
#   PINCUS-GUEST PING ok|fail            3 pings to the first router a lease named
#   PINCUS-GUEST DONE                    just before poweroff -f
#
# With `pincus.hold=<seconds>` on the kernel command line the guest stays up that long after
# the ping, for hot-plug and graceful-stop tests: it prints `PINCUS-GUEST HOLD <seconds>`, then
# MAC/LEASE/NOLEASE for every eth* that appears and `PINCUS-GUEST GONE <iface>` for every one
# that is unplugged, and answers the ACPI power button (QMP system_powerdown) with
# `PINCUS-GUEST POWERBUTTON` and poweroff -f. DONE and poweroff follow when the time is up.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${PINCUS_GUEST_CACHE:-$ROOT/.cache/guest}
META=linux-image-cloud-amd64
# virtio-net in load order; then the ACPI power button and evdev, which busybox acpid reads.
MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
         failover net_failover virtio_net button evdev)

mkdir -p "$CACHE"
# The stamp ties the cached artefacts to this script's text: editing /init below rebuilds.
want=$(sha256sum "$0" | cut -d' ' -f1)

up_to_date() {
  [ -s "$CACHE/vmlinuz" ] && [ -s "$CACHE/initrd.img" ] && [ -d "$CACHE/modules/lib/modules" ] &&
    [ "$(cat "$CACHE/stamp" 2>/dev/null)" = "$want" ]
}

finish() {
  echo "$CACHE/vmlinuz"
  echo "$CACHE/initrd.img"
  exit 0
}

up_to_date && finish

# Parallel callers (several test runs at once) wait for one builder instead of racing it.
exec 9>"$CACHE/.lock"
flock 9
up_to_date && finish

if [ "$(id -u)" != 0 ]; then
  echo "build-guest: run as root (apt-get download, dpkg -x)" >&2
  exit 1
fi
BUSYBOX=/bin/busybox
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed"; then
  echo "build-guest: busybox-static is not installed (a dynamic busybox cannot run in the initramfs)" >&2
  exit 1
fi
for tool in cpio gzip apt-get dpkg depmod; do
  command -v "$tool" >/dev/null || { echo "build-guest: $tool not found" >&2; exit 1; }
done

WORK=$(mktemp -d "$CACHE/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Point releases replace the versioned kernel package; the metapackage names the current one.
# (No package lists yet, as on a fresh system: apt-cache fails and the lists are fetched.)
resolve() {
  apt-cache depends "$META" 2>/dev/null | awk '/Depends: linux-image-/ && !n {print $2; n=1}' || true
}
pkg=$(resolve)
if [ -z "$pkg" ]; then
  apt-get update -qq
  pkg=$(resolve)
fi
[ -n "$pkg" ] || { echo "build-guest: cannot resolve $META to a kernel package" >&2; exit 1; }

# The download goes to a private temp dir the _apt sandbox user cannot reach: download as root
# (what apt would fall back to anyway, minus its warning).
mkdir "$WORK/deb"
download() {
  (cd "$WORK/deb" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >/dev/null)
}
if ! download; then
  # Stale lists name a package the mirror no longer has: refresh, resolve again, retry once.
  apt-get update -qq
  pkg=$(resolve)
  download
fi
dpkg -x "$WORK"/deb/*.deb "$WORK/kernel"

kver=${pkg#linux-image-}
moddir="$WORK/kernel/lib/modules/$kver"
[ -d "$moddir" ] || moddir=$(find "$WORK/kernel/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n1)
vmlinuz=$(find "$WORK/kernel/boot" -name 'vmlinuz-*' | head -n1)
[ -n "$vmlinuz" ] || { echo "build-guest: no vmlinuz in $pkg" >&2; exit 1; }

# Networking modules and what they depend on (lib, crypto); depmod makes modprobe work on them.
kver=$(basename "$moddir")
keep="$WORK/modules/lib/modules/$kver"
mkdir -p "$keep/kernel/drivers"
cp -a "$moddir"/modules.order "$moddir"/modules.builtin* "$keep/"
cp -a "$moddir/kernel/net" "$moddir/kernel/lib" "$moddir/kernel/crypto" "$keep/kernel/"
cp -a "$moddir/kernel/drivers/net" "$keep/kernel/drivers/"
depmod -b "$WORK/modules" "$kver"

# --- initramfs tree ---
R="$WORK/root"
mkdir -p "$R"/{bin,sbin,dev,proc,sys,tmp,etc,lib/modules,usr/bin,usr/sbin}
cp "$BUSYBOX" "$R/bin/busybox"

# busybox insmod reads plain ELF only, so compressed modules are unpacked here.
order=()
for m in "${MODULES[@]}"; do
  ko=$(find "$moddir" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" |
       head -n1)
  if [ -z "$ko" ]; then
    if grep -q "/$m.ko\$" "$moddir/modules.builtin" 2>/dev/null; then
      continue  # built into this kernel: nothing to load
    fi
    echo "build-guest: module $m not found in $pkg" >&2
    exit 1
  fi
  case "$ko" in
    *.ko.xz)  xz -dc "$ko" >"$R/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$ko" >"$R/lib/modules/$m.ko" ;;
    *.ko.gz)  gzip -dc "$ko" >"$R/lib/modules/$m.ko" ;;
    *)        cp "$ko" "$R/lib/modules/$m.ko" ;;
  esac
  order+=("$m")
done
printf '%s\n' "${order[@]}" >"$R/lib/modules/order"

cat >"$R/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
exec >/dev/ttyS0 2>&1
say() { echo "PINCUS-GUEST $*"; }

while read -r m; do
  insmod "/lib/modules/$m.ko" || say "INSMOD-FAIL $m"
done </lib/modules/order

# Devices probe asynchronously after insmod: give them a moment to appear.
i=0
while [ -z "$(ls -d /sys/class/net/eth* 2>/dev/null)" ] && [ $i -lt 50 ]; do
  sleep 0.1; i=$((i + 1))
done

ip link set lo up
for d in /sys/class/net/eth*; do
  [ -e "$d" ] || continue
  n=${d##*/}
  ip link set "$n" up
  say "MAC $n $(cat "$d/address")"
done
lease() {
  udhcpc -n -q -t 5 -T 1 -i "$1" -s /etc/udhcpc.script >/dev/null 2>&1 || say "NOLEASE $1"
}
for d in /sys/class/net/eth*; do
  [ -e "$d" ] || continue
  lease "${d##*/}"
done

router=$(cat /tmp/router 2>/dev/null | head -n1)
if [ -n "$router" ] && ping -c 3 -W 2 "$router" >/dev/null 2>&1; then
  say "PING ok"
else
  say "PING fail"
fi
hold=$(sed -n 's/.*pincus\.hold=\([0-9][0-9]*\).*/\1/p' /proc/cmdline)
if [ -n "$hold" ]; then
  acpid -c /etc/acpi -l /dev/null -p /tmp/acpid.pid
  say "HOLD $hold"
  known=" "
  for d in /sys/class/net/eth*; do [ -e "$d" ] && known="$known${d##*/} "; done
  end=$(( $(date +%s) + hold ))
  while [ "$(date +%s)" -lt "$end" ]; do
    for d in /sys/class/net/eth*; do
      [ -e "$d" ] || continue
      n=${d##*/}
      case "$known" in *" $n "*) continue ;; esac
      known="$known$n "
      ip link set "$n" up
      say "MAC $n $(cat "$d/address")"
      lease "$n"
    done
    for n in $known; do
      [ -e "/sys/class/net/$n" ] && continue
      say "GONE $n"
      known=$(echo "$known" | sed "s/ $n / /")
    done
    sleep 0.2
  done
fi
say DONE
poweroff -f
EOF
chmod 0755 "$R/init"

cat >"$R/etc/udhcpc.script" <<'EOF'
#!/bin/sh
# udhcpc calls this with $1 = deconfig|bound|renew|leasefail|nak and the lease in env vars.
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    for r in $router; do echo "$r" >>/tmp/router; break; done
    echo "PINCUS-GUEST LEASE $interface $ip" >/dev/ttyS0
    ;;
esac
exit 0
EOF
chmod 0755 "$R/etc/udhcpc.script"

# busybox acpid runs <confdir>/<event> when that is a file: PWRF/00000080 is the power button.
mkdir -p "$R/etc/acpi/PWRF"
cat >"$R/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo "PINCUS-GUEST POWERBUTTON" >/dev/ttyS0
poweroff -f
EOF
chmod 0755 "$R/etc/acpi/PWRF/00000080"

(cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9 >"$WORK/initrd.img"

# Replace atomically so a reader never sees a half-written artefact.
cp "$vmlinuz" "$WORK/vmlinuz"
mv -f "$WORK/vmlinuz" "$CACHE/vmlinuz"
mv -f "$WORK/initrd.img" "$CACHE/initrd.img"
rm -rf "$CACHE/modules"
mv "$WORK/modules" "$CACHE/modules"
echo "$pkg" >"$CACHE/kernel-package"
echo "$want" >"$CACHE/stamp"
finish
