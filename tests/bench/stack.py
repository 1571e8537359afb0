"""What a benchmark runs against: its own nats-server and an engine in another process.

The engine runs as ``python -m engine serve`` (optionally under pyinstrument),
so the benchmark client and the engine never share one Python process: on a
2-core machine that is the deployment that matters.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.client import EngineClient
from engine.enrollment import Enrollment
from engine.messages import StatusReply
from engine.natsproc import NatsServer, terminate
from engine.protocol import ADMIN_DEVICE
from tests.bench.procstat import children


@dataclass
class Device:
    device_id: str
    user: str
    secret: bytes
    token: str
    conn: EngineClient | None = None  # None: enrolled only (e.g. for a device agent)

    @property
    def client(self) -> EngineClient:
        if self.conn is None:
            raise RuntimeError(f"device {self.device_id} is not connected")
        return self.conn


class EngineProc:
    """``python -m engine serve --data DIR --nats-url URL`` as a child process."""

    def __init__(
        self,
        data_dir: Path,
        nats_url: str,
        profile_out: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.nats_url = nats_url
        self.profile_out = profile_out
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file = data_dir.parent / "engine.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        serve = ["serve", "--data", str(self.data_dir), "--nats-url", self.nats_url]
        if self.profile_out is None:
            return [sys.executable, "-m", "engine", *serve]
        if self.profile_out.suffix == ".prof":  # cProfile: exact call counts, own times
            return [
                sys.executable,
                "-m",
                "cProfile",
                "-o",
                str(self.profile_out),
                "-m",
                "engine",
                *serve,
            ]
        # pyinstrument samples the main thread (the event loop); SQLite runs in
        # aiosqlite's worker thread and shows up as time awaiting it.
        return [
            sys.executable,
            "-m",
            "pyinstrument",
            "--interval",
            "0.0005",
            "-r",
            "pyisession",
            "-o",
            str(self.profile_out),
            "-m",
            "engine",
            *serve,
        ]

    def _spawn(self) -> subprocess.Popen[bytes]:
        with open(self.log_file, "ab") as out:
            return subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "PYTHONUNBUFFERED": "1",
                    **_site_edition_env(),
                    "SYNVOICE_CONSOLE": "0",  # the engine alone (bench_console sets it)
                    **self.env,
                },
            )

    async def start(self, timeout: float = 60.0) -> EngineProc:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        runtime = self.data_dir / "engine.json"
        if runtime.exists():
            runtime.unlink()
        self.proc = self._spawn()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"engine exited with {self.proc.returncode}; see {self.log_file}"
                )
            if runtime.exists():
                try:
                    if json.loads(runtime.read_text())["pid"] == self.proc.pid:
                        return self
                except (ValueError, KeyError):
                    pass  # being written
            await asyncio.sleep(0.05)
        self.stop()
        raise TimeoutError(f"engine did not start within {timeout}s; see {self.log_file}")

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (a clean stop, so a profiler writes its report), then SIGKILL."""
        terminate(self.proc, timeout)
        self.proc = None

    @property
    def admin_secret(self) -> bytes:
        return bytes.fromhex((self.data_dir / "admin.secret").read_text().strip())


def _site_edition_env() -> dict[str, str]:
    """The unlimited "site" edition (vendor-issued for benchmarks): a benchmark
    enrolls 64 devices and stores a million events, beyond the trial's limits."""
    try:
        from engine.license import dev_site_env
    except ImportError:  # an engine without editions
        return {}
    env: dict[str, str] = dev_site_env()
    return env


