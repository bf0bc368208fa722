"""Seed 000's node client flow against a running api-server.

It makes the calls the seed-000 usage guide describes, with the same
libraries (aiohttp, cryptography), key type (RSA-2048, PKCS#8/SPKI PEM),
signature (RSA-PSS, MGF1-SHA256, MAX_LENGTH salt, hex) and payloads; the
only change is the pairing code in the registration's metadata.

Environment: API_URL, CODE_A and CODE_B (two pairing codes of one user).
Prints one "ok <step>" line per step; exits non-zero on the first failure.
"""

import asyncio
import os
import sys
from datetime import datetime, timezone

import aiohttp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

API = os.environ["API_URL"].rstrip("/")


def ok(step, detail=""):
    print(f"ok {step} {detail}".rstrip(), flush=True)


def keypair():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = key.public_key().public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    private_pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    return serialization.load_pem_private_key(private_pem, password=None), public_pem.decode("utf-8")


class Node:
    def __init__(self, http, node_id):
        self.http = http
        self.node_id = node_id
        self.key = None
        self.access = None
        self.refresh = None

    def auth(self):
        return {"Authorization": f"Bearer {self.access}"}

    async def register(self, node_type, capabilities, code):
        self.key, public_pem = keypair()
        body = {
            "node_id": self.node_id,
            "name": f"node {self.node_id}",
            "type": node_type,
            "capabilities": capabilities,
            "public_key": public_pem,
            "endpoint": f"https://{self.node_id}.example.net:8443",
            "metadata": {"region": "eu-west-1", "version": "2.0.0", "pairing_code": code},
        }
        async with self.http.post(f"{API}/api/v1/auth/register", json=body) as r:
            assert r.status == 201, (r.status, await r.text())
            result = await r.json()
            assert result["node_id"] == self.node_id, result
        ok("register", self.node_id)

    async def authenticate(self):
        async with self.http.post(f"{API}/api/v1/auth/login", json={"node_id": self.node_id}) as r:
            assert r.status == 200, (r.status, await r.text())
            challenge = (await r.json())["challenge"]
        signature = self.key.sign(
            challenge.encode("utf-8"),
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH),
            hashes.SHA256(),
        )
        body = {"node_id": self.node_id, "challenge": challenge, "signature": signature.hex()}
        async with self.http.post(f"{API}/api/v1/auth/verify", json=body) as r:
            assert r.status == 200, (r.status, await r.text())
            tokens = await r.json()
        self.access = tokens["access_token"]
        self.refresh = tokens["refresh_token"]
        ok("login+verify", self.node_id)


async def main():
    async with aiohttp.ClientSession() as http:
        a = Node(http, "node-001")
        b = Node(http, "node-002")
        await a.register("gateway", ["routing", "storage", "compute"], os.environ["CODE_A"])
        await b.register("storage", ["storage"], os.environ["CODE_B"])
        await a.authenticate()
        await b.authenticate()

        # Discovery: everything, then storage nodes only.
        async with http.get(f"{API}/api/v1/nodes", headers=a.auth()) as r:
            assert r.status == 200, (r.status, await r.text())
            nodes = (await r.json())["nodes"]
        assert {n["node_id"] for n in nodes} == {"node-001", "node-002"}, nodes
        params = {"type": "storage", "capabilities": ",".join(["storage"])}
        async with http.get(f"{API}/api/v1/nodes", headers=a.auth(), params=params) as r:
            assert r.status == 200, (r.status, await r.text())
            storage = (await r.json())["nodes"]
        assert [n["node_id"] for n in storage] == ["node-002"], storage
        ok("discover", f"{len(nodes)} nodes, {len(storage)} storage")

        # Status update and heartbeat.
        update = {
            "status": "active",
            "load": 0.65,
            "available_resources": {"cpu": 75, "memory": 80, "storage": 90},
            "metadata": {"version": "2.0.1", "uptime": "72h", "connections": 150},
            "last_seen": None,
        }
        async with http.put(f"{API}/api/v1/nodes/node-001", headers=a.auth(), json=update) as r:
            assert r.status == 200, (r.status, await r.text())
        ok("update status")
        beat = {
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "status": "healthy",
            "metrics": {"cpu_usage": 45.2, "memory_usage": 67.8, "disk_usage": 23.4,
                        "network_in": 1024, "network_out": 2048},
        }
        async with http.post(f"{API}/api/v1/nodes/node-001/heartbeat", headers=a.auth(), json=beat) as r:
            assert r.status == 200, (r.status, await r.text())
        ok("heartbeat")

        # Messages: node-001 → node-002, then node-002 reads and marks them.
        message = {
            "from_node": "node-001",
            "to_nodes": ["node-002"],
            "message_type": "data_sync",
            "content": {"action": "sync_request", "data_hash": "abc123",
                        "timestamp": datetime.now(timezone.utc).isoformat()},
            "priority": "high",
            "ttl": 1800,
            "metadata": {"correlation_id": "sync-001", "retry_count": 0},
        }
        async with http.post(f"{API}/api/v1/messages/send", headers=a.auth(), json=message) as r:
            assert r.status == 200, (r.status, await r.text())
            message_id = (await r.json())["message_id"]
        ok("send", message_id)
        async with http.get(f"{API}/api/v1/messages/pending/node-002", headers=b.auth()) as r:
            assert r.status == 200, (r.status, await r.text())
            pending = (await r.json())["messages"]
        assert [m["id"] for m in pending] == [message_id], pending
        assert pending[0]["message_type"] == "data_sync" and pending[0]["from_node"] == "node-001", pending
        ok("receive pending", str(len(pending)))
        for m in pending:
            async with http.put(f"{API}/api/v1/messages/{m['id']}/read", headers=b.auth()) as r:
                assert r.status == 200, (r.status, await r.text())
        async with http.get(f"{API}/api/v1/messages/pending/node-002", headers=b.auth()) as r:
            assert (await r.json())["messages"] == []
        ok("mark read")

        # Monitoring.
        async with http.get(f"{API}/api/v1/metrics", headers=a.auth()) as r:
            assert r.status == 200, (r.status, await r.text())
            text = await r.text()
        assert "edgelink_devices" in text, text
        ok("metrics", f"{len(text)} bytes")
        async with http.get(f"{API}/api/v1/health") as r:
            assert r.status == 200, (r.status, await r.text())
            health = await r.json()
        assert health["status"] and "uptime" in health and health["version"], health
        ok("health", health["status"])

        # Token rotation: the refresh token as the bearer, no body.
        async with http.post(f"{API}/api/v1/auth/refresh",
                             headers={"Authorization": f"Bearer {a.refresh}"}) as r:
            assert r.status == 200, (r.status, await r.text())
            tokens = await r.json()
        assert tokens["access_token"] and tokens.get("refresh_token") != a.refresh, tokens
        a.access = tokens["access_token"]
        async with http.get(f"{API}/api/v1/nodes", headers=a.auth()) as r:
            assert r.status == 200
        ok("refresh")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except AssertionError as e:
        print(f"FAILED: {e!r}", file=sys.stderr)
        sys.exit(1)
