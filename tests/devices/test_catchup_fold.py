"""The catch-up's cheap path (msgspec decode, page fold, prefetch) gives what the
full path gives, and refuses a malformed page whole with a clear error."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.msg import Msg

from devices.agent import DeviceAgent
from devices.catchup import FoldedPage, Prefetch, fold_page
from devices.gcpause import gc_paused, gc_release
from devices.numbering import DeviceNumbering
from devices.store import view_from_bytes, view_to_bytes
from engine import codec, protocol
from engine.client import PulledPage
from engine.document import Conflict, DocumentView, apply
from engine.enrollment import Enrollment
from engine.errors import SynvoiceError
from engine.events import parse_event
from engine.natsproc import NatsServer
from tests.bench.loggen import LogSpec, generate


@pytest.fixture(scope="module")
def bodies(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """A generated log (every document event type, server numbers), then edits from
    another device that had not seen them (conflicts) and an edit after issue."""
    path = tmp_path_factory.mktemp("log") / "log.sqlite"
    generate(path, LogSpec(events=4000, seed=3))
    with sqlite3.connect(path) as conn:
        out = [b for (b,) in conn.execute("SELECT body FROM events ORDER BY position")]
    created = [e for e in map(codec.unpack, out) if e["type"] == "document.created"][:20]
    pos = len(out)
    for i, c in enumerate(created):
        base = {**c, "device_id": "dev-late", "seen_position": 1, "device_seq": i}
        for t, data in [
            ("document.lines_changed", {"lines": c["data"]["lines"]}),
            ("document.issued", {}),
            ("document.customer_changed", {"customer": {"name": f"late {i}"}}),
        ]:
            pos += 1
            ev = {**base, "event_id": str(uuid.uuid4()), "type": t, "data": data}
            out.append(codec.pack({**ev, "schema_version": 1, "position": pos}))
    return out


def _reference(
    bodies: list[Any],
) -> tuple[dict[str, DocumentView], list[Conflict], dict[str, Any]]:
    """The full path: parse_event (pydantic) and apply, event by event."""
    views: dict[str, DocumentView] = {}
    conflicts: list[Conflict] = []
    numbering = DeviceNumbering()
    for b in bodies:
        ev = parse_event(codec.unpack(b), stored=True)
        numbering.observe(ev)
        if ev.doc_id is not None and ev.kind is not None and ev.type.startswith("document."):
            d = str(ev.doc_id)
            views[d], cs = apply(views.get(d), ev)
            conflicts.extend(cs)
    return views, conflicts, numbering.to_snapshot()


def _fold_in_pages(
    bodies: list[Any], size: int, overlap: int
) -> tuple[dict[str, DocumentView], list[Conflict], dict[str, Any], int]:
    synced: dict[str, DocumentView] = {}
    unstored: dict[str, DocumentView] = {}
    conflicts: list[Conflict] = []
    numbering = DeviceNumbering()
    last = rows = 0
    start = 0
    while start < len(bodies):
        page: FoldedPage = fold_page(
            bodies[max(0, start - overlap) : start + size],
            last,
            synced,
            unstored=unstored,
            device_id="nobody",
            outbox_ids=(),
            pending_numbers=(),
        )
        for t, kind, data, when in page.numbering:
            numbering.observe_wire(t, kind, data, when)
        # Every other page "stored" at once, the others left unstored for the next.
        unstored.update(page.views)
        if (start // size) % 2:
            synced.update(unstored)
            unstored.clear()
        conflicts.extend(page.conflicts)
        rows += len(page.rows)
        last = page.last
        start += size
    synced.update(unstored)
    return synced, conflicts, numbering.to_snapshot(), rows


@pytest.mark.parametrize(("size", "overlap"), [(5000, 0), (333, 0), (250, 40)])
def test_page_fold_equals_the_full_fold(bodies: list[Any], size: int, overlap: int) -> None:
    views, conflicts, snapshot = _reference(bodies)
    got, got_conflicts, got_snapshot, rows = _fold_in_pages(bodies, size, overlap)
    assert rows == len(bodies)  # each event once, overlapping pages or not
    assert conflicts, "the generated log should have conflicts to compare"
    assert got == views
    assert got_conflicts == conflicts
    assert got_snapshot == snapshot
    for v in list(got.values())[:200]:  # the stored form reads back equal
        assert view_from_bytes(view_to_bytes(v)) == v


def test_page_rows_keep_the_pulled_bytes(bodies: list[Any]) -> None:
    page = fold_page(bodies[:50], 0, {}, device_id="nobody", outbox_ids=(), pending_numbers=())
    assert [r[4] for r in page.rows] == bodies[:50]
    assert [r[0] for r in page.rows] == list(range(1, 51))
    assert page.last == 50


def _bad_event(bodies: list[Any], case: str) -> Any:
    ev = next(e for e in map(codec.unpack, bodies) if e["type"] == "document.created")
    if case == "bytes":
        return b"\xc1"  # not msgpack
    if case == "list":
        return codec.pack([1, 2])
    if case == "envelope":
        return codec.pack({"position": 11})
    if case == "position":
        return codec.pack({**ev, "position": "eleven"})
    # a document event whose payload lacks what the fold reads
    return codec.pack(
        {**ev, "type": "document.number_assigned", "data": {}, "position": 11, "schema_version": 1}
    )


@pytest.mark.parametrize("case", ["bytes", "list", "envelope", "position", "payload"])
def test_a_malformed_event_refuses_the_whole_page(bodies: list[Any], case: str) -> None:
    synced: dict[str, DocumentView] = {}
    with pytest.raises(SynvoiceError) as err:
        fold_page(
            [*bodies[:10], _bad_event(bodies, case)],
            0,
            synced,
            device_id="x",
            outbox_ids=(),
            pending_numbers=(),
        )
    assert err.value.code == "internal"
    assert "malformed pull reply" in err.value.message
    assert "after position 0" in err.value.message
    assert synced == {}  # nothing changed (the caller stores nothing of the page)


async def test_prefetch_asks_ahead_and_cancels_what_is_left() -> None:
    asked: list[int] = []
    gate = asyncio.Event()

    def page(first: int, n: int, more: bool) -> PulledPage:
        evs = [msgspec.Raw(codec.pack({"position": p})) for p in range(first, first + n)]
        return PulledPage(head=100, more=more, events=evs)

    async def fetch(after: int) -> PulledPage:
        asked.append(after)
        if after >= 20:
            await gate.wait()  # never answered: must be cancelled by aclose
        return page(after + 1, 10, True)

    pages = Prefetch(fetch, 0)
    first = await pages.next()
    assert first is not None and len(first.events) == 10
    await asyncio.sleep(0)
    assert asked == [0, 10]  # the second page was asked for before the first was used
    assert await pages.next() is not None
    await asyncio.sleep(0)
    assert asked == [0, 10, 20]
    await pages.aclose()  # the third request is in flight: cancelled, no warning left
    assert await pages.next() is None


async def test_a_malformed_pull_reply_fails_the_sync_and_stores_nothing(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """A broker peer answering pulls with garbage: a clear error, nothing stored."""
    nc = await nats.connect(nats_server.url)
    replies = [b"\x93\x01\x02", codec.pack({"head": 3, "more": False, "events": [b"x"]})]

    async def answer(msg: Msg) -> None:
        await msg.respond(replies[0] if msg.subject == protocol.PULL else codec.pack({}))

    await nc.subscribe(protocol.PULL, cb=answer)
    token = Enrollment(nats_server.url, "dev-x", b"k" * 32, "alice", 1).token()
    agent = await DeviceAgent.init(tmp_path / "dev", token, background=False)
    try:
        assert await agent.connect(timeout=5)
        for reply in replies:
            replies[0] = reply
            with pytest.raises(SynvoiceError) as err:
                await agent.sync()
            assert err.value.code == "internal"
            assert "malformed pull reply" in err.value.message
            assert agent.last_position == 0
            async with agent.store.conn.execute("SELECT count(*) FROM events") as cur:
                assert (await cur.fetchone()) == (0,)
    finally:
        await agent.close()
        await nc.close()


def test_gc_pause_restores_the_collector_and_release_unfreezes() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused(keep=True):  # nested: the outer pause stays in force
            kept = [{"a": [i]} for i in range(100)]
        assert not gc.isenabled()
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(kept)
    gc_release()
    assert gc.get_freeze_count() == 0


def test_gc_pause_leaves_what_someone_else_froze_frozen() -> None:
    host = [{"b": [i]} for i in range(100)]
    gc.freeze()  # e.g. a server embedding the agent froze its start-up heap
    try:
        frozen = gc.get_freeze_count()
        assert frozen >= len(host)
        with gc_paused(keep=True):
            _ = [{"a": [i]} for i in range(100)]
        gc_release()
        assert gc.get_freeze_count() >= frozen  # still frozen: not ours to release
    finally:
        gc.unfreeze()
