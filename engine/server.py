"""The engine process: embedded (or external) NATS + core + publisher + service."""

from __future__ import annotations

import asyncio
import fcntl
import importlib
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import nats
from nats.aio.client import Client

from engine.config import EngineConfig
from engine.core import EngineCore
from engine.natsproc import NatsServer, free_port, port_in_use
from engine.publisher import Publisher
from engine.service import EngineService

log = logging.getLogger("synvoice.server")

# Modules that extend a running engine: each has ``async def attach(server)``
# and may append coroutine functions to ``server.on_stop``. Missing ones are skipped.
ENGINE_PLUGINS = ("projections.live", "projections.billing_intake")


async def connect_nats(url: str, name: str, attempts: int = 100, **opts: Any) -> Client:
    """Connect, retrying the first connection too (the broker may be starting)."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            return await nats.connect(
                url,
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,
                connect_timeout=2,
                **opts,
            )
        except Exception as exc:  # refused, timeout, no servers
            last = exc
            await asyncio.sleep(0.2)
    raise ConnectionError(f"cannot reach NATS at {url}: {last}")


class EngineServer:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.nats_server: NatsServer | None = None
        self.core: EngineCore | None = None
        self.nc: Client | None = None
        self.publisher: Publisher | None = None
        self.service: EngineService | None = None
        self._lock: IO[str] | None = None
        self.nats_url = ""
        self.on_stop: list[Callable[[], Awaitable[None]]] = []

    async def start(self) -> None:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_data_dir(cfg.data_dir)
        if cfg.nats_url:
            self.nats_url = cfg.nats_url
        else:
            port = cfg.nats_port
            if port == 0 or port_in_use(port):
                port = free_port() if port == 0 else _refuse_port(port)
            self.nats_server = NatsServer(cfg.nats_dir, port=port)
            await asyncio.to_thread(self.nats_server.start)
            self.nats_url = self.nats_server.url
        self.core = await EngineCore.open(cfg)
        await self.core.start()
        self.nc = await connect_nats(self.nats_url, "synvoice-engine")
        if cfg.publish:
            self.publisher = Publisher(self.core, self.nc)
            await self.publisher.start()
        for name in ENGINE_PLUGINS if cfg.plugins else ():
            try:
                mod = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name == name:
                    continue
                raise
            await mod.attach(self)
        self.service = EngineService(self.core, self.nc)
        await self.service.start()
        cfg.runtime_path.write_text(
            json.dumps(
                {
                    "nats_url": self.nats_url,
                    "pid": os.getpid(),
                    "log": str(cfg.log_path.resolve()),
                    "embedded_nats": self.nats_server is not None,
                },
                indent=2,
            )
        )

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()
        for fn in reversed(self.on_stop):
            try:
                await fn()
            except Exception:
                log.exception("plugin stop failed")
        if self.publisher is not None:
            try:
                await self.publisher.drain(timeout=5)
            except Exception:
                log.warning("stopping with events not yet published (published at restart)")
            await self.publisher.stop()
        if self.nc is not None:
            try:
                await self.nc.drain()
            except Exception:
                pass
        if self.core is not None:
            await self.core.close()
        if self.nats_server is not None:
            await asyncio.to_thread(self.nats_server.stop)
        try:  # only our own runtime file (another engine may have replaced it)
            rt = self.config.runtime_path
            if json.loads(rt.read_text()).get("pid") == os.getpid():
                rt.unlink()
        except (FileNotFoundError, ValueError):
            pass
        if self._lock is not None:
            self._lock.close()

    async def run_forever(self, ready: Any = None) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        if ready is not None:
            ready(self)
        try:
            await stop.wait()
        finally:
            await self.stop()


def _refuse_port(port: int) -> int:
    raise RuntimeError(
        f"port {port} on 127.0.0.1 is in use; pass --nats-port 0 for any free port, "
        "or --nats-url to use that broker"
    )


def _lock_data_dir(data_dir: Path) -> IO[str]:
    f = open(data_dir / "engine.lock", "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise RuntimeError(f"another engine is running on {data_dir}") from None
    f.write(str(os.getpid()))
    f.flush()
    return f
