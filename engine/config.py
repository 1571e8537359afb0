"""Engine configuration: command-line flags, with ``SYNVOICE_*`` environment defaults.

Defaults are read from the environment when a config is made (not at import),
so a process or a test can set ``SYNVOICE_*`` before creating one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import protocol
from engine.log import SyncMode


def _env(name: str, default: str) -> str:
    return os.environ.get(f"SYNVOICE_{name}", default)


def _opt(name: str) -> Any:
    return field(default_factory=lambda: os.environ.get(f"SYNVOICE_{name}") or None)


def _int(name: str, default: int) -> Any:
    return field(default_factory=lambda: int(_env(name, str(default))))


def _bool(name: str, default: bool) -> Any:
    return field(
        default_factory=lambda: (
            _env(name, "1" if default else "0").lower() not in ("0", "false", "no", "off", "")
        )
    )


def _env_path(name: str) -> Path | None:
    v = _env(name, "")
    return Path(v) if v else None


@dataclass
class EngineConfig:
    data_dir: Path = field(default_factory=lambda: Path(_env("DATA", "./data")))
    # None: start the embedded nats-server from deploy/nats-server.conf.
    nats_url: str | None = _opt("NATS_URL")
    nats_port: int = _int("NATS_PORT", 4222)  # embedded broker; 0 = any free port
    # Embedded broker listen address. Devices on other machines need the LAN
    # address (or 0.0.0.0); broker authentication is then what keeps others out.
    nats_host: str = field(default_factory=lambda: _env("NATS_HOST", "127.0.0.1"))
    # Embedded broker: per-device credentials generated from the engine state.
    # (An external broker, --nats-url, is secured by its operator.)
    broker_auth: bool = _bool("BROKER_AUTH", True)
    # TLS for the embedded broker (PEM files); tls_ca is what clients trust
    # (default: the certificate itself, i.e. self-signed). With --nats-url,
    # tls_ca alone makes the engine trust that broker's certificate.
    tls_cert: Path | None = field(default_factory=lambda: _env_path("TLS_CERT"))
    tls_key: Path | None = field(default_factory=lambda: _env_path("TLS_KEY"))
    tls_ca: Path | None = field(default_factory=lambda: _env_path("TLS_CA"))
    # JetStream replicas of the event stream (3 on a 3-node cluster).
    stream_replicas: int = _int("STREAM_REPLICAS", 1)
    # Editions: a registration key given by configuration instead of
    # `synvoice register` (verified the same way, not written to the log), and
    # one more trusted vendor public key (tests, benchmarks, private builds).
    license_key: str | None = _opt("LICENSE_KEY")
    vendor_public_key: str | None = _opt("VENDOR_PUBLIC_KEY")
    max_request_bytes: int = _int("MAX_REQUEST_BYTES", 4 * 1024 * 1024)
    max_event_bytes: int = _int("MAX_EVENT_BYTES", protocol.MAX_EVENT_BYTES)
    max_batch_events: int = _int("MAX_BATCH_EVENTS", 5000)
    pull_limit: int = _int("PULL_LIMIT", 5000)
    pull_max_bytes: int = _int("PULL_MAX_BYTES", 4 * 1024 * 1024)
    # What one client can make the engine hold (engine.limits): requests in
    # flight per device, request bytes in flight in all, pull pages being built.
    limit_per_device: int = _int("LIMIT_PER_DEVICE", 16)
    limit_device_bytes: int = _int("LIMIT_DEVICE_BYTES", 16 * 1024 * 1024)
    limit_request_bytes: int = _int("LIMIT_REQUEST_BYTES", 64 * 1024 * 1024)
    limit_pull_bytes: int = _int("LIMIT_PULL_BYTES", 24 * 1024 * 1024)
    sync: SyncMode = field(
        default_factory=lambda: "full" if _env("SYNC", "full") == "full" else "normal"
    )
    # Distributed mode: numbers per user added to an epoch at a time.
    runway: int = _int("RUNWAY", 100)
    publish: bool = True  # publish committed events to JetStream
    # Start on a log older than what was published (engine.anchor): skip, never
    # reuse, the published positions it lacks, and record it in the log.
    accept_log_rollback: bool = False
    plugins: bool = True  # attach engine plugins (live projections, billing intake)
    # Keep DATA/views.sqlite up to date in a worker process (the live views plugin).
    live_views: bool = field(default_factory=lambda: _env("LIVE_VIEWS", "1") != "0")

    @property
    def log_path(self) -> Path:
        return self.data_dir / "log.sqlite"

    @property
    def nats_dir(self) -> Path:
        return self.data_dir / "nats"

    @property
    def admin_secret_path(self) -> Path:
        return self.data_dir / "admin.secret"

    @property
    def runtime_path(self) -> Path:
        return self.data_dir / "engine.json"

    @property
    def trusted_ca(self) -> Path | None:
        """The CA file clients use to verify the broker (None: no TLS)."""
        return self.tls_ca or self.tls_cert
