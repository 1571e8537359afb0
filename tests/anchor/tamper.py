"""Alterations an attacker with the log file makes, done with sqlite3 directly.

Each drops the immutability triggers first (as an attacker would) and keeps the
hash chain internally consistent where the attack needs it (recomputed hashes,
a forged append with a valid link), so only the anchors can tell.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

from engine import codec
from engine.hashchain import link


def _open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS events_no_update")
    conn.execute("DROP TRIGGER IF EXISTS events_no_delete")
    return conn


def cut_tail(path: Path, keep: int) -> None:
    with _open(path) as conn:
        conn.execute("DELETE FROM events WHERE position > ?", (keep,))
    conn.close()


def rewrite(path: Path, position: int, edit: Any) -> None:
    """Edit the event at ``position`` (``edit(wire)`` changes it) and recompute
    every later hash, so the chain verifies on its own."""
    conn = _open(path)
    try:
        rows = conn.execute(
            "SELECT position, body FROM events WHERE position >= ? ORDER BY position",
            (position,),
        ).fetchall()
        prev_row = conn.execute(
            "SELECT hash FROM events WHERE position < ? ORDER BY position DESC LIMIT 1",
            (position,),
        ).fetchone()
        prev = bytes(prev_row[0]) if prev_row else bytes(32)
        for pos, body in rows:
            body = bytes(body)
            if pos == position:
                wire = codec.unpack(body)
                edit(wire)
                body = codec.pack(wire)
            prev = link(prev, body)
            conn.execute(
                "UPDATE events SET body = ?, hash = ? WHERE position = ?", (body, prev, pos)
            )
    finally:
        conn.close()


def forge_append(path: Path) -> int:
    """Append a copy of the last event (new id, next position) with a valid link."""
    conn = _open(path)
    try:
        pos, body, h = conn.execute(
            "SELECT position, body, hash FROM events ORDER BY position DESC LIMIT 1"
        ).fetchone()
        wire = codec.unpack(bytes(body))
        wire["event_id"] = str(uuid.uuid4())
        wire["position"] = pos + 1
        new = codec.pack(wire)
        conn.execute(
            "INSERT INTO events(position, event_id, type, body, hash) VALUES (?,?,?,?,?)",
            (pos + 1, uuid.UUID(wire["event_id"]).bytes, wire["type"], new, link(bytes(h), new)),
        )
        return int(pos) + 1
    finally:
        conn.close()


def edit_snapshot(path: Path, edit: Any) -> None:
    """Edit the state snapshot in ``meta`` (keeping its seal's other fields)."""
    conn = _open(path)
    try:
        raw = conn.execute("SELECT value FROM meta WHERE key = 'state'").fetchone()[0]
        outer = codec.unpack(bytes(raw))
        snap = codec.unpack(outer["sealed"])
        edit(snap)
        outer["sealed"] = codec.pack(snap)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'state'", (codec.pack(outer),))
    finally:
        conn.close()
