"""The publisher after its broker died and came back (same port, same store):
it resumes from what the stream provably holds, and the stream is the log."""

from __future__ import annotations

import asyncio

from engine.errors import SynvoiceError
from engine.natsproc import NatsServer
from tests.engine.test_chaos import stream_ids
from tests.support.harness import EngineHarness, wait_for


async def test_publishing_resumes_after_a_broker_restart(
    engine: EngineHarness, nats_server: NatsServer
) -> None:
    dev = await engine.device("alice")
    server = engine.server
    assert server.publisher is not None and server.core is not None
    for _ in range(5):
        await dev.client.push([dev.created() for _ in range(20)])
    await server.publisher.drain()
    for _ in range(2):
        nats_server.kill()  # kill -9, then the operator's supervisor restarts it
        await asyncio.sleep(0.3)
        await asyncio.to_thread(nats_server.start)

        async def pushed() -> bool:
            try:
                await dev.client.push([dev.created() for _ in range(20)])
                return True
            except SynvoiceError as err:
                assert err.code == "unavailable"
                return False

        await wait_for(pushed, timeout=20, interval=0.2)
    await server.publisher.drain(timeout=20)
    log_ids = [r.event().id_text for rows in [await server.core.log.read(0, 10_000)] for r in rows]
    assert await stream_ids(nats_server.url, server.config.data_dir) == log_ids
