"""The bounded rebuild (views written out and brought back) and the compact number
index end with exactly the views of the incremental path."""

from __future__ import annotations

import asyncio
import random
import shutil
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest

from engine.hashchain import link
from engine.log import EventLog
from engine.schema.common import Customer, Line
from engine.schema.documents import CustomerChanged, Issued, LinesChanged, Voided
from engine.schema.settings import UserModeSet
from engine.stored import StoredEventError, decode_stored
from projections.follow import Follower
from projections.model import Projector
from projections.rebuild import Builder, build_from_log, parse_until
from projections.store import ViewStore
from tests.support.logs import Dev, Log, distributed_log, engine_event


def busy_log(seed: int = 3, docs: int = 40) -> Log:
    """Documents edited long after creation, renumbered onto each other (duplicates,
    then cleared), issued, voided, edited after issue, from two devices."""
    rng = random.Random(seed)
    log = Log()
    a, b = Dev("dev-a", "alice"), Dev("dev-b", "bob")
    created = []
    for i in range(docs):
        dev = rng.choice((a, b))
        ev = dev.create(number=rng.choice((0, i + 1, i + 1, rng.randint(1, docs))))
        created.append(ev)
        log.append([ev])
        for _ in range(rng.randint(0, 3)):
            old = rng.choice(created)  # often a view written out long ago
            dev = rng.choice((a, b))
            doc, kind = old.doc_id, old.kind
            assert doc is not None and kind is not None
            pick = rng.randrange(5)
            if pick == 0:
                log.append([dev.renumber(old, rng.randint(1, docs + 5))])
            elif pick == 1:
                log.append([dev.event("document.issued", Issued(), doc, kind)])
            elif pick == 2:
                log.append([dev.event("document.voided", Voided(reason="typo"), doc, kind)])
            elif pick == 3:
                cust = CustomerChanged(customer=Customer(name=f"C{rng.randint(1, 9)}"))
                log.append([dev.event("document.customer_changed", cust, doc, kind)])
            else:
                lines = [Line(description="x", quantity=rng.randint(1, 5), unit_price=3)]
                log.append(
                    [dev.event("document.lines_changed", LinesChanged(lines=lines), doc, kind)]
                )
            dev.seen = log.head if rng.random() < 0.5 else dev.seen
    return log


def built(log: Log, path: Path, window: int, chunk: int) -> tuple[str, Builder]:
    store = ViewStore.create_fresh(path)
    b = Builder(store, window=window)
    for i in range(0, len(log.rows), chunk):
        b.feed(log.rows[i : i + chunk])
    digest = b.finish()
    assert ViewStore.digest(store) == digest  # the streamed digest is the file's
    store.close()
    return digest, b


