"""The incremental follower: redeliveries, holes, chain links, atomic checkpoints."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from engine.stored import StoredEventError
from projections.follow import Follower, Row
from projections.model import Changes
from projections.rebuild import Builder
from projections.store import ViewsError, ViewStore
from tests.support.logs import Dev, Log


def make_log(n: int = 12) -> Log:
    log = Log()
    dev = Dev()
    log.append([dev.create(number=i + 1) for i in range(n)])
    return log


def full_digest(log: Log, path: Path) -> str:
    store = ViewStore.create_fresh(path)
    b = Builder(store)
    b.feed(log.rows)
    digest = b.finish()
    store.close()
    return digest


def filler(log: Log, calls: list[tuple[int, int]]):
    async def fill(after: int, upto: int) -> Sequence[Row]:
        calls.append((after, upto))
        return log.rows[after : min(upto, after + 2)]  # small pages: several calls

    return fill


async def test_holes_are_filled_and_redeliveries_dropped(tmp_path: Path) -> None:
    log = make_log()
    calls: list[tuple[int, int]] = []
    store = ViewStore.open(tmp_path / "views.sqlite")
    f = await Follower.open(store, filler(log, calls))
    assert await f.feed(log.rows[0:2]) == 2
    assert await f.feed([log.rows[6], log.rows[1]]) == 7  # hole 3..6, and 2 again
    assert calls[0] == (2, 6) and f.filled == 4
    assert await f.feed(log.rows[0:7]) == 7  # all redelivered: nothing changes
    assert await f.feed(log.rows[7:]) == 12
    assert store.digest() == full_digest(log, tmp_path / "full.sqlite")
    store.close()


async def test_a_hole_without_a_filler_is_an_error_not_a_skip(tmp_path: Path) -> None:
    log = make_log()
    store = ViewStore.open(tmp_path / "views.sqlite")
    f = await Follower.open(store)
    await f.feed(log.rows[:2])
    with pytest.raises(StoredEventError, match=r"positions 3\.\.4 are missing"):
        await f.feed([log.rows[4]])
    assert f.position == 2 and store.checkpoint()[0] == 2
    store.close()


async def test_a_broken_link_rolls_back_the_batch_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    log = make_log()
    store = ViewStore.open(tmp_path / "views.sqlite")
    f = await Follower.open(store)
    await f.feed(log.rows[:3])
    pos, body, h = log.rows[4]
    forged = (pos, body.replace(b"Acme", b"Acne"), h)
    with pytest.raises(StoredEventError, match="position 5: hash chain broken"):
        await f.feed([log.rows[3], forged])
    assert f.position == 3 and store.checkpoint()[0] == 3
    assert store.counts()["history"] == 3  # position 4 was not committed either
    await f.feed(log.rows[3:])
    assert store.digest() == full_digest(log, tmp_path / "full.sqlite")
    store.close()


async def test_reopening_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    log = make_log()
    store = ViewStore.open(tmp_path / "views.sqlite")
    await (await Follower.open(store)).feed(log.rows[:5])
    store.close()
    store = ViewStore.open(tmp_path / "views.sqlite")
    f = await Follower.open(store)
    assert f.position == 5
    await f.feed(log.rows)
    assert store.digest() == full_digest(log, tmp_path / "full.sqlite")
    store.close()


async def test_bounded_cache_and_deferred_gaps_end_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import projections.follow as follow

    monkeypatch.setattr(follow, "CACHE_DOCS", 2)  # views are reloaded from the file
    monkeypatch.setattr(follow, "BIG_SERIES", 3)  # every series counts as big
    monkeypatch.setattr(follow, "GAPS_EVERY", 3600.0)
    log = Log()
    a, b = Dev("dev-a"), Dev("dev-b")
    docs = [a.create(number=n) for n in (1, 2, 4, 6, 7)]
    log.append(docs)
    log.append([b.renumber(docs[1], 3), b.create(number=1)])
    store = ViewStore.open(tmp_path / "views.sqlite")
    f = await Follower.open(store)
    loads: list[str] = []
    loader = f.projector.loader
    assert loader is not None

    def counting(doc_id: str):
        loads.append(doc_id)
        return loader(doc_id)

    f.projector.loader = counting
    many = f.projector.loader_many
    assert many is not None

    def counting_many(doc_ids):
        loads.extend(doc_ids)
        return many(doc_ids)

    f.projector.loader_many = counting_many
    for row in log.rows:  # one batch per record: evictions and reloads all along
        await f.feed([row])
        assert len(f.projector.docs) <= 2
    assert str(docs[1].doc_id) in loads  # the renumbered view came back from the file
    assert f.gaps_pending  # the gap list waits for an idle moment...
    await f.flush_gaps()  # ...which writes it
    assert not f.gaps_pending
    assert [(g["first"], g["last"]) for g in store.gaps()] == [(2, 2), (5, 5)]
    assert store.digest() == full_digest(log, tmp_path / "full.sqlite")
    store.close()


def test_a_writer_behind_cannot_move_the_checkpoint_back(tmp_path: Path) -> None:
    store = ViewStore.open(tmp_path / "views.sqlite")
    try:
        store.flush(Changes(5, b"\x05" * 32), expect=0)
        with pytest.raises(ViewsError, match="another projection"):
            store.flush(Changes(3, b"\x03" * 32), expect=0)  # folded from 0, file is at 5
        assert store.checkpoint() == (5, b"\x05" * 32)
        store.flush(Changes(6, b"\x06" * 32), expect=5)
        assert store.checkpoint()[0] == 6
    finally:
        store.close()
