"""The device's local store: one SQLite file (aiosqlite, WAL) in its home folder.

Tables:

* ``outbox``: events made on the device, in device_seq order, with the log
  position once the engine acknowledged them; a row leaves the outbox when
  the event comes back in a pull (so the local view never loses it);
* ``events``: every event pulled from the engine, by position;
* ``docs``: the synced document views (fold of ``events``), so opening the
  store does not re-fold the whole log;
* ``conflicts``: conflicts the fold reported; ``rejected``: events the engine
  refused for good (kept, visible in status, never silently dropped);
* ``pending_numbers``: server numbers handed out by "assign" and not pulled yet;
* ``meta``: credentials, counters, last pulled position, numbering state.

Every write is one transaction, so a page of pulled events, the views it
changed and the new last position are stored together or not at all.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from operator import attrgetter
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec

from devices.gcpause import gc_paused
from engine import codec
from engine.document import Conflict, DocumentView, FieldWrite
from engine.errors import SynvoiceError
from engine.events import Event, parse_event

# Pulled events by document (history). A long catch-up drops it and makes it again
# at the end: one sort instead of 100k inserts at random places; ``open`` makes it
# again if a catch-up was cut off.
DOC_INDEX = "CREATE INDEX IF NOT EXISTS events_doc ON events(doc_id) WHERE doc_id IS NOT NULL"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    device_seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    doc_id TEXT,
    body BLOB NOT NULL,
    position INTEGER
);
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    doc_id TEXT,
    body BLOB NOT NULL
);
{DOC_INDEX};
CREATE TABLE IF NOT EXISTS docs (doc_id TEXT PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS conflicts (id INTEGER PRIMARY KEY, doc_id TEXT, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS rejected (
    event_id TEXT PRIMARY KEY,
    device_seq INTEGER NOT NULL,
    body BLOB NOT NULL,
    error TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_numbers (
    doc_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    number INTEGER NOT NULL
);
"""

STORE_VERSION = 1

_VIEW_FIELDS = tuple(f.name for f in fields(DocumentView))
_WRITE_FIELDS = tuple(f.name for f in fields(FieldWrite))
# Stored views are valid only for the DocumentView shape that wrote them; when
# engine.document changes, views are re-folded from the stored events.
VIEW_SHAPE = ",".join(_VIEW_FIELDS) + "|" + ",".join(_WRITE_FIELDS)


# Views are rebuilt without their __init__ (a device may open 100k of them) when
# the classes keep their fields in __dict__; otherwise through the constructors.
_FAST = all(hasattr(object.__new__(c), "__dict__") for c in (DocumentView, FieldWrite))


_encode = msgspec.msgpack.Encoder().encode  # msgpack's own output, several times faster
_decode = msgspec.msgpack.Decoder().decode
_write_fields = attrgetter(*_WRITE_FIELDS)  # a FieldWrite as an array, in field order


def view_to_bytes(v: DocumentView) -> bytes:
    d = dict(v.__dict__) if _FAST else {n: getattr(v, n) for n in _VIEW_FIELDS}
    d["writes"] = {k: _write_fields(w) for k, w in v.writes.items()}
    return _encode(d)


def view_from_bytes(raw: bytes) -> DocumentView:
    """The inverse of ``view_to_bytes`` for a view of the current ``VIEW_SHAPE``."""
    d = _decode(raw)
    made: dict[tuple[Any, ...], FieldWrite] = {}  # one created event writes 4 fields
    writes = {}
    for k, w in d["writes"].items():
        key = tuple(w)
        fw = made.get(key)
        if fw is None:
            if _FAST:
                fw = object.__new__(FieldWrite)
                fw.__dict__.update(zip(_WRITE_FIELDS, w, strict=True))
            else:
                fw = FieldWrite(*w)
            made[key] = fw
        writes[k] = fw
    d["writes"] = writes
    if not _FAST:
        return DocumentView(**d)
    v: DocumentView = object.__new__(DocumentView)
    v.__dict__.update(d)
    return v


@dataclass
class OutboxItem:
    seq: int
    event: Event
    body: bytes  # the msgpack wire map, pushed as is on every retry
    position: int | None = None  # set once the engine acknowledged it
    durable: bool = False  # in the store (only durable events are pushed)


