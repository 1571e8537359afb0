"""Pure parts: the fold, sale parsing (hypothesis round trips), plans, ids, PDFs."""

from __future__ import annotations

import json
import uuid
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.billing import ids
from devices.billing.delivery import check_address
from devices.billing.fold import BillingState, fold
from devices.billing.invoicer import sale_of_note
from devices.billing.pdf import InvoiceData, render
from devices.billing.plan import ExistingDoc, make_plan, parse_action
from devices.billing.sales import parse_csv, parse_json, sale_events, sale_from_obj
from engine.errors import SynvoiceError
from engine.events import Event, new_event, parse_event
from engine.schema.billing import (
    DeliveryFailed,
    InvoiceProcessed,
    ScenarioDeleted,
    ScenarioRules,
    ScenarioSaved,
)
from engine.schema.common import Line
from engine.schema.settings import SellerSet
from tests.support.pdftext import pdf_text


def sale_obj(sid: str = "S1", **kw: Any) -> dict[str, Any]:
    return {
        "sale_id": sid,
        "customer": {"name": "Acme", "email": "ap@acme.example"},
        "stage": "Closed/Won",
        "close_date": "2011-11-15",
        "approved": True,
        "amount": "100",
        **kw,
    }


_pos = iter(range(1, 10**9))


def ev(type_: str, payload: Any, event_id: uuid.UUID | None = None) -> Event:
    e = new_event(
        type_, payload, device_id="dev-1", user="billing", device_seq=0, event_id=event_id
    )
    return parse_event({**e.to_wire(), "position": next(_pos)}, stored=True)


def processed(sid: str, number: int = 1) -> InvoiceProcessed:
    return InvoiceProcessed(
        sale_id=sid,
        doc_id=ids.invoice_doc_id(sid),
        number=number,
        action="email",
        channel="email",
        total=Decimal("110"),
        currency="USD",
    )


def failure(sid: str, reason: str = "boom") -> DeliveryFailed:
    return DeliveryFailed(sale_id=sid, action="email", step="deliver", reason=reason)


# --- fold -----------------------------------------------------------------------------


def test_fold_statuses_and_versions() -> None:
    s1 = sale_from_obj(sale_obj("A"))
    s1b = sale_from_obj(sale_obj("A", amount="200"))
    st_ = fold(
        [
            ev("sale.recorded", s1),
            ev("sale.recorded", sale_from_obj(sale_obj("B"))),
            ev("sale.recorded", s1b),
            ev("billing.delivery_failed", failure("A")),
            ev("billing.invoice_processed", processed("B", 7)),
            ev("billing.delivery_failed", failure("B", "late")),  # cannot undo an invoice
        ]
    )
    assert st_.sales["A"].versions == 2 and st_.sales["A"].sale == s1b
    a, b = st_.status_of("A"), st_.status_of("B")
    assert (a.status, a.failure and a.failure.reason) == ("Failed", "boom")
    assert (b.status, b.processed and b.processed.number) == ("Processed", 7)
    assert b.as_dict()["reason"] is None
    st_.apply(ev("billing.invoice_processed", processed("A", 8)))
    assert st_.status_of("A").status == "Processed"
    assert st_.counts(st_.status_of(x) for x in "AB") == {
        "Not Done": 0,
        "Processed": 2,
        "Failed": 0,
    }


def test_fold_scenarios() -> None:
    sc = ScenarioSaved(name="Nov", rules=ScenarioRules(period="2011-11"))
    sc2 = ScenarioSaved(name="nov", rules=ScenarioRules(period="2011-12"))
    st_ = fold([ev("billing.scenario_saved", sc), ev("billing.scenario_saved", sc2)])
    assert st_.scenario("NOV") == sc2  # names are case-insensitive; the last save wins
    st_.apply(ev("billing.scenario_deleted", ScenarioDeleted(name="Nov")))
    assert st_.scenario("nov") is None and "nov" in st_.scenario_last


outcome_kinds = st.lists(st.sampled_from(["ok", "fail"]), max_size=8)


