"""``events.push``: validate a device's events and append the new ones, exactly once.

The compiled fast path (``engine.fastparse``) decodes and validates the common
document events; anything it cannot vouch for, and every malformed request,
goes through the pydantic path (``parse_event``) and its errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import msgspec

from engine import codec, editions, fastparse
from engine.core.base import Caller
from engine.core.numbers import maybe_extend_epoch
from engine.core.requests import decode_push
from engine.core.writer import Batch, Resolver
from engine.errors import SynvoiceError
from engine.events import Event, parse_event
from engine.messages import PushReply, PushRequest, PushResult
from engine.schema.registry import REGISTRY

if TYPE_CHECKING:
    from engine.core.engine import EngineCore

# A pushed event grows by about this much when stored (position, commit time).
STORED_OVERHEAD = 64


async def push_body(core: EngineCore, caller: Caller, body: bytes) -> PushReply:
    """A push request as received (the fast path first)."""
    try:
        raws = fastparse.decode_push(body).events
    except (msgspec.ValidationError, msgspec.DecodeError):
        return await push(
            core, caller, decode_push(codec.unpack_request(body, core.config.max_request_bytes))
        )
    _check_push(core, caller, len(raws))
    validated: list[tuple[Event, int]] = []
    max_bytes = core.config.max_event_bytes
    for i, raw in enumerate(raws):
        ev = fastparse.parse_pushed(raw)
        size = len(raw)
        if (
            ev is None
            or size > max_bytes
            or ev.device_id != caller.device_id
            or ev.user != caller.user
        ):
            ev, size = _validate_pushed(core, caller, i, codec.unpack_untrusted(bytes(raw)))
        validated.append((ev, size))
    return await _push_validated(core, validated)


def _check_push(core: EngineCore, caller: Caller, count: int) -> None:
    if count > core.config.max_batch_events:
        raise SynvoiceError(
            "too_large",
            f"{count} events in one push, limit is {core.config.max_batch_events}",
        )
    if caller.admin:
        raise SynvoiceError("forbidden", "the admin credential cannot push events")


async def push(core: EngineCore, caller: Caller, req: PushRequest) -> PushReply:
    """A decoded push request (also the engine's own pushes, e.g. billing intake)."""
    raw_events = req.events
    _check_push(core, caller, len(raw_events))
    validated = [_validate_pushed(core, caller, i, raw) for i, raw in enumerate(raw_events)]
    return await _push_validated(core, validated)


async def _push_validated(core: EngineCore, validated: list[tuple[Event, int]]) -> PushReply:
    events = [ev for ev, _ in validated]
    if not events:
        return PushReply(results=[], head=core.log.head)
    counters = core.state.counters
    for i, ev in enumerate(events):
        t = ev.type
        if t == "document.created" or t == "document.number_assigned":
            d = ev.data  # canonical: validated ints and sources
            src = d.get("number_source") if t == "document.created" else d.get("source")
            n = d.get("number", 0)
            # Every server number was handed out by the counter, which never
            # goes back: a higher one is made up (it would push the counter up).
            if src == "server" and ev.kind and n > counters[ev.kind].last:
                raise SynvoiceError(
                    "schema",
                    f"event {i}: {ev.kind} number {n} with source 'server' was never "
                    "handed out by the server",
                )
    ids = [ev.event_id.bytes for ev in events]  # once: UUID.bytes is Python code

    def plan(batch: Batch) -> Resolver:
        existing = batch.stored_positions
        fresh: list[tuple[Event, bytes]] = []
        fresh_ids: set[bytes] = set()
        fresh_bytes = 0
        for (ev, size), eid in zip(validated, ids, strict=True):
            if eid not in existing and eid not in batch.index and eid not in fresh_ids:
                fresh_ids.add(eid)
                fresh.append((ev, eid))
                fresh_bytes += size + STORED_OVERHEAD
        if fresh:
            # Edition data limit: refuse new events only; retries of stored
            # ones are still acknowledged.
            stored = core.state.data_bytes + batch.pending_bytes
            editions.check_data(core.edition(), stored, fresh_bytes)
            batch.pending_bytes += fresh_bytes
        for ev, eid in fresh:
            batch.add(ev, eid)
            maybe_extend_epoch(core, batch, ev)
        refs: list[tuple[bool, int]] = []  # (new in this batch, index or position)
        for eid in ids:
            if eid in existing:
                refs.append((False, existing[eid]))
            else:
                refs.append((True, batch.index[eid]))

        def resolve(base: int) -> Any:
            results = []
            seen: set[int] = set()
            for ev, (new, ref) in zip(events, refs, strict=True):
                pos = base + ref + 1 if new else ref
                dup = not new or ref in seen
                if new:
                    seen.add(ref)
                results.append(PushResult(ev.id_text, pos, dup))
            return PushReply(results=results, head=core.log.head)

        return resolve

    return cast(PushReply, await core.writer.submit(plan, len(events), ids))


def _validate_pushed(core: EngineCore, caller: Caller, i: int, raw: Any) -> tuple[Event, int]:
    """The validated event and its size on the wire (to estimate storage)."""
    try:
        try:
            size = len(codec.pack(raw)) if isinstance(raw, dict) else 0
        except (TypeError, ValueError, OverflowError):  # e.g. a msgpack extension value
            raise SynvoiceError(
                "schema", "event holds a value of a type events cannot carry"
            ) from None
        if size > core.config.max_event_bytes:
            raise SynvoiceError("too_large", f"event is over {core.config.max_event_bytes} bytes")
        spec = REGISTRY.get(str(raw.get("type"))) if isinstance(raw, dict) else None
        if spec is not None and spec.origin != "device":
            raise SynvoiceError("forbidden", f"{spec.type} events are written by the engine only")
        ev = parse_event(raw)
        if ev.device_id != caller.device_id:
            raise SynvoiceError(
                "forbidden",
                f"event claims device {ev.device_id!r} but the request is from "
                f"{caller.device_id!r}",
            )
        if ev.user != caller.user:
            raise SynvoiceError(
                "forbidden",
                f"event claims user {ev.user!r} but device {caller.device_id!r} "
                f"belongs to {caller.user!r}",
            )
        return ev, size
    except SynvoiceError as exc:
        raise SynvoiceError(exc.code, f"event {i}: {exc.message}", exc.details) from None
