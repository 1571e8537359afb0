"""The numbering settings, folded from the engine's settings events. Pure: no I/O.

One fold for everyone who numbers or reports numbers: the engine's state, the
device's numbering and the projections each hold a ``NumberingSettings`` and
hand it every event in log order, so all three agree on the user mode, the
users' slots and the distributed epochs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, cast

from engine.document import DocumentView
from engine.numbering import Epoch, close_epochs, fold_epoch_event, join_open_epoch
from engine.patterns import NumberPattern, in_force
from engine.schema.common import KINDS, UserMode

# The event types ``apply`` folds; every other type leaves the settings as they are.
SETTINGS_TYPES = frozenset(
    {
        "settings.user_mode_set",
        "settings.user_enrolled",
        "settings.team_size_set",
        "settings.number_pattern_set",
        "numbering.epoch_opened",
        "numbering.epoch_extended",
    }
)


def epoch_row(ep: Epoch) -> list[Any]:
    """An epoch as snapshots store it."""
    return [ep.epoch, ep.start, ep.increment, ep.slots, ep.end, ep.cap]


def epoch_from_row(row: Sequence[Any]) -> Epoch:
    # Snapshots made before epochs had a cap hold five items.
    e, s, i, sl, end, *cap = row
    c = cap[0] if cap else None
    return Epoch(int(e), int(s), int(i), dict(sl), int(end), None if c is None else int(c))


@dataclass
class NumberingSettings:
    mode: UserMode = "centralized"  # the engine's default until a settings event says otherwise
    mode_set: bool = False
    users: dict[str, int] = field(default_factory=dict)  # user -> slot
    epochs: dict[str, list[Epoch]] = field(default_factory=lambda: {k: [] for k in KINDS})
    team: int = 0  # the stated team size (0: not stated; the increment is the users)
    # kind -> the patterns set, in log order (each numbers from its ``since``)
    patterns: dict[str, list[NumberPattern]] = field(default_factory=dict)

    def apply(
        self, t: str, data: Mapping[str, Any], highest: Mapping[str, int]
    ) -> tuple[str, ...] | None:
        """Fold one event's wire fields. ``highest`` is the highest number in use
        per kind (where a switch away from distributed caps the open epochs).

        Returns None for an event that is not a numbering setting, else the kinds
        whose epochs changed (empty when only the mode or the users did)."""
        if t == "settings.user_mode_set":
            mode = cast(UserMode, data["mode"])  # valid event data
            changed: tuple[str, ...] = ()
            if self.mode == "distributed" and mode != "distributed":
                # No new numbers in the open epochs; a switch back opens new ones.
                close_epochs(self.epochs, highest)
                changed = tuple(self.epochs)
            self.mode = mode
            self.mode_set = True
            return changed
        if t == "settings.user_enrolled":
            user, slot = str(data["user"]), int(data["slot"])
            self.users[user] = slot
            # A free slot of the open epoch: the user numbers in it at once.
            return tuple(k for k, eps in self.epochs.items() if join_open_epoch(eps, user, slot))
        if t == "settings.team_size_set":
            self.team = int(data["size"])  # the next epoch opened uses it
            return ()
        if t == "settings.number_pattern_set":
            since = data["since"]
            p = NumberPattern(
                text=str(data["pattern"]),
                reset=str(data.get("reset", "never")),
                tz=str(data.get("tz", "UTC")),
                since=since if isinstance(since, str) else since.isoformat(),
            )
            self.patterns.setdefault(str(data["kind"]), []).append(p)
            return ()
        kind = fold_epoch_event(self.epochs, t, data)
        return None if kind is None else (kind,)

    def copy(self) -> NumberingSettings:
        return NumberingSettings(
            mode=self.mode,
            mode_set=self.mode_set,
            users=dict(self.users),
            epochs={
                k: [replace(e, slots=dict(e.slots)) for e in eps] for k, eps in self.epochs.items()
            },
            team=self.team,
            patterns={k: list(v) for k, v in self.patterns.items()},
        )

    def pattern(self, kind: str) -> NumberPattern | None:
        """The pattern numbering ``kind`` now (the last one set)."""
        ps = self.patterns.get(kind)
        return ps[-1] if ps else None

    def pattern_at(self, kind: str, when: datetime | str | None) -> NumberPattern | None:
        """The pattern in force for ``kind`` at ``when`` (None: bare numbers)."""
        ps = self.patterns.get(kind)
        if not ps:
            return None
        return in_force(ps, _when(when))

    def period(self, kind: str, when: datetime | str | None) -> str:
        """The period a number of ``kind`` assigned at ``when`` counts in ("" : one
        series for all time). Duplicates and gaps are per (kind, period)."""
        p = self.pattern_at(kind, when)
        t = _when(when)
        return p.period(t) if p is not None and t is not None else ""

    def period_of(self, v: DocumentView) -> str:
        """The period ``v``'s number counts in: its series is (kind, period). The
        moment it was numbered decides (a document numbered 0 counts in none)."""
        return self.period(v.kind, v.numbered_at or v.created_at) if v.number else ""

    def display(
        self, kind: str, number: int, when: datetime | str | None, user: str | None = None
    ) -> str:
        """The display number, e.g. INV-2026-0042, from the pattern in force when the
        number was assigned, that moment's period and the sequence number."""
        p = self.pattern_at(kind, when)
        if p is None or number <= 0:
            return str(number)
        return p.display(number, _when(when), user, self.users.get(user or ""))

    def to_snapshot(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "mode_set": self.mode_set,
            "users": dict(self.users),
            "epochs": {k: [epoch_row(e) for e in eps] for k, eps in self.epochs.items()},
            "team": self.team,
            "patterns": {
                k: [[p.text, p.reset, p.tz, p.since] for p in ps] for k, ps in self.patterns.items()
            },
        }

    @classmethod
    def from_snapshot(cls, snap: Mapping[str, Any]) -> NumberingSettings:
        ns = cls(
            mode=snap["mode"],
            mode_set=bool(snap["mode_set"]),
            users=dict(snap["users"]),
            team=int(snap.get("team", 0)),  # older snapshots: not stated
            patterns={
                k: [NumberPattern(*row) for row in ps] for k, ps in snap.get("patterns", {}).items()
            },
        )
        for k, eps in snap["epochs"].items():
            ns.epochs[k] = [epoch_from_row(e) for e in eps]
        return ns


def _when(when: datetime | str | None) -> datetime | None:
    return datetime.fromisoformat(when) if isinstance(when, str) else when
