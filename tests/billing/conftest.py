"""Billing fixtures: a real SMTP server on loopback and a billing home on a real engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from engine.natsproc import free_port
from tests.support.billing import (  # noqa: F401
    REFUSED_DOMAIN,
    Billing,
    Inbox,
    Smtp,
    billing_home,
    write_sales_csv,
)
from tests.support.harness import EngineHarness


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    inbox = Inbox()
    port = free_port()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        yield Smtp("127.0.0.1", port, inbox)
    finally:
        ctl.stop()


@pytest.fixture
async def billing(engine: EngineHarness, tmp_path: Path, smtp: Smtp) -> AsyncIterator[Billing]:
    b = await billing_home(engine, tmp_path / "billing")
    b.smtp = smtp
    yield b
