"""Catch-up: the log pulled page by page into the device store, cheaply per event.

* Pages arrive as their stored msgpack bytes (``EngineClient.pull_page``) and the
  next page is asked for as soon as one arrives (``Prefetch``), so the engine, in
  another process, reads it while this one is folded and stored.
* Each event is decoded once, with msgspec, into the envelope fields the device
  uses (``WireEvent``: types checked in C). Events pulled from our own engine over
  the signed connection were validated when they were appended, so their payloads
  are not validated again with pydantic; an older schema version or an unknown
  type still goes through ``parse_event``. A page that does not decode, or an
  event the fold cannot read, is refused whole with its position: nothing of the
  page is stored and the sync fails with a clear error.
* The body stored is the bytes as pulled (no re-encoding).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypedDict

import msgspec

from devices.gcpause import gc_paused
from devices.numbering import OBSERVED_TYPES
from devices.store import EventRow
from engine.document import Conflict, DocumentView, fold_wire
from engine.errors import SynvoiceError
from engine.messages import PulledPage
from engine.schema.registry import REGISTRY
from engine.stored import upcast

log = logging.getLogger("synvoice.device")


class WireEvent(TypedDict):
    """The fields of a stored event the device reads (the others stay in the body)."""

    event_id: str
    type: str
    schema_version: int
    doc_id: str | None
    kind: str | None
    device_id: str
    user: str
    device_time: str
    seen_position: int
    data: dict[str, Any]
    position: int


class _Position(msgspec.Struct):
    position: int


_decode_event = msgspec.msgpack.Decoder(WireEvent).decode
_decode_position = msgspec.msgpack.Decoder(_Position).decode
_decode_any = msgspec.msgpack.Decoder().decode
# Events of the current schema version of their type fold as stored; others are
# upcast first (or stored unread: a type this device does not know).
_CURRENT = {t: spec.schema_version for t, spec in REGISTRY.items()}
_DOCUMENT_TYPES = frozenset(t for t in REGISTRY if t.startswith("document."))


def _malformed(where: str, exc: Exception) -> SynvoiceError:
    return SynvoiceError("internal", f"malformed pull reply: {where}: {exc}")


def last_position(page: PulledPage, after: int) -> int:
    """The position of the page's last event (``after`` for an empty page)."""
    if not page.events:
        return after
    try:
        return _decode_position(page.events[-1]).position
    except msgspec.DecodeError as exc:
        raise _malformed("last event", exc) from None


class Prefetch:
    """Pages of the log after a position, the next one always asked for ahead.

    ``fetch(after)`` asks for one page. Call ``aclose`` when done (also on error):
    it cancels the request still in flight."""

    def __init__(self, fetch: Callable[[int], Awaitable[PulledPage]], after: int) -> None:
        self._fetch = fetch
        self._ahead: asyncio.Future[PulledPage] | None = asyncio.ensure_future(fetch(after))
        self._after = after

    async def next(self) -> PulledPage | None:
        """The next page; None after the last one."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        page = await ahead
        if page.more and page.events:
            self._after = last_position(page, self._after)
            self._ahead = asyncio.ensure_future(self._fetch(self._after))
        return page

    async def aclose(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and not ahead.done():
            ahead.cancel()
            await asyncio.gather(ahead, return_exceptions=True)
        elif ahead is not None and not ahead.cancelled():
            ahead.exception()  # retrieved: nobody wants that page any more


@dataclass
class FoldedPage:
    """One page folded in memory on top of the synced views, not stored yet."""

    rows: list[EventRow] = field(default_factory=list)
    views: dict[str, DocumentView] = field(default_factory=dict)  # new or changed copies
    conflicts: list[Conflict] = field(default_factory=list)
    # (type, kind, data, device time) of the events the numbering folds
    numbering: list[tuple[str, str | None, dict[str, Any], str]] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)  # our outbox events that came back
    cleared: list[str] = field(default_factory=list)  # pending server numbers now pulled
    last: int = 0  # last position folded


def _upcast(raw: msgspec.Raw, pos: int) -> dict[str, Any] | None:
    """An event of an older schema (or a type this device does not know) through the
    full validation; None if this device cannot read it (stored, not folded)."""
    try:
        return upcast(_decode_any(raw))
    except SynvoiceError as exc:
        log.warning("pulled event at %d not understood: %s", pos, exc)
        return None


def fold_page(
    events: Sequence[msgspec.Raw],
    after: int,
    synced: Mapping[str, DocumentView],
    *,
    unstored: Mapping[str, DocumentView] | None = None,
    device_id: str,
    outbox_ids: Container[str],
    pending_numbers: Container[str],
) -> FoldedPage:
    """Decode and fold a page of events (positions after ``after`` only: pages may
    overlap) on top of ``unstored`` (views folded from earlier pages, not stored
    yet), else ``synced``. Pure: neither is changed; changed views are copies."""
    out = FoldedPage(last=after)
    rows, staged, conflicts = out.rows, out.views, out.conflicts
    numbering, acked, cleared = out.numbering, out.acked, out.cleared
    last = after
    i = 0
    # Locals: this loop runs once per pulled event.
    decode, current, add_row = _decode_event, _CURRENT.get, rows.append
    with gc_paused():
        try:
            for i, raw in enumerate(events):  # noqa: B007 - i names the bad event
                ev: Mapping[str, Any] = decode(raw)
                pos: int = ev["position"]
                if pos <= last:
                    continue  # already stored (an overlapping page)
                last = pos
                t: str = ev["type"]
                if current(t) != ev["schema_version"]:
                    up = _upcast(raw, pos)
                    if up is None:
                        add_row((pos, ev["event_id"], t, None, bytes(raw)))
                        continue
                    ev, t = up, up["type"]
                eid: str = ev["event_id"]
                doc: str | None = ev["doc_id"]
                kind: str | None = ev["kind"]
                add_row((pos, eid, t, doc, bytes(raw)))
                if t in OBSERVED_TYPES:
                    numbering.append((t, kind, ev["data"], ev["device_time"]))
                if t in _DOCUMENT_TYPES and doc is not None and kind is not None:
                    v = staged.get(doc)
                    if v is None:
                        base = unstored.get(doc) if unstored else None
                        if base is None:
                            base = synced.get(doc)
                        v = (
                            replace(base, writes=dict(base.writes), lines=list(base.lines))
                            if base is not None
                            else DocumentView(doc_id=doc, kind=kind)
                        )
                        staged[doc] = v
                    fold_wire(v, ev, conflicts)
                    if t == "document.number_assigned" and doc in pending_numbers:
                        cleared.append(doc)
                if ev["device_id"] == device_id and eid in outbox_ids:
                    acked.append(eid)
        except (msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _malformed(f"event {i} of the page after position {after}", exc) from None
    out.last = last
    return out