async def test_bounded_builder_equals_in_memory_builder_and_follower(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import projections.rebuild as rebuild

    log = busy_log()
    whole, _ = built(log, tmp_path / "whole.sqlite", window=10**9, chunk=10**9)
    monkeypatch.setattr(rebuild, "SPILL_EVERY", 1)  # spill and write out after every chunk
    tight, b = built(log, tmp_path / "tight.sqlite", window=1, chunk=3)
    assert b.reloaded > 10  # views really went to the file and came back
    assert len(b.projector.docs) < 10
    assert tight == whole
    store = ViewStore.open(tmp_path / "follow.sqlite")
    f = await Follower.open(store)
    for i in range(0, len(log.rows), 7):
        await f.feed(log.rows[i : i + 7])
    await f.flush_gaps()
    assert store.digest() == whole
    store.close()


def test_number_index_duplicates_equal_a_plain_count() -> None:
    log = busy_log(seed=11)
    p = Projector()
    for pos, body, h in log.rows:
        p.apply(decode_stored(pos, body), h)
    expected: dict[tuple[str, int], list[str]] = {}
    for v in p.docs.values():
        if v.number:
            expected.setdefault((v.kind, v.number), []).append(v.doc_id)
    dups = [(k, "", n, sorted(d)) for (k, n), d in sorted(expected.items()) if len(d) > 1]
    assert dups and p.duplicates() == dups
    assert sorted({n for k, n in expected}) == list(p.numbers.numbers("invoice"))


async def write_rows(path: Path, log: Log) -> list[datetime]:
    """The test log's events as an engine log file, 50 a commit; the commit times."""
    elog = await EventLog.open(path)
    times = []
    try:
        for i in range(0, len(log.events), 50):
            sealed = elog.seal(log.events[i : i + 50])
            await elog.append(sealed)
            at = sealed[0][0].committed_at
            assert at is not None
            times.append(at)
            await asyncio.sleep(0.005)  # distinct commit times
    finally:
        await elog.close()
    return times


@pytest.fixture
async def busy_file(tmp_path: Path) -> Path:
    path = tmp_path / "log.sqlite"
    times = await write_rows(path, busy_log(seed=5, docs=60))
    (tmp_path / "cut.txt").write_text((times[1] + (times[2] - times[1]) / 2).isoformat())
    return path


@pytest.mark.parametrize("until", [None, 37, 150, "cut"])
def test_partitioned_rebuild_equals_one_process(
    busy_file: Path, tmp_path: Path, until: int | str | None
) -> None:
    upto: int | datetime | None
    if until == "cut":  # a commit time between the 2nd and 3rd commits
        upto = parse_until((tmp_path / "cut.txt").read_text())
        assert isinstance(upto, datetime)
    else:
        assert not isinstance(until, str)
        upto = until
    one = build_from_log(busy_file, tmp_path / "one.sqlite", upto, workers=1)
    two = build_from_log(busy_file, tmp_path / "two.sqlite", upto, workers=2)
    assert (two.digest, two.position, two.events) == (one.digest, one.position, one.events)
    store = ViewStore.open_readonly(tmp_path / "two.sqlite")
    assert store.digest() == one.digest
    assert until is not None or store.duplicates()  # the merge found cross-partition ones
    store.close()
    assert not list(tmp_path.glob("*.part*")) and not list(tmp_path.glob("*.rebuilding"))


def test_partitioned_rebuild_stops_at_a_changed_byte(busy_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    shutil.copy(busy_file, bad)
    conn = sqlite3.connect(bad)
    conn.execute("DROP TRIGGER events_no_update")
    body = bytearray(conn.execute("SELECT body FROM events WHERE position = 40").fetchone()[0])
    body[len(body) // 2] ^= 0x01
    conn.execute("UPDATE events SET body = ? WHERE position = 40", (bytes(body),))
    conn.commit()
    conn.close()
    one = build_from_log(bad, tmp_path / "one.sqlite", workers=1)
    two = build_from_log(bad, tmp_path / "two.sqlite", workers=2)
    assert two.broken is not None and two.broken.position == 40 and two.position == 39
    assert (two.digest, two.broken) == (one.digest, one.broken)


async def test_leaving_distributed_mode_rebuilds_alike_in_one_or_two_processes(
    tmp_path: Path,
) -> None:
    log = distributed_log(end=99)
    alice, bob = Dev("dev-a", "alice"), Dev("dev-b", "bob")
    log.append([alice.create(number=n) for n in (1, 3, 9)] + [bob.create(number=n) for n in (2, 8)])
    log.append([engine_event("settings.user_mode_set", UserModeSet(mode="centralized"))])
    log.append([alice.create(number=n) for n in (10, 12)])
    path = tmp_path / "log.sqlite"
    await write_rows(path, log)
    one = build_from_log(path, tmp_path / "one.sqlite", workers=1)
    two = build_from_log(path, tmp_path / "two.sqlite", workers=2)
    assert two.digest == one.digest
    store = ViewStore.open_readonly(tmp_path / "two.sqlite")
    assert {g["series"] for g in store.gaps()} == {"alice", "bob", "*"}
    store.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_progress_is_reported_up_to_the_head(busy_file: Path, tmp_path: Path, workers: int) -> None:
    seen: list[tuple[int, int]] = []
    r = build_from_log(
        busy_file, tmp_path / "v.sqlite", None, lambda d, t: seen.append((d, t)), workers
    )
    assert seen and seen[-1] == (r.head, r.head) and r.workers == workers
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_failed_rebuild_leaves_no_half_file(busy_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    shutil.copy(busy_file, bad)
    conn = sqlite3.connect(bad)
    conn.execute("DROP TRIGGER events_no_update")
    # a record that is not msgpack in a chain that links: only the decode fails
    prev = conn.execute("SELECT hash FROM events WHERE position = 29").fetchone()[0]
    rows = conn.execute("SELECT position, body FROM events WHERE position >= 30").fetchall()
    for pos, body in rows:
        body = b"\xc1" if pos == 30 else body
        prev = link(prev, body)
        conn.execute("UPDATE events SET body = ?, hash = ? WHERE position = ?", (body, prev, pos))
    conn.commit()
    conn.close()
    for workers in (1, 2):
        with pytest.raises(StoredEventError, match="position 30"):
            build_from_log(bad, tmp_path / "v.sqlite", workers=workers)
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("v.sqlite")]
