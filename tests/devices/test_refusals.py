"""A refused event never blocks the outbox; a revoked device keeps its work."""

from __future__ import annotations

import uuid

import pytest

from engine.errors import SynvoiceError
from engine.schema.settings import UserModeSet
from tests.support.devices import Agents
from tests.support.harness import EngineHarness


async def test_an_event_the_engine_refuses_is_set_aside_not_retried_forever(
    agents: Agents, engine: EngineHarness
) -> None:
    dev = await agents.new("alice", background=False)
    await dev.disconnect()
    good = [await dev.create("invoice", f"C{i}") for i in range(5)]
    # A forged engine-only event slips into the outbox (a bug, a newer schema …).
    async with dev.commands.command():
        dev.commands.emit(
            "settings.user_mode_set", UserModeSet(mode="single"), str(uuid.uuid4()), "invoice"
        )
    more = await dev.create("invoice", "after")
    assert dev.pending_count() == 7
    await dev.connect()
    r = await dev.sync()
    assert (r.pushed, r.rejected, r.pending) == (6, 1, 0)
    st = dev.status()
    assert st["rejected"] == 1 and st["pending"] == 0
    rejected = await dev.rejected()
    assert rejected[0]["event"]["type"] == "settings.user_mode_set"
    assert "engine" in rejected[0]["error"]
    assert {v.doc_id for v in dev.documents()} == {v.doc_id for v in [*good, more]}
    # reopened, the refusal is still on record
    again = await agents.reopen(dev)
    assert again.status()["rejected"] == 1


async def test_revoked_device_keeps_its_outbox_and_says_why(
    agents: Agents, engine: EngineHarness
) -> None:
    dev = await agents.new("alice", background=False)
    await dev.disconnect()
    v = await dev.create("invoice", "Acme")  # made offline, not sent yet
    admin = await engine.admin()
    await admin.revoke(dev.device_id, "laptop stolen")
    await dev.connect()
    with pytest.raises(SynvoiceError) as err:
        await dev.create("invoice", "Hooli")  # the engine refuses it a number: say so
    assert err.value.code == "revoked"
    with pytest.raises(SynvoiceError) as err:
        await dev.sync()
    assert err.value.code == "revoked"
    assert dev.pending_count() == 1  # nothing lost on the device
    assert dev.document(v.doc_id).number == 0
    assert "revoked" in (dev.status()["last_error"] or "")
