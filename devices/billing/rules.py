"""Billing scenario rules: which sales a scenario picks. Pure: no I/O, no clock.

``today`` is always passed in, so relative periods ("last month") evaluate the
same way in tests, in the CLI and in a replay. Every given condition must hold;
an empty rule set picks every sale.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation

from engine.schema.billing import PERIOD, FieldFilter, SaleRecorded, ScenarioRules
from engine.schema.common import totals

_PERIOD_RE = re.compile(PERIOD)
_QUARTER_RE = re.compile(r"^([0-9]{4})-Q([1-4])$")
_MONTH_RE = re.compile(r"^([0-9]{4})-([0-9]{2})$")
_DAYS_RE = re.compile(r"^(last|next) ([0-9]+) days$")
_SHIFT = {"last": -1, "this": 0, "next": 1}


def _month_start(year: int, month: int) -> date:
    # month may run outside 1..12 (shifts): normalise
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    return date(year, month, 1)


def _month_range(year: int, month: int, months: int = 1) -> tuple[date, date]:
    start = _month_start(year, month)
    end = _month_start(start.year, start.month + months) - timedelta(days=1)
    return start, end


def normalize_period(period: str) -> str:
    """Canonical spelling of a period ("Last  Month" -> "last month", "2011-q4" -> "2011-Q4")."""
    p = " ".join(period.split()).lower()
    return re.sub(r"^([0-9]{4})-q([1-4])$", r"\1-Q\2", p)


def period_range(period: str, today: date) -> tuple[date, date]:
    """The inclusive date range of a period such as "last month" or "2011-11"."""
    p = normalize_period(period)
    if not _PERIOD_RE.match(p):
        raise ValueError(
            f"unknown period {period!r} (use today, yesterday, this/last/next "
            "week|month|quarter|year, last/next N days, YYYY, YYYY-MM or YYYY-Qn)"
        )
    if p == "today":
        return today, today
    if p == "yesterday":
        y = today - timedelta(days=1)
        return y, y
    m = _DAYS_RE.match(p)
    if m:
        n = int(m.group(2))
        if m.group(1) == "last":
            return today - timedelta(days=n - 1), today
        return today, today + timedelta(days=n - 1)
    m = _QUARTER_RE.match(p)
    if m:
        year, q = int(m.group(1)), int(m.group(2))
        return _month_range(year, 3 * (q - 1) + 1, 3)
    m = _MONTH_RE.match(p)
    if m:
        return _month_range(int(m.group(1)), int(m.group(2)))
    if p.isdigit():
        return date(int(p), 1, 1), date(int(p), 12, 31)
    rel, unit = p.split(" ")
    shift = _SHIFT[rel]
    if unit == "week":
        monday = today - timedelta(days=today.weekday()) + timedelta(weeks=shift)
        return monday, monday + timedelta(days=6)
    if unit == "month":
        return _month_range(today.year, today.month + shift)
    if unit == "quarter":
        first = 3 * ((today.month - 1) // 3) + 1
        return _month_range(today.year, first + 3 * shift, 3)
    return date(today.year + shift, 1, 1), date(today.year + shift, 12, 31)  # year


def close_range(rules: ScenarioRules, today: date) -> tuple[date | None, date | None]:
    """The close-date window: explicit bounds intersected with the period."""
    lo, hi = rules.close_from, rules.close_to
    if rules.period:
        plo, phi = period_range(rules.period, today)
        lo = plo if lo is None else max(lo, plo)
        hi = phi if hi is None else min(hi, phi)
    return lo, hi


def sale_total(sale: SaleRecorded) -> Decimal:
    return totals(list(sale.lines))[2]


def field_value(sale: SaleRecorded, name: str) -> str | None:
    """A sale field by name as text (built-in fields first, then custom columns)."""
    builtin: dict[str, str | None] = {
        "sale_id": sale.sale_id,
        "title": sale.title,
        "stage": sale.stage,
        "currency": sale.currency,
        "customer": sale.customer.name,
        "email": sale.customer.email,
        "close_date": sale.close_date.isoformat() if sale.close_date else None,
        "approved": "true" if sale.approved else "false",
        "total": str(sale_total(sale)),
    }
    if name in builtin:
        return builtin[name]
    key = name[7:] if name.startswith("fields.") else name
    return sale.fields.get(key)


def _norm(s: str) -> str:
    return " ".join(s.split()).casefold()


def _compare(a: str, b: str) -> int:
    """Numbers compare as numbers, ISO dates as dates, anything else as text."""
    try:
        da, db = Decimal(a), Decimal(b)
        return (da > db) - (da < db)
    except (InvalidOperation, ValueError):
        pass
    try:
        ta, tb = date.fromisoformat(a), date.fromisoformat(b)
        return (ta > tb) - (ta < tb)
    except ValueError:
        pass
    na, nb = _norm(a), _norm(b)
    return (na > nb) - (na < nb)


def filter_matches(f: FieldFilter, sale: SaleRecorded) -> bool:
    v = field_value(sale, f.field)
    if f.op == "exists":
        return v is not None and v.strip() != ""
    if v is None:
        return f.op == "ne"  # a missing field differs from any value
    if f.op == "eq":
        return _norm(v) == _norm(f.value)
    if f.op == "ne":
        return _norm(v) != _norm(f.value)
    if f.op == "contains":
        return _norm(f.value) in _norm(v)
    if f.op == "startswith":
        return _norm(v).startswith(_norm(f.value))
    if f.op == "in":
        return _norm(v) in {_norm(x) for x in f.value.split(",")}
    c = _compare(v, f.value)
    return {"gt": c > 0, "ge": c >= 0, "lt": c < 0, "le": c <= 0}[f.op]


def matches(rules: ScenarioRules, sale: SaleRecorded, today: date) -> bool:
    if rules.stages and _norm(sale.stage) not in {_norm(s) for s in rules.stages}:
        return False
    lo, hi = close_range(rules, today)
    if lo is not None or hi is not None:
        if sale.close_date is None:
            return False
        if lo is not None and sale.close_date < lo:
            return False
        if hi is not None and sale.close_date > hi:
            return False
    if rules.approved is not None and sale.approved != rules.approved:
        return False
    if rules.customer and _norm(rules.customer) not in _norm(sale.customer.name):
        return False
    if rules.currency and sale.currency != rules.currency:
        return False
    if rules.min_total is not None or rules.max_total is not None:
        total = sale_total(sale)
        if rules.min_total is not None and total < rules.min_total:
            return False
        if rules.max_total is not None and total > rules.max_total:
            return False
    return all(filter_matches(f, sale) for f in rules.where)


def select(sales: Iterable[SaleRecorded], rules: ScenarioRules, today: date) -> list[SaleRecorded]:
    """The sales the rules pick, in the given order."""
    return [s for s in sales if matches(rules, s, today)]


def describe(rules: ScenarioRules, today: date | None = None) -> str:
    """A one-line human summary, e.g. "stage Closed/Won; closed 2011-11-01..2011-11-30"."""
    parts: list[str] = []
    if rules.stages:
        parts.append("stage " + " or ".join(rules.stages))
    if rules.period or rules.close_from or rules.close_to:
        lo, hi = rules.close_from, rules.close_to
        if today is not None:
            lo, hi = close_range(rules, today)
        span = f"{lo}..{hi}" if lo and hi else (f"from {lo}" if lo else f"up to {hi}")
        if rules.period:
            extra = [f"{lo}..{hi}"] if today is not None else []
            if today is None and (rules.close_from or rules.close_to):
                extra.append(f"within {span}")
            parts.append(f"closed {rules.period}" + (f" ({', '.join(extra)})" if extra else ""))
        else:
            parts.append(f"closed {span}")
    if rules.approved is not None:
        parts.append("approved" if rules.approved else "not approved")
    if rules.customer:
        parts.append(f"customer ~ {rules.customer}")
    if rules.currency:
        parts.append(f"currency {rules.currency}")
    if rules.min_total is not None:
        parts.append(f"total >= {rules.min_total}")
    if rules.max_total is not None:
        parts.append(f"total <= {rules.max_total}")
    parts.extend(f"{f.field} {f.op} {f.value}".rstrip() for f in rules.where)
    return "; ".join(parts) or "every sale"
