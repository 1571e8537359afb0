"""Number series end to end: ``synvoice numbering pattern/team/show`` on a real
engine, centralized display numbers on a device, and the device's series."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from engine.errors import SynvoiceError
from tests.devices.test_cli import one_line_error, run
from tests.support.devices import Agents
from tests.support.harness import EngineHarness


async def test_cli_sets_a_pattern_and_devices_show_display_numbers(
    engine: EngineHarness, agents: Agents, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "data")

    def cli(*argv: str) -> tuple[int, str, str]:
        return run([*argv, "--data", data], capsys)

    async def acli(*argv: str) -> tuple[int, str, str]:
        return await asyncio.to_thread(cli, *argv)

    code, out, _ = await acli(
        "numbering", "pattern", "invoice", "INV-{YYYY}-{SEQ:4}", "--reset", "yearly",
        "--tz", "Europe/Berlin",
    )  # fmt: skip
    assert code == 0 and "INV-{YYYY}-{SEQ:4}  reset yearly, Europe/Berlin" in out
    code, _, err = await acli("numbering", "pattern", "invoice", "INV-{SEQ}", "--reset", "yearly")
    assert code == 1 and "yearly reset needs" in one_line_error(err)
    code, _, err = await acli("numbering", "team", "0")
    assert code == 1 and "'team' must be an integer >= 1" in one_line_error(err)
    code, out, _ = await acli("numbering", "show", "--json")
    shown = json.loads(out)
    assert shown["patterns"]["invoice"]["pattern"] == "INV-{YYYY}-{SEQ:4}"
    assert shown["team"] == 0

    dev = await agents.new("ann")  # centralized (the default): the server numbers
    a = await dev.create("invoice", "Acme")
    year = datetime.now(ZoneInfo("Europe/Berlin")).year
    assert dev.display_number(a) == f"INV-{year}-0001"
    q = await dev.create("quote", "Acme")
    assert dev.display_number(q) == "1"  # no quote pattern: bare numbers
    st = dev.status()
    assert st["series"]["invoice"]["mode"] == "centralized"

    # Distributed mode refuses a resetting pattern (per-user series never reset),
    # and a switch to distributed while one is in force.
    admin = await agents._admin()
    with pytest.raises(SynvoiceError) as refused:
        await admin.set_mode("distributed", force=True)
    assert refused.value.code == "mode" and "invoice pattern resets" in refused.value.message
    code, _, _ = await acli("numbering", "pattern", "invoice", "INV-{YYYY}-{SEQ:4}")
    assert code == 0
    await admin.set_mode("distributed", force=True)
    code, _, err = await acli(
        "numbering", "pattern", "quote", "Q-{YYYY}-{SEQ}", "--reset", "yearly"
    )
    assert code == 1 and "do not reset" in one_line_error(err)
    code, out, _ = await acli("numbering", "team", "3")
    assert code == 0 and "team size      3" in out
