"""Device commands without a broker: a real SQLite device store, events pulled from
pages made here in the engine's stored format, and no server at all.

A command records its event locally (durable before it returns) and never waits
for a sync; the numbering follows the mode the pulled settings events set."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from devices.agent import DeviceAgent
from devices.commands import Commands
from devices.sync import pull
from engine import codec
from engine.client import PulledPage
from engine.enrollment import Enrollment
from engine.errors import SynvoiceError
from engine.events import new_event, now
from engine.schema.documents import DocumentCreated
from engine.schema.settings import EpochOpened, UserEnrolled, UserModeSet

# Never dialled: these agents stay offline (port 9 is "discard").
URL = "nats://127.0.0.1:9"
LINES = [{"description": "Consulting", "quantity": "2", "unit_price": "150"}]
BIG_LINE = {"description": "d" * 1000, "quantity": "1", "unit_price": "1"}


def token(user: str = "alice", device: str = "dev-a", slot: int = 1) -> str:
    return Enrollment(URL, device, b"k" * 32, user, slot).token()


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[DeviceAgent]:
    a = await DeviceAgent.init(tmp_path / "dev", token(), background=False)
    try:
        yield a
    finally:
        await a.close()


class Log:
    """The engine's log as pages of stored events (what ``pull_page`` returns)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def add(
        self,
        type_: str,
        payload: BaseModel,
        *,
        doc_id: uuid.UUID | None = None,
        kind: str | None = None,
        device: str = "engine",
        user: str = "engine",
    ) -> None:
        ev = new_event(
            type_, payload, device_id=device, user=user, device_seq=0, doc_id=doc_id, kind=kind
        )
        wire = ev.to_wire()
        wire.update(position=len(self.bodies) + 1, committed_at=now().isoformat())
        self.bodies.append(codec.pack(wire))

    def mode(self, mode: str) -> None:
        self.add("settings.user_mode_set", UserModeSet(mode=mode))

    async def fetch(self, after: int) -> PulledPage:
        events = [msgspec.Raw(b) for b in self.bodies[after : after + 3]]  # small pages
        more = after + len(events) < len(self.bodies)
        return PulledPage(head=len(self.bodies), more=more, events=events)

    async def pull_into(self, agent: DeviceAgent) -> int:
        return await pull(agent.state, self.fetch)


async def test_a_document_from_create_to_void_offline(agent: DeviceAgent) -> None:
    assert not agent.online and agent.mode == "centralized"
    v = await agent.create("invoice", "Acme", LINES, issue_date="2026-01-05")
    # centralized without a server: number 0, usable except for issuing
    assert (v.number, v.number_source, v.status, v.user) == (0, "device", "draft", "alice")
    assert v.totals[0] == v.totals[2] and str(v.totals[0]) == "300.00"
    v = await agent.edit_customer(v.doc_id, {"name": "Acme Ltd", "email": "ap@acme.test"})
    travel = {"description": "Travel", "quantity": "1", "unit_price": "80"}
    v = await agent.edit_lines(v.doc_id, [*LINES, travel])
    v = await agent.edit_dates(v.doc_id, "2026-01-06", "2026-02-05")
    assert (v.customer or {})["name"] == "Acme Ltd" and len(v.lines) == 2
    assert str(v.due_date) == "2026-02-05"
    with pytest.raises(SynvoiceError) as err:
        await agent.issue(v.doc_id)
    assert err.value.code == "conflict" and "no number yet" in err.value.message
    v = await agent.set_number(v.doc_id, 12)
    assert (v.number, v.number_source) == (12, "manual")
    v = await agent.issue(v.doc_id)
    assert v.status == "issued"
    for edit in (
        agent.edit_customer(v.doc_id, "Other"),
        agent.edit_lines(v.doc_id, LINES),
        agent.issue(v.doc_id),
    ):
        with pytest.raises(SynvoiceError) as err:
            await edit
        assert err.value.code == "conflict"
    v = await agent.void(v.doc_id, "sent twice")
    assert v.status == "void"
    with pytest.raises(SynvoiceError) as err:
        await agent.void(v.doc_id)
    assert err.value.code == "conflict"
    types = [e.type for e in await agent.history(v.doc_id)]
    assert types == [
        "document.created",
        "document.customer_changed",
        "document.lines_changed",
        "document.dates_changed",
        "document.number_assigned",
        "document.issued",
        "document.voided",
    ]
    assert agent.pending_count() == 7
    assert [e.device_seq for e in await agent.history(v.doc_id)] == list(range(1, 8))


