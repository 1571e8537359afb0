"""``synvoice device …`` and ``synvoice demo``: real engine, real broker, main([...])."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from devices.cli import parse_line
from engine.cli import CliError, main
from engine.enrollment import Enrollment
from tests.support.devices import enroll_token
from tests.support.harness import EngineHarness

# A device whose broker is never there: everything works offline.
NOWHERE = Enrollment("nats://127.0.0.1:9", "dev-offline1", b"k" * 32, "alice", 1).token()


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("synvoice: error:"), err
    return lines[0]


def test_bad_input_gives_one_line_and_non_zero_exit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(tmp_path / "dev")
    # no device there yet
    code, _, err = run(["device", "list", "--home", home], capsys)
    assert code == 1 and "no device in" in one_line_error(err)
    # a damaged token
    code, _, err = run(["device", "init", "--home", home, "--token", "svd1.garbage"], capsys)
    assert code == 1 and "token" in one_line_error(err)
    code, _, err = run(["device", "init", "--home", home, "--token", "hello"], capsys)
    assert code == 1 and "not an enrollment token" in one_line_error(err)

    code, _, err = run(
        ["device", "init", "--home", home, "--token", NOWHERE, "--timeout", "0.2"], capsys
    )
    assert code == 0 and "offline" in err
    off = ["--home", home, "--offline"]
    cases: list[tuple[list[str], str]] = [
        (["device", "create", *off, "--line", "Widget"], "description:quantity:price"),
        (["device", "create", *off, "--line", "Widget:two:3"], "not a number"),
        (["device", "create", *off, "--line", ":1:3"], "--line"),
        (["device", "create", *off, "--customer", ""], "--customer"),
        (["device", "create", *off, "--email", "a@b.c"], "need --customer"),
        (["device", "create", *off, "--issue-date", "yesterday"], "date"),
        (["device", "create", *off, "--number", "0"], "number"),
        (["device", "create", *off, "--currency", "dollars"], "currency"),
        (["device", "show", *off, "nope!"], "not a document"),
        (["device", "show", *off, "invoice:7"], "no document"),
        (["device", "show", *off, "12345678-1234-1234-1234-123456789abc"], "no document"),
        (["device", "renumber", *off, "abcd", "5"], "no document"),
        # trying the (absent) broker first changes nothing: still one line
        (["device", "renumber", "--home", home, "--timeout", "0.2", "abcd", "5"], "no document"),
        (["device", "issue", "--home", home, "--timeout", "0.2", "quote:1"], "no document"),
        (["device", "edit", *off, "abcd"], "nothing to change"),
        (["device", "sync", "--home", home, "--timeout", "0.2"], "cannot reach"),
        (["device", "assign", *off], "offline"),
    ]
    for argv, expected in cases:
        code, out, err = run(argv, capsys)
        assert code == 1, (argv, out, err)
        assert expected in one_line_error(err), (argv, err)
    # too big for one event: refused before anything is made (or a number taken)
    big = ["--line", "x" * 1000 + ":1:1"] * 80
    code, _, err = run(["device", "create", *off, "--customer", "Big", *big], capsys)
    assert code == 1 and "an event may hold" in one_line_error(err)
    # a damaged store, a home that is a file: one line, and the command ends
    (tmp_path / "dev" / "device.sqlite").write_bytes(b"garbage" * 1000)
    for suffix in ("-wal", "-shm"):
        (tmp_path / "dev" / f"device.sqlite{suffix}").unlink(missing_ok=True)
    code, _, err = run(["device", "list", *off], capsys)
    assert code == 1 and "not a device store" in one_line_error(err)
    (tmp_path / "plain-file").write_text("x")
    code, _, err = run(
        ["device", "init", "--home", str(tmp_path / "plain-file"), "--token", NOWHERE], capsys
    )
    assert code == 1
    one_line_error(err)
    # argparse-level mistakes: one line too, exit status 2
    for argv in (
        ["device", "create", *off, "--kind", "receipt"],
        ["device", "renumber", *off, "abcd", "five"],
        ["device", "frobnicate"],
        ["device"],
    ):
        code, _, err = run(argv, capsys)
        assert code == 2, argv
        one_line_error(err)


def test_offline_cli_works_locally(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path / "dev")
    assert run(["device", "init", "--home", home, "--token", NOWHERE, "--offline"], capsys)[0] == 0
    base = ["--home", home, "--timeout", "0.2"]
    code, out, err = run(
        ["device", "create", *base, "--customer", "Acme", "--line", "Consulting: March:2:150:20"],
        capsys,
    )
    assert code == 0 and "number 0" in out and "offline" in err
    code, out, _ = run(["device", "list", *base, "--json"], capsys)
    docs = json.loads(out)
    assert len(docs) == 1 and docs[0]["number"] == 0 and docs[0]["total"] == "360.00"
    assert docs[0]["lines"][0]["description"] == "Consulting: March"
    doc = docs[0]["doc_id"]
    code, out, _ = run(["device", "renumber", *base, doc[:8], "17"], capsys)
    assert code == 0 and "invoice 17" in out
    code, out, _ = run(["device", "status", *base, "--json"], capsys)
    st = json.loads(out)
    assert st["online"] is False and st["pending"] == 2 and st["documents"] == 1


def test_parse_line() -> None:
    ln = parse_line("Design work:1.5:80")
    assert (ln.description, str(ln.quantity), str(ln.unit_price), str(ln.tax_rate)) == (
        "Design work",
        "1.5",
        "80",
        "0",
    )
    assert str(parse_line("Hosting:12:9.99:20%").tax_rate) == "20"
    assert parse_line("Room 4:2:3").description == "Room 4"
    with pytest.raises(CliError):
        parse_line("a:b")


def cli_of(capsys: pytest.CaptureFixture[str]) -> Callable[..., Awaitable[tuple[int, str, str]]]:
    """``await cli(*argv)`` from a test's event loop."""

    async def cli(*argv: str) -> tuple[int, str, str]:
        # main() runs its own event loop: give it a thread
        return await asyncio.to_thread(run, list(argv), capsys)

    return cli


