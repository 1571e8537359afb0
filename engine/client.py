"""A signed request/reply client for the engine (devices, CLI, tests, benchmarks)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from engine import auth, brokerauth, codec, protocol
from engine.enrollment import Enrollment
from engine.errors import SynvoiceError
from engine.events import Event
from engine.natsproc import server_list


class PulledPage(msgspec.Struct):
    """A pull reply with each event left as its stored msgpack bytes (``Raw`` views
    into the reply, no copy): a catch-up stores them as they are and decodes only
    the fields it needs."""

    head: int
    more: bool
    events: list[msgspec.Raw]
    hashes: list[bytes] | None = None


_decode_page = msgspec.msgpack.Decoder(PulledPage).decode
# Replies as plain objects, like codec.unpack but about twice as fast on big pages.
_decode_any = msgspec.msgpack.Decoder().decode


def _raise_refusal(reply: Any) -> None:
    if isinstance(reply, dict) and "error" in reply and isinstance(reply["error"], dict):
        e = reply["error"]
        raise SynvoiceError(str(e.get("code")), str(e.get("message")), e.get("details"))


def inbox_option(device_id: str) -> dict[str, str]:
    """``nats.connect`` option for a connection that makes requests as ``device_id``:
    the engine replies only into the caller's own inbox (``engine.replyto``)."""
    if device_id == protocol.ADMIN_DEVICE:
        return {"inbox_prefix": protocol.ADMIN_INBOX}
    prefix = brokerauth.inbox_prefix(device_id)
    return {"inbox_prefix": prefix} if prefix is not None else {}


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
        nc = await nats.connect(server_list(url), **{**inbox_option(device_id), **opts})
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

    async def _send(self, subject: str, body: bytes) -> Msg:
        headers = auth.sign(self.device_id, self.secret, subject, body)
        try:
            return await self.nc.request(subject, body, timeout=self.timeout, headers=headers)
        except NoRespondersError:
            raise SynvoiceError("unavailable", "no engine is answering on the broker") from None
        except NatsTimeout:
            raise SynvoiceError("unavailable", f"engine did not answer {subject} in time") from None

    async def request_raw(self, subject: str, body: bytes) -> Any:
        msg = await self._send(subject, body)
        reply = codec.unpack(msg.data) if msg.data else {}
        _raise_refusal(reply)
        return reply

    async def request(self, subject: str, payload: dict[str, Any]) -> Any:
        return await self.request_raw(subject, codec.pack(payload))

    async def push(self, events: Sequence[Event | dict[str, Any]]) -> dict[str, Any]:
        wire = [e.to_wire() if isinstance(e, Event) else e for e in events]
        reply: dict[str, Any] = await self.request(protocol.PUSH, {"events": wire})
        return reply

    async def pull(self, after: int, limit: int = 5000, hashes: bool = False) -> dict[str, Any]:
        """A page of the log after ``after``, events decoded into plain maps."""
        body = codec.pack({"after": after, "limit": limit, "hashes": hashes})
        msg = await self._send(protocol.PULL, body)
        try:
            reply = _decode_any(msg.data)
        except msgspec.DecodeError as exc:
            raise SynvoiceError("internal", f"malformed pull reply: {exc}") from None
        _raise_refusal(reply)
        if not isinstance(reply, dict) or not isinstance(reply.get("events"), list):
            raise SynvoiceError("internal", "malformed pull reply: no list of events")
        return reply

    async def pull_page(self, after: int, limit: int = 5000, hashes: bool = False) -> PulledPage:
        """The same page with its events left as their stored bytes (see ``PulledPage``)."""
        body = codec.pack({"after": after, "limit": limit, "hashes": hashes})
        msg = await self._send(protocol.PULL, body)
        try:
            return _decode_page(msg.data)
        except msgspec.DecodeError as exc:  # also a ValidationError
            try:  # a refusal is a map too, only not a page
                reply = _decode_any(msg.data)
            except msgspec.DecodeError:
                reply = None
            _raise_refusal(reply)
            raise SynvoiceError("internal", f"malformed pull reply: {exc}") from None

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
