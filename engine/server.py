"""The engine process: embedded (or external) NATS + core + publisher + service.

Embedded broker: the engine opens its log first, writes the broker's users from
its state (``engine.brokermanager``), then starts nats-server with
``DATA/nats/broker.conf`` (deploy/nats-server.conf + the generated users + TLS).
External broker (``--nats-url``): used as it is; its operator secures it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import nats
from nats.aio.client import Client

from engine import brokerauth, brokermanager, plugins
from engine.anchor import Anchor
from engine.config import EngineConfig
from engine.core import EngineCore
from engine.datalock import LOCK_FILE, try_lock
from engine.messages import EmbeddedBrokerStatus
from engine.natsproc import (
    DEFAULT_CONFIG,
    NatsServer,
    free_port,
    port_in_use,
    server_list,
    terminate,
)
from engine.publisher import Publisher
from engine.service import EngineService

log = logging.getLogger("synvoice.server")

BROKER_CHECK_EVERY = 0.2  # seconds between checks that the embedded broker still runs
MIN_FREE = 1 << 20  # bytes free on the broker's disk before a stuck broker is restarted
REPAIR_EVERY = 30.0  # seconds between restarts of a broker that is up but stuck
LOCK_WAIT = 5.0  # seconds a start waits for a just-killed broker to let go of its store

# Modules that extend a running engine: each has ``async def attach(server)``
# and may append coroutine functions to ``server.on_stop``. Missing ones are skipped.


async def connect_nats(url: str, name: str, attempts: int = 100, **opts: Any) -> Client:
    """Connect, retrying the first connection too (the broker may be starting)."""
    last: Exception | None = None

    # One line per event instead of nats-py's default tracebacks: a broker
    # restart (engine._watch_broker) is an expected, handled fault.
    async def on_error(exc: Exception) -> None:
        log.warning("broker connection: %s", " ".join(f"{type(exc).__name__} {exc}".split()))

    connected: list[Client] = []

    async def on_disconnected() -> None:
        nc = connected[0] if connected else None
        if nc is None or not (nc.is_closed or nc.is_draining):  # not our own stop
            log.warning("lost the broker connection; reconnecting")

    async def on_reconnected() -> None:
        log.info("reconnected to the broker")

    callbacks: dict[str, Any] = {
        "error_cb": on_error,
        "disconnected_cb": on_disconnected,
        "reconnected_cb": on_reconnected,
    }
    for _ in range(attempts):
        try:
            nc = await nats.connect(
                server_list(url),
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,
                connect_timeout=2,
                **{**callbacks, **opts},
            )
            connected.append(nc)
            return nc
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
        self.anchor: Anchor | None = None
        self.service: EngineService | None = None
        self._lock: IO[str] | None = None
        self._store_lock: IO[str] | None = None  # inherited by each broker we start
        self._broker_watch: asyncio.Task[None] | None = None
        self.broker_restarts = 0
        self._repaired_at = float("-inf")  # loop time of the last restart of a stuck broker
        self.nats_url = ""
        self.broker: brokermanager.BrokerAuth | None = None  # embedded broker with users
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
        self.tls = brokermanager.tls_context(ca_file=ca) if ca is not None else None
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
        # Before publishing: a log older than what was published is refused here.
        self.anchor = Anchor(
            core, self.nc if cfg.publish else None, accept_rollback=cfg.accept_log_rollback
        )
        await self.anchor.start()
        if cfg.publish:
            self.publisher = Publisher(core, self.nc, on_stuck=self._repair_broker)
            await self.publisher.start()
        if self.broker is not None:
            await self.broker.ensure_mirrors()  # integrations' copies of the stream
        for _name, attach in plugins.load(plugins.ENGINE_GROUP) if cfg.plugins else ():
            await attach(self)
        self.service = EngineService(self.core, self.nc)
        await self.service.start()
        # Private: with --nats-url the URL may carry the engine's broker password.
        brokermanager.write_private(
            cfg.runtime_path,
            json.dumps(
                {
                    "nats_url": self.nats_url,
                    "pid": os.getpid(),
                    "log": str(cfg.log_path.resolve()),
                    "embedded_nats": self.nats_server is not None,
                    # What the admin tools need to connect (engine.brokermanager).
                    "broker_auth": self.broker is not None,
                    "tls_ca": str(ca.resolve()) if ca is not None else None,
                },
                indent=2,
            ),
        )

    async def _start_embedded_broker(self) -> None:
        cfg = self.config
        assert self.core is not None
        port = await self._claim_broker_store()
        assert self._store_lock is not None
        tls = (cfg.tls_cert, cfg.tls_key) if cfg.tls_cert and cfg.tls_key else None
        if cfg.broker_auth:
            self.broker = brokermanager.BrokerAuth(cfg.nats_dir, self.core, self.tls)
            self.broker.write()
        conf = cfg.nats_dir / brokerauth.SERVER_FILE
        conf.write_text(
            brokermanager.render_server(DEFAULT_CONFIG, cfg.nats_dir, cfg.broker_auth, tls)
        )
        self.nats_server = NatsServer(
            cfg.nats_dir,
            port=port,
            config=conf,
            host=cfg.nats_host,
            bound_to_parent=True,
            pass_fds=(self._store_lock.fileno(),),
        )
        await self._spawn_broker()
        self.nats_url = self.nats_server.url
        if self.broker is not None:
            self.broker.server = self.nats_server
            self.core.on_credentials_changed = self.broker.refresh
        self._broker_watch = asyncio.create_task(self._watch_broker(), name="synvoice-broker")
        self.core.status_parts["embedded_broker"] = self._broker_status

    def _broker_status(self) -> EmbeddedBrokerStatus:
        """The ``embedded_broker`` part of the status reply (operators, fault tests)."""
        srv = self.nats_server
        return EmbeddedBrokerStatus(srv.pid if srv is not None else None, self.broker_restarts)

    async def _claim_broker_store(self) -> int:
        """Lock the JetStream store and return the port to listen on.

        Every broker we start inherits the lock (``pass_fds``): one that outlives
        its engine (no ``prctl``, see engine.lifeline) keeps the store locked,
        and two brokers never open one store. A broker just killed with its
        engine may take a moment to end: wait for its lock and port briefly.
        """
        cfg = self.config
        cfg.nats_dir.mkdir(parents=True, exist_ok=True)
        self._store_lock = await _wait_lock(
            cfg.nats_dir / "store.lock",
            "a nats-server left by an earlier engine (pid {pid}) still uses {dir}; "
            "stop it, then start the engine again",
        )
        port = cfg.nats_port
        if port == 0:
            return free_port()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOCK_WAIT
        while port_in_use(port):
            if loop.time() > deadline:
                _refuse_port(port)
            await asyncio.sleep(0.05)
        return port

    async def _spawn_broker(self) -> None:
        assert self.nats_server is not None and self._store_lock is not None
        # From the event loop's thread: the broker's death signal is tied to
        # the thread that starts it (engine.lifeline).
        self.nats_server.spawn()
        await asyncio.to_thread(self.nats_server.wait_listening)
        _write_pid(self._store_lock, self.nats_server.pid)

    async def _repair_broker(self) -> None:
        """Publishing keeps failing though the broker is connected (the publisher
        calls this). After its disk was full, nats-server keeps refusing writes
        to the stream (its file store remembers the write error) until it is
        restarted: once there is room again, restart it (the watcher does)."""
        srv = self.nats_server
        if srv is None or srv.proc is None or self.nc is None or not self.nc.is_connected:
            return  # an external broker is its operator's; a restart is under way
        free = shutil.disk_usage(srv.store_dir).free
        if free < MIN_FREE:
            log.warning("publishing waits for room on the broker's disk (%d bytes free)", free)
            return
        now = asyncio.get_running_loop().time()
        if now - self._repaired_at < REPAIR_EVERY:
            return  # a restart disconnects every device: not in a loop
        self._repaired_at = now
        log.warning("publishing is stuck with the broker up (a full disk before?): restarting it")
        await asyncio.to_thread(terminate, srv.proc, 5.0)

    async def _watch_broker(self) -> None:
        """Restart the embedded broker whenever it dies (kill -9, crash, OOM).

        Same port, store and generated users (the files in DATA/nats), so the
        engine's and the devices' connections simply reconnect; the publisher
        resumes from the log (engine.publisher). Polled: the broker is a
        plain ``subprocess.Popen`` child (tests start it the same way).
        """
        srv = self.nats_server
        assert srv is not None
        backoff = 0.2
        while True:
            await asyncio.sleep(BROKER_CHECK_EVERY)
            proc = srv.proc
            if proc is not None and proc.poll() is None:
                continue
            code = proc.returncode if proc is not None else None
            log.warning(
                "embedded nats-server exited (%s); restarting it on port %d", code, srv.port
            )
            try:
                await self._spawn_broker()
            except Exception as exc:
                log.error("restarting the embedded nats-server failed (%s); retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            self.broker_restarts += 1
            log.info("embedded nats-server restarted (pid %s)", srv.pid)

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
        if self.anchor is not None:
            await self.anchor.stop()  # the last checkpoint covers the final head
            self.anchor = None
        if self.nc is not None:
            try:
                await self.nc.drain()
            except Exception:
                pass
            self.nc = None
        if self.core is not None:
            await self.core.close()
        if self._broker_watch is not None:
            self._broker_watch.cancel()
            try:
                await self._broker_watch
            except asyncio.CancelledError:
                pass
            self._broker_watch = None
        if self.nats_server is not None:
            await asyncio.to_thread(self.nats_server.stop)
        if self._store_lock is not None:
            self._store_lock.close()
            self._store_lock = None
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
    """Hold DATA/engine.lock for the engine's lifetime: a second engine on the
    same folder is refused. An flock ends with the process that holds it, so a
    killed engine leaves no stale lock behind."""
    f = try_lock(data_dir / LOCK_FILE)
    if isinstance(f, int):
        who = f" (pid {f})" if f else ""  # 0: it has not written its pid yet
        raise RuntimeError(f"data folder {data_dir} is in use by another engine{who}")
    _write_pid(f, os.getpid())
    return f


async def _wait_lock(path: Path, message: str) -> IO[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LOCK_WAIT
    while isinstance(f := try_lock(path), int):
        if loop.time() > deadline:
            raise RuntimeError(message.format(pid=f, dir=path.parent))
        await asyncio.sleep(0.05)
    return f


def _write_pid(f: IO[str], pid: int | None) -> None:
    f.seek(0)
    f.truncate()
    f.write(str(pid or ""))
    f.flush()
