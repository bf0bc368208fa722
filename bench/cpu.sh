#!/usr/bin/env bash
# CPU time per request of each edgelink process, path by path: starts the
# stack of bench/run.sh (CONTENDERS=hold) from this checkout, an nginx
# origin, and for the relay path (c64, c1), the device origin (c64) and the
# user path through api-server (c64) runs wrk and reads each process's CPU
# time from /proc around the run. On a shared VM these figures move far
# less than requests per second do: to compare two commits, run this in a
# checkout of each (separate CARGO_TARGET_DIRs), alternating, ROUNDS ≥ 2.
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
TICK=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
per_req() { echo "($2 - $1) * 1000000 / $TICK / $3" | bc -l | xargs printf '%.1f'; }

# One cell: name, url, header, connections.
cell() {
  local r0 a0 s0 r1 a1 s1 out n rps p50
  r0=$(ticks "$RELAY_PID"); a0=$(ticks "$AGENT_PID"); s0=$(ticks "$API_PID")
  out=$(wrk -t"$([ "$4" = 1 ] && echo 1 || echo 2)" -c"$4" -d"${DURATION:-8}s" --latency -H "$3" "$2")
  r1=$(ticks "$RELAY_PID"); a1=$(ticks "$AGENT_PID"); s1=$(ticks "$API_PID")
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  echo "| $1 | c$4 | $rps | $p50 | $(per_req "$r0" "$r1" "$n") | $(per_req "$a0" "$a1" "$n") | $(per_req "$s0" "$s1" "$n") |"
}

echo "| path | conns | req/s | p50 | remote-proxy µs/req | edge-agent µs/req | api-server µs/req |"
echo "|---|---|---:|---:|---:|---:|---:|"
for _ in $(seq "${ROUNDS:-1}"); do
  cell relay "${RELAY_URL}small" "$RELAY_H" 64
  cell relay "${RELAY_URL}small" "$RELAY_H" 1
  cell origin "${ORIGIN_URL}small" "$ORIGIN_H" 64
  cell user "${USER_URL}small" "$USER_H" 64
done
