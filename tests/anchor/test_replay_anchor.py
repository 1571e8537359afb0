"""``synvoice replay`` on a real engine's log, altered with sqlite3 directly: each of
the four alterations is named and exits 1; the untouched log passes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.cli import main
from engine.natsproc import NatsServer
from tests.anchor import tamper
from tests.support.harness import doc_of, running_engine


async def _engine_log(data: Path, url: str, n: int = 6) -> None:
    async with running_engine(data, url, live_views=False) as h:
        dev = await h.device("alice")
        for _ in range(n):
            ev = dev.created("invoice")
            await dev.client.push([ev])
            await dev.client.next_numbers([("invoice", doc_of(ev))])


async def _replay(*args: str) -> int:
    return await asyncio.to_thread(main, ["replay", *args, "--no-progress"])


@pytest.fixture
async def built(tmp_path: Path, nats_server: NatsServer) -> Path:
    data = tmp_path / "data"
    await _engine_log(data, nats_server.url)
    return data


def _kept(data: Path, tmp_path: Path) -> Path:
    """The auditor's copy of the checkpoints (``synvoice checkpoints export``)."""
    out = tmp_path / "audit-checkpoints.jsonl"
    assert main(["checkpoints", "export", "--data", str(data), "--out", str(out)]) == 0
    assert out.read_text() == (data / "checkpoints.jsonl").read_text()
    (data / "checkpoints.jsonl").unlink()  # the attacker removed the engine's own copy
    return out


async def test_an_untouched_log_passes_every_check(
    built: Path, tmp_path: Path, nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    log = str(built / "log.sqlite")
    assert await _replay(log, "--data", str(built), "--nats-url", nats_server.url) == 0
    out = capsys.readouterr().out
    assert "hash chain verified" in out
    assert "Synvoice-Hash" in out and "signed checkpoint" in out and "state snapshot" in out


async def test_replay_names_a_cut_tail(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = _kept(built, tmp_path)
    tamper.cut_tail(built / "log.sqlite", 4)
    assert await _replay(str(built / "log.sqlite"), "--checkpoints", str(kept)) == 1
    err = capsys.readouterr().err
    assert "tampered" in err and "truncated" in err and "log ends at position 4" in err


async def test_replay_names_a_cut_tail_from_the_stream(
    built: Path, tmp_path: Path, nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    (built / "checkpoints.jsonl").unlink()
    tamper.cut_tail(built / "log.sqlite", 4)
    log = str(built / "log.sqlite")
    assert await _replay(log, "--data", str(built), "--nats-url", nats_server.url) == 1
    captured = capsys.readouterr()
    assert "the stream holds positions up to" in captured.out
    assert "truncated" in captured.err


async def test_replay_names_a_rewrite_with_recomputed_hashes(
    built: Path, tmp_path: Path, nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = _kept(built, tmp_path)

    def edit(wire: dict) -> None:
        wire["data"]["customer"]["name"] = "Someone Else"

    tamper.rewrite(built / "log.sqlite", 5, edit)
    log = str(built / "log.sqlite")
    assert await _replay(log, "--checkpoints", str(kept)) == 1
    assert "rewritten" in capsys.readouterr().err
    # With the stream, the altered record is named exactly.
    assert await _replay(log, "--data", str(built), "--nats-url", nats_server.url) == 1
    assert "at position 5 the log's hash differs from the stream" in capsys.readouterr().out


async def test_replay_names_a_forged_append(
    built: Path, tmp_path: Path, nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = _kept(built, tmp_path)
    pos = tamper.forge_append(built / "log.sqlite")
    log = str(built / "log.sqlite")
    assert await _replay(log, "--checkpoints", str(kept)) == 1
    err = capsys.readouterr().err
    assert "forged append" in err and f"{pos}..{pos}" in err
    assert await _replay(log, "--data", str(built), "--nats-url", nats_server.url) == 1
    assert "not in the stream" in capsys.readouterr().out


async def test_replay_names_an_edited_snapshot(
    built: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def reset(snap: dict) -> None:
        snap["counters"]["invoice"] = [0, [], 0]

    tamper.edit_snapshot(built / "log.sqlite", reset)
    assert await _replay(str(built / "log.sqlite")) == 1
    err = capsys.readouterr().err
    assert "snapshot was edited" in err and "counters" in err


async def test_replay_without_any_anchor_says_what_it_could_not_check(
    built: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (built / "checkpoints.jsonl").unlink()
    assert await _replay(str(built / "log.sqlite")) == 0
    assert "no checkpoints" in capsys.readouterr().out


async def test_a_forged_checkpoint_file_is_refused(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = _kept(built, tmp_path)
    text = kept.read_text().replace('"position": ', '"position": 1', 1)
    kept.write_text(text)
    assert await _replay(str(built / "log.sqlite"), "--checkpoints", str(kept)) == 1
    assert "bad_signature" in capsys.readouterr().err


async def test_replay_of_a_running_engine_checks_its_checkpoints(
    tmp_path: Path, nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    async with running_engine(data, nats_server.url, live_views=False) as h:
        dev = await h.device("alice")
        await dev.client.push([dev.created("invoice")])
        await h.server.anchor.checkpoint()
        assert await _replay("--data", str(data), "--json") == 0
        out = capsys.readouterr().out
        assert '"ok": true' in out and "signed checkpoint" in out
