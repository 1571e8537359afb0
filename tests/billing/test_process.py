"""Processing runs against a real engine, broker and SMTP server: failures, retries,
dry runs, print, per-sale actions and a crash between invoice and outcome."""

from __future__ import annotations

import json
import stat
import sys
from datetime import date
from pathlib import Path
from typing import Any

from devices.billing import service
from devices.billing.config import load_config
from devices.billing.home import BillingHome
from devices.billing.invoicer import AgentBackend
from devices.billing.plan import Work
from engine.events import parse_event
from engine.natsproc import free_port
from tests.support.billing import REFUSED_DOMAIN, Billing


def sale(sid: str, email: str | None = None, **kw: Any) -> dict[str, Any]:
    return {
        "sale_id": sid,
        "customer": {"name": f"Customer {sid}", "email": email or f"ap@{sid.lower()}.example"},
        "stage": "Closed/Won",
        "close_date": "2011-11-15",
        "approved": True,
        "amount": "100.00",
        "tax_rate": "10",
        **kw,
    }


async def setup(b: Billing, tmp: Path, sales: list[dict[str, Any]], name: str = "s.json") -> None:
    f = tmp / name
    f.write_text(json.dumps(sales))
    rc, _, err = await b.cli("import", str(f))
    assert rc == 0, err
    if (await b.json("scenario", "list"))["scenarios"]:
        return
    rc, _, err = await b.cli(
        "scenario", "save", "nov", "--stage", "Closed/Won", "--period", "2011-11", "--approved"
    )
    assert rc == 0, err


async def statuses(b: Billing) -> dict[str, dict[str, Any]]:
    return {s["sale_id"]: s for s in (await b.json("fetch", "nov"))["sales"]}


async def doc_count(b: Billing) -> int:
    st = await (await b.engine.admin()).status()
    return int(st.documents)


async def test_bad_address_fails_alone_and_retry_after_fix(
    billing: Billing, tmp_path: Path
) -> None:
    b = billing
    sales = [sale(f"S{i}") for i in range(5)] + [sale("BAD", email="bob@@example")]
    await setup(b, tmp_path, sales)
    r = await b.json("process", "nov", *b.smtp_args())
    assert r["summary"]["processed"] == 5 and r["summary"]["failed"] == 1
    st = await statuses(b)
    assert st["BAD"]["status"] == "Failed"
    assert st["BAD"]["failed_step"] == "validate"
    assert "invalid e-mail address" in st["BAD"]["reason"]
    assert st["BAD"]["invoice_number"] is None  # no invoice made for a sale that cannot go out
    assert await doc_count(b) == 5

    # fix the address (re-import the sale) and re-run: only the failed one is retried
    fixed = [*sales[:5], sale("BAD", email="bob@example.org")]
    await setup(b, tmp_path, fixed, "fixed.json")
    r = await b.json("process", "nov", *b.smtp_args())
    assert r["summary"] == {**r["summary"], "processed": 1, "failed": 0, "already_processed": 5}
    assert [o["sale_id"] for o in r["outcomes"]] == ["BAD"]
    st = await statuses(b)
    assert {s["status"] for s in st.values()} == {"Processed"}
    assert await doc_count(b) == 6
    assert b.smtp is not None
    assert sorted(m[1][0] for m in b.smtp.inbox.messages)[0] == "ap@s0.example"
    assert "bob@example.org" in [m[1][0] for m in b.smtp.inbox.messages]


async def test_refused_recipient_reuses_the_same_invoice(billing: Billing, tmp_path: Path) -> None:
    b = billing
    await setup(b, tmp_path, [sale("A"), sale("R", email=f"ap@{REFUSED_DOMAIN}")])
    rc, _out, err = await b.cli("process", "nov", *b.smtp_args())
    assert rc == 2 and "1 sale(s) failed" in err
    st = await statuses(b)
    assert st["R"]["status"] == "Failed" and st["R"]["failed_step"] == "deliver"
    assert "550" in st["R"]["reason"]
    failed_number = (await b.json("sales", "--status", "Failed"))["sales"][0]
    assert failed_number["sale_id"] == "R"

    await setup(b, tmp_path, [sale("A"), sale("R", email="ap@r.example")], "fixed.json")
    r = await b.json("process", "nov", *b.smtp_args())
    assert r["summary"]["invoices_created"] == 0 and r["summary"]["invoices_reused"] == 1
    assert r["outcomes"][0]["status"] == "Processed"
    assert await doc_count(b) == 2  # the failed delivery's invoice was reused, not remade


