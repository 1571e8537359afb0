"""A typed or renumbered number already used in its series is refused unless
forced, and a forced one is recorded as what it is (``forced: true``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import SynvoiceError
from tests.devices.test_cli import NOWHERE, one_line_error, run
from tests.support.devices import Agents


async def test_device_api_refuses_a_used_number_unless_forced(agents: Agents) -> None:
    admin = await agents._admin()
    await admin.set_mode("single")
    dev = await agents.new("ann")
    a = await dev.create("invoice", "A")
    b = await dev.create("invoice", "B")
    assert (a.number, b.number) == (1, 2)
    pending = dev.pending_count()

    with pytest.raises(SynvoiceError, match=r"invoice 1 is already used by .* \(A, ann, draft\)"):
        await dev.create("invoice", "C", number=1)
    with pytest.raises(SynvoiceError, match="already used") as refused:
        await dev.set_number(b.doc_id, 1)
    assert refused.value.code == "duplicate"
    assert dev.pending_count() == pending  # nothing recorded
    # Its own number, another kind's series, a free number: no warning.
    assert (await dev.set_number(a.doc_id, 1)).number == 1
    assert (await dev.create("quote", "Q", number=1)).number == 1
    assert (await dev.set_number(b.doc_id, 7)).number == 7

    forced = await dev.create("invoice", "C", number=1, force=True)
    moved = await dev.set_number(b.doc_id, 1, force=True)
    await dev.sync()
    created = [e for e in await dev.history(forced.doc_id) if e.type == "document.created"]
    assert created[0].data["forced"] is True
    assigned = [e for e in await dev.history(moved.doc_id) if e.type == "document.number_assigned"]
    assert [e.data.get("forced", False) for e in assigned] == [False, True]
    # Unforced events keep their canonical form (no "forced" key).
    plain = [e for e in await dev.history(a.doc_id) if e.type == "document.created"]
    assert "forced" not in plain[0].data
    [dup] = dev.duplicates()
    assert (dup["number"], len(dup["documents"])) == (1, 3)


def test_cli_warns_and_forces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path / "dev")
    assert run(["device", "init", "--home", home, "--token", NOWHERE, "--offline"], capsys)[0] == 0
    base = ["--home", home, "--offline"]
    code, out, _ = run(["device", "create", *base, "--customer", "Acme", "--number", "17"], capsys)
    assert code == 0 and "invoice 17" in out
    code, _, err = run(["device", "create", *base, "--customer", "Bee", "--number", "17"], capsys)
    line = one_line_error(err)
    assert code == 1 and "invoice 17 is already used" in line and "--force" in line
    code, out, err = run(
        ["device", "create", *base, "--customer", "Bee", "--number", "17", "--force"], capsys
    )
    assert code == 0 and "duplicate you forced" in err
    code, out, _ = run(["device", "create", *base, "--customer", "Cat", "--json"], capsys)
    doc = json.loads(out)["doc_id"]
    code, _, err = run(["device", "renumber", *base, doc[:8], "17"], capsys)
    assert code == 1 and "already used" in one_line_error(err)
    code, out, _ = run(["device", "renumber", *base, doc[:8], "17", "--force"], capsys)
    assert code == 0 and "invoice 17" in out
    code, out, _ = run(["device", "duplicates", *base, "--json"], capsys)
    assert [len(d["documents"]) for d in json.loads(out)] == [3]
    code, out, _ = run(["device", "status", *base], capsys)
    assert code == 0 and "invoice series" in out and "from the server" in out
    code, out, _ = run(["device", "list", *base, "--json"], capsys)
    assert sorted(d["display_number"] for d in json.loads(out)) == ["17", "17", "17"]
