"""3. Full rebuild of all projections over 1M events, beside a raw SQLite scan and
the floor of any one-process rebuild (scan + chain verify + typed decode of the
history fields + history insert, no fold), both measured in the same run."""

from __future__ import annotations

import asyncio

from tests.bench import ceilings
from tests.bench.context import Context
from tests.bench.rebuild_floor import floor
from tests.bench.report import BenchResult, Figure, Goal
from tests.bench.stack import run_worker
from tests.bench.stats import rate

NAME = "rebuild"
TITLE = "3. full rebuild of all projections"


async def run(ctx: Context) -> BenchResult:
    res = BenchResult(NAME, TITLE)
    big = await ctx.big_log()
    work = ctx.dir(NAME)
    ctx.note(f"rebuild: projections.rebuild.rebuild over {big.head:,} events")
    r = await run_worker(work, "rebuild", str(big.path), str(work / "views.sqlite"))
    ctx.note("rebuild: ceilings (SQLite scan, floor, decode)")
    rows, scan = await ceilings.sqlite_scan(big.path)
    floored, floor_s = await asyncio.to_thread(floor, big.path, work / "floor.sqlite")
    sample = min(big.head, ctx.n(100_000, 1000))
    unpack, parse = await ceilings.decode_events(big.path, sample)
    fig = Figure(
        "rebuild.events_per_s",
        f"rebuild of all projections, {big.head:,} events",
        None,
        "ev/s",
        Goal("ge", 200_000),
        ceiling="rebuild.ceil.floor",
    )
    if r["status"] == "ok":
        fig.value = rate(big.head, r["seconds"])
        res.info.update(seconds=round(r["seconds"], 3), rebuild_peak_rss_mb=r["peak_rss_mb"])
        res.info["result"] = r.get("result")
    else:
        res.status = "not available" if r["status"] == "not available" else "error"
        res.message = r.get("message", "")
        fig.note = res.message
    res.add(
        fig,
        Figure(
            "rebuild.ceil.scan",
            "raw aiosqlite scan of the log, fetchmany(10000)",
            scan,
            "rows/s",
            raw=True,
        ),
        Figure(
            "rebuild.ceil.floor",
            "floor, one process: scan + verify + typed decode + history insert, no fold",
            rate(floored, floor_s),
            "ev/s",
            raw=True,
        ),
        Figure(
            "rebuild.ceil.unpack",
            f"raw msgpack decode (first {sample:,} events)",
            unpack,
            "ev/s",
            raw=True,
        ),
        Figure(
            "rebuild.ceil.parse",
            f"decode + parse_event + payload validation (first {sample:,})",
            parse,
            "ev/s",
            raw=True,
        ),
    )
    if r["status"] == "ok" and r.get("peak_rss_mb") is not None:
        res.add(
            Figure("rebuild.peak_mb", "peak RSS of the rebuild process", r["peak_rss_mb"], "MB")
        )
    res.info.update(events=big.head, scanned=rows, log_bytes=big.path.stat().st_size)
    return res
