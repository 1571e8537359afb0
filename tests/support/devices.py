"""Test support: Device-agent fixtures: agents enrolled on the real engine, each in its own home.

Imported by tests and conftest files alike (conftest files only hold fixtures).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from devices.agent import DeviceAgent
from engine.client import EngineClient
from engine.enrollment import Enrollment
from engine.errors import SynvoiceError
from tests.support.harness import wait_for

AgentFactory = Callable[..., Awaitable[DeviceAgent]]


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
