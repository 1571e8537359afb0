"""Documents out of a device on a real engine: seller profile, PDF, credit notes,
e-invoices and e-mail through a real SMTP server (aiosmtpd on loopback)."""

# ruff: noqa: RUF001

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from tests.support.billing import Smtp
from tests.support.devices import enroll_token
from tests.support.einvoice import all_errors
from tests.support.harness import EngineHarness
from tests.support.pdftext import pdf_text


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


async def test_seller_pdf_credit_note_einvoice_and_mail(
    tmp_path: Path,
    engine: EngineHarness,
    smtp: Smtp,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def cli(*argv: str) -> tuple[int, str, str]:
        return await asyncio.to_thread(_run, list(argv), capsys)

    admin = await engine.admin()
    home = str(tmp_path / "tablet")
    code, _, err = await cli(
        "device", "init", "--home", home, "--token", await enroll_token(admin, engine.url, "alice")
    )
    assert code == 0, err
    base = ["--home", home]

    code, out, _ = await cli("seller", "show", *base)
    assert code == 0 and "no seller profile" in out
    code, out, err = await cli("device", "pdf", *base, "invoice:1")
    assert code != 0
    # bad values are refused on one line, and nothing is recorded
    code, _, err = await cli("seller", "set", *base, "--legal-name", "X", "--iban", "not-an-iban")
    assert code != 0 and "iban" in err and len(err.strip().splitlines()) == 1
    code, _, err = await cli("seller", "set", *base, "--country", "DE")
    assert code != 0 and "legal name" in err
    code, out, err = await cli(
        "seller", "set", *base, "--legal-name", "Beispiel Beratung GmbH",
        "--address", "Hauptstraße 1\n10115 Berlin", "--country", "DE",
        "--vat-id", "DE123456788", "--iban", "DE89370400440532013000", "--bic", "COBADEFFXXX",
        "--payment-terms", "14 Tage netto", "--email", "rechnung@beispiel.test",
    )  # fmt: skip
    assert code == 0, err
    code, out, _ = await cli("seller", "show", *base, "--json")
    assert json.loads(out)["vat_id"] == "DE123456788"

    code, out, err = await cli(
        "device", "create", *base, "--customer", "Ελληνική Εταιρεία Α.Ε.", "--country", "GR",
        "--address", "Οδός Ερμού 10\nΑθήνα", "--email", "logistirio@example.test",
        "--line", "Συμβουλευτικές υπηρεσίες:2:150:24", "--line", "Ταξίδι:1:80:24",
        "--payment-terms", "Πληρωμή εντός 10 ημερών",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = await cli("device", "credit", *base, "invoice:1")
    assert code != 0 and "not issued" in err  # a draft is edited, not credited
    assert (await cli("device", "issue", *base, "invoice:1"))[0] == 0

    pdf = tmp_path / "inv.pdf"
    code, out, err = await cli("device", "pdf", *base, "invoice:1", "--out", str(pdf))
    assert code == 0, err
    text = pdf_text(pdf.read_bytes())
    for part in (
        "Invoice 1",
        "Ελληνική Εταιρεία Α.Ε.",
        "Συμβουλευτικές υπηρεσίες",
        "Beispiel Beratung GmbH",
        "VAT ID DE123456788",
        "IBAN DE89370400440532013000",
        "Payment terms: Πληρωμή εντός 10 ημερών",  # the document's own, not the seller's
    ):
        assert part in text, part

    code, out, err = await cli("device", "credit", *base, "invoice:1", "--line", "2", "--json")
    assert code == 0, err
    cn = json.loads(out)
    assert cn["kind"] == "credit_note" and cn["number"] == 1 and cn["total"] == "99.20"
    code, out, _ = await cli("device", "credit", *base, "invoice:1", "--line", "3")
    assert code != 0
    code, out, _ = await cli("device", "show", *base, "invoice:1")
    assert "credited by credit_note 1" in out
    code, out, _ = await cli("device", "show", *base, "credit_note:1", "--json")
    assert json.loads(out)["credits"] == cn["credits"]
    code, out, _ = await cli("device", "pdf", *base, "credit_note:1", "--out", str(pdf))
    assert "Credit note for invoice 1" in pdf_text(pdf.read_bytes())
    # an e-invoice is of an issued document: a draft may still change
    code, out, err = await cli("device", "einvoice", *base, "credit_note:1", "--format", "ubl")
    assert code == 1 and "credit note 1 is a draft: issue it first" in err, err
    assert (await cli("device", "issue", *base, "credit_note:1"))[0] == 0

    # the auditor's replay of the log lists the credit note with its invoice
    log = str(engine.server.config.data_dir / "log.sqlite")
    code, out, err = await cli("replay", log, "--json", "--no-progress")
    assert code == 0, err
    (row,) = json.loads(out)["credit_notes"]
    assert (row["number"], row["invoice_number"], row["total"]) == (1, 1, "99.20")

    for ref in ("invoice:1", "credit_note:1"):
        for fmt in ("ubl", "facturx"):
            out_file = tmp_path / f"{ref.replace(':', '-')}.{fmt}"
            code, out, err = await cli(
                "device", "einvoice", *base, ref, "--format", fmt, "--out", str(out_file)
            )
            assert code == 0, err
            data = out_file.read_bytes()
            if fmt == "facturx":
                import io

                from pypdf import PdfReader

                data = PdfReader(io.BytesIO(data)).attachments["factur-x.xml"][0]
            assert all_errors(data) == [], (ref, fmt)
    code, _, err = await cli("device", "create", *base, "--kind", "quote", "--customer", "Hooli")
    code, _, err = await cli("device", "einvoice", *base, "quote:1", "--format", "ubl")
    assert code != 0 and "not an invoice or credit note" in err
    code, _, err = await cli("device", "pdf", *base, "quote:1", "--out", str(pdf))
    assert code == 0 and "Quote 1" in pdf_text(pdf.read_bytes())

    monkeypatch.setenv("SYNVOICE_SMTP_HOST", smtp.host)
    monkeypatch.setenv("SYNVOICE_SMTP_PORT", str(smtp.port))
    code, out, err = await cli("device", "send", *base, "invoice:1")
    assert code == 0 and "logistirio@example.test" in out, err
    msg = smtp.inbox.parsed()[-1]
    assert "Invoice 1" in str(msg["Subject"]) or "=?utf-8?" in str(msg["Subject"])
    parts = [p for p in msg.walk() if p.get_content_type() == "application/pdf"]
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes) and "Ελληνική" in pdf_text(payload)
    code, _, err = await cli("device", "send", *base, "credit_note:1", "--to", "bad address")
    assert code != 0 and "invalid e-mail" in err

    # another device of the business prints the same seller after its sync
    home2 = str(tmp_path / "laptop")
    await cli(
        "device", "init", "--home", home2, "--token", await enroll_token(admin, engine.url, "bob")
    )
    code, out, _ = await cli("seller", "show", "--home", home2, "--json")
    assert json.loads(out)["legal_name"] == "Beispiel Beratung GmbH"


async def test_credit_notes_never_credit_a_line_twice(
    tmp_path: Path, engine: EngineHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    async def cli(*argv: str) -> tuple[int, str, str]:
        return await asyncio.to_thread(_run, list(argv), capsys)

    admin = await engine.admin()
    home = str(tmp_path / "tablet")
    token = await enroll_token(admin, engine.url, "alice")
    assert (await cli("device", "init", "--home", home, "--token", token))[0] == 0
    base = ["--home", home]

    async def count() -> int:
        code, out, err = await cli("device", "list", *base, "--json")
        assert code == 0, err
        return len(json.loads(out))

    async def credit(*argv: str) -> dict[str, Any]:
        code, out, err = await cli("device", "credit", *base, *argv, "--json")
        assert code == 0, err
        doc: dict[str, Any] = json.loads(out)
        return doc

    async def refused(*argv: str) -> str:
        before = await count()
        code, out, err = await cli("device", "credit", *base, *argv)
        assert code != 0 and out == "" and len(err.strip().splitlines()) == 1, (code, out, err)
        assert await count() == before  # nothing created
        return err

    for _ in range(2):
        code, _, err = await cli(
            "device", "create", *base, "--customer", "Acme",
            "--line", "Consulting:2:150:20", "--line", "Travel:1:80", "--line", "Hotel:2:90",
        )  # fmt: skip
        assert code == 0, err
    for inv in ("invoice:1", "invoice:2"):
        assert (await cli("device", "issue", *base, inv))[0] == 0

    # invoice 1: partial, then the rest without --line credits only what remains
    assert len((await credit("invoice:1", "--line", "2"))["lines"]) == 1
    rest = await credit("invoice:1")
    assert [ln["description"] for ln in rest["lines"]] == ["Consulting", "Hotel"]
    err = await refused("invoice:1")
    assert "invoice 1 is fully credited by credit notes 1, 2" in err
    err = await refused("invoice:1", "--line", "2")
    assert "line 2 of invoice 1 is already credited by credit note 1" in err
    code, out, _ = await cli("device", "show", *base, "invoice:1")
    assert "credited: lines 1, 2, 3 of 3 (fully)" in out

    # a void credit note frees its lines
    assert (await cli("device", "void", *base, "credit_note:1"))[0] == 0
    code, out, _ = await cli("device", "show", *base, "invoice:1", "--json")
    assert json.loads(out)["credited_lines"] == [1, 3]
    again = await credit("invoice:1", "--line", "2")
    assert again["number"] == 3 and "forced" not in str(again["notes"])

    # --force credits a line again and says so in the credit note
    forced = await credit("invoice:1", "--line", "2", "--force")
    assert forced["notes"] == (
        "Credit note for invoice 1 (line 2 credited before by credit note 3)"
    )
    code, out, _ = await cli("device", "show", *base, "invoice:1")
    assert "credited by credit_note 1" in out and "[void]" in out
    assert "credited: lines 1, 2, 3 of 3 (fully)" in out

    # invoice 2: partial then the chosen rest, then full twice is refused
    await credit("invoice:2", "--line", "1")
    await credit("invoice:2", "--line", "2", "--line", "3")
    err = await refused("invoice:2")
    assert "invoice 2 is fully credited by credit notes 5, 6" in err
    err = await refused("invoice:2", "--line", "3", "--line", "1")
    assert "lines 1, 3 of invoice 2 are already credited by credit notes 5, 6" in err
    full = await credit("invoice:2", "--force")
    assert len(full["lines"]) == 3
    assert "(credited before by credit notes 5, 6)" in str(full["notes"])

    # The auditor's replay names the credit notes that credit a line twice.
    assert (await cli("device", "sync", *base))[0] == 0
    log = str(engine.server.config.data_dir / "log.sqlite")
    code, out, err = await cli("replay", log, "--json", "--no-progress")
    assert code == 0, err
    over = {r["number"]: r["over_lines"] for r in json.loads(out)["credit_notes"]}
    assert over == {1: 0, 2: 0, 3: 0, 4: 1, 5: 0, 6: 0, 7: 3}
    code, out, err = await cli("replay", log, "--no-progress")
    assert code == 0 and "2 credit note(s) credit lines their invoice has no more" in out


async def test_pdf_einvoice_and_credit_note_carry_display_numbers(
    tmp_path: Path,
    engine: EngineHarness,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a number pattern, the PDF, the e-invoice's ID, the credit note's
    reference to its invoice and the default file names all say INV-YYYY-0001."""
    import datetime as dt
    import io
    from zoneinfo import ZoneInfo

    from pypdf import PdfReader

    async def cli(*argv: str) -> tuple[int, str, str]:
        return await asyncio.to_thread(_run, list(argv), capsys)

    admin = await engine.admin()
    await admin.set_numbering(kind="invoice", pattern="INV-{YYYY}-{SEQ:4}", tz="Europe/Berlin")
    await admin.set_numbering(kind="credit_note", pattern="CN/{YYYY}/{SEQ}", tz="Europe/Berlin")
    year = dt.datetime.now(ZoneInfo("Europe/Berlin")).year
    inv_no, cn_no = f"INV-{year}-0001", f"CN/{year}/1"
    home = str(tmp_path / "tablet")
    token = await enroll_token(admin, engine.url, "alice")
    assert (await cli("device", "init", "--home", home, "--token", token))[0] == 0
    base = ["--home", home]
    code, _, err = await cli(
        "seller", "set", *base, "--legal-name", "Beispiel GmbH", "--address", "Hauptstr. 1",
        "--country", "DE", "--vat-id", "DE123456788", "--email", "rechnung@beispiel.test",
    )  # fmt: skip
    assert code == 0, err
    code, _, err = await cli(
        "device", "create", *base, "--customer", "Acme", "--country", "DE",
        "--address", "Weg 2", "--line", "Beratung:2:150:19",
    )  # fmt: skip
    assert code == 0, err
    assert (await cli("device", "issue", *base, "invoice:1"))[0] == 0
    code, out, err = await cli("device", "credit", *base, "invoice:1", "--json")
    assert code == 0, err
    assert json.loads(out)["notes"] == f"Credit note for invoice {inv_no}"
    assert (await cli("device", "issue", *base, "credit_note:1"))[0] == 0

    # The number as printed names the document on the command line too.
    for ref in (inv_no, f"invoice:{inv_no}", cn_no):
        code, out, err = await cli("device", "show", *base, ref, "--json")
        assert code == 0 and json.loads(out)["display_number"] in (inv_no, cn_no), err
    code, _, err = await cli("device", "show", *base, f"INV-{year}-0002")
    assert code != 0 and "is not a document" in err

    monkeypatch.chdir(tmp_path)  # the default file names land here
    for ref in ("invoice:1", "credit_note:1"):
        assert (await cli("device", "einvoice", *base, ref, "--format", "ubl"))[0] == 0
        assert (await cli("device", "pdf", *base, ref))[0] == 0
    ubl = (tmp_path / f"invoice-INV-{year}-0001.xml").read_bytes()
    assert f"<cbc:ID>{inv_no}</cbc:ID>".encode() in ubl and all_errors(ubl) == []
    cn = (tmp_path / f"credit-note-CN-{year}-1.xml").read_bytes()
    assert f"<cbc:ID>{cn_no}</cbc:ID>".encode() in cn
    linked = cn.split(b"<cac:InvoiceDocumentReference>", 1)[1].split(b"</cbc:ID>", 1)[0]
    assert linked.strip().endswith(f"<cbc:ID>{inv_no}".encode())
    text = pdf_text((tmp_path / f"credit-note-CN-{year}-1.pdf").read_bytes())
    assert f"Credit note for invoice {inv_no}" in text
    assert f"Credited by credit note {cn_no}" in pdf_text(
        (tmp_path / f"invoice-INV-{year}-0001.pdf").read_bytes()
    )
    code, _, err = await cli("device", "einvoice", *base, "invoice:1", "--format", "facturx")
    assert code == 0, err
    fx = PdfReader(io.BytesIO((tmp_path / f"invoice-INV-{year}-0001.facturx.pdf").read_bytes()))
    xml = fx.attachments["factur-x.xml"][0]
    assert f"<ram:ID>{inv_no}</ram:ID>".encode() in xml and all_errors(xml) == []
