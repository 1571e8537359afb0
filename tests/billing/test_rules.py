"""Scenario rules (pure): periods, conditions, and properties checked with hypothesis."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from devices.billing.rules import (
    close_range,
    describe,
    field_value,
    matches,
    normalize_period,
    period_range,
    select,
)
from engine.schema.billing import FieldFilter, SaleRecorded, ScenarioRules


def mk(sid: str = "S1", **kw: Any) -> SaleRecorded:
    data: dict[str, Any] = {
        "sale_id": sid,
        "customer": {"name": "Acme Corp", "email": "ap@acme.example"},
        "lines": [{"description": "x", "quantity": "1", "unit_price": "100", "tax_rate": "10"}],
        "stage": "Closed/Won",
        "close_date": "2011-11-15",
        "approved": True,
        "fields": {"region": "EMEA", "seats": "12"},
    }
    data.update(kw)
    return SaleRecorded.model_validate(data)


TODAY = date(2011, 12, 7)  # a Wednesday


@pytest.mark.parametrize(
    ("period", "lo", "hi"),
    [
        ("today", "2011-12-07", "2011-12-07"),
        ("yesterday", "2011-12-06", "2011-12-06"),
        ("this week", "2011-12-05", "2011-12-11"),
        ("last week", "2011-11-28", "2011-12-04"),
        ("this month", "2011-12-01", "2011-12-31"),
        ("last month", "2011-11-01", "2011-11-30"),
        ("next month", "2012-01-01", "2012-01-31"),
        ("this quarter", "2011-10-01", "2011-12-31"),
        ("last quarter", "2011-07-01", "2011-09-30"),
        ("next quarter", "2012-01-01", "2012-03-31"),
        ("last year", "2010-01-01", "2010-12-31"),
        ("last 30 days", "2011-11-08", "2011-12-07"),
        ("next 7 days", "2011-12-07", "2011-12-13"),
        ("2011-11", "2011-11-01", "2011-11-30"),
        ("2012-02", "2012-02-01", "2012-02-29"),
        ("2011-Q4", "2011-10-01", "2011-12-31"),
        ("2011", "2011-01-01", "2011-12-31"),
    ],
)
def test_periods(period: str, lo: str, hi: str) -> None:
    assert period_range(period, TODAY) == (date.fromisoformat(lo), date.fromisoformat(hi))


def test_period_spelling_and_unknown() -> None:
    assert normalize_period("  Last   Month ") == "last month"
    assert normalize_period("2011-q4") == "2011-Q4"
    assert period_range("LAST MONTH", TODAY) == period_range("last month", TODAY)
    for bad in ("lastmonth", "2011-13", "last 0 days", "soon", "2011-Q5"):
        with pytest.raises(ValueError):
            period_range(bad, TODAY)
    with pytest.raises(ValidationError):
        ScenarioRules(period="fortnight")
    with pytest.raises(ValidationError):
        ScenarioRules(close_from=date(2011, 12, 1), close_to=date(2011, 11, 1))


def test_seed_rules() -> None:
    rules = ScenarioRules(stages=["Closed/Won"], period="2011-11", approved=True)
    assert matches(rules, mk(), TODAY)
    assert not matches(rules, mk(stage="Closed/Lost"), TODAY)
    assert matches(rules, mk(stage=" closed/won "), TODAY)  # case and spaces do not matter
    assert not matches(rules, mk(approved=False), TODAY)
    assert not matches(rules, mk(close_date="2011-10-31"), TODAY)
    assert not matches(rules, mk(close_date="2011-12-01"), TODAY)
    assert matches(rules, mk(close_date="2011-11-30"), TODAY)
    assert not matches(rules, mk(close_date=None), TODAY)
    assert (
        describe(rules, TODAY)
        == "stage Closed/Won; closed 2011-11 (2011-11-01..2011-11-30); approved"
    )


def test_relative_period_follows_today() -> None:
    rules = ScenarioRules(period="last month")
    s = mk(close_date="2011-11-15")
    assert matches(rules, s, date(2011, 12, 1))
    assert not matches(rules, s, date(2012, 1, 1))


def test_explicit_range_is_intersected_with_period() -> None:
    rules = ScenarioRules(period="2011-11", close_from=date(2011, 11, 10))
    assert close_range(rules, TODAY) == (date(2011, 11, 10), date(2011, 11, 30))
    assert not matches(rules, mk(close_date="2011-11-09"), TODAY)


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (FieldFilter(field="region", op="eq", value="emea"), True),
        (FieldFilter(field="region", op="ne", value="EMEA"), False),
        (FieldFilter(field="region", op="in", value="APAC, emea"), True),
        (FieldFilter(field="seats", op="gt", value="9"), True),  # numbers, not text ("12" < "9")
        (FieldFilter(field="seats", op="le", value="11.5"), False),
        (FieldFilter(field="close_date", op="ge", value="2011-11-15"), True),
        (FieldFilter(field="customer", op="contains", value="acme"), True),
        (FieldFilter(field="email", op="startswith", value="AP@"), True),
        (FieldFilter(field="po_number", op="exists"), False),
        (FieldFilter(field="po_number", op="ne", value="x"), True),
        (FieldFilter(field="po_number", op="eq", value=""), False),
        (FieldFilter(field="fields.region", op="eq", value="EMEA"), True),
        (FieldFilter(field="total", op="eq", value="110.00"), True),
        (FieldFilter(field="approved", op="eq", value="true"), True),
    ],
)
def test_field_filters(flt: FieldFilter, expected: bool) -> None:
    assert matches(ScenarioRules(where=[flt]), mk(), TODAY) is expected


def test_other_conditions() -> None:
    s = mk()
    assert field_value(s, "total") == "110.00"
    assert matches(ScenarioRules(customer="ACME"), s, TODAY)
    assert not matches(ScenarioRules(customer="Initech"), s, TODAY)
    assert matches(ScenarioRules(currency="USD"), s, TODAY)
    assert not matches(ScenarioRules(currency="EUR"), s, TODAY)
    assert matches(ScenarioRules(min_total=Decimal("110")), s, TODAY)
    assert not matches(ScenarioRules(max_total=Decimal("109.99")), s, TODAY)
    assert describe(ScenarioRules()) == "every sale"
    assert describe(ScenarioRules(period="last month")) == "closed last month"
    assert describe(ScenarioRules(close_to=date(2011, 1, 2))) == "closed up to 2011-01-02"


# --- properties -------------------------------------------------------------------------

dates = st.dates(min_value=date(1990, 1, 1), max_value=date(2090, 12, 31))
periods = st.one_of(
    st.sampled_from(
        ["today", "yesterday"]
        + [
            f"{r} {u}"
            for r in ("this", "last", "next")
            for u in ("week", "month", "quarter", "year")
        ]
    ),
    st.builds(
        lambda n, r: f"{r} {n} days", st.integers(1, 9999), st.sampled_from(["last", "next"])
    ),
    st.builds(lambda d: d.strftime("%Y-%m"), dates),
    st.builds(lambda d, q: f"{d.year}-Q{q}", dates, st.integers(1, 4)),
)
sales = st.builds(
    lambda i, stage, d, approved, amount, region: mk(
        f"S{i}",
        stage=stage,
        close_date=d,
        approved=approved,
        lines=[{"description": "x", "quantity": "1", "unit_price": str(amount)}],
        fields={"region": region},
    ),
    st.integers(0, 10**6),
    st.sampled_from(["Closed/Won", "Closed/Lost", "Negotiation", "closed/won"]),
    st.one_of(st.none(), dates),
    st.booleans(),
    st.decimals(min_value=0, max_value=10**6, places=2),
    st.sampled_from(["EMEA", "APAC", "LATAM"]),
)
rule_sets = st.builds(
    ScenarioRules,
    stages=st.lists(st.sampled_from(["Closed/Won", "Negotiation"]), max_size=2),
    period=st.one_of(st.none(), periods),
    approved=st.one_of(st.none(), st.booleans()),
    min_total=st.one_of(st.none(), st.decimals(min_value=0, max_value=10**6, places=2)),
    where=st.lists(
        st.builds(
            FieldFilter,
            field=st.sampled_from(["region", "stage", "total", "missing"]),
            op=st.sampled_from(["eq", "ne", "contains", "in", "gt", "le", "exists"]),
            value=st.sampled_from(["EMEA", "APAC,EMEA", "100", "closed", ""]),
        ),
        max_size=2,
    ),
)


@given(periods, dates)
def test_period_range_is_well_formed(period: str, today: date) -> None:
    lo, hi = period_range(period, today)
    assert lo <= hi
    if period.startswith("this ") or period == "today":
        assert lo <= today <= hi
    if period.startswith("last ") and not period.endswith("days"):
        this = period_range(period.replace("last", "this"), today)
        assert hi == this[0] - timedelta(days=1)  # "last X" ends where "this X" starts
    if period.startswith("next ") and not period.endswith("days"):
        this = period_range(period.replace("next", "this"), today)
        assert lo == this[1] + timedelta(days=1)


@given(st.lists(sales, max_size=20), rule_sets, dates)
@settings(max_examples=200)
def test_select_is_a_filter(items: list[SaleRecorded], rules: ScenarioRules, today: date) -> None:
    picked = select(items, rules, today)
    assert picked == [s for s in items if matches(rules, s, today)]
    assert select(items, ScenarioRules(), today) == items  # no rules: every sale


@given(sales, rule_sets, rule_sets, dates)
@settings(max_examples=300)
def test_more_conditions_never_pick_more(
    sale: SaleRecorded, a: ScenarioRules, b: ScenarioRules, today: date
) -> None:
    """Adding b's filters to a can only narrow the selection."""
    both = a.model_copy(update={"where": [*a.where, *b.where]})
    if matches(both, sale, today):
        assert matches(a, sale, today)


@given(sales, rule_sets, dates)
def test_close_window_decides_dates(sale: SaleRecorded, rules: ScenarioRules, today: date) -> None:
    lo, hi = close_range(rules, today)
    if matches(rules, sale, today) and (lo or hi):
        assert sale.close_date is not None
        assert (lo is None or lo <= sale.close_date) and (hi is None or sale.close_date <= hi)
