"""What every benchmark gets: sizes scaled by ``--scale``, a work dir, progress bars,
and the shared 1M-event log (generated once per run)."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from tests.bench.loggen import Generated, LogSpec, generate

BIG_LOG_EVENTS = 1_000_000


@dataclass
class Context:
    scale: float
    workdir: Path  # this run's scratch space (deleted afterwards unless --keep)
    out_dir: Path  # where the JSON and profiles go
    console: Console  # stderr: progress and notes; stdout stays for the table/JSON
    profile: bool = False
    stamp: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S"))
    _big: Generated | None = None
    _big_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def n(self, full: int, minimum: int = 1) -> int:
        """A size at this run's scale."""
        return max(minimum, round(full * self.scale))

    def dir(self, name: str) -> Path:
        """A fresh scratch directory."""
        p = self.workdir / name
        if p.exists():
            shutil.rmtree(p)
        p.mkdir(parents=True)
        return p

    def profile_path(self, bench: str) -> Path:
        return self.out_dir / f"profile-{bench}-{self.stamp}.txt"

    @contextmanager
    def progress(self, what: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        """A progress bar on stderr; yields ``advance(n)``."""
        with Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        ) as bar:
            task = bar.add_task(what, total=total)
            yield lambda k: bar.advance(task, k)

    def note(self, text: str) -> None:
        self.console.print(f"[dim]{text}[/dim]")

    async def big_log(self) -> Generated:
        """The 1M-event log (at scale) shared by the rebuild and memory benchmarks.

        It lives in ``big/data/log.sqlite`` so an engine can serve it from ``big/data``.
        """
        async with self._big_lock:
            if self._big is None:
                spec = LogSpec(events=self.n(BIG_LOG_EVENTS, 2000))
                path = self.dir("big") / "data" / "log.sqlite"
                with self.progress(f"generating a {spec.events:,}-event log", spec.events) as adv:
                    self._big = await asyncio.to_thread(generate, path, spec, adv)
            return self._big
