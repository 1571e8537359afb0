"""Series per period in the projections: with a resetting pattern, the same number
in two years is two documents of two series, not a duplicate; gaps are per year;
live (incremental), one-process and two-process rebuilds agree."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from engine.events import Event
from engine.schema.settings import NumberPatternSet, UserModeSet
from engine.stored import decode_stored
from projections.follow import Follower
from projections.liveworker import LogReader
from projections.model import Projector
from projections.numbers import SHARED, Gap
from projections.rebuild import build_from_log
from projections.store import ViewStore
from tests.projections.test_bounded import write_rows
from tests.support.logs import Dev, Log, engine_event

BERLIN = ZoneInfo("Europe/Berlin")
IN_2026 = datetime(2026, 6, 1, 12, tzinfo=BERLIN)
LAST_SECOND = datetime(2026, 12, 31, 23, 59, 59, tzinfo=BERLIN)
NEW_YEAR = datetime(2027, 1, 1, 0, 0, 0, tzinfo=BERLIN)
IN_2027 = datetime(2027, 2, 1, 12, tzinfo=BERLIN)


def at(ev: Event, when: datetime) -> Event:
    """``ev`` as made on a device whose clock said ``when``."""
    return ev.model_copy(update={"device_time": when.astimezone(UTC)})


def pattern(reset: str = "yearly", since: datetime = IN_2026) -> Event:
    p = NumberPatternSet(
        kind="invoice", pattern="INV-{YYYY}-{SEQ:4}", reset=reset, tz="Europe/Berlin", since=since
    )
    return engine_event("settings.number_pattern_set", p)


def yearly_log() -> tuple[Log, dict[str, Event]]:
    """2026: 1, 2 (2 at 23:59:59 on 31 December); 2027: 1, 3, and a second 3."""
    log = Log()
    log.append([engine_event("settings.user_mode_set", UserModeSet(mode="single")), pattern()])
    office, tablet = Dev("dev-office"), Dev("dev-tablet", "bob")
    docs = {
        "a1": at(office.create(number=1), IN_2026),
        "a2": at(office.create(number=2), LAST_SECOND),
        "b1": at(office.create(number=1), NEW_YEAR),
        "b3": at(office.create(number=3), IN_2027),
        "t3": at(tablet.create(number=3), IN_2027),  # the tablet had not synced
    }
    log.append(list(docs.values()))
    return log, docs


def project(log: Log) -> Projector:
    p = Projector()
    for pos, body, h in log.rows:
        p.apply(decode_stored(pos, body), h)
    return p


def test_the_same_number_in_two_years_is_no_duplicate() -> None:
    log, docs = yearly_log()
    p = project(log)
    ids = sorted(str(docs[k].doc_id) for k in ("b3", "t3"))
    assert p.duplicates() == [("invoice", "2027", 3, ids)]
    assert p.docs[str(docs["a2"].doc_id)].period == "2026"  # 23:59:59 is still 2026
    assert p.docs[str(docs["b1"].doc_id)].period == "2027"
    assert p.gaps("invoice") == [Gap("invoice", SHARED, 0, 0, 2, 2, 1, 1, "2027")]


def test_renumbering_within_a_year_clears_the_duplicate_and_the_gap() -> None:
    log, docs = yearly_log()
    log.append([at(Dev("dev-tablet", "bob", seq=5).renumber(docs["t3"], 2), IN_2027)])
    p = project(log)
    assert p.duplicates() == []
    assert p.gaps("invoice") == []


def test_numbers_before_the_pattern_stay_in_the_never_resetting_series() -> None:
    log = Log()
    office = Dev("dev-office")
    early = datetime(2026, 3, 1, tzinfo=UTC)
    log.append([engine_event("settings.user_mode_set", UserModeSet(mode="single"))])
    log.append([at(office.create(number=n), early) for n in (1, 2, 3)])
    log.append([pattern()])
    log.append([at(office.create(number=1), IN_2026), at(office.create(number=3), IN_2027)])
    p = project(log)
    assert p.duplicates() == []
    assert p.numbers.periods("invoice") == ["", "2026", "2027"]
    assert [(g.period, g.first, g.last) for g in p.gaps("invoice")] == [("2027", 1, 2)]


def test_a_pattern_arriving_after_a_document_never_moves_it_in_the_index() -> None:
    # A device clock ahead of the engine's: the document's numbering moment is
    # after the pattern's ``since`` although the pattern event comes later in the
    # log. It stays filed where it was folded until it is renumbered.
    log = Log()
    office = Dev("dev-office")
    log.append([engine_event("settings.user_mode_set", UserModeSet(mode="single"))])
    doc = at(office.create(number=5), IN_2027)
    log.append([doc])
    log.append([pattern(since=IN_2026)])
    log.append([at(office.renumber(doc, 6), IN_2027)])
    p = project(log)
    v = p.docs[str(doc.doc_id)]
    assert (v.number, v.period) == (6, "2027")
    assert list(p.numbers.numbers("invoice", "")) == []
    assert list(p.numbers.numbers("invoice", "2027")) == [6]


@pytest.mark.parametrize("workers", [1, 2])
async def test_views_file_rebuild_and_live_agree(tmp_path: Path, workers: int) -> None:
    log, docs = yearly_log()
    path = tmp_path / "log.sqlite"
    await write_rows(path, log)
    built = build_from_log(path, tmp_path / "built.sqlite", workers=workers)
    reader = LogReader(path)  # the rows as the engine sealed them
    rows = reader.read(0)
    reader.close()

    live = ViewStore.open(tmp_path / "live.sqlite")
    try:
        f = await Follower.open(live)
        await f.feed(rows[:3])  # restart half-way: the cached index keeps periods
        live.close()
        live = ViewStore.open(tmp_path / "live.sqlite")
        f = await Follower.open(live)
        await f.feed(rows[3:])
        await f.flush_gaps()
        assert live.digest() == built.digest

        dups = live.duplicates()
        assert [(d["period"], d["number"], d["display_number"]) for d in dups] == [
            ("2027", 3, "INV-2027-0003"),
            ("2027", 3, "INV-2027-0003"),
        ]
        assert {d["doc_id"] for d in dups} == {str(docs["b3"].doc_id), str(docs["t3"].doc_id)}
        gaps = live.gaps()
        assert [(g["period"], g["first"], g["last"]) for g in gaps] == [("2027", 2, 2)]
        assert live.counts()["duplicate_numbers"] == 1
        assert live.holders("invoice", "2026", 1) == [str(docs["a1"].doc_id)]
        assert live.holders("invoice", "2027", 1) == [str(docs["b1"].doc_id)]
    finally:
        live.close()


def test_display_numbers_use_the_pattern_of_their_moment(tmp_path: Path) -> None:
    log, docs = yearly_log()
    p = project(log)
    store = ViewStore.open(tmp_path / "v.sqlite")
    try:
        store.flush(p.take_changes())
        ns = store.numbering()
        a2 = store.load_document(str(docs["a2"].doc_id))
        assert a2 is not None and a2.numbered_at is not None
        assert ns.display("invoice", a2.number, a2.numbered_at) == "INV-2026-0002"
        assert store.document(str(uuid.UUID(int=0))) is None
    finally:
        store.close()


async def test_console_groups_duplicates_and_explains_gaps_per_period(tmp_path: Path) -> None:
    from engine.console.app import gap_key
    from projections.console import Views

    log, _ = yearly_log()
    path = tmp_path / "log.sqlite"
    await write_rows(path, log)
    build_from_log(path, tmp_path / "views.sqlite", workers=1)
    views = Views(tmp_path / "views.sqlite")
    data = views.numbers()
    assert [(g["kind"], g["period"], g["ranges"]) for g in data["duplicates"]] == [
        ("invoice", "2027", [(3, 3)])
    ]
    [gap] = data["gaps"]
    assert views.problems() == (1, 1)
    # Explaining 2-2 of 2026 (there is none) does not explain 2027's.
    assert views.problems([gap_key("invoice", SHARED, 2, 2)]) == (1, 1)
    assert views.problems([gap_key("invoice", SHARED, 2, 2, gap["period"])]) == (1, 0)
