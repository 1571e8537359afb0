"""The append-only, hash-chained event log on SQLite (aiosqlite, WAL).

One writer (the engine) appends whole batches in one transaction; readers use
their own connection. Rows are never updated or deleted: triggers refuse it.
Idempotency is by event id (a UNIQUE column): the writer looks the batch's ids
up first and appends only the new ones, so the hash chain has no holes.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite

from engine import codec
from engine.errors import SynvoiceError
from engine.events import Event, now
from engine.hashchain import GENESIS, ChainBreak, ChainVerifier, link

SyncMode = Literal["full", "normal"]
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY,
    event_id BLOB NOT NULL UNIQUE,
    type TEXT NOT NULL,
    body BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are immutable'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are immutable'); END;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS reservations (
    doc_id BLOB PRIMARY KEY,
    kind TEXT NOT NULL,
    number INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS credentials (
    device_id TEXT PRIMARY KEY,
    secret BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS nonces (
    device TEXT NOT NULL,
    nonce TEXT NOT NULL,
    forget_after INTEGER NOT NULL,
    PRIMARY KEY (device, nonce)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nonces_expiry ON nonces (forget_after);
"""

# A side write done in the same transaction as an append: (sql, rows).
SideWrite = tuple[str, Sequence[tuple[Any, ...]]]


@dataclass(frozen=True)
class Record:
    """One stored event: its position, exact stored bytes and chain hash."""

    position: int
    body: bytes
    hash: bytes

    def event(self) -> Event:
        from engine.events import parse_event

        return parse_event(codec.unpack(self.body), stored=True)


def seal_wire(
    wire: dict[str, Any], position: int, committed_at: str, prev: bytes
) -> tuple[bytes, bytes]:
    """Add the engine fields to a wire map (in place); return its stored body and
    chain hash. The one definition of the stored bytes: ``seal_events`` and the
    benchmark log generator (which has wire maps, not events) both use it."""
    wire["position"] = position
    wire["committed_at"] = committed_at
    body = codec.pack(wire)
    return body, link(prev, body)


def seal_events(
    events: Sequence[Event], head: int, last_hash: bytes, committed_at: datetime
) -> list[tuple[Event, Record]]:
    """Seal events to follow a log at ``head`` / ``last_hash`` (no I/O).

    The events get their position and commit time in place (they belong to the
    writer's batch)."""
    at_iso = committed_at.isoformat()
    pos, prev = head, last_hash
    out: list[tuple[Event, Record]] = []
    for ev in events:
        pos += 1
        # Hot path: the stored map comes from the wire form (no re-validation).
        body, prev = seal_wire(ev.to_wire(), pos, at_iso, prev)
        # The engine owns these freshly validated events: set the engine
        # fields in place (a model_copy per event costs more than the rest).
        ev.__dict__["position"] = pos
        ev.__dict__["committed_at"] = committed_at
        out.append((ev, Record(pos, body, prev)))
    return out


def records_query(
    after: int | None = None, upto: int | None = None, limit: int | None = None
) -> tuple[str, tuple[int, ...]]:
    """SQL and args reading stored records as (position, body, hash) rows in
    position order: position > ``after``, <= ``upto``, at most ``limit`` rows
    (``None``: no such bound). Every reader of the log uses it."""
    q = "SELECT position, body, hash FROM events"
    conds: list[str] = []
    args: list[int] = []
    if after is not None:
        conds.append("position > ?")
        args.append(after)
    if upto is not None:
        conds.append("position <= ?")
        args.append(upto)
    if conds:
        q += " WHERE " + " AND ".join(conds)
    q += " ORDER BY position"
    if limit is not None:
        q += " LIMIT ?"
        args.append(limit)
    return q, tuple(args)


SQLITE_FULL = 13  # "database or disk is full": ENOSPC, or the max_page_count limit


def is_disk_full(exc: BaseException) -> bool:
    """Whether a SQLite error means no space is left for the file."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF == SQLITE_FULL)
    return "database or disk is full" in str(exc)


def _open_writer(path: Path, sync: SyncMode) -> sqlite3.Connection:
    """The writer connection (autocommit mode: transactions are explicit)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk (WAL fsynced) before we acknowledge it.
        conn.execute(f"PRAGMA synchronous={sync.upper()}")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.executescript(SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


def _select_in(
    conn: sqlite3.Connection, select: str, keys: Sequence[bytes]
) -> dict[bytes, tuple[Any, ...]]:
    """``{key: (values...)}`` for the keys found by ``SELECT key, values... WHERE key IN (...)``."""
    found: dict[bytes, tuple[Any, ...]] = {}
    for i in range(0, len(keys), 500):
        chunk = keys[i : i + 500]
        q = f"{select} IN ({','.join('?' * len(chunk))})"
        for k, *v in conn.execute(q, chunk):
            found[bytes(k)] = tuple(v)
    return found


async def _connect(path: Path, *, readonly: bool = False) -> aiosqlite.Connection:
    """A reading connection (WAL mode and durability are the writer's, see _open_writer)."""
    if readonly:
        conn = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True)
    else:
        conn = await aiosqlite.connect(path, isolation_level=None)
    await conn.execute("PRAGMA busy_timeout=10000")
    return conn


