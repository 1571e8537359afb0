"""Devices check what they pull against the checkpoints they hold (devices.anchors)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from devices.anchors import DeviceAnchors
from engine import checkpoints as cps
from engine import codec
from engine.client import PulledPage
from engine.errors import SynvoiceError
from engine.hashchain import GENESIS, link
from engine.natsproc import NatsServer
from tests.anchor import tamper
from tests.support.devices import Agents
from tests.support.harness import running_engine

T = "2026-01-01T00:00:00+00:00"


def _chain(n: int, edit_at: int | None = None) -> tuple[list[bytes], list[bytes]]:
    bodies, hashes, prev = [], [], GENESIS
    for p in range(1, n + 1):
        b = codec.pack({"position": p, "who": "mallory" if p == edit_at else "alice"})
        prev = link(prev, b)
        bodies.append(b)
        hashes.append(prev)
    return bodies, hashes


def _page(
    bodies: list[bytes], hashes: list[bytes], head: int, cp: cps.Checkpoint | None
) -> PulledPage:
    return PulledPage(
        head=head,
        more=False,
        events=[msgspec.Raw(b) for b in bodies],
        hashes=hashes,
        checkpoint=cp.to_dict() if cp else None,
    )


def test_a_page_that_disagrees_with_a_held_checkpoint_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    bodies, hashes = _chain(6)
    cp = cps.sign(key, 3, hashes[2], T)
    a = DeviceAnchors()
    a.check_page(_page(bodies[:3], hashes[:3], 3, cp), 0, 0)
    assert a.engine_key == cps.public_key_text(key)
    # A device that holds the checkpoint re-pulls from scratch a rewritten log.
    fresh = DeviceAnchors(a.to_meta())
    bad_bodies, bad_hashes = _chain(6, edit_at=2)
    with pytest.raises(SynvoiceError, match="disagrees with its checkpoint") as e:
        fresh.check_page(_page(bad_bodies, bad_hashes, 6, None), 0, 0)
    assert e.value.code == "tampered"
    # A page that does not link to the hash the device holds.
    with pytest.raises(SynvoiceError, match="hash chain is broken at position 4"):
        DeviceAnchors(a.to_meta()).check_page(_page(bad_bodies[3:], bad_hashes[3:], 6, None), 3, 3)
    # The good continuation passes.
    DeviceAnchors(a.to_meta()).check_page(_page(bodies[3:], hashes[3:], 6, None), 3, 3)
    # A checkpoint signed by another key than the pinned one.
    other = cps.sign(Ed25519PrivateKey.generate(), 6, hashes[5], T)
    with pytest.raises(SynvoiceError, match="another key"):
        DeviceAnchors(a.to_meta()).check_page(_page([], [], 6, other), 6, 6)
    # An engine behind the device.
    with pytest.raises(SynvoiceError, match="already holds position 6"):
        DeviceAnchors(a.to_meta()).check_page(_page([], [], 4, None), 6, 6)


async def test_a_device_refuses_an_engine_whose_log_was_rewritten(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    data = tmp_path / "data"
    async with running_engine(data, nats_server.url, live_views=False) as h:
        agents = Agents(tmp_path, h.url, h.admin)
        try:
            writer = await h.device("bob")
            for _ in range(4):
                await writer.client.push([writer.created("invoice")])
            await h.server.anchor.checkpoint()
            agent = await agents.new("alice")
            assert agent.anchors.engine_key is not None
            assert agent.anchors.checkpoints  # the one made before alice enrolled
            home = agent.home
        finally:
            await agents.close()

    def edit(wire: dict) -> None:
        wire["data"]["customer"]["name"] = "Someone Else"

    tamper.rewrite(data / "log.sqlite", 4, edit)
    (data / "checkpoints.jsonl").unlink()  # the engine's own copy goes too
    # Without its stream (publish off) the engine starts and re-signs the rewritten head.
    async with running_engine(data, nats_server.url, live_views=False, publish=False) as h:
        from devices.agent import DeviceAgent
        from tests.support.devices import FAST

        agent = await DeviceAgent.open(home, **FAST)
        try:
            assert await agent.connect(timeout=10)
            with pytest.raises(
                SynvoiceError, match="disagrees with the log this device pulled"
            ) as e:
                await agent.sync()
            assert e.value.code == "tampered"
        finally:
            await agent.close()


def test_a_device_past_a_log_rollback_is_told_so() -> None:
    bodies, hashes = _chain(8)
    a = DeviceAnchors()
    a.check_page(_page(bodies, hashes, 8, None), 0, 0)
    rb = codec.pack(
        {
            "position": 9,
            "type": "settings.log_rolled_back",
            "data": {"after": 5, "skipped_to": 8, "reason": "restored"},
        }
    )
    h9 = link(hashes[4], rb)
    for held in (8, 7):
        b = DeviceAnchors(a.to_meta())
        b.hashes[7] = hashes[6]
        with pytest.raises(SynvoiceError, match="rolled back to position 5"):
            b.check_page(_page([rb], [h9], 9, None), held, held)
    # A device that had not gone past the rollback point follows across the gap.
    c = DeviceAnchors()
    c.check_page(_page(bodies[:5], hashes[:5], 5, None), 0, 0)
    c.check_page(_page([rb], [h9], 9, None), 5, 5)