async def test_smtp_down_marks_failed_with_reason_then_retry(
    billing: Billing, tmp_path: Path
) -> None:
    b = billing
    await setup(b, tmp_path, [sale(f"S{i}") for i in range(3)])
    dead = str(free_port())  # nothing listens there
    rc, _out, _err = await b.cli("process", "nov", "--smtp-host", "127.0.0.1", "--smtp-port", dead)
    assert rc == 2
    st = await statuses(b)
    assert {s["status"] for s in st.values()} == {"Failed"}
    assert all("unreachable" in s["reason"] and dead in s["reason"] for s in st.values())
    assert await doc_count(b) == 3  # the invoices exist; only delivery failed

    r = await b.json("process", "nov", *b.smtp_args())
    assert r["summary"]["processed"] == 3 and r["summary"]["invoices_reused"] == 3
    assert sorted(o["invoice_number"] for o in r["outcomes"]) == [1, 2, 3]
    assert await doc_count(b) == 3


async def test_dry_run_changes_nothing(billing: Billing, tmp_path: Path) -> None:
    b = billing
    await setup(b, tmp_path, [sale("A"), sale("B", email="nope")])
    head = b.engine.core.log.head
    r = await b.json("process", "nov", "--dry-run", "--set", "A=print", *b.smtp_args())
    assert r["dry_run"] is True
    assert r["summary"]["to_process"] == 2 and r["summary"]["print"] == 1
    by = {s["sale_id"]: s for s in r["sales"]}
    assert by["A"]["action"] == "print" and by["A"]["invoice"] == "new invoice"
    assert "invalid e-mail address" in by["B"]["problem"]
    rc, out, _ = await b.cli("process", "nov", "--dry-run")
    assert rc == 0 and "dry run" in out
    assert b.engine.core.log.head == head
    assert b.smtp is not None and b.smtp.inbox.messages == []
    assert not list((b.home / "pdfs").glob("*.pdf"))
    assert {s["status"] for s in (await statuses(b)).values()} == {"Not Done"}


