"""A full rebuild on several cores: documents partitioned across processes.

Documents fold independently, so each worker process runs a ``Builder`` over
the whole log that verifies every hash link but folds only its partition's
documents (and every settings event) into a partial file. The parent merges the
partial files in SQLite (``INSERT ... SELECT``, rows merged in position order
without a sort), then derives what spans documents from the merged file:
duplicates (SQL over documents), gaps (number index + settings), digest.

Workers are plain ``python -m projections.parallel`` processes (not
multiprocessing: nothing of the caller's ``__main__`` is re-imported), reporting
progress and their summary as lines on stdout.

Each worker sees every record, so each stops at the same place (``until``, a
broken link, a bad record) with the same checkpoint; the parent checks they
agree. The one fold that spans documents is capping distributed epochs when the
user mode leaves distributed (the cap is the highest number over all
documents): a worker that meets it says so and the parent rebuilds in one
process instead.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import selectors
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from engine.hashchain import ChainBreak
from engine.stored import StoredEventError
from projections.model import Projector
from projections.rebuild import (
    DOC_DIGEST,
    Builder,
    Built,
    complete_views,
    iter_log,
    open_log,
    parse_until,
)
from projections.store import DIGEST_TABLES, Digest, ViewStore

# Tables a worker writes, merged in this column order (documents in any order).
_MERGED = ("documents", "history", "renumberings", "conflicts")
_ORDER = {name: order for name, _, order in DIGEST_TABLES}


def default_workers() -> int:
    """``SYNVOICE_REBUILD_WORKERS``, else two if two cores are available.

    Each worker scans, verifies and peeks at every record and the merge is serial
    (~8 s at 1M events): two workers cost ~25% more CPU. With the cores free they
    rebuilt 1M events at 38.6k/s against 30.6k/s in one process; with the cores
    busy with other work, 18.5k/s against 22.0k/s. Callers sharing the machine
    with latency-sensitive work (the engine's live views) pass ``workers=1``.
    """
    env = os.environ.get("SYNVOICE_REBUILD_WORKERS")
    if env:
        return max(1, min(int(env), 2 * len(os.sched_getaffinity(0))))
    return min(2, len(os.sched_getaffinity(0)))


class NeedsOneProcess(Exception):
    """The log folds across documents (see the module doc): rebuild in one process."""


def run_part(log_path: Path, part_path: Path, index: int, parts: int, until: str | None) -> int:
    """A worker process (``python -m projections.parallel``): one partition into
    ``part_path``. Writes ``progress POSITION`` lines, then one ``result JSON``
    line (or ``projection POSITION MESSAGE`` for a record it cannot fold)."""
    gc.disable()  # see build_from_log
    out = sys.stdout
    limit_until = parse_until(until)
    conn = open_log(log_path)
    store = ViewStore.create_fresh(part_path)
    try:
        b = Builder(store, limit_until, part=(index, parts))
        try:
            limit = limit_until if isinstance(limit_until, int) else None
            for rows in iter_log(conn, limit):
                more = b.feed(rows)
                out.write(f"progress {rows[-1][0]}\n")
                out.flush()
                if not more:
                    break
            summary = b.finish_part()
        except StoredEventError as exc:
            b.abort()
            out.write(f"projection {exc.position} {exc.message}\n")
            return 2
        except BaseException:
            b.abort()
            raise
    finally:
        store.close()
        conn.close()
    summary["last_hash"] = summary["last_hash"].hex()
    summary["peak_mb"] = _peak_mb()
    out.write(f"result {json.dumps(summary)}\n")
    out.flush()
    return 0


def _peak_mb() -> float | None:
    """This process's peak RSS (VmHWM), in MB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def build_parallel(
    log_path: Path,
    tmp: Path,
    until: int | datetime | None,
    parts: int,
    head: int,
    progress: Callable[[int, int], None] | None = None,
) -> Built:
    """Build ``tmp`` from ``log_path`` in ``parts`` processes. Raises
    ``NeedsOneProcess`` when the log needs one."""
    part_paths = [tmp.with_name(f"{tmp.name}.part{i}") for i in range(parts)]
    arg_until = []
    if until is not None:
        arg_until = ["--until", str(until) if isinstance(until, int) else until.isoformat()]
    procs: list[subprocess.Popen[str]] = []
    errs = [tempfile.TemporaryFile("w+") for _ in range(parts)]
    try:
        for i, path in enumerate(part_paths):
            cmd = [sys.executable, "-m", "projections.parallel", str(log_path), str(path)]
            procs.append(
                subprocess.Popen(
                    [*cmd, "--part", f"{i}/{parts}", *arg_until],
                    stdout=subprocess.PIPE,
                    stderr=errs[i],  # a file: a chatty worker cannot fill a pipe and stall
                    text=True,
                )
            )
        outs = _collect(procs, errs, head, progress)
        first = outs[0]
        for o in outs[1:]:
            if (o["position"], o["last_hash"], o["broken"]) != (
                first["position"],
                first["last_hash"],
                first["broken"],
            ):
                raise RuntimeError("rebuild partitions stopped at different records")
        if any(o["needs_whole_log"] for o in outs):
            raise NeedsOneProcess
        return _merge(tmp, part_paths, outs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for f in errs:
            f.close()
        for path in part_paths:
            for suffix in ("", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)


def _collect(
    procs: list[subprocess.Popen[str]],
    errs: Sequence[IO[str]],
    head: int,
    progress: Callable[[int, int], None] | None,
) -> list[dict[str, Any]]:
    """Follow the workers' output to the end: their summaries, in partition order."""
    at = [0] * len(procs)
    outs: dict[int, dict[str, Any]] = {}
    bad: list[tuple[int, str]] = []  # records a worker could not fold
    sel = selectors.DefaultSelector()
    for i, p in enumerate(procs):
        assert p.stdout is not None
        sel.register(p.stdout, selectors.EVENT_READ, i)
    open_pipes = len(procs)
    while open_pipes:
        for key, _ in sel.select():
            i = key.data
            line = key.fileobj.readline()  # type: ignore[union-attr]
            if not line:
                sel.unregister(key.fileobj)
                open_pipes -= 1
                continue
            what, _, rest = line.rstrip("\n").partition(" ")
            if what == "progress":
                at[i] = int(rest)
                if progress is not None:
                    progress(min(at), head)
            elif what == "result":
                outs[i] = json.loads(rest)
            elif what == "projection":
                pos, _, message = rest.partition(" ")
                bad.append((int(pos), message))
    sel.close()
    if bad:
        # The same record fails in every partition that folds it: report the first.
        raise StoredEventError(*min(bad))
    for i, p in enumerate(procs):
        if p.wait() != 0 or i not in outs:
            errs[i].seek(0)
            err = errs[i].read()
            raise RuntimeError(f"rebuild worker {i} failed: {err.strip()[-2000:]}")
    for o in outs.values():
        o["last_hash"] = bytes.fromhex(o["last_hash"])
        o["broken"] = tuple(o["broken"]) if o["broken"] else None
    return [outs[i] for i in range(len(procs))]


def _merge(tmp: Path, part_paths: list[Path], outs: list[dict[str, Any]]) -> Built:
    first = outs[0]
    settings = dict(first["settings"])
    # Each partition saw only its own numbers: the highest is the highest of all.
    settings["highest"] = {
        k: max(o["settings"]["highest"][k] for o in outs) for k in settings["highest"]
    }
    store = ViewStore.create_fresh(tmp)
    try:
        c = store.conn
        names = [f"p{i}" for i in range(len(part_paths))]
        for name, path in zip(names, part_paths, strict=True):
            c.execute("ATTACH DATABASE ? AS " + name, (str(path),))
        c.execute("BEGIN")
        for table in _MERGED:
            arms = " UNION ALL ".join(f"SELECT * FROM {n}.{table}" for n in names)
            # A compound SELECT ordered by each arm's key is a merge, not a sort.
            order = "" if table == "documents" else f" ORDER BY {_ORDER[table]}"
            c.execute(f"INSERT INTO {table} {arms}{order}")
        c.execute("COMMIT")
        d = Digest()
        for table in ("history", "renumberings", "conflicts"):
            store.digest_table(d, table)
        numbers = c.execute("SELECT kind, period, number FROM documents WHERE number != 0")
        proj = Projector.restore(first["position"], first["last_hash"], settings, numbers=numbers)
        packed = (
            " UNION ALL ".join(f"SELECT packed, doc_id FROM {n}.{DOC_DIGEST}" for n in names)
            + " ORDER BY 2"
        )
        changed = any(o["settings_changed"] for o in outs)
        digest = complete_views(store, d, proj, changed, packed)
        for name in names:
            c.execute("DETACH DATABASE " + name)
    finally:
        store.close()
    broken = ChainBreak(*first["broken"]) if first["broken"] else None
    peak = max((o["peak_mb"] for o in outs if o["peak_mb"] is not None), default=None)
    return Built(digest, int(first["events"]), broken, proj, len(outs), peak)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m projections.parallel")
    p.add_argument("log", type=Path)
    p.add_argument("part_file", type=Path)
    p.add_argument("--part", required=True, help="INDEX/COUNT")
    p.add_argument("--until")
    args = p.parse_args(argv)
    index, count = (int(x) for x in args.part.split("/"))
    return run_part(args.log, args.part_file, index, count, args.until)


if __name__ == "__main__":
    sys.exit(main())
