"""The standalone projection: the engine's JetStream stream into a views file.

The model for integrations. A durable push consumer on ``SYNVOICE_EVENTS``
(message body = the stored msgpack event, headers ``Synvoice-Position`` and
``Synvoice-Hash``) delivers committed events at least once. Each batch goes
through ``Follower`` (skip what is at or below the checkpoint, fill holes from
the engine's pull endpoint, verify hash links, fold, one transaction with the
checkpoint) and only then is acknowledged (ack policy *all*: one ack covers the
batch). Killed at any point, it restarts from its checkpoint: first a pull from
the engine up to the head, then the stream, whose redeliveries are dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from engine import protocol
from engine.brokerauth import INTEGRATION_PREFIX
from engine.client import EngineClient, inbox_option
from engine.errors import SynvoiceError
from engine.server import connect_nats
from projections.consumer import row_of
from projections.follow import GAPS_EVERY, Follower, Row, engine_filler, pull_rows
from projections.store import ViewStore, lock_views

log = logging.getLogger("synvoice.projections.standalone")


class StandaloneProjection:
    def __init__(
        self,
        nats_url: str,
        views: Path,
        durable: str,
        device_id: str,
        secret: bytes,
        batch: int = 5000,
        nats_options: dict[str, Any] | None = None,
        stream_options: dict[str, Any] | None = None,
    ) -> None:
        """``nats_options``: broker user/TLS of the credential that pulls from the
        engine; ``stream_options``: another broker user for the stream (an
        integration's), when that credential may not create consumers."""
        self.nats_url = nats_url
        self.nats_options = nats_options or {}
        self.stream_options = stream_options
        # An integration of the embedded broker reads its mirror of the stream.
        user = str((stream_options or {}).get("user", ""))
        self.stream = (
            protocol.INTEGRATION_STREAM if user.startswith(INTEGRATION_PREFIX) else protocol.STREAM
        )
        self.views = views
        self.durable = durable
        self.device_id = device_id
        self.secret = secret
        self.batch = batch
        self.follower: Follower | None = None
        self._msgs: list[Msg] = []
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event, ready: Callable[[int], None] | None = None) -> None:
        # One fold writes a views file: refuse before connecting if another does.
        lock = lock_views(self.views, wait=False)
        try:
            await self._run(stop, ready)
        finally:
            os.close(lock)

    async def _run(self, stop: asyncio.Event, ready: Callable[[int], None] | None) -> None:
        async def quiet(exc: Exception) -> None:  # errors surface where they matter
            log.debug("broker: %s", exc)

        name = f"synvoice-projection-{self.durable}"
        opts = {**inbox_option(self.device_id), **self.nats_options}
        nc = await connect_nats(self.nats_url, name, error_cb=quiet, **opts)
        snc = nc
        if self.stream_options is not None:
            snc = await connect_nats(
                self.nats_url, name + "-stream", error_cb=quiet, **self.stream_options
            )
        client = EngineClient(nc, self.device_id, self.secret)
        store = await asyncio.to_thread(ViewStore.open, self.views)
        sub = None
        try:
            f = self.follower = await Follower.open(store, engine_filler(client, self.batch))
            await self._catch_up(client, f)
            js = snc.jetstream()
            sub = await self._subscribe(js)
            if ready is not None:
                ready(f.position)
            while not stop.is_set():
                waiter = asyncio.ensure_future(self._wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                idle = GAPS_EVERY if f.gaps_pending else None
                done, _ = await asyncio.wait(
                    {waiter, stopper}, timeout=idle, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
                stopper.cancel()
                if not done:  # idle: write the gap lists that were put off
                    await f.flush_gaps()
                    continue
                self._wake.clear()
                while self._msgs:
                    msgs, self._msgs = self._msgs[: self.batch], self._msgs[self.batch :]
                    await self._process(f, msgs)
            if f.gaps_pending:  # a stopped file's gap lists are those of its checkpoint
                await f.flush_gaps()
        finally:
            if sub is not None:
                try:
                    await sub.unsubscribe()
                except Exception:
                    pass
            for conn in {nc, snc}:
                try:
                    await conn.drain()
                except Exception:
                    pass
            await asyncio.to_thread(store.close)

    async def _subscribe(self, js: JetStreamContext) -> Any:
        try:
            return await js.subscribe(
                protocol.LOG_SUBJECTS,
                stream=self.stream,
                durable=self.durable,
                cb=self._on_msg,
                manual_ack=True,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.ALL,
                    deliver_policy=DeliverPolicy.ALL,
                    max_ack_pending=4 * self.batch,
                    ack_wait=30,
                ),
            )
        except Exception as exc:  # timeout or permission error from the broker
            raise SynvoiceError(
                "forbidden",
                f"cannot open the durable consumer {self.durable!r} on {self.stream} "
                f"({type(exc).__name__}): where the broker checks users, a device token "
                "may not read the stream; add --broker-user/--broker-password of an "
                "integration (synvoice integration add NAME), or use --data",
            ) from None

    async def _catch_up(self, client: EngineClient, f: Follower) -> None:
        """Resume from the checkpoint by pulling up to the head (no waiting for
        the stream's redeliveries)."""
        while True:
            _, more, rows = await pull_rows(client, f.position, self.batch)
            if rows:
                await f.feed(rows)
                log.info("caught up to %d", f.position)
            if not more:
                return

    async def _on_msg(self, msg: Msg) -> None:
        self._msgs.append(msg)
        self._wake.set()

    async def _process(self, f: Follower, msgs: list[Msg]) -> None:
        rows: list[Row] = []
        for m in msgs:
            row = row_of(m)
            if row is None:
                log.warning("message %s without Synvoice position/hash headers", m.subject)
            else:
                rows.append(row)
        await f.feed(rows)
        # Ack only once the views transaction committed; ack-all covers earlier ones.
        last = max(msgs, key=lambda m: m.metadata.sequence.stream)
        await last.ack()


def run_blocking(
    nats_url: str,
    views: Path,
    durable: str,
    device_id: str,
    secret: bytes,
    nats_options: dict[str, Any] | None = None,
    stream_options: dict[str, Any] | None = None,
) -> None:
    """``synvoice project``: run until SIGINT/SIGTERM."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        proj = StandaloneProjection(
            nats_url,
            views,
            durable,
            device_id,
            secret,
            nats_options=nats_options,
            stream_options=stream_options,
        )

        def ready(position: int) -> None:
            print(
                f"projecting {protocol.STREAM} into {views} (durable {durable!r}), "
                f"at position {position}",
                flush=True,
            )

        await proj.run(stop, ready)

    asyncio.run(main())
