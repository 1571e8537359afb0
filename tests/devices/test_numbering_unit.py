"""Device-side numbering, pure (no server): the fold, the three modes, and the
distributed rule under random joins, offline work and syncs (hypothesis)."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from devices.numbering import DeviceNumbering, duplicates
from devices.store import view_from_bytes, view_to_bytes
from engine.document import apply
from engine.events import Event, new_event
from engine.numbering import Epoch, extension_needed, open_epoch
from engine.schema.common import Customer, Line
from engine.schema.documents import DocumentCreated, LinesChanged, NumberAssigned
from engine.schema.settings import EpochExtended, EpochOpened, UserEnrolled, UserModeSet
from engine.settings_fold import NumberingSettings


def _engine(type_: str, payload: BaseModel) -> Event:
    return new_event(type_, payload, device_id="engine", user="engine", device_seq=0)


def _doc(type_: str, payload: BaseModel, kind: str = "invoice", user: str = "ann") -> Event:
    return new_event(
        type_,
        payload,
        device_id="dev-1",
        user=user,
        device_seq=1,
        doc_id=uuid.uuid4(),
        kind=kind,
    )


def test_fold_mode_slots_epochs_and_numbers() -> None:
    n = DeviceNumbering()
    assert n.mode == "centralized" and n.next_number("invoice", "ann") is None
    n.observe(_engine("settings.user_mode_set", UserModeSet(mode="single")))
    assert n.next_number("invoice", "ann") == 1
    n.observe(_doc("document.created", DocumentCreated(number=7)))
    n.observe(_doc("document.number_assigned", NumberAssigned(number=9, source="manual")))
    assert n.next_number("invoice", "ann") == 10
    assert n.next_number("quote", "ann") == 1  # its own series

    d = DeviceNumbering()
    d.observe(_engine("settings.user_mode_set", UserModeSet(mode="distributed")))
    assert d.next_number("invoice", "ann") == 0  # no epoch known yet
    for user, slot in (("ann", 1), ("ben", 2), ("cat", 3)):
        d.observe(_engine("settings.user_enrolled", UserEnrolled(user=user, slot=slot)))
    slots = {"ann": 1, "ben": 2, "cat": 3}
    opened = EpochOpened(kind="invoice", epoch=1, start=1, increment=3, slots=slots, end=9)
    d.observe(_engine("numbering.epoch_opened", opened))
    d.observe(_engine("numbering.epoch_opened", opened))  # pulled twice: no harm
    assert len(d.epochs["invoice"]) == 1
    assert [d.next_number("invoice", u) for u in ("ann", "ben", "cat")] == [1, 2, 3]
    d.use("invoice", 4)
    d.use("invoice", 8)  # ben's
    assert d.next_number("invoice", "ann") == 7
    d.use("invoice", 7)
    assert d.next_number("invoice", "ann") == 0  # 10 is past the end
    ext = EpochExtended(kind="invoice", epoch=1, end=18)
    d.observe(_engine("numbering.epoch_extended", ext))
    assert d.next_number("invoice", "ann") == 10
    again = DeviceNumbering.from_snapshot(d.to_snapshot())
    assert again.to_snapshot() == d.to_snapshot()
    assert again.next_number("invoice", "ann") == 10 and again.slot_of("cat") == 3


def test_view_round_trip_through_the_store_encoding() -> None:
    lines = [Line(description="A", quantity=1, unit_price=2, tax_rate=10)]
    ev = _doc(
        "document.created", DocumentCreated(number=3, customer=Customer(name="X"), lines=lines)
    )
    v, _ = apply(None, ev)
    ev2 = new_event(
        "document.lines_changed",
        LinesChanged(lines=lines * 2),
        device_id="dev-2",
        user="ben",
        device_seq=1,
        doc_id=ev.doc_id,
        kind="invoice",
    )
    v, _ = apply(v, ev2)
    back = view_from_bytes(view_to_bytes(v))
    assert back == v and back.as_dict() == v.as_dict()
    assert duplicates([v, back])[0]["number"] == 3


class _Engine:
    """The engine's distributed-numbering state, with its rules (engine.numbering)."""

    def __init__(self, runway: int) -> None:
        self.runway = runway
        self.slots: dict[str, int] = {}
        self.epochs: list[Epoch] = []
        self.used: set[int] = set()

    def join(self, user: str) -> None:
        self.slots[user] = len(self.slots) + 1
        ep = open_epoch(self.epochs, self.slots, self.runway)
        self.epochs.append(ep)

    def push(self, numbers: list[int]) -> None:
        for n in numbers:
            self.used.add(n)
            end = extension_needed(self.epochs[-1], n, self.runway)
            if end is not None:
                self.epochs[-1].end = end


class _Device:
    def __init__(self, user: str) -> None:
        self.user = user
        self.known = DeviceNumbering(NumberingSettings("distributed"))
        self.made: list[int] = []
        self.unsent: list[int] = []

    def sync(self, eng: _Engine) -> None:
        eng.push(self.unsent)
        self.unsent = []
        self.known.epochs["invoice"] = [
            Epoch(e.epoch, e.start, e.increment, dict(e.slots), e.end) for e in eng.epochs
        ]
        self.known._forget("invoice")
        for n in eng.used:
            self.known.use("invoice", n)

    def create(self) -> None:
        n = self.known.next_number("invoice", self.user) or 0
        if n:
            self.known.use("invoice", n)
            self.made.append(n)
            self.unsent.append(n)


@settings(max_examples=200, deadline=None)
@given(
    runway=st.integers(min_value=1, max_value=6),
    ops=st.lists(
        st.tuples(st.sampled_from(["join", "create", "sync"]), st.integers(0, 7)),
        max_size=80,
    ),
)
def test_distributed_never_collides_when_users_join_and_work_offline(
    runway: int, ops: list[tuple[str, int]]
) -> None:
    eng = _Engine(runway)
    devices: list[_Device] = []
    for op, i in ops:
        if op == "join" or not devices:
            if len(devices) < 8:
                user = f"u{len(devices) + 1}"
                eng.join(user)
                devices.append(_Device(user))
                devices[-1].sync(eng)
            continue
        dev = devices[i % len(devices)]
        if op == "create":
            dev.create()  # offline: only what it knew at its last sync
        else:
            dev.sync(eng)
    made = [n for d in devices for n in d.made]
    assert len(made) == len(set(made)), made
    for d in devices:  # each user's numbers go up
        assert d.made == sorted(d.made)


def test_leaving_distributed_closes_epochs_and_old_snapshots_still_load() -> None:
    dn = DeviceNumbering(NumberingSettings("distributed", True, {"ann": 1, "ben": 2}))
    dn.epochs["invoice"] = [Epoch(1, 1, 2, {"ann": 1, "ben": 2}, 16)]
    dn.use("invoice", 3)
    assert dn.next_number("invoice", "ann") == 5
    dn.observe_wire("settings.user_mode_set", None, {"mode": "centralized"})
    dn.observe_wire("settings.user_mode_set", None, {"mode": "distributed"})
    assert dn.epochs["invoice"][0].cap == 3
    assert dn.next_number("invoice", "ann") == 0  # closed: wait for the new epoch
    again = DeviceNumbering.from_snapshot(dn.to_snapshot())
    assert again.epochs["invoice"][0].cap == 3
    old = dn.to_snapshot()
    old["epochs"] = {k: [e[:5] for e in eps] for k, eps in old["epochs"].items()}
    assert DeviceNumbering.from_snapshot(old).epochs["invoice"][0].cap is None
