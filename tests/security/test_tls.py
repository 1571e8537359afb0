"""TLS on the embedded broker with a self-signed certificate made here."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from engine.client import EngineClient
from engine.config import EngineConfig
from engine.enrollment import parse_token
from engine.server import EngineServer
from tests.conftest import EngineHarness
from tests.security.conftest import raw_connect


def self_signed(dir_: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "synvoice test broker")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = dir_ / "broker.pem", dir_ / "broker-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture
async def tls_engine(tmp_path: Path) -> AsyncIterator[EngineHarness]:
    cert, key = self_signed(tmp_path)
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
        assert st["broker"] == {"auth": True, "tls": True}
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
