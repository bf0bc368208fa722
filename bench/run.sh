#!/usr/bin/env bash
# `make bench`: edgelink measured by the shared peers benchmark
# (../shared/bench/peers/run.sh) next to a direct connection and rathole /
# bore, once per edgelink path (that script takes one extra contender per
# run; both runs have the direct connection and the peers, so every figure
# has an anchor from its own run):
#   relay: remote-proxy's internal forward → tunnel → agent → origin
#   user:  api-server /api/v1/devices/{id}/http/… with a session cookie
#          → remote-proxy → tunnel → agent → origin
#   origin: the device's own origin, {id}.devices.localhost on remote-proxy's
#          device listener with its pass cookie → tunnel → agent → origin.
#          The shared script takes loopback URLs with one header only, so
#          this one is measured here: wrk c1 and c64 on the relay path, the
#          origin path and the user path alternately, same nginx, same run.
# Record the tables in docs/benchmarks.md. Knobs: CONTENDERS ("relay user"),
# PEERS / ROUNDS / DURATION / … as the peers benchmark takes them.
# CONTENDERS=hold starts the stack and waits (for profiling); API_WRAP,
# RELAY_WRAP and AGENT_WRAP prefix those commands (e.g. "valgrind
# --tool=callgrind", as bench/instructions.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PEERS_BENCH=${PEERS_BENCH:-$ROOT/../shared/bench/peers/run.sh}
CONTENDERS=${CONTENDERS:-"relay user origin"}
[ -f "$PEERS_BENCH" ] || { echo "peers benchmark not found at $PEERS_BENCH" >&2; exit 1; }
for tool in wrk nginx curl node python3; do
  command -v $tool >/dev/null || { echo "$tool missing: apt-get install -y wrk nginx-light iperf3 curl (node for the dev provider)" >&2; exit 1; }
done
make -s dev-idp >&2

cargo build --release -p api-server -p remote-proxy -p edge-agent >&2
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

W=$(mktemp -d "${TMPDIR:-/tmp}/edgelink-bench.XXXXXX")
PIDS=()
HOSTS_LINE=""
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$HOSTS_LINE" ]; then grep -vxF "$HOSTS_LINE" /etc/hosts >"$W/hosts" && cat "$W/hosts" >/etc/hosts; fi
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
trap "exit 130" INT TERM
API_PORT=${API_PORT:-18721}; TUNNEL_PORT=${TUNNEL_PORT:-18800}; INTERNAL_PORT=${INTERNAL_PORT:-18801}
DEVICES_PORT=${DEVICES_PORT:-18802}
IDP_PORT=${IDP_PORT:-18790}
PORT_BASE=${PORT_BASE:-18080}   # the peers benchmark's origin (nginx) port
export PORT_BASE
SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
API=http://127.0.0.1:$API_PORT