async def test_cli_against_a_real_engine(
    tmp_path: Path, engine: EngineHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = await engine.admin()
    token = await enroll_token(admin, engine.url, "alice")
    home = str(tmp_path / "laptop")
    cli = cli_of(capsys)

    code, out, _ = await cli("device", "init", "--home", home, "--token", token)
    assert code == 0 and "alice" in out
    base = ["--home", home]
    code, out, err = await cli(
        "device", "create", *base, "--customer", "Acme", "--email", "ap@acme.test",
        "--line", "Consulting:2:150:20", "--line", "Travel:1:80",
    )  # fmt: skip
    assert code == 0 and "invoice 1 created" in out, err
    code, out, _ = await cli("device", "create", *base, "--kind", "quote", "--customer", "Hooli")
    assert code == 0 and "quote 1 created" in out
    code, out, _ = await cli("device", "convert", *base, "quote:1")
    assert code == 0 and "invoice 2" in out
    code, out, _ = await cli("device", "edit", *base, "invoice:1", "--due-date", "2026-12-31")
    assert code == 0
    # a customer field given alone changes only that field
    code, out, _ = await cli("device", "edit", *base, "invoice:1", "--address", "1 Main St")
    code, out, _ = await cli("device", "show", *base, "invoice:1", "--json")
    c = json.loads(out)["customer"]
    assert (c["name"], c["email"], c["address"]) == ("Acme", "ap@acme.test", "1 Main St")
    code, out, _ = await cli("device", "issue", *base, "invoice:1")
    assert code == 0 and "issued" in out
    code, out, _ = await cli("device", "void", *base, "invoice:2", "--reason", "duplicate")
    assert code == 0 and "void" in out
    code, out, _ = await cli("device", "show", *base, "invoice:1", "--json")
    shown = json.loads(out)
    assert shown["status"] == "issued" and shown["due_date"] == "2026-12-31"
    assert shown["total"] == "440.00"
    assert [e["type"] for e in shown["history"]] == [
        "document.number_assigned",  # the server's number, logged when handed out
        "document.created",
        "document.dates_changed",
        "document.customer_changed",
        "document.issued",
    ]
    code, out, _ = await cli("device", "show", *base, "invoice:1")
    assert code == 0 and "Consulting" in out and "total 440.00 USD" in out
    code, out, _ = await cli("device", "sync", *base, "--json")
    r = json.loads(out)
    assert r["pending"] == 0 and r["position"] == r["head"]
    code, out, _ = await cli("device", "list", *base)
    assert code == 0 and "Acme" in out and "Hooli" in out
    code, out, _ = await cli("device", "status", *base, "--json")
    st = json.loads(out)
    assert (st["user"], st["mode"], st["documents"], st["pending"]) == (
        "alice",
        "centralized",
        3,
        0,
    )
    assert st["last_sync"] is not None
    code, out, _ = await cli("device", "duplicates", *base, "--json")
    assert json.loads(out) == []
    code, out, _ = await cli("device", "conflicts", *base, "--json")
    assert json.loads(out) == []
    code, out, _ = await cli("device", "assign", *base, "--json")
    assert json.loads(out) == {}
    # the engine has everything
    page = await admin.pull(after=0)
    assert sum(1 for e in page.events if e["type"] == "document.created") == 3
    # a second init on the same home is refused
    code, _, err = await cli("device", "init", "--home", home, "--token", token)
    assert code == 1 and "already holds a device" in one_line_error(err)


def test_demo_plays_the_seed_stories(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["demo", "--json"], capsys)
    assert code == 0, err
    stories = {s["mode"]: s for s in json.loads(out)["stories"]}

    single = stories["single"]
    assert [d["number"] for d in single["documents"]] == [1, 2, 3, 4]
    assert [(d["kind"], d["number"]) for d in single["duplicates_found"]] == [("invoice", 3)]
    assert single["duplicates"] == []

    central = stories["centralized"]
    by_user = sorted((d["number"], d["user"]) for d in central["documents"])
    assert by_user == [(1, "alice"), (2, "bob"), (3, "alice"), (4, "carol")]
    assert any("number 0" in s or ": 0" in s for s in central["steps"])
    assert central["duplicates"] == []

    dist = stories["distributed"]
    mine: dict[str, list[int]] = {}
    for d in dist["documents"]:
        mine.setdefault(d["user"], []).append(d["number"])
    assert {u: sorted(n) for u, n in mine.items()} == {
        "ann": [1, 4, 7],
        "ben": [2, 5, 8],
        "cat": [3, 6, 9],
    }
    assert dist["duplicates"] == []


async def test_a_refused_device_still_reads_locally_and_says_why(
    tmp_path: Path, engine: EngineHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = await engine.admin()
    token = await enroll_token(admin, engine.url, "alice")
    home = str(tmp_path / "laptop")
    cli = cli_of(capsys)
    assert (await cli("device", "init", "--home", home, "--token", token))[0] == 0
    device_id = json.loads((await cli("device", "status", "--home", home, "--json"))[1])[
        "device_id"
    ]
    await admin.revoke(device_id)
    # reading goes on, with a note saying why it did not sync
    code, out, err = await cli("device", "list", "--home", home, "--json")
    assert code == 0 and json.loads(out) == [] and "refused" in err and "revoked" in err, err
    code, out, _ = await cli("device", "status", "--home", home, "--json")
    assert code == 0 and json.loads(out)["device_id"] == device_id
    # making a document needs a server number the engine refuses it: say so
    code, _, err = await cli("device", "create", "--home", home, "--customer", "Acme")
    assert code == 1 and "revoked" in one_line_error(err)
    # an explicit sync says it failed
    code, _, err = await cli("device", "sync", "--home", home)
    assert code == 1 and "revoked" in one_line_error(err)
