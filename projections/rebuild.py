"""Full rebuild of the views from the log: verify the chain, fold, write in bulk.

``Builder`` is the batch driver of the projection (the replay tool and the
engine's first start use it); ``Follower`` in ``projections.follow`` is the
incremental one. Both feed ``Projector`` and write through ``ViewStore``.

A rebuild writes a fresh file in one transaction (no journal), renames it over
the target only when complete, and verifies every record's hash link before
decoding it, so an altered record is named by position and never folded. Its
memory is bounded (see ``Builder``); big logs are folded by several processes,
documents partitioned between them (``projections.parallel``).
"""

from __future__ import annotations

import gc
import os
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from engine.document import DocumentView
from engine.hashchain import ChainBreak, ChainVerifier
from engine.log import records_query
from engine.schema.common import KINDS
from engine.stored import decode_stored
from projections.model import Changes, Projector
from projections.numbers import Gap
from projections.store import Digest, ViewStore, doc_row, encode_digest_row

Row = tuple[int, bytes, bytes]  # (position, body, hash)
SPILL_EVERY = 10_000  # append-only rows and settled views written per this many events
# A view untouched for this many positions is written out and dropped from memory
# (documents are mostly edited in a burst; a later event brings the view back).
WINDOW = 10_000
DOC_DIGEST = "doc_digest"  # documents' digest rows by doc id (see Builder)
PARALLEL_MIN = 100_000  # smaller logs rebuild in one process (starting workers costs ~1 s)


@dataclass(frozen=True)
class RebuildResult:
    events: int  # records folded into the views
    seconds: float
    digest: str  # sha256 of the views (see ViewStore.digest)
    position: int  # last position in the views
    head: int  # last position in the source log
    broken: ChainBreak | None = None  # first record whose hash link fails
    workers: int = 1  # processes that folded (see projections.parallel)
    worker_peak_mb: float | None = None  # the largest worker's peak RSS, if any

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "per_s": round(self.per_second),
            "digest": self.digest,
            "position": self.position,
            "head": self.head,
            "broken_at": self.broken.position if self.broken else None,
            "workers": self.workers,
            "worker_peak_mb": self.worker_peak_mb,
        }


@dataclass(frozen=True)
class Built:
    """A views file built (not yet installed)."""

    digest: str
    events: int
    broken: ChainBreak | None
    projector: Projector  # the fold state at the end (position, hash, numbers)
    workers: int = 1
    worker_peak_mb: float | None = None


def parse_until(value: str | int | datetime | None) -> int | datetime | None:
    """``--until``: a log position, or an ISO time (naive times are UTC)."""
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = value.strip()
    if text.isdigit():
        return int(text)
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--until {value!r}: give a log position (e.g. 1200) or an ISO time "
            "(e.g. 2026-01-31T18:00:00+00:00)"
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


