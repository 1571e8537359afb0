"""Console settings: ``SYNVOICE_CONSOLE_*`` environment, overridable by flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env(name: str, default: str = "") -> str:
    return os.environ.get(f"SYNVOICE_CONSOLE_{name}", default)


def _path(name: str) -> Path | None:
    v = _env(name)
    return Path(v) if v else None


@dataclass
class ConsoleConfig:
    # SYNVOICE_CONSOLE=0: `synvoice serve` starts no console.
    enabled: bool = field(
        default_factory=lambda: (
            os.environ.get("SYNVOICE_CONSOLE", "1").lower() not in ("0", "false", "no", "off")
        )
    )
    # Loopback by default: the console administers the engine.
    host: str = field(default_factory=lambda: _env("HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: int(_env("PORT", "8470")))  # 0 = any free
    tls_cert: Path | None = field(default_factory=lambda: _path("TLS_CERT"))
    tls_key: Path | None = field(default_factory=lambda: _path("TLS_KEY"))
    # Failed sign-ins per user name and per client address in a minute.
    signin_attempts: int = field(default_factory=lambda: int(_env("SIGNIN_ATTEMPTS", "5")))
    # A scraper's bearer token for /metrics ("" : none; then only on loopback).
    metrics_token: str = field(default_factory=lambda: _env("METRICS_TOKEN"))

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"


def console_dir(data_dir: Path) -> Path:
    """The console's files in the data folder (users, session key, device homes)."""
    return data_dir / "console"
