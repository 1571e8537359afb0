"""The event model: one envelope, a registry of typed payloads, upcasting.

Every change is an immutable event. The envelope is the same for every type;
``data`` is validated against the payload model registered for ``type``.
Devices make the envelope (event id, device sequence, device time); the engine
adds ``position`` and ``committed_at`` when it appends, and the log keeps a hash
chain over the stored bytes (see ``engine.hashchain``).
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal, TypeVar, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from engine.errors import SynvoiceError

Kind = Literal["invoice", "quote", "estimate"]
KINDS: tuple[str, ...] = get_args(Kind)
UserMode = Literal["single", "centralized", "distributed"]
USER_MODES: tuple[str, ...] = get_args(UserMode)
NumberSource = Literal["device", "server", "manual"]
MAX_NUMBER = 2**53  # document numbers stay exact in JSON and JavaScript
Status = Literal["draft", "issued", "void", "converted"]

# The engine authors settings/numbering events under this device id.
ENGINE_DEVICE = "engine"

_NAME = r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- value objects -----------------------------------------------------------------


class Customer(_Model):
    name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=254)
    address: str | None = Field(default=None, max_length=1000)
    tax_id: str | None = Field(default=None, max_length=64)


_Money = Decimal


class Line(_Model):
    description: str = Field(min_length=1, max_length=1000)
    quantity: Decimal = Field(ge=Decimal("-1e9"), le=Decimal("1e9"), decimal_places=6)
    unit_price: Decimal = Field(ge=Decimal("-1e12"), le=Decimal("1e12"), decimal_places=6)
    tax_rate: Decimal = Field(default=Decimal(0), ge=0, le=100, decimal_places=4)  # percent

    @property
    def net(self) -> Decimal:
        return self.quantity * self.unit_price

    @property
    def tax(self) -> Decimal:
        return self.net * self.tax_rate / Decimal(100)


def totals(lines: list[Line]) -> tuple[Decimal, Decimal, Decimal]:
    """(net, tax, gross) rounded to cents; used by device views, projections and PDFs."""
    cent = Decimal("0.01")
    net = sum((ln.net for ln in lines), Decimal(0)).quantize(cent)
    tax = sum((ln.tax for ln in lines), Decimal(0)).quantize(cent)
    return net, tax, net + tax


# --- document payloads ----------------------------------------------------------------


class DocumentCreated(_Model):
    number: int = Field(default=0, ge=0, le=MAX_NUMBER)  # 0 = not assigned yet
    number_source: NumberSource = "device"
    customer: Customer | None = None
    lines: list[Line] = Field(default_factory=list, max_length=1000)
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    issue_date: date | None = None
    due_date: date | None = None
    notes: str | None = Field(default=None, max_length=4000)
    converted_from: uuid.UUID | None = None  # the quote/estimate this invoice came from


class CustomerChanged(_Model):
    customer: Customer


class LinesChanged(_Model):
    lines: list[Line] = Field(max_length=1000)


class DatesChanged(_Model):
    issue_date: date | None = None
    due_date: date | None = None


class NumberAssigned(_Model):
    number: int = Field(ge=0, le=MAX_NUMBER)
    source: NumberSource
    previous: int | None = Field(default=None, ge=0)


class Issued(_Model):
    pass


class Voided(_Model):
    reason: str | None = Field(default=None, max_length=1000)


class Converted(_Model):
    """A quote or estimate became an invoice (the invoice's own ``document.created``
    carries ``converted_from``)."""

    invoice_id: uuid.UUID


# --- settings / numbering payloads (engine-authored) -------------------------------


class UserModeSet(_Model):
    mode: UserMode
    previous: UserMode | None = None
    forced: bool = False


class UserEnrolled(_Model):
    user: str = Field(pattern=_NAME)
    slot: int = Field(ge=1)  # 1-based; distributed mode numbers from it


class DeviceEnrolled(_Model):
    device_id: str = Field(pattern=_NAME)
    user: str = Field(pattern=_NAME)
    name: str | None = Field(default=None, max_length=100)


class DeviceRevoked(_Model):
    device_id: str = Field(pattern=_NAME)
    reason: str | None = Field(default=None, max_length=500)


class Registered(_Model):
    """A registration key was accepted (the key itself is not stored: its
    fingerprint identifies it). ``max_*`` override the edition's limits."""

    edition: str = Field(pattern=r"^[a-z0-9_-]{1,32}$")
    licensee: str = Field(min_length=1, max_length=200)
    issued: date
    expires: date | None = None
    key_id: str = Field(pattern=r"^[0-9a-f]{1,64}$")
    fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$")
    max_users: int | None = Field(default=None, ge=0)
    max_devices: int | None = Field(default=None, ge=0)
    max_data_bytes: int | None = Field(default=None, ge=0)
    previous: str | None = None  # the edition in force before


