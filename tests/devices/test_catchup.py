"""A device offline for 100k events catches up from where it stopped: an
interrupted catch-up resumes from the last stored page, never from zero."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from devices.agent import DeviceAgent
from engine.events import new_event, now
from engine.schema.common import Customer
from engine.schema.documents import DocumentCreated
from tests.support.devices import Agents
from tests.support.harness import EngineHarness

N = 100_000
BATCH = 5000


class Interrupted(Exception):
    pass


async def _has_doc_index(agent: DeviceAgent) -> bool:
    q = "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'events_doc'"
    async with agent.store.conn.execute(q) as cur:
        return (await cur.fetchone()) == (1,)


@pytest.mark.slow
async def test_offline_device_catches_up_100k_events_and_resumes(
    bare_engine: tuple[EngineHarness, Agents],
) -> None:
    engine, agents = bare_engine
    late = await agents.new("late", background=False)  # synced once, then away
    start = late.last_position
    await late.disconnect()

    # Another device pushes 100k events in big batches (wire maps from one template:
    # building 100k pydantic events would only slow the test down).
    writer = await engine.device("busy")
    template = new_event(
        "document.created",
        DocumentCreated(customer=Customer(name="Acme Ltd")),
        device_id=writer.device_id,
        user=writer.user,
        device_seq=0,
        doc_id=uuid.uuid4(),
        kind="invoice",
    ).to_wire()
    t0 = time.perf_counter()

    async def push(first: int) -> None:
        batch = []
        for i in range(first, first + BATCH):
            ev = dict(template)
            ev["event_id"] = str(uuid.uuid4())
            ev["doc_id"] = str(uuid.uuid4())
            ev["device_seq"] = i + 1
            ev["device_time"] = now().isoformat()
            batch.append(ev)
        await writer.client.push(batch)

    for first in range(0, N, BATCH * 2):
        await asyncio.gather(push(first), push(first + BATCH))
    head = (await writer.client.status()).head
    assert head >= start + N
    produced = time.perf_counter() - t0
    print(f"\nproduced {N} in {produced:.1f}s")

    # Catch up, but get cut off after a few pages.
    assert await late.connect()
    seen: list[int] = []

    def cut_off(done: int, total: int) -> None:
        seen.append(done)
        if done >= 30_000:
            raise Interrupted

    t1 = time.perf_counter()
    with pytest.raises(Interrupted):
        await late.sync(on_progress=cut_off)
    print(f"first 30k in {time.perf_counter() - t1:.1f}s")
    stopped_at = late.last_position
    assert start + 30_000 <= stopped_at < head
    assert seen[0] > 0 and seen == sorted(seen)

    # The long catch-up dropped the document index; it is back once the sync ended.
    assert await _has_doc_index(late)

    # The device is closed and opened again: the position was stored with the pages.
    again = await agents.reopen(late, background=False)
    assert again.last_position == stopped_at
    assert 0 < len(again.documents()) <= stopped_at - start
    assert await again.connect()
    t1 = time.perf_counter()
    r = await again.sync()
    caught_up = time.perf_counter() - t1
    assert r.pulled == head - stopped_at  # from where it stopped, not from zero
    assert again.last_position == head
    assert len(again.documents()) == N
    assert await _has_doc_index(again)
    assert len(await again.history(again.documents()[0].doc_id)) == 1
    print(
        f"\n100k events: produced in {produced:.1f}s; resumed catch-up of "
        f"{r.pulled} events in {caught_up:.1f}s ({r.pulled / caught_up:,.0f} events/s)"
    )
    # Reopening is quick: views are stored, not re-folded.
    t2 = time.perf_counter()
    third = await agents.reopen(again)
    assert len(third.documents()) == N
    print(f"reopen with {N} documents: {time.perf_counter() - t2:.2f}s")
    assert isinstance(third, DeviceAgent)
