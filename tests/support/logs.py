"""Event builders for projection tests (pure: sealing here does what EventLog.seal does)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from engine import codec
from engine.events import Event, new_event, now
from engine.hashchain import GENESIS, link
from engine.schema.common import Customer, Line, NumberSource
from engine.schema.documents import DocumentCreated, NumberAssigned

Row = tuple[int, bytes, bytes]


@dataclass
class Dev:
    """A device that makes events (no I/O)."""

    device_id: str = "dev-a"
    user: str = "alice"
    seq: int = 0
    seen: int = 0  # last log position this device has pulled

    def event(
        self, type_: str, payload: BaseModel, doc_id: uuid.UUID, kind: str = "invoice"
    ) -> Event:
        self.seq += 1
        return new_event(
            type_,
            payload,
            device_id=self.device_id,
            user=self.user,
            device_seq=self.seq,
            doc_id=doc_id,
            kind=kind,
            seen_position=self.seen,
        )

    def create(self, number: int = 0, kind: str = "invoice", **kw: Any) -> Event:
        payload = DocumentCreated(
            number=number,
            customer=Customer(name=kw.pop("customer", "Acme Ltd")),
            lines=kw.pop(
                "lines", [Line(description="Work", quantity=2, unit_price=150, tax_rate=20)]
            ),
            **kw,
        )
        return self.event("document.created", payload, uuid.uuid4(), kind)

    def renumber(self, created: Event, number: int, source: NumberSource = "manual") -> Event:
        assert created.doc_id is not None and created.kind is not None
        return self.event(
            "document.number_assigned",
            NumberAssigned(number=number, source=source),
            created.doc_id,
            created.kind,
        )


@dataclass
class Log:
    """An in-memory log: seals events exactly as the engine does."""

    rows: list[Row] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    @property
    def head(self) -> int:
        return len(self.rows)

    def append(self, events: Sequence[Event]) -> list[Row]:
        at = now()
        prev = self.rows[-1][2] if self.rows else GENESIS
        out = []
        for ev in events:
            pos = len(self.rows) + 1
            sealed = ev.model_copy(update={"position": pos, "committed_at": at})
            body = codec.pack(sealed.to_wire())
            prev = link(prev, body)
            row = (pos, body, prev)
            self.rows.append(row)
            self.events.append(sealed)
            out.append(row)
        return out


def engine_event(type_: str, payload: BaseModel) -> Event:
    return new_event(type_, payload, device_id="engine", user="engine", device_seq=0)


def distributed_log(end: int) -> Log:
    """A log in distributed mode: alice (slot 1) and bob (slot 2) share one
    invoice epoch 1..``end`` (alice numbers 1, 3, 5…, bob 2, 4, 6…)."""
    from engine.schema.settings import EpochOpened, UserEnrolled, UserModeSet

    log = Log()
    log.append(
        [
            engine_event("settings.user_mode_set", UserModeSet(mode="distributed")),
            engine_event("settings.user_enrolled", UserEnrolled(user="alice", slot=1)),
            engine_event("settings.user_enrolled", UserEnrolled(user="bob", slot=2)),
            engine_event(
                "numbering.epoch_opened",
                EpochOpened(
                    kind="invoice",
                    epoch=1,
                    start=1,
                    increment=2,
                    slots={"alice": 1, "bob": 2},
                    end=end,
                ),
            ),
        ]
    )
    return log
