"""The billing state folded from events. Pure: no I/O.

Events apply in log position order. A sale's current version is its latest
``sale.recorded``. A sale is *Processed* from its first ``billing.invoice_processed``
on (later outcomes cannot undo an invoice that exists); otherwise *Failed* if a
``billing.delivery_failed`` was recorded, else *Not Done*.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from devices.billing import ids, rules
from engine.events import Event
from engine.schema.billing import (
    BILLING_TYPES,
    DeliveryFailed,
    InvoiceProcessed,
    SaleRecorded,
    ScenarioDeleted,
    ScenarioRules,
    ScenarioSaved,
)

Status = Literal["Not Done", "Processed", "Failed"]
STATUSES: tuple[Status, ...] = ("Not Done", "Processed", "Failed")


@dataclass
class SaleEntry:
    sale: SaleRecorded
    event_id: str  # the current version's event
    digest: str
    position: int
    versions: int = 1


@dataclass
class ScenarioEntry:
    scenario: ScenarioSaved
    event_id: str
    digest: str
    position: int


@dataclass(frozen=True)
class SaleStatus:
    """One row of a fetch: a sale with its invoice status."""

    sale: SaleRecorded
    status: Status
    processed: InvoiceProcessed | None
    failure: DeliveryFailed | None

    def as_dict(self) -> dict[str, Any]:
        s, p, f = self.sale, self.processed, self.failure
        return {
            "sale_id": s.sale_id,
            "title": s.title,
            "customer": s.customer.name,
            "email": s.customer.email,
            "stage": s.stage,
            "close_date": s.close_date.isoformat() if s.close_date else None,
            "approved": s.approved,
            "currency": s.currency,
            "total": str(rules.sale_total(s)),
            "status": self.status,
            "invoice_number": p.number if p else None,
            "doc_id": str(p.doc_id) if p else None,
            "pdf": p.pdf if p else (f.pdf if f else None),
            "channel": p.channel if p else None,
            "action": p.action if p else (f.action if f else None),
            "recipient": p.recipient if p else None,
            "failed_step": f.step if f and not p else None,
            "reason": f.reason if f and not p else None,
        }


@dataclass
class BillingState:
    sales: dict[str, SaleEntry] = field(default_factory=dict)
    scenarios: dict[str, ScenarioEntry] = field(default_factory=dict)  # casefolded name ->
    processed: dict[str, InvoiceProcessed] = field(default_factory=dict)
    failures: dict[str, DeliveryFailed] = field(default_factory=dict)
    last_outcome: dict[str, str] = field(default_factory=dict)  # sale id -> event id
    scenario_last: dict[str, str] = field(default_factory=dict)  # incl. deleted ones
    position: int = 0  # last applied log position

    def apply(self, ev: Event) -> None:
        if ev.position:
            self.position = max(self.position, ev.position)
        t = ev.type
        if t not in BILLING_TYPES:
            return
        eid = str(ev.event_id)
        if t == "sale.recorded":
            sale = ev.payload(SaleRecorded)
            prev = self.sales.get(sale.sale_id)
            self.sales[sale.sale_id] = SaleEntry(
                sale,
                eid,
                sale_digest(sale),
                ev.position or 0,
                (prev.versions + 1) if prev else 1,
            )
        elif t == "billing.scenario_saved":
            sc = ev.payload(ScenarioSaved)
            key = sc.name.casefold()
            self.scenarios[key] = ScenarioEntry(sc, eid, scenario_digest(sc), ev.position or 0)
            self.scenario_last[key] = eid
        elif t == "billing.scenario_deleted":
            key = ev.payload(ScenarioDeleted).name.casefold()
            self.scenarios.pop(key, None)
            self.scenario_last[key] = eid
        elif t == "billing.invoice_processed":
            p = ev.payload(InvoiceProcessed)
            self.last_outcome[p.sale_id] = eid
            self.processed.setdefault(p.sale_id, p)
        elif t == "billing.delivery_failed":
            f = ev.payload(DeliveryFailed)
            self.last_outcome[f.sale_id] = eid
            if f.sale_id not in self.processed:
                self.failures[f.sale_id] = f

    def apply_all(self, events: Iterable[Event]) -> BillingState:
        for ev in events:
            self.apply(ev)
        return self

    # --- queries --------------------------------------------------------------------

    def status_of(self, sale_id: str) -> SaleStatus:
        entry = self.sales[sale_id]
        p = self.processed.get(sale_id)
        f = None if p else self.failures.get(sale_id)
        status: Status = "Processed" if p else ("Failed" if f else "Not Done")
        return SaleStatus(entry.sale, status, p, f)

    def scenario(self, name: str) -> ScenarioSaved | None:
        e = self.scenarios.get(name.casefold())
        return e.scenario if e else None

    def fetch(self, sc_rules: ScenarioRules, today: date) -> list[SaleStatus]:
        """The sales the rules pick with their status, ordered by close date then id."""
        picked = rules.select((e.sale for e in self.sales.values()), sc_rules, today)
        picked.sort(key=lambda s: (s.close_date or date.min, s.sale_id))
        return [self.status_of(s.sale_id) for s in picked]

    def counts(self, rows: Iterable[SaleStatus]) -> dict[str, int]:
        out: dict[str, int] = dict.fromkeys(STATUSES, 0)
        for r in rows:
            out[r.status] += 1
        return out


def sale_digest(sale: SaleRecorded) -> str:
    # Where a sale came from is not part of its content.
    return ids.digest(sale, exclude={"source"})


def scenario_digest(sc: ScenarioSaved) -> str:
    return ids.digest(sc)


def fold(events: Iterable[Event]) -> BillingState:
    return BillingState().apply_all(events)