_INTEGRATION = r"^[a-z0-9][a-z0-9_-]{0,31}$"


class IntegrationAdded(_Model):
    """Read-only broker credentials for an integration (the password is derived
    from the server's admin secret and ``credential_id``; it is not stored)."""

    name: str = Field(pattern=_INTEGRATION)
    credential_id: str = Field(pattern=r"^[0-9a-f]{16,64}$")


class IntegrationRemoved(_Model):
    name: str = Field(pattern=_INTEGRATION)


class EpochOpened(_Model):
    """Distributed numbering: in ``[start, end]`` user with slot k numbers
    ``start + (k-1) + j*increment`` (see ``engine.numbering``)."""

    kind: Kind
    epoch: int = Field(ge=1)
    start: int = Field(ge=1)
    increment: int = Field(ge=1)
    slots: dict[str, int]
    end: int = Field(ge=1)


class EpochExtended(_Model):
    kind: Kind
    epoch: int = Field(ge=1)
    end: int = Field(ge=1)


# --- registry ------------------------------------------------------------------------

Origin = Literal["device", "engine"]
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class EventSpec:
    type: str
    model: builtins.type[BaseModel]
    schema_version: int = 1
    origin: Origin = "device"  # who may author it: a device push, or the engine itself
    document: bool = True  # needs doc_id and kind
    upcasters: Mapping[int, Upcaster] = field(default_factory=dict)  # from_version -> fn


REGISTRY: dict[str, EventSpec] = {}


def register(spec: EventSpec) -> EventSpec:
    if spec.type in REGISTRY:
        raise ValueError(f"event type {spec.type!r} registered twice")
    REGISTRY[spec.type] = spec
    return spec


def _created_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    # Schema 1 carried only a customer name; schema 2 has a customer object.
    data = dict(data)
    name = data.pop("customer_name", None)
    if name is not None and "customer" not in data:
        data["customer"] = {"name": name}
    return data


for _spec in (
    EventSpec(
        "document.created",
        DocumentCreated,
        schema_version=2,
        upcasters={1: _created_v1_to_v2},
    ),
    EventSpec("document.customer_changed", CustomerChanged),
    EventSpec("document.lines_changed", LinesChanged),
    EventSpec("document.dates_changed", DatesChanged),
    EventSpec("document.number_assigned", NumberAssigned),
    EventSpec("document.issued", Issued),
    EventSpec("document.voided", Voided),
    EventSpec("document.converted", Converted),
    EventSpec("settings.user_mode_set", UserModeSet, origin="engine", document=False),
    EventSpec("settings.user_enrolled", UserEnrolled, origin="engine", document=False),
    EventSpec("settings.device_enrolled", DeviceEnrolled, origin="engine", document=False),
    EventSpec("settings.device_revoked", DeviceRevoked, origin="engine", document=False),
    EventSpec("settings.registered", Registered, origin="engine", document=False),
    EventSpec("settings.integration_added", IntegrationAdded, origin="engine", document=False),
    EventSpec("settings.integration_removed", IntegrationRemoved, origin="engine", document=False),
    EventSpec("numbering.epoch_opened", EpochOpened, origin="engine", document=False),
    EventSpec("numbering.epoch_extended", EpochExtended, origin="engine", document=False),
):
    register(_spec)