class Builder:
    """Feeds verified records to a projector and bulk-writes a fresh views file.

    Memory stays bounded: append-only rows are spilled every ``SPILL_EVERY``
    events, and views untouched for ``window`` positions are written out and
    forgotten (brought back from the file if a later event needs them); the
    number index keeps 4 bytes per number.

    ``part=(i, n)``: fold only the documents of partition ``i`` of ``n`` (and every
    settings event) into a partial file that ``projections.parallel`` merges;
    records of other partitions are verified and passed over.
    """

    def __init__(
        self,
        store: ViewStore,
        until: int | datetime | None = None,
        verify: bool = True,
        window: int = WINDOW,
        part: tuple[int, int] | None = None,
    ) -> None:
        self.store = store
        self.projector = Projector()
        self.projector.loader = self._reload
        self.projector.finder = self._persisted_holders
        self.verifier = ChainVerifier() if verify else None
        self.until_position = until if isinstance(until, int) else None
        self.until_time = until if isinstance(until, datetime) else None
        self.window = window
        self.part = part
        self.events = 0
        self.head = 0  # last position in the source, if known
        self.done = False  # until reached, or the chain broke
        self.reloaded = 0  # views brought back from the file (tests, tuning)
        # A partition cannot cap distributed epochs alone (the cap is the highest
        # number over all documents): the merge falls back to one process.
        self.needs_whole_log = False
        self._since_spill = 0
        # hash() of the ids of views written out: a new document costs no lookup
        # (a hash collision only costs one lookup that finds nothing).
        self._written: set[int] = set()
        # The digest is taken from the rows as they are written (reading 1M history
        # rows back would cost a second pass); tests check it equals ViewStore.digest().
        # Documents are written out of doc-id order: their digest rows wait in a
        # side table keyed by doc id, read back in order at the end.
        self.digest = Digest()
        self.doc_digest_table = DOC_DIGEST if part else f"temp.{DOC_DIGEST}"
        store.conn.execute(
            f"CREATE TABLE {self.doc_digest_table} "
            "(doc_id TEXT PRIMARY KEY, packed BLOB NOT NULL) WITHOUT ROWID"
        )
        # Spills are written inline: a writer thread was tried and was slower (sqlite3
        # binds parameters holding the GIL, so the two threads mostly took turns, at
        # ~50% more CPU).
        store.conn.execute("BEGIN")

    def abort(self) -> None:
        """Nothing to stop after a failure (the file is discarded): kept so callers
        need not know how spills are written."""

    @property
    def broken(self) -> ChainBreak | None:
        return self.verifier.broken if self.verifier else None

    def _reload(self, doc_id: str) -> DocumentView | None:
        if hash(doc_id) not in self._written:
            return None
        v = self.store.load_document(doc_id)
        self.reloaded += v is not None
        return v

    def _persisted_holders(self, kind: str, period: str, number: int) -> list[str]:
        return self.store.holders(kind, period, number)

    def feed(self, rows: Sequence[Row]) -> bool:
        """Fold rows (in position order); False once nothing more is wanted."""
        if self.done:
            return False
        proj = self.projector
        verifier = self.verifier
        until_pos = self.until_position
        until_time = self.until_time
        part = self.part
        mine, parts = part if part is not None else (0, 1)
        crc32 = zlib.crc32
        for position, body, h in rows:
            if until_pos is not None and position > until_pos:
                self.done = True
                break
            if verifier is not None and verifier.feed(position, body, h) is not None:
                self.done = True
                break
            if part is not None:
                head = peek(body)
                if head is not None and head.doc_id is not None:
                    if until_time is not None and parse_time(head.committed_at) > until_time:
                        self.done = True
                        break
                    if crc32(head.doc_id.encode()) % parts != mine:  # see partition()
                        proj.skip(position, h)
                        self.events += 1
                        continue
            ev = decode_stored(position, body)
            if until_time is not None and parse_time(ev["committed_at"]) > until_time:
                self.done = True
                break
            if part is not None and ev["type"] == "settings.user_mode_set":
                self.needs_whole_log |= any(proj.epochs.values())
            proj.apply(ev, h)
            self.events += 1
        self._since_spill += len(rows)
        if self._since_spill >= SPILL_EVERY:
            self._since_spill = 0
            self._spill()
        return not self.done

    def _spill(self) -> None:
        """Write the append-only rows, and the views that settled (untouched for
        ``window`` positions), then forget those views."""
        proj = self.projector
        cutoff = proj.position - self.window
        settled = [v for v in proj.docs.values() if v.last_position <= cutoff]
        for v in settled:
            del proj.docs[v.doc_id]
            self._written.add(hash(v.doc_id))
        proj.forget_changed()  # every view is written here (settled) or at the end
        self._write(proj.take_appends(), settled)

    def _write(self, ch: Changes, docs: list[DocumentView]) -> None:
        d = self.digest
        d.add("history", ch.history)
        d.add("renumberings", ch.renumberings)
        d.add("conflicts", sorted(ch.conflicts))
        ch.docs = docs
        doc_rows = [doc_row(v) for v in docs]
        packed = [(r[0], encode_digest_row(r[:-1])) for r in doc_rows]
        self.store.write(ch, doc_rows)
        sql = f"INSERT OR REPLACE INTO {self.doc_digest_table} VALUES (?, ?)"
        self.store.conn.executemany(sql, packed)

    def _write_rest(self) -> None:
        proj = self.projector
        self._write(proj.take_appends(), list(proj.docs.values()))
        self.store.conn.execute("COMMIT")

    def finish(self) -> str:
        """Write the rest and commit; returns the views digest."""
        self._write_rest()
        proj = self.projector
        sql = f"SELECT packed FROM {self.doc_digest_table} ORDER BY doc_id"
        return complete_views(self.store, self.digest, proj, proj.settings_changed, sql)

    def finish_part(self) -> dict[str, Any]:
        """A partition's end: write the rest; what the merge needs to know."""
        self._write_rest()
        proj = self.projector
        b = self.broken
        return {
            "events": self.events,
            "position": proj.position,
            "last_hash": proj.last_hash,
            "broken": (b.position, b.reason) if b else None,
            "settings": proj.settings(),
            "settings_changed": proj.settings_changed,
            "needs_whole_log": self.needs_whole_log,
        }


def complete_views(
    store: ViewStore,
    d: Digest,
    proj: Projector,
    settings_changed: bool,
    doc_digest_sql: str,
) -> str:
    """Once every document and append-only row is in a fresh file: index it, write
    the views derived from the documents (duplicates, gaps), settings and
    checkpoint, sync; returns the digest (``d`` holds the append-only views;
    ``doc_digest_sql`` reads the documents' digest rows in doc-id order)."""
    store.create_indexes()  # the duplicates lookup below uses documents_number
    store.conn.execute("BEGIN")
    # Settings are written only once changed, as the incremental path does.
    settings = proj.settings() if settings_changed else None
    last = Changes(proj.position, proj.last_hash, settings=settings)
    dups = store.all_duplicates()
    for kind, period, number, doc in dups:
        last.duplicates.setdefault((kind, period, number), []).append(doc)
    last.gaps = {k: proj.gaps(k) for k in KINDS}
    store.write(last)
    store.conn.execute("COMMIT")
    d.add_packed("documents", (row[0] for row in store.conn.execute(doc_digest_sql)))
    d.add("duplicates", dups)
    # In the views' order (ViewStore.digest reads them ORDER BY kind, period, ...).
    gaps = sorted((g for gs in last.gaps.values() for g in gs), key=_gap_order)
    d.add("gaps", gaps)
    store.sync()
    return d.hexdigest(last.settings, proj.position, proj.last_hash)


