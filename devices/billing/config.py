"""Billing configuration: flags > environment (``SYNVOICE_*``) > ``billing.toml`` > defaults.

``billing.toml`` lives in the billing home::

    [smtp]
    host = "smtp.example.com"   # SYNVOICE_SMTP_HOST
    port = 587                  # SYNVOICE_SMTP_PORT
    starttls = true             # SYNVOICE_SMTP_STARTTLS
    ssl = false                 # SYNVOICE_SMTP_SSL (implicit TLS, port 465)
    cafile = ""                 # SYNVOICE_SMTP_CAFILE: CA bundle for a private CA
    user = "billing"            # SYNVOICE_SMTP_USER
    password = "..."            # SYNVOICE_SMTP_PASSWORD (prefer the environment)
    sender = "billing@example.com"  # SYNVOICE_SMTP_FROM
    timeout = 30                # SYNVOICE_SMTP_TIMEOUT (seconds)
    connections = 4             # SYNVOICE_SMTP_CONNECTIONS (parallel SMTP sessions)

    [print]
    command = "lp -d office {file}"  # SYNVOICE_PRINT_COMMAND; empty = spool folder
    spool = "spool"                  # SYNVOICE_PRINT_SPOOL (relative to the home)

    [invoice]
    company = "Example Ltd"     # SYNVOICE_BILLING_COMPANY (seller on the PDF)
    due_days = 30               # SYNVOICE_BILLING_DUE_DAYS
    pdf_processes = -1          # SYNVOICE_BILLING_PDF_PROCESSES: PDF worker processes;
                                # -1 = one per CPU for runs of 100+ invoices, 0 = threads only
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from engine.errors import SynvoiceError

CONFIG_FILE = "billing.toml"

# (section, key in file) -> (attribute, environment variable)
_MAP: dict[tuple[str, str], tuple[str, str]] = {
    ("smtp", "host"): ("smtp_host", "SYNVOICE_SMTP_HOST"),
    ("smtp", "port"): ("smtp_port", "SYNVOICE_SMTP_PORT"),
    ("smtp", "starttls"): ("smtp_starttls", "SYNVOICE_SMTP_STARTTLS"),
    ("smtp", "ssl"): ("smtp_ssl", "SYNVOICE_SMTP_SSL"),
    ("smtp", "cafile"): ("smtp_cafile", "SYNVOICE_SMTP_CAFILE"),
    ("smtp", "user"): ("smtp_user", "SYNVOICE_SMTP_USER"),
    ("smtp", "password"): ("smtp_password", "SYNVOICE_SMTP_PASSWORD"),
    ("smtp", "sender"): ("smtp_from", "SYNVOICE_SMTP_FROM"),
    ("smtp", "timeout"): ("smtp_timeout", "SYNVOICE_SMTP_TIMEOUT"),
    ("smtp", "connections"): ("smtp_connections", "SYNVOICE_SMTP_CONNECTIONS"),
    ("print", "command"): ("print_command", "SYNVOICE_PRINT_COMMAND"),
    ("print", "spool"): ("spool", "SYNVOICE_PRINT_SPOOL"),
    ("invoice", "company"): ("company", "SYNVOICE_BILLING_COMPANY"),
    ("invoice", "due_days"): ("due_days", "SYNVOICE_BILLING_DUE_DAYS"),
    ("invoice", "pdf_processes"): ("pdf_processes", "SYNVOICE_BILLING_PDF_PROCESSES"),
}


@dataclass(frozen=True)
class BillingConfig:
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    smtp_cafile: str | None = None
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_from: str = "billing@localhost"
    smtp_timeout: float = 30.0
    smtp_connections: int = 4
    print_command: str | None = None
    spool: str = "spool"
    company: str = "Synvoice"
    due_days: int = 30
    pdf_processes: int = -1

    def public(self) -> dict[str, Any]:
        """For display: the password is never shown."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if out["smtp_password"]:
            out["smtp_password"] = "***"
        return out


def _coerce(attr: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(BillingConfig)}[attr]
    if value is None:
        return None
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
    except (TypeError, ValueError):
        raise SynvoiceError("bad_request", f"config {attr}: {value!r} is not a {kind}") from None
    s = str(value)
    return s if s or not kind.endswith("None") else None


def load_config(
    home: Path,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> BillingConfig:
    values: dict[str, Any] = {}
    path = home / CONFIG_FILE
    if path.exists():
        try:
            doc = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SynvoiceError("bad_request", f"{path}: {exc}") from None
        for (section, key), (attr, _) in _MAP.items():
            sec = doc.get(section, {})
            if isinstance(sec, dict) and key in sec:
                values[attr] = _coerce(attr, sec[key])
    env = os.environ if env is None else env
    for (_, _), (attr, var) in _MAP.items():
        if var in env:
            values[attr] = _coerce(attr, env[var])
    for attr, v in (overrides or {}).items():
        if v is not None:
            values[attr] = _coerce(attr, v)
    cfg = replace(BillingConfig(), **values)
    if cfg.smtp_connections < 1 or cfg.smtp_connections > 64:
        raise SynvoiceError("bad_request", "smtp connections must be 1..64")
    if cfg.pdf_processes < -1 or cfg.pdf_processes > 64:
        raise SynvoiceError("bad_request", "pdf processes must be -1 (auto), 0 or 1..64")
    if not 0 < cfg.smtp_port < 65536:
        raise SynvoiceError("bad_request", "smtp port must be 1..65535")
    return cfg


TEMPLATE = """# Synvoice billing configuration (environment SYNVOICE_* and flags override it)
[smtp]
host = "127.0.0.1"
port = 25
starttls = false
ssl = false
# cafile = ""       # CA bundle when the server's certificate is from a private CA
# user = ""
# password = ""   # better: SYNVOICE_SMTP_PASSWORD in the environment
sender = "billing@localhost"
timeout = 30
connections = 4

[print]
# command = "lp {file}"   # empty: PDFs are copied into the spool folder
spool = "spool"

[invoice]
company = "Synvoice"
due_days = 30
pdf_processes = -1   # -1: one PDF process per CPU for runs of 100+ invoices; 0: threads only
"""
