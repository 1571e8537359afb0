"""Number patterns, golden cases (pure: no server): the year rollover at 23:59:59
in the business's time zone, a monthly reset, an offline "0 -> Assign Number"
across a rollover, distributed per-user series, pattern changes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from devices.numbering import DeviceNumbering, duplicates
from engine.document import DocumentView, fold_wire
from engine.events import Event, construct_event
from engine.patterns import PatternError, check_pattern, format_number, period_of
from engine.schema.common import ENGINE_DEVICE
from engine.schema.documents import DocumentCreated, NumberAssigned
from engine.schema.registry import REGISTRY
from engine.schema.settings import NumberPatternSet, UserEnrolled, UserModeSet
from engine.settings_fold import NumberingSettings
from engine.state import EngineState

BERLIN = ZoneInfo("Europe/Berlin")
LAST_SECOND = datetime(2026, 12, 31, 23, 59, 59, tzinfo=BERLIN)  # 22:59:59 UTC
NEW_YEAR = datetime(2027, 1, 1, 0, 0, 0, tzinfo=BERLIN)


def _event(
    type_: str,
    payload: BaseModel,
    at: datetime,
    doc: uuid.UUID | None = None,
    kind: str | None = None,
    user: str = ENGINE_DEVICE,
) -> Event:
    return construct_event(
        event_id=uuid.uuid4(),
        type=type_,
        schema_version=REGISTRY[type_].schema_version,
        doc_id=doc,
        kind=kind,
        device_id=ENGINE_DEVICE if user == ENGINE_DEVICE else f"dev-{user}",
        user=user,
        device_seq=0,
        device_time=at.astimezone(UTC),
        seen_position=0,
        data=payload.model_dump(mode="json"),
    )


def _pattern(text: str, reset: str, since: datetime, tz: str = "Europe/Berlin") -> Event:
    p = NumberPatternSet(kind="invoice", pattern=text, reset=reset, tz=tz, since=since)
    return _event("settings.number_pattern_set", p, since)


def _settings(*events: Event) -> NumberingSettings:
    ns = NumberingSettings()
    for ev in events:
        ns.apply(ev.type, ev.data, {})
    return ns


SINCE = datetime(2026, 1, 1, tzinfo=UTC)


def test_year_rollover_at_235959_in_the_business_time_zone() -> None:
    ns = _settings(_pattern("INV-{YYYY}-{SEQ:4}", "yearly", SINCE))
    assert ns.display("invoice", 42, LAST_SECOND) == "INV-2026-0042"
    assert ns.period("invoice", LAST_SECOND) == "2026"
    assert ns.display("invoice", 1, NEW_YEAR) == "INV-2027-0001"
    assert ns.period("invoice", NEW_YEAR) == "2027"
    # The same instants in UTC: 23:30 UTC on 31 December is already 2027 in Berlin.
    late_utc = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    assert ns.period("invoice", late_utc) == "2027"
    assert period_of("yearly", "UTC", late_utc) == "2026"


def test_monthly_reset() -> None:
    ns = _settings(_pattern("{YY}{MM}-{SEQ:3}", "monthly", SINCE))
    jan_end = datetime(2026, 1, 31, 23, 59, 59, tzinfo=BERLIN)
    assert (ns.period("invoice", jan_end), ns.display("invoice", 7, jan_end)) == (
        "2026-01",
        "2601-007",
    )
    feb = jan_end + timedelta(seconds=1)
    assert (ns.period("invoice", feb), ns.display("invoice", 1, feb)) == ("2026-02", "2602-001")


def test_centralized_counter_restarts_each_period() -> None:
    state = EngineState()
    state.apply(_event("settings.user_mode_set", UserModeSet(mode="centralized"), SINCE))
    state.apply(_pattern("INV-{YYYY}-{SEQ:4}", "yearly", SINCE))
    assert [state.counter("invoice", LAST_SECOND).next() for _ in range(2)] == [1, 2]
    for n in (1, 2):
        state.apply(
            _event(
                "document.number_assigned",
                NumberAssigned(number=n, source="server"),
                LAST_SECOND,
                uuid.uuid4(),
                "invoice",
            )
        )
    assert state.counter("invoice", NEW_YEAR).next() == 1  # 2027 starts again
    assert state.counter("invoice", LAST_SECOND).next() == 3
    again = EngineState.from_snapshot(state.to_snapshot())
    assert again.counter("invoice", LAST_SECOND).next() == 4


def test_offline_assignment_across_a_rollover_numbers_in_the_year_assigned() -> None:
    """Created offline on 31 December with number 0, assigned on 1 January: the
    number counts (and shows) in the year it was assigned."""
    dn = DeviceNumbering()
    for ev in (
        _event("settings.user_mode_set", UserModeSet(mode="single"), SINCE),
        _pattern("INV-{YYYY}-{SEQ:4}", "yearly", SINCE),
    ):
        dn.observe(ev)
    doc, other = uuid.uuid4(), uuid.uuid4()
    # 2026 already holds invoice 1 (another document).
    dn.observe(
        _event("document.created", DocumentCreated(number=1), LAST_SECOND, other, "invoice", "ann")
    )
    created = _event("document.created", DocumentCreated(number=0), LAST_SECOND, doc, "invoice")
    assigned = _event(
        "document.number_assigned",
        NumberAssigned(number=1, source="device", previous=0),
        NEW_YEAR + timedelta(hours=9),
        doc,
        "invoice",
    )
    v = DocumentView(str(doc), "invoice")
    for ev in (created, assigned):
        fold_wire(v, ev.to_wire(), [])
        dn.observe(ev)
    assert v.numbered_at == assigned.to_wire()["device_time"]
    assert dn.settings.display("invoice", v.number, v.numbered_at) == "INV-2027-0001"
    assert dn.period_highest == {("invoice", "2026"): 1, ("invoice", "2027"): 1}
    again = DeviceNumbering.from_snapshot(dn.to_snapshot())
    assert again.period_highest == dn.period_highest


def test_distributed_per_user_series() -> None:
    ns = _settings(
        _event("settings.user_enrolled", UserEnrolled(user="ann", slot=1), SINCE),
        _event("settings.user_enrolled", UserEnrolled(user="ben", slot=2), SINCE),
        _pattern("{USER}/{YYYY}/{SEQ:3}", "never", SINCE),
    )
    at = datetime(2026, 6, 1, tzinfo=UTC)
    assert [ns.display("invoice", n, at, "ann") for n in (1, 3, 5)] == [
        "ann/2026/001",
        "ann/2026/003",
        "ann/2026/005",
    ]
    assert ns.display("invoice", 2, at, "ben") == "ben/2026/002"
    slot = _settings(
        _event("settings.user_enrolled", UserEnrolled(user="ben", slot=2), SINCE),
        _pattern("S{SLOT}-{SEQ}", "never", SINCE),
    )
    assert slot.display("invoice", 4, at, "ben") == "S2-4"


def test_a_pattern_change_never_rewrites_issued_numbers() -> None:
    change = datetime(2026, 7, 1, tzinfo=UTC)
    ns = _settings(
        _pattern("A-{SEQ}", "never", SINCE),
        _pattern("B-{YYYY}-{SEQ:5}", "yearly", change),
    )
    assert ns.display("invoice", 9, change - timedelta(seconds=1)) == "A-9"
    assert ns.display("invoice", 10, change) == "B-2026-00010"
    assert ns.display("invoice", 3, SINCE - timedelta(days=1)) == "3"  # before any pattern
    assert ns.display("quote", 3, change) == "3"  # another kind: no pattern
    assert ns.display("invoice", 0, change) == "0"  # not numbered yet


@pytest.mark.parametrize(
    ("text", "reset", "tz", "why"),
    [
        ("INV-", "never", "UTC", "exactly once"),
        ("{SEQ}-{SEQ}", "never", "UTC", "exactly once"),
        ("{SEQ:0}", "never", "UTC", "1 <= n"),
        ("{SEQ:13}", "never", "UTC", "1 <= n"),
        ("{YEAR}-{SEQ}", "never", "UTC", "unknown token"),
        ("{MM:2}-{SEQ}", "never", "UTC", "only {SEQ}"),
        ("a{b-{SEQ}", "never", "UTC", "brace"),
        ("{SEQ}}", "never", "UTC", "brace"),
        ("INV-{SEQ}", "yearly", "UTC", "yearly reset needs"),
        ("{YYYY}-{SEQ}", "monthly", "UTC", "monthly reset needs"),
        ("{YYYY}-{SEQ}", "weekly", "UTC", "reset must be"),
        ("{YYYY}-{SEQ}", "yearly", "Mars/Olympus", "unknown time zone"),
        ("{YYYY}-{SEQ}", "yearly", "../../etc/passwd", "unknown time zone"),
        ("x" * 65 + "{SEQ}", "never", "UTC", "1 to 64"),
    ],
)
def test_unusable_patterns_are_refused_with_a_reason(
    text: str, reset: str, tz: str, why: str
) -> None:
    with pytest.raises(PatternError, match=why.replace("{", r"\{").replace("}", r"\}")):
        check_pattern(text, reset, tz)


@given(st.text(max_size=80), st.sampled_from(["never", "yearly", "monthly", "x"]))
def test_any_text_is_a_pattern_or_a_pattern_error(text: str, reset: str) -> None:
    try:
        p = check_pattern(text, reset, "UTC")
    except PatternError:
        return
    shown = format_number(p, 42, datetime(2026, 3, 4, tzinfo=UTC), "ann", 1)
    assert "42" in shown


def test_duplicates_are_per_series_and_period() -> None:
    ns = _settings(_pattern("INV-{YYYY}-{SEQ:4}", "yearly", SINCE))
    views = []
    for at in (LAST_SECOND, NEW_YEAR, NEW_YEAR + timedelta(days=1)):
        v = DocumentView(str(uuid.uuid4()), "invoice", number=1, created=True)
        v.numbered_at = at.isoformat()
        views.append(v)
    [dup] = duplicates(views, ns)
    assert (dup["period"], dup["display_number"], len(dup["documents"])) == (
        "2027",
        "INV-2027-0001",
        2,
    )
    assert len(duplicates(views)[0]["documents"]) == 3  # without settings: per kind
