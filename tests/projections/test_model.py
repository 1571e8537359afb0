"""The projector over in-memory logs: duplicates, gaps, renumberings, conflicts. No I/O."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.document import DocumentView, apply, wire_totals
from engine.schema.common import Line, totals
from engine.schema.documents import CustomerChanged, Issued, LinesChanged
from engine.schema.settings import UserEnrolled, UserModeSet
from engine.stored import StoredEventError, decode_stored
from projections.model import Projector
from projections.numbers import SHARED
from tests.support.logs import Dev, Log, distributed_log, engine_event


def project(log: Log, upto: int | None = None) -> Projector:
    p = Projector()
    for pos, body, h in log.rows[:upto]:
        p.apply(decode_stored(pos, body), h)
    return p


def test_forgotten_sync_makes_a_duplicate_and_a_renumber_removes_it() -> None:
    log = Log()
    log.append([engine_event("settings.user_mode_set", UserModeSet(mode="single"))])
    office, tablet = Dev("dev-office"), Dev("dev-tablet")
    a1 = office.create(number=1, number_source="device")
    log.append([a1])
    # the tablet never synced: it also thinks the next number is 1
    b1 = tablet.create(number=1, number_source="device")
    log.append([b1])
    p = project(log)
    assert p.duplicates() == [("invoice", "", 1, sorted([str(a1.doc_id), str(b1.doc_id)]))]
    ch = p.take_changes()
    assert ch.duplicates == {("invoice", "", 1): sorted([str(a1.doc_id), str(b1.doc_id)])}

    tablet.seen = log.head
    log.append([tablet.renumber(b1, 2)])
    p = project(log)
    assert p.duplicates() == []
    assert p.gaps("invoice") == []
    ch = p.take_changes()
    [(_pos, doc, kind, old, new, source, _user, device, _at)] = ch.renumberings
    assert (doc, kind, old, new, source, device) == (
        str(b1.doc_id),
        "invoice",
        1,
        2,
        "manual",
        "dev-tablet",
    )


def test_skipped_number_is_a_gap_until_used() -> None:
    log = Log()
    dev = Dev()
    log.append([dev.create(number=n) for n in (1, 2, 4)])
    p = project(log)
    [gap] = p.gaps("invoice")
    assert (gap.series, gap.first, gap.last, gap.missing) == (SHARED, 3, 3, 1)
    log.append([dev.create(number=3)])
    assert project(log).gaps("invoice") == []


def test_kinds_have_separate_series() -> None:
    log = Log()
    dev = Dev()
    log.append([dev.create(number=1, kind="invoice"), dev.create(number=1, kind="quote")])
    p = project(log)
    assert p.duplicates() == []
    assert p.gaps("quote") == [] and p.gaps("invoice") == []


def test_void_documents_keep_their_number() -> None:
    from engine.schema.documents import Voided

    log = Log()
    dev = Dev()
    a, b = dev.create(number=1), dev.create(number=2)
    log.append([a, b, dev.event("document.voided", Voided(reason="typo"), a.doc_id)])  # type: ignore[arg-type]
    p = project(log)
    assert p.docs[str(a.doc_id)].status == "void"
    assert p.gaps("invoice") == []  # 1 is still held by the void invoice


def test_unassigned_then_assigned_by_the_server() -> None:
    log = Log()
    dev = Dev()
    doc = dev.create(number=0)
    log.append([doc])
    p = project(log)
    assert p.docs[str(doc.doc_id)].number == 0
    log.append([dev.renumber(doc, 1, source="server")])
    p = project(log)
    assert p.docs[str(doc.doc_id)].number == 1
    assert p.take_changes().renumberings == []  # 0 -> 1 is an assignment, not a renumbering


def test_concurrent_edits_are_conflicts_and_edits_after_issue_are_refused() -> None:
    log = Log()
    a, b = Dev("dev-a"), Dev("dev-b")
    doc = a.create(number=1)
    log.append([doc])
    a.seen = b.seen = log.head
    lines_a = LinesChanged(lines=[Line(description="A", quantity=1, unit_price=10)])
    lines_b = LinesChanged(lines=[Line(description="B", quantity=1, unit_price=20)])
    log.append([a.event("document.lines_changed", lines_a, doc.doc_id)])  # type: ignore[arg-type]
    log.append([b.event("document.lines_changed", lines_b, doc.doc_id)])  # type: ignore[arg-type]
    a.seen = log.head
    log.append([a.event("document.issued", Issued(), doc.doc_id)])  # type: ignore[arg-type]
    cust = CustomerChanged(customer={"name": "Late"})
    log.append([b.event("document.customer_changed", cust, doc.doc_id)])  # type: ignore[arg-type]
    p = project(log)
    v = p.docs[str(doc.doc_id)]
    assert v.lines[0]["description"] == "B" and v.status == "issued"
    assert v.customer is not None and v.customer["name"] == "Acme Ltd"
    kinds = [(c[2], c[3]) for c in p.take_changes().conflicts]
    assert kinds == [("lines", "concurrent_edit"), ("customer", "edit_after_issue")]


def test_two_devices_renumbering_without_seeing_each_other_is_a_conflict() -> None:
    log = Log()
    a, b = Dev("dev-a"), Dev("dev-b")
    doc = a.create(number=5)
    log.append([doc])
    a.seen = b.seen = log.head
    log.append([a.renumber(doc, 6)])
    log.append([b.renumber(doc, 7)])  # made without seeing 6
    b.seen = log.head
    log.append([b.renumber(doc, 8)])  # seen: a renumbering, not a conflict
    log.append([a.renumber(doc, 9, source="server")])  # server numbers are not edits
    p = project(log)
    assert p.docs[str(doc.doc_id)].number == 9
    ch = p.take_changes()
    assert [(c[0], c[2], c[3]) for c in ch.conflicts] == [(3, "number", "concurrent_edit")]
    assert [r[4] for r in ch.renumberings] == [6, 7, 8, 9]


def test_history_has_one_row_per_document_event_with_a_summary() -> None:
    log = Log()
    dev = Dev()
    doc = dev.create(number=5)
    log.append([engine_event("settings.user_enrolled", UserEnrolled(user="alice", slot=1))])
    log.append([doc, dev.renumber(doc, 6)])
    hist = project(log).take_changes().history
    assert [h[0] for h in hist] == [2, 3]
    assert hist[0][7] == "created invoice #5 (device) for Acme Ltd, 1 line"
    assert hist[1][7] == "number 5 -> 6 (manual)"
    assert hist[1][3:5] == ("alice", "dev-a")


def test_distributed_mode_gaps_are_per_user_slot() -> None:
    log = distributed_log(end=200)
    alice, bob = Dev("dev-a", "alice"), Dev("dev-b", "bob")
    log.append([alice.create(number=n) for n in (1, 3, 7)] + [bob.create(number=2)])
    [gap] = project(log).gaps("invoice")
    assert (gap.series, gap.slot, gap.first, gap.last, gap.step) == ("alice", 1, 5, 5, 2)


def test_leaving_distributed_mode_caps_the_epochs() -> None:
    log = distributed_log(end=200)
    alice = Dev("dev-a", "alice")
    log.append([alice.create(number=1)])
    log.append(
        [
            engine_event(
                "settings.user_mode_set",
                UserModeSet(mode="centralized", previous="distributed", forced=True),
            )
        ]
    )
    log.append([alice.create(number=2), alice.create(number=4)])
    p = project(log)
    assert p.epochs["invoice"][0].cap == 1
    [gap] = p.gaps("invoice")
    assert (gap.series, gap.first, gap.last) == (SHARED, 3, 3)


def test_out_of_order_and_bad_records_are_refused_with_their_position() -> None:
    log = Log()
    dev = Dev()
    log.append([dev.create(number=1), dev.create(number=2)])
    p = Projector()
    with pytest.raises(StoredEventError, match="position 2: out of order"):
        p.apply(decode_stored(2, log.rows[1][1]))
    with pytest.raises(StoredEventError, match="position 1: record is not valid msgpack"):
        decode_stored(1, b"\xc1garbage")
    with pytest.raises(StoredEventError, match="says it is at position 1"):
        decode_stored(7, log.rows[0][1])


def test_restore_continues_like_an_uninterrupted_fold() -> None:
    log = Log()
    a, b = Dev("dev-a"), Dev("dev-b")
    docs = [a.create(number=1), b.create(number=1), a.create(number=3)]
    log.append(docs)
    log.append([b.renumber(docs[1], 2)])
    whole = project(log)
    half = project(log, 2)
    again = Projector.restore(half.position, half.last_hash, half.settings(), half.docs.values())
    for pos, body, h in log.rows[2:]:
        again.apply(decode_stored(pos, body), h)
    assert again.duplicates() == whole.duplicates() == []
    assert {d: v.as_dict() for d, v in again.docs.items()} == {
        d: v.as_dict() for d, v in whole.docs.items()
    }
    assert again.last_hash == whole.last_hash


def test_apply_returns_a_new_view_and_keeps_the_old_one() -> None:
    dev = Dev()
    created = dev.create(number=1)
    v1, _ = apply(None, created)
    change = LinesChanged(lines=[Line(description="X", quantity=3, unit_price=1)])
    v2, _ = apply(v1, dev.event("document.lines_changed", change, created.doc_id))  # type: ignore[arg-type]
    assert v1.lines[0]["description"] == "Work" and v2.lines[0]["description"] == "X"
    assert isinstance(v2, DocumentView) and v2.as_dict()["total"] == "3.00"
    v2.lines[0]["description"] = "mutated"
    assert created.data["lines"][0]["description"] == "Work"


_amount = st.decimals(min_value=-(10**6), max_value=10**6, places=6, allow_nan=False)
_rate = st.decimals(min_value=0, max_value=100, places=4, allow_nan=False)


@given(st.lists(st.tuples(_amount, _amount, _rate), max_size=8))
def test_wire_totals_equal_the_engine_totals(raw: list[tuple[Decimal, Decimal, Decimal]]) -> None:
    lines = [Line(description="x", quantity=q, unit_price=p, tax_rate=r) for q, p, r in raw]
    wire = [ln.model_dump(mode="json") for ln in lines]
    assert wire_totals(wire) == totals(lines)


def test_unknown_kind_or_missing_doc_id_is_a_projection_error() -> None:
    log = Log()
    ev = Dev().create(number=1)
    log.append([ev])
    raw = decode_stored(1, log.rows[0][1])
    raw["kind"] = "receipt"
    with pytest.raises(StoredEventError, match="position 1"):
        Projector().apply(raw)
    raw["kind"], raw["doc_id"] = "invoice", None
    with pytest.raises(StoredEventError, match="position 1"):
        Projector().apply(raw)
    assert uuid.UUID(str(ev.doc_id))


@given(st.binary(max_size=200))
def test_any_bytes_decode_to_an_event_map_or_a_projection_error(raw: bytes) -> None:
    try:
        ev = decode_stored(1, raw)
    except StoredEventError as exc:
        assert exc.position == 1
    else:
        assert isinstance(ev, dict) and ev["position"] == 1


_values = st.one_of(
    st.none(), st.integers(), st.text(max_size=8), st.lists(st.integers(), max_size=2)
)


@given(
    st.fixed_dictionaries(
        {
            "position": st.just(1),
            "type": st.sampled_from(
                [
                    "document.created",
                    "document.voided",
                    "document.number_assigned",
                    "settings.user_mode_set",
                    "numbering.epoch_opened",
                    "x.y",
                ]
            ),
        },
        optional={
            k: _values
            for k in ("doc_id", "kind", "event_id", "device_id", "user", "data", "seen_position")
        },
    )
)
def test_malformed_stored_events_are_refused_with_their_position(ev: dict[str, object]) -> None:
    try:
        Projector().apply(ev)
    except StoredEventError as exc:
        assert exc.position == 1


_cells = st.one_of(
    st.none(), st.integers(min_value=-(2**63), max_value=2**64 - 1), st.text(max_size=300)
)


@given(st.lists(st.tuples(_cells, _cells, _cells), max_size=40))
def test_digest_rows_encode_the_same_with_or_without_msgspec(
    rows: list[tuple[object, ...]],
) -> None:
    import msgpack

    from projections.store import _encode_rows

    assert _encode_rows(rows) == msgpack.packb(rows, use_bin_type=True)
