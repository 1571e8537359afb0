"""1. Durable append: 8 devices push batches of 200 events; events/s acknowledged
after the engine's COMMIT (WAL fsynced, synchronous=FULL)."""

from __future__ import annotations

from typing import Any

from engine import codec
from tests.bench import ceilings, inproc, profiling
from tests.bench.context import Context
from tests.bench.procstat import CpuWindow
from tests.bench.report import BenchResult, Figure, Goal
from tests.bench.stack import Stack
from tests.bench.stats import percentile, rate
from tests.bench.workload import push_all, push_bodies

NAME = "append"
TITLE = "1. durable append (8 devices, 200-event pushes)"
DEVICES = 8
BATCH = 200
USERS = ("alice", "bob", "carol", "dave")


async def workload(ctx: Context, st: Stack, total: int) -> dict[str, Any]:
    devices = await st.devices(DEVICES, USERS)
    ids, users = [d.device_id for d in devices], [d.user for d in devices]
    warm = push_bodies(ids, users, DEVICES * 20, 20, seed=3)
    bodies = push_bodies(ids, users, total, BATCH)
    await push_all(devices, warm)  # first requests pay for imports, connections, caches
    head0 = (await st.status()).head
    with ctx.progress("pushing", total) as adv:
        with CpuWindow(st.pids()) as cpu:
            stats = await push_all(devices, bodies, adv)
    head1 = (await st.status()).head
    if head1 - head0 != stats.events - stats.duplicates:
        raise RuntimeError(f"log grew by {head1 - head0}, {stats.events} events acknowledged")
    lat = sorted(stats.latencies)
    return {
        "events": stats.events,
        "pushes": stats.pushes,
        "seconds": cpu.wall,
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "cpu": cpu.summary(),
        "engine_cpu_s": cpu.engine_seconds(),
        "sample_body": bodies[0][0],
    }


async def inproc_append(ctx: Context, total: int) -> float:
    core = await inproc.open_core(ctx.dir(NAME + "-inproc") / "data")
    try:
        devices = await inproc.enroll(core, USERS, DEVICES)
        ids, users = [d for d, _ in devices], inproc.device_users(core, devices)
        await inproc.push(core, devices, push_bodies(ids, users, DEVICES * 20, 20, seed=3))
        acked, seconds = await inproc.push(core, devices, push_bodies(ids, users, total, BATCH))
        return rate(acked, seconds)
    finally:
        await core.close()


async def run(ctx: Context) -> BenchResult:
    res = BenchResult(NAME, TITLE)
    total = ctx.n(128_000, DEVICES * BATCH)
    root = ctx.dir(NAME)
    async with Stack(root) as st:
        w = await workload(ctx, st, total)
        ctx.note("append: ceilings (request/reply, aiosqlite)")
        rr1 = await ceilings.request_reply(st.url, 1, ctx.n(3000, 50))
        rr8 = await ceilings.request_reply(st.url, 8, ctx.n(20_000, 200))
        rr64 = await ceilings.request_reply(st.url, 64, ctx.n(20_000, 200))
        rr_push = await ceilings.request_reply(st.url, 8, ctx.n(1000, 20), w["sample_body"])
    sql = await ceilings.sqlite_inserts(root, ctx.n(200_000, 2000))
    ctx.note("append: engine core in-process (no broker, no publisher)")
    core_eps = await inproc_append(ctx, total)
    eps = rate(w["events"], w["seconds"])
    res.add(
        Figure(
            "append.events_per_s",
            "events/s acknowledged after commit",
            eps,
            "ev/s",
            Goal("ge", 25_000),
            ceiling="append.ceil.sqlite",
        ),
        Figure(
            "append.pushes_per_s",
            f"pushes/s ({BATCH} events each, {DEVICES} in flight)",
            rate(w["pushes"], w["seconds"]),
            "req/s",
            ceiling="append.ceil.rr_push",
        ),
        Figure(
            "append.core_events_per_s",
            "same through EngineCore.handle in-process (no NATS, no publisher)",
            core_eps,
            "ev/s",
            ceiling="append.ceil.sqlite",
        ),
        Figure("append.p50_ms", "push latency p50", w["p50"] * 1000, "ms"),
        Figure("append.p99_ms", "push latency p99", w["p99"] * 1000, "ms"),
        Figure(
            "append.engine_us_per_event",
            "engine CPU per event (engine + live-views worker)",
            w["engine_cpu_s"] / w["events"] * 1e6,
            "µs",
        ),
        Figure(
            "append.ceil.sqlite",
            "raw aiosqlite inserts, 1000 rows/txn, UNIQUE random key, FULL sync",
            sql,
            "rows/s",
            raw=True,
        ),
        Figure(
            "append.ceil.rr_push",
            f"raw request/reply with a {len(w['sample_body']) // 1024} KB push body, 8 in flight",
            rr_push,
            "req/s",
            raw=True,
        ),
        Figure("append.ceil.rr1", "raw request/reply, 1 in flight", rr1, "req/s", raw=True),
        Figure("append.ceil.rr8", "raw request/reply, 8 in flight", rr8, "req/s", raw=True),
        Figure("append.ceil.rr64", "raw request/reply, 64 in flight", rr64, "req/s", raw=True),
    )
    res.info = {
        "events": w["events"],
        "pushes": w["pushes"],
        "seconds": round(w["seconds"], 3),
        "cpu_share": w["cpu"],
        "push_body_bytes": len(w["sample_body"]),
        "events_in_body": len(codec.unpack(w["sample_body"])["events"]),
    }
    if ctx.profile:
        session = ctx.profile_path(NAME).with_suffix(".pyisession")
        async with Stack(ctx.dir(NAME + "-profile"), profile_out=session) as st:
            await workload(ctx, st, max(DEVICES * BATCH, total // 2))
        res.info["profile"] = str(profiling.render(session, ctx.profile_path(NAME)))
    return res
