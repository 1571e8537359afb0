"""The device agent: offline-first documents, an outbox, and sync with the engine.

Every command makes an event, stores it in the local outbox (one SQLite
transaction) and returns at once: online or offline makes no difference to the
person at the device. A background loop pushes the outbox and pulls the log
whenever the device is online; the engine's head notifications
(``synvoice.v1.head``) make it pull as soon as another device commits.

Idempotency: an event id is made once, stored with the event and sent as is on
every retry; the engine stores each id once. Resumption: pulled events are
stored page by page together with the new last position, so a sync that is cut
off goes on from the last stored page, never from zero.

``DeviceAgent`` is the facade over four parts, each with one job:
``devices.state`` (the store and the same state in memory), ``devices.commands``
(document commands, recorded locally), ``devices.sync`` (push, pull, the loop)
and ``devices.connection`` (connect, reconnect, the engine's requests).
"""

from __future__ import annotations

import asyncio
import fcntl
import uuid
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import IO, Any

from devices.anchors import DeviceAnchors
from devices.commands import Commands
from devices.connection import Connection
from devices.numbering import DeviceNumbering, duplicates
from devices.state import LocalState
from devices.store import STORE_VERSION, VIEW_SHAPE, DeviceStore
from devices.sync import ProgressFn, Sync, SyncResult
from engine.document import Conflict, DocumentView
from engine.enrollment import Enrollment, parse_token
from engine.errors import SynvoiceError
from engine.events import Event, now
from engine.schema.common import KINDS, Customer, Line

__all__ = ["DeviceAgent", "SyncResult"]

STORE_FILE = "device.sqlite"
LOCK_FILE = "agent.lock"


