"""Engine killed (-9) and restarted, broker restarted, while devices keep working
and syncing: every document made on every device ends on every device, once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from devices.agent import DeviceAgent
from engine.client import EngineClient
from engine.natsproc import NatsServer
from engine.protocol import ADMIN_DEVICE
from engine.schema.common import Line
from tests.support.devices import Agents, sync_eventually
from tests.support.harness import EngineProcess, wait_for

LINES = [Line(description="Repair", quantity=1, unit_price=80, tax_rate=10)]


async def test_engine_kill9_and_broker_restart_mid_sync(
    tmp_path: Path, nats_server: NatsServer, engine_process: EngineProcess
) -> None:
    await asyncio.to_thread(engine_process.start)
    admin = await EngineClient.connect(
        nats_server.url, ADMIN_DEVICE, engine_process.admin_secret, max_reconnect_attempts=-1
    )

    async def get_admin() -> EngineClient:
        return admin

    agents = Agents(tmp_path, nats_server.url, get_admin)
    try:
        devices = [await agents.new(f"user{i}") for i in range(3)]
        # One more device made a big batch offline: it is pushing when the engine dies.
        bulk = await agents.new("bulk", online=False)
        await asyncio.gather(*(bulk.create("invoice", f"bulk {i}", LINES) for i in range(1500)))
        made: list[str] = [v.doc_id for v in bulk.documents()]
        stop = asyncio.Event()

        async def writer(dev: DeviceAgent) -> None:
            i = 0
            while not stop.is_set():
                made.append((await dev.create("invoice", f"{dev.user} #{i}", LINES)).doc_id)
                i += 1
                await asyncio.sleep(0.01)

        async def more(n: int) -> None:
            target = len(made) + n
            await wait_for(lambda: len(made) >= target, timeout=30)

        tasks = [asyncio.create_task(writer(d)) for d in devices]
        await more(20)
        assert await bulk.connect()  # its sync loop starts pushing 1500 events
        await wait_for(lambda: bulk.pending_count() < 1500, timeout=30)
        await asyncio.to_thread(engine_process.kill9)  # mid-push, mid-pull
        await more(30)  # devices keep working (centralized: number 0 meanwhile)
        await asyncio.to_thread(engine_process.start)
        await more(30)
        await asyncio.to_thread(nats_server.stop)  # broker restart, same port and store
        await more(30)
        await asyncio.to_thread(nats_server.start)
        await more(30)
        stop.set()
        await asyncio.gather(*tasks)

        everyone = [*devices, bulk]
        expected = set(made)
        assert len(expected) == len(made)

        def converged() -> bool:
            return all(
                not d.state.outbox and {v.doc_id for v in d.documents()} == expected
                for d in everyone
            )

        await wait_for(converged, timeout=90, interval=0.2)

        # Exactly once: in the engine's log and in every device's store.
        created: dict[str, int] = {}
        after = 0
        while True:
            page = await admin.pull(after=after)
            for e in page.events:
                if e["type"] == "document.created":
                    created[e["doc_id"]] = created.get(e["doc_id"], 0) + 1
            after = page.events[-1]["position"] if page.events else after
            if not page.more:
                break
        assert set(created) == expected and set(created.values()) == {1}
        for d in everyone:
            async with d.store.conn.execute(
                "SELECT count(*), count(DISTINCT event_id) FROM events"
            ) as cur:
                total, distinct = await cur.fetchone()  # type: ignore[misc]
            assert total == distinct
            assert d.status()["rejected"] == 0

        # Numbers: documents made while the engine was away got 0; assigning them
        # now leaves no duplicate and no gap (a number reserved for a lost reply
        # goes to the same document).
        for d in everyone:
            await sync_eventually(d)
            await d.assign_numbers()
        for d in everyone:
            await sync_eventually(d)
        for d in everyone:
            await sync_eventually(d)
            numbers = sorted(v.number for v in d.documents("invoice"))
            assert numbers == list(range(1, len(expected) + 1))
    finally:
        await agents.close()
        await admin.close()
