"""Multi user, centralized: server numbers online, 0 offline, "Assign Number" later."""

from __future__ import annotations

import asyncio

import pytest

from engine.errors import SynvoiceError
from engine.schema.common import Line
from tests.support.devices import Agents, sync_eventually
from tests.support.harness import EngineHarness

LINES = [Line(description="Support", quantity=1, unit_price=99)]


async def test_offline_document_gets_zero_then_the_next_server_number(
    agents: Agents, engine: EngineHarness
) -> None:
    office = await agents.new("alice")
    laptop = await agents.new("bob")
    assert office.mode == "centralized"  # the default
    a1 = await office.create("invoice", "Acme", LINES)
    assert (a1.number, a1.number_source, a1.user) == (1, "server", "alice")

    await laptop.disconnect()  # out of the office
    off = await laptop.create("invoice", "Hooli", LINES)
    assert off.number == 0 and off.user == "bob"
    # fully usable meanwhile: edit, convert a quote, void another
    await laptop.edit_lines(off.doc_id, [*LINES, *LINES])
    q = await laptop.create("quote", "Hooli", LINES)
    inv = await laptop.convert(q.doc_id)
    assert inv.number == 0 and inv.converted_from == q.doc_id
    assert laptop.document(q.doc_id).status == "converted"
    with pytest.raises(SynvoiceError) as err:
        await laptop.issue(off.doc_id)  # an invoice is issued with a number
    assert err.value.code == "conflict"
    with pytest.raises(SynvoiceError) as err:
        await laptop.assign_numbers()
    assert err.value.code == "unavailable"
    assert laptop.status()["unassigned"] == 3 and laptop.status()["pending"] > 0

    a2 = await office.create("invoice", "Globex", LINES)
    assert a2.number == 2

    await laptop.connect()
    await laptop.sync()
    got = await laptop.assign_numbers([off.doc_id])
    assert got == {off.doc_id: 3}
    rest = await laptop.assign_numbers()  # all the others this device made
    assert rest == {inv.doc_id: 4, q.doc_id: 1}  # quotes: their own series
    assert (await laptop.assign_numbers()) == {}
    v = laptop.document(off.doc_id)
    assert (v.number, v.number_source) == (3, "server")
    assert len(v.lines) == 2
    issued = await laptop.issue(off.doc_id)
    assert issued.status == "issued"
    await laptop.sync()
    await office.sync()
    seen = {v.doc_id: (v.number, v.user, v.status) for v in office.documents("invoice")}
    assert seen[off.doc_id] == (3, "bob", "issued")
    assert sorted(n for n, _, _ in seen.values()) == [1, 2, 3, 4]
    assert office.duplicates() == []


async def test_number_set_by_hand_is_skipped_by_the_server(
    agents: Agents, engine: EngineHarness
) -> None:
    dev = await agents.new("alice")
    manual = await dev.create("invoice", "Acme", number=2)
    assert (manual.number, manual.number_source) == (2, "manual")
    await dev.sync()
    got = [(await dev.create("invoice", "X")).number for _ in range(2)]
    assert got == [1, 3]
    v = await dev.set_number(manual.doc_id, 10)
    assert v.number == 10 and v.number_source == "manual"


async def test_sixteen_devices_creating_at_once_no_duplicate_no_gap(
    agents: Agents, engine: EngineHarness
) -> None:
    devices = [await agents.new(f"user{i % 4}") for i in range(16)]

    async def make(dev: object) -> list[int]:
        return [(await dev.create("invoice", "C", LINES)).number for _ in range(6)]  # type: ignore[attr-defined]

    numbers = [n for part in await asyncio.gather(*(make(d) for d in devices)) for n in part]
    assert sorted(numbers) == list(range(1, 16 * 6 + 1))
    for d in devices:
        await d.sync()
    for d in devices:
        await d.sync()
        assert sorted(v.number for v in d.documents()) == list(range(1, 97))
        assert d.duplicates() == []


async def test_engine_down_broker_up_gives_zero_then_assign(
    agents: Agents, engine: EngineHarness
) -> None:
    dev = await agents.new("alice")
    assert engine.server.service is not None
    await engine.server.service.stop()  # the engine stops answering; the broker stays
    try:
        v = await dev.create("invoice", "Acme", LINES)
        assert v.number == 0  # no responders: treated as offline
        with pytest.raises(SynvoiceError) as err:
            await dev.sync()
        assert err.value.code == "unavailable"
    finally:
        await engine.server.service.start()
    await sync_eventually(dev)
    assert await dev.assign_numbers() == {v.doc_id: 1}
