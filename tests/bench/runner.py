"""Runs the selected benchmarks in a fixed order and collects their results."""

from __future__ import annotations

import importlib
import os
import platform
import sqlite3
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

from tests.bench.context import Context
from tests.bench.report import BenchResult

# Order matters: rebuild reads the shared 1M-event log before memory appends to it.
BENCHES = ("append", "numbers", "rebuild", "catchup", "memory", "billing", "hotpath", "console")


def module(name: str) -> Any:
    return importlib.import_module(f"tests.bench.bench_{name}")


async def run(ctx: Context, names: Sequence[str]) -> list[BenchResult]:
    results: list[BenchResult] = []
    for name in BENCHES:
        if name not in names:
            continue
        mod = module(name)
        ctx.console.rule(f"[bold]{mod.TITLE}")
        t0 = time.perf_counter()
        try:
            res: BenchResult = await mod.run(ctx)
        except Exception as exc:
            ctx.console.print(traceback.format_exc(), style="red", markup=False)
            res = BenchResult(
                name, mod.TITLE, status="error", message=f"{type(exc).__name__}: {exc}"
            )
        res.seconds = time.perf_counter() - t0
        results.append(res)
    return results


def meta(ctx: Context, argv: Sequence[str]) -> dict[str, Any]:
    from engine import __version__
    from engine.natsproc import nats_server_binary

    try:
        nats_version = subprocess.run(
            [nats_server_binary(), "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except Exception as exc:
        nats_version = f"unknown ({exc})"
    return {
        "command": " ".join(argv),
        "started": ctx.stamp,
        "scale": ctx.scale,
        "synvoice": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "sqlite": sqlite3.sqlite_version,
        "nats_server": nats_version,
    }
