#!/usr/bin/env bash
# Build, offline, a small Incus unified container image from Debian's busybox-static:
#   scripts/build-image.sh OUT_DIR   ->   OUT_DIR/busybox.tar.xz
# Reproducible (fixed owners, order and times), so the same busybox gives the same fingerprint;
# skipped when OUT_DIR already holds the image built from this busybox and this script.
set -euo pipefail

OUT=${1:?usage: build-image.sh OUT_DIR}
BUSYBOX=${BUSYBOX:-/bin/busybox}
[ -x "$BUSYBOX" ] || { echo "build-image: $BUSYBOX missing (apt-get install busybox-static)" >&2; exit 1; }

mkdir -p "$OUT"
key=$(cat "$BUSYBOX" "$0" "$(dirname "$0")/image-metadata.sh" | sha256sum | cut -d" " -f1)
if [ -f "$OUT/busybox.tar.xz" ] && [ "$(cat "$OUT/.busybox.key" 2>/dev/null)" = "$key" ]; then
  exit 0
fi

work=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
epoch=$(stat -c %Y "$BUSYBOX")
root="$work/rootfs"

mkdir -p "$root"/{bin,sbin,etc,dev,proc,sys,run,tmp,root,usr,var/log}
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"
cp "$BUSYBOX" "$root/bin/busybox"
# Every applet in /bin or /sbin, never under /usr: tests bind the host's /usr over it.
"$BUSYBOX" --list-full | while read -r path; do
  applet=${path##*/}
  case "$path" in
    sbin/*|usr/sbin/*) dir=sbin ;;
    *) dir=bin ;;
  esac
  [ "$applet" = busybox ] || [ -e "$root/$dir/$applet" ] || [ -e "$root/bin/$applet" ] \
    || ln -s /bin/busybox "$root/$dir/$applet"
done
ln -sf /bin/busybox "$root/sbin/init"
# A host /usr bind-mounted in brings its libraries: keep Debian's merged-/usr paths working.
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"

cat > "$root/etc/inittab" <<'EOF'
::sysinit:/bin/hostname -F /etc/hostname
::respawn:/bin/sh -c 'if (: </dev/console) 2>/dev/null; then exec /bin/sh </dev/console >/dev/console 2>&1; fi; exec /bin/sleep 2147483647'
EOF
cat > "$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat > "$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
echo busybox > "$root/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost\n' > "$root/etc/hosts"
echo "pincus busybox image" > "$root/etc/pincus-image-marker"

version=$("$BUSYBOX" 2>&1 | head -1 | awk '{print $2}')
. "$(dirname "$0")/image-metadata.sh"
image_metadata "$work" "busybox $version (pincus test image)" busybox "$version" "$epoch"

tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
    -cf - metadata.yaml rootfs templates | xz -T1 -6 > "$work/busybox.tar.xz"
mv "$work/busybox.tar.xz" "$OUT/busybox.tar.xz"
echo "$key" > "$OUT/.busybox.key"
