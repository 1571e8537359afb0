"""The billing tool's link to the engine: pull the log, push billing events.

It signs as the billing device (the same enrollment its device agent uses).
Billing events carry ``device_seq`` 0: they are not part of the agent's own
document sequence, like the numbers the engine assigns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from engine.client import EngineClient
from engine.enrollment import Enrollment, parse_token
from engine.errors import SynvoiceError
from engine.events import Event

PUSH_CHUNK = 1000  # events per push request (well under the engine's batch and byte limits)


@dataclass
class PushResult:
    new: int = 0
    duplicate: int = 0


class EngineLink:
    def __init__(self, client: EngineClient, enrollment: Enrollment) -> None:
        self.client = client
        self.enrollment = enrollment

    @property
    def device_id(self) -> str:
        return self.enrollment.device_id

    @property
    def user(self) -> str:
        return self.enrollment.user

    @classmethod
    async def open(cls, token: str, url: str | None = None, timeout: float = 15.0) -> EngineLink:
        enr = parse_token(token)
        if url:
            enr = replace(enr, url=url)
        try:
            client = await EngineClient.connect_enrolled(
                enr, timeout=timeout, max_reconnect_attempts=3, connect_timeout=3
            )
        except Exception as exc:
            raise SynvoiceError(
                "unavailable", f"cannot reach the engine at {enr.url}: {exc}"
            ) from None
        return cls(client, enr)

    async def close(self) -> None:
        try:
            await self.client.close()
        except Exception:
            pass

    async def pull(
        self, after: int, on_page: Callable[[list[dict[str, Any]], int], Awaitable[None]]
    ) -> int:
        """Pull every event after ``after``, page by page; returns the last position."""
        while True:
            page = await self.client.pull(after)
            events: list[dict[str, Any]] = page.events
            if events:
                after = int(events[-1]["position"])
            await on_page(events, after)
            if not page.more or not events:
                return after

    async def push(self, events: Sequence[Event]) -> PushResult:
        res = PushResult()
        for i in range(0, len(events), PUSH_CHUNK):
            reply = await self.client.push(list(events[i : i + PUSH_CHUNK]))
            for r in reply.results:
                if r.duplicate:
                    res.duplicate += 1
                else:
                    res.new += 1
        return res