# --- envelope ------------------------------------------------------------------------

P = TypeVar("P", bound=BaseModel)


class Event(_Model):
    event_id: uuid.UUID
    type: str = Field(min_length=1, max_length=64)
    schema_version: int = Field(default=1, ge=1, le=1000)
    doc_id: uuid.UUID | None = None
    kind: Kind | None = None
    device_id: str = Field(pattern=_NAME)
    user: str = Field(pattern=_NAME)
    device_seq: int = Field(ge=0, le=2**62)
    device_time: AwareDatetime
    # Last log position the device had pulled when it made the event: lets the
    # projections tell a concurrent (offline) edit from a sequential one.
    seen_position: int = Field(default=0, ge=0, le=2**62)
    data: dict[str, Any] = Field(default_factory=dict)
    # Set by the engine on append.
    position: int | None = None
    committed_at: AwareDatetime | None = None

    _payload: BaseModel | None = PrivateAttr(default=None)
    _id_text: str | None = PrivateAttr(default=None)  # str(event_id), made once

    @property
    def id_text(self) -> str:
        """``str(event_id)``, computed once: the engine needs it three times per event
        (the stored map, the JetStream message id, the push reply)."""
        priv = self.__pydantic_private__
        if priv is None:
            return str(self.event_id)
        text = priv.get("_id_text")
        if text is None:
            text = priv["_id_text"] = str(self.event_id)
        return text

    def payload(self, model: builtins.type[P]) -> P:
        """The typed payload (validated once, then cached)."""
        # Read the private slot directly: pydantic's __getattr__ path is slow and
        # this runs for every event in the engine's writer and the projections.
        priv = self.__pydantic_private__
        p = priv.get("_payload") if priv is not None else None
        if p is None:
            p = REGISTRY[self.type].model.model_validate(self.data)
            self._payload = p
        if not isinstance(p, model):
            raise TypeError(f"{self.type} payload is {builtins.type(p).__name__}")
        return p

    def to_wire(self) -> dict[str, Any]:
        """The msgpack-ready map (also the canonical form stored in the log)."""
        out: dict[str, Any] = {
            "event_id": self.id_text,
            "type": self.type,
            "schema_version": self.schema_version,
            "doc_id": str(self.doc_id) if self.doc_id is not None else None,
            "kind": self.kind,
            "device_id": self.device_id,
            "user": self.user,
            "device_seq": self.device_seq,
            "device_time": self.device_time.isoformat(),
            "seen_position": self.seen_position,
            "data": self.data,
        }
        if self.position is not None:
            out["position"] = self.position
        if self.committed_at is not None:
            out["committed_at"] = self.committed_at.isoformat()
        return out


def _error_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ][:20]


