"""The device's connection to the engine: connect, reconnect, and its requests.

The one module of the device that talks to ``EngineClient``: it opens the
connection (credentials live in the enrollment), keeps reconnecting, listens
for head notices, runs the background worker (the sync loop) while connected,
and turns the engine's replies into what the device uses (``Pushed``, pages,
numbers). Broker trouble becomes ``SynvoiceError("unavailable")``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import nats.errors
from nats.aio.msg import Msg

from engine import codec, protocol
from engine.client import EngineClient, PulledPage
from engine.enrollment import Enrollment
from engine.errors import SynvoiceError

T = TypeVar("T")

# Refusals about one event's content: the sync path finds the event by splitting
# the batch, so they are not the connection's last error.
PER_EVENT_CODES = {"schema", "unknown_type", "too_large", "forbidden", "bad_request"}


@dataclass(frozen=True)
class Pushed:
    """The engine's answer to one push."""

    acks: list[tuple[str, int]]  # (event id, position), new or already stored
    duplicates: int  # of those, events the engine already had (a retry)
    head: int


class Connection:
    """One device's connection; ``worker`` (the sync loop) runs while it is up."""

    def __init__(
        self,
        enrollment: Enrollment,
        *,
        request_timeout: float,
        reconnect_wait: float,
        on_head: Callable[[int], None],
        on_reconnect: Callable[[], None],
        worker: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self.enrollment = enrollment
        self.request_timeout = request_timeout
        self.reconnect_wait = reconnect_wait
        self._on_head_number = on_head
        self._on_reconnect = on_reconnect
        # None: no head notices and no background work (one-shot CLI commands,
        # controlled tests); the caller syncs explicitly.
        self._worker = worker
        self.last_error: str | None = None
        self.stopping = False  # disconnect() in progress: the worker must end
        self._client: EngineClient | None = None
        self._connector: asyncio.Task[None] | None = None
        self._worker_task: asyncio.Task[None] | None = None

    @property
    def online(self) -> bool:
        return self._client is not None and self._client.nc.is_connected

    async def connect(self, timeout: float) -> bool:
        """Go online; whether the broker answered within ``timeout``. If it did not,
        the connection keeps trying in the background. Never raises because the
        broker or the engine is down."""
        if self._client is not None and self._client.nc.is_closed:
            await self.disconnect()  # closed for good (not reconnecting): start afresh
        if self._client is None and (self._connector is None or self._connector.done()):
            self._connector = asyncio.create_task(self._connect_forever(), name="device-connect")
        if self._connector is not None and not self._connector.done():
            await asyncio.wait({self._connector}, timeout=timeout)
        return self.online

    async def _connect_forever(self) -> None:
        async def on_error(exc: Exception) -> None:
            self.last_error = f"broker: {exc}"

        async def on_reconnect() -> None:
            self._on_reconnect()

        try:
            # The one place the device opens its connection (credentials live there).
            client = await EngineClient.connect_enrolled(
                self.enrollment,
                timeout=self.request_timeout,
                name=f"synvoice-device-{self.enrollment.device_id}",
                max_reconnect_attempts=-1,  # retry the first connection and every later one
                reconnect_time_wait=self.reconnect_wait,
                connect_timeout=2,
                error_cb=on_error,
                reconnected_cb=on_reconnect,
            )
        except Exception as exc:  # e.g. a URL that can never work
            self.last_error = f"cannot connect to {self.enrollment.url}: {exc}"
            return
        self._client = client
        if self._worker is not None:
            await client.nc.subscribe(protocol.HEAD, cb=self._on_head)
            self._worker_task = asyncio.create_task(self._worker(), name="device-sync")
            self._on_reconnect()

    async def disconnect(self) -> None:
        """Go offline on purpose (stop reconnecting, stop the worker)."""
        self.stopping = True
        try:
            for task in (self._connector, self._worker_task):
                if task is not None:
                    await _stop(task)
        finally:
            self.stopping = False
        self._connector = self._worker_task = None
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.nc.close(), 5)
            except Exception:
                pass

    async def _on_head(self, msg: Msg) -> None:
        try:
            head = int(codec.unpack(msg.data)["head"])
        except Exception:
            return
        self._on_head_number(head)

    # --- requests -----------------------------------------------------------------------

    def _connected(self) -> EngineClient:
        client = self._client
        if client is None or not client.nc.is_connected:
            raise SynvoiceError("unavailable", "offline: not connected to the broker")
        return client

    def _opened(self) -> EngineClient:
        # A sync keeps using the connection it started with while it reconnects.
        client = self._client
        if client is None:
            raise SynvoiceError("unavailable", "offline: not connected to the broker")
        return client

    def require_online(self) -> None:
        self._connected()

    async def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """A request; broker trouble becomes ``unavailable`` (retry later)."""
        try:
            return await coro
        except SynvoiceError as exc:
            if exc.code not in PER_EVENT_CODES:  # those are handled event by event
                self.last_error = str(exc)
            raise
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            self.last_error = f"unavailable: {type(exc).__name__}"
            raise SynvoiceError("unavailable", f"broker: {type(exc).__name__} {exc}") from None

    async def push(self, bodies: Sequence[bytes]) -> Pushed:
        """Push stored events (their msgpack wire maps) in one request."""
        client = self._opened()
        reply = await self._call(client.push([codec.unpack(b) for b in bodies]))
        acks = [(r.event_id, r.position) for r in reply.results]
        dup = sum(1 for r in reply.results if r.duplicate)
        return Pushed(acks, dup, reply.head)

    async def pull_page(self, after: int, limit: int, hashes: bool = False) -> PulledPage:
        client = self._opened()
        return await self._call(client.pull_page(after=after, limit=limit, hashes=hashes))

    async def next_numbers(self, items: Sequence[tuple[str, uuid.UUID]]) -> list[int]:
        """Centralized numbers for these documents (the engine logs each one)."""
        client = self._connected()
        return await self._call(client.next_numbers(items))


async def _stop(task: asyncio.Task[Any]) -> None:
    """Cancel a task and wait for its end. Cancels again if a cancellation was
    swallowed (``asyncio.wait_for`` can do that on Python 3.11 when its inner
    awaitable completes at the same moment)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled():
        task.exception()  # retrieved: its failure was already recorded
