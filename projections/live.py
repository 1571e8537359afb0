"""The live projection of the engine: keeps ``DATA/views.sqlite`` up to date.

An engine plugin (``engine.server.ENGINE_PLUGINS``). The folding runs in a
worker process the engine starts and supervises (``projections.liveworker``):
it reads new records straight from the log file and folds them through
``Follower``, the one projection code path. The engine only tells it the new
head after each commit (one line on its stdin: the listener runs inside the
engine's writer and must not block) and reads its checkpoint back (``at N``
lines), which ``position`` and ``wait_for`` report.

Why a process: folding costs more CPU per event than appending it; in the
engine's process it took the event loop's core, in its own it uses the second
one. Its memory, and the first-start rebuild of a big log, stay out of the
engine too. A worker that fails or is killed is started again and resumes
from the views' checkpoint; when the engine dies, the worker's stdin closes
and it ends (at once on Linux: it asks the kernel for SIGKILL when the
engine dies, see engine.lifeline).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import weakref
from collections.abc import Sequence
from pathlib import Path

from engine.core import EngineCore
from engine.events import Event
from engine.log import Record
from engine.messages import ViewsStatus
from engine.server import EngineServer

log = logging.getLogger("synvoice.projections")

VIEWS_FILE = "views.sqlite"
STOP_TIMEOUT = 30.0  # seconds a stopping worker gets to apply what it was told about

_attached: weakref.WeakKeyDictionary[EngineServer, LiveProjection] = weakref.WeakKeyDictionary()


def views_path(data_dir: Path) -> Path:
    return data_dir / VIEWS_FILE


def live_projection(server: EngineServer) -> LiveProjection | None:
    """The live projection attached to ``server`` (tests and tools)."""
    return _attached.get(server)


async def attach(server: EngineServer) -> None:
    if not server.config.live_views:
        log.info("live views disabled (SYNVOICE_LIVE_VIEWS=0)")
        return
    assert server.core is not None
    path = views_path(server.config.data_dir)
    await check_views(server, path)
    live = LiveProjection(server.core, path)
    await live.start()
    server.on_stop.append(live.stop)
    _attached[server] = live


async def check_views(server: EngineServer, path: Path) -> None:
    """Views ahead of the log, or of another log (the log restored from an older
    backup, its tail cut): refused, or with --accept-log-rollback set aside (kept
    as ``views.sqlite.rolled-back``) to be rebuilt from the log by the worker, and
    the positions they held are skipped like published ones (engine.anchor)."""
    from projections.store import ViewsError, ViewStore

    core = server.core
    assert core is not None

    if not path.exists():
        return
    try:
        store = ViewStore.open_readonly(path)
    except ViewsError:
        return  # not a views file we can read: the worker reports it
    try:
        position, h = store.checkpoint()
    finally:
        store.close()
    if position == 0:
        return
    records = await core.log.read(position - 1, 1)
    if records and records[0].position == position and records[0].hash == h:
        return
    why = (
        f"the live views ({path}) are at position {position}, "
        + (
            f"ahead of the log (head {core.log.head})"
            if position > core.log.head
            else "where the log has another record"
        )
        + ": the log is older than the views (a restored backup or a cut tail)"
    )
    if not server.config.accept_log_rollback:
        raise RuntimeError(
            f"{why}. Restore the newer log, or start with --accept-log-rollback "
            "(the views are then rebuilt from this log)"
        )
    if server.anchor is not None:
        await server.anchor.roll_back(position, why)
    aside = path.with_name(path.name + ".rolled-back")
    log.warning("%s: set aside as %s and rebuilt (--accept-log-rollback)", why, aside)
    for suffix in ("-wal", "-shm", ""):
        if Path(f"{path}{suffix}").exists():
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")


class LiveProjection:
    """The engine's side of the worker: start it, tell it commits, track its checkpoint."""

    def __init__(self, core: EngineCore, path: Path) -> None:
        self.core = core
        self.path = path
        self.position = 0  # the views' checkpoint, as the worker last reported it
        self.error: str | None = None  # the worker's last failure (it is restarted)
        self.starts = 0  # worker processes started (restarts = starts - 1)
        self.pid: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._told = 0  # the last head written to the worker
        self._stopping = False
        self._changed = asyncio.Condition()

    def status(self) -> ViewsStatus:
        """The ``views`` part of the engine's status reply."""
        proc = self._proc
        return ViewsStatus(
            position=self.position,
            behind=max(0, self.core.log.head - self.position),
            worker_pid=self.pid if proc is not None and proc.returncode is None else None,
            restarts=max(0, self.starts - 1),
            error=self.error,
        )

    async def start(self) -> None:
        self.core.status_parts["views"] = self.status
        self.core.listeners.append(self._on_commit)
        self._task = asyncio.create_task(self._supervise(), name="synvoice-live-projection")

    def _on_commit(self, sealed: Sequence[tuple[Event, Record]]) -> None:
        # At most one head outstanding: a busy worker reads everything up to the
        # log's head anyway, and is told again when it reports (see _reached).
        if self._told <= self.position:
            self._tell(sealed[-1][1].position)

    def _tell(self, head: int) -> None:
        proc = self._proc
        if proc is not None and proc.stdin is not None and not proc.stdin.is_closing():
            # Buffered by the pipe's transport: never blocks the writer. A worker
            # started later reads the log from its checkpoint anyway.
            proc.stdin.write(b"%d\n" % head)
            self._told = head

    async def _spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "projections.liveworker",
            "--log",
            str(self.core.config.log_path.resolve()),
            "--views",
            str(self.path.resolve()),
            # It binds itself to us (engine.lifeline): a kill -9 of the engine
            # ends it at once, not after its stdin's end-of-file is noticed.
            "--parent",
            str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # Its folding threads would each get a glibc malloc arena: two keep
            # the resident memory from growing with fragmented per-thread heaps.
            env={"MALLOC_ARENA_MAX": "2", **os.environ},
        )

    async def _supervise(self) -> None:
        backoff = 0.2
        while not self._stopping:
            proc = await self._spawn()
            self._proc, self.pid, self._told = proc, proc.pid, 0
            self.starts += 1
            assert proc.stdout is not None
            try:
                async for line in proc.stdout:
                    word, _, rest = line.decode(errors="replace").strip().partition(" ")
                    if word == "at" and rest.isdigit():
                        await self._reached(int(rest))
                        backoff = 0.2
                    elif word == "error":
                        self.error = rest
                rc = await proc.wait()
            finally:
                if proc.returncode is None:  # cancelled: never leave a worker behind
                    proc.kill()
                    await proc.wait()
            self._proc = None
            if self._stopping:
                break
            log.warning("live projection worker ended (exit %s); starting another", rc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _reached(self, position: int) -> None:
        async with self._changed:
            self.position = position
            self.error = None
            self._changed.notify_all()
        head = self.core.log.head
        if position >= self._told and head > position:
            self._tell(head)

    async def wait_for(self, position: int, timeout: float = 10.0) -> None:
        """Wait until the views include ``position`` (tests, read-your-writes tools)."""

        async def reached() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self.position >= position)

        await asyncio.wait_for(reached(), timeout)

    async def stop(self) -> None:
        """Let the worker apply what was committed, then end it."""
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log.warning("live projection worker did not finish; killed (resumes at start)")
                proc.kill()
                await proc.wait()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
