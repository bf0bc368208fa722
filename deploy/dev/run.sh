#!/usr/bin/env bash
# `make run`: the whole stack on this machine with the embedded defaults —
# SQLite, the development OpenID provider (deploy/dev-idp), api-server,
# remote-proxy, a demo web service and an edge-agent for a demo device —
# then prints the URL to sign in at and a request through the tunnel.
# State lives in .run/ (delete it to start over). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/../.."

RUN_DIR=${RUN_DIR:-.run}
API_PORT=${API_PORT:-3721}
TUNNEL_PORT=${TUNNEL_PORT:-3800}
INTERNAL_PORT=${INTERNAL_PORT:-3801}
DEVICES_PORT=${DEVICES_PORT:-3802}
DEMO_PORT=${DEMO_PORT:-8080}
IDP_PORT=${IDP_PORT:-3790}
PROFILE=${PROFILE:-dev}

echo "building (cargo build --profile $PROFILE)..." >&2
cargo build --profile "$PROFILE" --bins --example demo-origin -p api-server -p remote-proxy -p edge-agent -p edgelink-e2e >&2
TARGET=${CARGO_TARGET_DIR:-target}/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")

mkdir -p "$RUN_DIR"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
[ -s "$RUN_DIR/internal-secret" ] || (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$RUN_DIR/internal-secret")

export EDGELINK_API__LISTEN=127.0.0.1:$API_PORT
export EDGELINK_API__DATABASE_URL=sqlite://$RUN_DIR/edgelink.db
export EDGELINK_API__SIGNING_KEY_FILE=$RUN_DIR/signing-key.pem
# Browser sign-in at the development provider, over plain http on loopback.
export EDGELINK_API__PUBLIC_URL=http://127.0.0.1:$API_PORT
export EDGELINK_API__SESSION__INSECURE_COOKIES=true
export EDGELINK_API__SESSION__KEY_FILE=$RUN_DIR/session.key
export EDGELINK_API__OIDC__ISSUER=http://127.0.0.1:$IDP_PORT
export EDGELINK_API__OIDC__CLIENT_ID=edgelink-web
export EDGELINK_API__AGENT_TUNNEL_URL=ws://127.0.0.1:$TUNNEL_PORT/tunnel
# Each device's web service on its own origin (browsers resolve *.localhost
# to loopback): http://{device-id}.devices.localhost:$DEVICES_PORT/
export EDGELINK_API__DEVICES_URL=http://devices.localhost:$DEVICES_PORT
export EDGELINK_RELAY__DEVICES__URL=$EDGELINK_API__DEVICES_URL
export EDGELINK_RELAY__DEVICES__LISTEN=127.0.0.1:$DEVICES_PORT
export EDGELINK_RELAY__DEVICES__API_URL=http://127.0.0.1:$API_PORT
# api-server writes its session key on first start; the relay seals passes with it.
export EDGELINK_RELAY__DEVICES__SESSION_KEY_FILE=$RUN_DIR/session.key
export EDGELINK_RELAY__TUNNEL_LISTEN=127.0.0.1:$TUNNEL_PORT
export EDGELINK_RELAY__INTERNAL_LISTEN=127.0.0.1:$INTERNAL_PORT
export EDGELINK_RELAY__DATABASE_URL=sqlite://$RUN_DIR/edgelink.db
export EDGELINK_RELAY__JWKS_URL=http://127.0.0.1:$API_PORT/.well-known/jwks.json
EDGELINK_RELAY__INTERNAL_SECRET=$(cat "$RUN_DIR/internal-secret")
export EDGELINK_RELAY__INTERNAL_SECRET
export EDGELINK_API__RELAY_INTERNAL_SECRET=$EDGELINK_RELAY__INTERNAL_SECRET
export EDGELINK_AGENT__LOCAL_SERVICE=http://127.0.0.1:$DEMO_PORT
export EDGELINK_AGENT__KEY_FILE=$RUN_DIR/demo-device.key
export EDGELINK_AGENT__STATE_FILE=$RUN_DIR/demo-device.state.json

PIDS=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

wait_http() { # url seconds
  for _ in $(seq $(($2 * 10))); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "error: $1 did not answer; see $RUN_DIR/*.log" >&2; exit 1
}

"$TARGET/examples/demo-origin" "127.0.0.1:$DEMO_PORT" >"$RUN_DIR/demo-origin.log" 2>&1 & PIDS+=($!)
(cd deploy/dev-idp && PORT=$IDP_PORT REDIRECT_URIS=http://127.0.0.1:$API_PORT/api/auth/callback \
  POST_LOGOUT_REDIRECT_URIS=http://127.0.0.1:$API_PORT/ exec node server.mjs) >"$RUN_DIR/dev-idp.log" 2>&1 & PIDS+=($!)
wait_http "http://127.0.0.1:$IDP_PORT/.well-known/openid-configuration" 30
"$TARGET/api-server" serve >"$RUN_DIR/api-server.log" 2>&1 & PIDS+=($!)
wait_http "http://127.0.0.1:$API_PORT/healthz" 30
"$TARGET/remote-proxy" serve >"$RUN_DIR/remote-proxy.log" 2>&1 & PIDS+=($!)
wait_http "http://127.0.0.1:$TUNNEL_PORT/healthz" 30

# The demo device, paired the way every device is: a one-time code for
# alice (made here by the operator command; in the UI, "Pair a device"),
# exchanged by `edge-agent pair`, which makes the key pair and state file.
if [ ! -s "$EDGELINK_AGENT__STATE_FILE" ]; then
  CODE=$("$TARGET/api-server" pairing create --owner alice@example.com)
  "$TARGET/edge-agent" pair --server "http://127.0.0.1:$API_PORT" --code "$CODE" --name "demo device" >&2
fi
EDGELINK_AGENT__DEVICE_ID=$(sed -n 's/.*"device_id": "\([^"]*\)".*/\1/p' "$EDGELINK_AGENT__STATE_FILE")
"$TARGET/edge-agent" run >"$RUN_DIR/edge-agent.log" 2>&1 & PIDS+=($!)

SESSION=""
for _ in $(seq 100); do
  SESSION=$("$TARGET/remote-proxy" sessions --internal-url "http://127.0.0.1:$INTERNAL_PORT" --json list 2>/dev/null |
    sed -n 's/.*"token": "\([^"]*\)".*/\1/p' | head -1)
  [ -n "$SESSION" ] && break; sleep 0.1
done
[ -n "$SESSION" ] || { echo "error: the demo agent did not connect; see $RUN_DIR/edge-agent.log" >&2; exit 1; }

cat <<MSG

edgelink is running (logs and state in $RUN_DIR):
  api-server      http://127.0.0.1:$API_PORT
  remote-proxy    tunnel ws://127.0.0.1:$TUNNEL_PORT/tunnel, internal http://127.0.0.1:$INTERNAL_PORT,
                  device origins http://{device-id}.devices.localhost:$DEVICES_PORT/
  demo device     $EDGELINK_AGENT__DEVICE_ID (session $SESSION)

Open the web UI and sign in as alice (any password):

  http://127.0.0.1:$API_PORT/

The demo device is alice's: press "Open" next to it to reach its web service
through the tunnel, on its own origin:

  http://$EDGELINK_AGENT__DEVICE_ID.devices.localhost:$DEVICES_PORT/
 The development provider runs at http://127.0.0.1:$IDP_PORT
(users alice and bob).

Or reach the demo device with the operator's internal API:

  curl -H "Authorization: Bearer \$(cat $RUN_DIR/internal-secret)" \\
       http://127.0.0.1:$INTERNAL_PORT/internal/forward/$SESSION/

List sessions:

  EDGELINK_RELAY__INTERNAL_SECRET=\$(cat $RUN_DIR/internal-secret) $TARGET/remote-proxy sessions list

Press Ctrl-C to stop.
MSG
wait
