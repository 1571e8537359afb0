"""Document commands: check the input, take a number, record the event locally.

A command never pushes or pulls: it makes its event in the local state (on disk
before it returns) and the sync path sends it later, outside the command lock.
The one request a command may make is for a centralized number (``NumberServer``),
and only while online; offline, or without a server at all (unit tests), a new
document gets number 0, as the README says.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import date
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from devices.parties import party_problems
from devices.state import LocalState
from engine import codec, protocol
from engine.document import DocumentView
from engine.errors import SynvoiceError
from engine.events import Event, now
from engine.schema.common import KINDS, Customer, Line, NumberSource
from engine.schema.documents import (
    Converted,
    CustomerChanged,
    DatesChanged,
    DocumentCreated,
    Issued,
    LinesChanged,
    NumberAssigned,
    Voided,
)

# No server number now (down, the device's clock off, an edition limit): number 0,
# assigned later, as offline. A revoked device is told at once: what it makes would
# never be accepted.
NUMBER_LATER_CODES = {"unavailable", "internal", "unauthorized", "limit"}
ASSIGN_CHUNK = 1000  # documents per numbers request


class NumberServer(Protocol):
    """What commands need from the engine: centralized numbers, nothing else."""

    @property
    def online(self) -> bool: ...

    async def next_numbers(self, items: Sequence[tuple[str, uuid.UUID]]) -> list[int]: ...


class Offline:
    """No engine at all: every centralized number is 0 until assigned."""

    online = False

    async def next_numbers(self, items: Sequence[tuple[str, uuid.UUID]]) -> list[int]:
        raise SynvoiceError("unavailable", "offline: not connected to the broker")


class _ModeChanged(Exception):
    """The engine numbers in another mode than this device knows: learn it first."""


class Commands:
    """The document commands of one device, one at a time (numbering reads what
    the previous command wrote)."""

    def __init__(
        self,
        state: LocalState,
        server: NumberServer | None = None,
        learn_mode: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.state = state
        self.server: NumberServer = server or Offline()
        # Called outside the command lock when the engine says its mode changed
        # (a sync); failures are the caller's to swallow.
        self._learn_mode = learn_mode
        self._lock = asyncio.Lock()
        self._futs: list[asyncio.Future[None]] = []  # writes of the running command

    # --- the command frame -------------------------------------------------------------

    @asynccontextmanager
    async def command(self) -> AsyncIterator[None]:
        """One document command: serialized, and durable before it returns. The
        store write happens after the lock is released, so concurrent commands
        share one transaction."""
        async with self._lock:
            self._futs = []
            yield
            futs, self._futs = self._futs, []
        if futs:
            await asyncio.shield(asyncio.gather(*futs))

    def emit(self, type_: str, payload: BaseModel, doc_id: str, kind: str) -> Event:
        """Record an event of the running command (call inside ``command``)."""
        ev, fut = self.state.emit(type_, payload, doc_id, kind)
        self._futs.append(fut)
        return ev

    async def _numbered(self, run: Callable[[bool], Awaitable[str]]) -> str:
        """Run a numbering command (``run(first_try)``); if the engine's mode changed,
        learn it (a sync, outside the command lock) and run it once more."""
        try:
            async with self.command():
                return await run(True)
        except _ModeChanged:
            pass
        if self._learn_mode is not None:
            try:
                await self._learn_mode()
            except SynvoiceError:
                pass  # not learnt: numbered on the device or 0, as offline
        async with self.command():
            return await run(False)

    # --- numbers ------------------------------------------------------------------------

    async def _next_number(
        self, kind: str, doc_id: uuid.UUID, first_try: bool
    ) -> tuple[int, NumberSource]:
        n = self.state.numbering.next_number(kind, self.state.user)
        if n is not None:
            return n, "device"
        # Centralized: the server's next number when it answers, else 0 for now.
        if not self.server.online:
            return 0, "device"
        try:
            return (await self.server.next_numbers([(kind, doc_id)]))[0], "server"
        except SynvoiceError as exc:
            if exc.code == "mode":
                if first_try:
                    raise _ModeChanged() from None
                n = self.state.numbering.next_number(kind, self.state.user)
                return (n or 0), "device"
            if exc.code in NUMBER_LATER_CODES:
                return 0, "device"
            raise

    # --- commands -----------------------------------------------------------------------

    async def create(
        self,
        kind: str,
        customer: Customer | dict[str, Any] | str | None = None,
        lines: Iterable[Line | dict[str, Any]] = (),
        *,
        currency: str = "USD",
        issue_date: date | str | None = None,
        due_date: date | str | None = None,
        notes: str | None = None,
        number: int | None = None,
        converted_from: str | uuid.UUID | None = None,
        doc_id: str | uuid.UUID | None = None,
        credits: str | uuid.UUID | None = None,
        payment_terms: str | None = None,
        force: bool = False,
    ) -> DocumentView:
        """A new invoice, quote or estimate, numbered per the user mode (or ``number``,
        set by hand: refused if already used in its series unless ``force``). Works
        offline (centralized mode then gives number 0)."""
        lines = _lines(lines)  # checked once; a second try reads them again

        async def run(first_try: bool) -> str:
            return await self._create(
                kind,
                customer,
                lines,
                currency=currency,
                issue_date=issue_date,
                due_date=due_date,
                notes=notes,
                number=number,
                converted_from=converted_from,
                doc_id=doc_id,
                credits=credits,
                payment_terms=payment_terms,
                first_try=first_try,
                force=force,
            )

        return self.state.document(await self._numbered(run))

    async def _create(
        self,
        kind: str,
        customer: Customer | dict[str, Any] | str | None,
        lines: Iterable[Line | dict[str, Any]],
        *,
        currency: str,
        issue_date: date | str | None,
        due_date: date | str | None,
        notes: str | None,
        number: int | None,
        converted_from: str | uuid.UUID | None,
        doc_id: str | uuid.UUID | None = None,
        credits: str | uuid.UUID | None = None,
        payment_terms: str | None = None,
        first_try: bool = True,
        force: bool = False,
    ) -> str:
        if kind not in KINDS:
            raise SynvoiceError("schema", f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        fields: dict[str, Any] = {
            "customer": _customer(customer),
            "lines": _lines(lines),
            "currency": currency,
            "issue_date": _date(issue_date, "issue date"),
            "due_date": _date(due_date, "due date"),
            "notes": notes,
            "converted_from": converted_from,
        }
        if credits is not None:  # only set keys go on the wire (older readers forbid new ones)
            fields["credits"] = credits
        if payment_terms is not None:
            fields["payment_terms"] = payment_terms
        _model(DocumentCreated, **fields)  # refuse bad input before taking a number
        if doc_id is None:
            new_id = uuid.uuid4()
        else:
            new_id = _uuid(doc_id)
            existing = self.state.view(str(new_id))
            if existing is not None and existing.created:
                raise SynvoiceError("conflict", f"document {new_id} exists already")
        source: NumberSource
        forced = False
        if number is not None:
            check_number(number)
            source = "manual"
            forced = self._check_free(kind, number, str(new_id), force)
        else:
            number, source = await self._next_number(kind, new_id, first_try)
        if forced:
            fields["forced"] = True
        payload = _model(DocumentCreated, number=number, number_source=source, **fields)
        self.emit("document.created", payload, str(new_id), kind)
        return str(new_id)

    async def edit_customer(
        self, doc_id: str | uuid.UUID, customer: Customer | dict[str, Any] | str
    ) -> DocumentView:
        c = _customer(customer)
        return await self._edit(doc_id, "document.customer_changed", CustomerChanged, customer=c)

    async def edit_lines(
        self, doc_id: str | uuid.UUID, lines: Iterable[Line | dict[str, Any]]
    ) -> DocumentView:
        return await self._edit(doc_id, "document.lines_changed", LinesChanged, lines=_lines(lines))

    async def edit_dates(
        self,
        doc_id: str | uuid.UUID,
        issue_date: date | str | None,
        due_date: date | str | None,
    ) -> DocumentView:
        return await self._edit(
            doc_id,
            "document.dates_changed",
            DatesChanged,
            issue_date=_date(issue_date, "issue date"),
            due_date=_date(due_date, "due date"),
        )

    async def _edit(
        self, doc_id: str | uuid.UUID, type_: str, model: type[BaseModel], **kw: Any
    ) -> DocumentView:
        payload = _model(model, **kw)
        async with self.command():
            v = self._doc(doc_id)
            if v.status in ("issued", "void"):
                raise SynvoiceError(
                    "conflict",
                    f"{label(v)} is {v.status}: an issued document is not rewritten "
                    "(void it and make a new one)",
                )
            self.emit(type_, payload, v.doc_id, v.kind)
        return self.state.document(v.doc_id)

    async def set_number(
        self, doc_id: str | uuid.UUID, number: int, force: bool = False
    ) -> DocumentView:
        """Set a number by hand (any mode, any time): e.g. to fix a duplicate. A number
        already used in the series is refused unless ``force`` (then recorded as forced)."""
        check_number(number)
        async with self.command():
            v = self._doc(doc_id)
            forced = self._check_free(v.kind, number, v.doc_id, force)
            await self._assign(v, number, "manual", forced)
        return self.state.document(v.doc_id)

    def _check_free(self, kind: str, number: int, doc_id: str, force: bool) -> bool:
        """Refuse a typed number that another document known here holds in the same
        series (kind and period); with ``force``, True: the duplicate is acknowledged."""
        st = self.state
        if number not in st.numbering.numbers.get(kind, ()):
            return False  # the usual case: nobody known here holds it
        ns = st.numbering.settings
        period = ns.period(kind, now())
        holders = [
            v
            for v in st.documents(kind)
            if v.number == number
            and v.doc_id != doc_id
            and v.created
            and ns.period(kind, v.numbered_at or v.created_at) == period
        ]
        if not holders:
            return False
        if force:
            return True
        h = holders[0]
        shown = ns.display(kind, number, h.numbered_at or h.created_at, h.user)
        who = (h.customer or {}).get("name") or h.doc_id[:8]
        raise SynvoiceError(
            "duplicate",
            f"{kind} {shown} is already used by {h.doc_id[:8]} ({who}, {h.user}, {h.status}): "
            "give another number, or force it (--force) to record a known duplicate",
        )

    async def _assign(
        self, v: DocumentView, number: int, source: NumberSource, forced: bool = False
    ) -> None:
        payload = NumberAssigned(number=number, source=source, previous=v.number, forced=forced)
        self.emit("document.number_assigned", payload, v.doc_id, v.kind)
        if v.doc_id in self.state.pending_numbers:  # a later number replaces the pending one
            await self.state.shielded(self.state.drop_pending(v.doc_id))

    async def issue(self, doc_id: str | uuid.UUID) -> DocumentView:
        async with self.command():
            v = self._doc(doc_id)
            if v.status != "draft":
                raise SynvoiceError("conflict", f"{label(v)} is {v.status}, not a draft")
            if v.number == 0:
                raise SynvoiceError(
                    "conflict",
                    f"{label(v)} has no number yet: "
                    "assign one (synvoice device assign, or renumber DOC N)",
                )
            self.emit("document.issued", Issued(), v.doc_id, v.kind)
        return self.state.document(v.doc_id)

    async def void(self, doc_id: str | uuid.UUID, reason: str | None = None) -> DocumentView:
        payload = _model(Voided, reason=reason)
        async with self.command():
            v = self._doc(doc_id)
            if v.status == "void":
                raise SynvoiceError("conflict", f"{label(v)} is already void")
            self.emit("document.voided", payload, v.doc_id, v.kind)
        return self.state.document(v.doc_id)

    async def convert(self, quote_id: str | uuid.UUID) -> DocumentView:
        """Turn a quote or estimate into a new invoice (numbered per the user mode)."""

        async def run(first_try: bool) -> str:
            q = self._doc(quote_id)
            if q.kind == "invoice":
                raise SynvoiceError("bad_request", f"{label(q)} is an invoice already")
            if q.status == "void":
                raise SynvoiceError("conflict", f"{label(q)} is void")
            if q.converted_to:
                raise SynvoiceError(
                    "conflict", f"{label(q)} was already converted into {q.converted_to}"
                )
            inv = await self._create(
                "invoice",
                q.customer,
                q.lines,
                currency=q.currency,
                issue_date=None,
                due_date=None,
                notes=q.notes,
                number=None,
                converted_from=q.doc_id,
                first_try=first_try,
            )
            self.emit("document.converted", Converted(invoice_id=uuid.UUID(inv)), q.doc_id, q.kind)
            return inv

        return self.state.document(await self._numbered(run))

    async def assign_numbers(
        self, doc_ids: Iterable[str | uuid.UUID] | None = None
    ) -> dict[str, int]:
        """Numbers for documents still numbered 0: the given ones, or all this device
        made. Centralized: the server's next numbers (one request per 1,000, needs
        the engine; they show as pending until pulled); single/distributed: the next
        numbers on the device (distributed: only while known epochs last)."""
        st = self.state
        async with self.command():
            if doc_ids is None:
                todo = [
                    v
                    for v in st.documents()
                    if v.number == 0 and v.device_id == st.device_id and v.status != "void"
                ]
            else:
                todo = [v for v in (self._doc(d) for d in doc_ids) if v.number == 0]
            if not todo:
                return {}
            out: dict[str, int] = {}
            if st.numbering.mode == "centralized":
                if not self.server.online:
                    raise SynvoiceError("unavailable", "offline: not connected to the broker")
                for i in range(0, len(todo), ASSIGN_CHUNK):
                    chunk = todo[i : i + ASSIGN_CHUNK]
                    nums = await self.server.next_numbers(
                        [(v.kind, uuid.UUID(v.doc_id)) for v in chunk]
                    )
                    # The engine logged each number; keep it locally until it is pulled.
                    rows = [(v.doc_id, v.kind, n) for v, n in zip(chunk, nums, strict=True)]
                    await st.shielded(st.store_pending(rows))
                    out.update({v.doc_id: n for v, n in zip(chunk, nums, strict=True)})
            else:
                for v in todo:
                    n = st.numbering.next_number(v.kind, st.user) or 0
                    if n == 0:
                        break  # distributed: out of known epochs until the next sync
                    await self._assign(v, n, "device")
                    out[v.doc_id] = n
        return out

    def _doc(self, doc_id: str | uuid.UUID) -> DocumentView:
        return self.state.document(str(_uuid(doc_id)))


# --- input checks (pure) -------------------------------------------------------------------


def _model(model: type[BaseModel], **kw: Any) -> Any:
    """An event payload, checked (content and size) before anything is recorded."""
    m = _part(model, kw, "")
    # Refused here, before a number is taken or anything shows as done: the engine
    # would set the event aside at the next sync (1 KiB left for the envelope).
    size = len(codec.pack(m.model_dump(mode="json")))
    if size + 1024 > protocol.MAX_EVENT_BYTES:
        raise SynvoiceError(
            "too_large",
            f"this change is {size:,} bytes; an event may hold {protocol.MAX_EVENT_BYTES:,}",
        )
    return m


def _part(model: type[BaseModel], value: object, where: str) -> Any:
    """``value`` validated as ``model``; any bad input is a ``schema`` error."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = ".".join(
            [where, *(str(p) for p in first["loc"])] if where else map(str, first["loc"])
        )
        raise SynvoiceError("schema", f"{loc or model.__name__}: {first['msg']}") from None


