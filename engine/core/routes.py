"""The protocol's one routing table: subject -> handler, admin flag, message types.

``EngineCore.handle`` dispatches by it and ``engine.service`` serves each route
as a ``nats.micro`` endpoint, so a new endpoint is one row here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from msgspec import Struct

from engine import messages as m
from engine import protocol
from engine.core import admin, numbers, pull, push, requests, status
from engine.core.base import Caller

if TYPE_CHECKING:
    from engine.core.engine import EngineCore

Handler = Callable[["EngineCore", Caller, Any], Awaitable[Struct | bytes]]

ADMIN_PREFIX = f"{protocol.PREFIX}.admin."


@dataclass(frozen=True)
class Route:
    name: str  # the nats.micro endpoint's name
    subject: str
    request: type[Struct]
    reply: Any  # a Struct type, or a union of them (admin.integration)
    # The request map as its message type; None: the handler takes the raw body.
    decode: Callable[[dict[str, Any]], Struct] | None
    handle: Handler
    admin: bool = False  # needs the admin credential
    # Refusals that come before the request's fields are read.
    check: Callable[[EngineCore, Caller], None] | None = None


async def _status(core: EngineCore, caller: Caller, req: m.StatusRequest) -> m.StatusReply:
    return status.status(core)


async def _enroll(core: EngineCore, caller: Caller, req: m.EnrollRequest) -> m.EnrollReply:
    return await admin.enroll(core, req.user, req.name)


async def _revoke(core: EngineCore, caller: Caller, req: m.RevokeRequest) -> m.RevokeReply:
    return await admin.revoke(core, req.device_id, req.reason)


async def _mode(core: EngineCore, caller: Caller, req: m.ModeRequest) -> m.ModeReply:
    return await admin.set_mode(core, req.mode, req.force, req.team)


async def _numbering(core: EngineCore, caller: Caller, req: m.NumberingRequest) -> m.NumberingReply:
    return await admin.set_numbering(core, req.team, req.kind, req.pattern, req.reset, req.tz)


async def _register(core: EngineCore, caller: Caller, req: m.RegisterRequest) -> m.RegisterReply:
    return await admin.register(core, req.key)


async def _integration(
    core: EngineCore, caller: Caller, req: m.IntegrationRequest
) -> m.IntegrationReply:
    return await admin.integration(core, req.action, req.name)


ROUTES: tuple[Route, ...] = (
    Route("push", protocol.PUSH, m.PushRequest, m.PushReply, None, push.push_body),
    Route("pull", protocol.PULL, m.PullRequest, m.PullReply, requests.decode_pull, pull.pull),
    Route(
        "numbers",
        protocol.NUMBERS,
        m.NumbersRequest,
        m.NumbersReply,
        requests.decode_numbers,
        numbers.numbers,
        check=numbers.check_numbers,
    ),
    Route(
        "status", protocol.STATUS, m.StatusRequest, m.StatusReply, requests.decode_status, _status
    ),
    Route(
        "admin-enroll",
        protocol.ADMIN_ENROLL,
        m.EnrollRequest,
        m.EnrollReply,
        requests.decode_enroll,
        _enroll,
        admin=True,
    ),
    Route(
        "admin-revoke",
        protocol.ADMIN_REVOKE,
        m.RevokeRequest,
        m.RevokeReply,
        requests.decode_revoke,
        _revoke,
        admin=True,
    ),
    Route(
        "admin-mode",
        protocol.ADMIN_MODE,
        m.ModeRequest,
        m.ModeReply,
        requests.decode_mode,
        _mode,
        admin=True,
    ),
    Route(
        "admin-numbering",
        protocol.ADMIN_NUMBERING,
        m.NumberingRequest,
        m.NumberingReply,
        requests.decode_numbering,
        _numbering,
        admin=True,
    ),
    Route(
        "admin-register",
        protocol.ADMIN_REGISTER,
        m.RegisterRequest,
        m.RegisterReply,
        requests.decode_register,
        _register,
        admin=True,
    ),
    Route(
        "admin-integration",
        protocol.ADMIN_INTEGRATION,
        m.IntegrationRequest,
        m.IntegrationReply,
        requests.decode_integration,
        _integration,
        admin=True,
    ),
)

BY_SUBJECT: dict[str, Route] = {r.subject: r for r in ROUTES}
