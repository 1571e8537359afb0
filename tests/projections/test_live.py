"""The live projection inside a real engine (real nats-server, real SQLite files)."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.enrollment import Enrollment
from engine.events import Event, new_event
from engine.natsproc import NatsServer
from engine.schema.documents import NumberAssigned
from engine.server import EngineServer
from projections.follow import Follower, engine_filler
from projections.live import LiveProjection, live_projection
from projections.rebuild import rebuild
from projections.replay import replay_remote
from projections.store import ViewStore
from tests.support.harness import DeviceCreds, EngineHarness, engine_config

# These tests read the views the engine keeps: they need its live-views worker.
pytestmark = pytest.mark.views


async def synced(server: EngineServer) -> LiveProjection:
    live = live_projection(server)
    assert live is not None and server.core is not None
    await live.wait_for(server.core.log.head)
    return live


def renumber(dev: DeviceCreds, created: Event, number: int, seen: int) -> Event:
    dev.seq += 1
    assert created.doc_id is not None
    return new_event(
        "document.number_assigned",
        NumberAssigned(number=number, source="manual"),
        device_id=dev.device_id,
        user=dev.user,
        device_seq=dev.seq,
        doc_id=created.doc_id,
        kind=created.kind,
        seen_position=seen,
    )


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


async def test_forgotten_sync_duplicate_shows_live_and_a_renumber_clears_it(
    engine: EngineHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = await engine.admin()
    await admin.set_mode("single")
    office = await engine.device("alice", "office PC")
    tablet = await engine.device("alice", "tablet")
    a = office.created(number=1, number_source="device")
    b = tablet.created(number=1, number_source="device")  # the tablet was not synced
    await office.client.push([a])
    await tablet.client.push([b])
    await synced(engine.server)
    data = str(engine.server.config.data_dir)
    dups = cli_json(capsys, "duplicates", "--data", data)["duplicates"]
    assert sorted(d["doc_id"] for d in dups) == sorted([str(a.doc_id), str(b.doc_id)])
    assert {d["device_id"] for d in dups} == {office.device_id, tablet.device_id}

    head = engine.core.log.head
    await tablet.client.push([renumber(tablet, b, 2, head)])
    await synced(engine.server)
    assert cli_json(capsys, "duplicates", "--data", data)["duplicates"] == []
    [ren] = cli_json(capsys, "renumberings", "--data", data)["renumberings"]
    assert (ren["doc_id"], ren["old_number"], ren["new_number"]) == (str(b.doc_id), 1, 2)
    hist = cli_json(capsys, "history", str(b.doc_id), "--data", data)
    assert [h["type"] for h in hist["history"]] == ["document.created", "document.number_assigned"]
    assert hist["document"]["number"] == 2 and hist["history"][1]["user"] == "alice"
    # as the device CLI names documents: an id prefix, kind:number
    for ref in (str(b.doc_id)[:8], "invoice:2"):
        again = cli_json(capsys, "history", ref, "--data", data)
        assert again["document"]["doc_id"] == str(b.doc_id), ref
    assert main(["history", "invoice:2", "--data", data]) == 0
    assert f"invoice 2 {b.doc_id}" in capsys.readouterr().out
    # human output works too
    assert main(["duplicates", "--data", data]) == 0
    assert "none" in capsys.readouterr().out


async def test_a_skipped_number_shows_as_a_gap(
    engine: EngineHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = await engine.device("bob")
    await dev.client.push([dev.created(number=n, number_source="manual") for n in (1, 2, 4)])
    await dev.client.push([dev.created(number=0)])
    await synced(engine.server)
    data = str(engine.server.config.data_dir)
    [gap] = cli_json(capsys, "gaps", "--data", data)["gaps"]
    assert (gap["kind"], gap["first"], gap["last"], gap["missing"]) == ("invoice", 3, 3, 1)
    [un] = cli_json(capsys, "unassigned", "--data", data)["unassigned"]
    assert un["user"] == "bob"
    assert main(["history", str(uuid.uuid4()), "--data", data]) == 1
    assert main(["gaps", "--data", str(Path(data) / "nowhere")]) == 1


async def test_replay_to_a_past_position_matches_the_live_view_then(
    engine: EngineHarness, tmp_path: Path
) -> None:
    office = await engine.device("alice")
    tablet = await engine.device("carol")
    docs = [office.created(number=n) for n in (1, 2, 3)]
    await office.client.push(docs)
    await tablet.client.push([tablet.created(number=3)])
    live = await synced(engine.server)
    then = engine.core.log.head
    reader = ViewStore.open_readonly(live.path)
    digest_then = reader.digest()

    await tablet.client.push(
        [renumber(tablet, docs[2], 7, then)] + [tablet.created() for _ in range(5)]
    )
    await synced(engine.server)
    digest_now = reader.digest()
    reader.close()
    assert digest_now != digest_then

    log_path = engine.server.config.log_path
    assert rebuild(log_path, tmp_path / "then.sqlite", until=then).digest == digest_then
    assert rebuild(log_path, tmp_path / "now.sqlite").digest == digest_now
    admin = await engine.admin()
    remote = await replay_remote(admin, tmp_path / "remote.sqlite", then)
    assert remote.digest == digest_then and remote.broken is None

    # the auditor's command over NATS, with the admin credential and with a device token
    data = str(engine.server.config.data_dir)
    token = Enrollment(engine.url, office.device_id, office.secret, "alice", 1).token()
    for creds in (["--data", data], ["--token", token]):
        # not subprocess.run: the engine answering it runs on this event loop
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "engine", "replay", *creds, "--until", str(then), "--json"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, stderr.decode()
        rep = json.loads(stdout)
        assert rep["digest"] == digest_then and rep["chain"]["ok"] is True


async def test_holes_are_filled_from_the_engine(engine: EngineHarness, tmp_path: Path) -> None:
    dev = await engine.device("alice")
    await dev.client.push([dev.created(number=n + 1) for n in range(30)])
    await synced(engine.server)
    admin = await engine.admin()
    store = ViewStore.open(tmp_path / "views.sqlite")
    f = await Follower.open(store, engine_filler(admin, page=7))
    last = (await engine.core.log.read(engine.core.log.head - 1, 1))[0]
    # the first record this projection sees is the head: everything before is a hole
    assert await f.feed([(last.position, last.body, last.hash)]) == engine.core.log.head
    assert f.filled == engine.core.log.head - 1
    assert store.digest() == ViewStore.open_readonly(live_projection(engine.server).path).digest()
    store.close()


async def test_live_views_resume_after_restart_and_rebuild_when_missing(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    cfg = engine_config(tmp_path / "data", nats_server.url)
    server = EngineServer(cfg)
    await server.start()
    h = EngineHarness(server, nats_server.url)
    try:
        dev = await h.device("alice")
        await dev.client.push([dev.created(number=n + 1) for n in range(20)])
        await synced(server)
    finally:
        await h.close()
        await server.stop()
    views = cfg.data_dir / "views.sqlite"
    position_before = ViewStore.open_readonly(views).checkpoint()[0]
    assert position_before > 20

    server = EngineServer(cfg)  # same data: resumes from the checkpoint
    await server.start()
    h = EngineHarness(server, nats_server.url)
    try:
        dev = await h.device("dave")
        await dev.client.push([dev.created(number=n + 21) for n in range(5)])
        await synced(server)
    finally:
        await h.close()
        await server.stop()
    expected = rebuild(cfg.log_path, tmp_path / "full.sqlite").digest
    assert ViewStore.open_readonly(views).digest() == expected

    views.unlink()  # a lost views file is rebuilt from the log at start
    server = EngineServer(cfg)
    await server.start()
    try:
        await synced(server)
        assert ViewStore.open_readonly(views).digest() == expected
    finally:
        await server.stop()
