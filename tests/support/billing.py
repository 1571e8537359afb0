"""Test support for billing: a real SMTP server on loopback, a billing home on an engine.

Imported by tests and conftest files alike (conftest files only hold fixtures).
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

from devices.billing import service
from devices.billing.home import BillingHome
from engine.cli import CliError, build_parser
from engine.enrollment import Enrollment
from engine.errors import SynvoiceError
from tests.support.harness import EngineHarness

REFUSED_DOMAIN = "refused.example"


class Inbox:
    """aiosmtpd handler keeping every message; refuses recipients at REFUSED_DOMAIN."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address.endswith("@" + REFUSED_DOMAIN):
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"

    def parsed(self) -> list[Message]:
        return [message_from_bytes(raw) for _, _, raw in self.messages]


@dataclass
class Smtp:
    host: str
    port: int
    inbox: Inbox


@dataclass
class Billing:
    home: Path
    token: str
    engine: EngineHarness
    smtp: Smtp | None = None
    env: dict[str, str] = field(default_factory=dict)

    async def cli(self, *argv: str) -> tuple[int, str, str]:
        """Run ``synvoice billing ...`` in this event loop; (exit status, stdout, stderr)."""
        args = build_parser().parse_args(["billing", *argv, "--home", str(self.home)])
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                r = args.handler(args)
                if hasattr(r, "__await__"):
                    r = await r
                rc = int(r or 0)
            except (CliError, SynvoiceError) as exc:
                print(f"synvoice: error: {exc}", file=err)
                rc = 1
        return rc, out.getvalue(), err.getvalue()

    async def json(self, *argv: str) -> Any:
        rc, out, err = await self.cli(*argv, "--json")
        assert rc in (0, 2), err
        return json.loads(out)

    def smtp_args(self) -> list[str]:
        assert self.smtp is not None
        return ["--smtp-host", self.smtp.host, "--smtp-port", str(self.smtp.port)]


async def billing_home(engine: EngineHarness, root: Path, user: str = "billing") -> Billing:
    admin = await engine.admin()
    r = await admin.enroll(user, "billing tool")
    token = Enrollment.from_reply(engine.url, r).token()
    await service.init_home(BillingHome(root), token)
    return Billing(root, token, engine)


def write_sales_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    lines = [",".join(cols)]
    for r in rows:
        lines.append(",".join(str(r.get(c, "")) for c in cols))
    path.write_text("\n".join(lines) + "\n")
    return path
