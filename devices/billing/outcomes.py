"""The result of processing one sale, and the event that records it. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from devices.billing import ids
from devices.billing.plan import Work
from engine.events import Event, new_event
from engine.schema.billing import Channel, DeliveryFailed, FailedStep, InvoiceProcessed


@dataclass(frozen=True)
class Outcome:
    work: Work
    ok: bool
    number: int = 0
    doc_id: str | None = None
    pdf: str | None = None
    channel: Channel = "none"
    recipient: str | None = None
    step: FailedStep | None = None
    reason: str | None = None
    total: Decimal = Decimal(0)

    @property
    def status(self) -> str:
        return "Processed" if self.ok else "Failed"

    def as_dict(self) -> dict[str, Any]:
        return {
            "sale_id": self.work.sale.sale_id,
            "status": self.status,
            "action": self.work.action,
            "invoice_number": self.number or None,
            "doc_id": self.doc_id,
            "pdf": self.pdf,
            "channel": self.channel if self.ok else None,
            "recipient": self.recipient,
            "total": str(self.total),
            "currency": self.work.sale.currency,
            "failed_step": self.step,
            "reason": self.reason,
        }


def failed(work: Work, step: FailedStep, reason: str, **kw: Any) -> Outcome:
    return Outcome(work=work, ok=False, step=step, reason=reason[:1000], **kw)


def outcome_event(
    o: Outcome, *, device_id: str, user: str, scenario: str | None, seen_position: int = 0
) -> Event:
    w = o.work
    sid = w.sale.sale_id
    common: dict[str, Any] = {
        "device_id": device_id,
        "user": user,
        "device_seq": 0,
        "seen_position": seen_position,
    }
    if o.ok:
        assert o.doc_id is not None
        return new_event(
            "billing.invoice_processed",
            InvoiceProcessed(
                sale_id=sid,
                doc_id=o.doc_id,
                number=o.number,
                action=w.action,
                channel=o.channel,
                recipient=o.recipient,
                pdf=o.pdf,
                total=o.total,
                currency=w.sale.currency,
                scenario=scenario,
            ),
            event_id=ids.processed_event_id(sid),
            **common,
        )
    assert o.step is not None and o.reason is not None
    return new_event(
        "billing.delivery_failed",
        DeliveryFailed(
            sale_id=sid,
            doc_id=o.doc_id,
            number=o.number,
            action=w.action,
            step=o.step,
            reason=o.reason,
            pdf=o.pdf,
            scenario=scenario,
        ),
        event_id=ids.failed_event_id(sid, w.base, o.step, o.reason),
        **common,
    )