export RUST_LOG=warn
export EDGELINK_API__LISTEN=127.0.0.1:$API_PORT
export EDGELINK_API__DATABASE_URL=sqlite://$W/edgelink.db
export EDGELINK_API__SIGNING_KEY_FILE=$W/signing.pem
export EDGELINK_API__PUBLIC_URL=$API
export EDGELINK_API__SESSION__INSECURE_COOKIES=true
# The benchmark measures the path, not the per-user request limit.
export EDGELINK_API__RATE_LIMITS__SESSION_PER_HOUR=4000000000
export EDGELINK_API__SESSION__KEY_FILE=$W/session.key
export EDGELINK_API__OIDC__ISSUER=http://127.0.0.1:$IDP_PORT
export EDGELINK_API__OIDC__CLIENT_ID=edgelink-web
export EDGELINK_API__AGENT_TUNNEL_URL=ws://127.0.0.1:$TUNNEL_PORT/tunnel
export EDGELINK_API__RELAY_INTERNAL_SECRET=$SECRET
export EDGELINK_RELAY__TUNNEL_LISTEN=127.0.0.1:$TUNNEL_PORT
export EDGELINK_RELAY__INTERNAL_LISTEN=127.0.0.1:$INTERNAL_PORT
export EDGELINK_RELAY__DATABASE_URL=sqlite://$W/edgelink.db
export EDGELINK_RELAY__JWKS_URL=$API/.well-known/jwks.json
export EDGELINK_RELAY__INTERNAL_SECRET=$SECRET
export EDGELINK_API__DEVICES_URL=http://devices.localhost:$DEVICES_PORT
export EDGELINK_RELAY__DEVICES__URL=$EDGELINK_API__DEVICES_URL
export EDGELINK_RELAY__DEVICES__LISTEN=127.0.0.1:$DEVICES_PORT
export EDGELINK_RELAY__DEVICES__API_URL=$API
export EDGELINK_RELAY__DEVICES__SESSION_KEY_FILE=$W/session.key
export EDGELINK_AGENT__KEY_FILE=$W/device.key
export EDGELINK_AGENT__STATE_FILE=$W/device.state.json
export EDGELINK_AGENT__LOCAL_SERVICE=http://127.0.0.1:$PORT_BASE

wait_http() { for _ in $(seq 600); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "$1 did not answer" >&2; exit 1; }

# The whole stack, started before the peers benchmark: the agent forwards
# to the benchmark's origin port, which answers once the benchmark is up.
(cd deploy/dev-idp && PORT=$IDP_PORT REDIRECT_URIS=$API/api/auth/callback exec node server.mjs) >"$W/idp.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$IDP_PORT/.well-known/openid-configuration"
${API_WRAP:-} "$BIN/api-server" serve >"$W/api.log" 2>&1 & API_PID=$!; PIDS+=($API_PID)
wait_http "$API/healthz"
${RELAY_WRAP:-} "$BIN/remote-proxy" serve >"$W/relay.log" 2>&1 & RELAY_PID=$!; PIDS+=($RELAY_PID)
wait_http "http://127.0.0.1:$TUNNEL_PORT/healthz"
CODE=$("$BIN/api-server" pairing create --owner alice@example.com)
"$BIN/edge-agent" pair --server "$API" --code "$CODE" --name bench >&2
DEVICE=$(sed -n 's/.*"device_id": "\([^"]*\)".*/\1/p' "$EDGELINK_AGENT__STATE_FILE")
${AGENT_WRAP:-} "${AGENT_BIN:-$BIN/edge-agent}" run >"$W/agent.log" 2>&1 & AGENT_PID=$!; PIDS+=($AGENT_PID)
COOKIE=$(python3 bench/signin.py "$API" alice)
for _ in $(seq 100); do
  curl -fs -o /dev/null -H "Cookie: edgelink_session=$COOKIE" "$API/api/v1/devices/$DEVICE/session" && break; sleep 0.1
done

# The device origin: a grant from api-server, redeemed for the pass cookie.
DEVICE_HOST=$DEVICE.devices.localhost
if ! getent hosts "$DEVICE_HOST" >/dev/null && [ -w /etc/hosts ]; then
  HOSTS_LINE="127.0.0.1 $DEVICE_HOST"; echo "$HOSTS_LINE" >>/etc/hosts
fi
GRANT=$(curl -fs -o /dev/null -w '%{redirect_url}' -H "Cookie: edgelink_session=$COOKIE" "$API/api/v1/devices/$DEVICE/open")
PASS=$(curl -s -o /dev/null -D - "$GRANT" | sed -n 's/^set-cookie: \(edgelink-pass=[^;]*\).*/\1/Ip' | tr -d '\r')
[ -n "$PASS" ] || echo "warning: no device-origin pass (grant $GRANT); the origin contender will fail" >&2

