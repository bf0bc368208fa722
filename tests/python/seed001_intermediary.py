"""An intermediary written to seed 001's document with python-socketio 5,
as a third party would: connects to SERVER_URL's /proxy namespace with
PROXY_ID and API_KEY in the auth payload (the document's Python example)
or, with CREDENTIALS=query, in the handshake query (the document's form).

MODE=answer answers each execute_command with a made-up result (it runs
nothing); MODE=hold takes commands and never answers (the test then kills
it, to see the command fail over). One JSON line per event on stdout.
"""
import asyncio
import json
import os
from urllib.parse import urlencode

import socketio

URL = os.environ["SERVER_URL"]
PROXY_ID = os.environ["PROXY_ID"]
API_KEY = os.environ["API_KEY"]
MODE = os.environ.get("MODE", "answer")
CREDENTIALS = os.environ.get("CREDENTIALS", "auth")

sio = socketio.AsyncClient(reconnection=False)


def say(obj):
    print(json.dumps(obj), flush=True)


@sio.event(namespace="/proxy")
async def connect():
    say({"connected": True})


@sio.event(namespace="/proxy")
async def connect_error(data):
    say({"connect_error": data})


@sio.on("execute_command", namespace="/proxy")
async def execute_command(data):
    say({"execute_command": {k: v for k, v in data.items() if k not in ("password", "privateKey")},
         "has_password": "password" in data})
    if MODE == "answer":
        await sio.emit("command_result", {
            "commandId": data["commandId"],
            "result": {"stdout": "ran " + data["command"], "stderr": "", "exitCode": 0},
        }, namespace="/proxy")


@sio.on("command_result_received", namespace="/proxy")
async def received(data):
    say({"command_result_received": data})


async def main():
    try:
        if CREDENTIALS == "query":
            url = URL + "?" + urlencode({"proxyId": PROXY_ID, "apiKey": API_KEY})
            await sio.connect(url, namespaces=["/proxy"], transports=["websocket"])
        else:
            await sio.connect(URL, namespaces=["/proxy"], auth={"proxyId": PROXY_ID, "apiKey": API_KEY})
    except socketio.exceptions.ConnectionError as e:
        say({"refused": str(e)})
        return
    await sio.wait()


if __name__ == "__main__":
    asyncio.run(main())
