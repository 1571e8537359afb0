"""The views on SQLite: schema, the atomic writer, readers, the digest and CSV export.

Every write goes through ``write(changes)``; ``flush`` wraps it in one
transaction together with the checkpoint (last applied position and its chain
hash), so after a crash the file holds exactly the views up to its checkpoint:
nothing applied twice, nothing skipped.

Plain ``sqlite3`` (not aiosqlite): async callers run a whole flush in one
``asyncio.to_thread`` hop, which is what aiosqlite would do per statement.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import os
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgpack

from engine.crediting import excess
from engine.document import DocumentView, FieldWrite, wire_totals
from engine.hashchain import GENESIS
from engine.schema.common import KINDS
from engine.settings_fold import NumberingSettings
from projections.model import Changes, Projector
from projections.numbers import SHARED

# 2: series per period (documents.period and numbered_at, duplicates.period,
# gaps.period). A views file of another version is rebuilt from the log.
SCHEMA_VERSION = 2

TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    number INTEGER NOT NULL,
    number_source TEXT NOT NULL,
    status TEXT NOT NULL,
    user TEXT NOT NULL,
    device_id TEXT NOT NULL,
    customer TEXT,
    currency TEXT NOT NULL,
    net TEXT NOT NULL,
    tax TEXT NOT NULL,
    total TEXT NOT NULL,
    issue_date TEXT,
    due_date TEXT,
    created_at TEXT,
    updated_at TEXT,
    converted_from TEXT,
    converted_to TEXT,
    void_reason TEXT,
    events INTEGER NOT NULL,
    last_position INTEGER NOT NULL,
    created INTEGER NOT NULL,
    period TEXT NOT NULL,
    numbered_at TEXT,
    state BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    position INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL,
    type TEXT NOT NULL,
    user TEXT NOT NULL,
    device_id TEXT NOT NULL,
    device_time TEXT NOT NULL,
    committed_at TEXT NOT NULL,
    summary TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS duplicates (
    kind TEXT NOT NULL,
    period TEXT NOT NULL,
    number INTEGER NOT NULL,
    doc_id TEXT NOT NULL,
    PRIMARY KEY (kind, period, number, doc_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gaps (
    kind TEXT NOT NULL,
    series TEXT NOT NULL,
    slot INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL,
    step INTEGER NOT NULL,
    missing INTEGER NOT NULL,
    period TEXT NOT NULL,
    PRIMARY KEY (kind, period, series, epoch, first)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS renumberings (
    position INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    old_number INTEGER NOT NULL,
    new_number INTEGER NOT NULL,
    source TEXT NOT NULL,
    user TEXT NOT NULL,
    device_id TEXT NOT NULL,
    committed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS conflicts (
    position INTEGER NOT NULL,
    doc_id TEXT NOT NULL,
    field TEXT NOT NULL,
    kind TEXT NOT NULL,
    winner TEXT NOT NULL,
    loser TEXT NOT NULL,
    PRIMARY KEY (position, field, kind)
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS unassigned AS
    SELECT doc_id, kind, status, user, device_id, customer, total, currency, created_at,
           last_position
    FROM documents WHERE number = 0 AND status != 'void' AND created = 1;
"""

# Secondary indexes: a rebuild creates them after the bulk load (one sort, not
# a random-order B-tree insert per row). documents_list covers the console's
# documents list (newest first, filtered): a page never reads the state blobs.
INDEXES = """
CREATE INDEX IF NOT EXISTS documents_number ON documents (kind, number, period);
CREATE INDEX IF NOT EXISTS history_doc ON history (doc_id, position);
CREATE INDEX IF NOT EXISTS renumberings_doc ON renumberings (doc_id);
CREATE INDEX IF NOT EXISTS conflicts_doc ON conflicts (doc_id);
CREATE INDEX IF NOT EXISTS documents_list ON documents (
    last_position, created, kind, status, user, number, customer, doc_id, device_id,
    currency, total, issue_date, updated_at
);
CREATE INDEX IF NOT EXISTS history_device ON history (device_id, position);
"""

