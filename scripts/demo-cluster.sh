#!/usr/bin/env bash
# The cluster demo (`scripts/demo.sh --cluster` runs it after the plain demo, `--cluster-only`
# alone): three pincusd, each in its own network namespace with its own PINCUS_DIR, joined into one
# cluster with join tokens; a physical uplink network whose parent is each member's own Linux
# bridge (all on one L2 segment); an OVN network on it; two containers on different members pinging
# each other over OVN's geneve tunnel and the uplink gateway through SNAT. Everything it made is
# removed at the end, also when a step fails, and checked.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${PINCUS_DEMO_SKIP_SETUP:-}" = 1 ] || bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

TAG=pc$(printf '%04x' $((RANDOM)))
SW=${TAG}sw                          # the "network": members' links and the uplink segment
NET=10.250.210 UPLINK=10.250.211 INSIDE=10.250.212
BASE=$(mktemp -d /tmp/pincus-cdemo.XXXXXX)
chmod 0711 "$BASE"
export PINCUS_AUTO_IPV4_POOL=10.250.0.0/16 PINCUS_AUTO_IPV6_POOL=fd42:250::/32
START=$(date +%s)
PIDS=()

bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }
# on N ARGS...: the pincus client of member N (1-3).
on() { local n=$1; shift; printf '\033[1m[m%s]$ pincus %s\033[0m\n' "$n" "$*"; PINCUS_DIR="$BASE/m$n" pincus "$@"; }
quiet() { local n=$1; shift; PINCUS_DIR="$BASE/m$n" pincus "$@"; }
ns() { echo "${TAG}m$1"; }

