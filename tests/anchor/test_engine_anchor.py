"""The engine's anchors on a real broker and real log files: checkpoints made and
published, the snapshot never trusted blindly, an older log refused at start."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from engine import checkpoints as cps
from engine import codec, protocol
from engine.anchor import CHECKPOINTS_FILE, LogRollbackError, read_checkpoint_file
from engine.hashchain import GENESIS, link
from engine.natsproc import NatsServer
from engine.server import EngineServer
from tests.anchor import tamper
from tests.support.harness import doc_of, engine_config, running_engine


def test_a_checkpoint_verifies_and_a_changed_one_does_not() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    cp = cps.sign(key, 7, link(GENESIS, b"x"), "2026-01-01T00:00:00+00:00")
    pub = cps.public_key_text(key)
    cp.verify(pub)
    (again,) = cps.loads(cps.dumps([cp]))
    assert again == cp
    forged = cps.Checkpoint(8, cp.hash, cp.time, cp.signature, cp.key)
    with pytest.raises(cps.CheckpointError, match="does not verify"):
        forged.verify(pub)
    other = cps.public_key_text(Ed25519PrivateKey.generate())
    with pytest.raises(cps.CheckpointError, match="another key"):
        cp.verify(other)
    with pytest.raises(cps.CheckpointError, match="line 1"):
        cps.loads('{"position": "7"}\n')
    good, bad = cps.verified([cp, forged], pub)
    assert good == [cp] and [f.kind for f in bad] == ["bad_signature"]
    assert [f.kind for f in cps.compare([cp], 5, {}, "x")] == ["truncated"]
    assert [f.kind for f in cps.compare([cp], 7, {7: bytes(32)}, "x")] == ["rewritten"]
    assert cps.compare([cp], 7, {7: cp.hash}, "x") == []
    finding = cps.unanchored([cp], 9, "x")
    assert finding is not None and finding.position == 8


async def _make_log(data: Path, url: str, n: int = 5) -> list[int]:
    """A log with ``n`` centrally numbered invoices; the numbers handed out."""
    numbers: list[int] = []
    async with running_engine(data, url, live_views=False) as h:
        dev = await h.device("alice")
        for _ in range(n):
            ev = dev.created("invoice")
            await dev.client.push([ev])
            numbers += await dev.client.next_numbers([("invoice", doc_of(ev))])
    return numbers


async def test_checkpoints_are_signed_kept_published_and_pulled(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    data = tmp_path / "data"
    async with running_engine(data, nats_server.url, live_views=False) as h:
        dev = await h.device("alice")
        await dev.client.push([dev.created("invoice")])
        await h.server.anchor.checkpoint()
        page = await dev.client.pull(0)
        st = await (await h.admin()).status()
        assert st.anchor is not None
        key = st.anchor.engine_key
        assert page.checkpoint is not None
        cp = cps.Checkpoint.from_dict(page.checkpoint)
        cp.verify(key)
        assert cp.position == h.core.log.head and cp.hash == h.core.log.last_hash
        js = h.server.nc.jetstream()
        msg = await js.get_last_msg(protocol.CHECKPOINT_STREAM, protocol.CHECKPOINT_SUBJECT)
        assert msg.data is not None
        assert cps.Checkpoint.from_dict(json.loads(msg.data)) == cp
    # Stop signs the final head too.
    saved = read_checkpoint_file(data / CHECKPOINTS_FILE)
    assert saved[-1].position == cp.position
    for c in saved:
        c.verify(key)


async def test_an_edited_snapshot_is_not_believed(tmp_path: Path, nats_server: NatsServer) -> None:
    data = tmp_path / "data"
    numbers = await _make_log(data, nats_server.url, 5)
    assert numbers == [1, 2, 3, 4, 5]

    def reset(snap: dict) -> None:
        for k in snap["counters"]:
            snap["counters"][k] = [0, [], 0]
        snap["devices"] = {}

    tamper.edit_snapshot(data / "log.sqlite", reset)
    async with running_engine(data, nats_server.url, live_views=False) as h:
        # The devices are back (folded from the log): alice's credential works.
        assert len(h.core.state.devices) == 1
        dev = await h.device("alice")
        ev = dev.created("invoice")
        await dev.client.push([ev])
        assert await dev.client.next_numbers([("invoice", doc_of(ev))]) == [6]


async def test_a_cut_tail_is_refused_then_accepted_without_reusing_positions(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    data = tmp_path / "data"
    await _make_log(data, nats_server.url, 3)
    top = read_checkpoint_file(data / CHECKPOINTS_FILE)[-1].position
    tamper.cut_tail(data / "log.sqlite", top - 3)
    server = EngineServer(engine_config(data, nats_server.url, live_views=False))
    with pytest.raises(
        LogRollbackError, match=rf"ends at position {top - 3}.*--accept-log-rollback"
    ):
        await server.start()
    # The way forward: explicit, recorded in the log, positions never reused.
    async with running_engine(
        data, nats_server.url, live_views=False, accept_log_rollback=True
    ) as h:
        log_ = h.core.log
        assert log_.head == top + 1
        (rec,) = await log_.read(top - 3, 10)
        ev = rec.event()
        assert ev.type == "settings.log_rolled_back" and rec.position == top + 1
        assert ev.data["after"] == top - 3 and ev.data["skipped_to"] == top
        dev = await h.device("bob")
        r = await dev.client.push([dev.created("invoice")])
        assert r.results[0].position > top + 1
        checked, broken = await log_.verify()
        assert (
            broken is None and checked == (top - 3) + 1 + 3
        )  # the kept, the rollback, bob enrolled, a push
    # Restarted: the log now agrees with what was published.
    async with running_engine(data, nats_server.url, live_views=False) as h:
        assert h.core.log.head > top


async def test_a_rewritten_log_is_refused_at_start(tmp_path: Path, nats_server: NatsServer) -> None:
    data = tmp_path / "data"
    await _make_log(data, nats_server.url, 3)

    def edit(wire: dict) -> None:
        wire["user"] = "mallory"

    tamper.rewrite(data / "log.sqlite", 3, edit)
    server = EngineServer(engine_config(data, nats_server.url, accept_log_rollback=True))
    with pytest.raises(LogRollbackError, match=r"disagrees with .* at position"):
        await server.start()


async def test_a_restored_log_is_refused_by_the_stream_alone(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """A whole data folder restored from a backup (checkpoint file included): the
    checkpoint stream still knows better."""
    import shutil

    data = tmp_path / "data"
    await _make_log(data, nats_server.url, 1)
    backup = tmp_path / "backup"
    shutil.copytree(data, backup)
    async with running_engine(data, nats_server.url, live_views=False) as h:
        dev = await h.device("bob")
        await dev.client.push([dev.created("invoice")])
    shutil.rmtree(data)
    shutil.copytree(backup, data)
    with pytest.raises(LogRollbackError, match="checkpoint stream"):
        await EngineServer(engine_config(data, nats_server.url, live_views=False)).start()


def test_unused_helpers_are_importable() -> None:
    assert codec and uuid


async def test_views_ahead_of_the_log_are_refused_or_rebuilt(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    from projections.live import live_projection

    data = tmp_path / "data"
    async with running_engine(data, nats_server.url, live_views=True, publish=False) as h:
        dev = await h.device("alice")
        for _ in range(3):
            await dev.client.push([dev.created("invoice")])
        live = live_projection(h.server)
        assert live is not None
        await live.wait_for(h.core.log.head)
        head = h.core.log.head
    tamper.cut_tail(data / "log.sqlite", head - 2)
    (data / "checkpoints.jsonl").unlink()  # only the views know better now
    server = EngineServer(engine_config(data, nats_server.url, publish=False))
    with pytest.raises(RuntimeError, match=rf"views .* at position {head}, ahead of the log"):
        await server.start()
    async with running_engine(data, nats_server.url, publish=False, accept_log_rollback=True) as h:
        live = live_projection(h.server)
        assert live is not None
        await live.wait_for(h.core.log.head)
        # The positions the views held are not reused: the rollback record follows them.
        assert live.status().position == h.core.log.head == head + 1
    assert (data / "views.sqlite.rolled-back").exists()
