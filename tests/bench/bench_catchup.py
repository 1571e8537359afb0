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
from engine.client import EngineClient
from tests.bench import ceilings
from tests.bench.context import Context
from tests.bench.loggen import LogSpec, generate
from tests.bench.procstat import CpuWindow
from tests.bench.report import BenchResult, Figure, Goal
from tests.bench.stack import Stack
from tests.bench.stats import rate
from tests.bench.workload import pull_range

log = logging.getLogger("synvoice.bench")

NAME = "catchup"
TITLE = "4. device catch-up"


async def _maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def agent_sync(
    home: Path, token: str, profile_out: Path | None = None
) -> tuple[str, int | None, float, dict[str, float]]:
    """Time ``DeviceAgent`` init/connect (untimed) then sync (timed), if it exists.
    With ``profile_out``: the sync runs under pyinstrument (its event-loop thread;
    the store's SQLite thread shows as waits) and the report is written there.

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
        profiler = _profiler() if profile_out is not None else None
        with CpuWindow({"bench client (agent)": os.getpid()}) as cpu:
            if profiler is not None:
                profiler.start()
            result = await _maybe(agent.sync())
            if profiler is not None:
                profiler.stop()
        if profiler is not None and profile_out is not None:
            _write_profile(profiler, profile_out)
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


def _profiler() -> Any:
    from pyinstrument import Profiler

    return Profiler(interval=0.0005, async_mode="enabled")


def _write_profile(profiler: Any, out: Path) -> None:
    """A flat view (own time per function) and the call tree (awaits shown as such)."""
    flat = profiler.output_text(unicode=False, color=False, flat=True)
    tree = profiler.output_text(unicode=False, color=False)
    out.write_text(
        "# DeviceAgent.sync, event-loop thread, own time per function (pyinstrument)\n"
        + flat
        + "\n# Call tree\n"
        + tree
    )


async def pull_raw_range(client: EngineClient) -> int:
    """Page through the log like ``pull_range``, event bodies left undecoded: what
    the engine and the broker deliver, the bound for any decoding client."""
    from devices.catchup import last_position

    got = after = 0
    while True:
        page = await client.pull_page(after)
        got += len(page.events)
        after = last_position(page, after)
        if not page.more or not page.events:
            return got


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
        ctx.note("catchup: EngineClient.pull_page paging, bodies not decoded")
        t0 = time.perf_counter()
        got_raw = await pull_raw_range(puller.client)
        pull_raw = rate(got_raw, time.perf_counter() - t0)
        head = (await st.status()).head
        fresh = await st.enroll("reader", "agent", connect=False)
        ctx.note("catchup: DeviceAgent.sync")
        status, pulled, seconds, cpu = await agent_sync(root / "device-home", fresh.token)
        if ctx.profile and status == "ok":
            ctx.note("catchup: DeviceAgent.sync again, under pyinstrument")
            again = await st.enroll("reader", "agent (profiled)", connect=False)
            out = ctx.profile_path(NAME)
            await agent_sync(root / "device-home-profile", again.token, out)
            res.info["profile"] = str(out)
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
            "catchup.ceil.pull_raw",
            "EngineClient.pull_page paging, bodies not decoded",
            pull_raw,
            "ev/s",
            raw=True,
        ),
        Figure(
            "catchup.ceil.jetstream",
            "raw JetStream ordered push consumer replay",
            js,
            "msg/s",
            raw=True,
        ),
    )
    res.info.update(events=gen.head, pulled=got, pulled_raw=got_raw)
    return res
