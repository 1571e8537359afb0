"""Shared fixtures: a real nats-server (JetStream) and a real engine on temp files.

Each test gets its own broker on a free loopback port with a temp store dir,
started from deploy/nats-server.conf and stopped (by pid) at the end.

Editions: every engine a test starts (in this process or as ``python -m engine
serve``) runs the unlimited "site" edition, through ``SYNVOICE_LICENSE_KEY``
signed by an ephemeral vendor key that ``SYNVOICE_VENDOR_PUBLIC_KEY`` trusts.
Tests of the editions themselves (tests/security) set their own keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from engine.natsproc import NatsServer
from tests.support.harness import (  # noqa: F401
    DeviceCreds,
    EngineHarness,
    EngineProcess,
    engine_config,
    running_engine,
    self_signed_cert,
    wait_for,
)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    srv = NatsServer(tmp_path / "nats").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
async def engine(
    request: pytest.FixtureRequest, tmp_path: Path, nats_server: NatsServer
) -> AsyncIterator[EngineHarness]:
    """An engine without its live-views worker (most tests never read the views:
    starting and stopping the worker was a fifth of the suite); tests marked
    ``@pytest.mark.views`` get the worker."""
    views = request.node.get_closest_marker("views") is not None
    async with running_engine(tmp_path / "data", nats_server.url, live_views=views) as h:
        yield h


@pytest.fixture
def engine_process(tmp_path: Path, nats_server: NatsServer) -> Iterator[EngineProcess]:
    (tmp_path / "data").mkdir()
    ep = EngineProcess(tmp_path / "data", nats_server.url)
    try:
        yield ep
    finally:
        ep.stop()


_BROKER_WORDS = (
    "NatsServer",
    "running_engine",
    "embedded_engine",
    "EngineProcess",
    "EngineServer",
    "nats_server",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that starts a real nats-server ``broker``, so
    ``pytest -m "not broker"`` runs the fast lane: the pure logic alone."""
    uses_broker: dict[Path, bool] = {}
    for item in items:
        path = Path(str(item.fspath))
        if path not in uses_broker:
            text = path.read_text(encoding="utf-8")
            uses_broker[path] = any(w in text for w in _BROKER_WORDS)
        names = getattr(item, "fixturenames", ())
        if uses_broker[path] or "nats_server" in names or "engine" in names:
            item.add_marker(pytest.mark.broker)
