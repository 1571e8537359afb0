"""The document fold: one document's current state from its events. Pure: no I/O.

The device agent's local view, the live projection in the engine, the
standalone projection and the auditor's replay all use this one fold, so they
agree by construction. ``apply`` takes a validated ``Event``; ``fold_wire`` is
the same fold over the event's wire map (``Event.to_wire()``, exactly what the
log stores), which lets a replay skip building pydantic objects.

Merge rule (deterministic): events apply in log position order (a device's
unsent events apply after everything it pulled, in device order). For each
field the last write wins. Two writes of the same field are a *conflict* when
the later one was made without having seen the earlier one (its
``seen_position`` is below the earlier write's position) and they come from
different devices: both are kept in the log, the later wins, and the conflict
is reported. Content edits (customer, lines, dates) to an issued or void
document are not applied: an issued invoice is never silently rewritten; such
an edit is reported as a conflict of kind ``edit_after_issue``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from engine.events import Event
from engine.schema.registry import REGISTRY

CONTENT_FIELDS = ("customer", "lines", "dates")
_CENT = Decimal("0.01")
_ZERO = Decimal(0)
_HUNDRED = Decimal(100)


# Neither class has __slots__: the device store builds them through __dict__.
@dataclass(frozen=True)
class FieldWrite:
    position: int
    event_id: str
    device_id: str
    seen_position: int


_new = object.__new__


def _field_write(position: int, event_id: str, device_id: str, seen_position: int) -> FieldWrite:
    """``FieldWrite(...)`` at a third of the cost (a frozen dataclass's __init__ goes
    through object.__setattr__ per field; a replay makes one per event)."""
    w: FieldWrite = _new(FieldWrite)
    d = w.__dict__
    d["position"] = position
    d["event_id"] = event_id
    d["device_id"] = device_id
    d["seen_position"] = seen_position
    return w


@dataclass(frozen=True)
class Conflict:
    doc_id: str
    field: str
    kind: str  # "concurrent_edit" | "edit_after_issue"
    winner: str  # event id that took effect (or the issue event for edit_after_issue)
    loser: str  # event id that was overridden / not applied
    position: int  # position of the later event

    def as_dict(self) -> dict[str, Any]:
        return {
            "doc_id": self.doc_id,
            "field": self.field,
            "kind": self.kind,
            "winner": self.winner,
            "loser": self.loser,
            "position": self.position,
        }


# Prices, quantities and tax rates repeat a lot: parse each distinct string once.
_DEC_CACHE: dict[Any, Decimal] = {}


def _dec(x: Any) -> Decimal:
    d = _DEC_CACHE.get(x)
    if d is None:
        d = Decimal(x) if isinstance(x, str | int) else Decimal(str(x))
        if len(_DEC_CACHE) > 100_000:
            _DEC_CACHE.clear()
        _DEC_CACHE[x] = d
    return d


# (quantity, unit price, tax rate) -> (net, tax) of one line: lines repeat too.
_LINE_CACHE: dict[tuple[Any, Any, Any], tuple[Decimal, Decimal]] = {}


def wire_totals(lines: Sequence[Mapping[str, Any]]) -> tuple[Decimal, Decimal, Decimal]:
    """``engine.schema.common.totals`` over lines in wire form (decimals as strings), without
    building ``Line`` models: the same arithmetic in the same order, so the same cents."""
    net = _ZERO
    tax = _ZERO
    cache = _LINE_CACHE
    for ln in lines:
        key = (ln["quantity"], ln["unit_price"], ln.get("tax_rate", "0"))
        amounts = cache.get(key)
        if amounts is None:
            n = _dec(key[0]) * _dec(key[1])
            amounts = (n, n * _dec(key[2]) / _HUNDRED)
            if len(cache) > 100_000:
                cache.clear()
            cache[key] = amounts
        net += amounts[0]
        tax += amounts[1]
    net = net.quantize(_CENT)
    tax = tax.quantize(_CENT)
    return net, tax, net + tax


@dataclass
class DocumentView:
    doc_id: str
    kind: str
    number: int = 0
    number_source: str = "device"
    customer: dict[str, Any] | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)
    currency: str = "USD"
    issue_date: str | None = None
    due_date: str | None = None
    notes: str | None = None
    status: str = "draft"
    user: str = ""  # creator
    device_id: str = ""  # creating device
    created_at: str | None = None  # device time of creation
    updated_at: str | None = None
    converted_from: str | None = None
    converted_to: str | None = None
    credits: str | None = None  # a credit note: the invoice it corrects
    payment_terms: str | None = None  # this document's own terms (else the seller's)
    void_reason: str | None = None
    # Device time of the event that gave the current number (its period and the
    # pattern in force then make the display number, ``engine.settings_fold``).
    numbered_at: str | None = None
    # The period of the series the projections filed the number under, from the
    # numbering settings of the moment they folded it ("" : one series for all
    # time). Kept with the view so a later pattern event never moves it.
    period: str = ""
    events: int = 0
    last_position: int = 0  # 0 while only local (unsynced) events shaped it
    created: bool = False  # False while only later events (e.g. a server number) arrived
    writes: dict[str, FieldWrite] = field(default_factory=dict)

    @property
    def totals(self) -> tuple[Decimal, Decimal, Decimal]:
        return wire_totals(self.lines)

    def as_dict(self) -> dict[str, Any]:
        net, tax, gross = self.totals
        return {
            "doc_id": self.doc_id,
            "kind": self.kind,
            "number": self.number,
            "number_source": self.number_source,
            "customer": self.customer,
            "lines": self.lines,
            "currency": self.currency,
            "issue_date": self.issue_date,
            "due_date": self.due_date,
            "notes": self.notes,
            "status": self.status,
            "user": self.user,
            "device_id": self.device_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "converted_from": self.converted_from,
            "converted_to": self.converted_to,
            "credits": self.credits,
            "payment_terms": self.payment_terms,
            "void_reason": self.void_reason,
            "net": str(net),
            "tax": str(tax),
            "total": str(gross),
            "events": self.events,
            "last_position": self.last_position,
        }


def apply(view: DocumentView | None, ev: Event) -> tuple[DocumentView, list[Conflict]]:
    """Fold one document event into the view (a new view object; the old one is untouched)."""
    if ev.doc_id is None or ev.kind is None:
        raise ValueError(f"{ev.type} is not a document event")
    spec = REGISTRY.get(ev.type)
    if spec is not None:
        ev.payload(spec.model)  # validates the data once (cached on the event)
    wire = ev.to_wire()
    wire["data"] = copy.deepcopy(wire["data"])  # the view must not share the event's dicts
    v = replace(view, writes=dict(view.writes), lines=list(view.lines)) if view else None
    if v is None:
        v = DocumentView(doc_id=str(ev.doc_id), kind=ev.kind)
    conflicts: list[Conflict] = []
    fold_wire(v, wire, conflicts)
    return v, conflicts


def _content_write(
    v: DocumentView,
    fld: str,
    pos: int,
    eid: str,
    device: str,
    seen: int,
    conflicts: list[Conflict],
) -> bool:
    """Record a write of a content field; False if it must not apply (issued document)."""
    writes = v.writes
    if v.status in ("issued", "void"):
        issued = writes.get("status")
        conflicts.append(
            Conflict(v.doc_id, fld, "edit_after_issue", issued.event_id if issued else "", eid, pos)
        )
        return False
    _write(v, fld, pos, eid, device, seen, conflicts)
    return True


def _write(
    v: DocumentView,
    fld: str,
    pos: int,
    eid: str,
    device: str,
    seen: int,
    conflicts: list[Conflict],
) -> None:
    """Record a write of ``fld``; a conflict if it was made without seeing the
    earlier write of another device."""
    prev = v.writes.get(fld)
    if prev is not None and prev.device_id != device and prev.position and seen < prev.position:
        conflicts.append(Conflict(v.doc_id, fld, "concurrent_edit", eid, prev.event_id, pos))
    v.writes[fld] = _field_write(pos, eid, device, seen)


def fold_wire(v: DocumentView, ev: Mapping[str, Any], conflicts: list[Conflict]) -> None:
    """Fold one document event, as its wire map, into ``v`` in place.

    ``ev`` must be a valid event of the current schema version (from ``parse_event``
    or our own hash-verified log); the view may keep references to its data.
    Conflicts found are appended to ``conflicts``.
    """
    pos: int = ev.get("position") or 0
    eid: str = ev["event_id"]
    device: str = ev["device_id"]
    seen: int = ev["seen_position"]
    t: str = ev["type"]
    d: Mapping[str, Any] = ev["data"]
    v.events += 1
    if pos > v.last_position:
        v.last_position = pos
    v.updated_at = ev["device_time"]
    writes = v.writes

    if t == "document.created":
        w = _field_write(pos, eid, device, seen)  # immutable: one instance serves every field
        v.created = True
        v.kind = ev["kind"]
        v.user = ev["user"]
        v.device_id = device
        v.created_at = ev["device_time"]
        number = d.get("number", 0)
        # A server number that arrived before the created event is kept.
        if number or "number" not in writes:
            v.number = number
            v.number_source = d.get("number_source", "device")
            v.numbered_at = ev["device_time"] if number else None
            writes["number"] = w
        v.customer = d.get("customer")
        v.lines = list(d.get("lines", ()))
        v.currency = d.get("currency", "USD")
        v.issue_date = d.get("issue_date")
        v.due_date = d.get("due_date")
        v.notes = d.get("notes")
        v.converted_from = d.get("converted_from")
        v.credits = d.get("credits")
        v.payment_terms = d.get("payment_terms")
        writes["customer"] = writes["lines"] = writes["dates"] = w
    elif t == "document.lines_changed":
        if _content_write(v, "lines", pos, eid, device, seen, conflicts):
            v.lines = list(d["lines"])
    elif t == "document.customer_changed":
        if _content_write(v, "customer", pos, eid, device, seen, conflicts):
            v.customer = d["customer"]
    elif t == "document.dates_changed":
        if _content_write(v, "dates", pos, eid, device, seen, conflicts):
            v.issue_date = d.get("issue_date")
            v.due_date = d.get("due_date")
    elif t == "document.number_assigned":
        # A server number is not an edit between devices; a number set by hand is:
        # two devices renumbering without seeing each other is a conflict.
        if d["source"] == "server":
            writes["number"] = _field_write(pos, eid, device, seen)
        else:
            _write(v, "number", pos, eid, device, seen, conflicts)
        v.number = d["number"]
        v.number_source = d["source"]
        v.numbered_at = ev["device_time"] if d["number"] else None
    elif t == "document.issued":
        if v.status == "draft":
            v.status = "issued"
            writes["status"] = _field_write(pos, eid, device, seen)
    elif t == "document.voided":
        v.status = "void"
        v.void_reason = d.get("reason")
        writes["status"] = _field_write(pos, eid, device, seen)
    elif t == "document.converted":
        v.converted_to = d["invoice_id"]
        if v.status == "draft":
            v.status = "converted"
