"""The live projection's worker process: killed, restarted, never outliving the engine."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import msgspec
import pytest

from projections.live import live_projection
from projections.rebuild import rebuild
from projections.store import ViewStore
from tests.bench.procstat import children
from tests.support.harness import EngineHarness, EngineProcess, wait_for

# These tests watch the engine's live-views worker.
pytestmark = pytest.mark.views


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


async def test_a_killed_worker_is_restarted_and_the_views_match_a_rebuild(
    engine: EngineHarness, tmp_path: Path
) -> None:
    live = live_projection(engine.server)
    assert live is not None
    dev = await engine.device("alice")
    await dev.client.push([dev.created(number=n) for n in range(1, 101)])
    await live.wait_for(engine.core.log.head)
    first = live.pid
    assert first is not None and live.starts == 1
    os.kill(first, signal.SIGKILL)
    # Commits go on while no worker runs; the next one catches up from the views.
    await dev.client.push([dev.created(number=n) for n in range(101, 201)])
    await wait_for(lambda: live.starts == 2)
    await live.wait_for(engine.core.log.head)
    assert live.pid != first
    views = msgspec.to_builtins((await (await engine.admin()).status()).views)
    assert views == {
        "position": engine.core.log.head,
        "behind": 0,
        "worker_pid": live.pid,
        "restarts": 1,
        "error": None,
    }
    built = rebuild(engine.core.config.log_path, tmp_path / "rebuilt.sqlite")
    views = ViewStore.open_readonly(live.path)
    try:
        assert views.digest() == built.digest
    finally:
        views.close()


async def test_the_worker_ends_with_a_killed_engine(engine_process: EngineProcess) -> None:
    engine_process.start()
    assert engine_process.proc is not None
    await wait_for(lambda: children(engine_process.proc.pid) != [])  # type: ignore[union-attr]
    [worker] = children(engine_process.proc.pid)
    engine_process.kill9()
    # Its stdin closes with the engine: it applies what is there and ends.
    await wait_for(lambda: not _alive(worker), timeout=20)
