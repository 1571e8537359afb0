"""The live projection inside the engine: keeps ``DATA/views.sqlite`` up to date.

An engine plugin (``engine.server.ENGINE_PLUGINS``). It listens to every
commit (the listener only queues the sealed records: it runs inside the
engine's writer and must not block), and a background task folds them into the
views through ``Follower``, one transaction per batch of commits. At start it
resumes from the views file's checkpoint by reading the log; a missing views
file, or one from another views schema, is first rebuilt from the log in bulk.
Holes (a commit seen before the ones before it) are read from the log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.core import EngineCore
from engine.events import Event
from engine.log import Record
from engine.server import EngineServer
from projections.follow import GAPS_EVERY, Follower, Row
from projections.rebuild import build_from_log
from projections.store import ViewsError, ViewStore

log = logging.getLogger("synvoice.projections")

VIEWS_FILE = "views.sqlite"
_attached: weakref.WeakKeyDictionary[EngineServer, LiveProjection] = weakref.WeakKeyDictionary()


def views_path(data_dir: Path) -> Path:
    return data_dir / VIEWS_FILE


def live_projection(server: EngineServer) -> LiveProjection | None:
    """The live projection attached to ``server`` (tests and tools)."""
    return _attached.get(server)


async def attach(server: EngineServer) -> None:
    if os.environ.get("SYNVOICE_LIVE_VIEWS", "1") == "0":
        log.info("live views disabled (SYNVOICE_LIVE_VIEWS=0)")
        return
    assert server.core is not None
    live = LiveProjection(server.core, views_path(server.config.data_dir))
    await live.start()
    server.on_stop.append(live.stop)
    _attached[server] = live


class LiveProjection:
    def __init__(self, core: EngineCore, path: Path, batch: int = 5000) -> None:
        self.core = core
        self.path = path
        self.batch = batch
        self.follower: Follower | None = None
        self.error: BaseException | None = None  # last failure (retried)
        self._queue: list[Row] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()

    @property
    def position(self) -> int:
        return self.follower.position if self.follower else 0

    async def start(self) -> None:
        self.core.listeners.append(self._on_commit)
        self._task = asyncio.create_task(self._run(), name="synvoice-live-projection")

    def _on_commit(self, sealed: Sequence[tuple[Event, Record]]) -> None:
        self._queue.extend((r.position, r.body, r.hash) for _, r in sealed)
        self._wake.set()

    async def _open(self) -> Follower:
        def open_store() -> ViewStore:
            try:
                return ViewStore.open(self.path)
            except ViewsError as exc:
                log.warning("rebuilding the views from the log (%s)", exc)
            return self._rebuilt()

        if not self.path.exists():
            store = await asyncio.to_thread(self._rebuilt)
        else:
            store = await asyncio.to_thread(open_store)
        return await Follower.open(store, self._fill)

    def _rebuilt(self) -> ViewStore:
        r = build_from_log(self.core.config.log_path, self.path)
        log.info("views rebuilt: %d events in %.1fs, digest %s", r.events, r.seconds, r.digest)
        return ViewStore.open(self.path)

    async def _fill(self, after: int, upto: int) -> Sequence[Row]:
        records = await self.core.log.read(after, min(self.batch, upto - after))
        return [(r.position, r.body, r.hash) for r in records]

    async def _catch_up(self, f: Follower) -> None:
        while f.position < self.core.log.head:
            rows = await self._fill(f.position, self.core.log.head)
            if not rows:
                break
            await f.feed(rows)
            await self._notify()

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                if self.follower is None:
                    self.follower = await self._open()
                await self._catch_up(self.follower)
                await self._notify()
                while True:
                    if not await self._woken(self.follower):
                        continue
                    self._wake.clear()
                    while self._queue:
                        rows, self._queue = self._queue[: self.batch], self._queue[self.batch :]
                        await self.follower.feed(rows)
                        await self._notify()
                    self.error = None
                    backoff = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Never skip: the checkpoint stays where it was and we retry from it.
                self.error = exc
                log.exception("live projection failed; retrying from its checkpoint")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                self._wake.set()

    async def _woken(self, f: Follower) -> bool:
        """Wait for commits; while big series' gaps are pending, write them when idle."""
        if not f.gaps_pending:
            await self._wake.wait()
            return True
        try:
            await asyncio.wait_for(self._wake.wait(), GAPS_EVERY)
            return True
        except TimeoutError:
            await f.flush_gaps()
            return False

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, position: int, timeout: float = 10.0) -> None:
        """Wait until the views include ``position`` (tests, read-your-writes tools)."""

        async def reached() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self.position >= position)

        await asyncio.wait_for(reached(), timeout)

    async def stop(self) -> None:
        # Apply what was committed before the stop, then close.
        if self._task is not None and self.follower is not None and self.error is None:
            try:
                await asyncio.wait_for(self._drain(), timeout=10)
            except Exception:
                log.warning("live projection stopped before the head (resumes at start)")
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        if self._on_commit in self.core.listeners:
            self.core.listeners.remove(self._on_commit)
        if self.follower is not None:
            await asyncio.to_thread(self.follower.store.close)
            self.follower = None

    async def _drain(self) -> None:
        await self.wait_for(self.core.log.head, timeout=10)

    def status(self) -> dict[str, Any]:
        return {
            "views": str(self.path),
            "position": self.position,
            "head": self.core.log.head,
            "error": str(self.error) if self.error else None,
        }
