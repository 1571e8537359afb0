"""The engine core alone: ``EngineCore.handle`` called in this process, no broker,
no publisher. Beside the end-to-end figure it splits the cost into core (auth,
validation, group commit, SQLite) and what the transport and publisher add."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from engine import auth, codec, protocol
from engine.config import EngineConfig
from engine.core import EngineCore, admin

SIGNED = tuple[str, bytes]  # (device id, secret)


async def open_core(data_dir: Path) -> EngineCore:
    cfg = EngineConfig(data_dir=data_dir, nats_url="nats://127.0.0.1:1")
    cfg.publish = False
    cfg.plugins = False
    try:  # the unlimited site edition, as the engine processes of the benchmarks run
        from engine.license import dev_site_env

        env = dev_site_env()
        if hasattr(cfg, "license_key"):
            cfg.license_key = env["SYNVOICE_LICENSE_KEY"]
            cfg.vendor_public_key = env["SYNVOICE_VENDOR_PUBLIC_KEY"]
    except ImportError:
        pass
    core = await EngineCore.open(cfg)
    await core.start()
    return core


async def enroll(core: EngineCore, users: Sequence[str], n: int) -> list[SIGNED]:
    out = []
    for i in range(n):
        r = await admin.enroll(core, users[i % len(users)], f"inproc {i}")
        out.append((r.device_id, bytes.fromhex(r.secret)))
    return out


def device_users(core: EngineCore, devices: Sequence[SIGNED]) -> list[str]:
    return [core.state.devices[d].user for d, _ in devices]


async def _call(core: EngineCore, dev: SIGNED, subject: str, body: bytes) -> dict[str, object]:
    headers = auth.sign(dev[0], dev[1], subject, body)
    reply = codec.unpack(await core.handle(subject, headers, body))
    assert isinstance(reply, dict)
    return reply


async def push(
    core: EngineCore, devices: Sequence[SIGNED], bodies: Sequence[Sequence[bytes]]
) -> tuple[int, float]:
    """(events acknowledged, seconds): every device pushes its requests in turn."""
    acked = 0

    async def one(dev: SIGNED, reqs: Sequence[bytes]) -> None:
        nonlocal acked
        for body in reqs:
            reply = await _call(core, dev, protocol.PUSH, body)
            results = reply["results"]
            assert isinstance(results, list)
            acked += len(results)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(d, b) for d, b in zip(devices, bodies, strict=True)))
    return acked, time.perf_counter() - t0


async def numbers(core: EngineCore, devices: Sequence[SIGNED], per_device: int) -> float:
    """Numbers/s with every device asking for one number at a time."""

    async def one(dev: SIGNED) -> None:
        for _ in range(per_device):
            body = codec.pack({"items": [{"kind": "invoice", "doc_id": str(uuid.uuid4())}]})
            await _call(core, dev, protocol.NUMBERS, body)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(d) for d in devices))
    return len(devices) * per_device / (time.perf_counter() - t0)