def parse_event(raw: Any, *, stored: bool = False) -> Event:
    """Validate an event map (from the wire or the log) and normalise its payload.

    Older schema versions are upcast to the current one; the returned event
    carries the current ``schema_version`` and a payload in canonical form.
    ``stored=True`` accepts the engine-set fields (reading our own log).
    """
    if not isinstance(raw, dict):
        raise SynvoiceError("bad_request", "an event must be a map")
    if not stored and ("position" in raw or "committed_at" in raw):
        raise SynvoiceError("forbidden", "position and committed_at are set by the engine")
    try:
        env = Event.model_validate(raw)
    except ValidationError as exc:
        raise SynvoiceError("schema", "invalid event envelope", _error_details(exc)) from exc
    spec = REGISTRY.get(env.type)
    if spec is None:
        raise SynvoiceError("unknown_type", f"unknown event type {env.type!r}")
    if env.schema_version > spec.schema_version:
        raise SynvoiceError(
            "schema",
            f"{env.type} schema_version {env.schema_version} is newer than this engine "
            f"({spec.schema_version})",
        )
    if spec.document and (env.doc_id is None or env.kind is None):
        raise SynvoiceError("schema", f"{env.type} needs doc_id and kind")
    data = env.data
    version = env.schema_version
    while version < spec.schema_version:
        up = spec.upcasters.get(version)
        if up is None:
            raise SynvoiceError("schema", f"no upcaster for {env.type} v{version}")
        data = up(data)
        version += 1
    try:
        payload = spec.model.model_validate(data)
    except ValidationError as exc:
        raise SynvoiceError("schema", f"invalid {env.type} data", _error_details(exc)) from exc
    if version != env.schema_version:
        env = env.model_copy(
            update={"data": payload.model_dump(mode="json"), "schema_version": version}
        )
    elif not stored:
        # Store the canonical form (defaults filled, decimals as strings) so every
        # reader of the log and the stream sees one shape. The dict is ours (made
        # by validation): refill it in place rather than copy the model.
        env.data.clear()
        env.data.update(payload.model_dump(mode="json"))
    env._payload = payload
    return env


def now() -> datetime:
    return datetime.now(UTC)


_new_object = object.__new__
_set = object.__setattr__


def construct_event(
    *,
    event_id: uuid.UUID,
    type: str,
    schema_version: int,
    doc_id: uuid.UUID | None,
    kind: str | None,
    device_id: str,
    user: str,
    device_seq: int,
    device_time: datetime,
    seen_position: int,
    data: dict[str, Any],
    payload: BaseModel | None = None,
) -> Event:
    """An ``Event`` from values already validated (by our code or a compiled
    decoder), without pydantic: ``model_construct`` costs ~25 µs, this ~1 µs.
    Sets exactly what ``model_construct`` sets (fields, fields-set, no extra,
    the private payload cache)."""
    ev: Event = _new_object(Event)
    _set(
        ev,
        "__dict__",
        {
            "event_id": event_id,
            "type": type,
            "schema_version": schema_version,
            "doc_id": doc_id,
            "kind": kind,
            "device_id": device_id,
            "user": user,
            "device_seq": device_seq,
            "device_time": device_time,
            "seen_position": seen_position,
            "data": data,
            "position": None,
            "committed_at": None,
        },
    )
    _set(ev, "__pydantic_fields_set__", set(_EVENT_FIELDS))
    _set(ev, "__pydantic_extra__", None)
    _set(ev, "__pydantic_private__", {"_payload": payload, "_id_text": None})
    return ev


_EVENT_FIELDS = tuple(Event.model_fields)


def new_event(
    event_type: str,
    payload: BaseModel,
    *,
    device_id: str,
    user: str,
    device_seq: int,
    doc_id: uuid.UUID | None = None,
    kind: str | None = None,
    seen_position: int = 0,
    event_id: uuid.UUID | None = None,
) -> Event:
    """Make a new event (devices and the engine both use this)."""
    spec = REGISTRY[event_type]
    if not isinstance(payload, spec.model):
        name = builtins.type(payload).__name__
        raise TypeError(f"{event_type} takes {spec.model.__name__}, not {name}")
    # The payload is already a validated model and the other fields come from
    # our own code: construct without re-validating (the engine makes one of
    # these per centralized number). Pushed events are validated by the engine.
    return construct_event(
        event_id=event_id or uuid.uuid4(),
        type=event_type,
        schema_version=spec.schema_version,
        doc_id=doc_id,
        kind=kind,
        device_id=device_id,
        user=user,
        device_seq=device_seq,
        device_time=now(),
        seen_position=seen_position,
        data=payload.model_dump(mode="json"),
        payload=payload,
    )


# Event types defined by other features register themselves on import; importing
# them here makes every process that validates events know every type.
import engine.billing_events  # noqa: E402, F401