DOC_COLUMNS = (
    "doc_id",
    "kind",
    "number",
    "number_source",
    "status",
    "user",
    "device_id",
    "customer",
    "currency",
    "net",
    "tax",
    "total",
    "issue_date",
    "due_date",
    "created_at",
    "updated_at",
    "converted_from",
    "converted_to",
    "void_reason",
    "events",
    "last_position",
    "created",
    "period",
    "numbered_at",
)
HISTORY_COLUMNS = (
    "position",
    "doc_id",
    "type",
    "user",
    "device_id",
    "device_time",
    "committed_at",
    "summary",
)
RENUMBERING_COLUMNS = (
    "position",
    "doc_id",
    "kind",
    "old_number",
    "new_number",
    "source",
    "user",
    "device_id",
    "committed_at",
)
CONFLICT_COLUMNS = ("position", "doc_id", "field", "kind", "winner", "loser")
GAP_COLUMNS = ("kind", "series", "slot", "epoch", "first", "last", "step", "missing", "period")
DUPLICATE_COLUMNS = (
    "kind",
    "period",
    "number",
    "doc_id",
    "status",
    "user",
    "device_id",
    "customer",
    "total",
    "created_at",
    "numbered_at",
    "last_position",
)
UNASSIGNED_COLUMNS = (
    "doc_id",
    "kind",
    "status",
    "user",
    "device_id",
    "customer",
    "total",
    "currency",
    "created_at",
    "last_position",
)

# The canonical dump behind the digest: every view, in a fixed order.
DIGEST_TABLES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("documents", DOC_COLUMNS, "doc_id"),
    ("history", HISTORY_COLUMNS, "position"),
    ("duplicates", ("kind", "period", "number", "doc_id"), "kind, period, number, doc_id"),
    ("gaps", GAP_COLUMNS, "kind, period, series, epoch, first"),
    ("renumberings", RENUMBERING_COLUMNS, "position"),
    ("conflicts", CONFLICT_COLUMNS, "position, field, kind"),
)

_INSERT_DOC = (
    f"INSERT OR REPLACE INTO documents ({', '.join(DOC_COLUMNS)}, state) "
    f"VALUES ({', '.join('?' * (len(DOC_COLUMNS) + 1))})"
)


# Views are derived data: a file of another schema is replaced, never migrated.
_REBUILD_HINT = (
    " (views are derived data: the engine's live views rebuild it at start; "
    "otherwise delete it and run synvoice replay or synvoice project again)"
)


class ViewsError(Exception):
    """The views file is missing, of another schema version, or not a views file."""


def _pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def _unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


try:  # msgspec packs several times faster; msgpack reads its output the same
    import msgspec

    _encode_state = msgspec.msgpack.Encoder().encode
except ImportError:  # pragma: no cover
    _encode_state = _pack


# The digest's row encoding. msgspec and msgpack both write the shortest msgpack
# form of ints, strings and arrays, so the digest does not depend on which is used.
_encode_rows = _encode_state


def encode_digest_row(row: Sequence[Any]) -> bytes:
    """One row as the digest hashes it (a chunk's rows are these, concatenated)."""
    return _encode_rows(tuple(row))


def doc_row(v: DocumentView) -> tuple[Any, ...]:
    """The documents row: readable columns, then ``state`` (what else the fold needs
    to go on from this view: customer, lines, notes, created, field writes)."""
    net, tax, total = wire_totals(v.lines)
    c = v.customer
    state = _encode_state(
        (
            c,
            v.lines,
            v.notes,
            [
                (k, w.position, w.event_id, w.device_id, w.seen_position)
                for k, w in v.writes.items()
            ],
            # Later fields, appended so older rows still read (credit notes, terms).
            {"credits": v.credits, "payment_terms": v.payment_terms},
        )
    )
    return (
        v.doc_id,
        v.kind,
        v.number,
        v.number_source,
        v.status,
        v.user,
        v.device_id,
        c.get("name") if c else None,
        v.currency,
        str(net),
        str(tax),
        str(total),
        v.issue_date,
        v.due_date,
        v.created_at,
        v.updated_at,
        v.converted_from,
        v.converted_to,
        v.void_reason,
        v.events,
        v.last_position,
        int(v.created),
        v.period,
        v.numbered_at,
        state,
    )


