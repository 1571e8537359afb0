"""Sales from CSV/JSON text or broker messages, and the events that record them. Pure.

Accepted keys (CSV columns or JSON members; case and spaces ignored):
``sale_id``/``id``, ``customer`` (a name, or in JSON an object with name, email,
address, tax_id), ``email``, ``address``, ``tax_id``, ``title``, ``stage``,
``close_date`` (YYYY-MM-DD), ``approved`` (yes/no, true/false, 1/0), ``currency``,
and either ``amount`` (one line) or lines: in JSON ``lines`` = [{description,
quantity, unit_price, tax_rate}], in CSV one row per line with ``description``,
``quantity``, ``unit_price``, ``tax_rate`` (rows with the same sale id are one
sale). Any other column is kept as a custom field that scenarios can filter on.
A bad file is refused as a whole with a one-line error naming the line.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from pydantic import ValidationError

from devices.billing import ids
from devices.billing.fold import sale_digest
from engine.errors import SynvoiceError
from engine.events import Event, new_event
from engine.schema.billing import SaleRecorded

SALE_KEYS = {
    "sale_id": "sale_id",
    "id": "sale_id",
    "opportunity_id": "sale_id",
    "customer": "customer",
    "customer_name": "customer",
    "account": "customer",
    "email": "email",
    "customer_email": "email",
    "address": "address",
    "customer_address": "address",
    "tax_id": "tax_id",
    "customer_tax_id": "tax_id",
    "title": "title",
    "name": "title",
    "opportunity": "title",
    "stage": "stage",
    "close_date": "close_date",
    "closed": "close_date",
    "approved": "approved",
    "approved_for_invoicing": "approved",
    "currency": "currency",
}
LINE_KEYS = {"amount", "description", "quantity", "unit_price", "price", "tax_rate", "tax"}
_TRUE = {"true", "yes", "y", "1", "x", "on"}
_FALSE = {"false", "no", "n", "0", "", "off"}


def _key(name: str) -> str:
    return re.sub(r"[\s\-/]+", "_", name.strip().lower())


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    s = str(v).strip().lower() if v is not None else ""
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(f"approved {v!r} is not yes/no")


def _date(v: Any) -> date | None:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    s = str(v).strip()
    try:
        return date.fromisoformat(s)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(s).date()
    except ValueError:
        raise ValueError(f"close_date {s!r} is not a date (YYYY-MM-DD)") from None


def _dec(name: str, v: Any) -> Decimal:
    if isinstance(v, bool):
        raise ValueError(f"{name} {v!r} is not a number")
    try:
        d = Decimal(str(v).strip())
    except (InvalidOperation, ValueError):
        raise ValueError(f"{name} {v!r} is not a number") from None
    if not d.is_finite():
        raise ValueError(f"{name} {v!r} is not a number")
    return d


def _text(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def _line_from(values: Mapping[str, Any], fallback: str) -> dict[str, Any] | None:
    """A line from the line columns of one row (None when the row has none)."""
    amount = values.get("amount")
    price = values.get("unit_price", values.get("price"))
    tax = values.get("tax_rate", values.get("tax"))
    desc = _text(values.get("description")) or fallback
    if _text(price) is not None:
        qty = values.get("quantity")
        return {
            "description": desc,
            "quantity": _dec("quantity", qty) if _text(qty) is not None else Decimal(1),
            "unit_price": _dec("unit_price", price),
            "tax_rate": _dec("tax_rate", tax) if _text(tax) is not None else Decimal(0),
        }
    if _text(amount) is not None:
        return {
            "description": desc,
            "quantity": Decimal(1),
            "unit_price": _dec("amount", amount),
            "tax_rate": _dec("tax_rate", tax) if _text(tax) is not None else Decimal(0),
        }
    return None


def _split(obj: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(sale fields, line fields, custom fields) of one row/object."""
    sale: dict[str, Any] = {}
    line: dict[str, Any] = {}
    custom: dict[str, str] = {}
    for raw_key, v in obj.items():
        k = _key(str(raw_key))
        if k in SALE_KEYS:
            sale[SALE_KEYS[k]] = v
        elif k in LINE_KEYS:
            line[k] = v
        elif k in ("lines", "fields"):
            sale[k] = v
        elif v is not None and not isinstance(v, dict | list):
            if str(v).strip():
                custom[k] = str(v)
        else:
            raise ValueError(f"{raw_key!r} must be a plain value")
    return sale, line, custom


