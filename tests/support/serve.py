"""Test support: ``synvoice serve`` with its embedded broker, as an OS process.

What an operator runs (broker users generated, live-views worker on), started
and killed by pid like a supervisor (systemd) would. The embedded broker's pid
and the worker's come from the engine's status reply.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.brokermanager import admin_nats_options
from engine.client import EngineClient
from engine.enrollment import Enrollment
from engine.errors import SynvoiceError
from engine.messages import EmbeddedBrokerStatus, StatusReply
from engine.natsproc import free_port
from engine.protocol import ADMIN_DEVICE
from tests.support.harness import ChildEngine

# Devices and the admin reconnect quickly and forever: the broker comes back.
RECONNECT: dict[str, Any] = {"max_reconnect_attempts": -1, "reconnect_time_wait": 0.1}


def alive(pid: int | None) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def all_gone(*pids: int | None) -> Callable[[], bool]:
    """A ``wait_for`` predicate: none of ``pids`` is alive any more."""
    return lambda: not any(alive(p) for p in pids)


class ServeProcess(ChildEngine):
    """``python -m engine serve --data D --nats-port P`` (a fixed port: devices
    reconnect to the same URL after every restart)."""

    stop_timeout = 20.0

    def __init__(self, data_dir: Path, port: int = 0, *extra: str) -> None:
        super().__init__(data_dir)
        self.port = port or free_port()
        self.extra = extra
        self.log_path = data_dir.parent / "serve.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def popen(self) -> subprocess.Popen[bytes]:
        """Start it without waiting (a refused start is read from ``output``)."""
        out = open(self.log_path, "ab")
        try:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "engine",
                    "serve",
                    "--data",
                    str(self.data_dir),
                    "--nats-port",
                    str(self.port),
                    *self.extra,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        finally:
            out.close()

    def start(self, timeout: float = 30.0) -> ServeProcess:
        self.proc = self.popen()
        runtime = self.data_dir / "engine.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited with {self.proc.returncode}: {self.output()}")
            try:
                if json.loads(runtime.read_text())["pid"] == self.proc.pid:
                    return self
            except (FileNotFoundError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"engine did not start: {self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    async def admin(self) -> EngineClient:
        opts = admin_nats_options(self.data_dir, self.admin_secret)
        return await EngineClient.connect(
            self.url, ADMIN_DEVICE, self.admin_secret, timeout=3, **opts, **RECONNECT
        )

    async def enroll(self, users: list[str]) -> list[Enrollment]:
        await self.status()  # answering (an enrollment is not retried: it is not idempotent)
        admin = await self.admin()
        try:
            return [Enrollment.from_reply(self.url, await admin.enroll(u)) for u in users]
        finally:
            await admin.close()

    async def status(self, timeout: float = 10.0) -> StatusReply:
        """The status reply, retried while the engine is not (yet, again) answering."""
        admin = await self.admin()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                try:
                    return await admin.status()
                except SynvoiceError as err:
                    if err.code != "unavailable" or loop.time() > deadline:
                        raise
                await asyncio.sleep(0.1)
        finally:
            await admin.close()

    async def children(self) -> tuple[int, int | None]:
        """The pids of the embedded broker and of the live-views worker."""
        st = await self.status()
        pid = embedded_broker(st).pid
        assert isinstance(pid, int)
        return pid, st.views.worker_pid if st.views is not None else None


def embedded_broker(st: StatusReply) -> EmbeddedBrokerStatus:
    """The status reply's ``embedded_broker`` part (there whenever the engine runs one)."""
    assert st.embedded_broker is not None, "the engine runs no embedded broker"
    return st.embedded_broker
