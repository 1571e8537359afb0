"""The billing view in the billing home: a small SQLite file rebuilt from the log.

``events`` keeps the billing events pulled from the engine (the fold's input,
so a command does not pull the whole log again); ``sales`` is the folded
result, rewritten after each sync for anyone who wants to query it with SQL.
``synvoice billing rebuild`` empties both and pulls from position 0.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import aiosqlite

from devices.billing.fold import BillingState
from devices.billing.remote import EngineLink
from engine import codec
from engine.events import parse_event
from engine.schema.billing import BILLING_TYPES

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS sales (
    sale_id TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    email TEXT,
    stage TEXT NOT NULL,
    close_date TEXT,
    approved INTEGER NOT NULL,
    currency TEXT NOT NULL,
    total TEXT NOT NULL,
    status TEXT NOT NULL,
    invoice_number INTEGER,
    doc_id TEXT,
    pdf TEXT,
    channel TEXT,
    reason TEXT
);
"""


class BillingStore:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, path: Path) -> BillingStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA busy_timeout=10000")
        await conn.executescript(SCHEMA)
        return cls(conn)

    async def close(self) -> None:
        await self.conn.close()

    async def cursor(self) -> int:
        async with self.conn.execute("SELECT value FROM meta WHERE key='cursor'") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def reset(self) -> None:
        await self.conn.execute("BEGIN IMMEDIATE")
        await self.conn.execute("DELETE FROM events")
        await self.conn.execute("DELETE FROM sales")
        await self.conn.execute("DELETE FROM meta WHERE key='cursor'")
        await self.conn.execute("COMMIT")

    async def _add(self, events: list[dict[str, Any]], cursor: int) -> None:
        rows = [
            (int(e["position"]), str(e["type"]), codec.pack(e))
            for e in events
            if e.get("type") in BILLING_TYPES
        ]
        await self.conn.execute("BEGIN IMMEDIATE")
        try:
            if rows:
                await self.conn.executemany(
                    "INSERT OR IGNORE INTO events(position, type, body) VALUES (?,?,?)", rows
                )
            await self.conn.execute(
                "INSERT INTO meta(key, value) VALUES ('cursor', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(cursor),),
            )
            await self.conn.execute("COMMIT")
        except BaseException:
            await self.conn.execute("ROLLBACK")
            raise

    async def sync(self, link: EngineLink, state: BillingState | None = None) -> int:
        """Pull what is new in the log (and fold it into ``state`` as it is stored);
        returns the log position synced to."""

        async def page(events: list[dict[str, Any]], cursor: int) -> None:
            await self._add(events, cursor)
            if state is not None:
                for e in events:
                    if e.get("type") in BILLING_TYPES:
                        state.apply(parse_event(e, stored=True))
                state.position = max(state.position, cursor)

        return await link.pull(await self.cursor(), page)

    async def state(self) -> BillingState:
        st = BillingState()
        async with self.conn.execute("SELECT body FROM events ORDER BY position") as cur:
            while rows := await cur.fetchmany(5000):
                for (body,) in rows:
                    st.apply(parse_event(codec.unpack(body), stored=True))
        st.position = max(st.position, await self.cursor())
        return st

    async def write_view(self, st: BillingState, today: date | None = None) -> None:
        rows = []
        for sid in st.sales:
            d = st.status_of(sid).as_dict()
            rows.append(
                (
                    sid,
                    d["customer"],
                    d["email"],
                    d["stage"],
                    d["close_date"],
                    int(d["approved"]),
                    d["currency"],
                    d["total"],
                    d["status"],
                    d["invoice_number"],
                    d["doc_id"],
                    d["pdf"],
                    d["channel"],
                    d["reason"],
                )
            )
        await self.conn.execute("BEGIN IMMEDIATE")
        try:
            await self.conn.execute("DELETE FROM sales")
            await self.conn.executemany(
                "INSERT INTO sales VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows
            )
            await self.conn.execute("COMMIT")
        except BaseException:
            await self.conn.execute("ROLLBACK")
            raise
