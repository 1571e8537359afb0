"""The device agent: offline-first documents, an outbox, and sync with the engine.

Every command makes an event, stores it in the local outbox (one SQLite
transaction) and returns at once: online or offline makes no difference to the
person at the device. A background loop pushes the outbox and pulls the log
whenever the device is online; the engine's head notifications
(``synvoice.v1.head``) make it pull as soon as another device commits.

Idempotency: an event id is made once, stored with the event and sent as is on
every retry; the engine stores each id once. Resumption: pulled events are
stored page by page together with the new last position, so a sync that is cut
off goes on from the last stored page, never from zero.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import IO, Any, TypeVar

import nats.errors
from nats.aio.msg import Msg
from pydantic import BaseModel, ValidationError

from devices.catchup import FoldedPage, Prefetch, fold_page
from devices.gcpause import gc_paused, gc_release
from devices.numbering import DeviceNumbering, duplicates
from devices.store import STORE_VERSION, VIEW_SHAPE, DeviceStore, OutboxItem, PageWrite
from engine import codec, protocol
from engine.client import EngineClient, PulledPage
from engine.document import Conflict, DocumentView, apply
from engine.enrollment import Enrollment, parse_token
from engine.errors import SynvoiceError
from engine.events import Event, new_event, now
from engine.schema.common import KINDS, Customer, Line, NumberSource
from engine.schema.documents import (
    Converted,
    CustomerChanged,
    DatesChanged,
    DocumentCreated,
    Issued,
    LinesChanged,
    NumberAssigned,
    Voided,
)

log = logging.getLogger("synvoice.device")

STORE_FILE = "device.sqlite"
LOCK_FILE = "agent.lock"
PUSH_BATCH = 1000  # events per push request
PUSH_MAX_BYTES = 3 * 1024 * 1024  # below the engine's 4 MiB request limit
PULL_LIMIT = 5000
# A pull of at least this many events, more than the store holds, drops the
# document index of the events table and makes it again at the end.
BULK_PULL = 20_000
# Refusals about one event's content: find the event by splitting the batch
# and set it aside, so one bad event never blocks the outbox.
PER_EVENT_CODES = {"schema", "unknown_type", "too_large", "forbidden", "bad_request"}
# Refusals of the device itself (revoked, edition limit …): retried every 30 s.
SLOW_RETRY_CODES = {"revoked", "unauthorized", "limit"}
SLOW_RETRY = 30.0

T = TypeVar("T")
ProgressFn = Callable[[int, int], None]  # (pulled so far, events to pull in this sync)


@dataclass(frozen=True)
class SyncResult:
    pushed: int  # events newly stored by the engine
    duplicates: int  # events the engine already had (a retry)
    rejected: int  # events refused for good (see status()["rejected"])
    pulled: int  # events pulled
    position: int  # last pulled position
    head: int
    pending: int  # events still waiting in the outbox
    at: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "pushed": self.pushed,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "pulled": self.pulled,
            "position": self.position,
            "head": self.head,
            "pending": self.pending,
            "at": self.at,
        }


def _model(model: type[BaseModel], **kw: Any) -> Any:
    try:
        m = model(**kw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SynvoiceError("schema", f"{where}: {first['msg']}") from None
    # Refused here, before a number is taken or anything shows as done: the engine
    # would set the event aside at the next sync (1 KiB left for the envelope).
    size = len(codec.pack(m.model_dump(mode="json")))
    if size + 1024 > protocol.MAX_EVENT_BYTES:
        raise SynvoiceError(
            "too_large",
            f"this change is {size:,} bytes; an event may hold {protocol.MAX_EVENT_BYTES:,}",
        )
    return m


def _customer(c: Customer | dict[str, Any] | str | None) -> Customer | None:
    if c is None or isinstance(c, Customer):
        return c
    if isinstance(c, str):
        return _model(Customer, name=c)  # type: ignore[no-any-return]
    return _model(Customer, **c)  # type: ignore[no-any-return]


def _lines(lines: Iterable[Line | dict[str, Any]]) -> list[Line]:
    return [ln if isinstance(ln, Line) else _model(Line, **ln) for ln in lines]


def _date(d: date | str | None, what: str) -> date | None:
    if d is None or isinstance(d, date):
        return d
    try:
        return date.fromisoformat(d)
    except ValueError:
        raise SynvoiceError("schema", f"{what} must be a date YYYY-MM-DD, not {d!r}") from None


def _lock_home(home: Path) -> IO[str]:
    f = open(home / LOCK_FILE, "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise SynvoiceError("conflict", f"another device agent is using {home}") from None
    return f


class DeviceAgent:
    """One device: its store, its connection and its sync loop (asyncio)."""

    def __init__(
        self,
        home: Path,
        store: DeviceStore,
        enrollment: Enrollment,
        lock: IO[str],
        *,
        request_timeout: float = 5.0,
        poll_interval: float = 5.0,
        retry_min: float = 0.1,
        retry_max: float = 2.0,
        reconnect_wait: float = 0.5,
        background: bool = True,
    ) -> None:
        self.home = home
        self.store = store
        self.enrollment = enrollment
        self.request_timeout = request_timeout
        self.poll_interval = poll_interval
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.reconnect_wait = reconnect_wait
        # background=False: no sync loop (one-shot CLI commands, controlled tests);
        # the caller syncs explicitly.
        self.background = background
        self._lock_file: IO[str] | None = lock
        self.numbering = DeviceNumbering()
        self._seq = 0
        self._last_position = 0
        self._head = 0
        self._last_sync: str | None = None
        self._last_error: str | None = None
        self._outbox: dict[int, OutboxItem] = {}  # device_seq -> item, in order
        self._outbox_ids: dict[str, int] = {}  # event id -> device_seq
        self._outbox_docs: dict[str, list[int]] = {}  # doc id -> device_seqs
        self._synced: dict[str, DocumentView] = {}
        self._conflicts: list[Conflict] = []
        self._rejected = 0
        self._pending_numbers: dict[str, tuple[str, int]] = {}  # doc -> (kind, number)
        self._client: EngineClient | None = None
        self._connector: asyncio.Task[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._cmd_lock = asyncio.Lock()  # one document command at a time (numbering)
        self._cmd_futs: list[asyncio.Future[None]] = []  # writes of the running command
        self._to_write: list[tuple[OutboxItem, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._vcache: dict[str, DocumentView | None] = {}  # views with unsent events on top
        self._sync_lock = asyncio.Lock()
        self._critical: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._stopping = False  # disconnect() in progress: the sync loop must end

    # --- life cycle --------------------------------------------------------------------

    @classmethod
    async def init(cls, home: Path, token: str, **opts: Any) -> DeviceAgent:
        """Make a new device in ``home`` from an enrollment token (``synvoice enroll``)."""
        enrollment = parse_token(token)
        home = Path(home)
        home.mkdir(parents=True, exist_ok=True)
        path = home / STORE_FILE
        if path.exists():
            raise SynvoiceError(
                "conflict", f"{home} already holds a device; use another --home to add one"
            )
        lock = _lock_home(home)
        store: DeviceStore | None = None
        try:
            path.touch(mode=0o600)  # it holds the device's credential (the token)
            store = await DeviceStore.open(path)
            await store.set_meta(
                {
                    "token": token,
                    "store_version": STORE_VERSION,
                    "device_id": enrollment.device_id,
                    "user": enrollment.user,
                    "created_at": now().isoformat(),
                    "view_shape": VIEW_SHAPE,
                }
            )
        except BaseException:
            if store is not None:
                await store.close()
            for leftover in (
                path,
                path.with_name(path.name + "-wal"),
                path.with_name(path.name + "-shm"),
            ):
                leftover.unlink(missing_ok=True)
            lock.close()
            raise
        return await cls._load(home, store, enrollment, lock, opts)

    @classmethod
    async def open(cls, home: Path, **opts: Any) -> DeviceAgent:
        """Open the device stored in ``home``."""
        home = Path(home)
        path = home / STORE_FILE
        if not path.exists():
            raise SynvoiceError(
                "not_found",
                f"no device in {home} (make one: synvoice device init --home {home} --token …)",
            )
        lock = _lock_home(home)
        try:
            store = await DeviceStore.open(path)
            token = await store.get_meta("token")
            if not isinstance(token, str):
                raise SynvoiceError("internal", f"{path} has no credentials")
            enrollment = parse_token(token)
        except BaseException:
            lock.close()
            raise
        return await cls._load(home, store, enrollment, lock, opts)

    @classmethod
    async def _load(
        cls,
        home: Path,
        store: DeviceStore,
        enrollment: Enrollment,
        lock: IO[str],
        opts: dict[str, Any],
    ) -> DeviceAgent:
        agent = cls(home, store, enrollment, lock, **opts)
        try:
            await agent._restore()
        except BaseException:
            await store.close()
            lock.close()
            raise
        return agent

    async def _restore(self) -> None:
        data = await self.store.load()
        m = data.meta
        self._seq = int(m.get("device_seq", 0))
        self._last_position = int(m.get("last_position", 0))
        self._head = int(m.get("head", 0))
        self._last_sync = m.get("last_sync")
        snap = m.get("numbering")
        self.numbering = DeviceNumbering.from_snapshot(snap) if snap else DeviceNumbering()
        self._synced = data.views
        self._conflicts = data.conflicts
        self._rejected = data.rejected
        self._pending_numbers = data.pending_numbers
        if m.get("view_shape") != VIEW_SHAPE and self._last_position:
            await self._refold()
        for it in data.outbox:
            it.durable = True
            self._add_outbox_item(it)
            self.numbering.observe(it.event)

    async def _refold(self) -> None:
        """Re-fold the views from the stored events (the view shape changed)."""
        views: dict[str, DocumentView] = {}
        conflicts: list[Conflict] = []
        numbering = DeviceNumbering()
        async for events in self.store.iter_events():
            for ev in events:
                numbering.observe(ev)
                if _is_doc_event(ev):
                    d = str(ev.doc_id)
                    views[d], cs = apply(views.get(d), ev)
                    conflicts.extend(cs)
        await self.store.replace_views(
            views, conflicts, {"view_shape": VIEW_SHAPE, "numbering": numbering.to_snapshot()}
        )
        self._synced, self._conflicts, self.numbering = views, conflicts, numbering
        self._vcache.clear()

    async def close(self) -> None:
        """Go offline and close the store (events already made stay in the outbox)."""
        if self._closed:
            return
        await self.disconnect()
        self._closed = True
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._critical:
            await asyncio.gather(*list(self._critical), return_exceptions=True)
        await self.store.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    async def __aenter__(self) -> DeviceAgent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- identity ----------------------------------------------------------------------

    @property
    def device_id(self) -> str:
        return self.enrollment.device_id

    @property
    def user(self) -> str:
        return self.enrollment.user

    @property
    def slot(self) -> int:
        return self.numbering.users.get(self.user, self.enrollment.slot)

    @property
    def mode(self) -> str:
        return self.numbering.mode

    @property
    def last_position(self) -> int:
        return self._last_position

    # --- connection ------------------------------------------------------------------

    @property
    def online(self) -> bool:
        return self._client is not None and self._client.nc.is_connected

    async def connect(self, timeout: float = 5.0) -> bool:
        """Go online. Returns whether the broker answered within ``timeout``; if it
        did not, the agent keeps trying in the background (and syncs once it can).
        Never raises because the broker or the engine is down."""
        if self._closed:
            raise SynvoiceError("unavailable", "the device agent is closed")
        if self._client is not None and self._client.nc.is_closed:
            await self.disconnect()  # closed for good (not reconnecting): start afresh
        if self._client is None and (self._connector is None or self._connector.done()):
            self._connector = asyncio.create_task(self._connect_forever(), name="device-connect")
        if self._connector is not None and not self._connector.done():
            await asyncio.wait({self._connector}, timeout=timeout)
        return self.online

    async def _connect_forever(self) -> None:
        async def on_error(exc: Exception) -> None:
            self._last_error = f"broker: {exc}"

        async def on_reconnect() -> None:
            self._wake.set()

        try:
            # The one place the device opens its connection (credentials live there).
            client = await EngineClient.connect_enrolled(
                self.enrollment,
                timeout=self.request_timeout,
                name=f"synvoice-device-{self.device_id}",
                max_reconnect_attempts=-1,  # retry the first connection and every later one
                reconnect_time_wait=self.reconnect_wait,
                connect_timeout=2,
                error_cb=on_error,
                reconnected_cb=on_reconnect,
            )
        except Exception as exc:  # e.g. a URL that can never work
            self._last_error = f"cannot connect to {self.enrollment.url}: {exc}"
            return
        self._client = client
        if self.background:
            await client.nc.subscribe(protocol.HEAD, cb=self._on_head)
            self._loop_task = asyncio.create_task(self._sync_loop(), name="device-sync")
            self._wake.set()

    async def disconnect(self) -> None:
        """Go offline on purpose (stop reconnecting); the outbox waits for the next connect."""
        self._stopping = True
        try:
            for task in (self._connector, self._loop_task):
                if task is not None:
                    await _stop(task)
        finally:
            self._stopping = False
        self._connector = self._loop_task = None
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
        if head > self._head:
            self._head = head
        if head > self._last_position:
            self._wake.set()

    async def _sync_loop(self) -> None:
        backoff = self.retry_min
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            except TimeoutError:
                pass  # a periodic pull: head notifications are not stored by the broker
            self._wake.clear()
            if not self.online:
                continue
            try:
                await self.sync()
                backoff = self.retry_min
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not isinstance(exc, SynvoiceError):
                    log.warning("sync failed: %r", exc)
                self._last_error = str(exc)
                # Refusals that time alone will not cure are retried slowly.
                slow = isinstance(exc, SynvoiceError) and exc.code in SLOW_RETRY_CODES
                await asyncio.sleep(max(backoff, SLOW_RETRY) if slow else backoff)
                backoff = min(backoff * 2, self.retry_max)
                self._wake.set()

    def _require_online(self) -> EngineClient:
        client = self._client
        if client is None or not client.nc.is_connected:
            raise SynvoiceError("unavailable", "offline: not connected to the broker")
        return client

    async def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """A request; broker trouble becomes ``unavailable`` (retry later)."""
        try:
            return await coro
        except SynvoiceError as exc:
            if exc.code not in PER_EVENT_CODES:  # those are handled event by event
                self._last_error = str(exc)
            raise
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            self._last_error = f"unavailable: {type(exc).__name__}"
            raise SynvoiceError("unavailable", f"broker: {type(exc).__name__} {exc}") from None

    async def _shielded(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a store write and the matching in-memory update to completion even if
        the caller is cancelled, so memory and disk never disagree."""
        return await asyncio.shield(self._critical_task(coro))

    def _critical_task(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """``coro`` started now as a task nobody cancels (``close`` waits for it):
        scheduled at once, so it runs even if whoever asked is cancelled first."""
        task = asyncio.ensure_future(coro)
        self._critical.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._critical.discard(t)
            if not t.cancelled():
                t.exception()  # retrieved: the caller may be gone

        task.add_done_callback(done)
        return task

    # --- sync ---------------------------------------------------------------------------

    async def sync(self, on_progress: ProgressFn | None = None) -> SyncResult:
        """Push the outbox, then pull everything after the last position.

        Raises ``SynvoiceError("unavailable")`` when offline or when the engine
        does not answer; what was done before that is kept.
        """
        client = self._require_online()
        async with self._sync_lock:
            try:
                pushed, dups, rejected = await self._push_all(client)
            except SynvoiceError as exc:
                if exc.code == "unavailable":
                    raise
                # Refused for a reason that is not one event's (an edition limit,
                # say): the device still gets everyone else's work, then hears why.
                await self._pull_all(client, on_progress)
                raise
            pulled = await self._pull_all(client, on_progress)
            at = now().isoformat()
            self._last_sync = at
            self._last_error = None
            await self._shielded(self.store.set_meta({"last_sync": at}))
            return SyncResult(
                pushed,
                dups,
                rejected,
                pulled,
                self._last_position,
                self._head,
                self.pending_count(),
                at,
            )

    async def wait_synced(self, timeout: float = 30.0) -> None:
        """Wait until the outbox is empty and everything up to the head is pulled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._outbox or self._last_position < self._head:
            if loop.time() > deadline:
                raise SynvoiceError("unavailable", "not synced in time")
            self._wake.set()
            await asyncio.sleep(0.05)

    def _unsent(self) -> list[OutboxItem]:
        return [it for it in self._outbox.values() if it.position is None and it.durable]

    async def _push_all(self, client: EngineClient) -> tuple[int, int, int]:
        # What is unsent now; events made meanwhile go with the next sync, so a
        # busy device still gets to pull.
        unsent = self._unsent()
        pushed = dups = rejected = 0
        i = 0
        while i < len(unsent):
            batch: list[OutboxItem] = []
            size = 0
            while i < len(unsent):
                it = unsent[i]
                if batch and (len(batch) >= PUSH_BATCH or size + len(it.body) > PUSH_MAX_BYTES):
                    break
                batch.append(it)
                size += len(it.body)
                i += 1
            p, d, r = await self._push_batch(client, batch)
            pushed, dups, rejected = pushed + p, dups + d, rejected + r
        return pushed, dups, rejected

    async def _push_batch(
        self, client: EngineClient, batch: list[OutboxItem]
    ) -> tuple[int, int, int]:
        try:
            reply = await self._call(client.push([codec.unpack(it.body) for it in batch]))
        except SynvoiceError as exc:
            if exc.code not in PER_EVENT_CODES:
                raise
            if len(batch) == 1:
                await self._shielded(self._reject(batch[0], str(exc)))
                return 0, 0, 1
            mid = len(batch) // 2
            a = await self._push_batch(client, batch[:mid])
            b = await self._push_batch(client, batch[mid:])
            return a[0] + b[0], a[1] + b[1], a[2] + b[2]
        acks = [(str(r["event_id"]), int(r["position"])) for r in reply["results"]]
        await self._shielded(self._ack(acks))
        self._head = max(self._head, int(reply.get("head", 0)))
        dup = sum(1 for r in reply["results"] if r.get("duplicate"))
        return len(acks) - dup, dup, 0

    async def _ack(self, acks: list[tuple[str, int]]) -> None:
        await self.store.mark_acked(acks)
        for eid, pos in acks:
            seq = self._outbox_ids.get(eid)
            if seq is not None:
                self._outbox[seq].position = pos

    async def _reject(self, item: OutboxItem, error: str) -> None:
        log.error("engine refused event %s for good: %s", item.event.event_id, error)
        await self.store.reject(item, error)
        self._drop_outbox_item(item.seq)
        self._rejected += 1

    async def _pull_all(self, client: EngineClient, on_progress: ProgressFn | None) -> int:
        """Pull pages after the last position until the head. Three stages overlap:
        the engine reads page k+1 (``Prefetch``), this loop folds page k, and the
        store writes page k-1. A page's progress is reported once it is stored."""
        start = self._last_position
        pulled = 0

        async def fetch(after: int) -> PulledPage:
            # The request is made only when the prefetch task runs: one cancelled
            # before it starts leaves no un-awaited coroutine behind.
            return await self._call(client.pull_page(after=after, limit=PULL_LIMIT))

        pages = Prefetch(fetch, self._last_position)
        # Views folded but not stored yet (the next page folds on top).
        unstored: dict[str, DocumentView] = {}
        folded_to = self._last_position
        writing: asyncio.Future[int] | None = None
        head = self._head

        def report() -> None:
            if on_progress is not None:
                on_progress(self._last_position - start, max(head - start, 0))

        bulk = False  # the document index is dropped until the end (see store.DOC_INDEX)
        frozen = False
        try:
            while (page := await pages.next()) is not None:
                head = page.head
                self._head = max(self._head, head)
                todo = head - folded_to
                if not bulk and todo >= BULK_PULL and todo > folded_to:
                    bulk = True
                    await self._shielded(self.store.drop_doc_index())
                with gc_paused(keep=True):  # the new views live on (see gcpause)
                    frozen = True
                    folded = fold_page(
                        page.events,
                        folded_to,
                        self._synced,
                        unstored=unstored,
                        device_id=self.device_id,
                        outbox_ids=self._outbox_ids,
                        pending_numbers=self._pending_numbers,
                    )
                if writing is not None:
                    pulled += await writing
                    writing = None
                    report()
                if not folded.rows:
                    continue
                # The numbering learns the page now, before it is stored: observing
                # is idempotent, so if the write fails, pulling the page again (from
                # the stored position, in log order) leaves it as it would be.
                for t, kind, data in folded.numbering:
                    self.numbering.observe_wire(t, kind, data)
                meta: dict[str, Any] = {
                    "last_position": folded.last,
                    "head": max(head, folded.last),
                    "view_shape": VIEW_SHAPE,
                }
                if folded.numbering:
                    meta["numbering"] = self.numbering.to_snapshot()
                unstored.update(folded.views)
                folded_to = folded.last
                # Started now (not when this loop next waits): a cancelled sync
                # still completes the write it handed over.
                writing = asyncio.shield(self._critical_task(self._store_page(folded, meta)))
            if writing is not None:
                pulled += await writing
                writing = None
            report()
        finally:
            if writing is not None:  # a failure while folding: the write still completes
                await asyncio.gather(writing, return_exceptions=True)
            await pages.aclose()
            if frozen:
                gc_release()
            if bulk:
                await self._shielded(self.store.make_doc_index())
        return pulled

    async def _store_page(self, page: FoldedPage, meta: dict[str, Any]) -> int:
        """Store a folded page, then make the same change in memory."""
        await self.store.write_page(
            PageWrite(page.rows, page.views, page.conflicts, page.acked, page.cleared, meta)
        )
        # Stored: now the same change in memory (no await from here on).
        self._synced.update(page.views)
        if self._vcache:
            for doc in page.views:
                self._vcache.pop(doc, None)
        self._conflicts.extend(page.conflicts)
        for eid in page.acked:
            seq = self._outbox_ids.get(eid)
            if seq is not None:
                self._drop_outbox_item(seq)
        for doc in page.cleared:
            self._pending_numbers.pop(doc, None)
            self._vcache.pop(doc, None)
        self._last_position = page.last
        self._head = max(self._head, meta["head"])
        return len(page.rows)

    # --- outbox -------------------------------------------------------------------------

    def _add_outbox_item(self, it: OutboxItem) -> None:
        self._outbox[it.seq] = it
        self._outbox_ids[str(it.event.event_id)] = it.seq
        if it.event.doc_id is not None:
            d = str(it.event.doc_id)
            self._outbox_docs.setdefault(d, []).append(it.seq)
            self._vcache.pop(d, None)

    def _drop_outbox_item(self, seq: int) -> None:
        it = self._outbox.pop(seq)
        self._outbox_ids.pop(str(it.event.event_id), None)
        if it.event.doc_id is not None:
            d = str(it.event.doc_id)
            self._vcache.pop(d, None)
            seqs = self._outbox_docs.get(d, [])
            if seq in seqs:
                seqs.remove(seq)
            if not seqs:
                self._outbox_docs.pop(d, None)

    def pending_count(self) -> int:
        """Events not yet acknowledged by the engine."""
        return sum(1 for it in self._outbox.values() if it.position is None)

    @asynccontextmanager
    async def _command(self) -> AsyncIterator[None]:
        """One document command: serialized (numbering reads what the previous
        command wrote), and durable before it returns. The store write happens
        after the lock is released, so concurrent commands share one transaction."""
        async with self._cmd_lock:
            self._cmd_futs = []
            yield
            futs, self._cmd_futs = self._cmd_futs, []
        if futs:
            await asyncio.shield(asyncio.gather(*futs))

    def _emit(self, type_: str, payload: BaseModel, doc_id: str, kind: str) -> Event:
        """Make an event: in memory at once (views, numbering), on disk with the
        running command's group commit. Call inside ``_command``."""
        self._seq += 1
        ev = new_event(
            type_,
            payload,
            device_id=self.device_id,
            user=self.user,
            device_seq=self._seq,
            doc_id=uuid.UUID(doc_id),
            kind=kind,
            seen_position=self._last_position,
        )
        item = OutboxItem(self._seq, ev, codec.pack(ev.to_wire()))
        self._add_outbox_item(item)
        self.numbering.observe(ev)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._cmd_futs.append(fut)
        self._to_write.append((item, fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_outbox(), name="device-outbox")
        return ev

    async def _write_outbox(self) -> None:
        while self._to_write:
            batch, self._to_write = self._to_write, []
            items = [it for it, _ in batch]
            try:
                await self.store.add_outbox(items, max(it.seq for it in items))
            except Exception as exc:
                log.exception("could not store %d event(s)", len(items))
                for it, fut in batch:
                    if it.seq in self._outbox:
                        self._drop_outbox_item(it.seq)
                    fut.set_exception(SynvoiceError("internal", f"event not stored: {exc}"))
                continue
            for it, fut in batch:
                it.durable = True
                fut.set_result(None)
            self._wake.set()

    # --- views --------------------------------------------------------------------------

    def _view(self, doc_id: str) -> DocumentView | None:
        if doc_id not in self._outbox_docs and doc_id not in self._pending_numbers:
            return self._synced.get(doc_id)
        if doc_id in self._vcache:
            return self._vcache[doc_id]
        v = self._synced.get(doc_id)
        for seq in self._outbox_docs.get(doc_id, ()):
            v, _ = apply(v, self._outbox[seq].event)
        pending = self._pending_numbers.get(doc_id)
        if pending is not None and v is not None:
            v = replace(v, number=pending[1], number_source="server")
        self._vcache[doc_id] = v
        return v

    def document(self, doc_id: str | uuid.UUID) -> DocumentView:
        """The document as this device sees it (synced events + its own unsent ones)."""
        v = self._view(str(doc_id))
        if v is None or not v.created:
            raise SynvoiceError("not_found", f"no document {doc_id}")
        return v

    def documents(self, kind: str | None = None) -> list[DocumentView]:
        ids = set(self._synced) | set(self._outbox_docs) | set(self._pending_numbers)
        out = []
        for d in ids:
            v = self._view(d)
            if v is not None and v.created and (kind is None or v.kind == kind):
                out.append(v)
        out.sort(key=lambda v: (v.kind, v.number or 1 << 62, v.created_at or "", v.doc_id))
        return out

    def conflicts(self, doc_id: str | uuid.UUID | None = None) -> list[Conflict]:
        """Conflicts the merge found in pulled events (concurrent edits, edits after issue)."""
        return [c for c in self._conflicts if doc_id is None or c.doc_id == str(doc_id)]

    def duplicates(self) -> list[dict[str, Any]]:
        """Numbers shared by several documents of a kind, as this device sees them."""
        return duplicates(self.documents())

    async def history(self, doc_id: str | uuid.UUID) -> list[Event]:
        """Every event of a document: pulled ones by position, then unsent ones."""
        d = str(doc_id)
        events = await self.store.doc_events(d)
        events += [self._outbox[s].event for s in self._outbox_docs.get(d, ())]
        return events

    async def rejected(self) -> list[dict[str, Any]]:
        return await self.store.rejected()

    def status(self) -> dict[str, Any]:
        docs = self.documents()
        return {
            "device_id": self.device_id,
            "user": self.user,
            "slot": self.slot,
            "mode": self.mode,
            "mode_set": self.numbering.mode_set,
            "url": self.enrollment.url,
            "home": str(self.home),
            "online": self.online,
            "pending": self.pending_count(),
            "unconfirmed": len(self._outbox) - self.pending_count(),
            "last_sync": self._last_sync,
            "last_position": self._last_position,
            "head": self._head,
            "documents": len(docs),
            "unassigned": sum(1 for v in docs if v.number == 0),
            "duplicates": len(duplicates(docs)),
            "conflicts": len(self._conflicts),
            "rejected": self._rejected,
            "last_error": self._last_error,
        }

    # --- commands -----------------------------------------------------------------------

    def _doc(self, doc_id: str | uuid.UUID) -> DocumentView:
        try:
            d = str(uuid.UUID(str(doc_id)))
        except ValueError:
            raise SynvoiceError("bad_request", f"{doc_id!r} is not a document id") from None
        return self.document(d)

    async def _next_number(self, kind: str, doc_id: uuid.UUID) -> tuple[int, NumberSource]:
        n = self.numbering.next_number(kind, self.user)
        if n is not None:
            return n, "device"
        # Centralized: the server's next number when it answers, else 0 for now.
        if not self.online:
            return 0, "device"
        try:
            client = self._require_online()
            got = (await self._call(client.next_numbers([(kind, doc_id)])))[0]
            return got, "server"
        except SynvoiceError as exc:
            if exc.code == "mode":  # the server's mode changed: learn it, number locally
                try:
                    await self.sync()
                except SynvoiceError:
                    return 0, "device"
                n = self.numbering.next_number(kind, self.user)
                return (n or 0), "device"
            if exc.code in ("unavailable", "internal", "unauthorized", "limit"):
                # No server number now (down, the device's clock off, an edition
                # limit): number 0, assigned later, as offline. A revoked device
                # is told at once: what it makes would never be accepted.
                return 0, "device"
            raise

    async def create(
        self,
        kind: str,
        customer: Customer | dict[str, Any] | str | None = None,
        lines: Iterable[Line | dict[str, Any]] = (),
        *,
        currency: str = "USD",
        issue_date: date | str | None = None,
        due_date: date | str | None = None,
        notes: str | None = None,
        number: int | None = None,
        converted_from: str | uuid.UUID | None = None,
        doc_id: str | uuid.UUID | None = None,
        credits: str | uuid.UUID | None = None,
        payment_terms: str | None = None,
    ) -> DocumentView:
        """A new invoice, quote or estimate, numbered per the user mode (or ``number``,
        set by hand). Works offline (centralized mode then gives number 0).

        ``doc_id`` (optional) lets a caller choose the document id, e.g. derived from
        its own key so that a re-run cannot create the same document twice (a
        centralized server also hands the same reserved number to the same id)."""
        async with self._command():
            new_id = await self._create(
                kind,
                customer,
                lines,
                currency=currency,
                issue_date=issue_date,
                due_date=due_date,
                notes=notes,
                number=number,
                converted_from=converted_from,
                doc_id=doc_id,
                credits=credits,
                payment_terms=payment_terms,
            )
        return self.document(new_id)

    async def _create(
        self,
        kind: str,
        customer: Customer | dict[str, Any] | str | None,
        lines: Iterable[Line | dict[str, Any]],
        *,
        currency: str,
        issue_date: date | str | None,
        due_date: date | str | None,
        notes: str | None,
        number: int | None,
        converted_from: str | uuid.UUID | None,
        doc_id: str | uuid.UUID | None = None,
        credits: str | uuid.UUID | None = None,
        payment_terms: str | None = None,
    ) -> str:
        if kind not in KINDS:
            raise SynvoiceError("schema", f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        fields: dict[str, Any] = {
            "customer": _customer(customer),
            "lines": _lines(lines),
            "currency": currency,
            "issue_date": _date(issue_date, "issue date"),
            "due_date": _date(due_date, "due date"),
            "notes": notes,
            "converted_from": converted_from,
        }
        if credits is not None:  # only set keys go on the wire (older readers forbid new ones)
            fields["credits"] = credits
        if payment_terms is not None:
            fields["payment_terms"] = payment_terms
        _model(DocumentCreated, **fields)  # refuse bad input before taking a number
        if doc_id is None:
            new_id = uuid.uuid4()
        else:
            try:
                new_id = uuid.UUID(str(doc_id))
            except ValueError:
                raise SynvoiceError("bad_request", f"{doc_id!r} is not a document id") from None
            existing = self._view(str(new_id))
            if existing is not None and existing.created:
                raise SynvoiceError("conflict", f"document {new_id} exists already")
        source: NumberSource
        if number is not None:
            _check_number(number)
            source = "manual"
        else:
            number, source = await self._next_number(kind, new_id)
        payload = _model(DocumentCreated, number=number, number_source=source, **fields)
        self._emit("document.created", payload, str(new_id), kind)
        return str(new_id)

    async def edit_customer(
        self, doc_id: str | uuid.UUID, customer: Customer | dict[str, Any] | str
    ) -> DocumentView:
        c = _customer(customer)
        return await self._edit(doc_id, "document.customer_changed", CustomerChanged, customer=c)

    async def edit_lines(
        self, doc_id: str | uuid.UUID, lines: Iterable[Line | dict[str, Any]]
    ) -> DocumentView:
        return await self._edit(doc_id, "document.lines_changed", LinesChanged, lines=_lines(lines))

    async def edit_dates(
        self,
        doc_id: str | uuid.UUID,
        issue_date: date | str | None,
        due_date: date | str | None,
    ) -> DocumentView:
        return await self._edit(
            doc_id,
            "document.dates_changed",
            DatesChanged,
            issue_date=_date(issue_date, "issue date"),
            due_date=_date(due_date, "due date"),
        )

    async def _edit(
        self, doc_id: str | uuid.UUID, type_: str, model: type[BaseModel], **kw: Any
    ) -> DocumentView:
        payload = _model(model, **kw)
        async with self._command():
            v = self._doc(doc_id)
            if v.status in ("issued", "void"):
                raise SynvoiceError(
                    "conflict",
                    f"{_label(v)} is {v.status}: an issued document is not rewritten "
                    "(void it and make a new one)",
                )
            self._emit(type_, payload, v.doc_id, v.kind)
        return self.document(v.doc_id)

    async def set_number(self, doc_id: str | uuid.UUID, number: int) -> DocumentView:
        """Set a number by hand (any mode, any time): e.g. to fix a duplicate."""
        _check_number(number)
        async with self._command():
            v = self._doc(doc_id)
            await self._assign(v, number, "manual")
        return self.document(v.doc_id)

    async def _assign(self, v: DocumentView, number: int, source: NumberSource) -> None:
        payload = NumberAssigned(number=number, source=source, previous=v.number)
        self._emit("document.number_assigned", payload, v.doc_id, v.kind)
        if v.doc_id in self._pending_numbers:  # a later number replaces the pending one
            await self._shielded(self._drop_pending(v.doc_id))

    async def issue(self, doc_id: str | uuid.UUID) -> DocumentView:
        async with self._command():
            v = self._doc(doc_id)
            if v.status != "draft":
                raise SynvoiceError("conflict", f"{_label(v)} is {v.status}, not a draft")
            if v.number == 0:
                raise SynvoiceError(
                    "conflict",
                    f"{_label(v)} has no number yet: assign one (assign_numbers / set_number)",
                )
            self._emit("document.issued", Issued(), v.doc_id, v.kind)
        return self.document(v.doc_id)

    async def void(self, doc_id: str | uuid.UUID, reason: str | None = None) -> DocumentView:
        payload = _model(Voided, reason=reason)
        async with self._command():
            v = self._doc(doc_id)
            if v.status == "void":
                raise SynvoiceError("conflict", f"{_label(v)} is already void")
            self._emit("document.voided", payload, v.doc_id, v.kind)
        return self.document(v.doc_id)

    async def convert(self, quote_id: str | uuid.UUID) -> DocumentView:
        """Turn a quote or estimate into a new invoice (numbered per the user mode)."""
        async with self._command():
            q = self._doc(quote_id)
            if q.kind == "invoice":
                raise SynvoiceError("bad_request", f"{_label(q)} is an invoice already")
            if q.status == "void":
                raise SynvoiceError("conflict", f"{_label(q)} is void")
            if q.converted_to:
                raise SynvoiceError(
                    "conflict", f"{_label(q)} was already converted into {q.converted_to}"
                )
            inv = await self._create(
                "invoice",
                q.customer,
                q.lines,
                currency=q.currency,
                issue_date=None,
                due_date=None,
                notes=q.notes,
                number=None,
                converted_from=q.doc_id,
            )
            self._emit("document.converted", Converted(invoice_id=uuid.UUID(inv)), q.doc_id, q.kind)
        return self.document(inv)

    async def assign_numbers(
        self, doc_ids: Iterable[str | uuid.UUID] | None = None
    ) -> dict[str, int]:
        """Numbers for documents still numbered 0: the given ones, or all this device
        made. Centralized: the server's next numbers (one request, needs the engine);
        single/distributed: the next numbers on the device (distributed: only while
        known epochs last). Returns {doc_id: new number}."""
        async with self._command():
            if doc_ids is None:
                todo = [
                    v
                    for v in self.documents()
                    if v.number == 0 and v.device_id == self.device_id and v.status != "void"
                ]
            else:
                todo = [v for v in (self._doc(d) for d in doc_ids) if v.number == 0]
            if not todo:
                return {}
            out: dict[str, int] = {}
            if self.mode == "centralized":
                client = self._require_online()
                for i in range(0, len(todo), 1000):
                    chunk = todo[i : i + 1000]
                    nums = await self._call(
                        client.next_numbers([(v.kind, uuid.UUID(v.doc_id)) for v in chunk])
                    )
                    # The engine logged each number; keep it locally until it is pulled.
                    rows = [(v.doc_id, v.kind, n) for v, n in zip(chunk, nums, strict=True)]
                    await self._shielded(self._store_pending(rows))
                    out.update({v.doc_id: n for v, n in zip(chunk, nums, strict=True)})
            else:
                for v in todo:
                    n = self.numbering.next_number(v.kind, self.user) or 0
                    if n == 0:
                        break  # distributed: out of known epochs until the next sync
                    await self._assign(v, n, "device")
                    out[v.doc_id] = n
        if self.mode == "centralized" and self.online:
            try:
                await self.sync()
            except SynvoiceError:
                pass  # the pending numbers show meanwhile
        return out

    async def _drop_pending(self, doc_id: str) -> None:
        await self.store.drop_pending_number(doc_id)
        self._pending_numbers.pop(doc_id, None)
        self._vcache.pop(doc_id, None)

    async def _store_pending(self, rows: list[tuple[str, str, int]]) -> None:
        # A background pull may have brought the engine's number_assigned already
        # (the head notice can beat the reply): then nothing is pending.
        rows = [
            (doc, kind, n)
            for doc, kind, n in rows
            if not ((v := self._synced.get(doc)) and v.number == n and v.number_source == "server")
        ]
        if not rows:
            return
        await self.store.set_pending_numbers(rows)
        for doc, kind, n in rows:
            self._pending_numbers[doc] = (kind, n)
            self._vcache.pop(doc, None)


async def _stop(task: asyncio.Task[Any]) -> None:
    """Cancel a task and wait for its end. Cancels again if a cancellation was
    swallowed (``asyncio.wait_for`` can do that on Python 3.11 when its inner
    awaitable completes at the same moment)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled():
        task.exception()  # retrieved: its failure was already recorded


def _is_doc_event(ev: Event) -> bool:
    return ev.doc_id is not None and ev.kind is not None and ev.type.startswith("document.")


def _check_number(number: int) -> None:
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 2**53:
        raise SynvoiceError("schema", f"a document number is a whole number >= 1, not {number!r}")


def _label(v: DocumentView) -> str:
    return f"{v.kind} {v.number}" if v.number else f"{v.kind} {v.doc_id[:8]} (unnumbered)"
