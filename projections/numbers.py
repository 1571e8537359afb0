"""Duplicate numbers and gaps in number series. Pure: no I/O.

Series: each kind has its own numbers, and a kind whose number pattern resets
has one series per period (``period`` "2026", "2026-03"; "" when it never
resets, see ``engine.patterns``). Without distributed numbering there is one
series per kind and period (``series="*"``), expected to run 1, 2, 3, ... up to
the highest number in use. In distributed mode every user has their own series
inside each epoch (``engine.numbering``): start+(slot-1), +increment, ... A
number in an epoch's range belongs to the user whose progression holds it;
numbers outside every epoch range form the kind's shared series.

A *gap* is a number of a series below that series' highest number in use that
no document holds (void documents still hold their number: a voided invoice
keeps its number in the books). In a user's series the numbers after the last
one the user used are not gaps: they are the runway still ahead of them. An
epoch that ended when the user mode left distributed (see ``Epoch.cap``) ends at
the highest number in use at that moment (``Epoch.last``).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from engine.numbering import Epoch

SHARED = "*"


class Gap(NamedTuple):
    kind: str
    series: str  # SHARED, or the user name owning the slot
    slot: int  # 0 for the shared series
    epoch: int  # 0 for the shared series
    first: int
    last: int
    step: int
    missing: int
    period: str = ""  # the period of a resetting series ("" : one for all time)

    def as_dict(self) -> dict[str, Any]:
        return self._asdict()


def duplicate_groups(
    holders: Mapping[int, Iterable[str]],
) -> list[tuple[int, list[str]]]:
    """(number, sorted doc ids) for every nonzero number held by two or more documents."""
    out = []
    for number in sorted(holders):
        docs = sorted(holders[number])
        if number and len(docs) > 1:
            out.append((number, docs))
    return out


def _subtract(lo: int, hi: int, spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """[lo, hi] minus the sorted, disjoint ranges ``spans``."""
    out = []
    cur = lo
    for s, e in spans:
        if e < cur:
            continue
        if s > hi:
            break
        if s > cur:
            out.append((cur, min(hi, s - 1)))
        cur = max(cur, e + 1)
        if cur > hi:
            break
    if cur <= hi:
        out.append((cur, hi))
    return out


def _merged(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def find_gaps(
    kind: str, used: Iterable[int], epochs: Sequence[Epoch] = (), period: str = ""
) -> list[Gap]:
    """Gaps of one kind's series in one period, given the numbers in use (any
    order, 0s ignored). Epochs number the never-resetting series only (distributed
    mode refuses resetting patterns)."""
    if period:
        return [g._replace(period=period) for g in find_gaps(kind, used)]
    nums = sorted({n for n in used if n > 0})
    eps = sorted((e for e in epochs if e.last >= e.start), key=lambda e: e.epoch)
    spans = _merged((e.start, e.last) for e in eps)
    gaps: list[Gap] = []

    # Shared series: numbers outside every epoch range.
    prev = 0
    in_epochs: list[int] = []
    si = 0
    for n in nums:
        while si < len(spans) and spans[si][1] < n:
            si += 1
        if si < len(spans) and spans[si][0] <= n:
            in_epochs.append(n)
            continue
        if n > prev + 1:
            for a, b in _subtract(prev + 1, n - 1, spans):
                gaps.append(Gap(kind, SHARED, 0, 0, a, b, 1, b - a + 1))
        prev = n

    if not eps:
        return gaps

    # Per-user series: each user's progressions in epoch order.
    by_user: dict[str, list[tuple[Epoch, int]]] = {}
    for ep in eps:
        for user, slot in ep.slots.items():
            if 1 <= slot <= ep.increment:
                by_user.setdefault(user, []).append((ep, slot))
    for user in sorted(by_user):
        progressions = []
        for ep, slot in by_user[user]:
            first = ep.start + slot - 1
            if first > ep.last:
                continue
            count = (ep.last - first) // ep.increment + 1
            held = [
                (n - first) // ep.increment
                for n in _in_range(in_epochs, first, ep.last)
                if (n - first) % ep.increment == 0
            ]
            progressions.append((ep, slot, first, count, held))
        last_used = max((i for i, p in enumerate(progressions) if p[4]), default=-1)
        for i, (ep, slot, first, count, held) in enumerate(progressions[: last_used + 1]):
            # Whole progressions of earlier epochs count; in the user's last used
            # epoch only the numbers below the last one used.
            stops = held if i == last_used else [*held, count]
            prev_i = -1
            for idx in stops:
                if idx > prev_i + 1:
                    a = first + (prev_i + 1) * ep.increment
                    b = first + (idx - 1) * ep.increment
                    gaps.append(
                        Gap(kind, user, slot, ep.epoch, a, b, ep.increment, idx - prev_i - 1)
                    )
                prev_i = idx
    return gaps


def _in_range(sorted_nums: Sequence[int], lo: int, hi: int) -> list[int]:
    return list(sorted_nums[bisect_left(sorted_nums, lo) : bisect_right(sorted_nums, hi)])
