"""One client must not hurt the others: a flooding device is refused at the edge
(``limit``) while another device keeps getting answers, and the engine keeps
its own broker connection (real embedded broker, the flood from another process)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from tests.support.harness import DeviceCreds, EngineHarness

ROOT = Path(__file__).resolve().parents[2]


async def hostile(dev: DeviceCreds, url: str, *args: str) -> dict[str, int]:
    assert dev.enrollment is not None
    opts = {k: v for k, v in dev.enrollment.nats_options().items() if k != "tls"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.hostile",
        args[0],
        url,
        dev.device_id,
        dev.secret.hex(),
        json.dumps(opts),
        *args[1:],
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=240)
    assert proc.returncode == 0
    result: dict[str, int] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def keep_asking(dev: DeviceCreds, stop: asyncio.Event) -> dict[str, Any]:
    ok, failed = 0, []
    while not stop.is_set():
        try:
            await dev.client.push([dev.created()])
            await dev.client.status()
            ok += 1
        except Exception as exc:
            failed.append(str(exc))
        await asyncio.sleep(0.02)
    return {"ok": ok, "failed": failed}


async def test_a_flooding_device_does_not_cut_the_engine_off(
    secure_engine: EngineHarness,
) -> None:
    eng = secure_engine
    mallory = await eng.device("mallory")
    alice = await eng.device("alice")
    assert eng.server.nc is not None
    reconnects = eng.server.nc.stats["reconnects"]
    stop = asyncio.Event()
    asking = asyncio.create_task(keep_asking(alice, stop))
    try:
        flood = await hostile(mallory, eng.url, "flood", "32", str(4 * 1024 * 1024 - 4096), "2")
    finally:
        stop.set()
    alice_saw = await asking
    print("flood outcomes:", flood, "alice:", alice_saw["ok"], "answered,", alice_saw["failed"])
    # Every junk push got a structured refusal (refused as junk, or as over the
    # device's limit when the engine had too many of its requests in hand).
    assert set(flood) <= {"bad_request", "limit"} and sum(flood.values()) == 64
    assert eng.server.nc.stats["reconnects"] == reconnects  # the engine was never cut off
    assert alice_saw["failed"] == [] and alice_saw["ok"] > 0
    broker_log = (eng.server.config.nats_dir / "nats-server.log").read_text().splitlines()
    assert not [ln for ln in broker_log if "Slow Consumer" in ln and "synvoice-engine" in ln]
