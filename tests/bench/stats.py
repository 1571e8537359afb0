"""Small pure helpers: percentiles and rates."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n*q/100), at least 1
    return float(sorted_values[int(rank) - 1])


def rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


def duplicates(values: Sequence[int]) -> int:
    """How many values repeat one seen before."""
    return len(values) - len(set(values))
