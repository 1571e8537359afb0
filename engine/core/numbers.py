"""Numbers: ``numbers.next`` in centralized mode, and the distributed mode's epochs.

Centralized: the engine hands out each number and records it with the
document's reservation. Distributed: devices number in the epochs the engine
opens (when a device pulls) and extends (when a pushed number nears an
epoch's end).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, cast

from engine.core.base import Caller, engine_event
from engine.core.writer import Batch, Plan, Resolver
from engine.errors import SynvoiceError
from engine.events import Event, construct_event, now
from engine.messages import NumbersReply, NumbersRequest
from engine.numbering import extension_needed, increment_for, open_epoch
from engine.schema.common import KINDS, MAX_NUMBER
from engine.schema.registry import REGISTRY
from engine.schema.settings import EpochExtended, EpochOpened

if TYPE_CHECKING:
    from engine.core.engine import EngineCore

_NUMBER_ASSIGNED_VERSION = REGISTRY["document.number_assigned"].schema_version


# --- centralized numbers --------------------------------------------------------------


def check_numbers(core: EngineCore, caller: Caller) -> None:
    """Refusals of a number request before its items are read."""
    if caller.admin:
        raise SynvoiceError("forbidden", "numbers are requested by devices")
    if core.state.mode != "centralized":
        raise SynvoiceError(
            "mode",
            f"the server is in {core.state.mode} mode: numbers are assigned on the device",
        )


async def numbers(core: EngineCore, caller: Caller, req: NumbersRequest) -> NumbersReply:
    check_numbers(core, caller)
    items = [(it.kind, uuid.UUID(it.doc_id), it.fresh) for it in req.items]

    def plan(batch: Batch) -> Resolver:
        # Refusals first: nothing may be added to the batch before them.
        if core.state.mode != "centralized":  # again: a mode change may be queued ahead
            raise SynvoiceError("mode", f"the server is in {core.state.mode} mode")
        kinds: dict[bytes, str] = {}
        for i, (kind, doc_id, _) in enumerate(items):
            if core.state.counters[kind].last >= MAX_NUMBER - len(items):
                raise SynvoiceError("conflict", f"the {kind} numbers are exhausted")
            key = doc_id.bytes
            held = batch.reservation(key)
            had = kinds.setdefault(key, held[0] if held else kind)
            if had != kind:  # one document, one series
                raise SynvoiceError(
                    "conflict", f"item {i}: document {doc_id} is numbered in the {had} series"
                )
        out: list[int] = []
        rows: list[tuple[bytes, str, int]] = []
        for kind, doc_id, fresh in items:
            key = doc_id.bytes
            held = batch.reservation(key)
            known = held[1] if held else None
            if known is not None and not fresh:
                out.append(known)
                continue
            at = now()  # the moment it is numbered: its period, if the series resets
            n = core.state.counter(kind, at).next()
            # Built without pydantic (one per number on the hot path); the
            # data is NumberAssigned's canonical form, checked by a test.
            batch.add(
                construct_event(
                    # Random: a derived id could be pushed by a device first and
                    # make this commit fail (a retry finds the reservation instead).
                    event_id=uuid.uuid4(),
                    type="document.number_assigned",
                    schema_version=_NUMBER_ASSIGNED_VERSION,
                    doc_id=doc_id,
                    kind=kind,
                    device_id=caller.device_id,
                    user=caller.user,
                    device_seq=0,
                    device_time=at,
                    seen_position=0,
                    data={"number": n, "source": "server", "previous": known},
                )
            )
            batch.reserved[key] = (kind, n)
            rows.append((key, kind, n))
            out.append(n)
        batch.side.append(
            (
                "INSERT INTO reservations(doc_id, kind, number) VALUES (?,?,?) "
                "ON CONFLICT(doc_id) DO UPDATE SET number = excluded.number",
                rows,
            )
        )
        return lambda _base: NumbersReply(out)

    # Renumbering (fresh) needs the reservation too: it is the event's "previous".
    reply = await core.writer.submit(plan, len(items), reserve=[d.bytes for _, d, _ in items])
    return cast(NumbersReply, reply)


# --- distributed epochs -----------------------------------------------------------------


def epochs_stale(core: EngineCore) -> bool:
    """Distributed mode: does an enrolled user lack a slot in the open epochs?

    Epochs are opened lazily, when a device pulls: devices only number in
    epochs they pulled, so until one pulls, no device can be using the
    open epoch's progression, and users enrolled one after the other (the
    seed's set-up) share the first epoch: 1,4,7 / 2,5,8 / 3,6,9.
    """
    st = core.state
    if st.mode != "distributed" or not st.users:
        return False
    # An open epoch capped by a switch away from distributed is closed: numbers
    # given meanwhile by other modes may lie in its range. A user without a slot
    # in it (beyond the team size) or a new team size needs a new epoch.
    n = increment_for(st.users, st.numbering.team)
    return any(
        not eps or eps[-1].slots != st.users or eps[-1].cap is not None or eps[-1].increment != n
        for eps in st.epochs.values()
    )


def plan_open_epochs(core: EngineCore) -> Plan:
    """A writer plan that opens new epochs if they are still stale when it runs."""

    def plan(batch: Batch) -> Resolver:
        if epochs_stale(core):  # again inside the writer: another pull may have opened them
            _open_epochs(core, batch)
        return lambda _base: {}

    return plan


def _open_epochs(core: EngineCore, batch: Batch) -> None:
    for kind in KINDS:
        eps = core.state.epochs[kind]
        ep = open_epoch(eps, core.state.users, core.config.runway, core.state.numbering.team)
        floor = core.state.counters[kind].highest
        if ep.start <= floor:  # a forced switch: start above every number in use
            shift = floor + 1 - ep.start
            ep.start += shift
            ep.end += shift
        batch.add(
            engine_event(
                "numbering.epoch_opened",
                EpochOpened(
                    kind=kind,
                    epoch=ep.epoch,
                    start=ep.start,
                    increment=ep.increment,
                    slots=ep.slots,
                    end=ep.end,
                ),
            )
        )


def maybe_extend_epoch(core: EngineCore, batch: Batch, ev: Event) -> None:
    """Extend the open epoch when a pushed number comes near its end."""
    st = core.state
    if st.mode != "distributed" or ev.kind is None:
        return
    if ev.type not in ("document.created", "document.number_assigned"):
        return
    number: int = ev.data.get("number", 0)  # canonical data: validated int
    eps = st.epochs[ev.kind]
    if not number or not eps:
        return
    end = extension_needed(eps[-1], number, core.config.runway)
    if end is not None:
        batch.add(
            engine_event(
                "numbering.epoch_extended",
                EpochExtended(kind=ev.kind, epoch=eps[-1].epoch, end=end),
            )
        )
