#!/usr/bin/env bash
# Idle memory per tunnel and reconnect-storm recovery: COUNT (10000) idle
# tunnels held by bench/swarm against a release remote-proxy; its RSS is
# read before and after; then the relay is restarted (graceful TERM, then
# a crash with KILL) and the time until every tunnel is back is measured.
# One relay process holds at most what its file limit allows (20,000 on
# the development VM, which cannot raise it); bench/swarm-many.sh spreads
# more tunnels over several relays.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
COUNT=${COUNT:-10000}
cargo build --release -p api-server -p remote-proxy -p edgelink-e2e --example swarm >&2
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
W=$(mktemp -d "${TMPDIR:-/tmp}/edgelink-swarm.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

API_PORT=${API_PORT:-18731}; TUNNEL_PORT=${TUNNEL_PORT:-18830}; INTERNAL_PORT=${INTERNAL_PORT:-18831}
export RUST_LOG=warn
export EDGELINK_API__LISTEN=127.0.0.1:$API_PORT EDGELINK_API__DATABASE_URL=sqlite://$W/e.db EDGELINK_API__SIGNING_KEY_FILE=$W/signing.pem
export EDGELINK_RELAY__TUNNEL_LISTEN=127.0.0.1:$TUNNEL_PORT EDGELINK_RELAY__INTERNAL_LISTEN=127.0.0.1:$INTERNAL_PORT
export EDGELINK_RELAY__DATABASE_URL=sqlite://$W/e.db EDGELINK_RELAY__JWKS_URL=http://127.0.0.1:$API_PORT/.well-known/jwks.json
export EDGELINK_RELAY__INTERNAL_SECRET=swarm-bench-secret-0123456789 EDGELINK_RELAY__INSTANCE_ID=swarm-relay
export SWARM_DATABASE_URL=sqlite://$W/e.db SWARM_SIGNING_KEY=$W/signing.pem SWARM_TUNNEL_URL=ws://127.0.0.1:$TUNNEL_PORT/tunnel

rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
wait_port() { for _ in $(seq 100); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

"$BIN/api-server" serve & PIDS+=($!)
wait_port "http://127.0.0.1:$API_PORT/healthz"
RELAY_BIN=${RELAY_BIN:-$BIN/remote-proxy}
start_relay() { "$RELAY_BIN" serve & RELAY=$!; PIDS+=($RELAY); wait_port "http://127.0.0.1:$TUNNEL_PORT/healthz"; }
start_relay
sleep 0.5
BASE=$(rss_kib "$RELAY")

OUT=$W/swarm.out
"$BIN/examples/swarm" "$COUNT" >"$OUT" & SWARM=$!; PIDS+=($SWARM)
for _ in $(seq $((1200 + COUNT / 10))); do grep -q '^READY' "$OUT" && break; sleep 0.1; done
grep '^READY' "$OUT" >&2 || { echo "swarm never got ready" >&2; exit 1; }
sleep 3
FULL=$(rss_kib "$RELAY")
# CPU while idle: the relay's user+system ticks over 10 s with every tunnel up
# (pings every 15 s per tunnel are the only traffic).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
T0=$(ticks "$RELAY"); sleep 10; T1=$(ticks "$RELAY")
IDLE_CPU=$(awk -v t=$((T1 - T0)) -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.1f", t / hz / 10 * 100}')
PER=$(( (FULL - BASE) * 1024 / COUNT ))
echo "| relay RSS idle | $((BASE / 1024)) MiB |"
echo "| relay RSS with $COUNT idle tunnels | $((FULL / 1024)) MiB |"
[ -n "${HOLD:-}" ] && { echo "relay pid $RELAY; holding ${HOLD}s" >&2; sleep "$HOLD"; }
echo "| relay RSS per idle tunnel | $PER bytes ($(awk -v b="$PER" 'BEGIN{printf "%.1f", b/1024}') KiB) |"
echo "| relay CPU while idle (10 s, % of one core) | $IDLE_CPU % |"
echo "| initial connect of $COUNT tunnels | $(awk '/^READY/{print $3}' "$OUT") ms |"

# RESTARTS=0 stops here (the 100,000-tunnel run measures memory, idle CPU
# and connect time only).
[ "${RESTARTS:-1}" = 0 ] && exit 0
for mode in TERM KILL; do
  before=$(grep -c '^RECONNECTED' "$OUT" || true)
  kill -$mode "$RELAY"; wait "$RELAY" 2>/dev/null || true
  start_relay
  for _ in $(seq $((1200 + COUNT / 20))); do [ "$(grep -c '^RECONNECTED' "$OUT" || true)" -gt "$before" ] && break; sleep 0.1; done
  line=$(grep '^RECONNECTED' "$OUT" | tail -1)
  echo "| all $COUNT back after relay restart (SIG$mode) | $(echo "$line" | awk '{print $3}') ms after the first drop |"
done
