"""Sales in: import files (CSV/JSON) and the broker intake subject, idempotency, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import nats
import pytest

from devices.billing.intake import SUBJECT
from engine import codec
from engine.cli import main
from tests.support.billing import Billing, write_sales_csv
from tests.support.harness import wait_for


def one(sid: str = "I-1", **kw: Any) -> dict[str, Any]:
    return {
        "id": sid,
        "customer": "Initech",
        "email": "ap@initech.example",
        "stage": "Closed/Won",
        "close_date": "2011-11-03",
        "approved": "yes",
        "amount": "250",
        **kw,
    }


async def test_reimport_is_idempotent_and_changes_are_versions(
    billing: Billing, tmp_path: Path
) -> None:
    b = billing
    f = write_sales_csv(tmp_path / "a.csv", [one("A"), one("B")])
    assert await b.json("import", str(f)) == {"sales": 2, "recorded": 2, "unchanged": 0}
    head = b.engine.core.log.head
    assert await b.json("import", str(f)) == {"sales": 2, "recorded": 0, "unchanged": 2}
    assert b.engine.core.log.head == head

    # A -> A' -> A: the return to the first content is recorded, not lost as a duplicate
    write_sales_csv(tmp_path / "a2.csv", [one("A", amount="300"), one("B")])
    assert (await b.json("import", str(tmp_path / "a2.csv")))["recorded"] == 1
    assert (await b.json("import", str(f)))["recorded"] == 1
    sales = {s["sale_id"]: s for s in (await b.json("sales"))["sales"]}
    assert sales["A"]["total"] == "250.00"


async def test_csv_rows_with_same_id_are_lines_and_extra_columns_are_fields(
    billing: Billing, tmp_path: Path
) -> None:
    b = billing
    rows = [
        {
            **one("M"),
            "amount": "",
            "description": "Setup",
            "quantity": 1,
            "unit_price": 500,
            "tax_rate": 20,
            "region": "EMEA",
        },
        {"id": "M", "description": "Support", "quantity": 12, "unit_price": 50, "tax_rate": 20},
        {**one("N"), "region": "APAC"},
    ]
    await b.json("import", str(write_sales_csv(tmp_path / "m.csv", rows)))
    sales = {s["sale_id"]: s for s in (await b.json("sales"))["sales"]}
    assert sales["M"]["total"] == "1320.00"  # (500 + 600) * 1.2
    rc, _, err = await b.cli("scenario", "save", "emea", "--where", "region=emea")
    assert rc == 0, err
    got = await b.json("fetch", "emea")
    assert [s["sale_id"] for s in got["sales"]] == ["M"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.csv", "id,customer,stage,close_date,amount\nA,Acme,Won,2011-13-01,5\n", "line 2"),
        ("x.csv", "customer,stage\nAcme,Won\n", "no sale_id column"),
        ("x.csv", "id,customer,stage,amount\nA,Acme,Won,12abc\n", "amount '12abc' is not a number"),
        ("x.csv", "id,customer,stage,amount,approved\nA,Acme,Won,1,maybe\n", "not yes/no"),
        ("x.csv", "id,customer,stage,amount\nA,Acme,Won\n", "3 columns, the header has 4"),
        ("x.csv", "id,customer,stage\nA,Acme,Won\n", "no amount or lines"),
        ("x.csv", "id,customer,stage,amount\nA,,Won,5\n", "customer is missing"),
        ("x.csv", "id,customer,stage,amount\nA B,Acme,Won,5\n", "sale_id"),
        ("x.csv", "", "the file is empty"),
        ("x.json", '[{"id": "A"', "not valid JSON"),
        ("x.json", json.dumps([one("A"), one("A")]), "already given as sale 1"),
        ("x.json", json.dumps([one("A", email="a" * 300 + "@x.com")]), "customer.email"),
        ("x.json", json.dumps({"sales": []}), "no sales"),
        ("x.json", json.dumps(42), "expected a list of sales"),
        ("x.json", json.dumps([one("A", lines=[{"description": "x"}])]), "unit_price or amount"),
    ],
)
def test_bad_import_files_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: str, message: str
) -> None:
    """No engine needed: a bad file is refused before anything is sent."""
    f = tmp_path / name
    f.write_text(content)
    rc = main(["billing", "import", str(f), "--home", str(tmp_path / "nohome")])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("\n") == 1 and err.startswith("synvoice: error: ")
    assert message in err


def test_unreadable_import_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bin.csv"
    f.write_bytes(b"id,customer\n\xff\xfe\x00garbage")
    assert main(["billing", "import", str(f), "--home", str(tmp_path)]) == 1
    assert "not UTF-8" in capsys.readouterr().err
    assert main(["billing", "import", str(tmp_path / "missing.csv"), "--home", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "cannot read" in err and err.count("\n") == 1


async def test_a_bad_file_records_nothing(billing: Billing, tmp_path: Path) -> None:
    b = billing
    good = one("OK")
    f = tmp_path / "half.json"
    f.write_text(json.dumps([good, one("BAD", close_date="yesterday")]))
    head = b.engine.core.log.head
    rc, _, err = await b.cli("import", str(f))
    assert rc == 1 and "half.json sale 2 (BAD)" in err and "close_date" in err
    assert b.engine.core.log.head == head


async def test_broker_intake_records_sales_idempotently(billing: Billing) -> None:
    b = billing
    nc = await nats.connect(b.engine.url)
    try:
        body = json.dumps({"sales": [one("BR-1"), one("BR-2", amount="99.5")]}).encode()
        reply = json.loads((await nc.request(SUBJECT, body, timeout=10)).data)
        assert reply["ok"] is True and reply["recorded"] == 2 and reply["unchanged"] == 0
        assert {r["sale_id"] for r in reply["results"]} == {"BR-1", "BR-2"}
        again = json.loads((await nc.request(SUBJECT, body, timeout=10)).data)
        assert again["recorded"] == 0 and again["unchanged"] == 2

        # msgpack works too, and a changed sale is a new version
        packed = codec.pack(one("BR-1", amount="300"))
        r = msgpack.unpackb((await nc.request(SUBJECT, packed, timeout=10)).data)
        assert r["recorded"] == 1

        # a plain publish (no reply wanted) is recorded as well
        await nc.publish(SUBJECT, json.dumps(one("BR-3")).encode())
        await nc.flush()

        async def has_three() -> bool:
            return len((await b.json("sales"))["sales"]) == 3

        await wait_for(has_three)
        sales = {s["sale_id"]: s for s in (await b.json("sales"))["sales"]}
        assert sales["BR-1"]["total"] == "300.00"
        assert sales["BR-2"]["total"] == "99.50"
    finally:
        await nc.close()


@pytest.mark.parametrize(
    ("body", "code", "text"),
    [
        (b"", "bad_request", "empty message"),
        (b"{nope", "bad_request", "not valid JSON"),
        (json.dumps([{"id": "X"}]).encode(), "schema", "message sale 1 (X)"),
        (
            json.dumps({"id": "X", "customer": "C", "stage": "W", "amount": "NaN"}).encode(),
            "schema",
            "amount",
        ),
        (b"\xc1\xc1\xc1", "bad_request", "neither JSON nor msgpack"),
    ],
)
async def test_broker_intake_refuses_bad_messages(
    billing: Billing, body: bytes, code: str, text: str
) -> None:
    b = billing
    head = b.engine.core.log.head
    nc = await nats.connect(b.engine.url)
    try:
        raw = (await nc.request(SUBJECT, body, timeout=10)).data
        reply = json.loads(raw) if raw.startswith(b"{") else msgpack.unpackb(raw)
        assert reply["error"]["code"] == code and text in reply["error"]["message"]
        # the intake keeps serving after a bad message
        ok = json.loads((await nc.request(SUBJECT, json.dumps(one("GOOD")).encode(), 10)).data)
        assert ok["recorded"] == 1
    finally:
        await nc.close()
    assert b.engine.core.log.head == head + 1


async def test_intake_knows_sales_recorded_before_it_started(
    billing: Billing, tmp_path: Path
) -> None:
    """After a restart the intake rebuilds its index from the log: no duplicate versions."""
    b = billing
    f = tmp_path / "s.json"
    f.write_text(json.dumps([one("R-1")]))
    await b.cli("import", str(f))
    from devices.billing.intake import SalesIntake

    fresh = SalesIntake(b.engine.core)
    await fresh._load()
    assert "R-1" in fresh.known
    r = await fresh.handle(json.dumps(one("R-1")).encode())
    assert r["recorded"] == 0 and r["unchanged"] == 1
