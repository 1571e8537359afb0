"""Rebuild speed next to ceilings measured on the same log, in the same run.

    python -m tests.bench.rebuild_floor --events 1000000 --dir /tmp/synvoice-bench
    python -m tests.bench.rebuild_floor --log DATA/log.sqlite [--workers N] [--profile]

Ceilings: a raw SQLite scan, and the *floor* of any rebuild in one process:
scan + hash-chain verify + a typed decode of the history fields + writing the
history rows (no fold, no document views). Generates the log with
``tests.bench.loggen`` (the benchmark suite's generator) unless ``--log`` is
given. Not a test: it measures, it does not assert.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from engine.hashchain import ChainVerifier
from projections.rebuild import build_from_log, iter_log, open_log
from projections.store import ViewStore


def raw_scan(log: Path) -> tuple[int, float]:
    """Every (position, body, hash) row with fetchmany(10000), doing nothing with them."""
    conn = sqlite3.connect(f"file:{log}?mode=ro", uri=True)
    t0 = time.perf_counter()
    n = 0
    cur = conn.execute("SELECT position, body, hash FROM events ORDER BY position")
    while rows := cur.fetchmany(10_000):
        n += len(rows)
    seconds = time.perf_counter() - t0
    conn.close()
    return n, seconds


class _HistoryFields(msgspec.Struct):
    type: str
    doc_id: str | None = None
    user: str = ""
    device_id: str = ""
    device_time: str = ""
    committed_at: str = ""


def floor(log: Path, scratch: Path) -> tuple[int, float]:
    """The least a one-process rebuild must do: scan, verify each link, decode the
    history fields into a typed struct, bulk-insert the history rows."""
    decode = msgspec.msgpack.Decoder(_HistoryFields).decode
    conn = open_log(log)
    store = ViewStore.create_fresh(scratch)
    c = store.conn
    t0 = time.perf_counter()
    n = 0
    verifier = ChainVerifier()
    c.execute("BEGIN")
    for rows in iter_log(conn):
        out = []
        for position, body, h in rows:
            verifier.feed(position, body, h)
            e = decode(body)
            out.append(
                (
                    position,
                    e.doc_id or "",
                    e.type,
                    e.user,
                    e.device_id,
                    e.device_time,
                    e.committed_at,
                    "",
                )
            )
        c.executemany("INSERT INTO history VALUES (?,?,?,?,?,?,?,?)", out)
        n += len(rows)
    c.execute("COMMIT")
    seconds = time.perf_counter() - t0
    store.close()
    conn.close()
    scratch.unlink()
    return n, seconds


def run(log: Path, views: Path, workers: int | None = None) -> dict[str, Any]:
    scanned, scan_s = raw_scan(log)
    floored, floor_s = floor(log, views.with_name("floor.sqlite"))
    cpu0 = time.process_time()
    r = build_from_log(log, views, workers=workers)
    cpu = time.process_time() - cpu0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = children.ru_utime + children.ru_stime
    floor_per_s = floored / floor_s
    return {
        "events": r.events,
        "raw_scan_per_s": round(scanned / scan_s),
        "floor_per_s": round(floor_per_s),
        "rebuild_per_s": round(r.per_second),
        "rebuild_cpu_s": round(cpu + child_cpu, 2),  # this process and its workers
        "rebuild_seconds": round(r.seconds, 2),
        "rebuild_vs_scan": round(r.per_second / (scanned / scan_s), 3),
        "rebuild_vs_floor": round(r.per_second / floor_per_s, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "worker_peak_rss_mb": round(children.ru_maxrss / 1024) or None,
        "digest": r.digest,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.rebuild_floor")
    p.add_argument("--log", type=Path, help="an existing log file")
    p.add_argument("--events", type=int, default=1_000_000, help="events to generate")
    p.add_argument("--dir", type=Path, default=Path("bench-work"), help="work folder")
    p.add_argument("--workers", type=int, help="rebuild processes (default: the cores)")
    p.add_argument("--profile", type=Path, help="write a pyinstrument text profile here")
    args = p.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    log = args.log
    if log is None:
        from tests.bench.loggen import LogSpec, generate

        log = args.dir / "log.sqlite"
        print(f"generating {args.events:,} events into {log} ...", file=sys.stderr)
        generate(log, LogSpec(events=args.events))
    if args.profile is None:
        print(json.dumps(run(log, args.dir / "views.sqlite", args.workers), indent=2))
        return 0
    from pyinstrument import Profiler

    with Profiler() as prof:  # the parent only: profile with --workers 1
        out = run(log, args.dir / "views.sqlite", args.workers)
    args.profile.write_text(prof.output_text(unicode=True, show_all=False))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
