"""The seller profile on a device: read the one in force, set a new one.

The profile is a device-origin settings event (``settings.seller_set``, see
``engine.schema.settings.SellerSet``): every document a device prints or
exports shows the last one in the log. Why device-origin: it is business data
edited from the same tools that make the documents (like billing scenarios),
each change is signed by the device and user that made it, and it needs no
admin endpoint in the engine. Setting it needs the engine (the push is direct,
not through the offline outbox), so two devices never print different profiles
for long: each gets it with its next sync.
"""

from __future__ import annotations

from typing import Any

from devices.parties import party_problems
from engine import codec
from engine.client import EngineClient
from engine.errors import SynvoiceError
from engine.events import new_event, parse_event
from engine.schema.settings import SellerSet

SELLER_SET = "settings.seller_set"
FIELDS: tuple[str, ...] = tuple(SellerSet.model_fields)


async def read_seller(store: Any) -> SellerSet | None:
    """The profile in force in a device store (``devices.store.DeviceStore``):
    the last ``settings.seller_set`` it pulled, or None."""
    async with store.conn.execute(
        "SELECT body FROM events WHERE type = ? ORDER BY position DESC LIMIT 1", (SELLER_SET,)
    ) as cur:
        row = await cur.fetchone()
    if row is None:
        return None
    ev = parse_event(codec.unpack(row[0]), stored=True)
    return ev.payload(SellerSet)


def merged(current: SellerSet | None, changes: dict[str, Any]) -> SellerSet:
    """``current`` with ``changes`` applied ("" clears a field); refuses bad values."""
    data: dict[str, Any] = current.model_dump() if current else {}
    for k, v in changes.items():
        if k not in FIELDS:
            raise SynvoiceError("bad_request", f"unknown seller field {k!r}")
        data[k] = None if v == "" else v
    if not data.get("legal_name"):
        raise SynvoiceError("bad_request", "the seller needs a legal name (--legal-name)")
    try:
        profile = SellerSet(**data)
    except ValueError as exc:
        errs = exc.errors() if hasattr(exc, "errors") else []
        if errs:
            where = ".".join(str(x) for x in errs[0].get("loc", ()))
            raise SynvoiceError("bad_request", f"seller {where}: {errs[0]['msg']}") from None
        raise SynvoiceError("bad_request", f"seller: {exc}") from None
    problems = party_problems(
        "seller",
        country=profile.country,
        email=profile.email,
        vat_id=profile.vat_id,
        iban=profile.iban,
        bic=profile.bic,
    )
    if problems:
        raise SynvoiceError("bad_request", problems[0])
    return profile


async def push_seller(agent: Any, profile: SellerSet, timeout: float = 10.0) -> None:
    """Record ``profile`` in the log, signed as ``agent``'s device, then pull it back."""
    enr = agent.enrollment
    try:
        client = await EngineClient.connect_enrolled(
            enr, timeout=timeout, max_reconnect_attempts=1, connect_timeout=timeout
        )
    except Exception as exc:
        raise SynvoiceError(
            "unavailable", f"setting the seller needs the engine ({enr.url}): {exc}"
        ) from None
    try:
        ev = new_event(
            SELLER_SET,
            profile,
            device_id=enr.device_id,
            user=enr.user,
            device_seq=0,  # not part of the device's document sequence
            seen_position=agent.last_position,
        )
        await client.push([ev])
    finally:
        try:
            await client.close()
        except Exception:
            pass
    if await agent.connect(timeout=timeout):
        await agent.sync()
