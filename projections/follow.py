"""The incremental driver: follow the log batch by batch, never skipping a position.

Records arrive from anywhere (the engine's commit listener, a JetStream
consumer), possibly redelivered or with holes. ``Follower.feed`` drops the
ones at or below the checkpoint, fills a hole from ``fill`` (the log itself, or
the engine's pull endpoint) before going on, verifies each record's hash link
from the checkpoint's hash, folds, and writes views plus checkpoint in one
transaction. Folding and writing run in a worker thread so the event loop
stays free.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import msgspec

from engine.client import EngineClient
from engine.errors import SynvoiceError
from engine.hashchain import ChainVerifier, declared_gap
from engine.stored import StoredEventError, decode_stored
from projections.consumer import Filler, fill_hole
from projections.consumer import Row as Row  # re-exported: the row type of both modules
from projections.model import Projector
from projections.store import ViewStore

# Views kept in memory between batches (more are reloaded from the views file).
CACHE_DOCS = 2_000
# Series with more numbers than this get their gaps recomputed at most every
# GAPS_EVERY seconds rather than on every batch.
BIG_SERIES = 1_000
GAPS_EVERY = 0.5


class Follower:
    def __init__(self, store: ViewStore, fill: Filler | None = None) -> None:
        self.store = store
        self.projector: Projector = store.load_projector(cached=True)
        self.fill = fill
        self._lock = asyncio.Lock()
        self.filled = 0  # records fetched to fill holes (for tests and logs)
        # The committed checkpoint (the projector runs ahead of it while a batch folds).
        self.position = self.projector.position
        self._gaps_at = float("-inf")

    @property
    def gaps_pending(self) -> bool:
        """Gap lists of big series wait for ``flush_gaps`` (or the next batch)."""
        return self.projector.gaps_pending

    async def flush_gaps(self) -> None:
        async with self._lock:
            if self.projector.gaps_pending:
                await self._run(lambda: self._apply((), force_gaps=True))

    @classmethod
    async def open(cls, store: ViewStore, fill: Filler | None = None) -> Follower:
        return await asyncio.to_thread(cls, store, fill)

    async def feed(self, rows: Sequence[Row]) -> int:
        """Apply ``rows`` (any order, duplicates allowed); returns the new checkpoint."""
        async with self._lock:
            todo: list[Row] = []
            nxt = self.projector.position + 1
            for row in sorted(rows, key=lambda r: r[0]):
                pos = row[0]
                if pos < nxt:
                    continue  # at or below the checkpoint: already in the views
                if pos > nxt and not declared_gap(nxt - 1, pos, row[1]):
                    todo.extend(await self._fill_hole(nxt - 1, pos - 1))
                todo.append(row)
                nxt = pos + 1
            if todo:
                await self._run(lambda: self._apply(todo))
            return self.position

    @staticmethod
    async def _run(fn: Callable[[], None]) -> None:
        work = asyncio.ensure_future(asyncio.to_thread(fn))
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            await work  # a cancelled caller still lets the transaction finish
            raise

    async def _fill_hole(self, after: int, upto: int) -> list[Row]:
        if self.fill is None:
            raise StoredEventError(after + 1, f"positions {after + 1}..{upto} are missing")
        out = await fill_hole(self.fill, after, upto)
        self.filled += len(out)
        return out

    def _apply(self, rows: Sequence[Row], force_gaps: bool = False) -> None:
        """Verify, fold and persist (worker thread); on any failure the in-memory
        state is reloaded from the last committed checkpoint."""
        proj = self.projector
        verifier = ChainVerifier(proj.last_hash, proj.position + 1)
        try:
            events = []
            for pos, body, h in rows:
                broken = verifier.feed(pos, body, h)
                if broken is not None:
                    raise StoredEventError(broken.position, f"hash chain broken: {broken.reason}")
                events.append((decode_stored(pos, body), h))
            proj.preload(ev.get("doc_id") for ev, _ in events)
            for ev, h in events:
                proj.apply(ev, h)
            now = time.monotonic()
            big = None if force_gaps or now - self._gaps_at >= GAPS_EVERY else BIG_SERIES
            self.store.flush(proj.take_changes(defer_gaps_above=big), expect=self.position)
            if big is None:
                self._gaps_at = now
            self.position = proj.position
            proj.evict(CACHE_DOCS)
        except BaseException:
            self.projector = self.store.load_projector(cached=True)
            raise


async def pull_rows(
    client: EngineClient, after: int, limit: int = 5000
) -> tuple[int, bool, list[Row]]:
    """One pull page as exact stored bytes: (head, more, rows). Verifying the chain
    needs the bytes exactly as stored (``EngineClient.pull_page`` keeps them)."""
    try:
        page = await client.pull_page(after, limit, hashes=True)
    except SynvoiceError:
        raise
    except Exception as exc:  # the connection itself (closed, reconnecting)
        raise SynvoiceError("unavailable", f"pull from the engine failed: {exc}") from None
    hashes = page.hashes or []
    if len(hashes) != len(page.events):
        raise SynvoiceError("internal", "the engine's pull reply has no hashes")
    rows = [
        (after + 1 + i, bytes(b), bytes(h))
        for i, (b, h) in enumerate(zip(page.events, hashes, strict=True))
    ]
    if rows and _position(rows[-1][1]) != rows[-1][0]:
        # Not contiguous: a log rollback skipped positions (settings.log_rolled_back).
        rows = [(_position(b), b, h) for _, b, h in rows]
    return page.head, page.more, rows


class _Position(msgspec.Struct):
    position: int


_decode_position = msgspec.msgpack.Decoder(_Position).decode


def _position(body: bytes) -> int:
    try:
        return _decode_position(body).position
    except msgspec.DecodeError as exc:
        raise SynvoiceError("internal", f"malformed event in a pull reply: {exc}") from None


def engine_filler(client: EngineClient, page: int = 5000) -> Filler:
    async def fill(after: int, upto: int) -> Sequence[Row]:
        _, _, rows = await pull_rows(client, after, min(page, upto - after))
        return rows

    return fill