@given(outcome_kinds)
def test_status_rule(seq: list[str]) -> None:
    """Processed once any processed event exists; else Failed after a failure."""
    events = [ev("sale.recorded", sale_from_obj(sale_obj("A")))]
    for i, k in enumerate(seq):
        p = processed("A", i + 1) if k == "ok" else failure("A", f"r{i}")
        events.append(ev(f"billing.{'invoice_processed' if k == 'ok' else 'delivery_failed'}", p))
    s = fold(events).status_of("A")
    expected = "Processed" if "ok" in seq else ("Failed" if seq else "Not Done")
    assert s.status == expected
    if "ok" in seq:
        assert s.processed is not None and s.processed.number == seq.index("ok") + 1


def test_sale_events_are_deterministic_and_skip_unchanged() -> None:
    st_ = BillingState()
    sales = [sale_from_obj(sale_obj("A")), sale_from_obj(sale_obj("B"))]
    first, unchanged = sale_events(sales, st_.sales, device_id="d", user="u")
    again, _ = sale_events(sales, st_.sales, device_id="d", user="u")
    assert unchanged == 0 and [e.event_id for e in first] == [e.event_id for e in again]
    st_.apply_all(
        parse_event({**e.to_wire(), "position": i + 1}, stored=True) for i, e in enumerate(first)
    )
    # the source is not content: the same sale from the broker is unchanged
    from_broker = sale_from_obj(sale_obj("A"), source="broker")
    evs, unchanged = sale_events([from_broker], st_.sales, device_id="d", user="u")
    assert evs == [] and unchanged == 1
    changed = sale_from_obj(sale_obj("A", amount="5"))
    evs, _ = sale_events([changed], st_.sales, device_id="d", user="u")
    assert len(evs) == 1 and evs[0].event_id not in {e.event_id for e in first}


# --- parsing --------------------------------------------------------------------------

names = st.text(
    st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="\x7f"),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip() != "")
money = st.decimals(min_value=Decimal("-1e6"), max_value=Decimal("1e6"), places=2)
sale_dicts = st.fixed_dictionaries(
    {
        "sale_id": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,20}", fullmatch=True),
        "customer": names,
        "email": st.emails(),
        "stage": names,
        "close_date": st.dates(min_value=date(1900, 1, 1)),
        "approved": st.booleans(),
        "amount": money,
        "tax_rate": st.decimals(min_value=0, max_value=100, places=2),
        "region": names,
    }
)


@given(st.lists(sale_dicts, max_size=5, unique_by=lambda d: d["sale_id"]))
@settings(max_examples=100)
def test_json_round_trip(items: list[dict[str, Any]]) -> None:
    text = json.dumps(items, default=str)
    got = parse_json(text, "t.json") if items else []
    for d, s in zip(items, got, strict=True):
        assert s.sale_id == d["sale_id"]
        assert s.customer.name == d["customer"].strip() and s.customer.email == d["email"]
        assert s.close_date == d["close_date"] and s.approved == d["approved"]
        assert s.lines[0].unit_price == d["amount"] and s.lines[0].tax_rate == d["tax_rate"]
        assert s.fields["region"] == d["region"]


@given(st.text(max_size=300))
@settings(max_examples=300)
def test_garbage_csv_gives_only_clear_errors(text: str) -> None:
    try:
        parse_csv(text, "g.csv")
    except SynvoiceError as exc:
        assert exc.message.startswith("g.csv") and "\n" not in exc.message


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=12,
    )
)
@settings(max_examples=300)
def test_garbage_json_gives_only_clear_errors(doc: Any) -> None:
    try:
        parse_json(json.dumps(doc), "g.json")
    except SynvoiceError as exc:
        assert exc.message.startswith("g.json") and "\n" not in exc.message


@pytest.mark.parametrize("text", ["[" + "1" * 5000 + "]", "[" * 100_000 + "]" * 100_000])
def test_json_past_the_parsers_limits_is_a_clear_error(text: str) -> None:
    with pytest.raises(SynvoiceError, match="not valid JSON"):
        parse_json(text, "big.json")


def test_json_forms() -> None:
    one = sale_obj("A", lines=None, amount=None)
    one["lines"] = [{"description": "a", "quantity": "2", "unit_price": "3", "tax_rate": "10"}]
    one.pop("amount")
    (s,) = parse_json(json.dumps({"sales": [one]}))
    assert s.lines[0].quantity == 2
    (s,) = parse_json(json.dumps(sale_obj("B", customer="Plain Name", email="x@y.example")))
    assert s.customer.name == "Plain Name" and s.customer.email == "x@y.example"
    with pytest.raises(SynvoiceError, match="either amount or lines"):
        parse_json(json.dumps({**one, "amount": "5"}))


