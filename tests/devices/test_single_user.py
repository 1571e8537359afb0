"""The seed's single-user story, on a real engine and real nats-server."""

from __future__ import annotations

from engine.schema.common import Customer, Line
from tests.support.devices import Agents
from tests.support.harness import EngineHarness, wait_for

LINES = [Line(description="Consulting", quantity=2, unit_price=150, tax_rate=20)]


async def test_desktop_then_tablet_then_forgotten_sync(
    agents: Agents, engine: EngineHarness
) -> None:
    admin = await engine.admin()
    await admin.set_mode("single")
    desktop = await agents.new("owner")
    assert desktop.mode == "single"

    # Desktop in the office: 1, then 2 (incremented from the previous one).
    first = await desktop.create("invoice", Customer(name="Acme Ltd"), LINES)
    second = await desktop.create("invoice", "Globex", LINES)
    assert (first.number, second.number) == (1, 2)
    await desktop.sync()

    # The tablet is set up and synced before setting off: at the customer it makes 3.
    tablet = await agents.new("owner")
    await tablet.disconnect()
    third = await tablet.create("invoice", "Initech", LINES)
    assert third.number == 3 and third.number_source == "device"
    await tablet.connect()
    await tablet.sync()
    await desktop.sync()
    assert [v.number for v in desktop.documents("invoice")] == [1, 2, 3]

    # Next trip the tablet forgets to sync: desktop and tablet both make 4.
    await tablet.disconnect()
    fourth = await desktop.create("invoice", "Hooli", LINES)
    await desktop.sync()
    dup = await tablet.create("invoice", "Umbrella Corp", LINES)
    assert fourth.number == dup.number == 4
    await tablet.connect()
    await tablet.sync()
    await desktop.sync()

    # Reported on both devices, nothing lost (internal ids tell them apart).
    for dev in (desktop, tablet):
        report = dev.duplicates()
        assert [(d["kind"], d["number"]) for d in report] == [("invoice", 4)]
        assert {x["doc_id"] for x in report[0]["documents"]} == {fourth.doc_id, dup.doc_id}
        assert len(dev.documents()) == 5
        assert dev.status()["duplicates"] == 1

    # Fixed by renumbering the tablet's invoice: same document, new number.
    n = tablet.numbering.next_number("invoice", tablet.user)
    assert n == 5
    fixed = await tablet.set_number(dup.doc_id, 5)
    assert fixed.number == 5 and fixed.number_source == "manual"
    await tablet.sync()
    await desktop.sync()
    for dev in (desktop, tablet):
        assert dev.duplicates() == []
        assert [v.number for v in dev.documents("invoice")] == [1, 2, 3, 4, 5]
        v = dev.document(dup.doc_id)
        assert v.customer is not None and v.customer["name"] == "Umbrella Corp"
        assert v.lines == dup.lines and v.user == "owner"
    history = await desktop.history(dup.doc_id)
    assert [e.type for e in history] == ["document.created", "document.number_assigned"]
    assert history[1].data["previous"] == 4


async def test_live_updates_reach_an_online_device_without_asking(
    agents: Agents, engine: EngineHarness
) -> None:
    a = await agents.new("alice")
    b = await agents.new("alice")
    v = await a.create("quote", "Acme", LINES)  # the background loop pushes it
    await wait_for(lambda: any(d.doc_id == v.doc_id for d in b.documents()), timeout=15)
    assert b.document(v.doc_id).number == v.number == 1
    assert a.status()["pending"] == 0


async def test_numbers_carry_on_across_kinds_separately(
    agents: Agents, engine: EngineHarness
) -> None:
    admin = await engine.admin()
    await admin.set_mode("single")
    dev = await agents.new("owner", online=True)
    await dev.disconnect()
    got = [(await dev.create(k, "X")).number for k in ("invoice", "quote", "invoice", "estimate")]
    assert got == [1, 1, 2, 1]
    # a number typed by hand counts: the next one goes on from it
    manual = await dev.create("invoice", "Y", number=40)
    assert manual.number_source == "manual"
    assert (await dev.create("invoice", "Z")).number == 41