async def test_commands_are_on_disk_when_they_return(tmp_path: Path) -> None:
    a = await DeviceAgent.init(tmp_path / "dev", token(), background=False)
    made = await asyncio.gather(*(a.create("invoice", f"C{i}", number=i + 1) for i in range(20)))
    await a.close()
    b = await DeviceAgent.open(tmp_path / "dev", background=False)
    try:
        assert b.pending_count() == 20
        assert sorted(v.number for v in b.documents("invoice")) == list(range(1, 21))
        assert b.document(made[3].doc_id).customer == made[3].customer
        nxt = await b.create("invoice", "next")  # the device sequence goes on
        assert (await b.history(nxt.doc_id))[0].device_seq == 21
    finally:
        await b.close()


async def test_convert_a_quote_into_an_invoice(agent: DeviceAgent) -> None:
    log = Log()
    log.mode("single")
    await log.pull_into(agent)
    q = await agent.create("quote", "Hooli", LINES, notes="valid 30 days")
    assert q.number == 1
    inv = await agent.convert(q.doc_id)
    assert (inv.kind, inv.number, inv.converted_from) == ("invoice", 1, q.doc_id)
    assert inv.notes == "valid 30 days" and inv.lines == q.lines
    assert agent.document(q.doc_id).converted_to == inv.doc_id
    with pytest.raises(SynvoiceError) as err:
        await agent.convert(q.doc_id)
    assert err.value.code == "conflict"
    with pytest.raises(SynvoiceError) as err:
        await agent.convert(inv.doc_id)
    assert err.value.code == "bad_request"
    est = await agent.create("estimate", "Initech")
    await agent.void(est.doc_id)
    with pytest.raises(SynvoiceError) as err:
        await agent.convert(est.doc_id)
    assert err.value.code == "conflict"


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda a: a.create("receipt", "Acme"), "schema"),
        (lambda a: a.create("invoice", "Acme", issue_date="05/01/2026"), "schema"),
        (lambda a: a.create("invoice", {"name": ""}), "schema"),
        (lambda a: a.create("invoice", "Acme", [{"description": "x", "quantity": "-"}]), "schema"),
        (lambda a: a.create("invoice", "Acme", number=0), "schema"),
        (lambda a: a.create("invoice", "Acme", number=True), "schema"),
        (lambda a: a.create("invoice", "Acme", doc_id="not-an-id"), "bad_request"),
        (lambda a: a.create("invoice", "x" * 70_000), "schema"),
        (lambda a: a.create("invoice", "Acme", notes="n" * 5000), "schema"),
        (lambda a: a.create("invoice", "Acme", [BIG_LINE] * 100), "too_large"),
        (lambda a: a.issue("not-an-id"), "bad_request"),
        (lambda a: a.issue(uuid.uuid4()), "not_found"),
        (lambda a: a.set_number(uuid.uuid4(), -3), "schema"),
        (lambda a: a.assign_numbers(), None),  # nothing to number: {}
    ],
)
async def test_bad_input_is_refused_and_records_nothing(
    agent: DeviceAgent, call: object, code: str | None
) -> None:
    assert callable(call)
    if code is None:
        assert await call(agent) == {}
    else:
        with pytest.raises(SynvoiceError) as err:
            await call(agent)
        assert err.value.code == code
    assert agent.pending_count() == 0 and agent.documents() == []


JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)
NUMBER_TEXT = st.integers(-5, 5).map(str) | st.sampled_from(["1.5", "1e3", "x", ""])
LINE = st.fixed_dictionaries(
    {"description": st.text(max_size=12), "quantity": NUMBER_TEXT, "unit_price": NUMBER_TEXT},
    optional={"tax_rate": NUMBER_TEXT | JUNK, "extra": JUNK},
)
CUSTOMER = st.text(max_size=12) | st.fixed_dictionaries(
    {"name": st.text(max_size=12)}, optional={"email": JUNK, "tax_id": JUNK}
)


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["invoice", "quote", "estimate"]) | JUNK,
    customer=CUSTOMER | JUNK,
    lines=st.lists(LINE | JUNK, max_size=3) | JUNK,
    extra=st.fixed_dictionaries(
        {}, optional={"issue_date": JUNK, "currency": JUNK, "notes": JUNK, "number": JUNK}
    ),
)
def test_any_input_is_recorded_or_refused_with_a_clear_error(
    kind: Any, customer: Any, lines: Any, extra: dict[str, Any]
) -> None:
    async def check(home: Path) -> None:
        a = await DeviceAgent.init(home, token(), background=False)
        try:
            try:
                v = await a.create(kind, customer, lines, **extra)
            except SynvoiceError as exc:
                assert exc.code in ("schema", "too_large"), exc
                assert a.pending_count() == 0 and a.documents() == []
            else:
                assert a.pending_count() == 1 and a.document(v.doc_id) == v
        finally:
            await a.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(check(Path(tmp) / "dev"))


async def test_a_chosen_document_id_is_made_once(agent: DeviceAgent) -> None:
    doc = uuid.uuid4()
    v = await agent.create("invoice", "Acme", doc_id=doc)
    assert v.doc_id == str(doc)
    with pytest.raises(SynvoiceError) as err:
        await agent.create("invoice", "Acme", doc_id=str(doc))
    assert err.value.code == "conflict"
    assert agent.pending_count() == 1


async def test_single_mode_numbers_after_the_highest_known(agent: DeviceAgent) -> None:
    log = Log()
    log.mode("single")
    for n in (1, 2, 7):  # another device's invoices, pulled
        log.add(
            "document.created",
            DocumentCreated(number=n),
            doc_id=uuid.uuid4(),
            kind="invoice",
            device="dev-b",
            user="bob",
        )
    assert await log.pull_into(agent) == 4
    assert (agent.mode, agent.status()["mode_set"], agent.last_position) == ("single", True, 4)
    assert [(await agent.create("invoice", "A")).number for _ in range(2)] == [8, 9]
    assert (await agent.create("quote", "Q")).number == 1  # its own series
    v = await agent.create("invoice", "typed", number=20)
    assert (v.number, v.number_source) == (20, "manual")
    assert (await agent.create("invoice", "after")).number == 21
    # a number typed into use is refused; forced, the duplicate shows and is
    # fixed by renumbering
    with pytest.raises(SynvoiceError, match="already used") as refused:
        await agent.create("invoice", "dup", number=8)
    assert refused.value.code == "duplicate"
    dup = await agent.create("invoice", "dup", number=8, force=True)
    assert [d["number"] for d in agent.duplicates()] == [8]
    await agent.set_number(dup.doc_id, 22)
    assert agent.duplicates() == []


