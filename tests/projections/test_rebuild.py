"""Rebuild and replay over real log files (SQLite, no broker): chain, digest, until, CSV."""

from __future__ import annotations

import asyncio
import csv
import os
import shutil
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from engine.cli import main
from engine.events import Event
from engine.log import EventLog
from engine.schema.documents import Issued
from projections.rebuild import rebuild
from projections.store import ViewStore, lock_views
from tests.support.logs import Dev


async def write_log(path: Path, batches: list[list[Event]]) -> list[datetime]:
    """Append each batch as one engine commit; returns each batch's commit time."""
    log = await EventLog.open(path)
    times = []
    try:
        for batch in batches:
            sealed = log.seal(batch)
            await log.append(sealed)
            assert sealed[0][0].committed_at is not None
            times.append(sealed[0][0].committed_at)
            await asyncio.sleep(0.01)  # distinct commit times
    finally:
        await log.close()
    return times


def sample_batches() -> list[list[Event]]:
    office, tablet = Dev("dev-office"), Dev("dev-tablet")
    docs = [office.create(number=n, customer=f"Customer {n}") for n in (1, 2, 4)]
    dup = tablet.create(number=2, customer="Tamper-Me-7")
    later = [office.create(number=5), office.event("document.issued", Issued(), docs[0].doc_id)]  # type: ignore[arg-type]
    return [docs, [dup], later, [tablet.renumber(dup, 3)]]


@pytest.fixture
async def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "log.sqlite"
    await write_log(path, sample_batches())
    return path


def test_two_rebuilds_give_the_same_digest_and_views(log_file: Path, tmp_path: Path) -> None:
    r1 = rebuild(log_file, tmp_path / "a.sqlite")
    r2 = rebuild(log_file, tmp_path / "b.sqlite")
    assert r1.digest == r2.digest and r1.events == r1.head == 7 and r1.broken is None
    for name in ("a", "b"):
        store = ViewStore.open_readonly(tmp_path / f"{name}.sqlite")
        assert store.digest() == r1.digest
        assert store.checkpoint()[0] == 7
        store.close()
    # rebuilding over an existing file replaces it
    r3 = rebuild(log_file, tmp_path / "a.sqlite", until=3)
    assert r3.position == 3 and r3.digest != r1.digest


def test_views_content_after_rebuild(log_file: Path, tmp_path: Path) -> None:
    rebuild(log_file, tmp_path / "v.sqlite", until=4)
    store = ViewStore.open_readonly(tmp_path / "v.sqlite")
    try:
        dups = store.duplicates()
        assert sorted((d["number"], d["device_id"]) for d in dups) == [
            (2, "dev-office"),
            (2, "dev-tablet"),
        ]
        assert [(g["first"], g["last"]) for g in store.gaps()] == [(3, 3)]
    finally:
        store.close()
    rebuild(log_file, tmp_path / "v.sqlite")
    store = ViewStore.open_readonly(tmp_path / "v.sqlite")
    try:
        assert store.duplicates() == [] and store.gaps() == []
        [ren] = store.renumberings()
        assert (ren["old_number"], ren["new_number"], ren["position"]) == (2, 3, 7)
        docs = store.documents()
        assert [d["number"] for d in docs] == [1, 2, 3, 4, 5]
        assert docs[0]["status"] == "issued" and docs[0]["total"] == "360.00"
        hist = store.history(docs[2]["doc_id"])
        assert [h["type"] for h in hist] == ["document.created", "document.number_assigned"]
    finally:
        store.close()


