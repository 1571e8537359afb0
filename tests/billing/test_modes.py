"""Billing invoices are numbered by the user mode, like any device's documents."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.natsproc import NatsServer
from tests.support.billing import Billing, Smtp, billing_home
from tests.support.harness import EngineHarness, running_engine


def sales(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"M{i:02d}",
            "customer": "Acme",
            "email": "ap@acme.example",
            "stage": "Won",
            "close_date": "2011-11-05",
            "approved": True,
            "amount": "10",
        }
        for i in range(n)
    ]


async def run(b: Billing, tmp: Path, n: int) -> list[int]:
    f = tmp / "m.json"
    f.write_text(json.dumps(sales(n)))
    assert (await b.cli("import", str(f)))[0] == 0
    assert (await b.cli("scenario", "save", "all"))[0] == 0
    r = await b.json("process", "all", *b.smtp_args())
    assert r["summary"]["processed"] == n, r
    return sorted(o["invoice_number"] for o in r["outcomes"])


@pytest.fixture
async def small_runway(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[EngineHarness]:
    async with running_engine(tmp_path / "data", nats_server.url, runway=4) as h:
        yield h


async def test_single_user_mode_numbers_on_the_device(
    engine: EngineHarness, tmp_path: Path, smtp: Smtp
) -> None:
    admin = await engine.admin()
    await admin.set_mode("single")
    other = await engine.device("alice")
    await other.client.push([other.created(number=n) for n in (1, 2, 3)])
    b = await billing_home(engine, tmp_path / "billing")
    b.smtp = smtp
    # the billing device syncs first, so it continues after the numbers already used
    assert await run(b, tmp_path, 5) == [4, 5, 6, 7, 8]


async def test_distributed_mode_numbers_across_epoch_extensions(
    small_runway: EngineHarness, tmp_path: Path, smtp: Smtp
) -> None:
    engine = small_runway
    b = await billing_home(engine, tmp_path / "billing", user="billing")
    await engine.device("alice")  # a second user: billing gets every other number
    admin = await engine.admin()
    await admin.set_mode("distributed")
    b.smtp = smtp
    numbers = await run(b, tmp_path, 12)  # more than the known runway: numbering rounds
    assert len(set(numbers)) == 12
    slot = (await admin.status()).users["billing"]
    assert all((n - slot) % 2 == 0 for n in numbers)  # billing's own progression only