def _build(
    sale: dict[str, Any], lines: list[dict[str, Any]], custom: dict[str, str], source: str | None
) -> SaleRecorded:
    cust = sale.get("customer")
    customer: dict[str, Any]
    if isinstance(cust, dict):
        customer = {k: v for k, v in cust.items() if v is not None}
    else:
        customer = {"name": _text(cust) or ""}
    for k in ("email", "address", "tax_id"):
        if _text(sale.get(k)) is not None:
            customer[k] = _text(sale.get(k))
    if "name" not in customer or not str(customer["name"]).strip():
        raise ValueError("customer is missing")
    sid = _text(sale.get("sale_id"))
    if sid is None:
        raise ValueError("sale_id is missing")
    if _text(sale.get("stage")) is None:
        raise ValueError("stage is missing")
    if not lines:
        raise ValueError("no amount or lines")
    fields = dict(custom)
    extra = sale.get("fields")
    if isinstance(extra, dict):
        fields.update({_key(str(k)): str(v) for k, v in extra.items() if v is not None})
    elif extra is not None:
        raise ValueError("fields must be an object")
    data = {
        "sale_id": sid,
        "customer": customer,
        "lines": lines,
        "currency": (_text(sale.get("currency")) or "USD").upper(),
        "stage": _text(sale.get("stage")),
        "close_date": _date(sale.get("close_date")),
        "approved": _bool(sale.get("approved")),
        "title": _text(sale.get("title")),
        "fields": fields,
        "source": source,
    }
    try:
        return SaleRecorded.model_validate(data)
    except ValidationError as exc:
        e = exc.errors(include_url=False, include_context=False, include_input=False)[0]
        loc = ".".join(str(p) for p in e["loc"])
        raise ValueError(f"{loc}: {e['msg']}") from None


def sale_from_obj(obj: Any, source: str | None = None) -> SaleRecorded:
    """One sale from a JSON-like object (import files and broker messages)."""
    if not isinstance(obj, dict):
        raise ValueError("a sale must be an object")
    sale, line, custom = _split(obj)
    lines: list[dict[str, Any]] = []
    raw_lines = sale.pop("lines", None)
    fallback = _text(sale.get("title")) or f"Sale {_text(sale.get('sale_id')) or ''}".strip()
    if raw_lines is not None:
        if not isinstance(raw_lines, list):
            raise ValueError("lines must be a list")
        for i, ln in enumerate(raw_lines):
            if not isinstance(ln, dict):
                raise ValueError(f"lines.{i} must be an object")
            got = _line_from({_key(str(k)): v for k, v in ln.items()}, fallback)
            if got is None:
                raise ValueError(f"lines.{i}: unit_price or amount is missing")
            lines.append(got)
    first = _line_from(line, fallback)
    if first is not None:
        if lines:
            raise ValueError("give either amount or lines, not both")
        lines.append(first)
    return _build(sale, lines, custom, source)


def parse_json(text: str, name: str = "input") -> list[SaleRecorded]:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, a 5,000-digit int, deep nesting
        raise SynvoiceError("bad_request", f"{name}: not valid JSON ({exc})") from None
    return sales_from_doc(doc, name, source=f"import:{name}")


def sales_from_doc(doc: Any, name: str, source: str | None) -> list[SaleRecorded]:
    """A list of sales, ``{"sales": [...]}`` or a single sale object."""
    if isinstance(doc, dict) and "sales" in doc and isinstance(doc["sales"], list):
        items: list[Any] = doc["sales"]
    elif isinstance(doc, list):
        items = doc
    elif isinstance(doc, dict):
        items = [doc]
    else:
        raise SynvoiceError("schema", f"{name}: expected a list of sales")
    out: list[SaleRecorded] = []
    seen: dict[str, int] = {}
    for i, obj in enumerate(items, 1):
        label = obj.get("sale_id", obj.get("id")) if isinstance(obj, dict) else None
        where = f"{name} sale {i}" + (f" ({label})" if label is not None else "")
        try:
            s = sale_from_obj(obj, source)
        except ValueError as exc:
            raise SynvoiceError("schema", f"{where}: {exc}") from None
        if s.sale_id in seen:
            raise SynvoiceError(
                "schema", f"{where}: sale {s.sale_id} already given as sale {seen[s.sale_id]}"
            )
        seen[s.sale_id] = i
        out.append(s)
    return out


