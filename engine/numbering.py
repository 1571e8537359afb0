"""Numbering rules for the three user modes. Pure: no I/O.

* single user: the last number of the kind known on the device, plus one;
* multi user, centralized: the engine's counter per kind (``CentralCounter``);
* multi user, distributed: epochs of arithmetic progressions (``Epoch``).

Distributed rule (why it never collides): the engine hands every user a slot k
and records, per kind, *epochs* ``[start, end]`` with an increment N (the number
of users then). In an epoch, the user with slot k numbers
``start + (k-1), start + (k-1) + N, ...`` up to ``end``. A device numbers only
inside epochs it has pulled. The engine extends the open epoch's ``end`` ahead
of use (every user then has ``runway`` more numbers); when a user joins, the
open epoch is closed at its current ``end`` (never shortened: offline devices may
already use numbers up to it) and a new epoch with N+1 starts at ``end + 1``.
Numbers below ``end`` keep the old progression, numbers above it the new one,
so two users can never produce the same number. A device that exhausts its
known epochs offline gives number 0, like centralized offline, until it syncs.

Team size (the seed's "Increment Number"): when the operator states it, an
epoch's increment is the team size (or the number of users, if more), and a
user enrolled later whose slot k is still free in the open epoch joins it
(``join_open_epoch``): nobody can have used slot k's progression yet, so the
user numbers k, k+N, k+2N… with no new epoch. Only a user beyond the team size,
or a change of the team size, opens a new epoch (above the open one's end).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


def single_next(known_numbers: Iterable[int]) -> int:
    """Single user: the last (highest) number known on the device + 1."""
    return max(known_numbers, default=0) + 1


@dataclass
class CentralCounter:
    """Centralized numbers for one kind.

    ``last`` is the last number the server handed out. Numbers set by hand or
    on a device above it are remembered in ``taken`` so the server skips them
    rather than hand out a duplicate.
    """

    last: int = 0
    taken: set[int] = field(default_factory=set)
    highest: int = 0  # highest number of this kind seen from any source

    def observe(self, number: int, source: str, track: bool = True) -> None:
        """Record a number used by any source. ``track`` (centralized mode only)
        remembers hand-set numbers above the counter so ``next`` skips them."""
        self.highest = max(self.highest, number)
        if source == "server":
            self.last = max(self.last, number)
            self.taken.discard(number)
        elif track and number > self.last:
            self.taken.add(number)

    def next(self) -> int:
        n = self.last + 1
        while n in self.taken:
            self.taken.discard(n)
            n += 1
        self.last = n
        return n


@dataclass
class Epoch:
    epoch: int
    start: int
    increment: int
    slots: dict[str, int]
    end: int
    # Set when the user mode left distributed while this epoch was open (the
    # highest number then in use, see ``close_epochs``): no new numbers are made
    # in it, the engine opens a new epoch if distributed comes back, and the
    # projections end the epoch's series there.
    cap: int | None = None

    @property
    def last(self) -> int:
        """The last number this epoch governs."""
        return self.end if self.cap is None else min(self.end, self.cap)

    def numbers_for(self, user: str) -> range:
        slot = self.slots.get(user)
        if slot is None:
            return range(0)
        return range(self.start + slot - 1, self.end + 1, self.increment)

    def owner(self, number: int) -> str | None:
        """The user whose progression contains ``number`` in this epoch."""
        if not self.start <= number <= self.end:
            return None
        k = (number - self.start) % self.increment + 1
        for user, slot in self.slots.items():
            if slot == k:
                return user
        return None


def distributed_next(epochs: list[Epoch], user: str, used: Iterable[int]) -> int:
    """The user's next number: the first number of their progressions after the
    highest they have used, in epoch order; 0 when known epochs are exhausted.
    Epochs closed by a mode change give no new numbers."""
    last = max(used, default=0)
    for ep in sorted(epochs, key=lambda e: e.epoch):
        if ep.cap is not None:
            continue
        rng = ep.numbers_for(user)
        if not rng or rng[-1] <= last:
            continue
        if last < rng.start:
            return rng.start
        # first element of rng greater than last
        steps = (last - rng.start) // rng.step + 1
        return rng.start + steps * rng.step
    return 0


def epoch_owner(epochs: list[Epoch], number: int) -> tuple[int, str] | None:
    """(epoch, user) that a number belongs to, for per-slot gap reports."""
    for ep in epochs:
        user = ep.owner(number)
        if user is not None:
            return ep.epoch, user
    return None


def increment_for(users: Mapping[str, int], team: int) -> int:
    """The increment of a new epoch: the team size, or the number of users if more."""
    return max(len(users), team, 1)


def join_open_epoch(epochs: list[Epoch], user: str, slot: int) -> bool:
    """A user enrolled with ``slot`` joins the open epoch if that slot is free in it
    (its progression is then unused by anyone). Returns whether it joined."""
    if not epochs:
        return False
    ep = epochs[-1]
    if ep.cap is not None or user in ep.slots or slot > ep.increment:
        return False
    if slot in ep.slots.values():
        return False
    ep.slots[user] = slot
    return True


def open_epoch(epochs: list[Epoch], slots: dict[str, int], runway: int, team: int = 0) -> Epoch:
    """A new epoch after the current one (or the first), for the given slots."""
    n = increment_for(slots, team)
    start = (epochs[-1].end + 1) if epochs else 1
    return Epoch(
        epoch=(epochs[-1].epoch + 1) if epochs else 1,
        start=start,
        increment=n,
        slots=dict(slots),
        end=start + n * runway - 1,
    )


def extension_needed(ep: Epoch, number: int, runway: int) -> int | None:
    """New ``end`` for the open epoch when a used number leaves less than half
    a runway per user, else None."""
    if number < ep.start or number > ep.end:
        return None
    left = (ep.end - number) // ep.increment
    if left >= runway // 2:
        return None
    return ep.end + ep.increment * runway


def close_epochs(epochs: Mapping[str, list[Epoch]], highest: Mapping[str, int]) -> None:
    """The user mode left distributed: every open epoch ends at the highest number
    of its kind then in use (``Epoch.cap``). The engine, the devices and the
    projections apply this one rule when they fold the mode change."""
    for kind, eps in epochs.items():
        for ep in eps:
            if ep.cap is None:
                ep.cap = highest.get(kind, 0)


def fold_epoch_event(
    epochs: dict[str, list[Epoch]], event_type: str, data: Mapping[str, Any]
) -> str | None:
    """Apply a ``numbering.epoch_opened`` / ``epoch_extended`` payload (wire form)
    to per-kind epoch lists; returns the kind it touched, else None. The engine's
    state, the device agent and the projections fold epochs with this one function."""
    if event_type == "numbering.epoch_opened":
        kind = str(data["kind"])
        eps = epochs.setdefault(kind, [])
        if all(e.epoch != data["epoch"] for e in eps):  # a re-delivered event changes nothing
            eps.append(
                Epoch(
                    epoch=int(data["epoch"]),
                    start=int(data["start"]),
                    increment=int(data["increment"]),
                    slots={str(u): int(k) for u, k in data["slots"].items()},
                    end=int(data["end"]),
                )
            )
            eps.sort(key=lambda e: e.epoch)
        return kind
    if event_type == "numbering.epoch_extended":
        kind = str(data["kind"])
        for ep in epochs.setdefault(kind, []):
            if ep.epoch == data["epoch"]:
                ep.end = max(ep.end, int(data["end"]))
        return kind
    return None
