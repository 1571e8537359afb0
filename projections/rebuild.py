"""Full rebuild of the views from the log: verify the chain, fold, write in bulk.

``Builder`` is the batch driver of the projection (the replay tool and the
engine's first start use it); ``Follower`` in ``projections.follow`` is the
incremental one. Both feed ``Projector`` and write through ``ViewStore``.

A rebuild writes a fresh file in one transaction (no journal), renames it over
the target only when complete, and verifies every record's hash link before
decoding it, so an altered record is named by position and never folded.
"""

from __future__ import annotations

import gc
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.hashchain import ChainBreak, ChainVerifier
from projections.model import Changes, Projector, decode
from projections.store import Digest, ViewStore, doc_row

Row = tuple[int, bytes, bytes]  # (position, body, hash)
SPILL_EVERY = 50_000  # append-only rows written per this many events (bounded memory)


@dataclass(frozen=True)
class RebuildResult:
    events: int  # records folded into the views
    seconds: float
    digest: str  # sha256 of the views (see ViewStore.digest)
    position: int  # last position in the views
    head: int  # last position in the source log
    broken: ChainBreak | None = None  # first record whose hash link fails

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
        }


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
    """Feeds verified records to a projector and bulk-writes a fresh views file."""

    def __init__(
        self,
        store: ViewStore,
        until: int | datetime | None = None,
        verify: bool = True,
    ) -> None:
        self.store = store
        self.projector = Projector()
        self.verifier = ChainVerifier() if verify else None
        self.until_position = until if isinstance(until, int) else None
        self.until_time = until if isinstance(until, datetime) else None
        self.events = 0
        self.head = 0  # last position in the source, if known
        self.done = False  # until reached, or the chain broke
        self._since_spill = 0
        # The digest is taken from the rows as they are written (reading 1M history
        # rows back would cost a second pass); tests check it equals ViewStore.digest().
        self.digest = Digest()
        store.conn.execute("BEGIN")
        # Spills are written by a second thread: sqlite3 releases the GIL while it
        # steps, so inserting one chunk overlaps with folding the next.
        self._writes: queue.Queue[tuple[Changes, list[tuple[Any, ...]] | None] | None] = (
            queue.Queue(maxsize=2)
        )
        self._failure: BaseException | None = None
        self._writer = threading.Thread(target=self._write_loop, name="views-writer", daemon=True)
        self._writer.start()

    def _write_loop(self) -> None:
        while (item := self._writes.get()) is not None:
            if self._failure is None:
                try:
                    self.store.write(*item)
                except BaseException as exc:  # re-raised in the feeding thread
                    self._failure = exc

    def _stop_writer(self) -> None:
        if self._writer.is_alive():
            self._writes.put(None)
            self._writer.join()
        if self._failure is not None:
            raise self._failure

    def abort(self) -> None:
        """Stop the writer thread after a failure (the file is discarded)."""
        try:
            self._stop_writer()
        except BaseException:
            pass

    @property
    def broken(self) -> ChainBreak | None:
        return self.verifier.broken if self.verifier else None

    def feed(self, rows: Sequence[Row]) -> bool:
        """Fold rows (in position order); False once nothing more is wanted."""
        if self.done:
            return False
        proj = self.projector
        verifier = self.verifier
        until_pos = self.until_position
        until_time = self.until_time
        for position, body, h in rows:
            if until_pos is not None and position > until_pos:
                self.done = True
                break
            if verifier is not None and verifier.feed(position, body, h) is not None:
                self.done = True
                break
            ev = decode(position, body)
            if until_time is not None and datetime.fromisoformat(ev["committed_at"]) > until_time:
                self.done = True
                break
            proj.apply(ev, h)
            self.events += 1
        self._since_spill += len(rows)
        if self._since_spill >= SPILL_EVERY:
            self._since_spill = 0
            self._write(proj.take_appends())
        return not self.done

    def _write(self, ch: Changes, doc_rows: list[tuple[Any, ...]] | None = None) -> None:
        d = self.digest
        d.add("history", ch.history)
        d.add("renumberings", ch.renumberings)
        d.add("conflicts", sorted(ch.conflicts))
        if self._failure is not None:
            raise self._failure
        self._writes.put((ch, doc_rows))

    def finish(self) -> str:
        """Write the rest and commit; returns the views digest."""
        proj = self.projector
        ch = proj.take_changes()  # a fresh file: every view's full content
        doc_rows = [doc_row(v) for v in ch.docs]  # sorted by doc id
        d = self.digest
        d.add("documents", [r[:-1] for r in doc_rows])
        d.add(
            "duplicates",
            [
                (k, n, doc)
                for (k, n), docs in ch.duplicates.items()
                if len(docs) > 1
                for doc in docs
            ],
        )
        d.add("gaps", [g for gs in ch.gaps.values() for g in gs])
        self._write(ch, doc_rows)
        self._stop_writer()
        self.store.conn.execute("COMMIT")
        self.store.finish_bulk()
        return d.hexdigest(ch.settings, proj.position, proj.last_hash)


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
    q = "SELECT position, body, hash FROM events"
    args: tuple[int, ...] = ()
    if until is not None:
        q += " WHERE position <= ?"
        args = (until,)
    cur = conn.execute(q + " ORDER BY position", args)
    while rows := cur.fetchmany(chunk):
        yield rows


def build_from_log(
    log_path: Path,
    views_path: Path,
    until: int | datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RebuildResult:
    """Rebuild ``views_path`` from ``log_path`` (up to ``until``); see ``rebuild``."""
    t0 = time.perf_counter()
    conn = open_log(log_path)
    tmp = views_path.with_name(views_path.name + ".rebuilding")
    # A rebuild allocates millions of long-lived objects and no cycles: the cyclic
    # GC would rescan them over and over for nothing.
    gc_was = gc.isenabled()
    gc.disable()
    try:
        head = log_head(conn)
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
        install_views(tmp, views_path)
    finally:
        conn.close()
        if gc_was:
            gc.enable()
    return RebuildResult(
        events=b.events,
        seconds=time.perf_counter() - t0,
        digest=digest,
        position=b.projector.position,
        head=head,
        broken=b.broken,
    )


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
