"""Fixtures for editions and broker security.

- ``vendor``: an ephemeral vendor key pair that issues registration keys.
- ``make_engine``: an in-process engine on the shared plain broker with a
  chosen edition (trial unless a key is given); for the limit tests.
- ``secure_engine``: an in-process engine with its embedded nats-server and
  the generated broker users (no ``--nats-url``), as ``synvoice serve`` runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.client import Client

from engine import license
from engine.config import EngineConfig
from engine.natsproc import NatsServer
from engine.server import EngineServer
from tests.conftest import EngineHarness, engine_config


@dataclass
class Vendor:
    private: Ed25519PrivateKey
    public: str  # base64, as SYNVOICE_VENDOR_PUBLIC_KEY takes it

    def issue(self, edition: str, licensee: str = "Acme Ltd", **kw: Any) -> str:
        return license.issue(self.private, edition, licensee, **kw)


@pytest.fixture
def vendor() -> Vendor:
    key = Ed25519PrivateKey.generate()
    return Vendor(key, license.public_key_text(key.public_key()))


MakeEngine = Callable[..., Awaitable[EngineHarness]]


@pytest.fixture
async def make_engine(
    tmp_path: Path, nats_server: NatsServer, vendor: Vendor
) -> AsyncIterator[MakeEngine]:
    """``await make_engine(key=None, **config)``: trial edition unless a key is given.

    The engines share one broker: stop one before starting the next.
    """
    started: list[EngineHarness] = []

    async def make(key: str | None = None, **kw: Any) -> EngineHarness:
        data = kw.pop("data_dir", tmp_path / f"data{len(started)}")
        cfg = engine_config(
            data, nats_server.url, **{"license_key": key, "vendor_public_key": vendor.public, **kw}
        )
        server = EngineServer(cfg)
        await server.start()
        h = EngineHarness(server, nats_server.url)
        started.append(h)
        return h

    try:
        yield make
    finally:
        for h in started:
            await h.close()
            await h.server.stop()


@pytest.fixture
async def secure_engine(tmp_path: Path) -> AsyncIterator[EngineHarness]:
    """The engine with its own nats-server and generated broker users (site edition)."""
    cfg = EngineConfig(data_dir=tmp_path / "secure", nats_url=None, nats_port=0)
    server = EngineServer(cfg)
    await server.start()
    assert server.broker is not None
    h = EngineHarness(server, server.nats_url)
    try:
        yield h
    finally:
        await h.close()
        await server.stop()


class Errors:
    """Collects asynchronous errors a connection reports (permission violations)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def cb(self, exc: Exception) -> None:  # nats-py wants a coroutine function
        self.seen.append(str(exc))

    def has(self, text: str) -> bool:
        return any(text.lower() in e.lower() for e in self.seen)


async def raw_connect(url: str, errors: Errors | None = None, **opts: Any) -> Client:
    """A plain nats-py connection that does not retry (for refusal tests)."""
    return await nats.connect(
        url,
        allow_reconnect=False,
        max_reconnect_attempts=0,
        connect_timeout=2,
        error_cb=(errors or Errors()).cb,
        **opts,
    )
