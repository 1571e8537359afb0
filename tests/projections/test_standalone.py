"""The standalone JetStream projection as a real process, killed with SIGKILL mid-stream."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from projections.rebuild import rebuild
from projections.store import ViewsError, ViewStore, lock_views
from tests.support.harness import EngineHarness, wait_for


def checkpoint(views: Path) -> int:
    try:
        store = ViewStore.open_readonly(views)
    except ViewsError:
        return 0
    try:
        return store.checkpoint()[0]
    except Exception:
        return 0
    finally:
        store.close()


def start_projection(engine: EngineHarness, views: Path, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    try:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine",
                "project",
                "--nats-url",
                engine.url,
                "--views",
                str(views),
                "--durable",
                "audit",
                "--data",
                str(engine.server.config.data_dir),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        out.close()


async def test_killed_standalone_resumes_and_ends_identical_to_a_rebuild(
    engine: EngineHarness, tmp_path: Path
) -> None:
    dev = await engine.device("alice")
    office = await engine.device("bob")
    for i in range(8):
        await dev.client.push([dev.created(number=i * 250 + n + 1) for n in range(250)])
    views = tmp_path / "standalone.sqlite"
    proc_log = tmp_path / "projection.log"
    proc = start_projection(engine, views, proc_log)
    killed = asyncio.Event()
    pushed = 0

    async def keep_pushing() -> None:
        # events keep streaming until the kill and a while after it
        nonlocal pushed
        after_kill = 5
        while after_kill:
            await office.client.push([office.created() for _ in range(100)])
            pushed += 100
            await asyncio.sleep(0.02)
            if killed.is_set():
                after_kill -= 1

    pusher = asyncio.create_task(keep_pushing())
    try:
        await wait_for(lambda: checkpoint(views) > 2000, timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = checkpoint(views)
        killed.set()
        await pusher
        await office.client.push([office.created(number=9999)])

        proc = start_projection(engine, views, proc_log)
        await wait_for(lambda: checkpoint(views) == engine.core.log.head, timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        pusher.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert 2000 < killed_at < engine.core.log.head - 500
    expected = rebuild(engine.server.config.log_path, tmp_path / "full.sqlite")
    store = ViewStore.open_readonly(views)
    try:
        assert store.digest() == expected.digest
        assert store.counts()["history"] == 8 * 250 + pushed + 1
    finally:
        store.close()
    assert "projecting SYNVOICE_EVENTS" in proc_log.read_text()


async def test_a_second_projection_on_the_same_views_file_refuses_to_start(
    engine: EngineHarness, tmp_path: Path
) -> None:
    views = tmp_path / "standalone.sqlite"
    fd = lock_views(views)  # a projection already writes this file
    try:
        proc = start_projection(engine, views, tmp_path / "projection.log")
        assert proc.wait(timeout=60) != 0
    finally:
        os.close(fd)
    out = (tmp_path / "projection.log").read_text()
    assert "being written by another projection" in out
    assert checkpoint(views) == 0
