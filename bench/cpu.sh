#!/usr/bin/env bash
# CPU time per request of each edgelink process, path by path: starts the
# stack of bench/run.sh (CONTENDERS=hold) from this checkout, an nginx
# origin, and for the relay path (c64, c1), the device origin (c64) and the
# user path through api-server (c64) runs wrk and reads each process's CPU
# time from /proc around the run. On a shared VM these figures move far
# less than requests per second do: to compare two commits, run this in a
# checkout of each (separate CARGO_TARGET_DIRs), alternating, ROUNDS ≥ 2.
# Each process's time is split into user space and kernel (utime / stime).
# With rathole installed, its TCP tunnel (server + client, the shared
# benchmark's configs) to the same origin is measured the same way, as
# the anchor for the relay path.
#
#   bench/cpu.sh                 # one round, 8 s per cell
#   ROUNDS=3 DURATION=6 bench/cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk nginx curl bc; do
  command -v $tool >/dev/null || { echo "$tool missing: apt-get install -y wrk nginx-light curl bc" >&2; exit 1; }
done
PORT_BASE=${PORT_BASE:-18080}
W=$(mktemp -d "${TMPDIR:-/tmp}/edgelink-cpu.XXXXXX")
HOLD=""
cleanup() {
  [ -n "$HOLD" ] && kill -- "-$HOLD" 2>/dev/null || true
  [ -s "$W/nginx/nginx.pid" ] && kill "$(cat "$W/nginx/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
trap "exit 130" INT TERM

. bench/origin.sh
start_origin "$W/nginx" "$PORT_BASE"

# The stack, in a process group of its own so that it stops with us.
PORT_BASE=$PORT_BASE CONTENDERS=hold setsid bash bench/run.sh >"$W/hold.log" 2>&1 &
HOLD=$!
for _ in $(seq 900); do grep -q '^pids:' "$W/hold.log" && break; kill -0 $HOLD 2>/dev/null || break; sleep 1; done
grep -q '^pids:' "$W/hold.log" || { cat "$W/hold.log" >&2; exit 1; }
field() { sed -n "s/^$1 curl -H '\\(.*\\)' \\(http[^ ]*\\)hello$/\\$2/p" "$W/hold.log"; }
RELAY_URL=$(field 'relay path:' 2); RELAY_H=$(field 'relay path:' 1)
USER_URL=$(field 'user path: ' 2); USER_H=$(field 'user path: ' 1)
ORIGIN_URL=$(field 'origin path:' 2); ORIGIN_H=$(field 'origin path:' 1)
pid() { sed -n "s/^pids: .*$1 \\([0-9]*\\).*/\\1/p" "$W/hold.log"; }
API_PID=$(pid api-server); RELAY_PID=$(pid remote-proxy); AGENT_PID=$(pid edge-agent)
# rathole's TCP tunnel to the same origin, if it is installed.
RH_SERVER=""; RH_CLIENT=""; RH_URL=""
if command -v rathole >/dev/null; then
  PEERS_DIR=${PEERS_DIR:-../shared/bench/peers}
  rh_ctrl=$((PORT_BASE + 40)); rh_pub=$((PORT_BASE + 41))
  for side in server client; do
    sed -e "s/__CTRL__/$rh_ctrl/; s/__PUB__/$rh_pub/; s/__ORIGIN__/$PORT_BASE/; s/__TOKEN__/cpu-bench-token/; s/__TRANSPORT__/tcp/" \
      "$PEERS_DIR/rathole-$side.toml.in" >"$W/rathole-$side.toml"
  done
  RUST_LOG=warn setsid rathole --server "$W/rathole-server.toml" >"$W/rathole-server.log" 2>&1 & RH_SERVER=$!
  RUST_LOG=warn setsid rathole --client "$W/rathole-client.toml" >"$W/rathole-client.log" 2>&1 & RH_CLIENT=$!
  RH_URL="http://127.0.0.1:$rh_pub/"
  for _ in $(seq 100); do curl -fs -o /dev/null "${RH_URL}small" && break; sleep 0.1; done
fi
stop_rathole() { [ -n "$RH_SERVER" ] && kill "$RH_SERVER" "$RH_CLIENT" 2>/dev/null || true; }
trap 'stop_rathole; cleanup' EXIT

TICK=$(getconf CLK_TCK)
# user and kernel ticks of a process ("0 0" for none)
ticks() { if [ -n "$1" ]; then awk '{print $14, $15}' "/proc/$1/stat"; else echo "0 0"; fi; }
per_req() { echo "($2 - $1) * 1000000 / $TICK / $3" | bc -l | xargs printf '%.1f'; }
# "user + kernel" µs per request from two `ticks` readings
split() { # before after n
  local u0 s0 u1 s1
  read -r u0 s0 <<<"$1"; read -r u1 s1 <<<"$2"
  echo "$(per_req "$u0" "$u1" "$3") + $(per_req "$s0" "$s1" "$3")"
}

# One cell: name, url, header, connections, and the pids of its two tunnel
# ends and of api-server (may be empty).
cell() {
  local p1=$5 p2=$6 p3=$7 b1 b2 b3 out n rps p50
  b1=$(ticks "$p1"); b2=$(ticks "$p2"); b3=$(ticks "$p3")
  out=$(wrk -t"$([ "$4" = 1 ] && echo 1 || echo 2)" -c"$4" -d"${DURATION:-8}s" --latency -H "$3" "$2")
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  echo "| $1 | c$4 | $rps | $p50 | $(split "$b1" "$(ticks "$p1")" "$n") | $(split "$b2" "$(ticks "$p2")" "$n") | $(split "$b3" "$(ticks "$p3")" "$n") |"
}

echo "CPU µs per request, user space + kernel:"
echo
echo "| path | conns | req/s | p50 | relay end (remote-proxy / rathole server) | device end (edge-agent / rathole client) | api-server |"
echo "|---|---|---:|---:|---:|---:|---:|"
for _ in $(seq "${ROUNDS:-1}"); do
  cell relay "${RELAY_URL}small" "$RELAY_H" 64 "$RELAY_PID" "$AGENT_PID" "$API_PID"
  [ -n "$RH_URL" ] && cell rathole "${RH_URL}small" "X-Bench: 1" 64 "$RH_SERVER" "$RH_CLIENT" ""
  cell relay "${RELAY_URL}small" "$RELAY_H" 1 "$RELAY_PID" "$AGENT_PID" "$API_PID"
  [ -n "$RH_URL" ] && cell rathole "${RH_URL}small" "X-Bench: 1" 1 "$RH_SERVER" "$RH_CLIENT" ""
  cell origin "${ORIGIN_URL}small" "$ORIGIN_H" 64 "$RELAY_PID" "$AGENT_PID" "$API_PID"
  cell user "${USER_URL}small" "$USER_H" 64 "$RELAY_PID" "$AGENT_PID" "$API_PID"
done
