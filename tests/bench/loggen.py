"""A fast generator of large, realistic event logs (1M events in tens of seconds).

Documents of every kind from several devices and users, interleaved as people
work: created (mostly with a server number, some offline with 0 and a later
number_assigned), lines/customer/dates changed, issued, voided, quotes converted
into invoices. The engine's settings events (mode, users, devices) come first.

Speed: building ``Event`` models costs ~30 µs each, too slow for a million. The
generator makes the stored wire maps directly (in ``Event.to_wire`` key order,
payloads from real ``model_dump`` templates), seals them with the engine's own
``engine.log.seal_wire`` (position, committed_at, msgpack, hash chain) and writes
them with the engine's schema and INSERT. The smoke test checks the result is
a log the engine accepts: chain verifies, every event parses and re-encodes to
the same bytes, and the stored state snapshot equals a fold of the log.
"""

from __future__ import annotations

import queue
import random
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from engine import codec
from engine.auth import new_secret
from engine.enginekey import load_or_create_key, snapshot_key
from engine.events import new_event
from engine.hashchain import GENESIS
from engine.log import SCHEMA, seal_wire
from engine.schema.common import Customer, Line
from engine.schema.documents import DocumentCreated
from engine.schema.settings import DeviceEnrolled, UserEnrolled, UserModeSet
from engine.state import EngineState, seal_snapshot

INSERT = "INSERT INTO events(position, event_id, type, body, hash) VALUES (?,?,?,?,?)"

# Fixed kinds (not KINDS): a generated log stays the same when a kind is added.
_KINDS = ("invoice", "quote", "estimate")
_KIND_WEIGHTS = (0.6, 0.25, 0.15)
_SCHEMA_VERSION = {"document.created": 2}
_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID_V4 = (0x4000 << 64) | (0x8000 << 48)


@dataclass(frozen=True)
class LogSpec:
    events: int
    devices: int = 8
    users: int = 4
    seed: int = 7
    mark_published: bool = True  # as if the engine had published it all already


@dataclass
class Generated:
    path: Path
    head: int
    documents: int
    device_ids: list[str]
    data_bytes: int


def _templates(rng: random.Random) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    customers = [
        Customer(
            name=f"Customer {i} {rng.choice(['Ltd', 'GmbH', 'SARL', 'Inc', 'BV'])}",
            email=f"billing{i}@customer{i}.example",
            address=f"{rng.randint(1, 200)} Market Street, Springfield",
            tax_id=f"VAT{rng.randint(10**8, 10**9)}" if i % 3 else None,
        ).model_dump(mode="json")
        for i in range(40)
    ]
    items = ["Consulting", "Design work", "Hosting (monthly)", "Support hours", "Licence", "Travel"]
    line_sets = [
        [
            Line(
                description=rng.choice(items),
                quantity=Decimal(rng.randint(1, 20)),
                unit_price=Decimal(rng.randint(500, 50000)) / 100,
                tax_rate=Decimal(rng.choice([0, 7, 10, 20])),
            ).model_dump(mode="json")
            for _ in range(rng.randint(1, 6))
        ]
        for _ in range(40)
    ]
    return customers, line_sets


class _Script:
    """The remaining events of one document, emitted one at a time."""

    def __init__(
        self, doc_id: str, kind: str, device: int, steps: list[tuple[str, dict[str, Any]]]
    ) -> None:
        self.doc_id = doc_id
        self.kind = kind
        self.device = device
        self.steps = steps


