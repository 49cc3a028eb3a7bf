#!/usr/bin/env bash
# The demo: a private pincusd wires two containers and a VM into networks the "host" already has,
# through managed physical networks whose parents are bridges, shows leases, a ping, each NIC's
# path and the live event stream, then removes everything it made.
#
# It all happens inside a throw-away network namespace (the demo's "host"), so the machine's own
# interfaces are never touched, and it checks at the end that nothing was left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
# --cluster: this demo, then the cluster one (three members, an OVN network across them);
# --cluster-only: that one alone (scripts/demo-cluster.sh).
case "${1:-}" in
  --cluster) bash "$0"; exec bash scripts/demo-cluster.sh ;;
  --cluster-only) exec bash scripts/demo-cluster.sh ;;
  "") ;;
  *) echo "usage: $0 [--cluster|--cluster-only]" >&2; exit 2 ;;
esac
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
. scripts/own-root.sh && own_root "$PWD/scripts/demo.sh" "$@"

TAG=pd$(printf '%04x' $((RANDOM)))
NS=${TAG}ns
LAN=${TAG}-lan                      # the admin's existing LAN bridge
export PINCUS_DIR PINCUS_AUTO_IPV4_POOL=10.250.0.0/16 PINCUS_AUTO_IPV6_POOL=fd42:250::/32
PINCUS_DIR=$(mktemp -d /tmp/pincus-demo.XXXXXX)
chmod 0711 "$PINCUS_DIR"
DAEMON_PID= MONITOR_PID=
START=$(date +%s)

bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

cleanup() {
  set +e
  bold "== cleaning up"
  [ -n "$MONITOR_PID" ] && kill "$MONITOR_PID" 2>/dev/null
  if [ -n "$DAEMON_PID" ]; then
    pincus delete -f c1 c2 v1 >/dev/null 2>&1
    for n in lan dhcp; do pincus network delete "$n" >/dev/null 2>&1; done
    pincus network delete "${TAG}br" >/dev/null 2>&1
    pincus admin shutdown --timeout 20 >/dev/null 2>&1
    wait "$DAEMON_PID" 2>/dev/null
  fi
  ip netns del "$NS" 2>/dev/null
  rm -rf "$PINCUS_DIR"
  if ip netns list | grep -q "^$NS\b"; then echo "demo: namespace $NS left behind" >&2; exit 1; fi
  echo "removed the namespace, its bridge and $PINCUS_DIR: the host is as it was"
}
trap cleanup EXIT

bold "== the guest image for the VM (cached after the first run)"
GUEST=$(scripts/build-guest.sh | tail -2)
KERNEL=$(sed -n 1p <<<"$GUEST") INITRD=$(sed -n 2p <<<"$GUEST")

bold "== a private 'host': network namespace $NS with an existing LAN bridge $LAN"
ip netns add "$NS"
inside() { nsenter --net="/run/netns/$NS" "$@"; }
inside ip link set lo up
inside ip link add "$LAN" type bridge
inside ip addr add 10.250.200.1/24 dev "$LAN"
inside ip link set "$LAN" up

bold "== pincusd on $PINCUS_DIR"
# `ip netns exec`, but one that also works where / is not a mount point (a chroot).
python3 -m pincus.host.nsexec "$NS" pincusd >"$PINCUS_DIR/pincusd.out" 2>&1 &
DAEMON_PID=$!
pincus admin waitready --timeout 30
pincus monitor --pretty >"$PINCUS_DIR/monitor.txt" 2>&1 &
MONITOR_PID=$!

bold "== an image and a storage pool: a busybox image built offline, imported; the default pool"
IMAGES="${XDG_CACHE_HOME:-$HOME/.cache}/pincus-demo"
scripts/build-image.sh "$IMAGES"
step pincus admin init --auto
step pincus image import "$IMAGES/busybox.tar.xz" --alias busybox
step pincus image list
step pincus storage list

bold "== networks: a physical network on the existing bridge, and one on a managed bridge with DHCP"
step pincus network create lan --type=physical parent="$LAN" --description="the LAN bridge the admin made"
step pincus network create "${TAG}br" ipv4.address=10.250.201.1/24 ipv4.dhcp.ranges=10.250.201.100-10.250.201.150 ipv6.address=none
step pincus network create dhcp --type=physical parent="${TAG}br" --description="physical network on a managed bridge"
step pincus network list

bold "== two containers and a VM"
step pincus init busybox c1 -n dhcp
step pincus config device set c1 eth0 ipv4.address=10.250.201.10 security.ipv4_filtering=true
step pincus config device add c1 eth1 nic network=lan name=eth1
step pincus start c1
step pincus launch busybox c2 -n dhcp
step pincus init v1 --vm -n dhcp -c "raw.qemu=-kernel $KERNEL -initrd $INITRD -append 'console=ttyS0 quiet pincus.hold=20'"
step pincus start v1

bold "== DHCP inside the containers (busybox udhcpc)"
cat >"$PINCUS_DIR/udhcpc.script" <<'EOF'
#!/bin/sh
[ "$1" = bound ] || [ "$1" = renew ] || exit 0
ip addr flush dev "$interface"
ip addr add "$ip/${mask:-24}" dev "$interface"
EOF
chmod +x "$PINCUS_DIR/udhcpc.script"
for c in c1 c2; do
  # The containers run on their own root: the script goes in through exec's stdin.
  pincus exec "$c" -- sh -c 'cat >/bin/udhcpc.script && chmod +x /bin/udhcpc.script' <"$PINCUS_DIR/udhcpc.script"
  step pincus exec "$c" -- udhcpc -q -n -t 5 -T 1 -i eth0 -s /bin/udhcpc.script
done
pincus exec c1 -- ip addr add 10.250.200.10/24 dev eth1
for _ in $(seq 60); do grep -q "PINCUS-GUEST LEASE" "$PINCUS_DIR/instances/v1/console.log" 2>/dev/null && break; sleep 0.5; done
echo "the VM's serial console says:"; grep "PINCUS-GUEST" "$PINCUS_DIR/instances/v1/console.log" | sed 's/^/    /' || true

step pincus list
step pincus network list-leases "${TAG}br"

bold "== traffic: c2 pings c1 across the managed bridge, c1 pings the LAN bridge's address"
C1_IP=10.250.201.10  # its static allocation (ipv4.address above), which udhcpc was given
step pincus exec c2 -- busybox ping -c 3 -W 2 "$C1_IP"
step pincus exec c1 -- busybox ping -c 2 -W 2 10.250.200.1

bold "== each container is its image's root, unprivileged: uid 0 inside is a high uid outside"
step pincus exec c1 -- cat /etc/pincus-image-marker
C1_PID=$(pincus query /1.0/instances/c1/state | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
step cat "/proc/$C1_PID/uid_map"

bold "== which path each NIC took"
step pincus info c1
step pincus info v1
bold "== the event stream (pincus monitor --pretty), a few lines"
grep -E "LIFECYCLE|started" "$PINCUS_DIR/monitor.txt" | head -12

bold "== refused: the security boundary and bad input change nothing"
pincus config device add c2 eth9 nic nictype=physical parent="$LAN" name=eth9 || true
pincus config device add c2 eth9 nic network=lan limits.ingress="10 parsecs" || true

bold "== done in $(( $(date +%s) - START )) s"
