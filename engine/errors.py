"""Error codes shared by the engine, its clients and the CLI.

Every refusal on the wire is a structured reply ``{"error": {"code", "message"}}``
with one of the codes below; the CLI prints the message on one line and exits non-zero.
"""

from __future__ import annotations

from typing import Any

# code -> status-like number, used for the NATS micro error header and stats.
ERROR_CODES: dict[str, int] = {
    "bad_request": 400,  # bytes are not a msgpack map / missing fields
    "schema": 422,  # fields present but invalid for the event type
    "unknown_type": 422,  # event type not in the registry
    "too_large": 413,  # request or event over the configured size
    "unauthorized": 401,  # missing/invalid signature, unknown device, stale timestamp
    "revoked": 401,  # device was revoked
    "forbidden": 403,  # event claims another device/user, or type not allowed
    "mode": 409,  # operation not allowed in the current user mode
    "conflict": 409,  # e.g. user mode change after documents exist without --force
    "duplicate": 409,  # a typed number already used in its series (force to record it)
    "limit": 402,  # edition limit reached (devices, users, data size); a device's rate
    "replayed": 409,  # a copy of a signed request already received (engine.replay_guard)
    "bad_key": 422,  # registration key forged, altered, damaged or expired
    "not_found": 404,
    "unavailable": 503,  # engine not reachable / shutting down
    "tampered": 409,  # a log that disagrees with the signed checkpoints a device holds
    "internal": 500,
}


class SynvoiceError(Exception):
    """A refusal with a stable code, safe to send on the wire."""

    def __init__(self, code: str, message: str, details: Any = None) -> None:
        if code not in ERROR_CODES:
            code = "internal"
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    @property
    def status(self) -> int:
        return ERROR_CODES[self.code]

    def to_wire(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            err["details"] = self.details
        return {"error": err}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
