"""The device's local state: its store on disk and the same state in memory.

One job: keep memory and ``device.sqlite`` in step. Commands add events to the
outbox here (in memory at once, on disk with one group commit); the sync path
hands over acknowledgements, refusals and pulled pages. No broker code: a
``LocalState`` works the same online and offline, and in tests without a server.

Every store write and the matching in-memory change run to completion even if
the caller is cancelled (``shielded``), so memory and disk never disagree.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, TypeVar

from pydantic import BaseModel

from devices.anchors import DeviceAnchors
from devices.numbering import DeviceNumbering
from devices.store import VIEW_SHAPE, DeviceStore, OutboxItem, PageWrite
from engine import codec
from engine.document import Conflict, DocumentView, apply
from engine.errors import SynvoiceError
from engine.events import Event, new_event

log = logging.getLogger("synvoice.device")

T = TypeVar("T")


class LocalState:
    """Views, outbox, numbering and positions of one device, backed by its store."""

    def __init__(
        self, store: DeviceStore, device_id: str, user: str, on_stored: Callable[[], None]
    ) -> None:
        self.store = store
        self.device_id = device_id
        self.user = user
        # Called once new events are durable: the sync loop may push them.
        self._on_stored = on_stored
        self.numbering = DeviceNumbering()
        self.seq = 0
        self.last_position = 0
        self.head = 0
        self.anchors = DeviceAnchors()  # the engine key and checkpoints (devices.anchors)
        self.last_sync: str | None = None
        self.outbox: dict[int, OutboxItem] = {}  # device_seq -> item, in order
        self.outbox_ids: dict[str, int] = {}  # event id -> device_seq
        self.outbox_docs: dict[str, list[int]] = {}  # doc id -> device_seqs
        self.synced: dict[str, DocumentView] = {}
        self.conflicts: list[Conflict] = []
        self.rejected = 0
        self.pending_numbers: dict[str, tuple[str, int]] = {}  # doc -> (kind, number)
        self._vcache: dict[str, DocumentView | None] = {}  # views with unsent events on top
        self._to_write: list[tuple[OutboxItem, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._critical: set[asyncio.Task[Any]] = set()

    # --- life cycle --------------------------------------------------------------------

    async def restore(self) -> None:
        """Load what the store holds (re-folding if the view shape changed)."""
        data = await self.store.load()
        m = data.meta
        self.seq = int(m.get("device_seq", 0))
        self.last_position = int(m.get("last_position", 0))
        self.head = int(m.get("head", 0))
        self.anchors = DeviceAnchors(m.get("anchors"))
        self.last_sync = m.get("last_sync")
        snap = m.get("numbering")
        self.numbering = DeviceNumbering.from_snapshot(snap) if snap else DeviceNumbering()
        self.synced = data.views
        self.conflicts = data.conflicts
        self.rejected = data.rejected
        self.pending_numbers = data.pending_numbers
        if m.get("view_shape") != VIEW_SHAPE and self.last_position:
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
                if is_doc_event(ev):
                    d = str(ev.doc_id)
                    views[d], cs = apply(views.get(d), ev)
                    conflicts.extend(cs)
        await self.store.replace_views(
            views, conflicts, {"view_shape": VIEW_SHAPE, "numbering": numbering.to_snapshot()}
        )
        self.synced, self.conflicts, self.numbering = views, conflicts, numbering
        self._vcache.clear()

    async def close(self) -> None:
        """Wait for writes in flight, then close the store."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._critical:
            await asyncio.gather(*list(self._critical), return_exceptions=True)
        await self.store.close()

    # --- writes that must finish ---------------------------------------------------------

    async def shielded(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a store write and the matching in-memory update to completion even if
        the caller is cancelled, so memory and disk never disagree."""
        return await asyncio.shield(self.critical_task(coro))

    def critical_task(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
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

    # --- the outbox ----------------------------------------------------------------------

    def emit(
        self, type_: str, payload: BaseModel, doc_id: str, kind: str
    ) -> tuple[Event, asyncio.Future[None]]:
        """Make an event: in memory at once (views, numbering), on disk with the next
        group commit. The future is done once the event is durable."""
        self.seq += 1
        ev = new_event(
            type_,
            payload,
            device_id=self.device_id,
            user=self.user,
            device_seq=self.seq,
            doc_id=uuid.UUID(doc_id),
            kind=kind,
            seen_position=self.last_position,
        )
        item = OutboxItem(self.seq, ev, codec.pack(ev.to_wire()))
        self._add_outbox_item(item)
        self.numbering.observe(ev)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._to_write.append((item, fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_outbox(), name="device-outbox")
        return ev, fut

    async def _write_outbox(self) -> None:
        while self._to_write:
            batch, self._to_write = self._to_write, []
            items = [it for it, _ in batch]
            try:
                await self.store.add_outbox(items, max(it.seq for it in items))
            except Exception as exc:
                log.exception("could not store %d event(s)", len(items))
                for it, fut in batch:
                    if it.seq in self.outbox:
                        self._drop_outbox_item(it.seq)
                    fut.set_exception(SynvoiceError("internal", f"event not stored: {exc}"))
                continue
            for it, fut in batch:
                it.durable = True
                fut.set_result(None)
            self._on_stored()

    def _add_outbox_item(self, it: OutboxItem) -> None:
        self.outbox[it.seq] = it
        self.outbox_ids[str(it.event.event_id)] = it.seq
        if it.event.doc_id is not None:
            d = str(it.event.doc_id)
            self.outbox_docs.setdefault(d, []).append(it.seq)
            self._vcache.pop(d, None)

    def _drop_outbox_item(self, seq: int) -> None:
        it = self.outbox.pop(seq)
        self.outbox_ids.pop(str(it.event.event_id), None)
        if it.event.doc_id is not None:
            d = str(it.event.doc_id)
            self._vcache.pop(d, None)
            seqs = self.outbox_docs.get(d, [])
            if seq in seqs:
                seqs.remove(seq)
            if not seqs:
                self.outbox_docs.pop(d, None)

    def unsent(self) -> list[OutboxItem]:
        """Durable events the engine has not acknowledged yet, in device order."""
        return [it for it in self.outbox.values() if it.position is None and it.durable]

    def pending_count(self) -> int:
        """Events not yet acknowledged by the engine."""
        return sum(1 for it in self.outbox.values() if it.position is None)

    # --- what the engine said --------------------------------------------------------------

    async def ack(self, acks: list[tuple[str, int]]) -> None:
        """The engine stored these events at these positions (they stay in the
        outbox until pulled, so the view never loses them)."""
        await self.store.mark_acked(acks)
        for eid, pos in acks:
            seq = self.outbox_ids.get(eid)
            if seq is not None:
                self.outbox[seq].position = pos

    async def reject(self, item: OutboxItem, error: str) -> None:
        """The engine refused this event for good: set it aside, on record."""
        log.error("engine refused event %s for good: %s", item.event.event_id, error)
        await self.store.reject(item, error)
        self._drop_outbox_item(item.seq)
        self.rejected += 1

    async def store_page(self, page: PageWrite, last: int) -> int:
        """Store a folded page, then make the same change in memory."""
        await self.store.write_page(page)
        # Stored: now the same change in memory (no await from here on).
        self.synced.update(page.views)
        if self._vcache:
            for doc in page.views:
                self._vcache.pop(doc, None)
        self.conflicts.extend(page.conflicts)
        for eid in page.acked_ids:
            seq = self.outbox_ids.get(eid)
            if seq is not None:
                self._drop_outbox_item(seq)
        for doc in page.cleared_numbers:
            self.pending_numbers.pop(doc, None)
            self._vcache.pop(doc, None)
        self.last_position = last
        self.head = max(self.head, int(page.meta["head"]))
        return len(page.rows)

    async def set_last_sync(self, at: str) -> None:
        await self.store.set_meta({"last_sync": at})
        self.last_sync = at

    async def store_pending(self, rows: list[tuple[str, str, int]]) -> None:
        """Server numbers handed out and logged by the engine, shown until pulled."""
        # A background pull may have brought the engine's number_assigned already
        # (the head notice can beat the reply): then nothing is pending.
        rows = [
            (doc, kind, n)
            for doc, kind, n in rows
            if not ((v := self.synced.get(doc)) and v.number == n and v.number_source == "server")
        ]
        if not rows:
            return
        await self.store.set_pending_numbers(rows)
        for doc, kind, n in rows:
            self.pending_numbers[doc] = (kind, n)
            self._vcache.pop(doc, None)

    async def drop_pending(self, doc_id: str) -> None:
        await self.store.drop_pending_number(doc_id)
        self.pending_numbers.pop(doc_id, None)
        self._vcache.pop(doc_id, None)

    # --- reads ---------------------------------------------------------------------------

    def view(self, doc_id: str) -> DocumentView | None:
        """The synced view with this device's unsent events (and pending number) on top."""
        if doc_id not in self.outbox_docs and doc_id not in self.pending_numbers:
            return self.synced.get(doc_id)
        if doc_id in self._vcache:
            return self._vcache[doc_id]
        v = self.synced.get(doc_id)
        for seq in self.outbox_docs.get(doc_id, ()):
            v, _ = apply(v, self.outbox[seq].event)
        pending = self.pending_numbers.get(doc_id)
        if pending is not None and v is not None:
            v = replace(v, number=pending[1], number_source="server")
        self._vcache[doc_id] = v
        return v

    def document(self, doc_id: str | uuid.UUID) -> DocumentView:
        """The document as this device sees it (synced events + its own unsent ones)."""
        v = self.view(str(doc_id))
        if v is None or not v.created:
            raise SynvoiceError("not_found", f"no document {doc_id}")
        return v

    def documents(self, kind: str | None = None) -> list[DocumentView]:
        ids = set(self.synced) | set(self.outbox_docs) | set(self.pending_numbers)
        out = []
        for d in ids:
            v = self.view(d)
            if v is not None and v.created and (kind is None or v.kind == kind):
                out.append(v)
        out.sort(key=lambda v: (v.kind, v.number or 1 << 62, v.created_at or "", v.doc_id))
        return out

    async def history(self, doc_id: str | uuid.UUID) -> list[Event]:
        """Every event of a document: pulled ones by position, then unsent ones."""
        d = str(doc_id)
        events = await self.store.doc_events(d)
        events += [self.outbox[s].event for s in self.outbox_docs.get(d, ())]
        return events


def is_doc_event(ev: Event) -> bool:
    return ev.doc_id is not None and ev.kind is not None and ev.type.startswith("document.")
