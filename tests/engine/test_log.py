"""The SQLite event log on real files: append, read, immutability, verification."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

from engine.events import DocumentCreated, new_event
from engine.log import EventLog


def make(n: int) -> list:  # type: ignore[type-arg]
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


async def test_seal_refuses_out_of_order_append(tmp_path: Path) -> None:
    log = await EventLog.open(tmp_path / "log.sqlite")
    sealed = log.seal(make(2))
    await log.append(log.seal(make(1)))
    with pytest.raises(RuntimeError):
        await log.append(sealed)
    await log.close()
