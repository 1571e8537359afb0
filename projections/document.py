"""The document fold: one document's current state from its events. Pure: no I/O.

The device agent's local view, the live projection in the engine, the
standalone projection and the auditor's replay all use this one function, so
they agree by construction.

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

from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from engine.events import (
    Converted,
    CustomerChanged,
    DatesChanged,
    DocumentCreated,
    Event,
    Line,
    LinesChanged,
    NumberAssigned,
    Voided,
    totals,
)

CONTENT_FIELDS = ("customer", "lines", "dates")


@dataclass(frozen=True)
class FieldWrite:
    position: int
    event_id: str
    device_id: str
    seen_position: int


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
    void_reason: str | None = None
    events: int = 0
    last_position: int = 0  # 0 while only local (unsynced) events shaped it
    created: bool = False  # False while only later events (e.g. a server number) arrived
    writes: dict[str, FieldWrite] = field(default_factory=dict)

    @property
    def totals(self) -> tuple[Decimal, Decimal, Decimal]:
        return totals([Line.model_validate(x) for x in self.lines])

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
            "void_reason": self.void_reason,
            "net": str(net),
            "tax": str(tax),
            "total": str(gross),
            "events": self.events,
            "last_position": self.last_position,
        }


def _time(ev: Event) -> str:
    t: datetime = ev.device_time
    return t.isoformat()


def apply(view: DocumentView | None, ev: Event) -> tuple[DocumentView, list[Conflict]]:
    """Fold one document event into the view (a new view object; the old one is untouched)."""
    if ev.doc_id is None or ev.kind is None:
        raise ValueError(f"{ev.type} is not a document event")
    doc_id = str(ev.doc_id)
    v = replace(view, writes=dict(view.writes), lines=list(view.lines)) if view else None
    if v is None:
        v = DocumentView(doc_id=doc_id, kind=ev.kind)
    conflicts: list[Conflict] = []
    pos = ev.position or 0
    v.events += 1
    if pos:
        v.last_position = max(v.last_position, pos)
    v.updated_at = _time(ev)
    t = ev.type

    def write(fld: str) -> bool:
        """Record a write of ``fld``; False if it must not apply (issued document)."""
        if fld in CONTENT_FIELDS and v.status in ("issued", "void") and t != "document.created":
            issued = v.writes.get("status")
            conflicts.append(
                Conflict(
                    doc_id,
                    fld,
                    "edit_after_issue",
                    issued.event_id if issued else "",
                    str(ev.event_id),
                    pos,
                )
            )
            return False
        prev = v.writes.get(fld)
        if (
            prev is not None
            and prev.device_id != ev.device_id
            and prev.position
            and ev.seen_position < prev.position
        ):
            conflicts.append(
                Conflict(doc_id, fld, "concurrent_edit", str(ev.event_id), prev.event_id, pos)
            )
        v.writes[fld] = FieldWrite(pos, str(ev.event_id), ev.device_id, ev.seen_position)
        return True

    if t == "document.created":
        c = ev.payload(DocumentCreated)
        v.created = True
        v.kind = ev.kind
        v.user = ev.user
        v.device_id = ev.device_id
        v.created_at = _time(ev)
        # A server number that arrived before the created event is kept.
        if c.number or "number" not in v.writes:
            v.number = c.number
            v.number_source = c.number_source
            v.writes["number"] = FieldWrite(pos, str(ev.event_id), ev.device_id, ev.seen_position)
        v.customer = c.customer.model_dump(mode="json") if c.customer else None
        v.lines = [ln.model_dump(mode="json") for ln in c.lines]
        v.currency = c.currency
        v.issue_date = c.issue_date.isoformat() if c.issue_date else None
        v.due_date = c.due_date.isoformat() if c.due_date else None
        v.notes = c.notes
        v.converted_from = str(c.converted_from) if c.converted_from else None
        for fld in CONTENT_FIELDS:
            v.writes[fld] = FieldWrite(pos, str(ev.event_id), ev.device_id, ev.seen_position)
    elif t == "document.customer_changed":
        if write("customer"):
            v.customer = ev.payload(CustomerChanged).customer.model_dump(mode="json")
    elif t == "document.lines_changed":
        if write("lines"):
            v.lines = [ln.model_dump(mode="json") for ln in ev.payload(LinesChanged).lines]
    elif t == "document.dates_changed":
        if write("dates"):
            d = ev.payload(DatesChanged)
            v.issue_date = d.issue_date.isoformat() if d.issue_date else None
            v.due_date = d.due_date.isoformat() if d.due_date else None
    elif t == "document.number_assigned":
        n = ev.payload(NumberAssigned)
        # Server numbers are not "edits" between devices: no concurrent-edit check.
        v.writes["number"] = FieldWrite(pos, str(ev.event_id), ev.device_id, ev.seen_position)
        v.number = n.number
        v.number_source = n.source
    elif t == "document.issued":
        if v.status == "draft":
            v.status = "issued"
            v.writes["status"] = FieldWrite(pos, str(ev.event_id), ev.device_id, ev.seen_position)
    elif t == "document.voided":
        v.status = "void"
        v.void_reason = ev.payload(Voided).reason
        v.writes["status"] = FieldWrite(pos, str(ev.event_id), ev.device_id, ev.seen_position)
    elif t == "document.converted":
        v.converted_to = str(ev.payload(Converted).invoice_id)
        if v.status == "draft":
            v.status = "converted"
    return v, conflicts
