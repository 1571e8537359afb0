"""Device-agent fixtures: agents enrolled on the real engine, each in its own home."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.client import EngineClient
from engine.natsproc import NatsServer
from tests.support.devices import FAST, AgentFactory, Agents, enroll_token, sync_eventually  # noqa: F401
from tests.support.harness import EngineHarness, running_engine


@pytest.fixture
async def agents(tmp_path: Path, engine: EngineHarness) -> AsyncIterator[Agents]:
    admin: EngineClient | None = None

    async def get_admin() -> EngineClient:
        nonlocal admin
        if admin is None:
            admin = await engine.admin()
        return admin

    a = Agents(tmp_path, engine.url, get_admin)
    try:
        yield a
    finally:
        await a.close()


@pytest.fixture
async def small_runway(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[Agents]:
    """An engine whose distributed epochs give each user only 4 numbers at a time."""
    async with running_engine(tmp_path / "data", nats_server.url, runway=4) as h:
        a = Agents(tmp_path, h.url, h.admin)
        try:
            yield a
        finally:
            await a.close()


@pytest.fixture
async def bare_engine(
    tmp_path: Path, nats_server: NatsServer
) -> AsyncIterator[tuple[EngineHarness, Agents]]:
    """An engine without plugins and JetStream publishing: for bulk tests where only
    the device side is under test (the engine's own paths have their own tests)."""
    async with running_engine(
        tmp_path / "data", nats_server.url, plugins=False, publish=False
    ) as h:
        a = Agents(tmp_path, h.url, h.admin)
        try:
            yield h, a
        finally:
            await a.close()