def _customer(c: Customer | dict[str, Any] | str | None) -> Customer | None:
    if c is None:
        return None
    if isinstance(c, str):
        c = {"name": c}
    customer: Customer = c if isinstance(c, Customer) else _part(Customer, c, "customer")
    problems = party_problems("customer", country=customer.country, email=customer.email)
    if problems:
        raise SynvoiceError("schema", problems[0])
    return customer


def _lines(lines: Iterable[Line | dict[str, Any]]) -> list[Line]:
    if isinstance(lines, str | bytes | dict) or not isinstance(lines, Iterable):
        raise SynvoiceError("schema", "lines: a list of lines")
    return [
        ln if isinstance(ln, Line) else _part(Line, ln, f"lines.{i}") for i, ln in enumerate(lines)
    ]


def _date(d: date | str | None, what: str) -> date | None:
    if d is None or isinstance(d, date):
        return d
    try:
        return date.fromisoformat(d)
    except (ValueError, TypeError):
        raise SynvoiceError("schema", f"{what} must be a date YYYY-MM-DD, not {d!r}") from None


def _uuid(doc_id: str | uuid.UUID) -> uuid.UUID:
    try:
        return uuid.UUID(str(doc_id))
    except ValueError:
        raise SynvoiceError("bad_request", f"{doc_id!r} is not a document id") from None


def check_number(number: int) -> None:
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 2**53:
        raise SynvoiceError("schema", f"a document number is a whole number >= 1, not {number!r}")


def label(v: DocumentView) -> str:
    return f"{v.kind} {v.number}" if v.number else f"{v.kind} {v.doc_id[:8]} (unnumbered)"
