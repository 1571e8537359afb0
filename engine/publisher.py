"""Publishes committed events to JetStream, in log order, at least once.

The log is the source of truth; the stream is how integrations follow it. A
published high-water mark (``meta.published``) is advanced only after
JetStream acknowledged a batch. At start-up the mark is also raised to the
position in the stream's last message, then everything after it is
(re)published: nothing committed is ever missed, and ``Nats-Msg-Id`` (the event
id) lets JetStream drop the rare re-publish inside its duplicate window;
integrations de-duplicate by event id beyond it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from engine import codec, protocol
from engine.core import EngineCore
from engine.events import Event
from engine.log import Record

log = logging.getLogger("synvoice.publisher")


async def ensure_stream(js: JetStreamContext, replicas: int = 1) -> None:
    cfg = StreamConfig(
        name=protocol.STREAM,
        subjects=[protocol.LOG_SUBJECTS],
        storage=StorageType.FILE,
        duplicate_window=600.0,
        num_replicas=replicas,
    )
    try:
        await js.stream_info(protocol.STREAM)
        await js.update_stream(cfg)
    except NotFoundError:
        await js.add_stream(cfg)


class Publisher:
    def __init__(self, core: EngineCore, nc: Client, batch: int = 2000) -> None:
        self.core = core
        self.nc = nc
        self.js = nc.jetstream(publish_async_max_pending=batch * 2)
        self.batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.hwm = 0

    async def start(self) -> None:
        await ensure_stream(self.js, self.core.config.stream_replicas)
        raw = await self.core.log.get_meta("published")
        self.hwm = int(codec.unpack(raw)) if raw else 0
        self.hwm = max(self.hwm, await self._stream_last_position())
        self.core.published = self.hwm
        self.core.listeners.append(self._on_commit)
        self._wake.set()
        self._task = asyncio.create_task(self._run(), name="synvoice-publisher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until everything committed so far is published (tests, shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.hwm < self.core.log.head:
            if loop.time() > deadline:
                raise TimeoutError(f"published {self.hwm} of {self.core.log.head}")
            await asyncio.sleep(0.01)

    def _on_commit(self, sealed: Sequence[tuple[Event, Record]]) -> None:
        self._wake.set()

    async def _stream_last_position(self) -> int:
        info = await self.js.stream_info(protocol.STREAM)
        if not info.state.last_seq:
            return 0
        msg = await self.js.get_msg(protocol.STREAM, info.state.last_seq)
        pos = (msg.headers or {}).get(protocol.HDR_POSITION)
        return int(pos) if pos else 0

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.hwm < self.core.log.head:
                try:
                    await self._publish_some()
                    backoff = 0.1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("publishing to JetStream failed (%s); retrying", exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)

    async def _publish_some(self) -> None:
        records = await self.core.log.read(self.hwm, self.batch)
        if not records:
            return
        futures = []
        for r in records:
            ev = codec.unpack(r.body)
            futures.append(
                await self.js.publish_async(
                    protocol.log_subject(ev.get("kind"), ev["type"]),
                    r.body,
                    headers={
                        "Nats-Msg-Id": ev["event_id"],
                        protocol.HDR_POSITION: str(r.position),
                        protocol.HDR_HASH: r.hash.hex(),
                    },
                )
            )
        await asyncio.wait_for(asyncio.gather(*futures), timeout=30)
        self.hwm = records[-1].position
        self.core.published = self.hwm
        await self.core.log.set_meta("published", codec.pack(self.hwm))
