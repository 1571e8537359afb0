"""Test support: Shared fixtures: a real nats-server (JetStream) and a real engine on temp files.

Imported by tests and conftest files alike (conftest files only hold fixtures).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.client import EngineClient
from engine.config import EngineConfig
from engine.enrollment import Enrollment
from engine.events import Event, new_event
from engine.license import dev_site_env
from engine.natsproc import terminate
from engine.protocol import ADMIN_DEVICE
from engine.schema.common import Customer, Line
from engine.schema.documents import DocumentCreated
from engine.server import EngineServer

os.environ.update(dev_site_env())
# Engines in tests start no web console unless a test asks (tests/console).
os.environ.setdefault("SYNVOICE_CONSOLE", "0")


def engine_config(data_dir: Path, nats_url: str, **kw: Any) -> EngineConfig:
    cfg = EngineConfig(data_dir=data_dir, nats_url=nats_url)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


@dataclass
class EngineHarness:
    """An in-process engine plus helpers to talk to it as admin or as devices."""

    server: EngineServer
    url: str
    clients: list[EngineClient] = field(default_factory=list)

    @property
    def core(self) -> Any:
        return self.server.core

    async def admin(self) -> EngineClient:
        assert self.server.core is not None and self.server.core.admin_secret is not None
        c = await EngineClient.connect(
            self.url,
            ADMIN_DEVICE,
            self.server.core.admin_secret,
            **self.server.admin_nats_options(),  # broker user / TLS when the broker wants them
        )
        self.clients.append(c)
        return c

    async def device(self, user: str = "alice", name: str | None = None) -> DeviceCreds:
        admin = await self.admin()
        r = await admin.enroll(user, name)
        enrollment = Enrollment.from_reply(self.url, r)
        if enrollment.broker_auth or enrollment.tls_ca:
            client = await EngineClient.connect_enrolled(enrollment)  # as a device agent does
        else:
            client = await EngineClient.connect(self.url, r.device_id, bytes.fromhex(r.secret))
        self.clients.append(client)
        return DeviceCreds(
            r.device_id, r.user, bytes.fromhex(r.secret), client, enrollment=enrollment
        )

    async def close(self) -> None:
        for c in self.clients:
            try:
                await c.close()
            except Exception:
                pass


@dataclass
class DeviceCreds:
    device_id: str
    user: str
    secret: bytes
    client: EngineClient
    seq: int = 0
    enrollment: Enrollment | None = None

    def created(self, kind: str = "invoice", number: int = 0, **kw: Any) -> Event:
        """A document.created event from this device."""
        self.seq += 1
        payload = DocumentCreated(
            number=number,
            customer=Customer(name=kw.pop("customer", "Acme Ltd")),
            lines=[Line(description="Consulting", quantity=2, unit_price=150, tax_rate=20)],
            **kw,
        )
        return new_event(
            "document.created",
            payload,
            device_id=self.device_id,
            user=self.user,
            device_seq=self.seq,
            doc_id=uuid.uuid4(),
            kind=kind,
        )


@contextlib.asynccontextmanager
async def running_engine(
    data_dir: Path, nats_url: str, **config: Any
) -> AsyncIterator[EngineHarness]:
    """An in-process engine on ``data_dir`` (config fields overridable), stopped after."""
    server = EngineServer(engine_config(data_dir, nats_url, **config))
    await server.start()
    h = EngineHarness(server, nats_url)
    try:
        yield h
    finally:
        await h.close()
        await server.stop()


class ChildEngine:
    """An engine in an OS process of its own, started by a test: what every such
    harness can do with it (kill -9, a clean stop, its admin secret)."""

    stop_timeout = 15.0

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        terminate(self.proc, self.stop_timeout)
        self.proc = None

    @property
    def admin_secret(self) -> bytes:
        return bytes.fromhex((self.data_dir / "admin.secret").read_text().strip())


class EngineProcess(ChildEngine):
    """The engine as a separate OS process (``python -m engine serve``), for fault tests."""

    def __init__(self, data_dir: Path, nats_url: str) -> None:
        super().__init__(data_dir)
        self.nats_url = nats_url

    def start(self, timeout: float = 20.0) -> EngineProcess:
        runtime = self.data_dir / "engine.json"
        if runtime.exists():
            runtime.unlink()
        log = open(self.data_dir.parent / "engine-process.log", "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine",
                "serve",
                "--data",
                str(self.data_dir),
                "--nats-url",
                self.nats_url,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited with {self.proc.returncode}")
            if runtime.exists() and json.loads(runtime.read_text())["pid"] == self.proc.pid:
                return self
            time.sleep(0.05)
        raise TimeoutError("engine did not start")


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll an (async or sync) predicate until true; fail the test on timeout."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        r = predicate()
        if asyncio.iscoroutine(r):
            r = await r
        if r:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def self_signed_cert(dir_: Path, stem: str = "test") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost (TLS tests of the broker
    and of SMTP): returns (cert PEM path, key PEM path, mode 0600)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "synvoice test")])
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
    cert_path, key_path = dir_ / f"{stem}.pem", dir_ / f"{stem}-key.pem"
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


def doc_of(ev: Event) -> uuid.UUID:
    """A document event's doc id (typed: document events always carry one)."""
    assert ev.doc_id is not None
    return ev.doc_id
