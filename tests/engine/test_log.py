"""The SQLite event log on real files: append, read, immutability, verification."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgpack
import pytest

from engine.events import Event, new_event
from engine.hashchain import GENESIS
from engine.log import SCHEMA, EventLog, Record, records_query, seal_events
from engine.schema.documents import DocumentCreated


def make(n: int) -> list:
    return [
        new_event(
            "document.created",
            DocumentCreated(number=i + 1),
            device_id="dev-1",
            user="alice",
            device_seq=i + 1,
            doc_id=uuid.uuid4(),
            kind="invoice",
        )
        for i in range(n)
    ]


async def test_append_read_and_reopen(tmp_path: Path) -> None:
    log = await EventLog.open(tmp_path / "log.sqlite")
    await log.append(log.seal(make(10)))
    await log.append(log.seal(make(5)))
    assert log.head == 15
    recs = await log.read(after=12, limit=100)
    assert [r.position for r in recs] == [13, 14, 15]
    assert recs[0].event().position == 13
    head, last = log.head, log.last_hash
    await log.close()
    again = await EventLog.open(tmp_path / "log.sqlite")
    assert (again.head, again.last_hash) == (head, last)
    assert await again.verify() == (15, None)
    await again.close()


async def test_rows_cannot_be_updated_or_deleted(tmp_path: Path) -> None:
    log = await EventLog.open(tmp_path / "log.sqlite")
    await log.append(log.seal(make(3)))
    await log.close()
    con = sqlite3.connect(tmp_path / "log.sqlite")
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        con.execute("UPDATE events SET body = x'00' WHERE position = 2")
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        con.execute("DELETE FROM events WHERE position = 2")
    con.close()


async def test_verify_names_the_altered_record(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    log = await EventLog.open(path)
    await log.append(log.seal(make(20)))
    await log.close()
    con = sqlite3.connect(path)
    con.execute("DROP TRIGGER events_no_update")  # what an attacker with file access can do
    body = con.execute("SELECT body FROM events WHERE position = 7").fetchone()[0]
    forged = body.replace(b"alice", b"mallo")
    con.execute("UPDATE events SET body = ? WHERE position = 7", (forged,))
    con.commit()
    con.close()
    log = await EventLog.open(path)
    checked, broken = await log.verify()
    assert checked == 6
    assert broken is not None and broken.position == 7
    await log.close()


async def test_verify_finds_a_record_forged_in_before_position_1(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    log = await EventLog.open(path)
    await log.append(log.seal(make(5)))
    await log.close()
    con = sqlite3.connect(path)
    con.execute(
        "INSERT INTO events VALUES (0, x'00', 'document.created', x'00', x'00')"
    )  # inserts are allowed by the triggers; the chain is what catches them
    con.commit()
    con.close()
    log = await EventLog.open(path)
    checked, broken = await log.verify()
    assert checked == 0
    assert broken is not None and broken.position == 1
    await log.close()


async def test_seal_refuses_out_of_order_append(tmp_path: Path) -> None:
    log = await EventLog.open(tmp_path / "log.sqlite")
    sealed = log.seal(make(2))
    await log.append(log.seal(make(1)))
    with pytest.raises(RuntimeError):
        await log.append(sealed)
    await log.close()


def _stored_form(events: list[Event], head: int, last_hash: bytes, at: datetime) -> list[Record]:
    """The stored format spelled out independently: the wire map plus the engine
    fields, packed by msgpack, each hash linking the previous one."""
    out: list[Record] = []
    prev = last_hash
    for pos, ev in enumerate(events, head + 1):
        wire = ev.to_wire()
        wire["position"] = pos
        wire["committed_at"] = at.isoformat()
        body = msgpack.packb(wire, use_bin_type=True)
        prev = hashlib.sha256(prev + body).digest()
        out.append(Record(pos, body, prev))
    return out


def test_seal_events_gives_the_stored_bytes() -> None:
    events = make(6)
    at = datetime(2024, 6, 1, 8, 30, 15, 123456, tzinfo=UTC)
    expected = _stored_form(events, 41, bytes(range(32)), at)
    sealed = seal_events(events, 41, bytes(range(32)), at)
    assert [r for _, r in sealed] == expected
    assert [ev for ev, _ in sealed] == events  # the same objects, updated in place
    assert [(ev.position, ev.committed_at) for ev in events] == [(p, at) for p in range(42, 48)]
    assert seal_events([], 41, GENESIS, at) == []


async def test_eventlog_seal_is_seal_events_at_its_head(tmp_path: Path) -> None:
    log = await EventLog.open(tmp_path / "log.sqlite")
    await log.append(log.seal(make(3)))
    events = make(4)
    copies = [ev.model_copy() for ev in events]
    sealed = log.seal(events)
    at = sealed[0][0].committed_at
    assert at is not None
    assert [r for _, r in sealed] == [
        r for _, r in seal_events(copies, log.head, log.last_hash, at)
    ]
    assert [r for _, r in sealed] == _stored_form(copies, 3, log.last_hash, at)
    await log.append(sealed)
    assert await log.verify() == (7, None)
    await log.close()


def test_records_query_bounds(tmp_path: Path) -> None:
    con = sqlite3.connect(tmp_path / "log.sqlite")
    con.executescript(SCHEMA)
    con.executemany(
        "INSERT INTO events(position, event_id, type, body, hash) VALUES (?,?,?,?,?)",
        [(p, bytes([p]), "t", bytes([p]), b"h") for p in range(0, 11)],
    )
    for after in (None, 0, 4):
        for upto in (None, 7):
            for limit in (None, 2):
                got = [p for p, _, _ in con.execute(*records_query(after, upto, limit))]
                want = [
                    p
                    for p in range(0, 11)
                    if (after is None or p > after) and (upto is None or p <= upto)
                ]
                assert got == want[:limit], (after, upto, limit)
    con.close()
