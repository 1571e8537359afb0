"""Requests as their message types, checked by hand.

The checks, error codes and messages are the protocol's (devices and tests
rely on them), so they are written out here rather than left to a schema
validator's wording.
"""

from __future__ import annotations

import uuid
from typing import Any

from engine.errors import SynvoiceError
from engine.messages import (
    EnrollRequest,
    IntegrationRequest,
    ModeRequest,
    NumberingRequest,
    NumberItem,
    NumbersRequest,
    PullRequest,
    PushRequest,
    RegisterRequest,
    RevokeRequest,
    StatusRequest,
)
from engine.schema.common import KINDS


def decode_push(req: dict[str, Any]) -> PushRequest:
    raw_events = req.get("events")
    if not isinstance(raw_events, list):
        raise SynvoiceError("bad_request", "'events' must be a list")
    # Each event is validated by the push itself (its index goes in the error).
    return PushRequest(events=raw_events)


def decode_pull(req: dict[str, Any]) -> PullRequest:
    after = _int(req, "after", 0, minimum=0)
    limit = _int(req, "limit", 0, minimum=1) if "limit" in req else None
    return PullRequest(after=after, limit=limit, hashes=_bool(req, "hashes"))


def decode_numbers(req: dict[str, Any]) -> NumbersRequest:
    items_raw = req.get("items")
    if not isinstance(items_raw, list) or not items_raw:
        raise SynvoiceError("bad_request", "'items' must be a non-empty list")
    if len(items_raw) > 1000:
        raise SynvoiceError("too_large", "at most 1000 numbers per request")
    items: list[NumberItem] = []
    for i, it in enumerate(items_raw):
        if not isinstance(it, dict):
            raise SynvoiceError("bad_request", f"item {i} must be a map")
        kind = it.get("kind")
        if kind not in KINDS:
            raise SynvoiceError("schema", f"item {i}: kind must be one of {', '.join(KINDS)}")
        try:
            doc_id = uuid.UUID(str(it.get("doc_id")))
        except ValueError:
            raise SynvoiceError("schema", f"item {i}: doc_id must be a UUID") from None
        fresh = it.get("fresh", False)
        if not isinstance(fresh, bool):  # "false" is truthy: a renumbering nobody asked for
            raise SynvoiceError("bad_request", f"item {i}: 'fresh' must be true or false")
        items.append(NumberItem(str(kind), str(doc_id), fresh))
    return NumbersRequest(items=items)


def decode_enroll(req: dict[str, Any]) -> EnrollRequest:
    return EnrollRequest(user=_str(req, "user"), name=_opt_str(req, "name"))


def decode_revoke(req: dict[str, Any]) -> RevokeRequest:
    return RevokeRequest(device_id=_str(req, "device_id"), reason=_opt_str(req, "reason"))


def decode_mode(req: dict[str, Any]) -> ModeRequest:
    team = _int(req, "team", 0, minimum=1) if req.get("team") is not None else None
    return ModeRequest(mode=_str(req, "mode"), force=_bool(req, "force"), team=team)


def decode_numbering(req: dict[str, Any]) -> NumberingRequest:
    team = _int(req, "team", 0, minimum=1) if req.get("team") is not None else None
    kind = _opt_str(req, "kind")
    if kind is not None and kind not in KINDS:
        raise SynvoiceError("schema", f"kind must be one of {', '.join(KINDS)}")
    pattern = _opt_str(req, "pattern")
    if (kind is None) != (pattern is None):
        raise SynvoiceError("bad_request", "a pattern needs its kind, and a kind its pattern")
    return NumberingRequest(
        team=team,
        kind=kind,
        pattern=pattern,
        reset=_opt_str(req, "reset") or "never",
        tz=_opt_str(req, "tz") or "UTC",
    )


def decode_register(req: dict[str, Any]) -> RegisterRequest:
    return RegisterRequest(key=_str(req, "key"))


def decode_integration(req: dict[str, Any]) -> IntegrationRequest:
    return IntegrationRequest(action=_str(req, "action"), name=_opt_str(req, "name"))


def decode_status(req: dict[str, Any]) -> StatusRequest:
    return StatusRequest()


def _str(req: dict[str, Any], key: str) -> str:
    v = req.get(key)
    if not isinstance(v, str) or not v:
        raise SynvoiceError("bad_request", f"'{key}' must be a non-empty string")
    return v


def _opt_str(req: dict[str, Any], key: str) -> str | None:
    v = req.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise SynvoiceError("bad_request", f"'{key}' must be a string")
    return v


def _bool(req: dict[str, Any], key: str) -> bool:
    """A boolean field (absent: false). No truthiness: "false" or 1 is refused."""
    v = req.get(key, False)
    if not isinstance(v, bool):
        raise SynvoiceError("bad_request", f"'{key}' must be true or false")
    return v


def _int(req: dict[str, Any], key: str, default: int, minimum: int = 0) -> int:
    v = req.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum or v > 2**62:
        raise SynvoiceError("bad_request", f"'{key}' must be an integer >= {minimum}")
    return v
