"""What a device knows for numbering, folded from events. Pure: no I/O.

The device learns the user mode, the users' slots and the distributed epochs
from the engine's settings/numbering events it pulls, and every number used so
far from ``document.created`` / ``document.number_assigned`` events (pulled or
still in its outbox). From that it gives the next number on the device:

* single: the highest number of the kind known on the device + 1;
* distributed: ``engine.numbering.distributed_next`` over the known epochs,
  continuing after the highest known number *in this user's own progression*
  (so numbers typed by hand into someone else's progression do not make it
  skip, and one typed into its own progression is never reused); 0 when the
  known epochs are exhausted;
* centralized: ``None`` here: the number comes from the server (0 offline).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.document import DocumentView
from engine.events import Event, now
from engine.numbering import Epoch, distributed_next, epoch_owner
from engine.schema.common import KINDS, UserMode
from engine.settings_fold import SETTINGS_TYPES, NumberingSettings

# The event types ``observe_wire`` folds; every other type leaves the numbering as it
# is, so a catch-up hands over only these.
OBSERVED_TYPES = frozenset({"document.created", "document.number_assigned"}) | SETTINGS_TYPES


@dataclass
class DeviceNumbering:
    # The user mode, users' slots and epochs: the engine's own fold.
    settings: NumberingSettings = field(default_factory=NumberingSettings)
    numbers: dict[str, set[int]] = field(default_factory=lambda: {k: set() for k in KINDS})
    highest: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    # (kind, period) -> highest number, for kinds whose pattern resets (single mode
    # numbers after the highest of the current period)
    period_highest: dict[tuple[str, str], int] = field(default_factory=dict)
    # (kind, user) -> highest known number in that user's progressions (a cache)
    _mine: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)

    # --- folding ----------------------------------------------------------------------

    def observe(self, ev: Event) -> None:
        """Fold one event (any type; unrelated ones are ignored)."""
        self.observe_wire(ev.type, ev.kind, ev.data, ev.device_time)

    def observe_wire(
        self,
        t: str,
        kind: str | None,
        data: Mapping[str, Any],
        when: datetime | str | None = None,
    ) -> None:
        """The same from an event's wire fields (a valid event of the current schema);
        ``when`` is its device time (the period a number counts in)."""
        if t == "document.created" or t == "document.number_assigned":
            if kind:
                number = int(data.get("number") or 0)
                self.use(kind, number)
                if number and self.settings.patterns and when is not None:
                    self._use_period(kind, number, when)
        else:
            for k in self.settings.apply(t, data, self.highest) or ():
                self._forget(k)

    @property
    def mode(self) -> UserMode:
        return self.settings.mode

    @property
    def mode_set(self) -> bool:
        return self.settings.mode_set

    @property
    def users(self) -> dict[str, int]:
        """user -> slot"""
        return self.settings.users

    @property
    def epochs(self) -> dict[str, list[Epoch]]:
        return self.settings.epochs

    def use(self, kind: str, number: int) -> None:
        """Record that ``number`` is used in the ``kind`` series."""
        if number <= 0 or kind not in self.numbers:
            return
        self.numbers[kind].add(number)
        if number > self.highest[kind]:
            self.highest[kind] = number
        if not self._mine:  # nothing cached (a catch-up calls this per pulled number)
            return
        for (k, user), best in list(self._mine.items()):
            if k == kind and number > best and self._owner(kind, number) == user:
                self._mine[(k, user)] = number

    def _use_period(self, kind: str, number: int, when: datetime | str) -> None:
        p = self.settings.pattern_at(kind, when)
        if p is None or p.reset == "never":
            return
        key = (kind, self.settings.period(kind, when))
        if number > self.period_highest.get(key, 0):
            self.period_highest[key] = number

    def _forget(self, kind: str) -> None:
        # Ownership of numbers changes with the epochs: recompute lazily.
        for key in [k for k in self._mine if k[0] == kind]:
            del self._mine[key]

    def _owner(self, kind: str, number: int) -> str | None:
        found = epoch_owner(self.epochs[kind], number)
        return found[1] if found else None

    # --- numbers ----------------------------------------------------------------------

    def mine(self, kind: str, user: str) -> int:
        """Highest known number of ``kind`` in ``user``'s progressions (0 if none)."""
        key = (kind, user)
        if key not in self._mine:
            eps = self.epochs[kind]
            self._mine[key] = max(
                (n for n in self.numbers[kind] if (o := epoch_owner(eps, n)) and o[1] == user),
                default=0,
            )
        return self._mine[key]

    def next_number(self, kind: str, user: str) -> int | None:
        """The next number made on the device; None in centralized mode (ask the
        server), 0 in distributed mode when the known epochs are exhausted."""
        if self.mode == "single":
            p = self.settings.pattern(kind)
            if p is not None and p.reset != "never":
                # Numbers restart each period (in the business's time zone): the
                # period of now, the moment the number is assigned.
                return self.period_highest.get((kind, p.period(now())), 0) + 1
            return self.highest[kind] + 1
        if self.mode == "distributed":
            return distributed_next(self.epochs[kind], user, [self.mine(kind, user)])
        return None

    def series(self, kind: str, user: str, count: int = 3) -> dict[str, Any]:
        """The user's series of ``kind``: slot, step and the next ``count`` numbers the
        device would give (distributed: 0 where the known epochs end; centralized:
        empty, the server numbers)."""
        slot = self.users.get(user)
        out: dict[str, Any] = {"kind": kind, "mode": self.mode, "slot": slot, "step": 1}
        if self.mode == "single":
            first = self.next_number(kind, user) or 1
            out["next"] = [first + i for i in range(count)]
            return out
        if self.mode != "distributed":
            out["next"] = []
            return out
        eps = self.epochs[kind]
        last = self.mine(kind, user)
        nxt: list[int] = []
        while len(nxt) < count:
            n = distributed_next(eps, user, [last])
            nxt.append(n)
            if n == 0:
                break
            last = n
        step = next((e.increment for e in eps if nxt and nxt[0] and e.owner(nxt[0]) == user), None)
        open_eps = [e for e in eps if e.cap is None]
        out["step"] = step or (open_eps[-1].increment if open_eps else self.settings.team or 1)
        out["next"] = nxt
        return out

    def slot_of(self, user: str) -> int | None:
        return self.users.get(user)

    # --- persistence -------------------------------------------------------------------

    def copy(self) -> DeviceNumbering:
        return DeviceNumbering(
            settings=self.settings.copy(),
            numbers={k: set(v) for k, v in self.numbers.items()},
            highest=dict(self.highest),
            period_highest=dict(self.period_highest),
            _mine=dict(self._mine),
        )

    def to_snapshot(self) -> dict[str, Any]:
        return {
            **self.settings.to_snapshot(),
            "numbers": {k: sorted(v) for k, v in self.numbers.items()},
            "period_highest": [[k, p, n] for (k, p), n in sorted(self.period_highest.items())],
        }

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> DeviceNumbering:
        dn = cls(settings=NumberingSettings.from_snapshot(snap))
        dn.period_highest = {(k, p): int(n) for k, p, n in snap.get("period_highest", [])}
        for k, nums in snap["numbers"].items():
            dn.numbers[k] = set(nums)
            dn.highest[k] = max(nums, default=0)
        return dn