if [ "$CONTENDERS" = hold ]; then
  # For profiling: the stack stays up (with an origin on PORT_BASE if
  # none is there) until interrupted.
  echo "user path:  curl -H 'Cookie: edgelink_session=$COOKIE' $API/api/v1/devices/$DEVICE/http/hello" >&2
  echo "relay path: curl -H 'Authorization: Bearer $SECRET' http://127.0.0.1:$INTERNAL_PORT/internal/forward/$DEVICE/hello" >&2
  echo "origin path: curl -H 'Cookie: $PASS' http://$DEVICE_HOST:$DEVICES_PORT/hello" >&2
  echo "pids: api-server $API_PID, remote-proxy $RELAY_PID, edge-agent $AGENT_PID" >&2
  wait
fi

# wrk → "p50_ms req_per_s" (args: connections threads url headers…)
wrk_run() {
  local c=$1 t=$2 url=$3; shift 3
  local hdr=() out
  for h in "$@"; do hdr+=(-H "$h"); done
  out=$(wrk --latency -t"$t" -c"$c" -d"${DURATION:-10}s" "${hdr[@]}" "$url")
  local p50 rps
  p50=$(awk '$1=="50%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  echo "$p50 $rps"
}

. "$ROOT/bench/origin.sh"

# The edgelink paths side by side, alternating in one run: the relay path
# as the anchor, the device origin, and the user path (api-server).
origin_vs_relay() {
  echo "## edgelink-origin (device origin and user path vs relay path, same run, alternating)"
  start_origin "$W/nginx" "$PORT_BASE"
  PIDS+=("$(cat "$W/nginx/nginx.pid")")
  local relay_url="http://127.0.0.1:$INTERNAL_PORT/internal/forward/$DEVICE/small"
  local origin_url="http://$DEVICE_HOST:$DEVICES_PORT/small"
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $PASS" "$origin_url")
  [ "$code" = 200 ] || { echo "origin path answered $code" >&2; return 1; }
  echo "| path | round | c1 p50 ms | c1 req/s | c64 p50 ms | c64 req/s |"
  echo "|---|---:|---:|---:|---:|---:|"
  for round in $(seq "${ROUNDS:-2}"); do
    for path in relay origin user; do
      case $path in
        relay) set -- "$relay_url" "Authorization: Bearer $SECRET" ;;
        origin) set -- "$origin_url" "Cookie: $PASS" ;;
        user) set -- "$API/api/v1/devices/$DEVICE/http/small" "Cookie: edgelink_session=$COOKIE" ;;
      esac
      read -r c1p c1r <<<"$(wrk_run 1 1 "$@")"
      read -r c64p c64r <<<"$(wrk_run 64 2 "$@")"
      echo "| $path | $round | $c1p | $c1r | $c64p | $c64r |"
    done
  done
  kill "$(cat "$W/nginx/nginx.pid")" 2>/dev/null || true
  echo
}

for contender in $CONTENDERS; do
  case $contender in
    relay)
      NAME=edgelink-relay
      SMALL=http://127.0.0.1:$INTERNAL_PORT/internal/forward/$DEVICE/small
      BIG=http://127.0.0.1:$INTERNAL_PORT/internal/forward/$DEVICE/big
      HEADER="Authorization: Bearer $SECRET"
      SAMPLED="$RELAY_PID $AGENT_PID" ;;
    user)
      NAME=edgelink-user
      SMALL=$API/api/v1/devices/$DEVICE/http/small
      BIG=$API/api/v1/devices/$DEVICE/http/big
      HEADER="Cookie: edgelink_session=$COOKIE"
      SAMPLED="$API_PID $RELAY_PID $AGENT_PID" ;;
    origin)
      origin_vs_relay
      continue ;;
    *) echo "unknown contender $contender (relay, user, origin)" >&2; exit 1 ;;
  esac
  echo "## $NAME" 
  EXTRA_NAME=$NAME EXTRA_URL_SMALL=$SMALL EXTRA_URL_BIG=$BIG EXTRA_HEADER=$HEADER EXTRA_PIDS=$SAMPLED \
    bash "$PEERS_BENCH"
  echo
done
