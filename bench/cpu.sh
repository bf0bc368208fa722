#!/usr/bin/env bash
# CPU time per request of each edgelink process, path by path: starts the
# stack of bench/run.sh (CONTENDERS=hold) from this checkout, an nginx
# origin, and for the relay path (c64, c1, new connections), the device
# origin (c64) and the user path through api-server (c64) runs wrk and
# reads each process's CPU time from /proc around the run. On a shared VM these figures move far
# less than requests per second do: to compare two commits, run this in a
# checkout of each (separate CARGO_TARGET_DIRs), alternating, ROUNDS ≥ 2.
# Each process's time is split into user space and kernel (utime / stime).
# The c1 and new-connection cells are pinned as the peers benchmark pins
# them (PIN, below); c64 and the other paths are not.
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

# The peers benchmark runs its c1 and new-connection cells with wrk on cpu
# 0 and nginx and every tunnel process on cpu 1 (so one request's work on
# the far side is serialized on one core, and its CPU time is its
# latency); PIN=1 (the default on 2+ CPUs) does the same for those cells
# here, PIN=0 never pins.
PIN=${PIN:-1}
{ [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; } || PIN=0
WRK=(wrk)
pin() { # on | off
  [ "$PIN" = 1 ] || return 0
  local cpus="0-$(($(nproc) - 1))" nginx_pid p
  [ "$1" = on ] && cpus=1
  nginx_pid=$(cat "$W/nginx/nginx.pid" 2>/dev/null || true)
  for p in $API_PID $RELAY_PID $AGENT_PID $RH_SERVER $RH_CLIENT $nginx_pid $( [ -n "$nginx_pid" ] && pgrep -P "$nginx_pid"); do
    taskset -a -pc "$cpus" "$p" >/dev/null 2>&1 || true
  done
  if [ "$1" = on ]; then WRK=(taskset -c 0 wrk); else WRK=(wrk); fi
}

# One cell: name, url, header, connections, and the pids of its two tunnel
# ends and of api-server (may be empty); an 8th argument `close` makes every
# request a new connection (`Connection: close`, as the peers benchmark's
# new-connection cell).
cell() {
  local p1=$5 p2=$6 p3=$7 b1 b2 b3 out n rps p50 label="c$4" extra=()
  [ "${8:-}" = close ] && { label="new conn"; extra=(-H "Connection: close"); }
  b1=$(ticks "$p1"); b2=$(ticks "$p2"); b3=$(ticks "$p3")
  out=$("${WRK[@]}" -t"$([ "$4" = 1 ] && echo 1 || echo 2)" -c"$4" -d"${DURATION:-8}s" --latency -H "$3" "${extra[@]}" "$2")
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  echo "| $1 | $label | $rps | $p50 | $(split "$b1" "$(ticks "$p1")" "$n") | $(split "$b2" "$(ticks "$p2")" "$n") | $(split "$b3" "$(ticks "$p3")" "$n") |"
}

echo "CPU µs per request, user space + kernel:"
echo
echo "| path | conns | req/s | p50 | relay end (remote-proxy / rathole server) | device end (edge-agent / rathole client) | api-server |"
echo "|---|---|---:|---:|---:|---:|---:|"
for _ in $(seq "${ROUNDS:-1}"); do
  cell relay "${RELAY_URL}small" "$RELAY_H" 64 "$RELAY_PID" "$AGENT_PID" "$API_PID"
  [ -n "$RH_URL" ] && cell rathole "${RH_URL}small" "X-Bench: 1" 64 "$RH_SERVER" "$RH_CLIENT" ""
  pin on
  cell relay "${RELAY_URL}small" "$RELAY_H" 1 "$RELAY_PID" "$AGENT_PID" "$API_PID"
  [ -n "$RH_URL" ] && cell rathole "${RH_URL}small" "X-Bench: 1" 1 "$RH_SERVER" "$RH_CLIENT" ""
  cell relay "${RELAY_URL}small" "$RELAY_H" 1 "$RELAY_PID" "$AGENT_PID" "$API_PID" close
  [ -n "$RH_URL" ] && cell rathole "${RH_URL}small" "X-Bench: 1" 1 "$RH_SERVER" "$RH_CLIENT" "" close
  pin off
  cell origin "${ORIGIN_URL}small" "$ORIGIN_H" 64 "$RELAY_PID" "$AGENT_PID" "$API_PID"
  cell user "${USER_URL}small" "$USER_H" 64 "$RELAY_PID" "$AGENT_PID" "$API_PID"
done
