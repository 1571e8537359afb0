"""Memory bound: maximal pulls (64 at once, and 60 from one socket that never
reads its replies) keep the engine process small while it serves others.

Reports the engine's peak resident memory (run with ``-s`` to see it); asserts
only a generous bound. The figure is a measurement, not a timed assertion."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from engine.client import EngineClient
from engine.enrollment import Enrollment
from engine.events import Event, new_event
from engine.natsproc import NatsServer
from engine.schema.common import Customer, Line
from engine.schema.documents import DocumentCreated
from tests.security.test_flood import hostile
from tests.support.harness import DeviceCreds, EngineProcess

GENEROUS_BOUND_MB = 400


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Peak:
    """Samples a process's resident memory until stopped; keeps the maximum."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.max = rss_mb(pid)
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            self.max = max(self.max, rss_mb(self.pid))
            await asyncio.sleep(0.02)

    async def stop(self) -> float:
        self._stop.set()
        await self._task
        return round(self.max, 1)


def big_event(dev: DeviceCreds) -> Event:
    dev.seq += 1
    payload = DocumentCreated(
        customer=Customer(name="Acme Ltd"),
        lines=[Line(description="x" * 900, quantity=1, unit_price=1)] * 3,
        notes="n" * 3900,
    )
    return new_event(
        "document.created",
        payload,
        device_id=dev.device_id,
        user=dev.user,
        device_seq=dev.seq,
        doc_id=uuid.uuid4(),
        kind="invoice",
    )


@pytest.mark.timeout(300)
async def test_maximal_pulls_stay_within_a_memory_bound(
    tmp_path: Path, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNVOICE_LIVE_VIEWS", "0")  # the engine process alone
    (tmp_path / "data").mkdir()
    ep = EngineProcess(tmp_path / "data", nats_server.url).start()
    clients: list[EngineClient] = []
    try:
        assert ep.proc is not None
        pid = ep.proc.pid
        admin = await EngineClient.connect(nats_server.url, "admin", ep.admin_secret, timeout=60)
        clients.append(admin)
        devices: list[DeviceCreds] = []
        for i in range(65):
            r = await admin.enroll(f"user{i}")
            e = Enrollment.from_reply(nats_server.url, r)
            c = await EngineClient.connect_enrolled(e, timeout=120)
            clients.append(c)
            devices.append(DeviceCreds(r.device_id, r.user, e.secret, c, enrollment=e))
        writer = devices[0]
        for _ in range(6):  # ~7 MB of events: every pull below is a full page
            await writer.client.push([big_event(writer) for _ in range(200)])
        await asyncio.sleep(0.5)
        base = rss_mb(pid)

        peak = Peak(pid)
        unread = asyncio.create_task(hostile(devices[1], nats_server.url, "unread-pulls", "60"))
        await asyncio.sleep(0.5)
        answered = 0
        while not unread.done():  # another device keeps getting answers meanwhile
            await devices[2].client.status()
            answered += 1
            await asyncio.sleep(0.05)
        await unread
        one_socket = await peak.stop()
        peak = Peak(pid)
        pages = await asyncio.gather(*(d.client.pull_page(0, 5000, True) for d in devices[1:]))
        concurrent = await peak.stop()
        assert all(len(p.events) == len(pages[0].events) and p.more for p in pages)
        page_mb = sum(len(bytes(e)) for e in pages[0].events) / 2**20

        print(
            f"\nengine RSS: baseline {base:.1f} MB; 64 concurrent maximal pulls "
            f"({page_mb:.1f} MB pages) peak {concurrent} MB; 60 unread pulls from one "
            f"socket peak {one_socket} MB ({answered} status answers meanwhile)"
        )
        assert answered > 0
        assert concurrent < GENEROUS_BOUND_MB and one_socket < GENEROUS_BOUND_MB
    finally:
        for c in clients:
            try:
                await c.close()
            except Exception:
                pass
        ep.stop()
