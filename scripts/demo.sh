#!/usr/bin/env bash
# The demo: a private pincusd builds a physical network whose parent is a bridge, shows it, then
# removes everything it made. Everything happens inside a throw-away network namespace, so the
# host's own interfaces are never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

TAG=pd$(printf '%04x' $((RANDOM)))
NS=${TAG}ns
BR=${TAG}-lan
export PINCUS_DIR
PINCUS_DIR=$(mktemp -d /tmp/pincus-demo.XXXXXX)
DAEMON_PID=

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

cleanup() {
  set +e
  echo
  echo "== cleaning up"
  pincus network delete lan >/dev/null 2>&1
  [ -n "$DAEMON_PID" ] && pincus admin shutdown --timeout 20 >/dev/null 2>&1
  [ -n "$DAEMON_PID" ] && wait "$DAEMON_PID" 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  rm -rf "$PINCUS_DIR"
  if ip netns list | grep -q "^$NS"; then echo "demo: namespace $NS left behind" >&2; exit 1; fi
  echo "host left as it was found"
}
trap cleanup EXIT

echo "== a private network namespace $NS with an existing bridge $BR (the admin's LAN bridge)"
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add "$BR" type bridge
ip -n "$NS" addr add 10.250.200.1/24 dev "$BR"
ip -n "$NS" link set "$BR" up

echo "== pincusd on $PINCUS_DIR"
ip netns exec "$NS" pincusd >"$PINCUS_DIR/pincusd.out" 2>&1 &
DAEMON_PID=$!
pincus admin waitready --timeout 30

step pincus network create lan --type=physical parent="$BR" --description="LAN through the existing bridge"
step pincus network list
step pincus network show lan
step pincus network set lan user.note=demo
step pincus network get lan user.note
echo
echo "== refused: a second non-bridge use is fine here because the parent is a bridge"
step pincus network create lan2 --type=physical parent="$BR"
step pincus network delete lan2
echo
echo "== refused: bad input changes nothing"
pincus network create bad --type=physical parent="$BR" vlan=4095 || true
step pincus network delete lan
