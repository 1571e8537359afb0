"""A signed request/reply client for the engine (devices, CLI, tests, benchmarks)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Literal, TypeVar, overload

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
from engine.messages import (
    EnrollReply,
    IntegrationCredentials,
    IntegrationList,
    IntegrationRemovedReply,
    IntegrationReply,
    ModeReply,
    NumberingReply,
    NumbersReply,
    PulledPage,
    PullReply,
    PushReply,
    RegisterReply,
    RevokeReply,
    StatusReply,
)
from engine.natsproc import server_list

__all__ = ["EngineClient", "PulledPage"]

_R = TypeVar("_R", bound=msgspec.Struct)

# Replies as plain objects, like codec.unpack but about twice as fast on big pages.
_decode_any = msgspec.msgpack.Decoder().decode
_decoders: dict[type[Any], Any] = {}


def _decode(cls: type[_R], data: bytes, what: str) -> _R:
    """A reply as its message type; a refusal raises its error."""
    dec = _decoders.get(cls)
    if dec is None:
        dec = _decoders[cls] = msgspec.msgpack.Decoder(cls)
    try:
        result: _R = dec.decode(data)
        return result
    except msgspec.DecodeError as exc:  # also a ValidationError
        try:  # a refusal is a map too, only not this reply
            reply = _decode_any(data)
        except msgspec.DecodeError:
            reply = None
        _raise_refusal(reply)
        raise SynvoiceError("internal", f"malformed {what} reply: {exc}") from None


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
        """The reply as a plain msgpack value (tools and tests; the typed methods
        below are the API)."""
        msg = await self._send(subject, body)
        reply = codec.unpack(msg.data) if msg.data else {}
        _raise_refusal(reply)
        return reply

    async def request(self, subject: str, payload: dict[str, Any]) -> Any:
        return await self.request_raw(subject, codec.pack(payload))

    async def _call(self, cls: type[_R], subject: str, payload: dict[str, Any]) -> _R:
        msg = await self._send(subject, codec.pack(payload))
        return _decode(cls, msg.data, subject.rsplit(".", 1)[-1])

    async def push(self, events: Sequence[Event | dict[str, Any]]) -> PushReply:
        wire = [e.to_wire() if isinstance(e, Event) else e for e in events]
        return await self._call(PushReply, protocol.PUSH, {"events": wire})

    async def pull(self, after: int, limit: int = 5000, hashes: bool = False) -> PullReply:
        """A page of the log after ``after``, events decoded into plain maps."""
        body = {"after": after, "limit": limit, "hashes": hashes}
        return await self._call(PullReply, protocol.PULL, body)

    async def pull_page(self, after: int, limit: int = 5000, hashes: bool = False) -> PulledPage:
        """The same page with its events left as their stored bytes (see ``PulledPage``)."""
        body = {"after": after, "limit": limit, "hashes": hashes}
        return await self._call(PulledPage, protocol.PULL, body)

    async def next_numbers(
        self, items: Iterable[tuple[str, uuid.UUID]], fresh: bool = False
    ) -> list[int]:
        body = {
            "items": [{"kind": k, "doc_id": str(d), "fresh": fresh} for k, d in items],
        }
        return (await self._call(NumbersReply, protocol.NUMBERS, body)).numbers

    async def status(self) -> StatusReply:
        return await self._call(StatusReply, protocol.STATUS, {})

    # admin (needs the admin credential)
    async def enroll(self, user: str, name: str | None = None) -> EnrollReply:
        body = {"user": user, "name": name}
        return await self._call(EnrollReply, protocol.ADMIN_ENROLL, body)

    async def revoke(self, device_id: str, reason: str | None = None) -> RevokeReply:
        body = {"device_id": device_id, "reason": reason}
        return await self._call(RevokeReply, protocol.ADMIN_REVOKE, body)

    async def set_mode(self, mode: str, force: bool = False, team: int | None = None) -> ModeReply:
        body: dict[str, Any] = {"mode": mode, "force": force}
        if team is not None:
            body["team"] = team
        return await self._call(ModeReply, protocol.ADMIN_MODE, body)

    async def set_numbering(
        self,
        team: int | None = None,
        kind: str | None = None,
        pattern: str | None = None,
        reset: str = "never",
        tz: str = "UTC",
    ) -> NumberingReply:
        """The team size and/or one kind's number pattern (admin)."""
        body: dict[str, Any] = {"reset": reset, "tz": tz}
        if team is not None:
            body["team"] = team
        if kind is not None:
            body["kind"] = kind
        if pattern is not None:
            body["pattern"] = pattern
        return await self._call(NumberingReply, protocol.ADMIN_NUMBERING, body)

    async def register(self, key: str) -> RegisterReply:
        """Register an edition key (admin)."""
        return await self._call(RegisterReply, protocol.ADMIN_REGISTER, {"key": key})

    @overload
    async def integration(self, action: Literal["list"], name: None = None) -> IntegrationList: ...
    @overload
    async def integration(
        self, action: Literal["add"], name: str | None
    ) -> IntegrationCredentials: ...
    @overload
    async def integration(
        self, action: Literal["remove"], name: str | None
    ) -> IntegrationRemovedReply: ...
    @overload
    async def integration(self, action: str, name: str | None = None) -> IntegrationReply: ...

    async def integration(self, action: str, name: str | None = None) -> IntegrationReply:
        """add / remove / list integrations (admin); add returns broker credentials."""
        body = {"action": action, "name": name}
        cls: type[IntegrationReply] = _INTEGRATION_REPLIES.get(action, IntegrationList)
        return await self._call(cls, protocol.ADMIN_INTEGRATION, body)


_INTEGRATION_REPLIES: dict[str, type[IntegrationReply]] = {
    "list": IntegrationList,
    "add": IntegrationCredentials,
    "remove": IntegrationRemovedReply,
}


def plain(reply: msgspec.Struct) -> dict[str, Any]:
    """A typed reply as the plain map it is on the wire (for --json, tables, pages)."""
    out: dict[str, Any] = msgspec.to_builtins(reply)
    return out


def public_url(client: EngineClient) -> str:
    """The broker URL the client reached, without any user:password in it (a token
    must never carry the admin's or the engine's broker credentials)."""
    u = client.nc.connected_url
    assert u is not None
    host = u.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{u.scheme}://{host}:{u.port or 4222}"