cleanup() {
  local rc=$?
  set +e
  bold "== cleaning up"
  if [ ${#PIDS[@]} -gt 0 ]; then
    quiet 1 delete -f c1 c2 >/dev/null 2>&1
    quiet 1 network delete ovn0 >/dev/null 2>&1
    quiet 1 network delete up >/dev/null 2>&1
  fi
  # SIGKILL: a member whose peers are going would wait for a quorum to shut down cleanly. Then
  # whatever still runs from the demo's directories (OVS/OVN daemons, container inits after a
  # failure).
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  for p in /proc/[0-9]*; do
    grep -qF "$BASE" "$p/cmdline" 2>/dev/null && kill -9 "${p#/proc/}" 2>/dev/null
  done
  for n in 1 2 3; do ip netns del "$(ns $n)" 2>/dev/null; done
  ip netns del "$SW" 2>/dev/null
  rm -rf "$BASE"
  if ip netns list | grep -q "^$TAG"; then echo "demo: namespaces left behind" >&2; exit 1; fi
  [ -e "$BASE" ] && { echo "demo: $BASE left behind" >&2; exit 1; }
  echo "removed 4 namespaces, their bridges, every daemon and $BASE: the host is as it was"
  exit "$rc"
}
trap cleanup EXIT
trap "exit 130" INT TERM

bold "== the network: namespace $SW with a bridge for the members ($NET.0/24) and the uplink segment ($UPLINK.0/24)"
ip netns add "$SW"
sw() { ip -n "$SW" "$@"; }
sw link set lo up
for br in cl up0; do sw link add "$br" type bridge; sw link set "$br" up; done
sw addr add "$UPLINK.1/24" dev up0   # the uplink gateway; no route back to the OVN subnet

bold "== three members: each a namespace with its own link to the others and its own uplink bridge ul<N>"
for n in 1 2 3; do
  ip netns add "$(ns $n)"
  ip -n "$(ns $n)" link set lo up
  sw link add "c$n" type veth peer name eth1 netns "$(ns $n)"
  sw link set "c$n" master cl up
  ip -n "$(ns $n)" addr add "$NET.$n/24" dev eth1
  ip -n "$(ns $n)" link set eth1 up
  sw link add "u$n" type veth peer name ulport netns "$(ns $n)"
  sw link set "u$n" master up0 up
  ip -n "$(ns $n)" link add "ul$n" type bridge
  ip -n "$(ns $n)" link set ulport master "ul$n" up
  ip -n "$(ns $n)" link set "ul$n" up
  mkdir -m 0711 "$BASE/m$n"
  PINCUS_DIR="$BASE/m$n" python3 -m pincus.host.nsexec "$(ns $n)" pincusd >"$BASE/m$n.log" 2>&1 &
  PIDS+=($!)
done
for n in 1 2 3; do quiet "$n" admin waitready --timeout 30; done

bold "== a cluster: m1 enables it, m2 and m3 join with tokens"
on 1 config set cluster.https_address "$NET.1:8443"
on 1 cluster enable m1
for n in 2 3; do
  TOKEN=$(quiet 1 cluster add "m$n" | sed -n 2p)
  printf '{"cluster": {"enabled": true, "server_name": "m%s", "server_address": "%s.%s:8443", "cluster_token": "%s"}}' \
    "$n" "$NET" "$n" "$TOKEN" | on "$n" admin init --preseed
done
on 2 cluster list
# Each chassis's tunnel endpoint, a member's own key: a free address on the uplink segment, which
# pincus puts on the member's provider bridge (OVS's userspace datapath tunnels only from a bridge).
for n in 1 2 3; do on "$n" config set network.ovn.encap_address="$UPLINK.1$n"; done

bold "== an uplink: a physical network with each member's own bridge as parent, then created everywhere"
for n in 1 2 3; do on 1 network create up --type=physical --target="m$n" parent="ul$n"; done
on 1 network create up --type=physical ipv4.gateway="$UPLINK.1/24" ipv4.ovn.ranges="$UPLINK.100-$UPLINK.109"
bold "== an OVN network on it: one central (on m1), a chassis on every member"
on 3 network create ovn0 --type=ovn network=up ipv4.address="$INSIDE.1/24" ipv4.nat=true
on 2 network show ovn0
echo "chassis in the central's southbound database:"
ovn-sbctl --db="unix:$BASE/m1/ovn/central/sb.sock" --bare --columns=hostname,name list Chassis | sed '/^$/d; s/^/    /' || true

bold "== two containers on different members"
IMAGES="${XDG_CACHE_HOME:-$HOME/.cache}/pincus-demo"
scripts/build-image.sh "$IMAGES" >/dev/null
quiet 1 admin init --auto >/dev/null 2>&1 || true
on 1 image import "$IMAGES/busybox.tar.xz" --alias busybox
on 2 init busybox c1 --target m2 -n ovn0
on 1 config device set c1 eth0 ipv4.address="$INSIDE.10"
on 2 start c1
on 3 launch busybox c2 --target m3 -n ovn0
on 1 list -c nsL

bold "== DHCP from OVN (c1 gets its static allocation), a ping across members, SNAT to the uplink"
cat >"$BASE/udhcpc.script" <<'EOF'
#!/bin/sh
[ "$1" = bound ] || [ "$1" = renew ] || exit 0
ip addr flush dev "$interface"
ip addr add "$ip/${mask:-24}" dev "$interface"
[ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
exit 0
EOF
for c in c1:2 c2:3; do
  quiet "${c#*:}" exec "${c%:*}" -- sh -c 'cat >/bin/udhcpc.script && chmod +x /bin/udhcpc.script' <"$BASE/udhcpc.script"
  on "${c#*:}" exec "${c%:*}" -- udhcpc -q -n -t 10 -T 1 -i eth0 -s /bin/udhcpc.script
done
C2_IP=$(quiet 3 exec c2 -- ip -4 -o addr show eth0 | sed -n 's/.*inet \([0-9.]*\).*/\1/p')
# The first packets to a new tunnel endpoint are lost while OVS resolves it: try a few times.
for _ in 1 2 3 4 5; do quiet 2 exec c1 -- ping -c 1 -W 1 "$C2_IP" >/dev/null 2>&1 && break; done
on 2 exec c1 -- ping -c 3 -W 2 "$C2_IP"
for _ in 1 2 3 4 5; do quiet 3 exec c2 -- ping -c 1 -W 1 "$UPLINK.1" >/dev/null 2>&1 && break; done
on 3 exec c2 -- ping -c 3 -W 2 "$UPLINK.1"
on 1 network list-leases ovn0

bold "== deleting the OVN network takes it off every member"
on 1 delete -f c1 c2
on 1 network delete ovn0
for n in 1 2 3; do
  if [ -e "$BASE/m$n/ovn" ]; then echo "demo: m$n still has OVN state" >&2; exit 1; fi
done
echo "no OVN daemon, database or provider bridge left on any member"
on 1 network delete up

bold "== done in $(( $(date +%s) - START )) s"
