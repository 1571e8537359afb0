"""Request counters of the engine process: latency by subject, refusals by code.

Pure bookkeeping, no I/O: ``engine.service`` records each request here and the
web console reads a snapshot through the admin status reply (``metrics`` part),
then renders it as OpenMetrics (``engine.console.metrics``).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

from engine.messages import LatencyStatus, MetricsStatus

# Upper bounds in seconds: a group commit is ~1-10 ms, a big pull up to ~1 s.
BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def snapshot(self) -> LatencyStatus:
        return LatencyStatus(list(self.counts), self.total)


@dataclass
class RequestMetrics:
    latency: dict[str, Histogram] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)

    def observe(self, subject: str, seconds: float, code: str | None = None) -> None:
        h = self.latency.get(subject)
        if h is None:
            h = self.latency[subject] = Histogram()
        h.observe(seconds)
        if code is not None:
            self.refusals[code] = self.refusals.get(code, 0) + 1

    def snapshot(self) -> MetricsStatus:
        """The ``metrics`` part of the status reply."""
        return MetricsStatus(
            list(BUCKETS),
            {s: h.snapshot() for s, h in sorted(self.latency.items())},
            dict(sorted(self.refusals.items())),
        )