def _gap_order(g: Gap) -> tuple[str, str, str, int, int]:
    return (g.kind, g.period, g.series, g.epoch, g.first)


class _Head(msgspec.Struct):
    """The two fields a partition looks at before decoding a whole record."""

    doc_id: str | None = None
    committed_at: str = ""


_peek = msgspec.msgpack.Decoder(_Head).decode


def peek(body: bytes) -> _Head | None:
    """doc_id and commit time of a record, or None if it does not decode so
    (then the full decode names the problem)."""
    try:
        return _peek(body)
    except msgspec.DecodeError:
        return None


def partition(doc_id: str, parts: int) -> int:
    """The partition of a document: stable across processes (not ``hash``)."""
    return zlib.crc32(doc_id.encode()) % parts


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def install_views(built: Path, views_path: Path) -> None:
    """Put a freshly built views file in place of the old one (and its WAL files,
    which would otherwise be replayed onto the new file)."""
    for suffix in ("-wal", "-shm"):
        Path(f"{views_path}{suffix}").unlink(missing_ok=True)
    os.replace(built, views_path)


def log_head(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(position) FROM events").fetchone()
    return int(row[0] or 0)


def open_log(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise FileNotFoundError(f"no log file at {path}")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        conn.execute("SELECT 1 FROM events LIMIT 1")
    except sqlite3.Error as exc:
        raise FileNotFoundError(f"{path} is not a synvoice log: {exc}") from None
    return conn


def iter_log(
    conn: sqlite3.Connection, until: int | None = None, chunk: int = 10_000
) -> Iterator[list[Row]]:
    # No lower bound: a forged row at position <= 0 must reach the chain check.
    cur = conn.execute(*records_query(upto=until))
    while rows := cur.fetchmany(chunk):
        yield rows


def build_from_log(
    log_path: Path,
    views_path: Path,
    until: int | datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> RebuildResult:
    """Rebuild ``views_path`` from ``log_path`` (up to ``until``); see ``rebuild``.

    ``workers``: processes to fold in (default ``parallel.default_workers()``);
    logs under ``PARALLEL_MIN`` records are rebuilt in this process.
    """
    from projections import parallel

    t0 = time.perf_counter()
    conn = open_log(log_path)
    tmp = views_path.with_name(views_path.name + ".rebuilding")
    # A rebuild allocates many long-lived objects and no cycles: the cyclic GC
    # would rescan them over and over for nothing.
    gc_was = gc.isenabled()
    gc.disable()
    try:
        head = log_head(conn)
        if workers is None:
            workers = parallel.default_workers() if head >= PARALLEL_MIN else 1
        built: Built | None = None
        if workers > 1:
            try:
                built = parallel.build_parallel(log_path, tmp, until, workers, head, progress)
            except parallel.NeedsOneProcess:
                pass
        if built is None:
            built = _build_here(conn, tmp, until, head, progress)
        install_views(tmp, views_path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed rebuild leaves no half file
        raise
    finally:
        conn.close()
        if gc_was:
            gc.enable()
    return RebuildResult(
        events=built.events,
        seconds=time.perf_counter() - t0,
        digest=built.digest,
        position=built.projector.position,
        head=head,
        broken=built.broken,
        workers=built.workers,
        worker_peak_mb=built.worker_peak_mb,
    )


def _build_here(
    conn: sqlite3.Connection,
    tmp: Path,
    until: int | datetime | None,
    head: int,
    progress: Callable[[int, int], None] | None,
) -> Built:
    """The rebuild in this process."""
    store = ViewStore.create_fresh(tmp)
    try:
        b = Builder(store, until)
        try:
            limit = until if isinstance(until, int) else None
            for rows in iter_log(conn, limit):
                more = b.feed(rows)
                if progress is not None:
                    progress(rows[-1][0], head)
                if not more:
                    break
            digest = b.finish()
        except BaseException:
            b.abort()
            raise
    finally:
        store.close()
    return Built(digest, b.events, b.broken, b.projector)


@contextmanager
def progress_bar(enabled: bool, what: str) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar over log positions when enabled, else no callback."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(what, total=None)

        def step(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield step


def rebuild(
    log_path: Path | str,
    views_path: Path | str,
    until: int | str | datetime | None = None,
    progress: bool = False,
) -> RebuildResult:
    """Rebuild every view from a log file into ``views_path`` (replaced when done).

    ``until``: a position or an ISO time (compared with ``committed_at``). The
    hash chain is verified on the way; a broken chain stops the rebuild at the
    last good record (``result.broken`` names the first bad one). This is the
    function the benchmarks call.
    """
    with progress_bar(progress, "rebuilding views") as step:
        return build_from_log(Path(log_path), Path(views_path), parse_until(until), step)