@dataclass
class Loaded:
    meta: dict[str, Any]
    outbox: list[OutboxItem]
    views: dict[str, DocumentView]
    conflicts: list[Conflict]
    rejected: int
    pending_numbers: dict[str, tuple[str, int]]


EventRow = tuple[int, str, str, str | None, bytes]  # position, id, type, doc, body


@dataclass
class PageWrite:
    """Everything one pulled page changes, written in one transaction."""

    rows: list[EventRow]
    views: dict[str, DocumentView]
    conflicts: list[Conflict]
    acked_ids: list[str]  # our outbox events that came back
    cleared_numbers: list[str]  # pending server numbers now in the log
    meta: dict[str, Any]


class DeviceStore:
    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> DeviceStore:
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            # FULL: an event the device accepted is on disk before the call returns.
            await conn.execute("PRAGMA synchronous=FULL")
            await conn.execute("PRAGMA busy_timeout=5000")
            # A catch-up inserts into the events_doc index at random places: keep its
            # pages cached (a cap, not an allocation; SQLite's default is 2 MiB).
            await conn.execute("PRAGMA cache_size=-65536")
            await conn.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            await conn.close()  # its thread would keep the process from exiting
            raise SynvoiceError("bad_request", f"{path} is not a device store: {exc}") from None
        return cls(conn, path)

    async def close(self) -> None:
        async with self._lock:
            await self.conn.close()

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
            await self.conn.execute("COMMIT")

    # --- meta -------------------------------------------------------------------------

    async def get_meta(self, key: str) -> Any:
        async with self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)) as cur:
            row = await cur.fetchone()
        return codec.unpack(row[0]) if row else None

    async def set_meta(self, values: dict[str, Any]) -> None:
        async with self.tx() as c:
            await _put_meta(c, values)

    # --- loading ----------------------------------------------------------------------

    async def load(self) -> Loaded:
        meta: dict[str, Any] = {}
        async with self.conn.execute("SELECT key, value FROM meta") as cur:
            async for k, v in cur:
                meta[k] = codec.unpack(v)
        outbox = []
        q = "SELECT device_seq, body, position FROM outbox ORDER BY device_seq"
        async with self.conn.execute(q) as cur:
            async for seq, body, pos in cur:
                outbox.append(OutboxItem(seq, parse_event(codec.unpack(body)), body, pos))
        views: dict[str, DocumentView] = {}
        if meta.get("view_shape") == VIEW_SHAPE:
            async with self.conn.execute("SELECT doc_id, body FROM docs") as cur:
                while rows := await cur.fetchmany(10000):
                    # Long-lived views: the collector's passes over them were ~40%
                    # of opening a store of 100k documents (see gcpause).
                    with gc_paused(keep=True):
                        for doc_id, body in rows:
                            views[doc_id] = view_from_bytes(body)
        conflicts = []
        async with self.conn.execute("SELECT body FROM conflicts ORDER BY id") as cur:
            async for (body,) in cur:
                conflicts.append(Conflict(**codec.unpack(body)))
        async with self.conn.execute("SELECT count(*) FROM rejected") as cur:
            row = await cur.fetchone()
            rejected = int(row[0]) if row else 0
        pending = {}
        async with self.conn.execute("SELECT doc_id, kind, number FROM pending_numbers") as cur:
            async for doc_id, kind, number in cur:
                pending[doc_id] = (kind, number)
        return Loaded(meta, outbox, views, conflicts, rejected, pending)

    async def iter_events(self, chunk: int = 5000) -> AsyncIterator[list[Event]]:
        """Every pulled event in position order (to re-fold the views)."""
        after = 0
        while True:
            q = "SELECT position, body FROM events WHERE position > ? ORDER BY position LIMIT ?"
            async with self.conn.execute(q, (after, chunk)) as cur:
                rows = list(await cur.fetchall())
            if not rows:
                return
            after = rows[-1][0]
            yield [parse_event(codec.unpack(b), stored=True) for _, b in rows]

    async def doc_events(self, doc_id: str) -> list[Event]:
        q = "SELECT body FROM events WHERE doc_id = ? ORDER BY position"
        async with self.conn.execute(q, (doc_id,)) as cur:
            return [parse_event(codec.unpack(b), stored=True) async for (b,) in cur]

    # --- writes ------------------------------------------------------------------------

    async def add_outbox(self, items: Sequence[OutboxItem], device_seq: int) -> None:
        async with self.tx() as c:
            await c.executemany(
                "INSERT INTO outbox(device_seq, event_id, doc_id, body) VALUES (?,?,?,?)",
                [
                    (
                        it.seq,
                        str(it.event.event_id),
                        str(it.event.doc_id) if it.event.doc_id else None,
                        it.body,
                    )
                    for it in items
                ],
            )
            await _put_meta(c, {"device_seq": device_seq})

    async def mark_acked(self, acks: Iterable[tuple[str, int]]) -> None:
        async with self.tx() as c:
            await c.executemany(
                "UPDATE outbox SET position = ? WHERE event_id = ?",
                [(pos, eid) for eid, pos in acks],
            )

    async def reject(self, item: OutboxItem, error: str) -> None:
        async with self.tx() as c:
            await c.execute(
                "INSERT OR REPLACE INTO rejected(event_id, device_seq, body, error) "
                "VALUES (?,?,?,?)",
                (str(item.event.event_id), item.seq, item.body, error),
            )
            await c.execute("DELETE FROM outbox WHERE device_seq = ?", (item.seq,))

    async def rejected(self) -> list[dict[str, Any]]:
        q = "SELECT event_id, device_seq, body, error FROM rejected ORDER BY device_seq"
        async with self.conn.execute(q) as cur:
            return [
                {"event_id": e, "device_seq": s, "event": codec.unpack(b), "error": err}
                async for e, s, b, err in cur
            ]

    async def set_pending_numbers(self, items: Iterable[tuple[str, str, int]]) -> None:
        async with self.tx() as c:
            await c.executemany(
                "INSERT OR REPLACE INTO pending_numbers(doc_id, kind, number) VALUES (?,?,?)",
                list(items),
            )

    async def drop_pending_number(self, doc_id: str) -> None:
        async with self.tx() as c:
            await c.execute("DELETE FROM pending_numbers WHERE doc_id = ?", (doc_id,))

    async def write_page(self, page: PageWrite) -> None:
        async with self.tx() as c:
            await c.executemany(
                "INSERT OR IGNORE INTO events(position, event_id, type, doc_id, body) "
                "VALUES (?,?,?,?,?)",
                page.rows,
            )
            with gc_paused():  # thousands of views (see gcpause)
                docs = [(d, view_to_bytes(v)) for d, v in page.views.items()]
            await c.executemany("INSERT OR REPLACE INTO docs(doc_id, body) VALUES (?, ?)", docs)
            if page.conflicts:
                await c.executemany(
                    "INSERT INTO conflicts(doc_id, body) VALUES (?, ?)",
                    [(x.doc_id, codec.pack(x.as_dict())) for x in page.conflicts],
                )
            if page.acked_ids:
                await c.executemany(
                    "DELETE FROM outbox WHERE event_id = ?", [(i,) for i in page.acked_ids]
                )
            if page.cleared_numbers:
                await c.executemany(
                    "DELETE FROM pending_numbers WHERE doc_id = ?",
                    [(d,) for d in page.cleared_numbers],
                )
            await _put_meta(c, page.meta)

    async def drop_doc_index(self) -> None:
        async with self.tx() as c:
            await c.execute("DROP INDEX IF EXISTS events_doc")

    async def make_doc_index(self) -> None:
        async with self.tx() as c:
            await c.execute(DOC_INDEX)

    async def replace_views(
        self, views: dict[str, DocumentView], conflicts: list[Conflict], meta: dict[str, Any]
    ) -> None:
        """After a re-fold: swap every stored view and conflict at once."""
        async with self.tx() as c:
            await c.execute("DELETE FROM docs")
            await c.executemany(
                "INSERT INTO docs(doc_id, body) VALUES (?, ?)",
                [(d, view_to_bytes(v)) for d, v in views.items()],
            )
            await c.execute("DELETE FROM conflicts")
            await c.executemany(
                "INSERT INTO conflicts(doc_id, body) VALUES (?, ?)",
                [(x.doc_id, codec.pack(x.as_dict())) for x in conflicts],
            )
            await _put_meta(c, meta)


async def _put_meta(c: aiosqlite.Connection, values: dict[str, Any]) -> None:
    await c.executemany(
        "INSERT INTO meta(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [(k, codec.pack(v)) for k, v in values.items()],
    )
