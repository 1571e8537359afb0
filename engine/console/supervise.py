"""The engine plugin that runs the console in its own process and supervises it.

Why a process: page rendering and PDF work must never take the engine's event
loop (its group commits), and a crash of the console leaves the engine up.
The child reads nothing but watches its stdin: when the engine ends, the pipe
closes and the console stops; a console that dies is started again.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import weakref
from typing import TYPE_CHECKING

from engine.console.config import ConsoleConfig

if TYPE_CHECKING:
    from engine.server import EngineServer

log = logging.getLogger("synvoice.console")
STOP_TIMEOUT = 10.0
EXIT_NO_PORT = 3  # engine.console.__main__: the address is taken

_attached: weakref.WeakKeyDictionary[EngineServer, ConsoleProcess] = weakref.WeakKeyDictionary()


def console_process(server: EngineServer) -> ConsoleProcess | None:
    """The console attached to ``server`` (tests and tools)."""
    return _attached.get(server)


async def attach(server: EngineServer) -> None:
    cfg = ConsoleConfig()
    if not cfg.enabled:
        log.info("web console disabled (SYNVOICE_CONSOLE=0)")
        return
    proc = ConsoleProcess(server, cfg)
    await proc.start()
    server.on_stop.append(proc.stop)
    _attached[server] = proc


class ConsoleProcess:
    def __init__(self, server: EngineServer, cfg: ConsoleConfig) -> None:
        self.server = server
        self.cfg = cfg
        self.url: str | None = None
        self.starts = 0
        self.pid: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="synvoice-console")

    def _argv(self) -> list[str]:
        c = self.cfg
        port = c.port
        if self.url is not None:  # a restart keeps the port it had
            port = int(self.url.rsplit(":", 1)[1].rstrip("/"))
        argv = [
            sys.executable,
            "-m",
            "engine.console",
            "--data",
            str(self.server.config.data_dir.resolve()),
            "--host",
            c.host,
            "--port",
            str(port),
        ]
        if c.tls_cert and c.tls_key:
            argv += ["--tls-cert", str(c.tls_cert), "--tls-key", str(c.tls_key)]
        return argv

    async def _supervise(self) -> None:
        backoff = 0.5
        while not self._stopping:
            proc = await asyncio.create_subprocess_exec(
                *self._argv(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
            )
            self._proc, self.pid = proc, proc.pid
            self.starts += 1
            assert proc.stdout is not None
            try:
                async for raw in proc.stdout:
                    line = raw.decode(errors="replace").rstrip()
                    word, _, rest = line.partition(" ")
                    if word == "listening":
                        first = self.url is None
                        self.url = rest
                        self._ready.set()
                        backoff = 0.5
                        if first:  # `make serve` shows it on a line of its own
                            print(f"console: {rest}", flush=True)
                    elif line:
                        print(line, flush=True)  # e.g. the first operator password, once
                rc = await proc.wait()
            finally:
                if proc.returncode is None:  # cancelled: never leave a console behind
                    proc.kill()
                    await proc.wait()
            self._proc = None
            if self._stopping:
                break
            if rc == EXIT_NO_PORT:
                log.error("web console not started: its address is taken (SYNVOICE_CONSOLE_PORT)")
                break
            log.warning("web console ended (exit %s); starting another", rc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def wait_ready(self, timeout: float = 30.0) -> str:
        await asyncio.wait_for(self._ready.wait(), timeout)
        assert self.url is not None
        return self.url

    async def stop(self) -> None:
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log.warning("web console did not stop; killed")
                proc.kill()
                await proc.wait()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
