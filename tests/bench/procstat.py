"""Process figures from /proc (Linux): CPU seconds, resident memory high-water."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0.0 if it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # Fields after the ")" that closes the command name; utime, stime are 14, 15.
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (e.g. the engine's projection worker)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            raw = (d / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if int(raw[raw.rindex(")") + 2 :].split()[1]) == pid:
            out.append(int(d.name))
    return sorted(out)


def status_kb(pid: int, key: str) -> int | None:
    """A ``kB`` field of /proc/<pid>/status, e.g. VmHWM (peak RSS) or VmRSS."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def mb(kb: int | None) -> float | None:
    return None if kb is None else kb / 1024


@dataclass
class CpuWindow:
    """CPU used by some processes over a wall-clock window (to say what is busy)."""

    pids: Mapping[str, int]
    wall: float = 0.0  # seconds, set on exit
    used: dict[str, float] = field(default_factory=dict)  # CPU seconds per process
    _wall0: float = 0.0
    _cpu0: dict[str, float] = field(default_factory=dict)

    def __enter__(self) -> CpuWindow:
        self._wall0 = time.perf_counter()
        self._cpu0 = {k: cpu_seconds(p) for k, p in self.pids.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall0
        self.used = {k: cpu_seconds(p) - self._cpu0[k] for k, p in self.pids.items()}

    def engine_seconds(self) -> float:
        """CPU seconds of the engine and its worker processes together."""
        return sum(v for k, v in self.used.items() if k.startswith("engine"))

    def summary(self) -> dict[str, float]:
        """Per process: share of one core used during the window (1.0 = a full core)."""
        return {k: round(v / self.wall, 2) if self.wall else 0.0 for k, v in self.used.items()}
