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
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from engine import codec, protocol
from engine.core import EngineCore
from engine.events import Event
from engine.log import Record

log = logging.getLogger("synvoice.publisher")

SAVE_EVERY = 1.0  # seconds between writes of the published mark to the log
STUCK_AFTER = 5.0  # seconds of failed publishing before ``on_stuck`` is called
ACK_WAIT = 10.0  # seconds a batch's acknowledgements may take


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
    def __init__(
        self,
        core: EngineCore,
        nc: Client,
        batch: int = 2000,
        on_stuck: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.core = core
        # Called (at most every STUCK_AFTER seconds) while publishing keeps
        # failing: the server may repair its broker (engine.server).
        self.on_stuck = on_stuck
        self._failing_since: float | None = None
        self.nc = nc
        self.js = nc.jetstream(publish_async_max_pending=batch * 2)
        self.batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.hwm = 0
        self._saved_at = float("-inf")  # loop time the mark was last written to the log
        self._pending: deque[_Outgoing] = deque()
        # Stream sequence after our last verified batch (None: unknown, use acks).
        self._stream_seq: int | None = None
        self._resync = False  # a publish failed: check the stream before the next one

    async def start(self) -> None:
        await ensure_stream(self.js, self.core.config.stream_replicas)
        raw = await self.core.log.get_meta("published")
        saved = int(codec.unpack(raw)) if raw else 0
        # The stream's last message, when it is provably this log's record, says
        # exactly where publishing stands: past the saved mark after a crash, or
        # before it when the broker lost its unsynced tail (re-published). Else
        # (stream purged or emptied by retention, or another log's) the saved
        # mark, never past this log's head.
        at = await self._stream_last_position()
        self.hwm = at if at is not None else min(saved, self.core.log.head)
        if at is None and saved > self.core.log.head:
            log.warning(
                "published mark %d is past the log head %d (a restored log?)",
                saved,
                self.core.log.head,
            )
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
            try:
                await self._save_hwm(asyncio.get_running_loop().time())
            except Exception:
                log.warning("published mark not saved (recovered from the stream at start)")

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until everything committed so far is published (tests, shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.hwm < self.core.log.head:
            if loop.time() > deadline:
                raise TimeoutError(f"published {self.hwm} of {self.core.log.head}")
            await asyncio.sleep(0.01)

    def _on_commit(self, sealed: Sequence[tuple[Event, Record]]) -> None:
        # Keep what was just committed in memory, so the common case publishes
        # without reading the log back or decoding bodies.
        first = sealed[0][1].position
        expected = self._pending[-1].position + 1 if self._pending else self.hwm + 1
        if first == expected and len(self._pending) < self.batch * 50:
            self._pending.extend(
                _Outgoing(
                    r.position,
                    protocol.log_subject(ev.kind, ev.type),
                    r.body,
                    ev.id_text,
                    r.hash.hex(),
                )
                for ev, r in sealed
            )
        else:
            self._pending.clear()  # fall back to reading the log
        self._wake.set()

    async def _stream_last_position(self) -> int | None:
        """The log position of the stream's last message if it is this log's record
        (same position and chain hash), else None."""
        info = await self.js.stream_info(protocol.STREAM)
        if not info.state.last_seq:
            return None
        try:
            msg = await self.js.get_msg(protocol.STREAM, info.state.last_seq)
        except NotFoundError:  # deleted, or purged since the stream info
            return None
        headers = msg.headers or {}
        try:
            pos = int(headers.get(protocol.HDR_POSITION) or 0)
        except ValueError:
            return None
        if not 0 < pos <= self.core.log.head:
            return None
        records = await self.core.log.read(pos - 1, 1)
        if not records or records[0].hash.hex() != headers.get(protocol.HDR_HASH):
            return None
        return pos

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.hwm < self.core.log.head:
                try:
                    await self._publish_some()
                    backoff = 0.1
                    self._failing_since = None
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("publishing to JetStream failed (%r); retrying", exc)
                    self._resync = True
                    await self._failed()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)

    async def _failed(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._failing_since is None:
            self._failing_since = now
        elif self.on_stuck is not None and now - self._failing_since >= STUCK_AFTER:
            self._failing_since = now
            try:
                await self.on_stuck()
            except Exception:
                log.exception("repairing the broker failed")

    async def _resume(self) -> None:
        """After a failure (broker restarted, its disk full, connection lost):
        the stream may hold less than we think (a broker that lost its unsynced
        tail, a store recreated) or more (acked, but the ack was lost). Start
        again from what the stream provably holds, as at start-up."""
        await ensure_stream(self.js, self.core.config.stream_replicas)
        at = await self._stream_last_position()
        if at is not None and at != self.hwm:
            log.info("publishing resumes at %d (was %d)", at, self.hwm)
            self.hwm = at
            self.core.published = at
        self._pending.clear()
        self._stream_seq = None  # the next batch is acknowledged message by message
        self._resync = False

    async def _publish_some(self) -> None:
        if self._resync:
            await self._resume()
        while self._pending and self._pending[0].position <= self.hwm:
            self._pending.popleft()
        if self._pending and self._pending[0].position == self.hwm + 1:
            items = [self._pending.popleft() for _ in range(min(self.batch, len(self._pending)))]
        else:
            self._pending.clear()
            records = await self.core.log.read(self.hwm, self.batch)
            if not records:
                return
            items = []
            for r in records:
                ev = codec.unpack(r.body)
                items.append(
                    _Outgoing(
                        r.position,
                        protocol.log_subject(ev.get("kind"), ev["type"]),
                        r.body,
                        ev["event_id"],
                        r.hash.hex(),
                    )
                )
        await self._send(items)
        self.hwm = items[-1].position
        self.core.published = self.hwm
        now = asyncio.get_running_loop().time()
        if now - self._saved_at >= SAVE_EVERY:
            await self._save_hwm(now)

    async def _save_hwm(self, now: float) -> None:
        # A hint, not a guarantee: at start the mark is raised to the stream's
        # last message anyway. Writing it per batch cost a log write (and its
        # fsync) per commit under small commits.
        self._saved_at = now
        await self.core.log.set_meta("published", codec.pack(self.hwm))

    async def _send(self, items: list[_Outgoing]) -> None:
        """Publish a batch in order and make sure JetStream stored all of it.

        Fast path: all but the last message as plain publishes on this one
        connection (the server stores them in order), the last with an awaited
        JetStream ack. If the ack's stream sequence moved by exactly the batch
        size, every message was stored. Otherwise (a duplicate dropped, a gap,
        first batch after start) fall back to an acknowledged publish of each
        message; ``Nats-Msg-Id`` makes the repeats harmless.
        """
        if self._stream_seq is not None:
            await self._send_plain(items[:-1])
            last = items[-1]
            ack = await self.js.publish(last.subject, last.body, headers=last.headers())
            if not ack.duplicate and ack.seq - self._stream_seq == len(items):
                self._stream_seq = ack.seq
                return
        futures = [
            await self.js.publish_async(it.subject, it.body, headers=it.headers()) for it in items
        ]
        acks = await asyncio.wait_for(asyncio.gather(*futures), timeout=ACK_WAIT)
        info = await self.js.stream_info(protocol.STREAM)
        self._stream_seq = info.state.last_seq if acks else self._stream_seq

    async def _send_plain(self, items: list[_Outgoing]) -> None:
        """Plain (unacknowledged) publishes, in order, on this connection.

        nats-py's ``publish`` spends ~10 µs per message on header checks and
        encoding; our headers are known-good ASCII, so the HPUB commands are
        written in one piece through the client's own send buffer when it has
        one (``_send_command``, the call ``publish`` ends in). Whatever happens
        to them, the stream-sequence check in ``_send`` verifies the batch.
        """
        send = getattr(self.nc, "_send_command", None)
        if send is None:  # another nats-py: the public, slower way
            for it in items:
                await self.nc.publish(it.subject, it.body, headers=it.headers())
            return
        if items:
            await send(b"".join(it.hpub() for it in items))
            # Kick the client's flusher as ``publish`` does (only if not already kicked).
            queue = getattr(self.nc, "_flush_queue", None)
            if queue is not None and queue.empty():
                await self.nc._flush_pending()


_HDR = (
    f"NATS/1.0\r\nNats-Msg-Id: %s\r\n{protocol.HDR_POSITION}: %d\r\n{protocol.HDR_HASH}: %s\r\n\r\n"
).encode()


@dataclass(slots=True)  # not frozen: one per published event, frozen __init__ is slow
class _Outgoing:
    position: int
    subject: str
    body: bytes
    event_id: str
    hash_hex: str

    def headers(self) -> dict[str, str]:
        return {
            "Nats-Msg-Id": self.event_id,
            protocol.HDR_POSITION: str(self.position),
            protocol.HDR_HASH: self.hash_hex,
        }

    def hpub(self) -> bytes:
        """This message as a NATS ``HPUB`` protocol command (see ``headers``)."""
        hdr = _HDR % (self.event_id.encode(), self.position, self.hash_hex.encode())
        return b"HPUB %s %d %d\r\n%s%s\r\n" % (
            self.subject.encode(),
            len(hdr),
            len(hdr) + len(self.body),
            hdr,
            self.body,
        )
