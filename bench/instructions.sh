#!/usr/bin/env bash
# User-space instructions per forwarded request of remote-proxy and
# edge-agent on the relay path (ADR 29): starts the stack of bench/run.sh
# (CONTENDERS=hold) with both under `valgrind --tool=callgrind`, an nginx
# origin, warms up, zeroes the counters, runs wrk (c8, /small) for DURATION
# seconds and divides each dump's total by the requests served. Unlike
# requests per second this does not move with the machine's load, so two
# commits compare in one run each. The dumps stay in OUT for
# `callgrind_annotate --inclusive=yes --tree=calling OUT/relay.1`.
#
# With VIA=user the requests take the user path (api-server with a session
# cookie → remote-proxy → tunnel → agent) and api-server is counted too.
# CONNS sets wrk's connections (8; CONNS=1 counts what one request in
# flight costs, wake-ups included). With NEWCONN=1 every request is on a
# new connection (wrk c1,
# `Connection: close`), as the new-connection cell of `make bench`.
#
#   bench/instructions.sh               # 10 s, dumps under a temp dir
#   DURATION=20 OUT=/tmp/cg bench/instructions.sh
#   VIA=user bench/instructions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk nginx curl valgrind callgrind_control callgrind_annotate; do
  command -v $tool >/dev/null || { echo "$tool missing: apt-get install -y wrk nginx-light curl valgrind" >&2; exit 1; }
done
PORT_BASE=${PORT_BASE:-18080}
W=$(mktemp -d "${TMPDIR:-/tmp}/edgelink-instr.XXXXXX")
OUT=${OUT:-$W/out}
mkdir -p "$OUT"
HOLD=""
cleanup() {
  [ -n "$HOLD" ] && kill -- "-$HOLD" 2>/dev/null || true
  [ -s "$W/nginx/nginx.pid" ] && kill "$(cat "$W/nginx/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  [ "$OUT" = "$W/out" ] && echo "(dumps removed; set OUT to keep them)" >&2
  rm -rf "$W"
}
trap cleanup EXIT
trap "exit 130" INT TERM

. bench/origin.sh
start_origin "$W/nginx" "$PORT_BASE"

VIA=${VIA:-relay}
case "$VIA" in
  relay) PROCS="relay agent"; API_WRAP="" ;;
  user) PROCS="api relay agent"; API_WRAP="valgrind --tool=callgrind --callgrind-out-file=$OUT/api" ;;
  *) echo "VIA is relay or user" >&2; exit 1 ;;
esac
cg() { echo "valgrind --tool=callgrind --callgrind-out-file=$OUT/$1"; }
PORT_BASE=$PORT_BASE CONTENDERS=hold RELAY_WRAP="$(cg relay)" AGENT_WRAP="$(cg agent)" API_WRAP="$API_WRAP" \
  setsid bash bench/run.sh >"$W/hold.log" 2>&1 &
HOLD=$!
for _ in $(seq 900); do grep -q '^pids:' "$W/hold.log" && break; kill -0 $HOLD 2>/dev/null || break; sleep 1; done
grep -q '^pids:' "$W/hold.log" || { cat "$W/hold.log" >&2; exit 1; }
HEADER=$(sed -n "s/^$VIA path: *curl -H '\\(.*\\)' \\(http[^ ]*\\)hello$/\\1/p" "$W/hold.log")
URL=$(sed -n "s/^$VIA path: *curl -H '\\(.*\\)' \\(http[^ ]*\\)hello$/\\2/p" "$W/hold.log")small
pid() { sed -n "s/^pids: .*$1 \\([0-9]*\\).*/\\1/p" "$W/hold.log"; }
declare -A PID=([api]=$(pid api-server) [relay]=$(pid remote-proxy) [agent]=$(pid edge-agent))

WRK=(wrk -t1 -c"${CONNS:-8}")
[ "${NEWCONN:-0}" = 1 ] && WRK=(wrk -t1 -c1 -H "Connection: close")
"${WRK[@]}" -d4s -H "$HEADER" "$URL" >/dev/null
for p in $PROCS; do callgrind_control -z "${PID[$p]}" >/dev/null; done
N=$("${WRK[@]}" -d"${DURATION:-10}s" -H "$HEADER" "$URL" | awk '/requests in/ {print $1}')
for p in $PROCS; do callgrind_control -d "${PID[$p]}" >/dev/null; done
echo "| process ($VIA path) | requests | instructions per request |"
echo "|---|---:|---:|"
for p in $PROCS; do
  dump=$(ls -t "$OUT/$p".* | head -1)
  total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  echo "| $p | $N | $((total / N)) |"
done
