"""Device-agent fixtures: agents enrolled on the real engine, each in its own home."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from devices.agent import DeviceAgent
from engine.client import EngineClient
from engine.enrollment import Enrollment
from engine.errors import SynvoiceError
from engine.natsproc import NatsServer
from tests.conftest import EngineHarness, running_engine, wait_for

AgentFactory = Callable[..., Awaitable[DeviceAgent]]

# Short waits so fault tests recover quickly; the defaults suit real devices.
FAST = {"request_timeout": 3.0, "poll_interval": 1.0, "retry_max": 0.5, "reconnect_wait": 0.2}


async def enroll_token(admin: EngineClient, url: str, user: str) -> str:
    r = await admin.enroll(user)
    return Enrollment.from_reply(url, r).token()


class Agents:
    """Makes agents for one engine; closes them all at the end of the test."""

    def __init__(self, tmp_path: Path, url: str, admin: Callable[[], Awaitable[EngineClient]]):
        self.tmp_path = tmp_path
        self.url = url
        self._admin = admin
        self.agents: list[DeviceAgent] = []
        self.count = 0

    async def new(self, user: str = "alice", online: bool = True, **opts: Any) -> DeviceAgent:
        self.count += 1
        token = await enroll_token(await self._admin(), self.url, user)
        agent = await DeviceAgent.init(
            self.tmp_path / f"device{self.count}-{user}", token, **{**FAST, **opts}
        )
        self.agents.append(agent)
        if online:
            assert await agent.connect(timeout=10)
            await agent.sync()
        return agent

    async def reopen(self, agent: DeviceAgent, **opts: Any) -> DeviceAgent:
        await agent.close()
        again = await DeviceAgent.open(agent.home, **{**FAST, **opts})
        self.agents.append(again)
        return again

    async def close(self) -> None:
        for a in self.agents:
            await a.close()


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


async def sync_eventually(agent: DeviceAgent, timeout: float = 30.0) -> None:
    """Sync, retrying while the engine is not answering yet (it is restarting)."""

    async def ok() -> bool:
        try:
            await agent.sync()
            return True
        except SynvoiceError as exc:
            if exc.code != "unavailable":
                raise
            return False

    await wait_for(ok, timeout=timeout, interval=0.2)


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
