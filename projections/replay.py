"""The auditor's replay: rebuild the views from a log file or a running engine.

Both paths verify every hash link before folding a record, stop at ``until``
(a position or a commit time), and leave a views file whose digest two
auditors can compare.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.checkpoints import Checkpoint
from engine.client import EngineClient
from engine.datalock import engine_in_use
from projections.anchors import (
    CHECKPOINTS_FILE,
    AnchorAudit,
    check_checkpoints,
    check_snapshot,
    check_stream,
    check_unanchored,
    hashes_at,
    load_file,
    stream_checkpoints,
)
from projections.follow import pull_rows
from projections.rebuild import (
    Builder,
    RebuildResult,
    build_from_log,
    install_views,
    log_head,
    open_log,
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


# --- the anchor checks (projections.anchors) ---------------------------------------------


async def audit_file(
    log_path: Path,
    *,
    checkpoint_file: Path | None = None,
    engine_key: str | None = None,
    client: EngineClient | None = None,
) -> AnchorAudit:
    """Check a log file against its anchors: the checkpoint file (given, or the
    ``checkpoints.jsonl`` beside the log), and through ``client`` (when the engine
    is reachable) the checkpoint stream, the latest checkpoint and the event
    stream's headers; then its state snapshot against the log."""
    audit = AnchorAudit(engine_key=engine_key)
    conn = open_log(log_path)
    try:
        head = log_head(conn)
        sources = await _gather(audit, log_path, checkpoint_file, client)
        positions = [c.position for _, cs in sources for c in cs]
        hash_at = hashes_at(conn, [p for p in positions if p <= head])
        anchored = 0
        names: list[str] = []
        for source, cs in sources:
            good = check_checkpoints(audit, cs, head, hash_at, source)
            if good:
                anchored = max(anchored, min(good[-1].position, head))
                names.append("checkpoints")
        if client is not None:
            try:
                top = await check_stream(audit, client.nc, conn, head)
                if top:
                    anchored = max(anchored, min(top, head))
                    names.append("the stream")
            except Exception as exc:  # permissions, no JetStream: say so
                audit.skipped.append(f"the stream's Synvoice-Hash headers: not readable ({exc})")
        else:
            audit.skipped.append("the stream's Synvoice-Hash headers (no engine given)")
        if names and head > anchored and engine_in_use(log_path.parent):
            # The engine writing this log signs its head every few seconds: what
            # came since is not anchored yet, which is no finding while it runs.
            audit.skipped.append(
                f"records {anchored + 1}..{head}: newer than the running engine's last checkpoint"
            )
        elif names:
            check_unanchored(audit, head, anchored, " and ".join(dict.fromkeys(names)))
        else:
            audit.skipped.append(
                "no checkpoints: a cut tail, a rewrite with recomputed hashes or a forged "
                "append cannot be told (give --checkpoints FILE, or --data/--token)"
            )
        await asyncio.to_thread(check_snapshot, audit, conn, head)
    finally:
        conn.close()
    return audit


async def audit_remote(
    client: EngineClient, head: int, *, checkpoint_file: Path | None, engine_key: str | None
) -> AnchorAudit:
    """Check a running engine's log (as pulled) against the checkpoints."""
    audit = AnchorAudit(engine_key=engine_key)
    sources = await _gather(audit, None, checkpoint_file, client)
    hash_at: dict[int, bytes] = {}
    for p in sorted({c.position for _, cs in sources for c in cs if c.position <= head}):
        _, _, rows = await pull_rows(client, p - 1, 1)
        if rows and rows[0][0] == p:
            hash_at[p] = rows[0][2]
    anchored = 0
    for source, cs in sources:
        good = check_checkpoints(audit, cs, head, hash_at, source)
        if good:
            anchored = max(anchored, min(good[-1].position, head))
    if sources:
        # A running engine signs its head every few seconds: what came since is
        # not anchored yet, which is no finding (a log file's tail is one).
        if head > anchored:
            audit.skipped.append(
                f"records {anchored + 1}..{head}: newer than the engine's last checkpoint"
            )
    else:
        audit.skipped.append("no checkpoints to check the engine's log against")
    audit.skipped.append("the stream's headers and the snapshot (checked on a log file)")
    return audit


async def _gather(
    audit: AnchorAudit, log_path: Path | None, checkpoint_file: Path | None, client: Any
) -> list[tuple[str, list[Checkpoint]]]:
    out: list[tuple[str, list[Checkpoint]]] = []
    if checkpoint_file is None and log_path is not None:
        beside = log_path.parent / CHECKPOINTS_FILE
        checkpoint_file = beside if beside.exists() else None
    if checkpoint_file is not None:
        out.append((f"the checkpoint file {checkpoint_file}", load_file(checkpoint_file)))
    if client is not None:
        try:
            streamed = await stream_checkpoints(client.nc)
            if streamed:
                out.append(("the checkpoint stream", streamed))
        except Exception as exc:
            audit.skipped.append(f"the checkpoint stream: not readable ({exc})")
        try:
            page = await client.pull_page(0, 1)
            if page.checkpoint is not None:
                out.append(
                    ("the engine's latest checkpoint", [Checkpoint.from_dict(page.checkpoint)])
                )
        except Exception as exc:
            audit.skipped.append(f"the engine's latest checkpoint: {exc}")
    return [(s, cs) for s, cs in out if cs]
