"""2. Centralized numbers: 64 devices, each asking for one number at a time in a loop."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.bench import ceilings, inproc, profiling
from tests.bench.context import Context
from tests.bench.procstat import CpuWindow
from tests.bench.report import BenchResult, Figure, Goal
from tests.bench.stack import Stack
from tests.bench.stats import duplicates, percentile, rate
from tests.bench.workload import next_numbers_loop

NAME = "numbers"
TITLE = "2. centralized numbers (64 devices, one number per request)"
DEVICES = 64
USERS = tuple(f"user{i}" for i in range(8))


async def workload(ctx: Context, st: Stack, per_device: int) -> dict[str, Any]:
    devices = await asyncio.gather(
        *(st.enroll(USERS[i % len(USERS)], f"bench {i}") for i in range(DEVICES))
    )
    numbers: list[int] = []
    warm: list[float] = []
    await asyncio.gather(*(next_numbers_loop(d, 2, "invoice", warm, numbers) for d in devices))
    lat: list[float] = []
    with ctx.progress("asking for numbers", DEVICES * per_device) as adv:
        ticker = asyncio.create_task(_tick(lat, adv))
        try:
            with CpuWindow(st.pids()) as cpu:
                await asyncio.gather(
                    *(next_numbers_loop(d, per_device, "invoice", lat, numbers) for d in devices)
                )
        finally:
            ticker.cancel()
    lat.sort()
    return {
        "numbers": len(lat),
        "seconds": cpu.wall,
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "duplicates": duplicates(numbers),
        # In a fresh engine the counter hands out exactly 1..N: any hole is a lost number.
        "contiguous": sorted(numbers) == list(range(1, len(numbers) + 1)),
        "cpu": cpu.summary(),
        "engine_cpu_s": cpu.engine_seconds(),
    }


async def _tick(lat: list[float], advance: Any) -> None:
    seen = 0
    while True:
        await asyncio.sleep(0.2)
        advance(len(lat) - seen)
        seen = len(lat)


async def run(ctx: Context) -> BenchResult:
    res = BenchResult(NAME, TITLE)
    per_device = ctx.n(250, 3)
    async with Stack(ctx.dir(NAME)) as st:
        w = await workload(ctx, st, per_device)
        ctx.note("numbers: ceilings (request/reply, JetStream KV counter)")
        rr64 = await ceilings.request_reply(st.url, 64, ctx.n(20_000, 200))
        rr64c = await ceilings.request_reply(st.url, 64, ctx.n(10_000, 200), own_connections=True)
        kv1 = await ceilings.kv_counter(st.url, 1, ctx.n(3000, 30))
        kv8 = await ceilings.kv_counter(st.url, 8, ctx.n(1500, 30))
    gc_rate, gc_p99 = await ceilings.group_commit_counter(
        ctx.dir(NAME + "-ceil"), DEVICES, per_device
    )
    ctx.note("numbers: engine core in-process (no broker, no publisher)")
    core = await inproc.open_core(ctx.dir(NAME + "-inproc") / "data")
    try:
        devices = await inproc.enroll(core, USERS, DEVICES)
        await inproc.numbers(core, devices, 2)
        core_rate = await inproc.numbers(core, devices, per_device)
    finally:
        await core.close()
    res.add(
        Figure(
            "numbers.per_s",
            "numbers/s (64 devices, 1 per request)",
            rate(w["numbers"], w["seconds"]),
            "n/s",
            Goal("ge", 10_000),
            ceiling="numbers.ceil.rr64c",
        ),
        Figure(
            "numbers.core_per_s",
            "same through EngineCore.handle in-process (no NATS, no publisher)",
            core_rate,
            "n/s",
            ceiling="numbers.ceil.commit",
        ),
        Figure("numbers.p50_ms", "latency p50", w["p50"] * 1000, "ms"),
        Figure("numbers.p99_ms", "latency p99", w["p99"] * 1000, "ms", Goal("lt", 10)),
        Figure("numbers.duplicates", "duplicate numbers", w["duplicates"], "", Goal("eq", 0)),
        Figure(
            "numbers.engine_us_per_number",
            "engine CPU per number (engine + live-views worker)",
            w["engine_cpu_s"] / w["numbers"] * 1e6,
            "µs",
        ),
        Figure(
            "numbers.ceil.rr64c",
            "raw request/reply, 64 clients each on its own connection (as the devices)",
            rr64c,
            "req/s",
            raw=True,
        ),
        Figure(
            "numbers.ceil.rr64",
            "raw request/reply, 64 in flight on one connection",
            rr64,
            "req/s",
            raw=True,
        ),
        Figure(
            "numbers.ceil.commit",
            "raw group-commit counter, 64 requesters, aiosqlite FULL sync (no NATS)",
            gc_rate,
            "n/s",
            raw=True,
            note=f"p99 {gc_p99 * 1000:.1f} ms",
        ),
        Figure("numbers.ceil.kv1", "raw JetStream KV CAS counter, 1 writer", kv1, "n/s", raw=True),
        Figure(
            "numbers.ceil.kv8",
            "raw JetStream KV CAS counter, 8 contending writers",
            kv8,
            "n/s",
            raw=True,
        ),
    )
    res.info = {
        "numbers": w["numbers"],
        "seconds": round(w["seconds"], 3),
        "contiguous": w["contiguous"],
        "cpu_share": w["cpu"],
    }
    if not w["contiguous"]:
        dup = res.figure("numbers.duplicates")
        assert dup is not None
        dup.note = "numbers are not exactly 1..N"
    if ctx.profile:
        session = ctx.profile_path(NAME).with_suffix(".pyisession")
        async with Stack(ctx.dir(NAME + "-profile"), profile_out=session) as st:
            await workload(ctx, st, max(3, per_device // 2))
        res.info["profile"] = str(profiling.render(session, ctx.profile_path(NAME)))
    return res
