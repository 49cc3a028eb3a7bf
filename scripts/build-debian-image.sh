#!/usr/bin/env bash
# Build an Incus unified container image of Debian 12 with systemd as its init, from Debian's own
# packages (debootstrap from the host's apt mirror; the only step that needs the network):
#   scripts/build-debian-image.sh OUT_DIR   ->   OUT_DIR/debian-systemd.tar.zst
# Skipped when OUT_DIR already holds the image built by this script.
set -euo pipefail

OUT=${1:?usage: build-debian-image.sh OUT_DIR}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
command -v debootstrap >/dev/null || { echo "build-debian-image: debootstrap missing (apt-get install debootstrap)" >&2; exit 1; }

mkdir -p "$OUT"
key=$(cat "$0" "$(dirname "$0")/image-metadata.sh" | sha256sum | cut -d" " -f1)-$SUITE
if [ -f "$OUT/debian-systemd.tar.zst" ] && [ "$(cat "$OUT/.debian-systemd.key" 2>/dev/null)" = "$key" ]; then
  exit 0
fi

work=$(mktemp -d "$OUT/.build-debian.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus "$SUITE" "$root" "$MIRROR" \
  > "$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }

# Each container gets its own machine id on first boot, not the build's.
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
rm -rf "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
echo debian > "$root/etc/hostname"
echo "pincus debian-systemd image" > "$root/etc/pincus-image-marker"
# No console login to wait on in a container without a terminal on its console.
ln -sf /dev/null "$root/etc/systemd/system/console-getty.service"

. "$(dirname "$0")/image-metadata.sh"
image_metadata "$work" "Debian $SUITE with systemd (pincus)" debian "$SUITE" "$(date +%s)" "  variant: systemd"

tar -C "$work" --numeric-owner -cf - metadata.yaml rootfs templates | zstd -q -T0 -10 > "$work/image.tar.zst"
mv "$work/image.tar.zst" "$OUT/debian-systemd.tar.zst"
echo "$key" > "$OUT/.debian-systemd.key"
