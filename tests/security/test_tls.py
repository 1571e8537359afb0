"""TLS on the embedded broker with a self-signed certificate made here."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.client import EngineClient
from engine.config import EngineConfig
from engine.enrollment import parse_token
from engine.server import EngineServer
from tests.support.harness import EngineHarness, self_signed_cert
from tests.support.security import raw_connect


@pytest.fixture
async def tls_engine(tmp_path: Path) -> AsyncIterator[EngineHarness]:
    cert, key = self_signed_cert(tmp_path, "broker")
    cfg = EngineConfig(
        data_dir=tmp_path / "tls", nats_url=None, nats_port=0, tls_cert=cert, tls_key=key
    )
    server = EngineServer(cfg)
    await server.start()
    h = EngineHarness(server, server.nats_url)
    try:
        yield h
    finally:
        await h.close()
        await server.stop()


async def test_devices_connect_over_tls_with_the_ca_from_their_token(
    tls_engine: EngineHarness,
) -> None:
    dev = await tls_engine.device("alice")
    assert dev.enrollment is not None and dev.enrollment.tls_ca
    token = dev.enrollment.token()
    client = await EngineClient.connect_enrolled(parse_token(token))
    try:
        await client.push([dev.created()])
        st = await client.status()
        assert (st.broker.auth, st.broker.tls) == (True, True)
        assert client.nc.connected_server_version  # a live session
    finally:
        await client.close()


async def test_plaintext_and_untrusted_clients_are_refused(tls_engine: EngineHarness) -> None:
    dev = await tls_engine.device("alice")
    assert dev.enrollment is not None
    opts = dev.enrollment.nats_options()
    opts.pop("tls")
    # nats-py upgrades to TLS by itself when the server requires it, and then
    # refuses a certificate it does not trust (the system CAs do not know it).
    with pytest.raises(ssl.SSLCertVerificationError):
        nc = await raw_connect(tls_engine.url, **opts)
        await nc.close()
    # A client that insists on plaintext gets no session: the server announces
    # tls_required and drops a plaintext CONNECT, credentials and all.
    port = int(tls_engine.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        info = json.loads((await reader.readline()).decode().split(" ", 1)[1])
        assert info["tls_required"] is True
        connect = {"user": opts["user"], "pass": opts["password"], "verbose": True}
        writer.write(f"CONNECT {json.dumps(connect)}\r\nPING\r\n".encode())
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(4096), timeout=10)
        assert b"+OK" not in reply and b"PONG" not in reply
    finally:
        writer.close()
