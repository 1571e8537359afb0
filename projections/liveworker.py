"""The live projection's worker process: follows the engine's log file into the views.

The engine starts one (``projections.live``) and tells it the new head after
every commit, one line on its stdin; the worker reads the new records straight
from the log file (a read-only SQLite connection: WAL lets it read while the
engine writes), folds them through ``Follower`` (the one projection code path),
and answers with its checkpoint, one ``at N`` line on stdout. Folding in a
process of its own uses the machine's second core instead of the engine's
event loop, and keeps the views' memory (and a first-start rebuild) out of the
engine process.

The worker ends when its stdin closes (the engine stopped, or died: nothing
outlives the engine) after applying what it was told about. A failure is
reported as one ``error ...`` line; the worker exits non-zero and the engine
starts a new one, which resumes from the views' checkpoint.

    python -m projections.liveworker --log DATA/log.sqlite --views DATA/views.sqlite \
        [--parent ENGINE_PID]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.lifeline import bind_to_parent
from engine.log import records_query
from projections.follow import GAPS_EVERY, Follower, Row
from projections.rebuild import build_from_log, open_log
from projections.store import ViewsError, ViewStore, lock_views

log = logging.getLogger("synvoice.projections.worker")

BATCH = 5000  # records per views transaction while catching up
COALESCE = 0.1  # seconds between views transactions at most (the views' extra lag)


def open_views(log_path: Path, views_path: Path) -> ViewStore:
    """The views file, rebuilt from the log first if missing or of another schema."""
    if views_path.exists():
        try:
            return ViewStore.open(views_path)
        except ViewsError as exc:
            log.warning("rebuilding the views from the log (%s)", exc)
    # One process: the engine serves with the other core meanwhile.
    r = build_from_log(log_path, views_path, workers=1)
    log.info("views rebuilt: %d events in %.1fs, digest %s", r.events, r.seconds, r.digest)
    return ViewStore.open(views_path)


class LogReader:
    """Records after a position, read from the log file (its own read-only connection)."""

    def __init__(self, path: Path) -> None:
        self.conn: sqlite3.Connection = open_log(path)

    def read(self, after: int, upto: int | None = None, limit: int = BATCH) -> list[Row]:
        cur = self.conn.execute(*records_query(after, upto, limit))
        return [(int(p), bytes(b), bytes(h)) for p, b, h in cur]

    def close(self) -> None:
        self.conn.close()


async def follow(log_path: Path, views_path: Path) -> None:
    """Catch up, then apply each head announced on stdin; return at its end."""
    loop = asyncio.get_running_loop()
    await asyncio.to_thread(lock_views, views_path)
    store = await asyncio.to_thread(open_views, log_path, views_path)
    reader = LogReader(log_path)

    async def fill(after: int, upto: int) -> Sequence[Row]:
        return await asyncio.to_thread(reader.read, after, upto)

    f = await Follower.open(store, fill)

    def report() -> None:
        sys.stdout.write(f"at {f.position}\n")
        sys.stdout.flush()

    last = float("-inf")  # loop time of the last views transaction

    async def catch_up() -> None:
        nonlocal last
        # Under a stream of small commits, wait a moment so one views
        # transaction takes several of them: its fixed cost dominates otherwise.
        await asyncio.sleep(max(0.0, last + COALESCE - loop.time()))
        while rows := await asyncio.to_thread(reader.read, f.position):
            await f.feed(rows)
            last = loop.time()
            report()

    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    try:
        await catch_up()
        report()
        while True:
            try:
                line = await asyncio.wait_for(
                    stdin.readline(), GAPS_EVERY if f.gaps_pending else None
                )
            except TimeoutError:
                await f.flush_gaps()  # idle: write the big series' gap lists
                continue
            if not line:
                break  # the engine is gone or stopping: apply what is there, then end
            await catch_up()
        await catch_up()
        if f.gaps_pending:
            await f.flush_gaps()
    finally:
        reader.close()
        store.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m projections.liveworker")
    p.add_argument("--log", type=Path, required=True)
    p.add_argument("--views", type=Path, required=True)
    p.add_argument("--parent", type=int, help="the engine's pid: end when it dies")
    args = p.parse_args(argv)
    if args.parent:
        bind_to_parent(args.parent)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    # The engine decides when the worker ends (by closing its stdin): a Ctrl-C
    # meant for the engine (sent to the whole process group) must not stop it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        asyncio.run(follow(args.log, args.views))
    except Exception as exc:
        msg = " ".join(f"{type(exc).__name__}: {exc}".split())
        sys.stdout.write(f"error {msg}\n")
        sys.stdout.flush()
        log.exception("live projection worker failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