class DocumentEvents:
    """Pure generator of document event maps (unsealed), deterministic for a seed."""

    def __init__(self, spec: LogSpec, device_ids: list[str], users: list[str]) -> None:
        self.rng = random.Random(spec.seed)
        self.device_ids = device_ids
        self.users = users
        self.customers, self.line_sets = _templates(self.rng)
        created = DocumentCreated(
            customer=Customer.model_validate(self.customers[0]),
            lines=[Line.model_validate(x) for x in self.line_sets[0]],
        ).model_dump(mode="json")
        self.created_keys = list(created)  # model_dump order: the canonical form
        self.seq = [0] * len(device_ids)
        self.pending: list[_Script] = []  # invoices converted from quotes, not created yet
        self.state: EngineState | None = None  # numbers come from the engine's counters
        self.documents = 0

    def _uuid(self) -> str:
        # uuid.UUID(int=..., version=4) without its per-call validation cost.
        x = (self.rng.getrandbits(128) & _UUID_CLEAR) | _UUID_V4
        h = f"{x:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def _new_script(self) -> _Script:
        if self.pending:
            return self.pending.pop()
        kind = self.rng.choices(_KINDS, _KIND_WEIGHTS)[0]
        return self._script(kind, self.rng.randrange(len(self.device_ids)), None)

    def _script(self, kind: str, device: int, converted_from: str | None) -> _Script:
        rng = self.rng
        online = rng.random() < 0.8  # offline documents get a number later
        data = dict.fromkeys(self.created_keys)
        data.update(
            number=-1 if online else 0,  # -1: take the next server number when emitted
            number_source="server" if online else "device",
            customer=rng.choice(self.customers),
            lines=rng.choice(self.line_sets),
            currency="USD",
        )
        day = date(2024, 1, 1) + timedelta(days=rng.randrange(700))
        data["issue_date"] = day.isoformat()
        data["due_date"] = (day + timedelta(days=30)).isoformat()
        data["converted_from"] = converted_from
        steps: list[tuple[str, dict[str, Any]]] = [("document.created", data)]
        if not online:
            steps.append(
                ("document.number_assigned", {"number": -1, "source": "server", "previous": None})
            )
        if rng.random() < 0.5:
            steps.append(("document.lines_changed", {"lines": rng.choice(self.line_sets)}))
        if rng.random() < 0.2:
            steps.append(("document.customer_changed", {"customer": rng.choice(self.customers)}))
        if rng.random() < 0.3:
            later = day + timedelta(days=rng.randrange(1, 10))
            steps.append(
                (
                    "document.dates_changed",
                    {
                        "issue_date": later.isoformat(),
                        "due_date": (later + timedelta(days=30)).isoformat(),
                    },
                )
            )
        doc_id = self._uuid()
        if kind == "invoice":
            if rng.random() < 0.7:
                steps.append(("document.issued", {}))
            if rng.random() < 0.04:
                steps.append(("document.voided", {"reason": "cancelled by the customer"}))
        elif rng.random() < 0.3:
            inv = self._script("invoice", device, doc_id)
            steps.append(("document.converted", {"invoice_id": inv.doc_id}))
            self.pending.append(inv)
        return _Script(doc_id, kind, device, steps)

    def maps(self, count: int, first_position: int) -> Iterator[dict[str, Any]]:
        """``count`` event maps for positions ``first_position``... (no engine fields)."""
        assert self.state is not None
        counters = self.state.counters
        rng = self.rng
        active = [self._new_script() for _ in range(32)]
        t0 = datetime(2024, 6, 1, 8, tzinfo=UTC)
        stamp = t0.isoformat()
        for i in range(count):
            pos = first_position + i
            if i % 1000 == 0:
                stamp = (t0 + timedelta(seconds=pos // 10)).isoformat()
            slot = rng.randrange(len(active))
            sc = active[slot]
            type_, data = sc.steps.pop(0)
            if not sc.steps:
                active[slot] = self._new_script()
            if data.get("number") == -1:  # a server number, in log order as the engine gives
                n = counters[sc.kind].next()
                counters[sc.kind].observe(n, "server")
                data = {**data, "number": n}
            elif type_ == "document.created":
                data = dict(data)
            if type_ == "document.created":
                self.documents += 1
            d = sc.device
            self.seq[d] += 1
            yield {
                "event_id": self._uuid(),
                "type": type_,
                "schema_version": _SCHEMA_VERSION.get(type_, 1),
                "doc_id": sc.doc_id,
                "kind": sc.kind,
                "device_id": self.device_ids[d],
                "user": self.users[d % len(self.users)],
                "device_seq": self.seq[d],
                "device_time": stamp,
                "seen_position": pos - 1,
                "data": data,
            }


def generate(path: Path, spec: LogSpec, progress: Callable[[int], None] | None = None) -> Generated:
    """Write a new log of ``spec.events`` events at ``path`` (replacing one there)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    users = [f"user{u + 1}" for u in range(spec.users)]
    device_ids = [f"dev-gen{d:04d}" for d in range(spec.devices)]
    state = EngineState()
    settings = [
        new_event(
            "settings.user_mode_set",
            UserModeSet(mode="centralized", previous="centralized"),
            device_id="engine",
            user="engine",
            device_seq=0,
        )
    ]
    settings += [
        new_event(
            "settings.user_enrolled",
            UserEnrolled(user=u, slot=i + 1),
            device_id="engine",
            user="engine",
            device_seq=0,
        )
        for i, u in enumerate(users)
    ]
    settings += [
        new_event(
            "settings.device_enrolled",
            DeviceEnrolled(device_id=d, user=users[i % len(users)], name=f"generated {i}"),
            device_id="engine",
            user="engine",
            device_seq=0,
        )
        for i, d in enumerate(device_ids)
    ]
    for ev in settings:
        state.apply(ev)
    gen = DocumentEvents(spec, device_ids, users)
    gen.state = state

    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # a fixture, not a measured write
    conn.execute("PRAGMA cache_size=-262144")  # 256 MB: the random-key index stays in memory
    conn.executescript(SCHEMA)
    rows_q: queue.Queue[list[tuple[int, bytes, str, bytes, bytes]] | None] = queue.Queue(4)
    failure: list[BaseException] = []

    def writer() -> None:
        # sqlite3 releases the GIL while it steps: inserts overlap with encoding.
        try:
            while (rows := rows_q.get()) is not None:
                conn.execute("BEGIN")
                conn.executemany(INSERT, rows)
                conn.execute("COMMIT")
        except BaseException as exc:
            failure.append(exc)
            while rows_q.get() is not None:  # unblock the producer
                pass

    th = threading.Thread(target=writer, name="loggen-writer", daemon=True)
    th.start()
    prev = GENESIS
    pos = 0
    data_bytes = 0
    batch_size = 5000
    try:
        todo = [ev.to_wire() for ev in settings]
        doc_count = max(0, spec.events - len(todo))
        maps = gen.maps(doc_count, len(todo) + 1)
        while True:
            while len(todo) < batch_size:
                m = next(maps, None)
                if m is None:
                    break
                todo.append(m)
            if not todo:
                break
            committed = datetime.now(UTC).isoformat()
            rows = []
            for m in todo:
                pos += 1
                body, prev = seal_wire(m, pos, committed, prev)
                data_bytes += len(body)
                rows.append(
                    (pos, bytes.fromhex(m["event_id"].replace("-", "")), m["type"], body, prev)
                )
            state.events += sum(1 for m in todo if m["type"].startswith("document."))
            rows_q.put(rows)
            if progress is not None:
                progress(len(todo))
            todo = []
            if failure:
                break
    finally:
        rows_q.put(None)
        th.join()
    if failure:
        conn.close()
        raise failure[0]
    state.documents = gen.documents
    state.data_bytes = data_bytes
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO credentials(device_id, secret) VALUES (?, ?)",
        [(d, new_secret()) for d in device_ids],
    )
    # Sealed with the key of the folder the log is in (its data folder), as the
    # engine seals it: an engine serving this folder loads it without a fold.
    key = snapshot_key(load_or_create_key(path.parent))
    conn.execute(
        "INSERT INTO meta(key, value) VALUES ('state', ?)",
        (seal_snapshot(state, pos, prev, key),),
    )
    if spec.mark_published:
        conn.execute("INSERT INTO meta(key, value) VALUES ('published', ?)", (codec.pack(pos),))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return Generated(path, pos, gen.documents, device_ids, data_bytes)
