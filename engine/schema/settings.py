"""Settings and numbering payloads (the engine authors them) and their registration."""

from __future__ import annotations

from datetime import date

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
    EventSpec("settings.device_enrolled", DeviceEnrolled, origin="engine", document=False),
    EventSpec("settings.device_revoked", DeviceRevoked, origin="engine", document=False),
    EventSpec("settings.registered", Registered, origin="engine", document=False),
    EventSpec("settings.integration_added", IntegrationAdded, origin="engine", document=False),
    EventSpec("settings.integration_removed", IntegrationRemoved, origin="engine", document=False),
    EventSpec("numbering.epoch_opened", EpochOpened, origin="engine", document=False),
    EventSpec("numbering.epoch_extended", EpochExtended, origin="engine", document=False),
):
    register(_spec)
