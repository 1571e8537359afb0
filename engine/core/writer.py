"""The group-commit writer: one task, one SQLite transaction per batch of jobs.

Every write (a push, a number request, an admin change) becomes a job on one
queue. The writer drains all waiting jobs, plans them against the in-memory
state, seals the new events (positions, hash chain) and writes them with the
state snapshot in one transaction. Only after the COMMIT are the jobs
answered, so an acknowledgement means "durable".

A job's plan reads what it needs from the log through its batch: the stored
positions of the event ids it names and the reservations of the documents it
names, fetched once for the whole batch before any plan runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import SynvoiceError
from engine.events import Event
from engine.log import EventLog, Record, SideWrite
from engine.replay_guard import PENDING, Nonce
from engine.schema.common import ENGINE_DEVICE
from engine.state import EngineState, fold_log, open_snapshot, seal_snapshot

log = logging.getLogger("synvoice.engine")

# Expired nonces are deleted with a commit at most this often (an index range).
NONCE_PRUNE_SECONDS = 30

CommitListener = Callable[[Sequence[tuple[Event, Record]]], None]


class Batch:
    """Events planned for one transaction; applies them to the state as they come."""

    def __init__(
        self,
        state: EngineState,
        stored_positions: dict[bytes, int] | None = None,
        stored_reservations: dict[bytes, tuple[str, int]] | None = None,
    ) -> None:
        self.state = state
        # Prefetched for the jobs of this batch (``Job.lookup_ids``, ``reserve_ids``):
        # event id -> its position in the log; doc id -> (kind, number) reserved.
        self.stored_positions = stored_positions or {}
        self.stored_reservations = stored_reservations or {}
        self.events: list[Event] = []
        self.ids: list[bytes] = []  # event ids' bytes, as events
        self.index: dict[bytes, int] = {}
        self.side: list[SideWrite] = []
        self.reserved: dict[bytes, tuple[str, int]] = {}  # doc id -> (kind, number)
        self.pending_bytes = 0  # estimated stored size of the pushed events planned
        self.engine_events = False  # settings/numbering events planned (see pull)

    def add(self, ev: Event, eid: bytes | None = None) -> int:
        """Plan ``ev`` (``eid``: its id's bytes, if the caller has them already)."""
        idx = len(self.events)
        self.events.append(ev)
        if eid is None:
            eid = ev.event_id.bytes
        self.ids.append(eid)
        self.index[eid] = idx
        if ev.device_id == ENGINE_DEVICE:
            self.engine_events = True
        self.state.apply(ev)
        return idx

    def reservation(self, doc_id: bytes) -> tuple[str, int] | None:
        """A document's reserved (kind, number): planned in this batch, or stored."""
        return self.reserved.get(doc_id) or self.stored_reservations.get(doc_id)


# A plan adds a job's events to the batch (or raises SynvoiceError, adding
# nothing) and returns the resolver that builds its reply from the batch's
# base position, once committed.
Resolver = Callable[[int], Any]
Plan = Callable[[Batch], Resolver]


@dataclass
class Job:
    plan: Plan
    size: int
    lookup_ids: list[bytes]  # event ids whose stored positions the plan needs
    reserve_ids: list[bytes]  # doc ids whose reserved numbers the plan needs
    nonce: Nonce | None = None  # a guarded request's, stored with its effect
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Writer:
    """Owns the engine state between commits: plans apply to it, a failed commit
    reloads it from the log."""

    def __init__(
        self, log_: EventLog, state: EngineState, max_batch_events: int, snapshot_key: bytes
    ) -> None:
        self.log = log_
        self.state = state
        # Seals each stored snapshot to the head it was taken at (engine.state).
        self.snapshot_key = snapshot_key
        self.max_batch_events = max_batch_events
        self.listeners: list[CommitListener] = []
        # Done when the commit in flight with engine events (already applied to
        # ``state``) is durable; None when there is none.
        self.settling: asyncio.Future[None] | None = None
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._nonces_pruned = 0  # when expired nonces were last deleted (unix seconds)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._write_loop(), name="synvoice-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def submit(
        self,
        plan: Plan,
        size: int,
        event_ids: list[bytes] | None = None,
        reserve: list[bytes] | None = None,
    ) -> Any:
        """The plan's reply, once its events are committed."""
        if self._task is None:
            raise SynvoiceError("unavailable", "engine is not running")
        job = Job(
            plan=plan,
            size=size,
            lookup_ids=event_ids or [],
            reserve_ids=reserve or [],
            nonce=PENDING.get(),
        )
        await self._queue.put(job)
        return await job.future

    async def _write_loop(self) -> None:
        while True:
            jobs = [await self._queue.get()]
            size = jobs[0].size
            while not self._queue.empty() and size < self.max_batch_events:
                j = self._queue.get_nowait()
                jobs.append(j)
                size += j.size
            try:
                await self._commit(jobs)
            except Exception as exc:
                log.exception("commit failed; reloading state from the log")
                if not await self._reload_state(jobs, exc):
                    return
                if len(jobs) == 1:
                    _fail(jobs[0], exc)
                    continue
                # One job's events may be what failed (e.g. a UNIQUE constraint):
                # commit the jobs one by one so only that one fails.
                for j in jobs:
                    if j.future.done():
                        continue
                    try:
                        await self._commit([j])
                    except Exception as exc1:
                        if not await self._reload_state(jobs, exc1):
                            return
                        _fail(j, exc1)

    async def _reload_state(self, jobs: list[Job], exc: Exception) -> bool:
        """The state as the log has it, after a failed commit. If even that fails
        the writer stops: every request then gets 'unavailable' rather than wait."""
        try:
            self.state = await load_state(self.log, self.snapshot_key)
            return True
        except Exception:
            log.exception("the engine state cannot be reloaded: writes stop")
            self._task = None
            for j in jobs:
                _fail(j, exc)
            while not self._queue.empty():
                _fail(self._queue.get_nowait(), exc)
            return False

    async def _commit(self, jobs: list[Job]) -> None:
        ids = [i for j in jobs for i in j.lookup_ids]
        res = [i for j in jobs for i in j.reserve_ids]
        positions, reservations = await self.log.prefetch(ids, res) if ids or res else ({}, {})
        batch = Batch(self.state, positions, reservations)
        resolvers: list[tuple[Job, Resolver]] = []
        for job in jobs:
            mark = len(batch.events)
            try:
                resolvers.append((job, job.plan(batch)))
            except SynvoiceError as exc:
                if len(batch.events) != mark:  # plans validate before adding; be safe anyway
                    raise
                if not job.future.done():  # its caller may be gone (cancelled)
                    job.future.set_exception(exc)
        nonces = [job.nonce for job, _ in resolvers if job.nonce is not None]
        if nonces:
            # With the effect, in its transaction: a copy after a restart is refused.
            batch.side.append(("INSERT OR IGNORE INTO nonces VALUES (?,?,?)", nonces))
            now = int(time.time())
            if now >= self._nonces_pruned + NONCE_PRUNE_SECONDS:
                self._nonces_pruned = now
                batch.side.append(("DELETE FROM nonces WHERE forget_after < ?", [(now,)]))
        base = self.log.head
        sealed = self.log.seal(batch.events)
        self.state.data_bytes += sum(len(r.body) for _, r in sealed)
        side = (
            [
                *batch.side,
                (
                    "INSERT INTO meta(key, value) VALUES ('state', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    [(self._sealed_snapshot(sealed),)],
                ),
            ]
            if sealed or batch.side
            else []
        )
        settling: asyncio.Future[None] | None = None
        if batch.engine_events:
            settling = self.settling = asyncio.get_running_loop().create_future()
        try:
            await self.log.append(sealed, side, batch.ids)
        finally:
            if settling is not None:
                settling.set_result(None)
                if self.settling is settling:
                    self.settling = None
        # Committed: from here on nothing may raise to the write loop (it would
        # commit these jobs again one by one).
        for job, resolve in resolvers:
            if not job.future.done():
                try:
                    job.future.set_result(resolve(base))
                except Exception as exc:
                    log.exception("building a reply after commit failed")
                    job.future.set_exception(SynvoiceError("internal", f"reply failed: {exc}"))
        if sealed:
            for listener in self.listeners:
                try:
                    listener(sealed)
                except Exception:
                    log.exception("commit listener failed")

    def _sealed_snapshot(self, sealed: Sequence[tuple[Event, Record]]) -> bytes:
        """The state snapshot bound to the head this commit leaves (see state.seal_snapshot)."""
        last = sealed[-1][1] if sealed else Record(self.log.head, b"", self.log.last_hash)
        return seal_snapshot(self.state, last.position, last.hash, self.snapshot_key)


def _fail(job: Job, exc: Exception) -> None:
    if not job.future.done():
        # A refusal the log raised (e.g. "unavailable: disk full") reaches the caller as it is.
        if isinstance(exc, SynvoiceError):
            job.future.set_exception(exc)
        else:
            job.future.set_exception(SynvoiceError("internal", f"commit failed: {exc}"))


async def load_state(log_: EventLog, key: bytes) -> EngineState:
    """The snapshot stored with the last commit if its seal holds for this log's
    head, else the state folded from the log: an edited snapshot (counters reset,
    a device added) is never believed, so no counter falls below the log's."""
    raw = await log_.get_meta("state")
    if raw is None and not log_.head:
        return EngineState()
    why = "no snapshot"
    if raw is not None:
        st, why = open_snapshot(raw, log_.head, log_.last_hash, key)
        if st is not None:
            return st
    log.warning("engine state rebuilt from the log's %d records: %s", log_.head, why)
    st = EngineState()
    async for rows in log_.iter_records():
        fold_log((r.body for r in rows), st)
    return st