def test_csv_semicolons_and_bom_free_header() -> None:
    text = "ID;Customer;Stage;Close Date;Approved;Amount\nA;Acme;Won;2011-11-01;x;5\n"
    (s,) = parse_csv(text)
    assert (s.sale_id, s.stage, s.approved, s.close_date) == ("A", "Won", True, date(2011, 11, 1))
    with pytest.raises(SynvoiceError, match="stage differs"):
        parse_csv("id,customer,stage,amount\nA,Acme,Won,1\nA,Acme,Lost,2\n")


# --- plans, ids, delivery helpers, PDF --------------------------------------------------


def test_plan_skips_processed_and_reuses_documents() -> None:
    st_ = fold(
        [
            ev("sale.recorded", sale_from_obj(sale_obj("A"))),
            ev("sale.recorded", sale_from_obj(sale_obj("B", customer={"name": "B"}))),
            ev("sale.recorded", sale_from_obj(sale_obj("C"))),
            ev("billing.invoice_processed", processed("A")),
            ev("billing.delivery_failed", failure("C")),
        ]
    )
    rows = st_.fetch(ScenarioRules(), date(2012, 1, 1))
    doc_c = str(ids.invoice_doc_id("C"))
    doc_a = str(processed("A").doc_id)
    plan = make_plan(
        rows,
        st_,
        "email",
        {"C": "print"},
        {doc_c: ExistingDoc(doc_c, 4, "draft"), doc_a: ExistingDoc(doc_a, 1, "draft")},
    )
    assert [r.sale.sale_id for r in plan.skipped] == ["A"]
    assert plan.repair_issue == [doc_a]  # processed, delivered, but left draft by a crash
    by = {w.sale.sale_id: w for w in plan.todo}
    assert by["B"].problem == "the customer has no e-mail address" and by["B"].existing is None
    assert by["C"].action == "print" and by["C"].existing is not None
    assert by["C"].base == st_.last_outcome["C"]
    assert plan.summary()["to_process"] == 2
    with pytest.raises(SynvoiceError, match="not among the fetched"):
        make_plan(rows, st_, "email", {"Z": "print"})


def test_parse_action_and_addresses_and_notes() -> None:
    assert [parse_action(a) for a in ("Email", "PRINT", "Create Only", "create-only")] == [
        "email",
        "print",
        "create",
        "create",
    ]
    with pytest.raises(SynvoiceError):
        parse_action("fax")
    assert check_address("a@b.example") is None
    for bad in (None, "", "a@b", "a b@c.example", "a@@b.example", "a@b..example"):
        assert check_address(bad) is not None
    assert sale_of_note("Sale OPP-1 - Big deal") == "OPP-1"
    assert sale_of_note("Sale X:1") == "X:1" and sale_of_note("hello") is None


def test_ids_are_stable() -> None:
    assert ids.invoice_doc_id("A") == ids.invoice_doc_id("A") != ids.invoice_doc_id("B")
    assert ids.processed_event_id("A") != ids.invoice_doc_id("A")
    assert ids.safe_name("X:1/2") == "X_1_2"


def test_pdf_has_number_date_customer_lines_taxes_total() -> None:
    pdf = render(
        InvoiceData(
            number=123,
            issue_date=date(2011, 11, 30),
            due_date=date(2011, 12, 30),
            seller=SellerSet(legal_name="Kognoz S.A."),
            customer={"name": "Zoë Ünïcode → Ltd", "address": "18 de Julio 959\nMontevideo"},
            lines=[
                Line(description="Consulting", quantity=Decimal(3), unit_price=Decimal("1000")),
                Line(
                    description="Licence",
                    quantity=Decimal("1.5"),
                    unit_price=Decimal("99.99"),
                    tax_rate=Decimal("22"),
                ),
            ],
            currency="UYU",
            reference="OPP-1",
        )
    )
    text = pdf_text(pdf)
    for part in (
        "Invoice 123",
        "2011-11-30",
        "2011-12-30",
        "Kognoz S.A.",
        "Zoë Ünïcode → Ltd",  # embedded Unicode font: printed as written
        "Montevideo",
        "Consulting",
        "3,000.00",
        "Licence",
        "149.98",  # half-even cents, as engine.schema.common.totals
        "Tax 33.00",
        "Total UYU 3,182.98",
    ):
        assert part in text, part
