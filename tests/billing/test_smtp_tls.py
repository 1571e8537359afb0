"""SMTP with STARTTLS and a login, against a real aiosmtpd server with its own CA."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import replace
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from devices.billing.config import BillingConfig
from devices.billing.delivery import DeliveryError, SmtpSender, build_message
from engine.natsproc import free_port
from tests.support.billing import Inbox
from tests.support.harness import self_signed_cert


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"billing", b"pw")
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535


@pytest.fixture
def tls_smtp(tmp_path: Path) -> Iterator[tuple[int, Inbox, Path]]:
    cert, key = self_signed_cert(tmp_path, "smtp")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    inbox = Inbox()
    port = free_port()
    ctl = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=ctx,
        require_starttls=True,
        auth_required=True,
        authenticator=authenticator,
    )
    ctl.start()
    try:
        yield port, inbox, cert
    finally:
        ctl.stop()


def msg(to: str) -> bytes:
    return build_message(
        "billing@example.org", to, "Invoice 1", "hi", b"%PDF-1.4", "i.pdf", "<x@y>"
    )


def test_starttls_and_login(tls_smtp: tuple[int, Inbox, Path]) -> None:
    port, inbox, ca = tls_smtp
    cfg = BillingConfig(
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_starttls=True,
        smtp_cafile=str(ca),
        smtp_user="billing",
        smtp_password="pw",
        smtp_from="billing@example.org",
        smtp_timeout=5,
    )
    sender = SmtpSender(cfg)
    try:
        sender.send(msg("ap@acme.example"), "ap@acme.example")
        sender.send(msg("ap@initech.example"), "ap@initech.example")  # same session
    finally:
        sender.close()
    assert [m[1] for m in inbox.messages] == [["ap@acme.example"], ["ap@initech.example"]]
    parsed = message_from_bytes(inbox.messages[0][2])
    (att,) = [p for p in parsed.walk() if p.get_content_type() == "application/pdf"]
    assert att.get_payload(decode=True) == b"%PDF-1.4"

    for bad, reason in (
        (replace(cfg, smtp_password="wrong"), "login"),
        (replace(cfg, smtp_cafile=None), "certificate verify failed"),
        (replace(cfg, smtp_starttls=False), "refused"),  # the server insists on TLS
        (replace(cfg, smtp_cafile="/no/such/ca.pem"), "cannot use SMTP CA file"),
    ):
        s = SmtpSender(bad)
        with pytest.raises(DeliveryError, match=reason):
            s.send(msg("ap@acme.example"), "ap@acme.example")
        s.close()
    assert len(inbox.messages) == 2
