"""Client-side workloads shared by benchmarks: devices pushing, devices pulling."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine import codec, protocol
from engine.state import EngineState
from tests.bench.loggen import DocumentEvents, LogSpec
from tests.bench.stack import Device


def push_bodies(
    ids: Sequence[str], users: Sequence[str], events: int, batch: int, seed: int = 11
) -> list[list[bytes]]:
    """Per device (ids[i] of users[i]), the packed push requests (``batch`` events
    each) of realistic document events; packed up front so the client spends its
    CPU on the wire only."""
    gen = DocumentEvents(LogSpec(events=events, seed=seed), list(ids), list(users))
    gen.state = EngineState()
    per: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    for m in gen.maps(events, 1):
        m["seen_position"] = 0
        # The engine refuses 'server' numbers it never handed out: pushed without
        # asking for them first, these are numbers set on the device.
        d = m["data"]
        if d.get("number_source") == "server":
            d["number_source"] = "device"
        elif m["type"] == "document.number_assigned" and d.get("source") == "server":
            d["source"] = "manual"
        per[m["device_id"]].append(m)
    return [
        [codec.pack({"events": evs[i : i + batch]}) for i in range(0, len(evs), batch)]
        for evs in per.values()
    ]


@dataclass
class PushStats:
    events: int = 0
    pushes: int = 0
    duplicates: int = 0
    latencies: list[float] = field(default_factory=list)


async def push_all(
    devices: Sequence[Device],
    bodies: Sequence[Sequence[bytes]],
    advance: Callable[[int], None] | None = None,
) -> PushStats:
    """Every device pushes its requests one after another (devices run concurrently);
    counts events acknowledged (committed) by the engine."""
    stats = PushStats()

    async def device(dev: Device, reqs: Sequence[bytes]) -> None:
        for body in reqs:
            t0 = time.perf_counter()
            reply = await dev.client.request_raw(protocol.PUSH, body)
            stats.latencies.append(time.perf_counter() - t0)
            results = reply["results"]
            stats.events += len(results)
            stats.pushes += 1
            stats.duplicates += sum(1 for r in results if r["duplicate"])
            if advance is not None:
                advance(len(results))

    await asyncio.gather(*(device(d, b) for d, b in zip(devices, bodies, strict=True)))
    return stats


async def pull_range(dev: Device, after: int, count: int, limit: int = 5000) -> int:
    """Pull pages from ``after`` until ``count`` events (or the head); events received."""
    got = 0
    while got < count:
        reply = await dev.client.pull(after, limit=min(limit, count - got))
        events = reply.events
        if not events:
            break
        got += len(events)
        after = int(events[-1]["position"])
        if not reply.more:
            break
    return got


async def next_numbers_loop(
    dev: Device, count: int, kind: str, latencies: list[float], numbers: list[int]
) -> None:
    """One device asking for one number at a time, ``count`` times."""
    for _ in range(count):
        t0 = time.perf_counter()
        got = await dev.client.next_numbers([(kind, uuid.uuid4())])
        latencies.append(time.perf_counter() - t0)
        numbers.extend(got)
