"""What a processing run will do for each selected sale. Pure: no I/O.

A sale already Processed is never invoiced again (skipped). Not Done and
Failed sales are (re)tried; if the invoice document of a sale already exists
(a crash after creating it, or a delivery that failed) it is reused, never
made twice. The same plan drives ``--dry-run`` and the real run.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from devices.billing import ids
from devices.billing.delivery import check_address
from devices.billing.fold import BillingState, SaleStatus, Status
from devices.billing.rules import sale_total
from engine.errors import SynvoiceError
from engine.schema.billing import ACTIONS, Action, SaleRecorded


@dataclass(frozen=True)
class ExistingDoc:
    """An invoice document the device already has for a sale."""

    doc_id: str
    number: int
    status: str  # draft / issued / void ...


@dataclass(frozen=True)
class Work:
    sale: SaleRecorded
    action: Action
    doc_id: uuid.UUID
    status: Status  # before the run: Not Done or Failed
    existing: ExistingDoc | None
    base: str | None  # the sale's last outcome event (for deterministic failure ids)
    problem: str | None  # known before the run, e.g. an unusable e-mail address

    def as_dict(self) -> dict[str, Any]:
        s = self.sale
        return {
            "sale_id": s.sale_id,
            "customer": s.customer.name,
            "email": s.customer.email,
            "total": str(sale_total(s)),
            "currency": s.currency,
            "status": self.status,
            "action": self.action,
            "invoice": (
                f"reuse invoice {self.existing.number or '(unnumbered)'}"
                if self.existing
                else "new invoice"
            ),
            "problem": self.problem,
        }


@dataclass
class Plan:
    todo: list[Work] = field(default_factory=list)
    skipped: list[SaleStatus] = field(default_factory=list)  # already processed
    repair_issue: list[str] = field(default_factory=list)  # processed docs still draft

    def summary(self) -> dict[str, int]:
        out = {"selected": len(self.todo) + len(self.skipped), "to_process": len(self.todo)}
        out["already_processed"] = len(self.skipped)
        for a in ACTIONS:
            out[a] = sum(1 for w in self.todo if w.action == a)
        out["reuse_invoice"] = sum(1 for w in self.todo if w.existing)
        out["known_problems"] = sum(1 for w in self.todo if w.problem)
        return out


def parse_action(text: str) -> Action:
    t = text.strip().lower().replace("_", " ").replace("-", " ")
    aliases: dict[str, Action] = {
        "email": "email",
        "e mail": "email",
        "mail": "email",
        "print": "print",
        "create": "create",
        "create only": "create",
        "none": "create",
    }
    if t not in aliases:
        raise SynvoiceError("bad_request", f"unknown action {text!r} (email, print or create)")
    return aliases[t]


def make_plan(
    rows: Sequence[SaleStatus],
    state: BillingState,
    default: Action,
    overrides: Mapping[str, Action] | None = None,
    existing: Mapping[str, ExistingDoc] | None = None,
) -> Plan:
    """``existing`` maps doc ids (str) to documents already on the device (voided
    ones included: a sale whose invoice was voided gets a replacement)."""
    overrides = dict(overrides or {})
    existing = existing or {}
    picked = {r.sale.sale_id for r in rows}
    stray = sorted(set(overrides) - picked)
    if stray:
        raise SynvoiceError(
            "not_found",
            f"sale {stray[0]} is not among the fetched sales"
            + (f" (and {len(stray) - 1} more)" if len(stray) > 1 else ""),
        )
    plan = Plan()
    for r in rows:
        sid = r.sale.sale_id
        if r.status == "Processed":
            plan.skipped.append(r)
            p = r.processed
            if p is not None and p.action != "create":
                doc = existing.get(str(p.doc_id))
                if doc is not None and doc.status == "draft":
                    plan.repair_issue.append(doc.doc_id)
            continue
        action = overrides.get(sid, default)
        doc_id = ids.invoice_doc_id(sid)
        for _ in range(1000):  # a voided invoice is replaced by a new one
            doc = existing.get(str(doc_id))
            if doc is None or doc.status != "void":
                break
            doc_id = ids.replacement_doc_id(sid, doc_id)
        problem = check_address(r.sale.customer.email) if action == "email" else None
        plan.todo.append(
            Work(
                sale=r.sale,
                action=action,
                doc_id=doc_id,
                status=r.status,
                existing=existing.get(str(doc_id)),
                base=state.last_outcome.get(sid),
                problem=problem,
            )
        )
    return plan
