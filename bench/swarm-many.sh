#!/usr/bin/env bash
# COUNT (100000) idle tunnels on one machine, spread over RELAYS relay
# processes (default: one per 17,000 tunnels; a process holds one file per
# tunnel and the development VM caps files at 20,000 per process without a
# way to raise it) sharing one PostgreSQL store, as a multi-relay
# deployment would. One bench/swarm process per relay holds its share,
# dialing from SOURCES loopback addresses (127.0.0.2…; ~28,000 source
# ports each, but a bind() without a port gets only about half of them:
# one address per 10,000 tunnels). Prints: relays' RSS before and with the tunnels, per idle
# tunnel, their CPU while idle (10 s), and the time until all were up.
# Needs PostgreSQL (PG_ADMIN_URL, default postgres://postgres@127.0.0.1:5432/postgres);
# the database edgelink_swarm is dropped and created.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
COUNT=${COUNT:-100000}
RELAYS=${RELAYS:-$(( (COUNT + 16999) / 17000 ))}
SOURCES=${SOURCES:-$(( (COUNT + 9999) / 10000 ))}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB_URL=${PG_ADMIN_URL%/*}/edgelink_swarm
cargo build --release -p api-server -p remote-proxy -p edgelink-e2e --example swarm >&2
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
W=$(mktemp -d "${TMPDIR:-/tmp}/edgelink-swarm-many.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
# Every relay, every swarm (while it registers) and api-server hold up to
# 16 connections each.
NEED=$(( (2 * RELAYS + 1) * 16 + 10 ))
HAVE=$(psql -At "$PG_ADMIN_URL" -c "SHOW max_connections")
[ "$HAVE" -ge "$NEED" ] || { echo "PostgreSQL max_connections is $HAVE; this run needs $NEED (ALTER SYSTEM SET max_connections = $NEED, then restart it)" >&2; exit 1; }
psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS edgelink_swarm" -c "CREATE DATABASE edgelink_swarm" >&2

API_PORT=${API_PORT:-18731}; PORT0=${PORT0:-18840}
export RUST_LOG=warn
export EDGELINK_API__LISTEN=127.0.0.1:$API_PORT EDGELINK_API__DATABASE_URL=$DB_URL EDGELINK_API__SIGNING_KEY_FILE=$W/signing.pem
export EDGELINK_RELAY__DATABASE_URL=$DB_URL EDGELINK_RELAY__JWKS_URL=http://127.0.0.1:$API_PORT/.well-known/jwks.json
export EDGELINK_RELAY__INTERNAL_SECRET=swarm-bench-secret-0123456789
export EDGELINK_RELAY__MAX_CONNECTIONS=$(( COUNT / RELAYS + 1000 ))
export SWARM_DATABASE_URL=$DB_URL SWARM_SIGNING_KEY=$W/signing.pem SWARM_SOURCES=$SOURCES
export SWARM_CONCURRENCY=${SWARM_CONCURRENCY:-64}   # dials in flight per swarm

rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
wait_port() { for _ in $(seq 100); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

"$BIN/api-server" serve & PIDS+=($!)
wait_port "http://127.0.0.1:$API_PORT/healthz"
RELAY_PIDS=()
for i in $(seq 0 $((RELAYS - 1))); do
  t=$((PORT0 + 2 * i)); n=$((t + 1))
  EDGELINK_RELAY__TUNNEL_LISTEN=127.0.0.1:$t EDGELINK_RELAY__INTERNAL_LISTEN=127.0.0.1:$n \
    EDGELINK_RELAY__INSTANCE_ID=swarm-relay-$i EDGELINK_RELAY__INTERNAL_URL=http://127.0.0.1:$n \
    EDGELINK_RELAY__METRICS_LISTEN=127.0.0.1:$((PORT0 + 100 + i)) \
    "$BIN/remote-proxy" serve & RELAY_PIDS+=($!); PIDS+=($!)
  wait_port "http://127.0.0.1:$t/healthz"
done
sleep 0.5
BASE=0; for p in "${RELAY_PIDS[@]}"; do BASE=$((BASE + $(rss_kib "$p"))); done

# Each swarm registers its devices first, then dials; time from the first
# dial to the last READY is the connect time of all of them.
SHARE=$((COUNT / RELAYS))
for i in $(seq 0 $((RELAYS - 1))); do
  n=$SHARE; [ "$i" = $((RELAYS - 1)) ] && n=$((COUNT - SHARE * (RELAYS - 1)))
  SWARM_TUNNEL_URL=ws://127.0.0.1:$((PORT0 + 2 * i))/tunnel "$BIN/examples/swarm" "$n" >"$W/swarm-$i.out" 2>"$W/swarm-$i.err" &
  PIDS+=($!)
done
for _ in $(seq 36000); do
  [ "$(cat "$W"/swarm-*.out 2>/dev/null | grep -c '^READY' || true)" -ge "$RELAYS" ] && break; sleep 0.1
done
[ "$(cat "$W"/swarm-*.out | grep -c '^READY')" -ge "$RELAYS" ] || { tail -3 "$W"/swarm-*.err >&2; echo "swarms never got ready" >&2; exit 1; }
sleep 3
FULL=0; for p in "${RELAY_PIDS[@]}"; do FULL=$((FULL + $(rss_kib "$p"))); done
T0=0; for p in "${RELAY_PIDS[@]}"; do T0=$((T0 + $(ticks "$p"))); done
sleep 10
T1=0; for p in "${RELAY_PIDS[@]}"; do T1=$((T1 + $(ticks "$p"))); done
UP=$(awk '/^READY/{n+=$2} END{print n}' "$W"/swarm-*.out)
SLOWEST=$(awk '/^READY/{if ($3 > m) m = $3} END{print m}' "$W"/swarm-*.out)
PER=$(( (FULL - BASE) * 1024 / COUNT ))
echo "| tunnels up | $UP over $RELAYS relays (one PostgreSQL store), dialed from $SOURCES source addresses |"
echo "| relays' RSS, idle, no tunnels | $((BASE / 1024)) MiB |"
echo "| relays' RSS with $COUNT idle tunnels | $((FULL / 1024)) MiB |"
echo "| relay RSS per idle tunnel | $PER bytes ($(awk -v b="$PER" 'BEGIN{printf "%.1f", b/1024}') KiB) |"
echo "| relays' CPU while idle (10 s, % of one core, all relays) | $(awk -v t=$((T1 - T0)) -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.1f", t / hz / 10 * 100}') % |"
echo "| connect: slowest swarm all up after (its $SHARE tunnels, all swarms dialing at once) | $SLOWEST ms |"