def view_from_row(row: Sequence[Any]) -> DocumentView:
    """The fold's view back from a documents row (``doc_row``'s inverse)."""
    parts = _unpack(row[24])
    customer, lines, notes, writes = parts[:4]
    extra: dict[str, Any] = parts[4] if len(parts) > 4 else {}
    return DocumentView(
        doc_id=row[0],
        kind=row[1],
        number=row[2],
        number_source=row[3],
        customer=customer,
        lines=lines,
        currency=row[8],
        issue_date=row[12],
        due_date=row[13],
        notes=notes,
        status=row[4],
        user=row[5],
        device_id=row[6],
        created_at=row[14],
        updated_at=row[15],
        converted_from=row[16],
        converted_to=row[17],
        credits=extra.get("credits"),
        payment_terms=extra.get("payment_terms"),
        void_reason=row[18],
        events=row[19],
        last_position=row[20],
        created=bool(row[21]),
        period=row[22],
        numbered_at=row[23],
        writes={w[0]: FieldWrite(*w[1:]) for w in writes},
    )


def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def lock_views(views_path: Path, wait: bool = True) -> int:
    """Take the views file's writer lock (``VIEWS.lock``); returns its descriptor,
    held until closed or the process ends. One fold at a time writes a views
    file: two would each trust their own checkpoint. ``wait=False``: raise
    ``ViewsError`` at once if another process holds it."""
    views_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{views_path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        raise ViewsError(
            f"{views_path} is being written by another projection (the engine's live "
            "views or `synvoice project`): stop it or choose another views file"
        ) from None
    return fd


class ViewStore:
    """One views file. Not thread-safe: one caller at a time (async callers serialise)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    # --- opening ---------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str, *, create: bool = True) -> ViewStore:
        """Open (or create) a views file for following the log, in WAL mode.

        Views are derived data: synchronous=NORMAL may lose the last commits on
        power loss, never consistency; the checkpoint rolls back with them.
        """
        path = Path(path)
        if not create and not path.exists():
            raise ViewsError(f"no views file at {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(path)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # A batch dirties index pages all over (history by doc id, documents by
            # random UUID): checkpointing every 1,000 WAL pages (the default) copied
            # them back nearly every batch, and a 2 MiB cache re-read them. Measured
            # on 1,000-event batches: 10-25% less wall time, 5-10% less CPU (8 MiB
            # of cache did as well as 16).
            conn.execute("PRAGMA wal_autocheckpoint=10000")
            conn.execute("PRAGMA cache_size=-8192")
            store = cls(path, conn)
            store._init_schema(indexes=True)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise ViewsError(f"{path} is not a views file: {exc}") from None
        except ViewsError:
            conn.close()
            raise
        return store

    @classmethod
    def open_readonly(cls, path: Path | str) -> ViewStore:
        path = Path(path)
        if not path.exists():
            raise ViewsError(f"no views file at {path}")
        store = cls(path, _connect(path, readonly=True))
        try:
            version = store.get_meta("schema")
        except sqlite3.DatabaseError as exc:
            store.close()
            raise ViewsError(f"{path} is not a views file: {exc}") from None
        if version != SCHEMA_VERSION:
            store.close()
            raise ViewsError(
                f"{path} has views schema {version}, this program reads {SCHEMA_VERSION}"
                f"{_REBUILD_HINT}"
            )
        return store

    @classmethod
    def create_fresh(cls, path: Path | str) -> ViewStore:
        """A new, empty file for a bulk rebuild: no journal (a failed rebuild is
        simply deleted), indexes added by ``create_indexes``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
            p.unlink(missing_ok=True)
        conn = _connect(path)
        conn.execute("PRAGMA page_size=16384")  # documents rows (~1 KB state) fit in a page
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-65536")  # 64 MiB of page cache for the bulk load
        store = cls(path, conn)
        store._init_schema(indexes=False)
        return store

    def _init_schema(self, indexes: bool) -> None:
        c = self.conn
        exists = c.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        if exists:
            version = self.get_meta("schema")
            if version != SCHEMA_VERSION:
                raise ViewsError(
                    f"{self.path} has views schema {version}, this program writes "
                    f"{SCHEMA_VERSION}{_REBUILD_HINT}"
                )
        c.executescript(TABLES + (INDEXES if indexes else ""))
        if not exists:
            self._set_meta("schema", SCHEMA_VERSION)

    def create_indexes(self) -> None:
        """After a bulk load (outside a transaction): build the secondary indexes."""
        self.conn.executescript(INDEXES)

    def sync(self) -> None:
        """Put a bulk-loaded file (written without journal or syncs) on disk."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.conn.close()

    # --- meta ------------------------------------------------------------------------

    def get_meta(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return _unpack(row[0]) if row else None

    def _set_meta(self, key: str, value: Any) -> None:
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, _pack(value)),
        )

    def checkpoint(self) -> tuple[int, bytes]:
        cp = self.get_meta("checkpoint")
        if cp is None:
            return 0, GENESIS
        return int(cp[0]), bytes(cp[1])

    # --- writing ---------------------------------------------------------------------

    def write(self, ch: Changes, doc_rows: Sequence[tuple[Any, ...]] | None = None) -> None:
        """Persist ``ch`` inside the caller's transaction (see ``flush``);
        ``doc_rows``: ``doc_row`` of each of ``ch.docs`` if the caller has them."""
        c = self.conn
        if ch.docs:
            c.executemany(_INSERT_DOC, doc_rows or [doc_row(v) for v in ch.docs])
        if ch.history:
            c.executemany("INSERT INTO history VALUES (?,?,?,?,?,?,?,?)", ch.history)
        if ch.renumberings:
            c.executemany("INSERT INTO renumberings VALUES (?,?,?,?,?,?,?,?,?)", ch.renumberings)
        if ch.conflicts:
            c.executemany("INSERT INTO conflicts VALUES (?,?,?,?,?,?)", ch.conflicts)
        if ch.duplicates:
            c.executemany(
                "DELETE FROM duplicates WHERE kind = ? AND period = ? AND number = ?",
                list(ch.duplicates),
            )
            c.executemany(
                "INSERT INTO duplicates VALUES (?,?,?,?)",
                [
                    (kind, period, number, doc)
                    for (kind, period, number), docs in ch.duplicates.items()
                    if len(docs) > 1
                    for doc in docs
                ],
            )
        if ch.gaps:
            c.executemany("DELETE FROM gaps WHERE kind = ?", [(k,) for k in ch.gaps])
            c.executemany(
                "INSERT INTO gaps VALUES (?,?,?,?,?,?,?,?,?)",
                [tuple(g) for gs in ch.gaps.values() for g in gs],
            )
        if ch.settings is not None:
            self._set_meta("settings", ch.settings)
        self._set_meta("checkpoint", [ch.position, ch.last_hash])

    def flush(self, ch: Changes, expect: int | None = None) -> None:
        """One transaction: the views changes and the checkpoint, or nothing.

        ``expect``: the checkpoint the changes were folded from; if the file's
        checkpoint is another (someone else wrote the file meanwhile), nothing is
        written and ``ViewsError`` is raised: a writer behind must never move the
        checkpoint back under views that are further on."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            if expect is not None and (at := self.checkpoint()[0]) != expect:
                raise ViewsError(
                    f"{self.path} is at position {at}, not {expect}: "
                    "another projection wrote it meanwhile"
                )
            self.write(ch)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    # --- loading the fold state --------------------------------------------------------

    def load_projector(self, cached: bool = False) -> Projector:
        """The fold state at the checkpoint. ``cached``: only the number index is
        loaded; views come back one by one when events need them."""
        position, last_hash = self.checkpoint()
        settings = self.get_meta("settings")
        if cached:
            # Streamed into the compact number index (4 bytes a number, no doc ids).
            numbers = self.conn.execute(
                "SELECT kind, period, number FROM documents WHERE number != 0"
            )
            return Projector.restore(
                position,
                last_hash,
                settings,
                numbers=numbers,
                loader=self.load_document,
                finder=self.holders,
                loader_many=self.load_documents,
            )
        cur = self.conn.execute(f"SELECT {', '.join(DOC_COLUMNS)}, state FROM documents")
        docs: list[DocumentView] = []
        while rows := cur.fetchmany(10_000):
            docs.extend(view_from_row(r) for r in rows)
        return Projector.restore(position, last_hash, settings, docs)

    def holders(self, kind: str, period: str, number: int) -> list[str]:
        """Ids of the persisted documents holding ``number`` in the series (kind,
        period) (documents_number index)."""
        rows = self.conn.execute(
            "SELECT doc_id FROM documents WHERE kind = ? AND number = ? AND period = ?",
            (kind, number, period),
        ).fetchall()
        return [r[0] for r in rows]

    def all_duplicates(self) -> list[tuple[str, str, int, str]]:
        """(kind, period, number, doc id) of every number held twice in its series,
        in the view's order."""
        rows = self.conn.execute(
            "SELECT d.kind, d.period, d.number, d.doc_id FROM documents d JOIN "
            "(SELECT kind, period, number FROM documents WHERE number != 0 "
            "GROUP BY kind, period, number HAVING COUNT(*) > 1) USING (kind, period, number) "
            "ORDER BY d.kind, d.period, d.number, d.doc_id"
        ).fetchall()
        return [(str(k), str(p), int(n), str(d)) for k, p, n, d in rows]

    def load_documents(self, doc_ids: Collection[str]) -> dict[str, DocumentView]:
        """The persisted views among ``doc_ids`` (one query per 500 ids)."""
        ids = list(doc_ids)
        out: dict[str, DocumentView] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            q = (
                f"SELECT {', '.join(DOC_COLUMNS)}, state FROM documents "
                f"WHERE doc_id IN ({','.join('?' * len(chunk))})"
            )
            for row in self.conn.execute(q, chunk):
                out[row[0]] = view_from_row(row)
        return out

    def load_document(self, doc_id: str) -> DocumentView | None:
        row = self.conn.execute(
            f"SELECT {', '.join(DOC_COLUMNS)}, state FROM documents WHERE doc_id = ?", (doc_id,)
        ).fetchone()
        return view_from_row(row) if row else None

    # --- reading the views -------------------------------------------------------------

    def _dicts(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.conn.execute(sql, args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def documents(self, kind: str | None = None) -> list[dict[str, Any]]:
        where, args = _kind_filter(kind)
        return self._dicts(
            f"SELECT {', '.join(DOC_COLUMNS)} FROM documents{where} "
            "ORDER BY kind, period, number, doc_id",
            args,
        )

    def find(self, ref: str) -> list[str]:
        """The documents ``ref`` names, as the device CLI reads it: an id, an id
        prefix (4+ hex digits) or ``kind:number`` (several across the periods of
        a resetting series). At most 10."""
        ref = ref.strip()
        kind, _, num = ref.partition(":")
        if num.isdigit() and kind in KINDS:
            q, args = "SELECT doc_id FROM documents WHERE kind = ? AND number = ?", [kind, int(num)]
        elif ref and all(c in "0123456789abcdefABCDEF-" for c in ref) and len(ref) >= 4:
            q, args = "SELECT doc_id FROM documents WHERE doc_id LIKE ?", [ref.lower() + "%"]
        else:
            return []
        rows = self.conn.execute(q + " ORDER BY doc_id LIMIT 10", args).fetchall()
        return [str(r[0]) for r in rows]

    def document(self, doc_id: str) -> dict[str, Any] | None:
        rows = self._dicts(
            f"SELECT {', '.join(DOC_COLUMNS)} FROM documents WHERE doc_id = ?", (doc_id,)
        )
        return rows[0] if rows else None

    def history(self, doc_id: str) -> list[dict[str, Any]]:
        return self._dicts(
            f"SELECT {', '.join(HISTORY_COLUMNS)} FROM history WHERE doc_id = ? ORDER BY position",
            (doc_id,),
        )

    def numbering(self) -> NumberingSettings:
        """The numbering settings the views were folded with (patterns included)."""
        snap = self.get_meta("settings")
        return NumberingSettings.from_snapshot(snap) if snap else NumberingSettings()

    def duplicates(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Each holder of a number held twice in its series, with the number as the
        pattern in force when it was given shows it (``display_number``)."""
        where, args = _kind_filter(kind, "d.")
        rows = self._dicts(
            "SELECT d.kind, d.period, d.number, d.doc_id, o.status, o.user, o.device_id, "
            "o.customer, o.total, o.created_at, o.numbered_at, o.last_position "
            f"FROM duplicates d JOIN documents o ON o.doc_id = d.doc_id{where} "
            "ORDER BY d.kind, d.period, d.number, d.doc_id",
            args,
        )
        ns = self.numbering() if rows else NumberingSettings()
        for r in rows:
            at = r["numbered_at"] or r["created_at"]
            r["display_number"] = ns.display(r["kind"], r["number"], at, r["user"])
        return rows

    def gaps(self, kind: str | None = None) -> list[dict[str, Any]]:
        where, args = _kind_filter(kind)
        return self._dicts(
            f"SELECT {', '.join(GAP_COLUMNS)} FROM gaps{where} "
            "ORDER BY kind, period, series, epoch, first",
            args,
        )

    def unassigned(self, kind: str | None = None) -> list[dict[str, Any]]:
        where, args = _kind_filter(kind)
        return self._dicts(
            f"SELECT {', '.join(UNASSIGNED_COLUMNS)} FROM unassigned{where} "
            "ORDER BY kind, last_position, doc_id",
            args,
        )

    def renumberings(self, kind: str | None = None) -> list[dict[str, Any]]:
        where, args = _kind_filter(kind)
        return self._dicts(
            f"SELECT {', '.join(RENUMBERING_COLUMNS)} FROM renumberings{where} ORDER BY position",
            args,
        )

    def conflicts(self, doc_id: str | None = None) -> list[dict[str, Any]]:
        where, args = (" WHERE doc_id = ?", (doc_id,)) if doc_id else ("", ())
        return self._dicts(
            f"SELECT {', '.join(CONFLICT_COLUMNS)} FROM conflicts{where} "
            "ORDER BY position, field, kind",
            args,
        )

    def credit_notes(self) -> list[dict[str, Any]]:
        """Each credit note with the invoice it corrects, and ``over_lines``: how many
        of its lines credit nothing left on that invoice (a line credited twice:
        forced, or by two devices offline; ``engine.crediting``). Void credit notes
        credit nothing (0)."""
        rows = self.conn.execute(
            f"SELECT {', '.join(DOC_COLUMNS)}, state FROM documents "
            "WHERE kind = 'credit_note' ORDER BY number, doc_id"
        ).fetchall()
        notes = [view_from_row(r) for r in rows]
        invoices = self.load_documents({v.credits for v in notes if v.credits})
        over: dict[str, int] = {}
        by_invoice: dict[str, list[DocumentView]] = {}
        for v in notes:
            if v.credits and v.status != "void":
                by_invoice.setdefault(v.credits, []).append(v)
        for inv_id, cns in by_invoice.items():
            inv = invoices.get(inv_id)
            cns.sort(key=lambda d: (d.created_at or "", d.doc_id))  # oldest credits first
            counts = excess(inv.lines if inv else [], [cn.lines for cn in cns])
            over.update((cn.doc_id, n) for cn, n in zip(cns, counts, strict=True))
        out: list[dict[str, Any]] = []
        for v, r in zip(notes, rows, strict=True):
            inv = invoices.get(v.credits) if v.credits else None
            out.append(
                {
                    "doc_id": v.doc_id,
                    "number": v.number,
                    "status": v.status,
                    "customer": r[7],
                    "total": r[11],
                    "currency": v.currency,
                    "credits": v.credits,
                    "invoice_number": inv.number if inv else None,
                    "over_lines": over.get(v.doc_id, 0),
                }
            )
        return out

    def counts(self) -> dict[str, int]:
        c = self.conn
        out = {}
        for table in ("documents", "history", "duplicates", "gaps", "renumberings", "conflicts"):
            out[table] = int(c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        out["unassigned"] = int(c.execute("SELECT COUNT(*) FROM unassigned").fetchone()[0])
        out["duplicate_numbers"] = int(
            c.execute(
                "SELECT COUNT(*) FROM (SELECT DISTINCT kind, period, number FROM duplicates)"
            ).fetchone()[0]
        )
        out["missing_numbers"] = int(
            c.execute("SELECT COALESCE(SUM(missing), 0) FROM gaps").fetchone()[0]
        )
        return out

    # --- digest and export -------------------------------------------------------------

    def digest(self) -> str:
        """sha256 over a canonical dump of every view, read in one snapshot."""
        self.conn.execute("BEGIN")
        try:
            d = Digest()
            position, last_hash = self.checkpoint()
            for table, _, _ in DIGEST_TABLES:
                self.digest_table(d, table)
            return d.hexdigest(self.get_meta("settings"), position, last_hash)
        finally:
            self.conn.execute("COMMIT")

    def digest_table(self, d: Digest, table: str) -> None:
        """Add one view's rows to ``d``, read in the canonical order."""
        for name, cols, order in DIGEST_TABLES:
            if name == table:
                cur = self.conn.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order}")
                while rows := cur.fetchmany(20_000):
                    d.add(table, rows)
                return
        raise ValueError(f"no view {table!r}")

    def iter_table(self, table: str) -> tuple[tuple[str, ...], Iterator[Sequence[Any]]]:
        for name, cols, order in DIGEST_TABLES:
            if name == table:
                cur = self.conn.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order}")
                return cols, iter(cur)
        if table == "unassigned":
            cur = self.conn.execute(
                f"SELECT {', '.join(UNASSIGNED_COLUMNS)} FROM unassigned "
                "ORDER BY kind, last_position, doc_id"
            )
            return UNASSIGNED_COLUMNS, iter(cur)
        raise ValueError(f"no view {table!r}")

    def export_csv(self, directory: Path) -> list[Path]:
        """One CSV file per view (header row, then rows in the digest's order)."""
        directory.mkdir(parents=True, exist_ok=True)
        out = []
        for table in [t for t, _, _ in DIGEST_TABLES] + ["unassigned"]:
            cols, rows = self.iter_table(table)
            p = directory / f"{table}.csv"
            with p.open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(cols)
                w.writerows(rows)
            out.append(p)
        return out


def _kind_filter(kind: str | None, prefix: str = "") -> tuple[str, tuple[Any, ...]]:
    return (f" WHERE {prefix}kind = ?", (kind,)) if kind else ("", ())


class Digest:
    """The views digest: per view, sha256 over its rows (msgpack, canonical order);
    then sha256 over those, the settings and the checkpoint. Rows may be added in
    chunks, and views in any interleaving (a rebuild streams history as it goes)."""

    def __init__(self) -> None:
        self._views = {name: hashlib.sha256() for name, _, _ in DIGEST_TABLES}

    def add(self, view: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            # A packed array is its header followed by each row's own packing:
            # dropping the header makes the bytes independent of how rows are chunked.
            packed = _encode_rows([tuple(r) for r in rows])
            n = len(rows)
            header = 1 if n < 16 else 3 if n < 65536 else 5
            self._views[view].update(packed[header:])

    def add_packed(self, view: str, rows: Iterable[bytes]) -> None:
        """Rows already encoded one by one (``encode_digest_row``), in order."""
        h = self._views[view]
        for packed in rows:
            h.update(packed)

    def hexdigest(self, settings: Any, position: int, last_hash: bytes) -> str:
        outer = hashlib.sha256(b"synvoice-views-v1\n")
        for name, _, _ in DIGEST_TABLES:
            outer.update(f"{name}:{self._views[name].hexdigest()}\n".encode())
        outer.update(b"settings:" + _pack(settings) + b"\n")
        outer.update(f"checkpoint:{position}:{last_hash.hex()}\n".encode())
        return outer.hexdigest()


__all__ = [
    "SHARED",
    "Digest",
    "ViewStore",
    "ViewsError",
    "doc_row",
    "encode_digest_row",
    "view_from_row",
]
