"""Engine configuration: command-line flags, with ``SYNVOICE_*`` environment defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.log import SyncMode


def _env(name: str, default: str) -> str:
    return os.environ.get(f"SYNVOICE_{name}", default)


@dataclass
class EngineConfig:
    data_dir: Path = Path(_env("DATA", "./data"))
    # None: start the embedded nats-server from deploy/nats-server.conf.
    nats_url: str | None = os.environ.get("SYNVOICE_NATS_URL") or None
    nats_port: int = int(_env("NATS_PORT", "4222"))  # embedded broker; 0 = any free port
    max_request_bytes: int = int(_env("MAX_REQUEST_BYTES", str(4 * 1024 * 1024)))
    max_event_bytes: int = int(_env("MAX_EVENT_BYTES", str(64 * 1024)))
    max_batch_events: int = int(_env("MAX_BATCH_EVENTS", "5000"))
    pull_limit: int = int(_env("PULL_LIMIT", "5000"))
    pull_max_bytes: int = int(_env("PULL_MAX_BYTES", str(4 * 1024 * 1024)))
    sync: SyncMode = "full" if _env("SYNC", "full") == "full" else "normal"
    # Distributed mode: numbers per user added to an epoch at a time.
    runway: int = int(_env("RUNWAY", "100"))
    publish: bool = True  # publish committed events to JetStream
    plugins: bool = True  # attach engine plugins (live projections, billing intake)

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
