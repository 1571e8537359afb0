"""The seed's example end to end: 30 Closed/Won sales of November 2011, approved,
e-mailed as invoices with PDFs, over a real engine, broker and SMTP server."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path
from typing import Any

from pypdf import PdfReader

from engine.events import parse_event
from tests.support.billing import Billing, write_sales_csv


def seed_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i in range(30):  # the thirty the scenario picks
        rows.append(
            {
                "sale_id": f"OPP-{i:03d}",
                "customer": f"Customer {i}",
                "email": f"ap{i}@customer{i}.example",
                "stage": "Closed/Won",
                "close_date": f"2011-11-{1 + i % 30:02d}",
                "approved": "yes",
                "description": "Consulting days",
                "quantity": 1 + i % 3,
                "unit_price": "1000.00",
                "tax_rate": "22",
                "region": "EMEA" if i % 2 else "LATAM",
            }
        )
    others = [
        ("LOST-1", "Closed/Lost", "2011-11-10", "yes"),
        ("OPEN-1", "Negotiation", "2011-11-11", "yes"),
        ("NOTAPP-1", "Closed/Won", "2011-11-12", "no"),
        ("NOTAPP-2", "Closed/Won", "2011-11-13", ""),
        ("OCT-31", "Closed/Won", "2011-10-31", "yes"),
        ("DEC-01", "Closed/Won", "2011-12-01", "yes"),
        ("NODATE", "Closed/Won", "", "yes"),
    ]
    for sid, stage, closed, approved in others:
        rows.append(
            {
                "sale_id": sid,
                "customer": f"Other {sid}",
                "email": f"x@{sid.lower()}.example",
                "stage": stage,
                "close_date": closed,
                "approved": approved,
                "description": "Other",
                "quantity": 1,
                "unit_price": "10",
                "tax_rate": "0",
            }
        )
    return rows


async def pull_all(b: Billing) -> list[Any]:
    dev = await b.engine.device("auditor")
    out = []
    after = 0
    while True:
        page = await dev.client.pull(after)
        out += [parse_event(e, stored=True) for e in page.events]
        if not page.more:
            return out
        after = out[-1].position or 0


def pdf_text(path: str) -> str:
    return "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(Path(path).read_bytes())).pages)


async def test_seed_example_thirty_invoices_emailed(billing: Billing, tmp_path: Path) -> None:
    b = billing
    csv = write_sales_csv(tmp_path / "opportunities.csv", seed_rows())
    r = await b.json("import", str(csv))
    assert r == {"sales": 37, "recorded": 37, "unchanged": 0}

    rc, out, err = await b.cli(
        "scenario",
        "save",
        "November 2011",
        "--stage",
        "Closed/Won",
        "--period",
        "2011-11",
        "--approved",
        "--description",
        "Closed/Won in November 2011, approved for invoicing",
    )
    assert rc == 0, err
    listed = await b.json("scenario", "list")
    assert [s["name"] for s in listed["scenarios"]] == ["November 2011"]
    assert listed["scenarios"][0]["close_range"] == ["2011-11-01", "2011-11-30"]

    fetched = await b.json("fetch", "November 2011")
    assert len(fetched["sales"]) == 30
    assert {s["sale_id"] for s in fetched["sales"]} == {f"OPP-{i:03d}" for i in range(30)}
    assert {s["status"] for s in fetched["sales"]} == {"Not Done"}
    assert fetched["counts"] == {"Not Done": 30, "Processed": 0, "Failed": 0}

    rc, out, err = await b.cli("process", "November 2011", "--action", "email", *b.smtp_args())
    assert rc == 0, err
    assert "30 processed, 0 failed" in out

    assert b.smtp is not None
    mails = b.smtp.inbox.parsed()
    assert len(mails) == 30
    fetched = await b.json("fetch", "November 2011")
    rows = {s["sale_id"]: s for s in fetched["sales"]}
    assert {s["status"] for s in rows.values()} == {"Processed"}
    assert {s["channel"] for s in rows.values()} == {"email"}
    numbers = sorted(s["invoice_number"] for s in rows.values())
    assert numbers == list(range(1, 31))  # centralized mode: the server's numbers, no gaps

    by_recipient = {m["To"]: m for m in mails}
    for i in range(30):
        row = rows[f"OPP-{i:03d}"]
        qty = 1 + i % 3
        total = Decimal(1000 * qty) * Decimal("1.22")
        assert row["total"] == f"{total:.2f}"
        text = pdf_text(row["pdf"])
        assert f"Invoice {row['invoice_number']}" in text
        assert f"Total USD {total:,.2f}" in text
        assert f"Customer {i}" in text
        mail = by_recipient[f"ap{i}@customer{i}.example"]
        assert str(row["invoice_number"]) in mail["Subject"]
        (att,) = [p for p in mail.walk() if p.get_content_type() == "application/pdf"]
        payload = att.get_payload(decode=True)
        assert isinstance(payload, bytes)
        assert payload == Path(row["pdf"]).read_bytes()

    # the invoices are ordinary documents on the log, issued once delivered
    events = await pull_all(b)
    created = [e for e in events if e.type == "document.created"]
    assert len(created) == 30 and {e.kind for e in created} == {"invoice"}
    issued = {str(e.doc_id) for e in events if e.type == "document.issued"}
    assert issued == {s["doc_id"] for s in rows.values()}
    assert sum(1 for e in events if e.type == "billing.invoice_processed") == 30

    # running the scenario again invoices nothing twice
    rc, out, err = await b.cli("process", "November 2011", *b.smtp_args())
    assert rc == 0, err
    assert "0 processed, 0 failed, 30 already processed" in out
    assert len(b.smtp.inbox.messages) == 30
    events2 = await pull_all(b)
    assert sum(1 for e in events2 if e.type == "document.created") == 30
    assert sum(1 for e in events2 if e.type.startswith("billing.invoice")) == 30

    # the other sales are untouched
    sales = await b.json("sales")
    other = [s for s in sales["sales"] if not s["sale_id"].startswith("OPP-")]
    assert len(other) == 7 and {s["status"] for s in other} == {"Not Done"}