async def test_actions_per_sale_print_and_create_only(billing: Billing, tmp_path: Path) -> None:
    b = billing
    await setup(b, tmp_path, [sale("E"), sale("P"), sale("C"), sale("X")])
    printed = tmp_path / "printed"
    printed.mkdir()
    script = tmp_path / "fakelp"
    script.write_text(
        f"#!{sys.executable}\nimport shutil, sys\nshutil.copy(sys.argv[1], {str(printed)!r})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    actions = tmp_path / "actions.csv"
    actions.write_text("sale_id,action\nC,Create Only\nX,print\n")
    r = await b.json(
        "process",
        "nov",
        "--set",
        "P=print",
        "--actions",
        str(actions),
        "--print-command",
        f"{script} {{file}}",
        *b.smtp_args(),
    )
    by = {o["sale_id"]: o for o in r["outcomes"]}
    assert {k: v["channel"] for k, v in by.items()} == {
        "E": "email",
        "P": "print",
        "C": "none",
        "X": "print",
    }
    assert sorted(p.name for p in printed.iterdir()) == sorted(
        Path(by[s]["pdf"]).name for s in ("P", "X")
    )
    assert b.smtp is not None and len(b.smtp.inbox.messages) == 1
    st = await statuses(b)
    assert st["C"]["status"] == "Processed" and st["C"]["pdf"]
    # delivered invoices are issued; "create only" leaves a draft
    dev = await b.engine.device("auditor")
    page = await dev.client.pull(0)
    issued = {e["doc_id"] for e in page.events if e["type"] == "document.issued"}
    assert st["C"]["doc_id"] not in issued
    assert {st[s]["doc_id"] for s in "EPX"} <= issued


async def test_print_to_spool_and_failing_print_command(billing: Billing, tmp_path: Path) -> None:
    b = billing
    await setup(b, tmp_path, [sale("P1"), sale("P2")])
    r = await b.json("process", "nov", "--action", "print", "--set", "P2=create")
    assert r["summary"]["processed"] == 2
    by = {o["sale_id"]: o for o in r["outcomes"]}
    assert (by["P1"]["channel"], by["P2"]["channel"]) == ("print", "none")
    spool = [p.name for p in (b.home / "spool").iterdir()]
    assert spool == [Path(by["P1"]["pdf"]).name]  # no half-written temp files left

    await setup(b, tmp_path, [sale("P3")], "more.json")
    rc, _, _err = await b.cli("process", "nov", "--action", "print", "--print-command", "false")
    assert rc == 2
    st = await statuses(b)
    assert st["P3"]["status"] == "Failed" and "print command exited 1" in st["P3"]["reason"]
    rc, _, _err = await b.cli(
        "process", "nov", "--action", "print", "--print-command", "/no/such/lp"
    )
    assert rc == 2
    st = await statuses(b)
    assert "print command not found" in st["P3"]["reason"]
    # A command that cannot be run at all (not executable) fails this sale only.
    lp = tmp_path / "lp"
    lp.write_text("#!/bin/sh\n")
    lp.chmod(0o600)
    rc, _, _err = await b.cli("process", "nov", "--action", "print", "--print-command", str(lp))
    assert rc == 2
    st = await statuses(b)
    assert st["P3"]["status"] == "Failed" and "PermissionError" in st["P3"]["reason"]


async def test_crash_between_invoice_and_outcome_never_invoices_twice(
    billing: Billing, tmp_path: Path
) -> None:
    """Invoices made (and pushed) but the run died before recording outcomes."""
    b = billing
    await setup(b, tmp_path, [sale(f"S{i}") for i in range(4)])
    home = BillingHome(b.home)
    async with service.session(home) as s:
        rows = service.fetch(s.state, service.get_scenario(s.state, "nov").rules, date.today())
        backend = await AgentBackend.open(home.agent_home)
        try:
            plan = await service.make_run_plan(s, backend, rows, "email", None)
            await backend.begin()
            made = [await backend.create(w, date.today(), date.today()) for w in plan.todo[:3]]
            await backend.number_and_push([v.doc_id for v in made])
        finally:
            await backend.close()  # "crash": no outcome recorded
    assert await doc_count(b) == 3
    assert {s["status"] for s in (await statuses(b)).values()} == {"Not Done"}

    r = await b.json("process", "nov", *b.smtp_args())
    assert r["summary"]["processed"] == 4
    assert r["summary"]["invoices_reused"] == 3 and r["summary"]["invoices_created"] == 1
    assert await doc_count(b) == 4
    assert sorted(o["invoice_number"] for o in r["outcomes"]) == [1, 2, 3, 4]


async def test_crash_before_push_reuses_the_local_invoice(billing: Billing, tmp_path: Path) -> None:
    """Invoice stored in the agent's outbox only (never pushed) when the run died."""
    b = billing
    await setup(b, tmp_path, [sale("S0")])
    home = BillingHome(b.home)
    async with service.session(home) as s:
        rows = service.fetch(s.state, service.get_scenario(s.state, "nov").rules, date.today())
        backend = await AgentBackend.open(home.agent_home)
        try:
            plan = await service.make_run_plan(s, backend, rows, "email", None)
            w: Work = plan.todo[0]
            await backend.begin()
            await backend.create(w, date.today(), date.today())
        finally:
            await backend.close()
    assert await doc_count(b) == 0
    r = await b.json("process", "nov", *b.smtp_args())
    assert r["summary"]["invoices_reused"] == 1 and r["summary"]["processed"] == 1
    assert await doc_count(b) == 1


async def test_outcomes_are_rebuilt_from_the_log(billing: Billing, tmp_path: Path) -> None:
    b = billing
    await setup(b, tmp_path, [sale("A"), sale("B", email="bad")])
    await b.json("process", "nov", *b.smtp_args())
    before = await b.json("sales")
    (b.home / "billing.sqlite").unlink()
    for extra in ("billing.sqlite-wal", "billing.sqlite-shm"):
        (b.home / extra).unlink(missing_ok=True)
    rc, out, _ = await b.cli("rebuild")
    assert rc == 0 and "2 sales" in out
    assert await b.json("sales") == before
    assert await b.json("sales", "--offline") == before


async def test_config_precedence(tmp_path: Path, monkeypatch: Any) -> None:
    home = tmp_path / "h"
    home.mkdir()
    (home / "billing.toml").write_text(
        '[smtp]\nhost = "file.example"\nport = 2525\nstarttls = true\n'
        '[print]\ncommand = "lp {file}"\n'
    )
    cfg = load_config(home, env={})
    assert (cfg.smtp_host, cfg.smtp_port, cfg.smtp_starttls) == ("file.example", 2525, True)
    assert cfg.print_command == "lp {file}"
    cfg = load_config(home, env={"SYNVOICE_SMTP_HOST": "env.example", "SYNVOICE_SMTP_SSL": "yes"})
    assert cfg.smtp_host == "env.example" and cfg.smtp_ssl is True and cfg.smtp_port == 2525
    cfg = load_config(
        home, env={"SYNVOICE_SMTP_HOST": "env.example"}, overrides={"smtp_host": "flag.example"}
    )
    assert cfg.smtp_host == "flag.example"
    assert cfg.public()["smtp_password"] is None
    cfg = load_config(home, env={"SYNVOICE_SMTP_PASSWORD": "s3cret"})
    assert cfg.public()["smtp_password"] == "***"


async def test_event_log_records_outcomes(billing: Billing, tmp_path: Path) -> None:
    b = billing
    await setup(b, tmp_path, [sale("A"), sale("B", email="bad")])
    await b.json("process", "nov", *b.smtp_args())
    dev = await b.engine.device("auditor")
    page = await dev.client.pull(0)
    evs = [parse_event(e, stored=True) for e in page.events]
    done = [e for e in evs if e.type == "billing.invoice_processed"]
    fail = [e for e in evs if e.type == "billing.delivery_failed"]
    assert [e.data["sale_id"] for e in done] == ["A"]
    assert done[0].data["channel"] == "email" and done[0].data["number"] == 1
    assert [e.data["sale_id"] for e in fail] == ["B"] and fail[0].data["step"] == "validate"


async def test_pdf_worker_processes(billing: Billing, tmp_path: Path) -> None:
    """Large runs render in worker processes; forced here for a small one."""
    b = billing
    cfg_text = (
        (b.home / "billing.toml").read_text().replace("pdf_processes = -1", "pdf_processes = 2")
    )
    (b.home / "billing.toml").write_text(cfg_text)
    sales = [sale(f"W{i}") for i in range(4)] + [sale("Z", email=f"z@{REFUSED_DOMAIN}")]
    await setup(b, tmp_path, sales)
    r = await b.json("process", "nov", *b.smtp_args())
    assert r["summary"]["processed"] == 4 and r["summary"]["failed"] == 1
    assert b.smtp is not None and len(b.smtp.inbox.messages) == 4
    for o in r["outcomes"]:
        assert Path(o["pdf"]).read_bytes().startswith(b"%PDF")


async def test_a_voided_invoice_is_replaced(billing: Billing, tmp_path: Path) -> None:
    """A failed sale whose invoice someone voided gets a new invoice on the re-run."""
    b = billing
    await setup(b, tmp_path, [sale("V", email=f"ap@{REFUSED_DOMAIN}")])
    await b.json("process", "nov", *b.smtp_args())
    first = (await statuses(b))["V"]
    assert first["status"] == "Failed"
    agent = await AgentBackend.open(BillingHome(b.home).agent_home)
    try:
        (inv,) = await agent.all_invoices()
        await agent.agent.void(inv.doc_id, "wrong customer")
        await agent.sync()
    finally:
        await agent.close()
    await setup(b, tmp_path, [sale("V", email="ap@v.example")], "fixed.json")
    r = await b.json("process", "nov", *b.smtp_args())
    assert r["summary"]["invoices_created"] == 1 and r["summary"]["processed"] == 1
    assert r["outcomes"][0]["doc_id"] != inv.doc_id
    assert r["outcomes"][0]["invoice_number"] == 2
    assert await doc_count(b) == 2


async def test_init_is_repeatable_but_refuses_another_device(
    billing: Billing, tmp_path: Path
) -> None:
    b = billing
    rc, out, _ = await b.cli("init", "--token", b.token)
    assert rc == 0 and "billing home ready" in out
    # owner-only: the home holds the device secret and perhaps the SMTP password
    for p in (b.home, b.home / "billing.toml", b.home / "device.token"):
        assert p.stat().st_mode & 0o077 == 0, p
    other = await b.engine.device("bob")
    assert other.enrollment is not None
    rc, _, err = await b.cli("init", "--token", other.enrollment.token())
    assert rc == 1 and "is set up for device" in err
    rc, _, err = await b.cli("init", "--token", "svd1.garbage")
    assert rc == 1 and "damaged" in err
