"""The compiled push decoder never accepts what ``parse_event`` refuses, and
what it accepts has exactly ``parse_event``'s canonical form (pure, no server)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import codec
from engine.errors import SynvoiceError
from engine.events import new_event, parse_event
from engine.fastparse import decode_push, parse_pushed
from engine.schema.common import Customer, Line
from engine.schema.documents import (
    Converted,
    CustomerChanged,
    DatesChanged,
    DocumentCreated,
    Issued,
    LinesChanged,
    NumberAssigned,
    Voided,
)


def _agree(raw: Any) -> bool:
    """Check one raw event; True if the fast path accepted it."""
    fast = parse_pushed(codec.pack(raw))
    try:
        slow = parse_event(raw)
    except SynvoiceError:
        assert fast is None, f"fast path accepted what parse_event refuses: {raw!r}"
        return False
    if fast is None:
        return False
    assert fast.to_wire() == slow.to_wire()
    assert codec.pack(fast.to_wire()) == codec.pack(slow.to_wire())
    # Same field values of the same types (pydantic's == also compares the caches).
    assert fast.__dict__ == slow.__dict__
    assert [type(v) for v in fast.__dict__.values()] == [type(v) for v in slow.__dict__.values()]
    return True


def _device_events() -> list[dict[str, Any]]:
    """Events as the device agent makes them (``new_event(...).to_wire()``)."""
    doc = uuid.uuid4()
    lines = [
        Line(description="Consulting", quantity="2", unit_price="99.50", tax_rate="20"),
        Line(description="Hosting", quantity="1.5", unit_price="-3", tax_rate="7.25"),
    ]
    customer = Customer(name="Acme Ltd", email="billing@acme.example", address="1 Main St")
    payloads: list[tuple[str, Any]] = [
        (
            "document.created",
            DocumentCreated(
                number=7,
                customer=customer,
                lines=lines,
                issue_date=date(2026, 1, 31),
                due_date=date(2026, 2, 28),
                notes="thanks",
                converted_from=uuid.uuid4(),
            ),
        ),
        ("document.created", DocumentCreated()),
        ("document.lines_changed", LinesChanged(lines=lines)),
        ("document.customer_changed", CustomerChanged(customer=customer)),
        ("document.dates_changed", DatesChanged(issue_date=date(2026, 3, 1))),
        ("document.number_assigned", NumberAssigned(number=12, source="manual", previous=7)),
        ("document.issued", Issued()),
        ("document.voided", Voided(reason="duplicate")),
        ("document.converted", Converted(invoice_id=uuid.uuid4())),
    ]
    return [
        new_event(
            t,
            p,
            device_id="dev-1",
            user="alice",
            device_seq=i,
            doc_id=doc,
            kind="invoice",
            seen_position=i,
        ).to_wire()
        for i, (t, p) in enumerate(payloads)
    ]


def test_device_events_take_the_fast_path() -> None:
    for raw in _device_events():
        assert _agree(raw), raw["type"]


def test_push_request_keeps_each_event_as_its_bytes() -> None:
    events = _device_events()
    req = decode_push(codec.pack({"events": events, "other": 1}))
    assert [codec.unpack(bytes(r)) for r in req.events] == events


@pytest.mark.parametrize(
    "over",
    [
        {"schema_version": 1},  # upcast by parse_event
        {"type": "sale.recorded"},  # not a document event: the pydantic path decides
        {"position": 5},
        {"data": {"number": 3, "surprise": 1}},
        {"data": {"lines": [{"description": "x", "quantity": 2, "unit_price": "1"}]}},
        {"data": {"lines": [{"description": "x", "quantity": "1e3", "unit_price": "1"}]}},
        {"data": {"lines": [{"description": "x", "quantity": "01", "unit_price": "1"}]}},
        {"data": {"currency": "USD\n"}},
        {"user": "alice\n"},
        {"device_time": "2026-01-01T00:00:00"},
        {"device_time": "2026-01-01T00:00:00.1234567+00:00"},  # msgspec would round
        {"device_time": "2026-01-01T00:00:00.123456789Z"},
        {"device_time": "2026-13-01T00:00:00Z"},
        {"device_time": "2026-01-01 10:00:00+00:00"},
    ],
)
def test_what_the_fast_path_leaves_to_parse_event(over: dict[str, Any]) -> None:
    raw = {**_device_events()[0], **over}
    assert parse_pushed(codec.pack(raw)) is None
    _agree(raw)


# --- generated input ---------------------------------------------------------------

_ints = st.integers(-(2**63), 2**64 - 1)  # what msgpack can carry
_texts = st.one_of(
    st.text(max_size=5),
    st.sampled_from(["alice", "dev-1", "USD", "usd", "EUR\n", "x" * 65, "a b", " a", "é"]),
)
_decimals = st.one_of(
    st.sampled_from(
        [
            "0",
            "-0",
            "1",
            "1.5",
            "99.999999",
            "1.0000001",
            "100",
            "99.9999",
            "100.5",
            "1e2",
            "NaN",
            "Infinity",
            "-1",
            "999999999",
            "1000000000",
            "1_000",
            " 1",
            "1.",
            ".5",
            "00",
            "0.000000",
            "1E-7",
            "123456789012.5",
            "1000000000000.1",
        ]
    ),
    st.integers(-(10**13), 10**13),
    st.floats(allow_nan=True),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
)
_line = st.fixed_dictionaries(
    {"description": _texts, "quantity": _decimals, "unit_price": _decimals},
    optional={"tax_rate": _decimals, "extra": _ints},
)
_dates = st.one_of(
    st.none(),
    st.dates().map(date.isoformat),
    st.sampled_from(["2026-02-30", "2026-1-1", "20260101", "2026-01-01T00:00:00"]),
    _ints,
)
_uuids = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: u.hex),
    st.sampled_from(["", "not-a-uuid"]),
    st.none(),
)
_data = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "number": st.one_of(st.integers(-2, 2**54), st.booleans(), st.text(max_size=3)),
            "number_source": st.sampled_from(["device", "server", "manual", "x"]),
            "source": st.sampled_from(["device", "server", "manual", "x"]),
            "previous": st.one_of(st.none(), st.integers(-2, 10)),
            "customer": st.one_of(
                st.none(),
                st.fixed_dictionaries(
                    {"name": _texts},
                    optional={"email": st.one_of(st.none(), _texts), "vat": _texts},
                ),
            ),
            "lines": st.lists(_line, max_size=3),
            "currency": _texts,
            "issue_date": _dates,
            "due_date": _dates,
            "notes": st.one_of(st.none(), _texts),
            "reason": st.one_of(st.none(), _texts),
            "invoice_id": _uuids,
            "converted_from": _uuids,
        },
    ),
    _ints,
)
_times = st.one_of(
    st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat),
    st.datetimes(timezones=st.just(timezone(timedelta(hours=-5)))).map(datetime.isoformat),
    st.datetimes().map(datetime.isoformat),  # naive: refused
    st.sampled_from(["2026-01-01T10:00:00Z", "2026-01-01 10:00:00+00:00", "yesterday"]),
    st.builds(  # more fractional digits than microseconds
        lambda t, extra: t.isoformat(timespec="microseconds")[:26] + extra + "+00:00",
        st.datetimes(timezones=st.just(UTC)),
        st.from_regex(r"\A\d{1,3}\Z"),
    ),
)
_envelope = st.fixed_dictionaries(
    {
        "event_id": _uuids,
        "type": st.sampled_from(
            [
                "document.created",
                "document.lines_changed",
                "document.customer_changed",
                "document.dates_changed",
                "document.number_assigned",
                "document.issued",
                "document.voided",
                "document.converted",
                "document.unknown",
                "settings.user_enrolled",
            ]
        ),
        "doc_id": _uuids,
        "kind": st.sampled_from(["invoice", "quote", "estimate", "receipt", None]),
        "device_id": _texts,
        "user": _texts,
        "device_seq": st.one_of(st.integers(-1, 2**63), st.booleans()),
        "device_time": _times,
        "data": _data,
    },
    optional={
        "schema_version": st.integers(0, 3),
        "seen_position": st.one_of(st.integers(-1, 2**63), st.none()),
        "position": _ints,
        "surprise": _ints,
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_envelope)
def test_generated_events_agree_with_parse_event(raw: dict[str, Any]) -> None:
    _agree(raw)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(range(9)), st.data())
def test_mutated_device_events_agree(index: int, data: st.DataObject) -> None:
    raw = _device_events()[index]
    key = data.draw(st.sampled_from(sorted(raw)))
    raw[key] = data.draw(st.one_of(st.none(), _ints, _texts, st.just(raw[key]), _data), label=key)
    _agree(raw)


_money = st.decimals(min_value=-(10**8), max_value=10**8, places=2).map(str)
_valid_line = st.fixed_dictionaries(
    {
        "description": st.text(min_size=1, max_size=20),
        "quantity": _money,
        "unit_price": _money,
        "tax_rate": st.decimals(min_value=0, max_value=99, places=1).map(str),
    }
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_valid_line, max_size=4), st.text(min_size=1, max_size=30))
def test_generated_valid_documents_take_the_fast_path(
    lines: list[dict[str, str]], name: str
) -> None:
    raw = _device_events()[0]
    raw["data"] = {**raw["data"], "lines": lines, "customer": {"name": name}}
    assert _agree(raw)


@pytest.mark.parametrize("previous", [None, 3])
def test_server_number_data_is_the_canonical_payload(previous: int | None) -> None:
    # engine.core builds the document.number_assigned data by hand (hot path).
    built = {"number": 5, "source": "server", "previous": previous}
    assert (
        NumberAssigned(number=5, source="server", previous=previous).model_dump(mode="json")
        == built
    )


_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        _ints,
        st.floats(allow_nan=False),
        st.text(max_size=40),
        st.binary(max_size=40),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=20), st.dictionaries(st.text(max_size=10), inner, max_size=20)
    ),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_codec_pack_writes_what_msgpack_writes(value: Any) -> None:
    # The log's bytes (and so its hash chain) must not depend on which packer wrote them.
    import msgpack

    assert codec.pack(value) == msgpack.packb(value, use_bin_type=True)
    assert codec.unpack(codec.pack(value)) == msgpack.unpackb(
        codec.pack(value), raw=False, strict_map_key=False
    )
