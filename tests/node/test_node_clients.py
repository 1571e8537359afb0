"""A device and an integration in JavaScript (tests/node/*.mjs), built from the
wire spec only, against a real engine with its embedded broker and generated users.

Node.js and the npm packages (``make node-deps``: ``npm ci`` in tests/node) are
needed; without them these tests are skipped, loudly, and under ``CI=true`` they fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.enrollment import Enrollment
from engine.messages import IntegrationCredentials
from tests.support.exports import diff, edits, replay_documents
from tests.support.harness import EngineHarness
from tests.support.spec import NODE_DIR, embedded_engine, need_node


@pytest.fixture
def node() -> str:
    """Checked before the engine starts: a missing Node skips (or fails) at once."""
    return need_node()


@pytest.fixture
async def secure(tmp_path: Path) -> AsyncIterator[EngineHarness]:
    async with embedded_engine(tmp_path / "data") as h:
        yield h


async def _node(node: str, *argv: str, timeout: float = 60) -> Any:
    proc = await asyncio.create_subprocess_exec(
        node, *argv, cwd=NODE_DIR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, f"node {argv[0]} failed ({proc.returncode}): {err.decode()}"
    return json.loads(out.decode().strip().splitlines()[-1])


async def test_a_javascript_device_signs_pushes_numbers_and_pulls(
    node: str, secure: EngineHarness, tmp_path: Path
) -> None:
    admin = await secure.admin()
    await admin.set_mode("centralized")
    token = Enrollment.from_reply(secure.url, await admin.enroll("nina", "node")).token()
    out = await _node(node, "device.mjs", "--token", token, "--docs", "12")
    assert out["mode"] == "centralized"
    assert out["pushed"] == 12 and out["numbers"] == list(range(1, 13))
    assert sorted(out["assigned"]) == list(range(1, 13))  # as pulled from the log
    assert out["duplicates"] == 2
    assert (out["error_code"], out["error_header"]) == ("schema", "422")
    assert out["pulled"] == out["head"] == secure.core.log.head
    assert out["chain_ok"], "the pulled events do not re-hash to the engine's chain"
    docs = replay_documents(secure.core.config.log_path, tmp_path)
    mine = [docs[d] for d in out["docs"]]
    assert sorted(d["number"] for d in mine) == list(range(1, 13))
    assert {d["status"] for d in mine} == {"draft", "issued", "void"}
    assert all(d["currency"] == "EUR" for d in mine)


async def _lines(proc: asyncio.subprocess.Process) -> AsyncIterator[dict[str, Any]]:
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line:
            return
        yield json.loads(line)


async def test_a_javascript_integration_killed_mid_stream_resumes_equal_to_the_replay(
    node: str, secure: EngineHarness, tmp_path: Path
) -> None:
    dev = await secure.device("alice")
    created = [dev.created() for _ in range(300)]
    for i in range(0, len(created), 100):
        await dev.client.push(created[i : i + 100])
    ids = [e.doc_id for e in created if e.doc_id is not None]
    await dev.client.push(edits(dev, ids, "B", secure.core.log.head))
    assert secure.server.publisher is not None
    await secure.server.publisher.drain()
    admin = await secure.admin()
    cred = await admin.integration("add", "export")
    assert isinstance(cred, IntegrationCredentials) and cred.inbox_prefix is not None
    export = tmp_path / "export.json"
    argv = [
        "integration.mjs",
        *("--url", secure.url, "--user", cred.user, "--password", cred.password),
        *("--inbox-prefix", cred.inbox_prefix, "--stream", cred.stream),
        *("--durable", "node-export"),
        *("--export", str(export), "--batch", "50"),
    ]

    async def start(*more: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            node, *argv, *more, cwd=NODE_DIR, stdout=asyncio.subprocess.PIPE
        )

    # Killed with SIGKILL mid-stream, while a fetched batch is not yet applied.
    proc = await start("--pause-ms", "40")
    try:
        async for line in _lines(proc):
            if line["position"] >= 250:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
    killed_at = json.loads(export.read_text())["position"]
    assert 250 <= killed_at < secure.core.log.head

    # Newer events while it is down: after the restart they come before the
    # redelivery of what it had fetched but not acknowledged.
    await dev.client.push(edits(dev, ids, "C", secure.core.log.head))
    await secure.server.publisher.drain()
    head = secure.core.log.head
    held = 0
    proc = await start()
    try:
        async for line in _lines(proc):
            held = max(held, line["held"])
            if line["position"] >= head:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
    out = await _node(node, "export.mjs", str(export))
    assert out["position"] == head
    replay = replay_documents(secure.core.config.log_path, tmp_path)
    assert diff(out["documents"], replay) == []
    print(f"killed at {killed_at} of {head}; most events held behind a hole: {held}")
