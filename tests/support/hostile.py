"""Test support: hostile clients run as their own processes (``python -m tests.support.hostile``).

``flood``: one device sends ROUNDS x N concurrent pushes of SIZE junk bytes and
prints the count of each outcome (reply error code, or exception name) as JSON.
``unread-pulls``: one device sends N maximal pulls and never reads the replies.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

from engine import auth, codec, protocol
from engine.client import EngineClient


async def flood(c: EngineClient, n: int, size: int, rounds: int) -> dict[str, int]:
    junk = os.urandom(size)
    out: Counter[str] = Counter()

    async def one() -> None:
        hdr = auth.sign(c.device_id, c.secret, protocol.PUSH, junk)
        try:
            m = await c.nc.request(protocol.PUSH, junk, headers=hdr, timeout=60)
            reply: Any = codec.unpack(m.data)
            out[str(reply.get("error", {}).get("code", "ok"))] += 1
        except Exception as exc:
            out[type(exc).__name__] += 1

    for _ in range(rounds):
        await asyncio.gather(*(one() for _ in range(n)))
    return dict(out)


def unread_pulls(
    url: str, device: str, secret: bytes, opts: dict[str, Any], n: int
) -> dict[str, int]:
    """Send ``n`` maximal pulls on one raw socket subscribed to their replies, and
    never read from it (nats-py would read: this speaks the protocol by hand)."""
    host, port = urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port or 4222
    body = codec.pack({"after": 0, "limit": 5000, "hashes": True})
    prefix = f"_INBOX.{device}.unread"
    connect = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True}
    if "user" in opts:
        connect.update(user=opts["user"], **{"pass": opts["password"]})
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.recv(65536)  # INFO
        out = [f"CONNECT {json.dumps(connect)}\r\n", f"SUB {prefix}.> 1\r\n"]
        sock.sendall("".join(out).encode())
        for i in range(n):
            signed = auth.sign(device, secret, protocol.PULL, body)
            hdr = "NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in signed.items()) + "\r\n"
            line = f"HPUB {protocol.PULL} {prefix}.{i} {len(hdr)} {len(hdr) + len(body)}\r\n"
            sock.sendall(line.encode() + hdr.encode() + body + b"\r\n")
        time.sleep(float(os.environ.get("HOLD_SECONDS", "4")))  # holding, not reading
    return {"sent": n}


async def main(argv: list[str]) -> None:
    mode, url, device, secret, opts_json, *rest = argv
    opts = json.loads(opts_json)
    if mode == "unread-pulls":
        print(json.dumps(unread_pulls(url, device, bytes.fromhex(secret), opts, int(rest[0]))))
        return
    c = await EngineClient.connect(url, device, bytes.fromhex(secret), **opts)
    try:
        n, size, rounds = (int(x) for x in rest)
        print(json.dumps(await flood(c, n, size, rounds)), flush=True)
    finally:
        await c.nc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
