"""4. Device catch-up of 100k events, beside a raw JetStream ordered-consumer replay."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from pathlib import Path
from typing import Any

from engine import protocol
from engine.bench import ceilings
from engine.bench.context import Context
from engine.bench.loggen import LogSpec, generate
from engine.bench.procstat import CpuWindow
from engine.bench.report import BenchResult, Figure, Goal
from engine.bench.stack import Stack
from engine.bench.stats import rate
from engine.bench.workload import pull_range

log = logging.getLogger("synvoice.bench")

NAME = "catchup"
TITLE = "4. device catch-up"


async def _maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def agent_sync(home: Path, token: str) -> tuple[str, int | None, float, dict[str, float]]:
    """Time ``DeviceAgent`` init/connect (untimed) then sync (timed), if it exists.

    Returns (status, events pulled as the agent reports them, seconds, CPU share)."""
    try:
        from devices.agent import DeviceAgent  # type: ignore[import-not-found, unused-ignore]
    except ModuleNotFoundError as exc:
        if exc.name in ("devices.agent", "devices"):
            return "devices.agent not available yet", None, 0.0, {}
        raise
    except ImportError as exc:
        return f"devices.agent.DeviceAgent not available yet ({exc})", None, 0.0, {}
    agent: Any = None
    try:
        agent = await _maybe(DeviceAgent.init(home, token))
        await _maybe(agent.connect())
        with CpuWindow({"bench client (agent)": os.getpid()}) as cpu:
            result = await _maybe(agent.sync())
        pulled = getattr(result, "pulled", None)
        return "ok", pulled if isinstance(pulled, int) else None, cpu.wall, cpu.summary()
    except Exception as exc:  # the agent's failure is reported, the other figures kept
        log.exception("DeviceAgent failed")
        return f"error: DeviceAgent: {type(exc).__name__}: {exc}", None, 0.0, {}
    finally:
        for name in ("close", "aclose", "disconnect"):
            fn = getattr(agent, name, None)
            if callable(fn):
                try:
                    await _maybe(fn())
                except Exception:
                    log.exception("DeviceAgent close failed")
                break


async def run(ctx: Context) -> BenchResult:
    res = BenchResult(NAME, TITLE)
    n = ctx.n(100_000, 1000)
    root = ctx.dir(NAME)
    spec = LogSpec(events=n, mark_published=False)  # the engine publishes it to JetStream
    with ctx.progress(f"generating a {n:,}-event log", n) as adv:
        gen = await asyncio.to_thread(generate, root / "data" / "log.sqlite", spec, adv)
    async with Stack(root) as st:
        ctx.note("catchup: waiting for the engine to publish the log to JetStream")
        await st.wait_published(gen.head)
        ctx.note("catchup: raw JetStream ordered consumer")
        js = await ceilings.jetstream_ordered_read(
            st.url, protocol.LOG_SUBJECTS, gen.head, timeout=300
        )
        puller = await st.enroll("reader", "pull pager")
        ctx.note("catchup: EngineClient.pull paging")
        t0 = time.perf_counter()
        got = await pull_range(puller, 0, 1 << 62)
        pull = rate(got, time.perf_counter() - t0)
        head = (await st.status())["head"]
        fresh = await st.enroll("reader", "agent", connect=False)
        ctx.note("catchup: DeviceAgent.sync")
        status, pulled, seconds, cpu = await agent_sync(root / "device-home", fresh.token)
    fig = Figure(
        "catchup.events_per_s",
        f"DeviceAgent.sync of {head:,} events (fresh device)",
        None,
        "ev/s",
        Goal("ge", 50_000),
        ceiling="catchup.ceil.jetstream",
    )
    if status == "ok":
        fig.value = rate(pulled if pulled is not None else head, seconds)
        res.info.update(agent_seconds=round(seconds, 3), agent_pulled=pulled, cpu_share=cpu)
    else:
        res.status = "error" if status.startswith("error") else "not available"
        res.message = fig.note = status.removeprefix("error: ")
    res.add(
        fig,
        Figure(
            "catchup.pull_per_s",
            "EngineClient.pull paging (5000/page), events decoded",
            pull,
            "ev/s",
            ceiling="catchup.ceil.jetstream",
        ),
        Figure(
            "catchup.ceil.jetstream",
            "raw JetStream ordered push consumer replay",
            js,
            "msg/s",
            raw=True,
        ),
    )
    res.info.update(events=gen.head, pulled=got)
    return res