class EventLog:
    """The log file: one writer connection on its own thread, one async reader.

    The writer is a plain ``sqlite3`` connection used only from a dedicated
    thread, and every write method is *one* hop to it: aiosqlite would make a
    hop (~90 µs) per statement, five or more per commit.
    """

    def __init__(
        self,
        path: Path,
        writer: sqlite3.Connection,
        thread: ThreadPoolExecutor,
        reader: aiosqlite.Connection,
    ) -> None:
        self.path = path
        self._w = writer
        self._thread = thread
        self._r = reader
        self._lock = asyncio.Lock()
        self.head = 0
        self.last_hash = GENESIS

    @classmethod
    async def open(cls, path: Path | str, *, sync: SyncMode = "full") -> EventLog:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        thread = ThreadPoolExecutor(1, thread_name_prefix="synvoice-log")
        loop = asyncio.get_running_loop()
        try:
            writer = await loop.run_in_executor(thread, _open_writer, path, sync)
        except BaseException:
            thread.shutdown()
            raise
        reader = await _connect(path)
        log = cls(path, writer, thread, reader)
        row = await log._call(
            lambda: writer.execute(
                "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1"
            ).fetchone()
        )
        if row is not None:
            log.head, log.last_hash = int(row[0]), bytes(row[1])
        return log

    async def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the writer's thread (the only place its connection is used)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    async def _write(self, fn: Callable[[], T]) -> T:
        """``_call`` for a write: a full disk is the refusal ``unavailable``."""
        try:
            return await self._call(fn)
        except sqlite3.Error as exc:
            if is_disk_full(exc):
                raise SynvoiceError(
                    "unavailable", f"disk full: the log cannot grow ({self.path.parent})"
                ) from exc
            raise

    async def close(self) -> None:
        await self._r.close()
        await self._call(self._w.close)
        self._thread.shutdown()

    # --- writing --------------------------------------------------------------------

    async def prefetch(
        self, event_ids: Sequence[bytes], doc_ids: Sequence[bytes]
    ) -> tuple[dict[bytes, int], dict[bytes, tuple[str, int]]]:
        """In one hop: positions of the event ids already stored, and the (kind,
        number) reserved for the doc ids (what the writer plans a batch against)."""
        w = self._w

        def run() -> tuple[dict[bytes, int], dict[bytes, tuple[str, int]]]:
            stored = _select_in(
                w, "SELECT event_id, position FROM events WHERE event_id", event_ids
            )
            reserved = _select_in(
                w, "SELECT doc_id, kind, number FROM reservations WHERE doc_id", doc_ids
            )
            return (
                {k: int(v[0]) for k, v in stored.items()},
                {k: (str(v[0]), int(v[1])) for k, v in reserved.items()},
            )

        return await self._call(run)

    def seal(self, events: Sequence[Event]) -> list[tuple[Event, Record]]:
        """Seal events to follow this log's head, committed now (see ``seal_events``)."""
        return seal_events(events, self.head, self.last_hash, now())

    async def append(
        self,
        sealed: Sequence[tuple[Event, Record]],
        side: Iterable[SideWrite] = (),
        ids: Sequence[bytes] | None = None,
    ) -> None:
        """Write sealed records (from ``seal``) and side writes in one transaction
        (``ids``: the events' ids as bytes, when the caller has them)."""
        if sealed and sealed[0][1].position != self.head + 1:
            raise RuntimeError("sealed batch does not follow the log head")
        if ids is None:
            ids = [ev.event_id.bytes for ev, _ in sealed]
        rows = [
            (r.position, eid, ev.type, r.body, r.hash)
            for (ev, r), eid in zip(sealed, ids, strict=True)
        ]
        writes = [(sql, params) for sql, params in side if params]
        w = self._w

        def run() -> None:
            w.execute("BEGIN IMMEDIATE")
            try:
                if rows:
                    w.executemany(
                        "INSERT INTO events(position, event_id, type, body, hash) "
                        "VALUES (?,?,?,?,?)",
                        rows,
                    )
                for sql, params in writes:
                    w.executemany(sql, params)
                w.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (SQLITE_FULL does): a second
                # ROLLBACK would replace the real error with "no transaction is active".
                if w.in_transaction:
                    w.execute("ROLLBACK")
                raise

        async with self._lock:
            await self._write(run)
        if sealed:
            self.head = sealed[-1][1].position
            self.last_hash = sealed[-1][1].hash

    async def skipped(self) -> list[tuple[int, int]]:
        """The position ranges log rollbacks skipped (``settings.log_rolled_back``)."""
        q = "SELECT body FROM events WHERE type = 'settings.log_rolled_back'"
        async with self._r.execute(q) as cur:
            rows = await cur.fetchall()
        out: list[tuple[int, int]] = []
        for (body,) in rows:
            data = codec.unpack(bytes(body)).get("data") or {}
            out.append((int(data["after"]) + 1, int(data["skipped_to"])))
        return out

    def skip_to(self, position: int) -> None:
        """Make the next append start after ``position`` (forward only): the one use
        is the log rollback, whose event declares the gap (``hashchain.declared_gap``)."""
        if position < self.head:
            raise ValueError("a log position is never reused")
        self.head = position

    async def set_meta(self, key: str, value: bytes) -> None:
        async with self._lock:
            await self._write(
                lambda: self._w.execute(
                    "INSERT INTO meta(key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )
            )

    async def get_meta(self, key: str) -> bytes | None:
        async with self._r.execute("SELECT value FROM meta WHERE key = ?", (key,)) as cur:
            row = await cur.fetchone()
        return bytes(row[0]) if row else None

    async def set_credential(self, device_id: str, secret: bytes) -> None:
        async with self._lock:
            await self._write(
                lambda: self._w.execute(
                    "INSERT INTO credentials(device_id, secret) VALUES (?, ?) "
                    "ON CONFLICT(device_id) DO UPDATE SET secret = excluded.secret",
                    (device_id, secret),
                )
            )

    async def credentials(self) -> dict[str, bytes]:
        async with self._r.execute("SELECT device_id, secret FROM credentials") as cur:
            return {str(d): bytes(s) for d, s in await cur.fetchall()}

    async def nonces(self, now: float) -> list[tuple[str, str, int]]:
        """(device, nonce, forget after) of the guarded requests committed in the
        last freshness window (``engine.replay_guard``)."""
        async with self._r.execute(
            "SELECT device, nonce, forget_after FROM nonces WHERE forget_after >= ?", (int(now),)
        ) as cur:
            return [(str(d), str(n), int(f)) for d, n, f in await cur.fetchall()]

    # --- reading --------------------------------------------------------------------

    async def read(self, after: int, limit: int, max_bytes: int = 1 << 62) -> list[Record]:
        """Records with position > after, at most ``limit`` and about ``max_bytes``."""
        out: list[Record] = []
        size = 0
        async with self._r.execute(*records_query(after, limit=limit)) as cur:
            # In chunks, stopping at the byte cap: a page of big events must not
            # be read whole first (5,000 x 64 KiB).
            while rows := await cur.fetchmany(500):
                for pos, body, h in rows:
                    size += len(body)
                    if out and size > max_bytes:
                        return out
                    out.append(Record(int(pos), bytes(body), bytes(h)))
        return out

    async def iter_records(
        self, after: int = 0, until: int | None = None, chunk: int = 10_000
    ) -> AsyncIterator[list[Record]]:
        """Every record after ``after`` (up to ``until``), in chunks, for replay."""
        async for rows in iter_records(self._r, after, until, chunk):
            yield rows

    async def verify(self) -> tuple[int, ChainBreak | None]:
        v = ChainVerifier()
        # No lower bound: a row forged in at position <= 0 must reach the check.
        async for rows in iter_records(self._r, after=None):
            for r in rows:
                if v.feed(r.position, r.body, r.hash) is not None:
                    return v.checked, v.broken
        return v.checked, None


async def iter_records(
    conn: aiosqlite.Connection,
    after: int | None = 0,
    until: int | None = None,
    chunk: int = 10_000,
) -> AsyncIterator[list[Record]]:
    async with conn.execute(*records_query(after, until)) as cur:
        while True:
            rows = await cur.fetchmany(chunk)
            if not rows:
                return
            yield [Record(int(p), bytes(b), bytes(h)) for p, b, h in rows]


async def open_readonly(path: Path | str) -> aiosqlite.Connection:
    """A read-only connection to a log file (the auditor's replay)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no log file at {p}")
    try:
        return await _connect(p, readonly=True)
    except sqlite3.Error as exc:
        raise FileNotFoundError(f"cannot open log {p}: {exc}") from exc