# --- reports ----------------------------------------------------------------------------


def duplicates(
    views: list[DocumentView], settings: NumberingSettings | None = None
) -> list[dict[str, Any]]:
    """Numbers used by more than one document in one series: per kind, and per
    period when the kind's pattern resets (number 0 = unassigned, skipped).

    Sorted by kind, period and number; each entry lists the documents sharing the
    number and, with ``settings``, its display number."""
    groups: dict[tuple[str, str, int], list[DocumentView]] = defaultdict(list)
    for v in views:
        if v.created and v.number > 0:
            period = settings.period_of(v) if settings is not None else ""
            groups[(v.kind, period, v.number)].append(v)
    out = []
    for (kind, period, number), docs in sorted(groups.items()):
        if len(docs) > 1:
            first = docs[0]
            entry: dict[str, Any] = {"kind": kind, "number": number}
            if settings is not None:
                entry["period"] = period
                entry["display_number"] = settings.display(
                    kind, number, first.numbered_at or first.created_at, first.user
                )
            entry["documents"] = [
                {
                    "doc_id": d.doc_id,
                    "user": d.user,
                    "device_id": d.device_id,
                    "status": d.status,
                    "customer": (d.customer or {}).get("name"),
                }
                for d in sorted(docs, key=lambda d: (d.created_at or "", d.doc_id))
            ]
            out.append(entry)
    return out


def unassigned(views: list[DocumentView]) -> list[DocumentView]:
    """Documents still numbered 0 (centralized offline, or distributed out of epochs)."""
    return [v for v in views if v.created and v.number == 0]