async def test_distributed_mode_numbers_in_the_pulled_epochs(tmp_path: Path) -> None:
    log = Log()
    log.mode("distributed")
    for user, slot in (("alice", 1), ("bob", 2)):
        log.add("settings.user_enrolled", UserEnrolled(user=user, slot=slot))
    slots = {"alice": 1, "bob": 2}
    log.add(
        "numbering.epoch_opened",
        EpochOpened(kind="invoice", epoch=1, start=1, increment=2, slots=slots, end=6),
    )
    bob = await DeviceAgent.init(tmp_path / "bob", token("bob", "dev-b", 2), background=False)
    alice = await DeviceAgent.init(tmp_path / "alice", token(), background=False)
    try:
        for d in (alice, bob):
            await log.pull_into(d)
        assert (alice.slot, bob.slot) == (1, 2)
        assert [(await alice.create("invoice", "a")).number for _ in range(4)] == [1, 3, 5, 0]
        assert [(await bob.create("invoice", "b")).number for _ in range(2)] == [2, 4]
        assert (await bob.create("quote", "q")).number == 0  # no quote epoch pulled yet
        (zero,) = [v for v in alice.documents("invoice") if v.number == 0]
        assert await alice.assign_numbers() == {}  # out of known epochs
        log.add(
            "numbering.epoch_opened",
            EpochOpened(kind="invoice", epoch=2, start=7, increment=2, slots=slots, end=12),
        )
        await log.pull_into(alice)
        assert await alice.assign_numbers() == {zero.doc_id: 7}
        v = alice.document(zero.doc_id)
        assert (v.number, v.number_source) == (7, "device")
    finally:
        await alice.close()
        await bob.close()


async def test_centralized_mode_offline_gives_zero_until_assigned(agent: DeviceAgent) -> None:
    log = Log()
    log.mode("single")
    log.mode("centralized")  # a later switch wins
    await log.pull_into(agent)
    assert agent.mode == "centralized"
    v = await agent.create("invoice", "Acme")
    assert v.number == 0
    with pytest.raises(SynvoiceError) as err:
        await agent.assign_numbers()  # server numbers need the engine
    assert err.value.code == "unavailable"
    assert agent.document(v.doc_id).number == 0 and agent.pending_count() == 1


async def test_a_command_does_not_wait_for_a_sync(agent: DeviceAgent) -> None:
    """A pull held up mid-sync (the next page does not come) leaves commands free."""
    log = Log()
    log.mode("single")
    log.add("document.created", DocumentCreated(number=1), doc_id=uuid.uuid4(), kind="invoice")
    for _ in range(5):
        log.mode("single")
    release, waiting = asyncio.Event(), asyncio.Event()

    async def slow_fetch(after: int) -> PulledPage:
        if after:  # the first page comes at once, the next one waits
            waiting.set()
            await release.wait()
        return await log.fetch(after)

    syncing = asyncio.create_task(pull(agent.state, slow_fetch))
    await asyncio.wait_for(waiting.wait(), 5)  # the first page is folded by now
    assert not syncing.done()
    v = await asyncio.wait_for(agent.create("invoice", "during the sync"), 5)
    await asyncio.wait_for(agent.issue(v.doc_id), 5)
    assert v.number == 2  # the page already folded counts, the rest is still coming
    release.set()
    assert await asyncio.wait_for(syncing, 5) == len(log.bodies)
    assert agent.last_position == len(log.bodies)
    assert agent.document(v.doc_id).status == "issued" and agent.pending_count() == 2


class StaleModeServer:
    """A number source that answers as an engine in another mode does."""

    online = True

    async def next_numbers(self, items: object) -> list[int]:
        raise SynvoiceError("mode", "the server is in single mode")


async def test_a_stale_mode_is_learnt_outside_the_command_lock(agent: DeviceAgent) -> None:
    """The engine says its mode changed: the command gives up its lock, the mode is
    learnt (a sync; here a pull), and the document is numbered by the new mode."""
    log = Log()
    log.mode("single")
    learnt: list[bool] = []
    commands: Commands

    async def learn() -> None:
        # Another command runs meanwhile: the lock is free while the device learns.
        other = await asyncio.wait_for(commands.create("quote", "meanwhile", number=3), 5)
        learnt.append(other.number == 3)
        await log.pull_into(agent)

    commands = Commands(agent.state, StaleModeServer(), learn_mode=learn)
    v = await commands.create("invoice", "Acme")
    assert learnt == [True]
    assert (v.number, v.number_source, agent.mode) == (1, "device", "single")

    async def fails() -> None:
        raise SynvoiceError("unavailable", "engine down")

    log.mode("centralized")
    await log.pull_into(agent)
    commands = Commands(agent.state, StaleModeServer(), learn_mode=fails)
    assert (await commands.create("invoice", "later")).number == 0  # numbered later
