"""The push hot path: one compiled (msgspec) pass validates a pushed event.

``parse_event`` (pydantic) is the definition of a valid event; validating a
200-event push through it costs ~50 µs per event, most of the engine's CPU.
This module mirrors the document payloads as msgspec Structs and decodes each
pushed event straight from its msgpack bytes into the canonical wire map that
``parse_event`` would have produced, at a few µs per event.

It only ever *narrows*: whatever it cannot vouch for (an older schema
version, a billing event, a decimal given as a number, an unknown field, any
validation failure) returns ``None`` and the caller takes the pydantic path,
which accepts or refuses with its usual error. tests/engine/test_fastparse.py
checks with generated input that every event accepted here is accepted by
``parse_event`` with the same canonical map.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from engine.events import Event, construct_event
from engine.schema.common import MAX_NUMBER
from engine.schema.registry import REGISTRY

# Patterns end in \Z, not $: Python's $ also matches before a final newline,
# which pydantic's (Rust) regex does not.
_NAME = r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}\Z"
Name = Annotated[str, Meta(pattern=_NAME)]
DeviceTime = Annotated[
    str, Meta(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)\Z")
]
KindT = Literal["invoice", "quote", "estimate", "credit_note"]
SourceT = Literal["device", "server", "manual"]
SeqInt = Annotated[int, Meta(ge=0, le=2**62)]
NumberInt = Annotated[int, Meta(ge=0, le=MAX_NUMBER)]


class _S(Struct, forbid_unknown_fields=True):
    pass


class CustomerS(_S):
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    email: Annotated[str, Meta(max_length=254)] | None = None
    address: Annotated[str, Meta(max_length=1000)] | None = None
    tax_id: Annotated[str, Meta(max_length=64)] | None = None
    country: Annotated[str, Meta(pattern=r"^[A-Z]{2}\Z")] | None = None


# Decimals as the strings devices send, in the only form whose ``str(Decimal(s))``
# is ``s`` itself (no leading zeros, no exponent) and strictly inside the
# bounds of ``engine.schema.common.Line``: pattern-checked in C, no Decimal built.
Quantity = Annotated[str, Meta(pattern=r"^-?(0|[1-9]\d{0,8})(\.\d{1,6})?\Z")]
Price = Annotated[str, Meta(pattern=r"^-?(0|[1-9]\d{0,11})(\.\d{1,6})?\Z")]
TaxRate = Annotated[str, Meta(pattern=r"^(0|[1-9]\d?)(\.\d{1,4})?\Z")]


class LineS(_S):
    description: Annotated[str, Meta(min_length=1, max_length=1000)]
    quantity: Quantity
    unit_price: Price
    tax_rate: TaxRate = "0"


Lines = Annotated[list[LineS], Meta(max_length=1000)]


class CreatedS(_S):
    number: NumberInt = 0
    number_source: SourceT = "device"
    customer: CustomerS | None = None
    lines: Lines = msgspec.field(default_factory=list)
    currency: Annotated[str, Meta(pattern=r"^[A-Z]{3}\Z")] = "USD"
    issue_date: date | None = None
    due_date: date | None = None
    notes: Annotated[str, Meta(max_length=4000)] | None = None
    converted_from: uuid.UUID | None = None
    credits: uuid.UUID | None = None
    payment_terms: Annotated[str, Meta(max_length=500)] | None = None


class CustomerChangedS(_S):
    customer: CustomerS


class LinesChangedS(_S):
    lines: Lines


class DatesChangedS(_S):
    issue_date: date | None = None
    due_date: date | None = None


class NumberAssignedS(_S):
    number: NumberInt
    source: SourceT
    previous: Annotated[int, Meta(ge=0)] | None = None


class IssuedS(_S):
    pass


class VoidedS(_S):
    reason: Annotated[str, Meta(max_length=1000)] | None = None


class ConvertedS(_S):
    invoice_id: uuid.UUID


class _Env(Struct, forbid_unknown_fields=True, tag_field="type", kw_only=True):
    """The envelope of a document event pushed by a device (``Event``'s fields
    minus the engine-set ones, which a device may not send)."""

    event_id: uuid.UUID
    doc_id: uuid.UUID
    kind: KindT
    device_id: Name
    user: Name
    device_seq: SeqInt
    # Text, parsed below: msgspec rounds digits past microseconds where pydantic
    # truncates, so the fast path vouches only for the plain RFC 3339 form.
    device_time: DeviceTime
    schema_version: Annotated[int, Meta(ge=1, le=1000)] = 1
    seen_position: SeqInt = 0


class CreatedE(_Env, tag="document.created"):
    data: CreatedS


class CustomerChangedE(_Env, tag="document.customer_changed"):
    data: CustomerChangedS


class LinesChangedE(_Env, tag="document.lines_changed"):
    data: LinesChangedS


class DatesChangedE(_Env, tag="document.dates_changed"):
    data: DatesChangedS


class NumberAssignedE(_Env, tag="document.number_assigned"):
    data: NumberAssignedS


class IssuedE(_Env, tag="document.issued"):
    data: IssuedS = msgspec.field(default_factory=IssuedS)


class VoidedE(_Env, tag="document.voided"):
    data: VoidedS = msgspec.field(default_factory=VoidedS)


class ConvertedE(_Env, tag="document.converted"):
    data: ConvertedS


AnyEvent = (
    CreatedE
    | CustomerChangedE
    | LinesChangedE
    | DatesChangedE
    | NumberAssignedE
    | IssuedE
    | VoidedE
    | ConvertedE
)

_decode_event = msgspec.msgpack.Decoder(AnyEvent).decode


class PushS(Struct):
    """A push request with each event left as its raw bytes (sizes come free)."""

    events: list[msgspec.Raw]


_decode_push = msgspec.msgpack.Decoder(PushS).decode


def decode_push(body: bytes) -> PushS:
    """The push request with its events as raw bytes. Raises ``msgspec.DecodeError``
    for anything it cannot decode, deep nesting included (msgspec raises
    RecursionError for that), so the caller takes the checked path."""
    try:
        return _decode_push(body)
    except RecursionError:
        raise msgspec.DecodeError("nested too deeply") from None


_TAGS: list[str] = [c.__struct_config__.tag for c in AnyEvent.__args__]
_CURRENT = {t: REGISTRY[t].schema_version for t in _TAGS}
_to_builtins = msgspec.to_builtins
_fromisoformat = datetime.fromisoformat


def parse_pushed(raw: bytes | msgspec.Raw) -> Event | None:
    """The validated, canonical event for one pushed event's msgpack bytes, or
    ``None`` when only ``parse_event`` can decide (accept or refuse)."""
    try:
        e = _decode_event(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None
    tag = e.__struct_config__.tag
    if not isinstance(tag, str):  # every pushed Struct is tagged with its event type
        return None
    if e.schema_version != _CURRENT[tag]:
        return None
    try:
        device_time = _fromisoformat(e.device_time)
    except ValueError:  # e.g. month 13: parse_event names the problem
        return None
    data: dict[str, Any] = _to_builtins(e.data)
    return construct_event(
        event_id=e.event_id,
        type=tag,
        schema_version=e.schema_version,
        doc_id=e.doc_id,
        kind=e.kind,
        device_id=e.device_id,
        user=e.user,
        device_seq=e.device_seq,
        device_time=device_time,
        seen_position=e.seen_position,
        data=data,
    )
