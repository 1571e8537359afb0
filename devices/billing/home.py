"""The billing home folder: its files, created by ``synvoice billing init``."""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from devices.billing.config import CONFIG_FILE, TEMPLATE, BillingConfig
from engine.errors import SynvoiceError

DEFAULT_HOME = Path(os.environ.get("SYNVOICE_BILLING_HOME", "./billing"))


@dataclass(frozen=True)
class BillingHome:
    root: Path

    @property
    def token_path(self) -> Path:
        return self.root / "device.token"  # the enrollment token (a credential: mode 0600)

    @property
    def agent_home(self) -> Path:
        return self.root / "agent"  # the device agent's own home

    @property
    def db_path(self) -> Path:
        return self.root / "billing.sqlite"

    @property
    def pdf_dir(self) -> Path:
        return self.root / "pdfs"

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    def spool_dir(self, cfg: BillingConfig) -> Path:
        p = Path(cfg.spool)
        return p if p.is_absolute() else self.root / p

    def exists(self) -> bool:
        return self.token_path.exists()

    def token(self) -> str:
        if not self.token_path.exists():
            raise SynvoiceError(
                "not_found",
                f"no billing home at {self.root} (run: synvoice billing init --token TOKEN)",
            )
        return self.token_path.read_text().strip()

    def create(self, token: str) -> None:
        # Owner-only: the home holds the device secret, customers' data, invoices
        # and (in billing.toml) perhaps the SMTP password.
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root.chmod(0o700)
        self.pdf_dir.mkdir(exist_ok=True, mode=0o700)
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token.strip() + "\n")
        if not self.config_path.exists():
            fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(TEMPLATE)

    def lock(self) -> IO[str]:
        """One processing run at a time per billing home."""
        f = open(self.root / "billing.lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise SynvoiceError("conflict", f"another billing run is using {self.root}") from None
        return f
