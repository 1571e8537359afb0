"""5. Peak memory (VmHWM) of the engine process with 1M events in its log while
serving pushes and pulls.

Three engine starts on the same log, each a new process (so each high-water
mark is its own):
  first start   the views do not exist yet: the live projection builds them
                from the whole log (a one-off: first start, upgrade);
  restart       views exist; start-up work done, then pushes and pulls (the
                steady state: the goal applies here);
  core only     the same load with the live views off (SYNVOICE_LIVE_VIEWS=0),
                to tell the core's memory from the projection's.

The live views fold in a worker process of the engine (``projections.liveworker``):
its high-water mark is reported beside the engine's, and their sum.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from tests.bench.context import Context
from tests.bench.procstat import CpuWindow, children, mb, status_kb
from tests.bench.report import BenchResult, Figure, Goal
from tests.bench.stack import Stack, run_worker, wait_idle
from tests.bench.stats import rate
from tests.bench.workload import pull_range, push_all, push_bodies

NAME = "memory"
TITLE = "5. engine peak memory with 1M events in the log"
PUSHERS = 8
PULLERS = 2


def _workers_hwm(pid: int) -> float | None:
    """Summed VmHWM of the engine's child processes (the live views worker), MB."""
    values = [mb(status_kb(k, "VmHWM")) for k in children(pid)]
    known = [v for v in values if v is not None]
    return round(sum(known), 1) if known else None


async def _serve(
    ctx: Context, root: Path, head: int, load: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Start an engine, let its start-up work finish, serve the load, read its memory."""
    async with Stack(root, env=env) as st:
        pid = st.engine.pid
        settle_s = await wait_idle(pid)
        for child in children(pid):  # the live views worker builds / catches up
            settle_s += await wait_idle(child)
        out: dict[str, Any] = {
            "settle_s": round(settle_s, 1),
            "settled_rss": mb(status_kb(pid, "VmRSS")),
            "settled_hwm": mb(status_kb(pid, "VmHWM")),
            "worker_settled_hwm": _workers_hwm(pid),
        }
        if load <= 0:
            return out
        pushers = await st.devices(PUSHERS, ("alice", "bob", "carol", "dave"))
        pullers = await st.devices(PULLERS, ("auditor",))
        bodies = push_bodies(
            [d.device_id for d in pushers],
            [d.user for d in pushers],
            ctx.n(round(40_000 * load), PUSHERS * 10),
            200,
        )
        pull_each = min(head, ctx.n(round(200_000 * load), 1000))

        async def timed_pull(i: int) -> tuple[int, float]:
            t0 = time.perf_counter()
            got = await pull_range(pullers[i], i * head // PULLERS, pull_each)
            return got, time.perf_counter() - t0

        with CpuWindow(st.pids()) as cpu:
            t0 = time.perf_counter()
            push_task = asyncio.create_task(push_all(pushers, bodies))
            pulls = await asyncio.gather(*(timed_pull(i) for i in range(PULLERS)))
            stats = await push_task
            push_s = time.perf_counter() - t0
        nats_pid = st.nats.proc.pid if st.nats.proc else None
        out.update(
            hwm=mb(status_kb(pid, "VmHWM")),
            worker_hwm=_workers_hwm(pid),
            rss_end=mb(status_kb(pid, "VmRSS")),
            nats_hwm=mb(status_kb(nats_pid, "VmHWM")) if nats_pid else None,
            push_per_s=rate(stats.events, push_s),
            pull_per_s=sum(rate(g, s) for g, s in pulls) / len(pulls),
            pushed=stats.events,
            pulled=sum(g for g, _ in pulls),
            cpu=cpu.summary(),
        )
        return out


def _total(engine: float | None, worker: float | None) -> float | None:
    return None if engine is None else round(engine + (worker or 0.0), 1)


async def run(ctx: Context) -> BenchResult:
    res = BenchResult(NAME, TITLE)
    big = await ctx.big_log()
    root = big.path.parent.parent  # the engine serves big/data
    floor = await run_worker(root, "baseline")
    ctx.note("memory: first start (the live projection builds the views from the log)")
    first = await _serve(ctx, root, big.head, load=0)
    ctx.note("memory: restart, then pushes and pulls")
    steady = await _serve(ctx, root, big.head, load=1)
    ctx.note("memory: the same load with live views off")
    core = await _serve(ctx, root, big.head, load=0.5, env={"SYNVOICE_LIVE_VIEWS": "0"})
    res.add(
        Figure(
            "memory.engine_peak_mb",
            f"engine peak RSS (VmHWM) serving pushes + pulls, {big.head:,} events in the log",
            steady["hwm"],
            "MB",
            Goal("lt", 200),
            ceiling="memory.floor",
        ),
        Figure(
            "memory.worker_peak_mb",
            "live views worker process peak RSS (VmHWM), same run",
            steady["worker_hwm"],
            "MB",
        ),
        Figure(
            "memory.with_worker_peak_mb",
            "engine + live views worker peak RSS",
            _total(steady["hwm"], steady["worker_hwm"]),
            "MB",
            ceiling="memory.floor",
        ),
        Figure("memory.settled_mb", "engine RSS after start-up", steady["settled_rss"], "MB"),
        Figure("memory.end_mb", "engine RSS after the load", steady["rss_end"], "MB"),
        Figure(
            "memory.first_start_peak_mb",
            f"first start: peak RSS while the views are built ({first['settle_s']:.0f} s)",
            first["settled_hwm"],
            "MB",
            ceiling="memory.floor",
        ),
        Figure(
            "memory.worker_first_start_peak_mb",
            "first start: live views worker peak RSS (it builds the views)",
            first["worker_settled_hwm"],
            "MB",
            ceiling="memory.floor",
        ),
        Figure(
            "memory.core_peak_mb",
            "same load with live views off (SYNVOICE_LIVE_VIEWS=0): peak RSS",
            core["hwm"],
            "MB",
            ceiling="memory.floor",
        ),
        Figure("memory.push_per_s", "pushes served meanwhile", steady["push_per_s"], "ev/s"),
        Figure(
            "memory.pull_per_s", "pulls served meanwhile, per puller", steady["pull_per_s"], "ev/s"
        ),
        Figure("memory.nats_peak_mb", "nats-server peak RSS", steady["nats_hwm"], "MB"),
        Figure(
            "memory.floor",
            "floor: idle Python with the engine's imports",
            floor.get("peak_rss_mb"),
            "MB",
            raw=True,
        ),
    )
    res.info.update(
        events=big.head,
        pushed=steady["pushed"],
        pulled=steady["pulled"],
        cpu_share=steady["cpu"],
        first_start=first,
        core_only={k: v for k, v in core.items() if k != "cpu"},
    )
    return res