class Stack:
    """A nats-server and an engine process in ``root``, plus enrolled devices."""

    def __init__(
        self, root: Path, profile_out: Path | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.root = root
        self.nats = NatsServer(root / "nats")
        self.engine = EngineProc(root / "data", self.nats.url, profile_out, env)
        self.clients: list[EngineClient] = []
        self._admin: EngineClient | None = None

    @property
    def url(self) -> str:
        return self.nats.url

    async def __aenter__(self) -> Stack:
        await asyncio.to_thread(self.nats.start)
        try:
            await self.engine.start()
        except BaseException:
            await asyncio.to_thread(self.nats.stop)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for c in self.clients:
            try:
                await asyncio.wait_for(c.close(), 10)
            except Exception:
                pass
        self.clients.clear()
        self._admin = None
        await asyncio.to_thread(self.engine.stop)
        await asyncio.to_thread(self.nats.stop)

    def pids(self) -> dict[str, int]:
        """The processes whose CPU a benchmark reports."""
        out = {"engine": self.engine.pid, "bench client": os.getpid()}
        # The live projection folds in a child process of the engine: its CPU
        # is the engine's too (reported apart so the split shows).
        for i, child in enumerate(children(self.engine.pid)):
            out["engine: live views worker" + (f" {i + 1}" if i else "")] = child
        if self.nats.proc is not None:
            out["nats-server"] = self.nats.proc.pid
        return out

    async def admin(self) -> EngineClient:
        if self._admin is None:
            self._admin = await EngineClient.connect(
                self.url, ADMIN_DEVICE, self.engine.admin_secret
            )
            self.clients.append(self._admin)
        return self._admin

    async def enroll(self, user: str, name: str | None = None, connect: bool = True) -> Device:
        """Enroll a device with the admin credential (DATA/admin.secret)."""
        r = await (await self.admin()).enroll(user, name)
        secret = bytes.fromhex(r.secret)
        token = Enrollment(self.url, r.device_id, secret, r.user, r.slot).token()
        client = None
        if connect:
            client = await EngineClient.connect(self.url, r.device_id, secret, timeout=60)
            self.clients.append(client)
        return Device(r.device_id, r.user, secret, token, client)

    async def devices(self, n: int, users: Sequence[str]) -> list[Device]:
        return [await self.enroll(users[i % len(users)], f"bench {i}") for i in range(n)]

    async def status(self) -> StatusReply:
        return await (await self.admin()).status()

    async def wait_published(self, head: int, timeout: float = 300.0) -> None:
        """Until the engine has published everything up to ``head`` to JetStream."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (await self.status()).published < head:
            if loop.time() > deadline:
                raise TimeoutError(f"engine did not publish up to {head} in {timeout}s")
            await asyncio.sleep(0.1)


class Responder:
    """A trivial NATS responder in another process (the request/reply ceiling)."""

    def __init__(self, url: str, subject: str) -> None:
        self.url = url
        self.subject = subject
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Responder:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.bench.responder",
            self.url,
            self.subject,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise RuntimeError(f"responder did not start: {line!r}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class SmtpSink:
    """A loopback SMTP server in another process (``tests.bench.smtpsink``)."""

    def __init__(self) -> None:
        from engine.natsproc import free_port

        self.host = "127.0.0.1"
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.received: int | None = None

    async def __aenter__(self) -> SmtpSink:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.bench.smtpsink",
            str(self.port),
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise RuntimeError(f"SMTP sink did not start: {line!r}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.stdout is not None
        try:
            out = await asyncio.wait_for(self.proc.stdout.read(), 10)
            self.received = int(out.strip() or 0)
        except (TimeoutError, ValueError):
            self.proc.kill()
        await self.proc.wait()


async def run_worker(log_dir: Path, *args: str, timeout: float = 1800.0) -> dict[str, Any]:
    """Run ``python -m tests.bench.worker ARGS`` and return its JSON line."""
    err_path = log_dir / f"worker-{args[0]}.log"
    with open(err_path, "ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.bench.worker",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return {"status": "error", "message": f"worker {args[0]} timed out after {timeout}s"}
    lines = out.decode().strip().splitlines()
    if not lines:
        tail = err_path.read_text()[-500:] if err_path.exists() else ""
        return {"status": "error", "message": f"worker {args[0]} printed nothing: {tail}"}
    result: dict[str, Any] = json.loads(lines[-1])
    if result.get("status") == "error" and err_path.exists():
        result["log"] = str(err_path)
    return result


async def wait_idle(
    pid: int, below: float = 0.1, window: float = 1.0, timeout: float = 600.0
) -> float:
    """Wait until a process uses less than ``below`` of a core over two windows in
    a row (its start-up work is done); returns the seconds waited."""
    from tests.bench.procstat import cpu_seconds

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    quiet = 0
    while quiet < 2 and loop.time() - t0 < timeout:
        c0 = cpu_seconds(pid)
        await asyncio.sleep(window)
        quiet = quiet + 1 if (cpu_seconds(pid) - c0) / window < below else 0
    return loop.time() - t0
