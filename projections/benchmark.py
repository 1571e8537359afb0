"""Rebuild speed next to a raw SQLite scan of the same log, in the same run.

    python -m projections.benchmark --events 1000000 --dir /tmp/synvoice-bench
    python -m projections.benchmark --log DATA/log.sqlite

Generates the log with ``engine.bench.loggen`` (the benchmark suite's generator)
unless ``--log`` is given. Not a test: it measures, it does not assert.
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

from projections.rebuild import rebuild


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


def run(log: Path, views: Path) -> dict[str, Any]:
    scanned, scan_s = raw_scan(log)
    cpu0 = time.process_time()
    r = rebuild(log, views)
    cpu = time.process_time() - cpu0
    return {
        "events": r.events,
        "raw_scan_per_s": round(scanned / scan_s),
        "rebuild_per_s": round(r.per_second),
        "rebuild_cpu_per_s": round(r.events / cpu) if cpu else None,
        "rebuild_seconds": round(r.seconds, 2),
        "rebuild_vs_scan": round(r.per_second / (scanned / scan_s), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "digest": r.digest,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m projections.benchmark")
    p.add_argument("--log", type=Path, help="an existing log file")
    p.add_argument("--events", type=int, default=1_000_000, help="events to generate")
    p.add_argument("--dir", type=Path, default=Path("bench-work"), help="work folder")
    args = p.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    log = args.log
    if log is None:
        from engine.bench.loggen import LogSpec, generate

        log = args.dir / "log.sqlite"
        print(f"generating {args.events:,} events into {log} ...", file=sys.stderr)
        generate(log, LogSpec(events=args.events))
    print(json.dumps(run(log, args.dir / "views.sqlite"), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
