"""The bodies of the wire protocol (v1) as typed messages.

One Struct per request and reply body (``engine.protocol`` names the
subjects). They are msgpack maps on the wire, keyed by the field names, so the
names and shapes here ARE the protocol: devices in the field depend on them.
Renaming a field is a protocol change.

Keys that are sometimes absent on the wire are fields with a default in a
Struct with ``omit_defaults=True``; keys that are always present, even when
null, have no default. Unknown keys in a reply are ignored (an older client
reads a newer engine's reply).

The engine validates requests by hand, with its own error codes and
messages (``engine.routes``), and hands the result to the handlers as these
types; the core builds its replies from them and ``EngineClient`` returns them.
Pure declarations: no I/O.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

# --- requests -------------------------------------------------------------------------


class PushRequest(Struct):
    """``events.push``: device events in their wire form (``Event.to_wire()``)."""

    events: list[dict[str, Any]]


class PullRequest(Struct):
    """``events.pull``: a page of the log after ``after``."""

    after: int = 0
    limit: int | None = None  # None: the engine's page limit
    hashes: bool = False


class NumberItem(Struct):
    kind: str
    doc_id: str  # a UUID
    fresh: bool = False  # a new number for a document that has one (renumbering)


class NumbersRequest(Struct):
    """``numbers.next`` (centralized mode)."""

    items: list[NumberItem]


class StatusRequest(Struct):
    """``status``: an empty map."""


class EnrollRequest(Struct):
    """``admin.enroll``."""

    user: str
    name: str | None = None


class RevokeRequest(Struct):
    """``admin.revoke``."""

    device_id: str
    reason: str | None = None


class ModeRequest(Struct):
    """``admin.mode``."""

    mode: str  # single | centralized | distributed
    force: bool = False
    team: int | None = None  # also state the team size (``admin.numbering``)


class NumberingRequest(Struct):
    """``admin.numbering``: the team size and/or one kind's number pattern."""

    team: int | None = None
    kind: str | None = None
    pattern: str | None = None
    reset: str = "never"  # never | yearly | monthly
    tz: str = "UTC"  # the business's time zone (IANA name)


class RegisterRequest(Struct):
    """``admin.register``: an edition key."""

    key: str


class IntegrationRequest(Struct):
    """``admin.integration``."""

    action: str  # add | remove | list
    name: str | None = None


# --- replies ----------------------------------------------------------------------------


class PushResult(Struct):
    event_id: str
    position: int
    duplicate: bool


class PushReply(Struct):
    """``events.push``: one result per pushed event, in request order."""

    results: list[PushResult]
    head: int


class PullReply(Struct, omit_defaults=True):
    """``events.pull``: stored events (maps, as stored: ``engine.events``)."""

    head: int
    more: bool
    events: list[dict[str, Any]]
    hashes: list[bytes] | None = None  # when the request asked for them
    # The engine's latest signed checkpoint (engine.checkpoints), once it has one.
    checkpoint: dict[str, Any] | None = None


class PulledPage(Struct, omit_defaults=True):
    """The same reply with each event left as its stored msgpack bytes (``Raw``
    views into the reply, no copy): a catch-up stores them as they are and
    decodes only the fields it needs."""

    head: int
    more: bool
    events: list[msgspec.Raw]
    hashes: list[bytes] | None = None
    checkpoint: dict[str, Any] | None = None  # the engine's latest (engine.checkpoints)


class NumbersReply(Struct):
    """``numbers.next``: numbers in item order."""

    numbers: list[int]


class Limits(Struct):
    """An edition's limits (None: unlimited)."""

    users: int | None
    devices: int | None
    data_bytes: int | None


class Usage(Struct):
    users: int
    devices: int
    data_bytes: int


class EditionStatus(Struct, kw_only=True):
    """The edition in force: part of the status and register replies."""

    edition: str
    edition_title: str
    edition_source: str  # trial | registered | config
    edition_licensee: str | None
    edition_expires: str | None  # ISO date
    edition_note: str | None
    limits: Limits


class DeviceStatus(Struct):
    user: str
    name: str | None
    revoked: bool


class EpochStatus(Struct):
    epoch: int
    start: int
    increment: int
    slots: dict[str, int]  # user -> slot
    end: int


class BrokerStatus(Struct):
    auth: bool
    tls: bool


class EmbeddedBrokerStatus(Struct):
    """The embedded nats-server the engine supervises (the ``embedded_broker`` part)."""

    pid: int | None
    restarts: int


class LatencyStatus(Struct, rename={"total": "sum"}):
    """Request handling times of one subject: counts per ``MetricsStatus.buckets``
    bound (one more for above the last) and their sum in seconds."""

    counts: list[int]
    total: float


