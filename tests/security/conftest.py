"""Fixtures for editions and broker security.

- ``vendor``: an ephemeral vendor key pair that issues registration keys.
- ``make_engine``: an in-process engine on the shared plain broker with a
  chosen edition (trial unless a key is given); for the limit tests.
- ``secure_engine``: an in-process engine with its embedded nats-server and
  the generated broker users (no ``--nats-url``), as ``synvoice serve`` runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine import license
from engine.config import EngineConfig
from engine.natsproc import NatsServer
from engine.server import EngineServer
from tests.support.harness import EngineHarness, engine_config
from tests.support.security import Errors, MakeEngine, Vendor, raw_connect  # noqa: F401


@pytest.fixture
def vendor() -> Vendor:
    key = Ed25519PrivateKey.generate()
    return Vendor(key, license.public_key_text(key.public_key()))


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
