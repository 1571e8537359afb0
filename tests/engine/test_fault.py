"""Fault injection with real processes: kill -9 the engine while devices push."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from typing import Any

import nats
import pytest

from engine import codec, protocol
from engine.client import EngineClient
from engine.errors import SynvoiceError
from engine.events import new_event
from engine.hashchain import ChainVerifier
from engine.messages import EnrollReply
from engine.natsproc import NatsServer
from engine.protocol import ADMIN_DEVICE
from engine.schema.documents import DocumentCreated
from tests.support.harness import EngineProcess, wait_for


def stored_events(path: Any) -> dict[str, int]:
    con = sqlite3.connect(path)
    try:
        out: dict[str, int] = {}
        v = ChainVerifier()
        for pos, body, h in con.execute(
            "SELECT position, body, hash FROM events ORDER BY position"
        ):
            assert v.feed(pos, body, h) is None, v.broken
            eid = codec.unpack(body)["event_id"]
            assert eid not in out, f"{eid} stored twice"
            out[eid] = pos
        return out
    finally:
        con.close()


@pytest.mark.slow
async def test_kill9_engine_while_pushing(
    engine_process: EngineProcess, nats_server: NatsServer
) -> None:
    engine_process.start()
    admin = await EngineClient.connect(
        nats_server.url, ADMIN_DEVICE, engine_process.admin_secret, timeout=2
    )
    creds = [await admin.enroll(f"user{i}") for i in range(4)]
    await admin.close()
    acked: set[str] = set()
    sent_batches: list[list[Any]] = []
    stop = asyncio.Event()

    async def device(cred: EnrollReply) -> None:
        client = await EngineClient.connect(
            nats_server.url, cred.device_id, bytes.fromhex(cred.secret), timeout=2
        )
        seq = 0
        try:
            while not stop.is_set():
                batch = []
                for _ in range(20):
                    seq += 1
                    batch.append(
                        new_event(
                            "document.created",
                            DocumentCreated(number=seq),
                            device_id=cred.device_id,
                            user=cred.user,
                            device_seq=seq,
                            doc_id=uuid.uuid4(),
                            kind="invoice",
                        )
                    )
                sent_batches.append(batch)
                # a device retries the same batch until it is acknowledged
                while True:
                    try:
                        r = await client.push(batch)
                        acked.update(x.event_id for x in r.results)
                        break
                    except SynvoiceError as err:
                        assert err.code == "unavailable", err
                        if stop.is_set():
                            return
                        await asyncio.sleep(0.05)
        finally:
            await client.close()

    tasks = [asyncio.create_task(device(c)) for c in creds]
    await wait_for(lambda: len(acked) >= 400, timeout=30)
    engine_process.kill9()  # mid-stream: requests in flight are lost, never acknowledged
    acked_at_kill = set(acked)
    await asyncio.sleep(0.5)
    engine_process.start()
    await wait_for(lambda: len(acked) >= len(acked_at_kill) + 400, timeout=30)
    stop.set()
    await asyncio.gather(*tasks)

    stored = stored_events(engine_process.data_dir / "log.sqlite")
    assert acked <= set(stored), "an acknowledged event is missing from the log"
    # every batch that was retried until acknowledged is stored exactly once
    # (checked by stored_events: no event id twice, unbroken chain)

    # and everything committed reaches JetStream, including what was committed
    # but not yet published when the engine died
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()

        async def all_published() -> bool:
            info = await js.stream_info(protocol.STREAM)
            return info.state.last_seq >= len(stored)

        await wait_for(all_published, timeout=30)
        sub = await js.subscribe(f"{protocol.PREFIX}.log.>", ordered_consumer=True)
        published: set[str] = set()
        info = await js.stream_info(protocol.STREAM)
        for _ in range(info.state.messages):
            msg = await sub.next_msg(timeout=5)
            published.add(msg.headers["Nats-Msg-Id"])  # type: ignore[index]
        assert set(stored) <= published
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
