"""A signed request/reply client for the engine (devices, CLI, tests, benchmarks)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from engine import auth, codec, protocol
from engine.enrollment import Enrollment
from engine.errors import SynvoiceError
from engine.events import Event
from engine.natsproc import server_list


class EngineClient:
    def __init__(self, nc: Client, device_id: str, secret: bytes, timeout: float = 10.0) -> None:
        self.nc = nc
        self.device_id = device_id
        self.secret = secret
        self.timeout = timeout

    @classmethod
    async def connect(
        cls, url: str, device_id: str, secret: bytes, timeout: float = 10.0, **opts: Any
    ) -> EngineClient:
        nc = await nats.connect(server_list(url), **opts)
        return cls(nc, device_id, secret, timeout)

    @classmethod
    async def connect_enrolled(
        cls, enrollment: Enrollment, timeout: float = 10.0, **opts: Any
    ) -> EngineClient:
        """Connect as an enrolled device: the one place devices open their connection."""
        return await cls.connect(
            enrollment.url,
            enrollment.device_id,
            enrollment.secret,
            timeout,
            **{**enrollment.nats_options(), **opts},
        )

    async def close(self) -> None:
        await self.nc.drain()

    async def request_raw(self, subject: str, body: bytes) -> Any:
        headers = auth.sign(self.device_id, self.secret, subject, body)
        try:
            msg = await self.nc.request(subject, body, timeout=self.timeout, headers=headers)
        except NoRespondersError:
            raise SynvoiceError("unavailable", "no engine is answering on the broker") from None
        except NatsTimeout:
            raise SynvoiceError("unavailable", f"engine did not answer {subject} in time") from None
        reply = codec.unpack(msg.data) if msg.data else {}
        if isinstance(reply, dict) and "error" in reply and isinstance(reply["error"], dict):
            e = reply["error"]
            raise SynvoiceError(str(e.get("code")), str(e.get("message")), e.get("details"))
        return reply

    async def request(self, subject: str, payload: dict[str, Any]) -> Any:
        return await self.request_raw(subject, codec.pack(payload))

    async def push(self, events: Sequence[Event | dict[str, Any]]) -> dict[str, Any]:
        wire = [e.to_wire() if isinstance(e, Event) else e for e in events]
        reply: dict[str, Any] = await self.request(protocol.PUSH, {"events": wire})
        return reply

    async def pull(self, after: int, limit: int = 5000, hashes: bool = False) -> dict[str, Any]:
        reply: dict[str, Any] = await self.request(
            protocol.PULL, {"after": after, "limit": limit, "hashes": hashes}
        )
        return reply

    async def next_numbers(
        self, items: Iterable[tuple[str, uuid.UUID]], fresh: bool = False
    ) -> list[int]:
        body = {
            "items": [{"kind": k, "doc_id": str(d), "fresh": fresh} for k, d in items],
        }
        reply = await self.request(protocol.NUMBERS, body)
        return [int(n) for n in reply["numbers"]]

    async def status(self) -> dict[str, Any]:
        reply: dict[str, Any] = await self.request(protocol.STATUS, {})
        return reply

    # admin (needs the admin credential)
    async def enroll(self, user: str, name: str | None = None) -> dict[str, Any]:
        body = {"user": user, "name": name}
        reply: dict[str, Any] = await self.request(protocol.ADMIN_ENROLL, body)
        return reply

    async def revoke(self, device_id: str, reason: str | None = None) -> dict[str, Any]:
        reply: dict[str, Any] = await self.request(
            protocol.ADMIN_REVOKE, {"device_id": device_id, "reason": reason}
        )
        return reply

    async def set_mode(self, mode: str, force: bool = False) -> dict[str, Any]:
        body = {"mode": mode, "force": force}
        reply: dict[str, Any] = await self.request(protocol.ADMIN_MODE, body)
        return reply

    async def register(self, key: str) -> dict[str, Any]:
        """Register an edition key (admin)."""
        reply: dict[str, Any] = await self.request(protocol.ADMIN_REGISTER, {"key": key})
        return reply

    async def integration(self, action: str, name: str | None = None) -> dict[str, Any]:
        """add / remove / list integrations (admin); add returns broker credentials."""
        body = {"action": action, "name": name}
        reply: dict[str, Any] = await self.request(protocol.ADMIN_INTEGRATION, body)
        return reply
