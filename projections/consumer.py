"""Follow the engine's stream in log order from a checkpoint: the integrations' helper.

JetStream delivers every committed event at least once, and after a consumer
restarts, the messages it had not acknowledged are redelivered *after* newer
ones. Skipping event ids already seen is therefore not enough: an older edit
redelivered after a newer one would win. The rule (README, Integrator's
guide): apply events in ``Synvoice-Position`` order, exactly once, from a
checkpoint stored in the same transaction as their effect.

- ``Sequencer``: rows in any order, duplicates allowed, in; the rows that
  extend the checkpoint, in order, out. Rows after a hole are held until the
  hole is filled: by a redelivery, or at once by ``fill`` (e.g. the engine's
  pull endpoint, ``projections.follow.engine_filler``, for a device token's
  holder). With the checkpoint's hash it verifies every hash link too.
- ``StreamConsumer``: a durable pull consumer on ``SYNVOICE_EVENTS`` (explicit
  acks) feeding a ``Sink``: each batch goes through the sequencer to
  ``sink.apply(rows)``, and only the messages at or below the sink's
  checkpoint are acknowledged (the held ones come again if the process dies).

The standalone projection (``projections.standalone``) and the live views'
``Follower`` use the same hole filling.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from engine import protocol
from engine.hashchain import ChainVerifier
from engine.stored import StoredEventError

log = logging.getLogger("synvoice.projections.consumer")

Row = tuple[int, bytes, bytes]  # (position, stored body, chain hash)
# fill(after, upto): the records after ``after`` up to ``upto`` (at least the first one).
Filler = Callable[[int, int], Awaitable[Sequence[Row]]]


async def fill_hole(fill: Filler, after: int, upto: int) -> list[Row]:
    """Positions ``after+1 .. upto`` from ``fill``, in order, all of them, or raise."""
    out: list[Row] = []
    while after < upto:
        got = [r for r in await fill(after, upto) if after < r[0] <= upto]
        if not got or got[0][0] != after + 1:
            raise StoredEventError(
                after + 1,
                f"hole {after + 1}..{upto}: the engine did not return position {after + 1}",
            )
        for r in got:
            if r[0] != after + 1:
                raise StoredEventError(after + 1, "the engine returned records out of order")
            out.append(r)
            after = r[0]
    return out


def row_of(msg: Msg) -> Row | None:
    """A stream message as a row, from its Synvoice-Position and Synvoice-Hash headers."""
    hdr = msg.headers or {}
    try:
        return int(hdr[protocol.HDR_POSITION]), msg.data, bytes.fromhex(hdr[protocol.HDR_HASH])
    except (KeyError, ValueError):
        return None


class Sequencer:
    """Rows in, in any order; the next rows after the checkpoint out, in order."""

    def __init__(
        self, position: int, last_hash: bytes | None = None, fill: Filler | None = None
    ) -> None:
        self.position = position  # the last position handed out
        self.last_hash = last_hash  # its hash (None: links are not verified)
        self.fill = fill
        self.held: dict[int, Row] = {}
        self.filled = 0  # rows fetched by ``fill``

    def reset(self, position: int, last_hash: bytes | None = None) -> None:
        """Back to a checkpoint (after the sink failed to apply what it was given)."""
        self.position = position
        self.last_hash = last_hash
        self.held.clear()

    async def take(self, rows: Sequence[Row]) -> list[Row]:
        for r in rows:
            if r[0] > self.position:
                self.held.setdefault(r[0], r)
        out: list[Row] = []
        nxt = self.position + 1
        while self.held:
            row = self.held.pop(nxt, None)
            if row is None:
                if self.fill is None:
                    break  # wait for the redelivery
                upto = min(self.held) - 1
                got = await fill_hole(self.fill, nxt - 1, upto)
                self.filled += len(got)
                out.extend(got)
                nxt = upto + 1
                continue
            out.append(row)
            nxt += 1
        if out and self.last_hash is not None:
            verifier = ChainVerifier(self.last_hash, self.position + 1)
            for pos, body, h in out:
                broken = verifier.feed(pos, body, h)
                if broken is not None:
                    self.held.clear()
                    raise StoredEventError(broken.position, f"hash chain broken: {broken.reason}")
            self.last_hash = out[-1][2]
        self.position = nxt - 1
        return out

    @property
    def waiting_for(self) -> tuple[int, int] | None:
        """The hole rows are held behind (first, last missing position), if any."""
        if not self.held:
            return None
        return self.position + 1, min(self.held) - 1


class Sink(Protocol):
    """Where an integration applies events. ``apply`` gets rows in position order,
    each exactly once, and must store their effect and the new checkpoint (the
    last row's position and hash) in one transaction before it returns."""

    @property
    def position(self) -> int: ...

    async def apply(self, rows: Sequence[Row]) -> None: ...


class StreamConsumer:
    """A durable pull consumer on the stream, applying in order through a ``Sink``."""

    def __init__(
        self,
        js: JetStreamContext,
        durable: str,
        sink: Sink,
        *,
        last_hash: bytes | None = None,
        fill: Filler | None = None,
        batch: int = 1000,
        ack_wait: float = 30.0,
    ) -> None:
        self.js = js
        self.durable = durable
        self.sink = sink
        self.batch = batch
        self.ack_wait = ack_wait
        self.sequencer = Sequencer(sink.position, last_hash, fill)
        self._unacked: list[tuple[int, Msg]] = []
        self._sub: Any = None

    async def open(self) -> None:
        self._sub = await self.js.pull_subscribe(
            protocol.LOG_SUBJECTS,
            durable=self.durable,
            stream=protocol.STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=self.ack_wait,
                max_ack_pending=max(4 * self.batch, 1000),
            ),
        )

    async def step(self, timeout: float = 1.0) -> int:
        """Fetch one batch and apply what it makes ready; returns the checkpoint."""
        if self._sub is None:
            await self.open()
        try:
            msgs = await self._sub.fetch(self.batch, timeout=timeout)
        except (TimeoutError, NatsTimeout):
            msgs = []
        await self.process(msgs)
        return self.sink.position

    async def process(self, msgs: Sequence[Msg]) -> None:
        rows: list[Row] = []
        for m in msgs:
            row = row_of(m)
            if row is None:
                log.warning("message on %s without Synvoice position/hash headers", m.subject)
                await m.ack()
                continue
            rows.append(row)
            self._unacked.append((row[0], m))
        ready = await self.sequencer.take(rows)
        if ready:
            try:
                await self.sink.apply(ready)
            except BaseException:
                self.sequencer.reset(self.sink.position)  # the messages come again
                raise
        done = self.sink.position
        keep: list[tuple[int, Msg]] = []
        for pos, m in self._unacked:
            if pos <= done:
                await m.ack()
            else:
                keep.append((pos, m))
        self._unacked = keep

    async def run(self, stop: asyncio.Event, idle: float = 1.0) -> None:
        while not stop.is_set():
            await self.step(idle)

    async def run_until(self, position: int, timeout: float = 60.0) -> None:
        """Apply up to ``position`` (tests and one-shot exports)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.sink.position < position:
            if loop.time() > deadline:
                raise TimeoutError(
                    f"at {self.sink.position} of {position} after {timeout}s "
                    f"(waiting for {self.sequencer.waiting_for})"
                )
            await self.step(0.5)