def _tamper_sql(src: Path, dst: Path, position: int) -> None:
    shutil.copy(src, dst)
    conn = sqlite3.connect(dst)
    conn.execute("DROP TRIGGER events_no_update")
    body = bytearray(
        conn.execute("SELECT body FROM events WHERE position = ?", (position,)).fetchone()[0]
    )
    body[len(body) // 2] ^= 0x01
    conn.execute("UPDATE events SET body = ? WHERE position = ?", (bytes(body), position))
    conn.commit()
    conn.close()


def test_a_changed_byte_is_found_with_its_position(log_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    _tamper_sql(log_file, bad, 5)
    r = rebuild(bad, tmp_path / "v.sqlite")
    assert r.broken is not None and r.broken.position == 5
    assert r.position == 4  # the views stop before the altered record


def test_a_byte_edited_in_the_file_is_found_by_replay(
    log_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "edited.sqlite"
    raw = log_file.read_bytes()
    assert raw.count(b"Tamper-Me-7") == 1  # the 4th record's customer name
    bad.write_bytes(raw.replace(b"Tamper-Me-7", b"Tamper-Me-8"))
    assert main(["replay", str(bad), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hash chain broken at position 4" in err[0]


def test_a_deleted_record_is_reported_missing(log_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "holey.sqlite"
    shutil.copy(log_file, bad)
    conn = sqlite3.connect(bad)
    conn.execute("DROP TRIGGER events_no_delete")
    conn.execute("DELETE FROM events WHERE position = 3")
    conn.commit()
    conn.close()
    r = rebuild(bad, tmp_path / "v.sqlite")
    assert r.broken is not None and r.broken.position == 3 and "missing" in r.broken.reason


async def test_until_a_time_stops_at_the_last_commit_before_it(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    times = await write_log(path, sample_batches())
    cut = times[1] + (times[2] - times[1]) / 2
    r = rebuild(path, tmp_path / "v.sqlite", until=cut.isoformat())
    assert r.position == 4
    r_naive = rebuild(path, tmp_path / "w.sqlite", until=cut.replace(tzinfo=None).isoformat())
    assert r_naive.digest == r.digest  # a time without zone is UTC
    assert rebuild(path, tmp_path / "x.sqlite", until=times[0] - timedelta(days=1)).position == 0


def test_replay_json_and_csv(
    log_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    out_dir = tmp_path / "csv"
    assert main(["replay", str(log_file), "--json", "--csv", str(out_dir), "--until", "4"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["chain"]["ok"] is True and rep["position"] == 4
    assert {d["number"] for d in rep["duplicates"]} == {2}
    assert rep["gaps"][0]["first"] == 3
    assert rep["digest"] == rebuild(log_file, tmp_path / "v.sqlite", until=4).digest
    with (out_dir / "documents.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ["doc_id", "kind", "number"] and len(rows) == 5
    assert {p.name for p in out_dir.iterdir()} >= {
        "documents.csv",
        "history.csv",
        "duplicates.csv",
        "gaps.csv",
        "renumberings.csv",
        "conflicts.csv",
        "unassigned.csv",
    }


def test_replay_refuses_bad_input_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    assert main(["replay", str(junk)]) == 1
    assert main(["replay", str(tmp_path / "missing.sqlite")]) == 1
    assert main(["replay", str(junk), "--until", "yesterday-ish"]) == 1
    assert main(["replay"]) == 1
    errs = capsys.readouterr().err.strip().splitlines()
    assert len(errs) == 4 and all(e.startswith("synvoice: error: ") for e in errs)
    assert "--until" in errs[2]


async def test_rebuild_digest_is_the_files_digest_with_gaps_in_several_kinds(
    tmp_path: Path,
) -> None:
    d = Dev()
    evs = [
        d.create(number=1, kind="invoice"),
        d.create(number=3, kind="invoice"),
        d.create(number=1, kind="estimate"),
        d.create(number=3, kind="estimate"),
    ]
    log = await EventLog.open(tmp_path / "log.sqlite")
    await log.append(log.seal(evs))
    await log.close()
    r = rebuild(tmp_path / "log.sqlite", tmp_path / "views.sqlite")
    store = ViewStore.open_readonly(tmp_path / "views.sqlite")
    try:
        assert [g["kind"] for g in store.gaps()] == ["estimate", "invoice"]
        assert r.digest == store.digest()
    finally:
        store.close()


def test_replay_refuses_a_views_file_a_projection_is_writing(
    log_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    views = tmp_path / "views.sqlite"
    fd = lock_views(views)  # as the engine's live views worker holds it
    try:
        assert main(["replay", str(log_file), "--views", str(views), "--json"]) == 1
    finally:
        os.close(fd)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "being written by another projection" in err[0]
    assert not views.exists()
    assert main(["replay", str(log_file), "--views", str(views), "--json"]) == 0