def parse_csv(text: str, name: str = "input") -> list[SaleRecorded]:
    """Rows with the same sale id are the lines of one sale."""
    first = text.splitlines()[0] if text else ""
    delim = max((",", ";", "\t"), key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    try:
        header = next(reader)
    except StopIteration:
        raise SynvoiceError("schema", f"{name}: the file is empty") from None
    except csv.Error as exc:
        raise SynvoiceError("schema", f"{name} line 1: {exc}") from None
    cols = [_key(h) for h in header]
    if "sale_id" not in cols and "id" not in cols and "opportunity_id" not in cols:
        raise SynvoiceError("schema", f"{name} line 1: no sale_id column (header: {first[:80]})")
    groups: dict[str, tuple[int, dict[str, Any], list[dict[str, Any]], dict[str, str]]] = {}
    try:
        for row in reader:
            lineno = reader.line_num
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(cols):
                raise ValueError(f"{len(row)} columns, the header has {len(cols)}")
            sale, line, custom = _split(dict(zip(cols, row, strict=True)))
            sid = _text(sale.get("sale_id"))
            if sid is None:
                raise ValueError("sale_id is missing")
            fallback = _text(sale.get("title")) or f"Sale {sid}"
            ln = _line_from(line, fallback)
            if sid not in groups:
                groups[sid] = (lineno, sale, [], custom)
            else:
                _, first_sale, _, first_custom = groups[sid]
                for k, v in sale.items():
                    if _text(v) is not None and _text(first_sale.get(k)) not in (None, _text(v)):
                        raise ValueError(f"sale {sid}: {k} differs from its first row")
                for k, v in custom.items():
                    first_custom.setdefault(k, v)
            if ln is not None:
                groups[sid][2].append(ln)
    except (ValueError, csv.Error) as exc:
        raise SynvoiceError("schema", f"{name} line {reader.line_num}: {exc}") from None
    out: list[SaleRecorded] = []
    for sid, (lineno, sale, lines, custom) in groups.items():
        try:
            out.append(_build(sale, lines, custom, f"import:{name}"))
        except ValueError as exc:
            raise SynvoiceError("schema", f"{name} line {lineno} (sale {sid}): {exc}") from None
    return out


def parse_text(text: str, fmt: str, name: str) -> list[SaleRecorded]:
    if fmt == "json":
        sales = parse_json(text, name)
    elif fmt == "csv":
        sales = parse_csv(text, name)
    else:
        raise SynvoiceError("bad_request", f"unknown format {fmt!r} (csv or json)")
    if not sales:
        raise SynvoiceError("schema", f"{name}: no sales in the file")
    return sales


def detect_format(name: str, text: str) -> str:
    low = name.lower()
    if low.endswith(".json"):
        return "json"
    if low.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    return "json" if text.lstrip()[:1] in ("[", "{") else "csv"


# --- recording ----------------------------------------------------------------------


class Version(Protocol):
    """What recording needs to know about a sale's current version."""

    @property
    def digest(self) -> str: ...

    @property
    def event_id(self) -> str: ...


def sale_events(
    sales: Iterable[SaleRecorded],
    known: Mapping[str, Version],
    *,
    device_id: str,
    user: str,
    seen_position: int = 0,
) -> tuple[list[Event], int]:
    """Events recording the sales that are new or changed; (events, unchanged count).

    The event id derives from the sale id, its content and the version it
    replaces: importing the same file twice, or retrying a push, records nothing new.
    """
    out: list[Event] = []
    unchanged = 0
    for sale in sales:
        d = sale_digest(sale)
        cur = known.get(sale.sale_id)
        if cur is not None and cur.digest == d:
            unchanged += 1
            continue
        out.append(
            new_event(
                "sale.recorded",
                sale,
                device_id=device_id,
                user=user,
                device_seq=0,  # billing events are not in the agent's device sequence
                seen_position=seen_position,
                event_id=ids.sale_event_id(sale.sale_id, d, cur.event_id if cur else None),
            )
        )
    return out, unchanged
