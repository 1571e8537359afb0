"""The engine's own state, folded from the events it appends. Pure: no I/O.

Small by design (no per-document data), so it is snapshotted in the same
transaction as every append and loads instantly at start-up. The snapshot is
sealed: bound to the log head it was taken at and MACed with a key kept outside
the log (``seal_snapshot``), so an edited snapshot is noticed and the state is
folded from the log again (``open_snapshot``, ``fold_log``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine import codec
from engine.events import Event, parse_event
from engine.numbering import CentralCounter, Epoch
from engine.schema.common import KINDS, UserMode
from engine.schema.settings import (
    DeviceEnrolled,
    DeviceRevoked,
    IntegrationAdded,
    IntegrationRemoved,
    Registered,
)
from engine.settings_fold import SETTINGS_TYPES, NumberingSettings


@dataclass
class DeviceInfo:
    user: str
    name: str | None = None
    revoked: bool = False


@dataclass
class EngineState:
    # The user mode, users' slots and epochs: the fold devices and projections share.
    numbering: NumberingSettings = field(default_factory=NumberingSettings)
    devices: dict[str, DeviceInfo] = field(default_factory=dict)
    documents: int = 0
    events: int = 0
    data_bytes: int = 0
    counters: dict[str, CentralCounter] = field(
        default_factory=lambda: {k: CentralCounter() for k in KINDS}
    )
    # "kind/period" -> the centralized counter of a period, for a kind whose number
    # pattern resets yearly or monthly (``counter``); ``counters`` still sees every number.
    period_counters: dict[str, CentralCounter] = field(default_factory=dict)
    # The last accepted registration (a settings.registered payload, JSON form).
    registration: dict[str, Any] | None = None
    integrations: dict[str, str] = field(default_factory=dict)  # name -> credential id
    # Extension point for later features (edition, registration, ...).
    extra: dict[str, Any] = field(default_factory=dict)

    def apply(self, event: Event, size: int = 0) -> None:
        self.events += 1
        self.data_bytes += size
        t = event.type
        # Document events read their canonical (validated) data directly: building
        # the pydantic payload here would cost more than the rest of the append.
        if t == "document.created":
            self.documents += 1
            c = event.data
            if c.get("number") and event.kind:
                self._observe(
                    event.kind, c["number"], c.get("number_source", "device"), event.device_time
                )
        elif t == "document.number_assigned":
            a = event.data
            if a.get("number") and event.kind:
                self._observe(event.kind, a["number"], a["source"], event.device_time)
        elif t in SETTINGS_TYPES:
            # A switch back to distributed opens new epochs (see core.numbers.epochs_stale).
            self.numbering.apply(t, event.data, {k: c.highest for k, c in self.counters.items()})
        elif t == "settings.device_enrolled":
            d: DeviceEnrolled = event.payload(DeviceEnrolled)
            self.devices[d.device_id] = DeviceInfo(user=d.user, name=d.name)
        elif t == "settings.device_revoked":
            r: DeviceRevoked = event.payload(DeviceRevoked)
            if r.device_id in self.devices:
                self.devices[r.device_id].revoked = True
        elif t == "settings.registered":
            self.registration = event.payload(Registered).model_dump(mode="json")
        elif t == "settings.integration_added":
            ia: IntegrationAdded = event.payload(IntegrationAdded)
            self.integrations[ia.name] = ia.credential_id
        elif t == "settings.integration_removed":
            self.integrations.pop(event.payload(IntegrationRemoved).name, None)

    @property
    def mode(self) -> UserMode:
        return self.numbering.mode

    @property
    def mode_set(self) -> bool:
        return self.numbering.mode_set

    @property
    def users(self) -> dict[str, int]:
        """user -> slot"""
        return self.numbering.users

    @property
    def epochs(self) -> dict[str, list[Epoch]]:
        return self.numbering.epochs

    def active_device_users(self) -> list[str]:
        """The user of every device that is not revoked (what editions count)."""
        return [i.user for i in self.devices.values() if not i.revoked]

    def counter(self, kind: str, when: datetime) -> CentralCounter:
        """The centralized counter a number of ``kind`` assigned at ``when`` comes
        from: the kind's own, or its period's when the kind's pattern resets."""
        key = self._period_key(kind, when)
        if key is None:
            return self.counters[kind]
        return self.period_counters.setdefault(key, CentralCounter())

    def _period_key(self, kind: str, when: datetime) -> str | None:
        if not self.numbering.patterns:
            return None
        p = self.numbering.pattern_at(kind, when)
        if p is None or p.reset == "never":
            return None
        return f"{kind}/{p.period(when)}"

    def _observe(self, kind: str, number: int, source: str, when: datetime) -> None:
        # Only centralized mode needs the hand-set numbers above the counter.
        track = self.mode == "centralized"
        self.counters[kind].observe(number, source, track=track)
        key = self._period_key(kind, when)
        if key is not None:
            self.period_counters.setdefault(key, CentralCounter()).observe(number, source, track)

    # --- snapshot -------------------------------------------------------------------

    def to_snapshot(self) -> dict[str, Any]:
        return {
            **self.numbering.to_snapshot(),
            "devices": {
                d: {"user": i.user, "name": i.name, "revoked": i.revoked}
                for d, i in self.devices.items()
            },
            "documents": self.documents,
            "events": self.events,
            "data_bytes": self.data_bytes,
            "counters": {k: [c.last, sorted(c.taken), c.highest] for k, c in self.counters.items()},
            "period_counters": {
                k: [c.last, sorted(c.taken), c.highest] for k, c in self.period_counters.items()
            },
            "registration": self.registration,
            "integrations": self.integrations,
            "extra": self.extra,
        }

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> EngineState:
        st = cls(
            numbering=NumberingSettings.from_snapshot(snap),
            devices={d: DeviceInfo(**i) for d, i in snap["devices"].items()},
            documents=snap["documents"],
            events=snap["events"],
            data_bytes=snap["data_bytes"],
            registration=snap.get("registration"),
            integrations=dict(snap.get("integrations", {})),
            extra=dict(snap.get("extra", {})),
        )
        for k, (last, taken, highest) in snap["counters"].items():
            st.counters[k] = CentralCounter(last=last, taken=set(taken), highest=highest)
        for k, (last, taken, highest) in snap.get("period_counters", {}).items():
            st.period_counters[k] = CentralCounter(last=last, taken=set(taken), highest=highest)
        return st


