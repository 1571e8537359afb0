"""Sync: push the outbox, pull the log after the last position, and the loop.

Runs outside the command lock: commands only record events in the local state;
this path sends them and brings everyone else's. Pulled events are stored page
by page together with the new last position, so a sync that is cut off goes on
from the last stored page, never from zero. The pull itself takes its pages
from any ``fetch(after)`` (the engine's, or a test's), so the fold and store
path can be exercised without a broker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from devices.catchup import FoldedPage, Prefetch, fold_page
from devices.connection import PER_EVENT_CODES, Connection
from devices.gcpause import gc_paused, gc_release
from devices.state import LocalState
from devices.store import VIEW_SHAPE, OutboxItem, PageWrite
from engine.document import DocumentView
from engine.errors import SynvoiceError
from engine.events import now
from engine.messages import PulledPage

log = logging.getLogger("synvoice.device")

PUSH_BATCH = 1000  # events per push request
PUSH_MAX_BYTES = 3 * 1024 * 1024  # below the engine's 4 MiB request limit
PULL_LIMIT = 5000
# A pull of at least this many events, more than the store holds, drops the
# document index of the events table and makes it again at the end.
BULK_PULL = 20_000
# Refusals of the device itself (revoked, edition limit …): retried every 30 s.
SLOW_RETRY_CODES = {"revoked", "unauthorized", "limit"}
SLOW_RETRY = 30.0

ProgressFn = Callable[[int, int], None]  # (pulled so far, events to pull in this sync)
Fetch = Callable[[int], Awaitable[PulledPage]]  # one page after a position


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


class Sync:
    """One device's sync path: explicit ``sync()`` calls and the background loop."""

    def __init__(
        self,
        state: LocalState,
        conn: Connection,
        wake: asyncio.Event,
        *,
        poll_interval: float,
        retry_min: float,
        retry_max: float,
    ) -> None:
        self.state = state
        self.conn = conn
        self.wake = wake  # set: sync soon (new events, a head notice, a reconnect)
        self.poll_interval = poll_interval
        self.retry_min = retry_min
        self.retry_max = retry_max
        self._lock = asyncio.Lock()  # one sync at a time

    async def sync(self, on_progress: ProgressFn | None = None) -> SyncResult:
        """Push the outbox, then pull everything after the last position.

        Raises ``SynvoiceError("unavailable")`` when offline or when the engine
        does not answer; what was done before that is kept.
        """
        self.conn.require_online()
        st = self.state
        async with self._lock:
            try:
                pushed, dups, rejected = await self._push_all()
            except SynvoiceError as exc:
                if exc.code == "unavailable":
                    raise
                # Refused for a reason that is not one event's (an edition limit,
                # say): the device still gets everyone else's work, then hears why.
                await pull(st, self._fetch, on_progress)
                raise
            pulled = await pull(st, self._fetch, on_progress)
            at = now().isoformat()
            self.conn.last_error = None
            await st.shielded(st.set_last_sync(at))
            return SyncResult(
                pushed, dups, rejected, pulled, st.last_position, st.head, st.pending_count(), at
            )

    def on_head(self, head: int) -> None:
        """The engine's head notice: pull soon if it is ahead of this device."""
        if head > self.state.head:
            self.state.head = head
        if head > self.state.last_position:
            self.wake.set()

    async def loop(self) -> None:
        """Sync whenever woken (or every ``poll_interval``) while connected; retry
        failures with backoff."""
        backoff = self.retry_min
        while not self.conn.stopping:
            try:
                await asyncio.wait_for(self.wake.wait(), self.poll_interval)
            except TimeoutError:
                pass  # a periodic pull: head notifications are not stored by the broker
            self.wake.clear()
            if not self.conn.online:
                continue
            try:
                await self.sync()
                backoff = self.retry_min
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not isinstance(exc, SynvoiceError):
                    log.warning("sync failed: %r", exc)
                self.conn.last_error = str(exc)
                # Refusals that time alone will not cure are retried slowly.
                slow = isinstance(exc, SynvoiceError) and exc.code in SLOW_RETRY_CODES
                await asyncio.sleep(max(backoff, SLOW_RETRY) if slow else backoff)
                backoff = min(backoff * 2, self.retry_max)
                self.wake.set()

    async def wait_synced(self, timeout: float = 30.0) -> None:
        """Wait until the outbox is empty and everything up to the head is pulled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        st = self.state
        while st.outbox or st.last_position < st.head:
            if loop.time() > deadline:
                raise SynvoiceError("unavailable", "not synced in time")
            self.wake.set()
            await asyncio.sleep(0.05)

    # --- push ---------------------------------------------------------------------------

    async def _push_all(self) -> tuple[int, int, int]:
        # What is unsent now; events made meanwhile go with the next sync, so a
        # busy device still gets to pull.
        unsent = self.state.unsent()
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
            p, d, r = await self._push_batch(batch)
            pushed, dups, rejected = pushed + p, dups + d, rejected + r
        return pushed, dups, rejected

    async def _push_batch(self, batch: list[OutboxItem]) -> tuple[int, int, int]:
        st = self.state
        try:
            reply = await self.conn.push([it.body for it in batch])
        except SynvoiceError as exc:
            if exc.code not in PER_EVENT_CODES:
                raise
            # One event's content was refused: find it by halves and set it aside,
            # so one bad event never blocks the outbox.
            if len(batch) == 1:
                await st.shielded(st.reject(batch[0], str(exc)))
                return 0, 0, 1
            mid = len(batch) // 2
            a = await self._push_batch(batch[:mid])
            b = await self._push_batch(batch[mid:])
            return a[0] + b[0], a[1] + b[1], a[2] + b[2]
        await st.shielded(st.ack(reply.acks))
        st.head = max(st.head, reply.head)
        return len(reply.acks) - reply.duplicates, reply.duplicates, 0

    async def _fetch(self, after: int) -> PulledPage:
        # The request is made only when the prefetch task runs: one cancelled
        # before it starts leaves no un-awaited coroutine behind.
        return await self.conn.pull_page(after, PULL_LIMIT, hashes=True)


async def pull(state: LocalState, fetch: Fetch, on_progress: ProgressFn | None = None) -> int:
    """Pull pages after the last position until the head. Three stages overlap:
    ``fetch`` reads page k+1 (``Prefetch``), this loop folds page k, and the
    store writes page k-1. A page's progress is reported once it is stored.

    ``fetch(after)`` gives one page: the engine's (``Sync``) or any other source
    of pages in the engine's format (a test's)."""
    st = state
    start = st.last_position
    pulled = 0
    pages = Prefetch(fetch, st.last_position)
    # Views folded but not stored yet (the next page folds on top).
    unstored: dict[str, DocumentView] = {}
    folded_to = st.last_position
    writing: asyncio.Future[int] | None = None
    head = st.head

    def report() -> None:
        if on_progress is not None:
            on_progress(st.last_position - start, max(head - start, 0))

    bulk = False  # the document index is dropped until the end (see store.DOC_INDEX)
    frozen = False
    try:
        while (page := await pages.next()) is not None:
            # Refused whole (``tampered``) if it disagrees with the checkpoints held.
            st.anchors.check_page(page, folded_to, st.last_position)
            head = page.head
            st.head = max(st.head, head)
            todo = head - folded_to
            if not bulk and todo >= BULK_PULL and todo > folded_to:
                bulk = True
                await st.shielded(st.store.drop_doc_index())
            with gc_paused(keep=True):  # the new views live on (see gcpause)
                frozen = True
                folded = fold_page(
                    page.events,
                    folded_to,
                    st.synced,
                    unstored=unstored,
                    device_id=st.device_id,
                    outbox_ids=st.outbox_ids,
                    pending_numbers=st.pending_numbers,
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
            for t, kind, data, when in folded.numbering:
                st.numbering.observe_wire(t, kind, data, when)
            meta: dict[str, Any] = {
                "last_position": folded.last,
                "head": max(head, folded.last),
                "view_shape": VIEW_SHAPE,
                "anchors": st.anchors.to_meta(),
            }
            if folded.numbering:
                meta["numbering"] = st.numbering.to_snapshot()
            unstored.update(folded.views)
            folded_to = folded.last
            # Started now (not when this loop next waits): a cancelled sync
            # still completes the write it handed over.
            write = st.store_page(_page_write(folded, meta), folded.last)
            writing = asyncio.shield(st.critical_task(write))
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
            await st.shielded(st.store.make_doc_index())
    return pulled


def _page_write(page: FoldedPage, meta: dict[str, Any]) -> PageWrite:
    return PageWrite(page.rows, page.views, page.conflicts, page.acked, page.cleared, meta)
