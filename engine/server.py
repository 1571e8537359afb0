"""The engine process: embedded (or external) NATS + core + publisher + service.

Embedded broker: the engine opens its log first, writes the broker's users from
its state (``engine.brokerauth``), then starts nats-server with
``DATA/nats/broker.conf`` (deploy/nats-server.conf + the generated users + TLS).
External broker (``--nats-url``): used as it is; its operator secures it.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import signal
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import nats
from nats.aio.client import Client

from engine import brokerauth, plugins
from engine.config import EngineConfig
from engine.core import EngineCore
from engine.natsproc import DEFAULT_CONFIG, NatsServer, free_port, port_in_use, server_list
from engine.publisher import Publisher
from engine.service import EngineService

log = logging.getLogger("synvoice.server")

# Modules that extend a running engine: each has ``async def attach(server)``
# and may append coroutine functions to ``server.on_stop``. Missing ones are skipped.


async def connect_nats(url: str, name: str, attempts: int = 100, **opts: Any) -> Client:
    """Connect, retrying the first connection too (the broker may be starting)."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            return await nats.connect(
                server_list(url),
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
        self.broker: brokerauth.BrokerAuth | None = None  # embedded broker with users
        self.tls: ssl.SSLContext | None = None
        self.on_stop: list[Callable[[], Awaitable[None]]] = []

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()  # whatever did start (broker, log) is stopped again
            raise

    async def _start(self) -> None:
        cfg = self.config
        _make_private_dir(cfg.data_dir)
        self._lock = _lock_data_dir(cfg.data_dir)
        ca = cfg.trusted_ca
        if (cfg.tls_cert is None) != (cfg.tls_key is None):
            raise RuntimeError("TLS needs both tls_cert and tls_key (SYNVOICE_TLS_CERT/_KEY)")
        self.tls = brokerauth.tls_context(ca_file=ca) if ca is not None else None
        self.core = core = await EngineCore.open(cfg)
        opts: dict[str, Any] = {"tls": self.tls} if self.tls is not None else {}
        if cfg.nats_url:
            self.nats_url = cfg.nats_url
        else:
            await self._start_embedded_broker()
            if self.broker is not None:
                opts = self.broker.engine_options()
        core.broker_info = {
            "auth": self.broker is not None,
            "tls_ca": ca.read_text() if ca is not None else None,
        }
        await core.start()
        self.nc = await connect_nats(self.nats_url, "synvoice-engine", **opts)
        # A pull page must fit the broker's max_payload (an external broker may keep
        # NATS's 1 MB default): half of it for the bodies leaves room for the hashes.
        cfg.pull_max_bytes = min(cfg.pull_max_bytes, self.nc.max_payload // 2)
        if cfg.publish:
            self.publisher = Publisher(core, self.nc)
            await self.publisher.start()
        if self.broker is not None:
            await self.broker.ensure_mirrors()  # integrations' copies of the stream
        for _name, attach in plugins.load(plugins.ENGINE_GROUP) if cfg.plugins else ():
            await attach(self)
        self.service = EngineService(self.core, self.nc)
        await self.service.start()
        # Private: with --nats-url the URL may carry the engine's broker password.
        brokerauth.write_private(
            cfg.runtime_path,
            json.dumps(
                {
                    "nats_url": self.nats_url,
                    "pid": os.getpid(),
                    "log": str(cfg.log_path.resolve()),
                    "embedded_nats": self.nats_server is not None,
                    # What the admin tools need to connect (engine.brokerauth).
                    "broker_auth": self.broker is not None,
                    "tls_ca": str(ca.resolve()) if ca is not None else None,
                },
                indent=2,
            ),
        )

    async def _start_embedded_broker(self) -> None:
        cfg = self.config
        assert self.core is not None
        port = cfg.nats_port
        if port == 0 or port_in_use(port):
            port = free_port() if port == 0 else _refuse_port(port)
        cfg.nats_dir.mkdir(parents=True, exist_ok=True)
        tls = (cfg.tls_cert, cfg.tls_key) if cfg.tls_cert and cfg.tls_key else None
        if cfg.broker_auth:
            self.broker = brokerauth.BrokerAuth(cfg.nats_dir, self.core, self.tls)
            self.broker.write()
        conf = cfg.nats_dir / brokerauth.SERVER_FILE
        conf.write_text(
            brokerauth.render_server(DEFAULT_CONFIG, cfg.nats_dir, cfg.broker_auth, tls)
        )
        self.nats_server = NatsServer(cfg.nats_dir, port=port, config=conf, host=cfg.nats_host)
        await asyncio.to_thread(self.nats_server.start)
        self.nats_url = self.nats_server.url
        if self.broker is not None:
            self.broker.server = self.nats_server
            self.core.on_credentials_changed = self.broker.refresh

    def admin_nats_options(self) -> dict[str, Any]:
        """``nats.connect`` options for an admin client of this engine."""
        if self.broker is not None:
            return self.broker.admin_options()
        return {"tls": self.tls} if self.tls is not None else {}

    async def stop(self) -> None:
        """Stop whatever is running (safe to call twice, or after a failed start)."""
        if self.service is not None:
            await self.service.stop()
            self.service = None
        for fn in reversed(self.on_stop):
            try:
                await fn()
            except Exception:
                log.exception("plugin stop failed")
        self.on_stop.clear()
        if self.publisher is not None:
            try:
                await self.publisher.drain(timeout=5)
            except Exception:
                log.warning("stopping with events not yet published (published at restart)")
            await self.publisher.stop()
            self.publisher = None
        if self.nc is not None:
            try:
                await self.nc.drain()
            except Exception:
                pass
            self.nc = None
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
            self._lock = None

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


def _make_private_dir(data_dir: Path) -> None:
    """The data folder holds secrets (admin.secret, device secrets in the log,
    broker users): a new one is owner-only; an existing open one gets a warning."""
    if not data_dir.exists():
        data_dir.mkdir(parents=True, mode=0o700)
        return
    if data_dir.stat().st_mode & 0o077:
        log.warning(
            "data folder %s is accessible to other users; it holds credentials (chmod 700 %s)",
            data_dir,
            data_dir,
        )


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
