"""The auditor's replay: rebuild the views from a log file or a running engine.

Both paths verify every hash link before folding a record, stop at ``until``
(a position or a commit time), and leave a views file whose digest two
auditors can compare.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from engine.client import EngineClient
from projections.follow import pull_rows
from projections.rebuild import (
    Builder,
    RebuildResult,
    build_from_log,
    install_views,
    progress_bar,
)
from projections.store import ViewStore


def replay_file(
    log_path: Path, views: Path, until: int | datetime | None, progress: bool = False
) -> RebuildResult:
    with progress_bar(progress, "replaying the log") as step:
        return build_from_log(log_path, views, until, step)


async def replay_remote(
    client: EngineClient,
    views: Path,
    until: int | datetime | None,
    progress: bool = False,
    page: int = 5000,
) -> RebuildResult:
    """Replay over NATS: pull pages with hashes from the engine into a fresh views file."""
    t0 = time.perf_counter()
    tmp = views.with_name(views.name + ".rebuilding")
    store = ViewStore.create_fresh(tmp)
    try:
        b = Builder(store, until)
        try:
            digest = await _pull_into(b, client, progress, page)
        except BaseException:
            b.abort()
            raise
    finally:
        store.close()
    install_views(tmp, views)
    return RebuildResult(
        events=b.events,
        seconds=time.perf_counter() - t0,
        digest=digest,
        position=b.projector.position,
        head=b.head,
        broken=b.broken,
    )


async def _pull_into(b: Builder, client: EngineClient, progress: bool, page: int) -> str:
    with progress_bar(progress, "replaying from the engine") as step:
        after = 0
        while True:
            head, more, rows = await pull_rows(client, after, page)
            b.head = head
            if rows:
                after = rows[-1][0]
                go_on = b.feed(rows)
                if step is not None:
                    step(after, head)
                if not go_on:
                    break
            if not more or not rows:
                break
    return b.finish()