def _lock_home(home: Path) -> IO[str]:
    f = open(home / LOCK_FILE, "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise SynvoiceError("conflict", f"another device agent is using {home}") from None
    return f


class DeviceAgent:
    """One device: its store, its connection and its sync loop (asyncio)."""

    def __init__(
        self,
        home: Path,
        store: DeviceStore,
        enrollment: Enrollment,
        lock: IO[str],
        *,
        request_timeout: float = 5.0,
        poll_interval: float = 5.0,
        retry_min: float = 0.1,
        retry_max: float = 2.0,
        reconnect_wait: float = 0.5,
        background: bool = True,
    ) -> None:
        self.home = home
        self.enrollment = enrollment
        # background=False: no sync loop (one-shot CLI commands, controlled tests);
        # the caller syncs explicitly.
        self.background = background
        self._lock_file: IO[str] | None = lock
        wake = asyncio.Event()  # the sync loop's: new events, a head notice, a reconnect
        self.state = LocalState(store, enrollment.device_id, enrollment.user, wake.set)
        self._conn = Connection(
            enrollment,
            request_timeout=request_timeout,
            reconnect_wait=reconnect_wait,
            on_head=self._on_head,
            on_reconnect=wake.set,
            worker=self._sync_loop if background else None,
        )
        self._sync = Sync(
            self.state,
            self._conn,
            wake,
            poll_interval=poll_interval,
            retry_min=retry_min,
            retry_max=retry_max,
        )
        self.commands = Commands(self.state, self._conn, learn_mode=self.sync)
        self._closed = False

    # --- life cycle --------------------------------------------------------------------

    @classmethod
    async def init(cls, home: Path, token: str, **opts: Any) -> DeviceAgent:
        """Make a new device in ``home`` from an enrollment token (``synvoice enroll``)."""
        enrollment = parse_token(token)
        home = Path(home)
        home.mkdir(parents=True, exist_ok=True)
        path = home / STORE_FILE
        if path.exists():
            raise SynvoiceError(
                "conflict", f"{home} already holds a device; use another --home to add one"
            )
        lock = _lock_home(home)
        store: DeviceStore | None = None
        try:
            path.touch(mode=0o600)  # it holds the device's credential (the token)
            store = await DeviceStore.open(path)
            await store.set_meta(
                {
                    "token": token,
                    "store_version": STORE_VERSION,
                    "device_id": enrollment.device_id,
                    "user": enrollment.user,
                    "created_at": now().isoformat(),
                    "view_shape": VIEW_SHAPE,
                }
            )
        except BaseException:
            if store is not None:
                await store.close()
            for leftover in (
                path,
                path.with_name(path.name + "-wal"),
                path.with_name(path.name + "-shm"),
            ):
                leftover.unlink(missing_ok=True)
            lock.close()
            raise
        return await cls._load(home, store, enrollment, lock, opts)

    @classmethod
    async def open(cls, home: Path, **opts: Any) -> DeviceAgent:
        """Open the device stored in ``home``."""
        home = Path(home)
        path = home / STORE_FILE
        if not path.exists():
            raise SynvoiceError(
                "not_found",
                f"no device in {home} (make one: synvoice device init --home {home} --token …)",
            )
        lock = _lock_home(home)
        try:
            store = await DeviceStore.open(path)
            token = await store.get_meta("token")
            if not isinstance(token, str):
                raise SynvoiceError("internal", f"{path} has no credentials")
            enrollment = parse_token(token)
        except BaseException:
            lock.close()
            raise
        return await cls._load(home, store, enrollment, lock, opts)

    @classmethod
    async def _load(
        cls,
        home: Path,
        store: DeviceStore,
        enrollment: Enrollment,
        lock: IO[str],
        opts: dict[str, Any],
    ) -> DeviceAgent:
        agent = cls(home, store, enrollment, lock, **opts)
        try:
            await agent.state.restore()
        except BaseException:
            await store.close()
            lock.close()
            raise
        return agent

    async def close(self) -> None:
        """Go offline and close the store (events already made stay in the outbox)."""
        if self._closed:
            return
        await self.disconnect()
        self._closed = True
        await self.state.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    async def __aenter__(self) -> DeviceAgent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- identity ----------------------------------------------------------------------

    @property
    def store(self) -> DeviceStore:
        return self.state.store

    @property
    def numbering(self) -> DeviceNumbering:
        return self.state.numbering

    @property
    def anchors(self) -> DeviceAnchors:
        """The engine key and the checkpoints this device holds (devices.anchors)."""
        return self.state.anchors

    @property
    def device_id(self) -> str:
        return self.enrollment.device_id

    @property
    def user(self) -> str:
        return self.enrollment.user

    @property
    def slot(self) -> int:
        return self.numbering.users.get(self.user, self.enrollment.slot)

    @property
    def mode(self) -> str:
        return self.numbering.mode

    @property
    def last_position(self) -> int:
        return self.state.last_position

    # --- connection and sync --------------------------------------------------------------

    @property
    def online(self) -> bool:
        return self._conn.online

    async def connect(self, timeout: float = 5.0) -> bool:
        """Go online. Returns whether the broker answered within ``timeout``; if it
        did not, the agent keeps trying in the background (and syncs once it can).
        Never raises because the broker or the engine is down."""
        if self._closed:
            raise SynvoiceError("unavailable", "the device agent is closed")
        return await self._conn.connect(timeout)

    async def disconnect(self) -> None:
        """Go offline on purpose (stop reconnecting); the outbox waits for the next connect."""
        await self._conn.disconnect()

    async def sync(self, on_progress: ProgressFn | None = None) -> SyncResult:
        """Push the outbox, then pull everything after the last position.

        Raises ``SynvoiceError("unavailable")`` when offline or when the engine
        does not answer; what was done before that is kept.
        """
        return await self._sync.sync(on_progress)

    async def wait_synced(self, timeout: float = 30.0) -> None:
        """Wait until the outbox is empty and everything up to the head is pulled."""
        await self._sync.wait_synced(timeout)

    def _on_head(self, head: int) -> None:
        self._sync.on_head(head)

    async def _sync_loop(self) -> None:
        await self._sync.loop()

    # --- reads --------------------------------------------------------------------------

    def document(self, doc_id: str | uuid.UUID) -> DocumentView:
        """The document as this device sees it (synced events + its own unsent ones)."""
        return self.state.document(doc_id)

    def documents(self, kind: str | None = None) -> list[DocumentView]:
        return self.state.documents(kind)

    def conflicts(self, doc_id: str | uuid.UUID | None = None) -> list[Conflict]:
        """Conflicts the merge found in pulled events (concurrent edits, edits after issue)."""
        return [c for c in self.state.conflicts if doc_id is None or c.doc_id == str(doc_id)]

    def duplicates(self) -> list[dict[str, Any]]:
        """Numbers shared by several documents of a kind, as this device sees them."""
        return duplicates(self.documents(), self.numbering.settings)

    async def history(self, doc_id: str | uuid.UUID) -> list[Event]:
        """Every event of a document: pulled ones by position, then unsent ones."""
        return await self.state.history(doc_id)

    async def rejected(self) -> list[dict[str, Any]]:
        return await self.state.store.rejected()

    def pending_count(self) -> int:
        """Events not yet acknowledged by the engine."""
        return self.state.pending_count()

    def series(self, kind: str) -> dict[str, Any]:
        """This user's series of ``kind``: slot, step and the next numbers."""
        return self.numbering.series(kind, self.user)

    def status(self) -> dict[str, Any]:
        st = self.state
        docs = self.documents()
        return {
            "device_id": self.device_id,
            "user": self.user,
            "slot": self.slot,
            "mode": self.mode,
            "mode_set": self.numbering.mode_set,
            "url": self.enrollment.url,
            "home": str(self.home),
            "online": self.online,
            "pending": self.pending_count(),
            "unconfirmed": len(st.outbox) - self.pending_count(),
            "last_sync": st.last_sync,
            "last_position": st.last_position,
            "head": st.head,
            "documents": len(docs),
            "unassigned": sum(1 for v in docs if v.number == 0),
            "duplicates": len(duplicates(docs, self.numbering.settings)),
            "conflicts": len(st.conflicts),
            "rejected": st.rejected,
            "last_error": self._conn.last_error,
            "series": {k: self.series(k) for k in KINDS},
        }

    # --- commands (recorded locally; the sync path sends them) ----------------------------

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
        set by hand; one already used in its series is refused unless ``force``).
        Works offline (centralized mode then gives number 0).

        ``doc_id`` (optional) lets a caller choose the document id, e.g. derived from
        its own key so that a re-run cannot create the same document twice (a
        centralized server also hands the same reserved number to the same id)."""
        return await self.commands.create(
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
            force=force,
        )

    async def edit_customer(
        self, doc_id: str | uuid.UUID, customer: Customer | dict[str, Any] | str
    ) -> DocumentView:
        return await self.commands.edit_customer(doc_id, customer)

    async def edit_lines(
        self, doc_id: str | uuid.UUID, lines: Iterable[Line | dict[str, Any]]
    ) -> DocumentView:
        return await self.commands.edit_lines(doc_id, lines)

    async def edit_dates(
        self,
        doc_id: str | uuid.UUID,
        issue_date: date | str | None,
        due_date: date | str | None,
    ) -> DocumentView:
        return await self.commands.edit_dates(doc_id, issue_date, due_date)

    async def set_number(
        self, doc_id: str | uuid.UUID, number: int, force: bool = False
    ) -> DocumentView:
        """Set a number by hand (any mode, any time): e.g. to fix a duplicate. One
        already used in the series is refused unless ``force``."""
        return await self.commands.set_number(doc_id, number, force)

    def display_number(self, v: DocumentView) -> str:
        """The document's display number (its series' pattern, e.g. INV-2026-0042)."""
        return self.numbering.settings.display(
            v.kind, v.number, v.numbered_at or v.created_at, v.user
        )

    async def issue(self, doc_id: str | uuid.UUID) -> DocumentView:
        return await self.commands.issue(doc_id)

    async def void(self, doc_id: str | uuid.UUID, reason: str | None = None) -> DocumentView:
        return await self.commands.void(doc_id, reason)

    async def convert(self, quote_id: str | uuid.UUID) -> DocumentView:
        """Turn a quote or estimate into a new invoice (numbered per the user mode)."""
        return await self.commands.convert(quote_id)

    async def assign_numbers(
        self, doc_ids: Iterable[str | uuid.UUID] | None = None
    ) -> dict[str, int]:
        """Numbers for documents still numbered 0: the given ones, or all this device
        made. Centralized: the server's next numbers (one request, needs the engine;
        shown at once, pulled with the next sync); single/distributed: the next
        numbers on the device (distributed: only while known epochs last).
        Returns {doc_id: new number}."""
        got = await self.commands.assign_numbers(doc_ids)
        if got:
            self._sync.wake.set()  # the background loop (if any) pulls them soon
        return got
