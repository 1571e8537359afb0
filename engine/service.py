"""The engine on NATS: a ``nats.micro`` service around ``EngineCore``.

Each request is handled in its own task: the micro endpoint callback returns at
once, so many requests wait on the same group commit instead of queueing
behind each other in the subscription.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

from engine import auth, codec, limits, protocol, replyto
from engine.core import EngineCore
from engine.errors import SynvoiceError
from engine.events import Event
from engine.log import Record

log = logging.getLogger("synvoice.service")

ENDPOINTS = {
    "push": protocol.PUSH,
    "pull": protocol.PULL,
    "numbers": protocol.NUMBERS,
    "status": protocol.STATUS,
    "admin-enroll": protocol.ADMIN_ENROLL,
    "admin-revoke": protocol.ADMIN_REVOKE,
    "admin-mode": protocol.ADMIN_MODE,
    "admin-register": protocol.ADMIN_REGISTER,
    "admin-integration": protocol.ADMIN_INTEGRATION,
}


class EngineService:
    def __init__(self, core: EngineCore, nc: Client) -> None:
        self.core = core
        self.nc = nc
        self.service: Service | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        cfg = core.config
        self.admission = limits.Admission(
            cfg.limit_per_device, cfg.limit_device_bytes, cfg.limit_request_bytes
        )
        self.pull_budget = limits.ByteBudget(cfg.limit_pull_bytes)

    async def start(self) -> None:
        from engine import __version__

        self.service = await add_service(
            self.nc,
            name=protocol.SERVICE_NAME,
            version=__version__,
            description="Synvoice engine: event log, numbering, sync",
        )
        for name, subject in ENDPOINTS.items():
            await self.service.add_endpoint(name=name, subject=subject, handler=self._dispatch)
        self.core.listeners.append(self._notify_head)

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()
            self.service = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _dispatch(self, req: Request) -> None:
        reply = req._msg.reply  # micro's Request does not expose it
        if not replyto.reply_allowed(reply, req.headers):
            # Replies go to the caller's own inbox only: the engine publishes with
            # its own broker rights (see engine.replyto).
            log.warning("request on %s with reply subject %r ignored", req.subject, reply[:80])
            return
        # Admitted before any work (engine.limits): a flooding device gets
        # 'limit' at once and cannot starve the others.
        device = (req.headers or {}).get(auth.HDR_DEVICE, "")
        size = len(req.data)
        try:
            self.admission.admit(device, size)
        except SynvoiceError as err:
            self._spawn(_respond_error(req, err))
            return
        self._spawn(self._handle(req, device, size))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, req: Request, device: str, size: int) -> None:
        try:
            if req.subject == protocol.PULL:
                # A pull page is the engine's big allocation: bounded in bytes.
                async with self.pull_budget.hold(self.core.config.pull_max_bytes):
                    await self._answer(req)
            else:
                await self._answer(req)
        finally:
            self.admission.release(device, size)

    async def _answer(self, req: Request) -> None:
        try:
            reply = await self.core.handle(req.subject, req.headers, req.data)
        except SynvoiceError as err:
            await _respond_error(req, err)
            return
        except Exception as exc:
            log.exception("request on %s failed", req.subject)
            await _respond_error(req, SynvoiceError("internal", f"{type(exc).__name__}: {exc}"))
            return
        if len(reply) > self.nc.max_payload:
            too_big = f"the reply ({len(reply)} bytes) exceeds the broker's limit"
            await _respond_error(req, SynvoiceError("too_large", too_big))
            return
        try:
            await req.respond(reply)
        except Exception:
            log.warning("could not reply on %s", req.subject)

    def _notify_head(self, sealed: Sequence[tuple[Event, Record]]) -> None:
        head = sealed[-1][1].position
        task = asyncio.create_task(self.nc.publish(protocol.HEAD, codec.pack({"head": head})))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _respond_error(req: Request, err: SynvoiceError) -> None:
    try:
        await req.respond_error(str(err.status), err.message, data=codec.pack(err.to_wire()))
    except Exception:
        log.warning("could not send error reply on %s", req.subject)
