"""Seed 001's main server, written to the document with python-socketio 5:
namespace /proxy, proxyId + apiKey from the handshake query or the auth
payload, `execute_command` out, `command_result` in, answered with
`command_result_received {success: true}`.

Listens on 127.0.0.1 on a port the kernel picks and prints `port N`; then
one JSON line per event: `{"connected": proxyId, "via": "query"|"auth"}`,
`{"refused": reason}`, `{"result": <command_result payload>}`.
Environment: API_KEY (the accepted key), COMMANDS (a JSON list of
execute_command payloads sent to each intermediary that connects).
"""
import asyncio
import json
import os
import sys
from urllib.parse import parse_qs

import socketio
from aiohttp import web

API_KEY = os.environ["API_KEY"]
COMMANDS = json.loads(os.environ.get("COMMANDS", "[]"))

sio = socketio.AsyncServer(async_mode="aiohttp")
app = web.Application()
sio.attach(app)


def say(obj):
    print(json.dumps(obj), flush=True)


@sio.event(namespace="/proxy")
async def connect(sid, environ, auth):
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    creds, via = (auth, "auth") if auth and "apiKey" in auth else (query, "query")
    if creds.get("apiKey") != API_KEY or not creds.get("proxyId"):
        say({"refused": "bad apiKey"})
        raise socketio.exceptions.ConnectionRefusedError("authentication failed: bad apiKey")
    say({"connected": creds["proxyId"], "via": via, "query_has_key": "apiKey" in query})

    async def send():
        for command in COMMANDS:
            await sio.emit("execute_command", command, to=sid, namespace="/proxy")

    sio.start_background_task(send)


@sio.on("command_result", namespace="/proxy")
async def command_result(sid, data):
    say({"result": data})
    await sio.emit("command_result_received", {"success": True}, to=sid, namespace="/proxy")


async def main():
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    print(f"port {port}", flush=True)
    while True:
        await asyncio.sleep(3600)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
