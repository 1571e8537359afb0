"""A compact index of the numbers in use: how many documents hold each number. Pure.

The projection needs, per series (a kind and a period), which numbers are held
(gaps) and which are held more than once (duplicates). A dict of doc-id lists
costs ~300 bytes per document; counts in an array cost 4 bytes per number. The doc ids of a
duplicate are looked up only when a number is held twice (see
``Projector.holders_of``).

Numbers mostly run densely from 1: they live in an ``array`` indexed by number.
A number far above the dense range (a hand-typed 9000000) goes to a small dict
instead, so one odd number does not allocate megabytes.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from itertools import compress

_SLACK = 1 << 16  # the dense range may grow to twice its size plus this


class _Series:
    __slots__ = ("dense", "distinct", "sparse")

    def __init__(self) -> None:
        self.dense = array("I")
        self.sparse: dict[int, int] = {}
        self.distinct = 0  # numbers held at least once

    def add(self, n: int) -> int:
        d = self.dense
        if len(d) <= n < 2 * len(d) + _SLACK:
            grow = min(max(n + 1, len(d) * 3 // 2 + 1024), 2 * len(d) + _SLACK) - len(d)
            d.frombytes(bytes(4 * grow))
            for m in [m for m in self.sparse if 0 <= m < len(d)]:
                d[m] = self.sparse.pop(m)  # the dense range now covers it
        if 0 <= n < len(d):
            c = d[n] + 1
            d[n] = c
        else:
            c = self.sparse.get(n, 0) + 1
            self.sparse[n] = c
        if c == 1:
            self.distinct += 1
        return c

    def remove(self, n: int) -> int:
        d = self.dense
        if 0 <= n < len(d):
            c = d[n] - 1
            if c < 0:
                raise KeyError(n)
            d[n] = c
        else:
            c = self.sparse[n] - 1
            if c:
                self.sparse[n] = c
            else:
                del self.sparse[n]
        if c == 0:
            self.distinct -= 1
        return c

    def count(self, n: int) -> int:
        d = self.dense
        return d[n] if 0 <= n < len(d) else self.sparse.get(n, 0)

    def numbers(self) -> Iterator[int]:
        """Held numbers, ascending."""
        # sparse numbers are outside the dense range: below 0 or above it
        sparse = sorted(self.sparse)
        yield from (n for n in sparse if n < 0)
        yield from compress(range(len(self.dense)), self.dense)
        yield from (n for n in sparse if n > 0)

    def held_twice(self) -> Iterator[int]:
        d = self.dense
        twice = sorted(n for n, c in self.sparse.items() if c > 1)
        yield from (n for n in twice if n < 0)
        yield from compress(range(len(d)), (c > 1 for c in d))
        yield from (n for n in twice if n > 0)


class NumberIndex:
    """(kind, period) -> number -> how many documents hold it (number 0 is never
    indexed). A series is a kind and a period: "" for a kind whose pattern never
    resets, "2026" or "2026-03" for one that does (``engine.patterns``)."""

    def __init__(self, kinds: Iterable[str] = ()) -> None:
        self._series: dict[tuple[str, str], _Series] = {(k, ""): _Series() for k in kinds}

    def _of(self, kind: str, period: str) -> _Series:
        s = self._series.get((kind, period))
        if s is None:
            s = self._series[(kind, period)] = _Series()
        return s

    def add(self, kind: str, number: int, period: str = "") -> int:
        """One more holder of ``number``; returns how many hold it now."""
        return self._of(kind, period).add(number) if number else 0

    def remove(self, kind: str, number: int, period: str = "") -> int:
        return self._of(kind, period).remove(number) if number else 0

    def count(self, kind: str, number: int, period: str = "") -> int:
        s = self._series.get((kind, period))
        return s.count(number) if s is not None and number else 0

    def numbers(self, kind: str, period: str = "") -> Iterator[int]:
        s = self._series.get((kind, period))
        return s.numbers() if s is not None else iter(())

    def distinct(self, kind: str) -> int:
        """Numbers held in all of ``kind``'s series."""
        return sum(s.distinct for (k, _), s in self._series.items() if k == kind)

    def held_twice(self, kind: str, period: str = "") -> Iterator[int]:
        """Numbers held by two or more documents, ascending."""
        s = self._series.get((kind, period))
        return s.held_twice() if s is not None else iter(())

    def periods(self, kind: str) -> list[str]:
        """The periods of ``kind`` that have (or had) numbers, ascending ("" first)."""
        return sorted(p for k, p in self._series if k == kind)

    def series(self) -> list[tuple[str, str]]:
        """Every (kind, period), sorted."""
        return sorted(self._series)
