#!/usr/bin/env bash
# One-step, idempotent set-up on Debian 12 as root: system packages, then a venv with pincus.
# Re-running is cheap: each half is skipped while its inputs are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
# netbase: /etc/protocols and /etc/services, which nftables needs to read "udp" or "tcp" in a rule.
# lxd-client: LXD 5.0.2's Go client `lxc`, a real third-party client of the API (tests/clients).
# squashfs-tools, zstd, xz-utils, tar: Incus image formats (unsquashfs, zstd streams; build-image.sh).
# libdqlite0: the cluster database (host/dqlite_node.py, through ctypes); etcd-server: only the other
# side of bench/bench_clusterdb.py, the measurement that chose dqlite.
# ovn-central, ovn-host, openvswitch-switch: OVN networks (pincusd starts the daemons itself; installing
# them starts no service where policy-rc.d refuses).
SYS_PACKAGES=(iproute2 nftables dnsmasq-base qemu-system-x86 busybox-static util-linux cpio squashfs-tools zstd xz-utils tar
              kmod procps netbase python3 python3-venv lxd-client
              libdqlite0 etcd-server btrfs-progs debootstrap
              ovn-central ovn-host openvswitch-switch)

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (pincus manages host networking)" >&2
  exit 1
fi

missing=()
for p in "${SYS_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp="$VENV/.pincus-setup"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: preparing $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e ".[test]"
  echo "$want" > "$stamp"
fi

# Every pincus command is a new process: byte-compiled modules save ~10 ms each time
# (skipped for files already up to date, so cheap to repeat).
"$VENV/bin/python" -m compileall -q src >/dev/null

# ... and pip's wrapper runs site's whole start-up first: the `pincus` command is a launcher
# with `python -SP` that finds src/ and site-packages itself (pip rewrites the wrapper on every
# install, so this runs every time; bench/README.md has the figures).
"$VENV/bin/python" scripts/write_launcher.py "$VENV/bin/pincus" "$ROOT/src"
