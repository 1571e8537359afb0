"""Chaos with real processes: kill -9 of the engine and of its embedded broker
under 8-device load, each several times.

The test plays the supervisor (systemd) for the engine: it starts ``synvoice
serve`` again right after each kill. The broker is the engine's business: it
restarts it by itself. After every kill the service must be back without a
person; at the end every acknowledged event is in the log exactly once, the
stream holds the log exactly, and no centralized number went to two documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import nats
import pytest

from engine import codec, protocol
from engine.brokermanager import admin_nats_options
from engine.client import EngineClient
from engine.enrollment import Enrollment
from engine.errors import SynvoiceError
from engine.events import new_event
from engine.schema.common import Customer, Line
from engine.schema.documents import DocumentCreated
from tests.engine.test_fault import stored_events
from tests.support.harness import wait_for
from tests.support.serve import RECONNECT, ServeProcess, all_gone, embedded_broker

pytestmark = [pytest.mark.slow, pytest.mark.broker]

DEVICES = 8
KILLS = 3  # of each: the engine, then its broker
PROGRESS = 120  # events acknowledged after each kill before the next one
DOCS = 4  # documents per device round (numbers, then their events)


class Device:
    """One device: asks for centralized numbers, then pushes its documents,
    retrying the same request until it is acknowledged (as the agent does)."""

    def __init__(self, enrollment: Enrollment) -> None:
        self.enrollment = enrollment
        self.seq = 0
        self.acked: set[str] = set()
        self.numbers: dict[str, int] = {}  # doc id -> the number acknowledged for it
        self.refusals: list[str] = []

    async def run(self, stop: asyncio.Event) -> None:
        client = await EngineClient.connect_enrolled(self.enrollment, timeout=2, **RECONNECT)
        try:
            while not stop.is_set():
                docs = [uuid.uuid4() for _ in range(DOCS)]
                nums = await self._retry(
                    functools.partial(client.next_numbers, [("invoice", d) for d in docs]), stop
                )
                if nums is None:
                    return
                events = [self._created(d, n) for d, n in zip(docs, nums, strict=True)]
                r = await self._retry(functools.partial(client.push, events), stop)
                if r is None:
                    return
                self.numbers.update((str(d), n) for d, n in zip(docs, nums, strict=True))
                self.acked.update(x.event_id for x in r.results)
        finally:
            with contextlib.suppress(Exception):
                await client.close()

    async def _retry(self, call: Any, stop: asyncio.Event) -> Any:
        while True:
            try:
                return await call()
            except SynvoiceError as err:
                if err.code != "unavailable":  # anything else is a real refusal: a bug
                    self.refusals.append(str(err))
                    raise
            except Exception:  # the connection itself is reconnecting
                pass
            if stop.is_set():
                return None
            await asyncio.sleep(0.05)

    def _created(self, doc_id: uuid.UUID, number: int) -> Any:
        self.seq += 1
        e = self.enrollment
        return new_event(
            "document.created",
            DocumentCreated(
                number=number,
                number_source="server",
                customer=Customer(name="Acme Ltd"),
                lines=[Line(description="Work", quantity=1, unit_price=100, tax_rate=20)],
            ),
            device_id=e.device_id,
            user=e.user,
            device_seq=self.seq,
            doc_id=doc_id,
            kind="invoice",
        )


def numbers_in_log(path: Path) -> dict[str, int]:
    """doc id -> the number the log assigned it; no number may go to two documents."""
    con = sqlite3.connect(path)
    try:
        by_doc: dict[str, int] = {}
        for (body,) in con.execute(
            "SELECT body FROM events WHERE type = 'document.number_assigned' ORDER BY position"
        ):
            ev = codec.unpack(body)
            doc = str(ev["doc_id"])
            assert doc not in by_doc, f"document {doc} numbered twice"
            by_doc[doc] = ev["data"]["number"]
        values = list(by_doc.values())
        assert len(values) == len(set(values)), "a number went to two documents"
        return by_doc
    finally:
        con.close()


async def stream_ids(url: str, data_dir: Path) -> list[str]:
    """Every event id in the stream, in stream order."""
    nc = await nats.connect(url, **admin_nats_options(data_dir))
    try:
        js = nc.jetstream()
        info = await js.stream_info(protocol.STREAM)
        sub = await js.subscribe(f"{protocol.PREFIX}.log.>", ordered_consumer=True)
        out = []
        for _ in range(info.state.messages):
            msg = await sub.next_msg(timeout=5)
            out.append(msg.headers["Nats-Msg-Id"])  # type: ignore[index]
        return out
    finally:
        await nc.close()


async def test_kill9_engine_and_broker_under_load(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    serve = ServeProcess(data)
    serve.start()
    try:
        devices = [Device(e) for e in await serve.enroll([f"user{i}" for i in range(DEVICES)])]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(d.run(stop)) for d in devices]

        def acked() -> int:
            return sum(len(d.acked) for d in devices)

        async def progress() -> None:
            target = acked() + PROGRESS
            await wait_for(lambda: acked() >= target or any(t.done() for t in tasks), timeout=30)
            for t in tasks:
                if t.done():
                    t.result()  # a device that failed fails the test with its error

        await progress()
        for _ in range(KILLS):
            broker, worker = await serve.children()
            serve.kill9()
            await wait_for(all_gone(broker, worker), timeout=5)
            serve.start()  # the supervisor's restart, at once, same port
            await progress()

            broker, _ = await serve.children()
            os.kill(broker, signal.SIGKILL)  # the engine alone must repair this
            await progress()
            assert embedded_broker(await serve.status()).pid != broker
        stop.set()
        await asyncio.gather(*tasks)

        st = await serve.status()
        assert embedded_broker(st).restarts == 1  # since the last engine start
        await wait_for(lambda: _caught_up(serve), timeout=30)
        ids = await stream_ids(serve.url, data)
    finally:
        serve.stop()

    stored = stored_events(data / "log.sqlite")  # chain unbroken, no event id twice
    all_acked = set().union(*(d.acked for d in devices))
    assert all_acked <= set(stored), f"{len(all_acked - set(stored))} acknowledged events lost"
    assert ids == sorted(stored, key=stored.__getitem__), "the stream is not the log"
    numbers = numbers_in_log(data / "log.sqlite")
    for d in devices:
        for doc, n in d.numbers.items():
            assert numbers[doc] == n
    assert not any(d.refusals for d in devices)


async def _caught_up(serve: ServeProcess) -> bool:
    st = await serve.status()
    return bool(st.published == st.head)
