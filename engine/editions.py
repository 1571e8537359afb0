"""Editions and their limits. Pure: no I/O.

An unregistered server runs the trial edition; a registration key (see
``engine.license``) unlocks another one. Limits only ever refuse *new* things
(enrolling a device or a user, pushing more data): what is stored stays stored
and can always be read, pulled and exported.

Counting: a device counts while it is not revoked; a user counts while at
least one of their devices is active (revoking all of a user's devices frees
the seat; the user keeps their numbering slot). Data is the size of the stored
event bodies (``EngineState.data_bytes``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from engine.errors import SynvoiceError

KB = 1024
MB = 1024 * KB
GB = 1024 * MB


@dataclass(frozen=True)
class Limits:
    """``None`` means unlimited."""

    users: int | None
    devices: int | None
    data_bytes: int | None

    def to_dict(self) -> dict[str, int | None]:
        return {"users": self.users, "devices": self.devices, "data_bytes": self.data_bytes}


@dataclass(frozen=True)
class Edition:
    name: str
    title: str
    limits: Limits
    vendor_only: bool = False  # not sold: issued for sites, tests and benchmarks


EDITIONS: dict[str, Edition] = {
    e.name: e
    for e in (
        Edition("trial", "Trial", Limits(users=3, devices=5, data_bytes=200 * MB)),
        Edition("single", "Single User", Limits(users=1, devices=5, data_bytes=2 * GB)),
        Edition("five", "5 Users", Limits(users=5, devices=50, data_bytes=10 * GB)),
        Edition("site", "Site", Limits(users=None, devices=None, data_bytes=None), True),
    )
}
TRIAL = EDITIONS["trial"]
# Names people type for the same edition.
ALIASES = {"single-user": "single", "5-users": "five", "5users": "five", "unlimited": "site"}


def edition(name: str) -> Edition:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in EDITIONS:
        raise SynvoiceError(
            "bad_request", f"unknown edition {name!r} (editions: {', '.join(EDITIONS)})"
        )
    return EDITIONS[key]


@dataclass(frozen=True)
class Active:
    """The edition in force, where it comes from, and its limits."""

    edition: Edition
    limits: Limits
    source: str  # "trial" | "registered" | "config"
    licensee: str | None = None
    expires: date | None = None
    key_id: str | None = None
    note: str | None = None  # e.g. why a registration is not in force

    def status(self) -> dict[str, Any]:
        return {
            "edition": self.edition.name,
            "edition_title": self.edition.title,
            "edition_source": self.source,
            "edition_licensee": self.licensee,
            "edition_expires": self.expires.isoformat() if self.expires else None,
            "edition_note": self.note,
            "limits": self.limits.to_dict(),
        }


def resolve(registration: dict[str, Any] | None, source: str, today: date) -> Active:
    """The active edition from a registration record (a ``settings.registered``
    payload, or the same fields from a configured key); trial when there is none
    or it expired."""
    if registration is None:
        return Active(TRIAL, TRIAL.limits, "trial")
    ed = edition(str(registration["edition"]))
    expires = _date(registration.get("expires"))
    if expires is not None and today > expires:
        return Active(
            TRIAL,
            TRIAL.limits,
            "trial",
            note=f"the {ed.title} registration for {registration.get('licensee')} "
            f"expired on {expires.isoformat()}",
        )
    limits = replace(
        ed.limits,
        **{
            k: registration[f"max_{k}"]
            for k in ("users", "devices", "data_bytes")
            if registration.get(f"max_{k}") is not None
        },
    )
    return Active(
        ed,
        limits,
        source,
        licensee=str(registration.get("licensee") or "") or None,
        expires=expires,
        key_id=registration.get("key_id"),
    )


def _date(v: Any) -> date | None:
    if v is None or isinstance(v, date):
        return v
    return date.fromisoformat(str(v))


# --- checks (raise SynvoiceError("limit", ...)) ---------------------------------------


@dataclass(frozen=True)
class Usage:
    users: int
    devices: int
    data_bytes: int

    def to_dict(self) -> dict[str, int]:
        return {"users": self.users, "devices": self.devices, "data_bytes": self.data_bytes}


def check_enroll(active: Active, device_users: list[str], user: str) -> None:
    """Refuse an enrollment past the edition's users or devices.

    ``device_users`` holds the user of every active (not revoked) device.
    """
    lim = active.limits
    users = set(device_users)
    if lim.users is not None and user not in users and len(users) >= lim.users:
        raise SynvoiceError(
            "limit",
            f"the {active.edition.title} edition allows {_n(lim.users, 'user')} with active "
            f"devices and {len(users)} {'is' if len(users) == 1 else 'are'} in use: cannot "
            f"enroll a device for new user {user!r}. Revoke the devices of a user who left, "
            "or register a larger edition (synvoice register KEY).",
        )
    if lim.devices is not None and len(device_users) >= lim.devices:
        raise SynvoiceError(
            "limit",
            f"the {active.edition.title} edition allows {_n(lim.devices, 'active device')} "
            f"and {len(device_users)} are enrolled: revoke a device you no longer use, "
            "or register a larger edition (synvoice register KEY).",
        )


def check_data(active: Active, stored: int, incoming: int) -> None:
    """Refuse new data past the edition's data limit (``incoming`` new bytes)."""
    cap = active.limits.data_bytes
    if cap is None or incoming <= 0 or stored + incoming <= cap:
        return
    raise SynvoiceError(
        "limit",
        f"the {active.edition.title} edition stores up to {human_bytes(cap)} and this server "
        f"holds {human_bytes(stored)}: {human_bytes(incoming)} more do not fit. Nothing was "
        "appended; everything stored is kept and can still be read and exported. Register a "
        "larger edition (synvoice register KEY) to add more.",
        {"limit_bytes": cap, "stored_bytes": stored, "incoming_bytes": incoming},
    )


def _n(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def human_bytes(n: int | None) -> str:
    if n is None:
        return "unlimited"
    for unit, size in (("GB", GB), ("MB", MB), ("KB", KB)):
        if n >= size:
            v = n / size
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.2f} {unit}"
    return f"{n} bytes"


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*$", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """'2GB', '500 MB', '4096' -> bytes (binary units, like the editions)."""
    m = _SIZE.match(text)
    if not m:
        raise SynvoiceError("bad_request", f"not a size: {text!r} (e.g. 500MB, 2GB, 4096)")
    unit = m.group(2).upper().rstrip("B")
    return int(float(m.group(1)) * {"": 1, "K": KB, "M": MB, "G": GB}[unit])


def describe(limits: Limits) -> str:
    def one(n: int | None, what: str) -> str:
        return f"unlimited {what}s" if n is None else _n(n, what)

    return ", ".join(
        (one(limits.users, "user"), one(limits.devices, "device"), human_bytes(limits.data_bytes))
    )
