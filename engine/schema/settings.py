"""Settings and numbering payloads (the engine authors them) and their registration."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import Field

from engine.schema.common import NAME, Bool, Int, Kind, Model, UserMode
from engine.schema.registry import EventSpec, register


class UserModeSet(Model):
    mode: UserMode
    previous: UserMode | None = None
    forced: Bool = False


class UserEnrolled(Model):
    user: str = Field(pattern=NAME)
    slot: Int = Field(ge=1)  # 1-based; distributed mode numbers from it


class TeamSizeSet(Model):
    """The operator's team size (the seed's "Increment Number"): distributed epochs
    step by it, so users set up in any order number k, k+N, k+2N…"""

    size: Int = Field(ge=1, le=10_000)
    previous: Int | None = None


class NumberPatternSet(Model):
    """How one kind's numbers are shown from ``since`` on (see ``engine.patterns``);
    numbers issued before keep the pattern they were issued under."""

    kind: Kind
    pattern: str = Field(min_length=1, max_length=64)
    reset: Literal["never", "yearly", "monthly"] = "never"
    tz: str = Field(default="UTC", min_length=1, max_length=64)
    since: datetime
    previous: str | None = None


class DeviceEnrolled(Model):
    device_id: str = Field(pattern=NAME)
    user: str = Field(pattern=NAME)
    name: str | None = Field(default=None, max_length=100)


class DeviceRevoked(Model):
    device_id: str = Field(pattern=NAME)
    reason: str | None = Field(default=None, max_length=500)


class Registered(Model):
    """A registration key was accepted (the key itself is not stored: its
    fingerprint identifies it). ``max_*`` override the edition's limits."""

    edition: str = Field(pattern=r"^[a-z0-9_-]{1,32}$")
    licensee: str = Field(min_length=1, max_length=200)
    issued: date
    expires: date | None = None
    key_id: str = Field(pattern=r"^[0-9a-f]{1,64}$")
    fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$")
    max_users: Int | None = Field(default=None, ge=0)
    max_devices: Int | None = Field(default=None, ge=0)
    max_data_bytes: Int | None = Field(default=None, ge=0)
    previous: str | None = None  # the edition in force before


_INTEGRATION = r"^[a-z0-9][a-z0-9_-]{0,31}$"


class IntegrationAdded(Model):
    """Read-only broker credentials for an integration (the password is derived
    from the server's admin secret and ``credential_id``; it is not stored)."""

    name: str = Field(pattern=_INTEGRATION)
    credential_id: str = Field(pattern=r"^[0-9a-f]{16,64}$")


class IntegrationRemoved(Model):
    name: str = Field(pattern=_INTEGRATION)


class LogRolledBack(Model):
    """The engine continued from a log older than what it had published (a restored
    backup, a cut tail), by ``synvoice serve --accept-log-rollback``. This event is
    stored at ``skipped_to + 1``: positions ``after + 1 .. skipped_to`` were
    published before and are never reused (the hash chain links over the gap)."""

    after: Int = Field(ge=0)  # the log's head when it was accepted
    skipped_to: Int = Field(ge=0)  # the highest position published before
    reason: str


class SellerSet(Model):
    """The business's own details, printed on every document and exported in
    e-invoices. Each event carries the whole profile and replaces the one before
    (the last in log order is in force). Device-origin: any enrolled device of
    the business may set it (``synvoice seller set``), and the event records who
    did; documents keep their own overrides (payment terms, notes)."""

    legal_name: str = Field(min_length=1, max_length=200)
    address: str | None = Field(default=None, max_length=1000)  # street, postcode and city lines
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")  # ISO 3166-1 alpha-2
    vat_id: str | None = Field(default=None, pattern=r"^[A-Z]{2}[A-Za-z0-9+*.]{2,13}$")
    tax_id: str | None = Field(default=None, max_length=64)  # national tax number
    registration: str | None = Field(default=None, max_length=200)  # e.g. "HRB 12345, Berlin"
    email: str | None = Field(default=None, max_length=254)
    phone: str | None = Field(default=None, max_length=50)
    iban: str | None = Field(default=None, pattern=r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$")
    bic: str | None = Field(default=None, pattern=r"^[A-Z0-9]{8}([A-Z0-9]{3})?$")
    payment_terms: str | None = Field(default=None, max_length=500)
    # A small PNG or JPEG, base64: every device prints the same logo.
    logo: str | None = Field(default=None, max_length=96_000, pattern=r"^[A-Za-z0-9+/=]+$")


class EpochOpened(Model):
    """Distributed numbering: in ``[start, end]`` user with slot k numbers
    ``start + (k-1) + j*increment`` (see ``engine.numbering``)."""

    kind: Kind
    epoch: Int = Field(ge=1)
    start: Int = Field(ge=1)
    increment: Int = Field(ge=1)
    slots: dict[str, Int]
    end: Int = Field(ge=1)


class EpochExtended(Model):
    kind: Kind
    epoch: Int = Field(ge=1)
    end: Int = Field(ge=1)


for _spec in (
    EventSpec("settings.user_mode_set", UserModeSet, origin="engine", document=False),
    EventSpec("settings.user_enrolled", UserEnrolled, origin="engine", document=False),
    EventSpec("settings.team_size_set", TeamSizeSet, origin="engine", document=False),
    EventSpec("settings.number_pattern_set", NumberPatternSet, origin="engine", document=False),
    EventSpec("settings.device_enrolled", DeviceEnrolled, origin="engine", document=False),
    EventSpec("settings.device_revoked", DeviceRevoked, origin="engine", document=False),
    EventSpec("settings.registered", Registered, origin="engine", document=False),
    EventSpec("settings.integration_added", IntegrationAdded, origin="engine", document=False),
    EventSpec("settings.integration_removed", IntegrationRemoved, origin="engine", document=False),
    EventSpec("settings.log_rolled_back", LogRolledBack, origin="engine", document=False),
    EventSpec("settings.seller_set", SellerSet, document=False),
    EventSpec("numbering.epoch_opened", EpochOpened, origin="engine", document=False),
    EventSpec("numbering.epoch_extended", EpochExtended, origin="engine", document=False),
):
    register(_spec)
