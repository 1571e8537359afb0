"""The engine on NATS: a ``nats.micro`` service around ``EngineCore``.

Each request is handled in its own task: the micro endpoint callback returns at
once, so many requests wait on the same group commit instead of queueing
behind each other in the subscription.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.micro.request import Request
from nats.micro.service import Service, ServiceConfig

from engine import auth, limits, protocol, replyto, spec
from engine.core import EngineCore
from engine.core.routes import ROUTES
from engine.errors import SynvoiceError
from engine.events import Event
from engine.log import Record
from engine.messages import ErrorBody, ErrorReply, HeadNotice, encode
from engine.metrics import RequestMetrics

log = logging.getLogger("synvoice.service")


class EngineService:
    def __init__(self, core: EngineCore, nc: Client) -> None:
        self.core = core
        self.nc = nc
        self.service: Service | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.metrics = RequestMetrics()  # read by the console through the status reply
        cfg = core.config
        self.admission = limits.Admission(
            cfg.limit_per_device, cfg.limit_device_bytes, cfg.limit_request_bytes
        )
        self.pull_budget = limits.ByteBudget(cfg.limit_pull_bytes)

    async def start(self) -> None:
        from engine import __version__

        self.service = _InboxOnlyService(
            self.nc,
            ServiceConfig(
                name=protocol.SERVICE_NAME,
                version=__version__,
                description="Synvoice engine: event log, numbering, sync",
                metadata=spec.SERVICE_METADATA,
            ),
        )
        await self.service.start()
        for route in ROUTES:  # the core's routing table: one endpoint per route
            await self.service.add_endpoint(
                name=route.name,
                subject=route.subject,
                handler=self._dispatch,
                metadata=spec.endpoint_metadata(route.name),
            )
        await self._until_subscribed()
        self.core.listeners.append(self._notify_head)
        self.core.status_parts["metrics"] = self.metrics.snapshot

    async def _until_subscribed(self) -> None:
        """Ready means subscribed: return once the broker has the endpoints'
        subscriptions, so a request sent when start() returns finds the engine.

        ``nc.flush()`` is not enough: nats-py writes its PING straight to the
        socket, ahead of the SUBs still in its pending buffer, so the PONG can
        come back before the broker has them. A request to this instance's own
        PING subject queues behind the SUBs on the same connection, and the
        broker handles one connection's commands in order: its reply proves them.
        """
        assert self.service is not None
        subject = f"$SRV.PING.{protocol.SERVICE_NAME}.{self.service.id}"
        await self.nc.request(subject, b"", timeout=10)

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
        t0 = time.perf_counter()
        try:
            reply = await self.core.handle(req.subject, req.headers, req.data)
        except SynvoiceError as err:
            self.metrics.observe(req.subject, time.perf_counter() - t0, err.code)
            await _respond_error(req, err)
            return
        except Exception as exc:
            log.exception("request on %s failed", req.subject)
            self.metrics.observe(req.subject, time.perf_counter() - t0, "internal")
            await _respond_error(req, SynvoiceError("internal", f"{type(exc).__name__}: {exc}"))
            return
        self.metrics.observe(req.subject, time.perf_counter() - t0)
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
        task = asyncio.create_task(self.nc.publish(protocol.HEAD, encode(HeadNotice(head))))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _InboxOnlyService(Service):
    """nats.micro's service whose $SRV.PING/INFO/STATS answers go to inboxes only:
    devices and integrations may send them, and the engine publishes with its own
    broker rights (a reply subject naming the stream would have it write there).
    Integrations ask through their account's import, whose ``_R_.`` reply
    subjects lead back into that account alone."""

    async def _handle_ping_request(self, msg: Msg) -> None:
        if replyto.inbox_reply_allowed(msg.reply, imported=True):
            await super()._handle_ping_request(msg)

    async def _handle_info_request(self, msg: Msg) -> None:
        if replyto.inbox_reply_allowed(msg.reply, imported=True):
            await super()._handle_info_request(msg)

    async def _handle_stats_request(self, msg: Msg) -> None:
        if replyto.inbox_reply_allowed(msg.reply, imported=True):
            await super()._handle_stats_request(msg)


async def _respond_error(req: Request, err: SynvoiceError) -> None:
    try:
        body = encode(ErrorReply(ErrorBody(err.code, err.message, err.details)))
        await req.respond_error(str(err.status), err.message, data=body)
    except Exception:
        log.warning("could not send error reply on %s", req.subject)
