"""Group commit: one job whose transaction cannot commit fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine import protocol
from engine.errors import SynvoiceError
from tests.bench import inproc
from tests.bench.workload import push_bodies


async def test_a_job_whose_commit_fails_fails_alone_and_the_batch_commits(
    tmp_path: Path,
) -> None:
    core = await inproc.open_core(tmp_path / "data")
    try:
        devs = await inproc.enroll(core, ["alice", "bob"], 4)
        bodies = push_bodies([d for d, _ in devs], inproc.device_users(core, devs), 400, 50)
        head = core.log.head
        commits: list[int] = []
        core.listeners.append(lambda sealed: commits.append(len(sealed)))

        def poisoned(batch: Any) -> Callable[[int], Any]:
            # stands for any job whose writes break a constraint at COMMIT time
            batch.side.append(("INSERT INTO no_such_table VALUES (?)", [(1,)]))
            return lambda _base: {}

        async def push(dev: inproc.SIGNED, body: bytes) -> dict[str, object]:
            return await inproc._call(core, dev, protocol.PUSH, body)

        results = await asyncio.gather(
            core.writer.submit(poisoned, 1),
            *(push(d, b[0]) for d, b in zip(devs, bodies, strict=True)),
            return_exceptions=True,
        )
        bad, good = results[0], results[1:]
        assert isinstance(bad, SynvoiceError) and bad.code == "internal"
        assert all(isinstance(r, dict) and len(r["results"]) == 50 for r in good), good  # type: ignore[arg-type]
        assert core.log.head == head + 200
        assert await core.log.verify() == (head + 200, None)
        assert sum(commits) == 200
        # the engine goes on serving
        again = await push(devs[0], bodies[0][1])
        assert len(again["results"]) == 50  # type: ignore[arg-type]
    finally:
        await core.close()
