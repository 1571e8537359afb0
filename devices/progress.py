"""A rich progress bar for syncs that move many events (shown above a threshold)."""

from __future__ import annotations

from types import TracebackType

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

THRESHOLD = 5000  # events: smaller syncs finish before a bar would help


class SyncProgress:
    """``with SyncProgress() as p: await agent.sync(on_progress=p.update)``."""

    def __init__(self, enabled: bool = True, threshold: int = THRESHOLD) -> None:
        self.enabled = enabled
        self.threshold = threshold
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def update(self, done: int, total: int) -> None:
        if not self.enabled or total <= self.threshold:
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("pulling events"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("pull", total=total)
        assert self._task is not None
        self._progress.update(self._task, completed=done, total=total)

    def __enter__(self) -> SyncProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