# --- the sealed snapshot and the fold from the log ---------------------------------------

# The event types ``EngineState.apply`` reads beyond counting them.
STATE_TYPES = (
    frozenset(
        {
            "document.created",
            "document.number_assigned",
            "settings.device_enrolled",
            "settings.device_revoked",
            "settings.registered",
            "settings.integration_added",
            "settings.integration_removed",
        }
    )
    | SETTINGS_TYPES
)


def fold_log(bodies: Iterable[bytes], st: EngineState | None = None) -> EngineState:
    """The state folded from stored bodies in log order (onto ``st``). Only the
    types the state reads are parsed; the others are counted (as ``apply`` does)."""
    if st is None:
        st = EngineState()
    for body in bodies:
        wire = codec.unpack(body)
        if wire.get("type") in STATE_TYPES:
            st.apply(parse_event(wire, stored=True), len(body))
        else:
            st.events += 1
            st.data_bytes += len(body)
    return st


def _mac(key: bytes, body: bytes, position: int, hash_: bytes) -> bytes:
    msg = b"synvoice-snapshot-v1\n%d\n%s\n" % (position, hash_.hex().encode())
    return hmac.new(key, msg + body, hashlib.sha256).digest()


def seal_snapshot(state: EngineState, position: int, hash_: bytes, key: bytes) -> bytes:
    """The stored snapshot: the state at log head ``position``/``hash_``, MACed."""
    body = codec.pack(state.to_snapshot())
    return codec.pack(
        {
            "sealed": body,
            "position": position,
            "hash": hash_,
            "mac": _mac(key, body, position, hash_),
        }
    )


def open_snapshot(
    raw: bytes, head: int, last_hash: bytes, key: bytes
) -> tuple[EngineState | None, str]:
    """The sealed snapshot's state if it is intact and taken at this log head,
    else None and why (the caller folds the log instead)."""
    try:
        snap = codec.unpack(raw)
    except Exception:
        return None, "the snapshot does not decode"
    if not isinstance(snap, dict) or "sealed" not in snap:
        return None, "the snapshot is not sealed (written by an older engine)"
    body, pos, h, mac = (snap.get(k) for k in ("sealed", "position", "hash", "mac"))
    if not (isinstance(body, bytes) and isinstance(pos, int) and isinstance(h, bytes)):
        return None, "the snapshot seal is malformed"
    if not isinstance(mac, bytes) or not hmac.compare_digest(mac, _mac(key, body, pos, h)):
        return None, "the snapshot's seal does not verify (edited, or another engine key)"
    if (pos, h) != (head, last_hash):
        return None, f"the snapshot was taken at position {pos}, the log head is {head}"
    try:
        return EngineState.from_snapshot(codec.unpack(body)), ""
    except Exception as exc:
        return None, f"the snapshot does not load ({exc})"