class MetricsStatus(Struct):
    """The engine's request counters (the ``metrics`` part; ``engine.metrics``)."""

    buckets: list[float]
    latency: dict[str, LatencyStatus]
    refusals: dict[str, int]  # error code -> requests refused with it


class AnchorStatus(Struct):
    """The engine's checkpoint signer (the ``anchor`` part): its public key and the
    latest signed checkpoint (``engine.checkpoints``)."""

    engine_key: str
    checkpoint: dict[str, Any] | None


class ViewsStatus(Struct):
    """The live views worker (the ``views`` plugin part of the status reply)."""

    position: int
    behind: int
    worker_pid: int | None
    restarts: int
    error: str | None


class PatternStatus(Struct):
    """One kind's number pattern in force (``engine.patterns``)."""

    pattern: str
    reset: str
    tz: str
    since: str


class NumberingReply(Struct, omit_defaults=True):
    """``admin.numbering``: the numbering settings now in force."""

    changed: bool
    team: int  # 0: not stated (the increment is the number of users)
    patterns: dict[str, PatternStatus]


class StatusReply(EditionStatus, kw_only=True, omit_defaults=True):
    """``status``."""

    version: str
    head: int
    published: int
    mode: str
    mode_set: bool
    users: dict[str, int]  # user -> slot
    devices: dict[str, DeviceStatus]
    documents: int
    events: int
    data_bytes: int
    counters: dict[str, int]  # kind -> last number handed out
    epochs: dict[str, list[EpochStatus]]
    team: int = 0  # the stated team size, 0: not stated
    patterns: dict[str, PatternStatus] = msgspec.field(default_factory=dict)
    uptime: float
    usage: Usage
    integrations: list[str]
    broker: BrokerStatus
    # Plugins' parts (``EngineCore.status_parts``), absent when not running.
    views: ViewsStatus | None = None
    embedded_broker: EmbeddedBrokerStatus | None = None
    anchor: AnchorStatus | None = None
    metrics: MetricsStatus | None = None


class CredentialsReply(Struct, kw_only=True, omit_defaults=True):
    """A reply to a change of devices or integrations: the broker's users follow."""

    # Set when the change is committed but the broker did not reload its users.
    broker_warning: str | None = None


class EnrollReply(CredentialsReply, kw_only=True, omit_defaults=True):
    """``admin.enroll``: the new device's credential (the secret, hex)."""

    device_id: str
    secret: str
    user: str
    slot: int
    broker_auth: bool
    tls_ca: str | None  # PEM


class RevokeReply(CredentialsReply, kw_only=True, omit_defaults=True):
    """``admin.revoke``."""

    device_id: str
    revoked: bool
    changed: bool


class ModeReply(Struct, omit_defaults=True):
    """``admin.mode``: ``previous`` only when the mode changed."""

    mode: str
    changed: bool
    previous: str | None = None


class RegisterReply(EditionStatus, kw_only=True):
    """``admin.register``: the edition now in force."""

    changed: bool
    usage: Usage


class IntegrationList(Struct):
    """``admin.integration`` list."""

    integrations: list[str]
    broker_auth: bool


class IntegrationCredentials(CredentialsReply, kw_only=True, omit_defaults=True):
    """``admin.integration`` add: read-only broker credentials for the stream."""

    name: str
    user: str
    password: str
    inbox_prefix: str | None
    stream: str
    subjects: str
    broker_auth: bool
    tls_ca: str | None  # PEM
    changed: bool


class IntegrationRemovedReply(CredentialsReply, kw_only=True, omit_defaults=True):
    """``admin.integration`` remove."""

    name: str
    removed: bool
    changed: bool


IntegrationReply = IntegrationList | IntegrationCredentials | IntegrationRemovedReply


class ErrorBody(Struct, omit_defaults=True):
    code: str  # engine.errors.ERROR_CODES
    message: str
    details: Any = None


class ErrorReply(Struct):
    """Every refusal: ``{"error": {"code", "message", "details"?}}``."""

    error: ErrorBody


class HeadNotice(Struct):
    """Published on ``synvoice.v1.head`` after each commit."""

    head: int


# Every request and reply type, for tools that describe the protocol.
REQUESTS: tuple[type[Struct], ...] = (
    PushRequest,
    PullRequest,
    NumbersRequest,
    StatusRequest,
    EnrollRequest,
    RevokeRequest,
    ModeRequest,
    NumberingRequest,
    RegisterRequest,
    IntegrationRequest,
)

_encoder = msgspec.msgpack.Encoder()


def encode(msg: Struct) -> bytes:
    """A message's msgpack map."""
    return _encoder.encode(msg)
