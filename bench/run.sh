#!/usr/bin/env bash
# `make bench`: edgelink's relay path (internal forward → tunnel → agent →
# origin) measured in the same run as a direct connection, rathole and
# bore, by the shared peers benchmark. Then the idle-memory and
# reconnect-storm measurements (bench/swarm.sh). Results: stdout tables;
# record them in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PEERS_BENCH=${PEERS_BENCH:-$ROOT/../shared/bench/peers/run.sh}
[ -x "$PEERS_BENCH" ] || [ -f "$PEERS_BENCH" ] || { echo "peers benchmark not found at $PEERS_BENCH" >&2; exit 1; }
for tool in wrk nginx curl; do
  command -v $tool >/dev/null || { echo "$tool missing: apt-get install -y wrk nginx-light iperf3 curl" >&2; exit 1; }
done

cargo build --release -p api-server -p remote-proxy -p edge-agent >&2
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

W=$(mktemp -d "${TMPDIR:-/tmp}/edgelink-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT
API_PORT=${API_PORT:-18721}; TUNNEL_PORT=${TUNNEL_PORT:-18800}; INTERNAL_PORT=${INTERNAL_PORT:-18801}
SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')

export EDGELINK_API__LISTEN=127.0.0.1:$API_PORT
export EDGELINK_API__DATABASE_URL=sqlite://$W/edgelink.db
export EDGELINK_API__SIGNING_KEY_FILE=$W/signing.pem
export EDGELINK_RELAY__TUNNEL_LISTEN=127.0.0.1:$TUNNEL_PORT
export EDGELINK_RELAY__INTERNAL_LISTEN=127.0.0.1:$INTERNAL_PORT
export EDGELINK_RELAY__DATABASE_URL=sqlite://$W/edgelink.db
export EDGELINK_RELAY__JWKS_URL=http://127.0.0.1:$API_PORT/.well-known/jwks.json
export EDGELINK_RELAY__INTERNAL_SECRET=$SECRET
export EDGELINK_AGENT__API_URL=http://127.0.0.1:$API_PORT
export EDGELINK_AGENT__TUNNEL_URL=ws://127.0.0.1:$TUNNEL_PORT/tunnel
export EDGELINK_AGENT__KEY_FILE=$W/device.key
export RUST_LOG=warn

"$BIN/edge-agent" keygen >/dev/null
DEVICE=$("$BIN/api-server" device add --owner bench@example.com --name bench --public-key "$W/device.key.pub")
export EDGELINK_AGENT__DEVICE_ID=$DEVICE

# The contender: run.sh starts it after its origin is up (ORIGIN_URL set).
EXTRA_NAME=edgelink \
EXTRA_START="\"$BIN/api-server\" serve & \
  sleep 0.5; \"$BIN/remote-proxy\" serve & \
  sleep 0.5; EDGELINK_AGENT__LOCAL_SERVICE=\$ORIGIN_URL \"$BIN/edge-agent\" run & wait" \
EXTRA_URL_SMALL=http://127.0.0.1:$INTERNAL_PORT/internal/forward/$DEVICE/small \
EXTRA_URL_BIG=http://127.0.0.1:$INTERNAL_PORT/internal/forward/$DEVICE/big \
EXTRA_HEADER="Authorization: Bearer $SECRET" \
  bash "$PEERS_BENCH"
