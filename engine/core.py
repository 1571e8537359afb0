"""The engine core: validates requests, numbers documents, group-commits to the log.

Transport-free: ``handle(subject, headers, body)`` takes the raw request and
returns the raw reply (or raises ``SynvoiceError``). ``engine.service`` wires it
to NATS; tests and the CLI may call it directly.

Group commit: every write (a push, a number request, an admin change) becomes a
job on one queue. A single writer task drains all waiting jobs, plans them
against the in-memory state, seals the new events (positions, hash chain) and
writes them with the state snapshot in one SQLite transaction. Only after the
COMMIT are the jobs answered, so an acknowledgement means "durable".
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import msgpack
import msgspec

from engine import auth, brokerauth, codec, editions, fastparse, license, protocol
from engine.config import EngineConfig
from engine.errors import SynvoiceError
from engine.events import Event, construct_event, new_event, now, parse_event
from engine.log import EventLog, Record, SideWrite
from engine.numbering import extension_needed, open_epoch
from engine.replay_guard import ReplayGuard
from engine.schema.common import ENGINE_DEVICE, KINDS, MAX_NUMBER
from engine.schema.registry import REGISTRY
from engine.schema.settings import (
    DeviceEnrolled,
    DeviceRevoked,
    EpochExtended,
    EpochOpened,
    IntegrationAdded,
    IntegrationRemoved,
    Registered,
    UserEnrolled,
    UserModeSet,
)
from engine.state import EngineState

log = logging.getLogger("synvoice.engine")

CommitListener = Callable[[Sequence[tuple[Event, Record]]], None]

_NUMBER_ASSIGNED_VERSION = REGISTRY["document.number_assigned"].schema_version

# A pushed event grows by about this much when stored (position, commit time).
STORED_OVERHEAD = 64


@dataclass(frozen=True)
class Caller:
    device_id: str
    user: str
    admin: bool = False


class _Batch:
    """Events planned for one transaction; applies them to the state as they come."""

    def __init__(self, state: EngineState) -> None:
        self.state = state
        self.events: list[Event] = []
        self.ids: list[bytes] = []  # event ids' bytes, as events
        self.index: dict[bytes, int] = {}
        self.side: list[SideWrite] = []
        self.reserved: dict[bytes, tuple[str, int]] = {}  # doc id -> (kind, number)
        self.pending_bytes = 0  # estimated stored size of the pushed events planned
        self.engine_events = False  # settings/numbering events planned (see pull)

    def add(self, ev: Event, eid: bytes | None = None) -> int:
        """Plan ``ev`` (``eid``: its id's bytes, if the caller has them already)."""
        idx = len(self.events)
        self.events.append(ev)
        if eid is None:
            eid = ev.event_id.bytes
        self.ids.append(eid)
        self.index[eid] = idx
        if ev.device_id == ENGINE_DEVICE:
            self.engine_events = True
        self.state.apply(ev)
        return idx


@dataclass
class _Job:
    plan: Callable[[_Batch], Callable[[int], Any]]  # returns a resolver(base_position)
    size: int
    lookup_ids: list[bytes]  # event ids whose stored positions the plan needs
    reserve_ids: list[bytes]  # doc ids whose reserved numbers the plan needs
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class EngineCore:
    def __init__(self, config: EngineConfig, log_: EventLog, state: EngineState) -> None:
        self.config = config
        self.log = log_
        self.state = state
        self.admin_secret: bytes | None = None
        self._secrets: dict[str, bytes] = {}
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self.listeners: list[CommitListener] = []
        # Done when the commit in flight with engine events (already applied to
        # ``state``) is durable; None when there is none.
        self._settling: asyncio.Future[None] | None = None
        # Plugins' parts of the status reply (e.g. the live views worker), by key.
        self.status_parts: dict[str, Callable[[], dict[str, Any]]] = {}
        self.started_at = time.time()
        self.published = 0  # set by the publisher
        self.trusted_keys = license.trusted_keys(config.vendor_public_key)
        self.config_license: license.License | None = None  # EngineConfig.license_key
        # Set by the server when it runs the broker with generated users: called
        # (and awaited) after devices or integrations change, before replying.
        self.on_credentials_changed: Callable[[], Awaitable[None]] | None = None
        # Told to enrolled devices: {"auth": bool, "tls_ca": PEM or None}.
        self.broker_info: dict[str, Any] = {"auth": False, "tls_ca": None}
        # (day, registration, config licence, result): the edition() cache.
        self._edition: tuple[date, Any, Any, editions.Active] | None = None
        self.replay = ReplayGuard()  # nonces of non-idempotent requests (engine.replay_guard)

    # --- life cycle -------------------------------------------------------------------

    @classmethod
    async def open(cls, config: EngineConfig) -> EngineCore:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        log_ = await EventLog.open(config.log_path, sync=config.sync)
        core = cls(config, log_, await load_state(log_))
        core._secrets = await log_.credentials()
        core.admin_secret = load_or_create_admin_secret(config)
        if config.license_key:
            try:
                core.config_license = license.verify(config.license_key, core.trusted_keys)
            except SynvoiceError as exc:
                await log_.close()
                raise SynvoiceError(
                    exc.code, f"the configured license key (SYNVOICE_LICENSE_KEY): {exc.message}"
                ) from None
        return core

    async def start(self) -> None:
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name="synvoice-writer")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.cancel()
            try:
                await self._writer
            except asyncio.CancelledError:
                pass
            self._writer = None
        await self.log.close()

    # --- the request entry point ---------------------------------------------------

    async def handle(self, subject: str, headers: dict[str, str] | None, body: bytes) -> bytes:
        if len(body) > self.config.max_request_bytes:
            raise SynvoiceError(
                "too_large",
                f"request is {len(body)} bytes, limit is {self.config.max_request_bytes}",
            )
        caller = self.authenticate(subject, headers, body)
        if subject == protocol.PUSH:
            return codec.pack(await self.push_body(caller, body))
        req = codec.unpack_request(body, self.config.max_request_bytes)
        if subject == protocol.PULL:
            return await self.pull(caller, req)
        if subject == protocol.NUMBERS:
            return codec.pack(await self.numbers(caller, req))
        if subject == protocol.STATUS:
            return codec.pack(self.status())
        if subject.startswith(f"{protocol.PREFIX}.admin."):
            if not caller.admin:
                raise SynvoiceError("forbidden", "admin requests need the admin credential")
            if subject == protocol.ADMIN_ENROLL:
                return codec.pack(await self.enroll(_str(req, "user"), _opt_str(req, "name")))
            if subject == protocol.ADMIN_REVOKE:
                return codec.pack(
                    await self.revoke(_str(req, "device_id"), _opt_str(req, "reason"))
                )
            if subject == protocol.ADMIN_MODE:
                return codec.pack(
                    await self.set_mode(_str(req, "mode"), bool(req.get("force", False)))
                )
            if subject == protocol.ADMIN_REGISTER:
                return codec.pack(await self.register(_str(req, "key")))
            if subject == protocol.ADMIN_INTEGRATION:
                return codec.pack(
                    await self.integration(_str(req, "action"), _opt_str(req, "name"))
                )
        raise SynvoiceError("not_found", f"no endpoint {subject!r}")

    def authenticate(self, subject: str, headers: dict[str, str] | None, body: bytes) -> Caller:
        device = auth.verify(headers, subject, body, self._secret_of)
        assert headers is not None  # verify() refuses unsigned requests
        self.replay.check(subject, headers, device)
        if device == protocol.ADMIN_DEVICE:
            return Caller(device, protocol.ADMIN_DEVICE, admin=True)
        info = self.state.devices.get(device)
        if info is None:
            raise SynvoiceError("unauthorized", f"unknown device {device!r}")
        if info.revoked:
            raise SynvoiceError("revoked", f"device {device!r} was revoked")
        return Caller(device, info.user)

    def _secret_of(self, device_id: str) -> bytes | None:
        if device_id == protocol.ADMIN_DEVICE:
            return self.admin_secret
        return self._secrets.get(device_id)

    def credential(self, device_id: str) -> bytes | None:
        """A device's enrollment secret (its broker password derives from it)."""
        return self._secrets.get(device_id)

    # --- edition --------------------------------------------------------------------

    def edition(self) -> editions.Active:
        """The edition in force: a configured key wins over a registered one."""
        today = date.today()
        reg = self.state.registration
        c = self._edition
        if c is not None and c[0] == today and c[1] is reg and c[2] is self.config_license:
            return c[3]
        if self.config_license is not None:
            active = editions.resolve(self.config_license.record(), "config", today)
        else:
            active = editions.resolve(reg, "registered", today)
        self._edition = (today, reg, self.config_license, active)
        return active

    def usage(self) -> editions.Usage:
        device_users = self.state.active_device_users()
        return editions.Usage(
            users=len(set(device_users)),
            devices=len(device_users),
            data_bytes=self.state.data_bytes,
        )

    async def _credentials_changed(self, reply: dict[str, Any]) -> dict[str, Any]:
        if self.on_credentials_changed is not None:
            try:
                await self.on_credentials_changed()
            except Exception as exc:
                # The change is committed and the engine enforces it; say that
                # the broker has not caught up rather than hide it.
                log.exception("broker users not reloaded")
                reply = {**reply, "broker_warning": f"broker users not reloaded: {exc}"}
        return reply

    # --- push -----------------------------------------------------------------------

    async def push_body(self, caller: Caller, body: bytes) -> dict[str, Any]:
        """A push request as received: events decoded and validated by the compiled
        fast path (``engine.fastparse``); anything it cannot vouch for, and every
        malformed request, goes through ``push``'s pydantic path and its errors."""
        try:
            raws = fastparse.decode_push(body).events
        except (msgspec.ValidationError, msgspec.DecodeError):
            return await self.push(
                caller, codec.unpack_request(body, self.config.max_request_bytes)
            )
        self._check_push(caller, len(raws))
        validated: list[tuple[Event, int]] = []
        max_bytes = self.config.max_event_bytes
        for i, raw in enumerate(raws):
            ev = fastparse.parse_pushed(raw)
            size = len(raw)
            if (
                ev is None
                or size > max_bytes
                or ev.device_id != caller.device_id
                or ev.user != caller.user
            ):
                ev, size = self._validate_pushed(caller, i, codec.unpack_untrusted(bytes(raw)))
            validated.append((ev, size))
        return await self._push_validated(validated)

    def _check_push(self, caller: Caller, count: int) -> None:
        if count > self.config.max_batch_events:
            raise SynvoiceError(
                "too_large",
                f"{count} events in one push, limit is {self.config.max_batch_events}",
            )
        if caller.admin:
            raise SynvoiceError("forbidden", "the admin credential cannot push events")

    async def push(self, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
        raw_events = req.get("events")
        if not isinstance(raw_events, list):
            raise SynvoiceError("bad_request", "'events' must be a list")
        self._check_push(caller, len(raw_events))
        validated = [self._validate_pushed(caller, i, raw) for i, raw in enumerate(raw_events)]
        return await self._push_validated(validated)

    async def _push_validated(self, validated: list[tuple[Event, int]]) -> dict[str, Any]:
        events = [ev for ev, _ in validated]
        if not events:
            return {"results": [], "head": self.log.head}
        counters = self.state.counters
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

        def plan(batch: _Batch) -> Callable[[int], Any]:
            fresh: list[tuple[Event, bytes]] = []
            fresh_ids: set[bytes] = set()
            fresh_bytes = 0
            for (ev, size), eid in zip(validated, ids, strict=True):
                if eid not in self._existing and eid not in batch.index and eid not in fresh_ids:
                    fresh_ids.add(eid)
                    fresh.append((ev, eid))
                    fresh_bytes += size + STORED_OVERHEAD
            if fresh:
                # Edition data limit: refuse new events only; retries of stored
                # ones are still acknowledged.
                stored = self.state.data_bytes + batch.pending_bytes
                editions.check_data(self.edition(), stored, fresh_bytes)
                batch.pending_bytes += fresh_bytes
            for ev, eid in fresh:
                batch.add(ev, eid)
                self._maybe_extend_epoch(batch, ev)
            refs: list[tuple[bool, int]] = []  # (new in this batch, index or position)
            for eid in ids:
                if eid in self._existing:
                    refs.append((False, self._existing[eid]))
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
                    results.append({"event_id": ev.id_text, "position": pos, "duplicate": dup})
                return {"results": results, "head": self.log.head}

            return resolve

        return await self._submit(plan, len(events), ids)

    def _validate_pushed(self, caller: Caller, i: int, raw: Any) -> tuple[Event, int]:
        """The validated event and its size on the wire (to estimate storage)."""
        try:
            try:
                size = len(codec.pack(raw)) if isinstance(raw, dict) else 0
            except (TypeError, ValueError, OverflowError):  # e.g. a msgpack extension value
                raise SynvoiceError(
                    "schema", "event holds a value of a type events cannot carry"
                ) from None
            if size > self.config.max_event_bytes:
                raise SynvoiceError(
                    "too_large", f"event is over {self.config.max_event_bytes} bytes"
                )
            spec = REGISTRY.get(str(raw.get("type"))) if isinstance(raw, dict) else None
            if spec is not None and spec.origin != "device":
                raise SynvoiceError(
                    "forbidden", f"{spec.type} events are written by the engine only"
                )
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

    def _maybe_extend_epoch(self, batch: _Batch, ev: Event) -> None:
        st = self.state
        if st.mode != "distributed" or ev.kind is None:
            return
        if ev.type not in ("document.created", "document.number_assigned"):
            return
        number: int = ev.data.get("number", 0)  # canonical data: validated int
        eps = st.epochs[ev.kind]
        if not number or not eps:
            return
        end = extension_needed(eps[-1], number, self.config.runway)
        if end is not None:
            batch.add(
                self._engine_event(
                    "numbering.epoch_extended",
                    EpochExtended(kind=ev.kind, epoch=eps[-1].epoch, end=end),
                )
            )

    # --- pull -----------------------------------------------------------------------

    async def pull(self, caller: Caller, req: dict[str, Any]) -> bytes:
        after = _int(req, "after", 0, minimum=0)
        limit = min(_int(req, "limit", self.config.pull_limit, minimum=1), self.config.pull_limit)
        with_hashes = bool(req.get("hashes", False))
        if self._epochs_stale():
            await self._submit(self._plan_open_epochs, 1)
        elif self._settling is not None:
            # Engine events (e.g. the epochs another pull opened) are applied to
            # the state when planned: wait for their commit rather than read a
            # log without them.
            await asyncio.shield(self._settling)
        records = await self.log.read(after, limit, self.config.pull_max_bytes)
        head = self.log.head
        last = records[-1].position if records else after
        # Splice the stored msgpack bodies into the reply as they are: no re-encoding.
        pk = msgpack.Packer(use_bin_type=True)
        parts = [
            pk.pack_map_header(4 if with_hashes else 3),
            pk.pack("head"),
            pk.pack(head),
            pk.pack("more"),
            pk.pack(last < head),
            pk.pack("events"),
            pk.pack_array_header(len(records)),
        ]
        parts.extend(r.body for r in records)
        if with_hashes:
            parts.append(pk.pack("hashes"))
            parts.append(pk.pack([r.hash for r in records]))
        return b"".join(parts)

    # --- centralized numbers --------------------------------------------------------

    async def numbers(self, caller: Caller, req: dict[str, Any]) -> dict[str, Any]:
        if caller.admin:
            raise SynvoiceError("forbidden", "numbers are requested by devices")
        if self.state.mode != "centralized":
            raise SynvoiceError(
                "mode",
                f"the server is in {self.state.mode} mode: numbers are assigned on the device",
            )
        items_raw = req.get("items")
        if not isinstance(items_raw, list) or not items_raw:
            raise SynvoiceError("bad_request", "'items' must be a non-empty list")
        if len(items_raw) > 1000:
            raise SynvoiceError("too_large", "at most 1000 numbers per request")
        items: list[tuple[str, uuid.UUID, bool]] = []
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
            items.append((str(kind), doc_id, bool(it.get("fresh", False))))

        def plan(batch: _Batch) -> Callable[[int], Any]:
            # Refusals first: nothing may be added to the batch before them.
            if self.state.mode != "centralized":  # again: a mode change may be queued ahead
                raise SynvoiceError("mode", f"the server is in {self.state.mode} mode")
            kinds: dict[bytes, str] = {}
            for i, (kind, doc_id, _) in enumerate(items):
                if self.state.counters[kind].last >= MAX_NUMBER - len(items):
                    raise SynvoiceError("conflict", f"the {kind} numbers are exhausted")
                key = doc_id.bytes
                held = batch.reserved.get(key) or self._reserved.get(key)
                had = kinds.setdefault(key, held[0] if held else kind)
                if had != kind:  # one document, one series
                    raise SynvoiceError(
                        "conflict", f"item {i}: document {doc_id} is numbered in the {had} series"
                    )
            out: list[int] = []
            rows: list[tuple[bytes, str, int]] = []
            for kind, doc_id, fresh in items:
                key = doc_id.bytes
                held = batch.reserved.get(key) or self._reserved.get(key)
                known = held[1] if held else None
                if known is not None and not fresh:
                    out.append(known)
                    continue
                n = self.state.counters[kind].next()
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
                        device_time=now(),
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
            return lambda _base: {"numbers": out}

        # Renumbering (fresh) needs the reservation too: it is the event's "previous".
        return await self._submit(plan, len(items), reserve=[d.bytes for _, d, _ in items])

    # --- admin ----------------------------------------------------------------------

    async def enroll(self, user: str, name: str | None = None) -> dict[str, Any]:
        device_id = "dev-" + uuid.uuid4().hex[:12]
        secret = auth.new_secret()
        try:
            DeviceEnrolled(device_id=device_id, user=user, name=name)
        except Exception:
            raise SynvoiceError(
                "schema", "user must be 1-64 letters, digits, space, '.', '_', '@' or '-'"
            ) from None

        def plan(batch: _Batch) -> Callable[[int], Any]:
            st = self.state
            editions.check_enroll(self.edition(), st.active_device_users(), user)
            slot = st.users.get(user)
            if slot is None:
                slot = len(st.users) + 1
                batch.add(
                    self._engine_event("settings.user_enrolled", UserEnrolled(user=user, slot=slot))
                )
            batch.add(
                self._engine_event(
                    "settings.device_enrolled",
                    DeviceEnrolled(device_id=device_id, user=user, name=name),
                )
            )
            batch.side.append(
                ("INSERT INTO credentials(device_id, secret) VALUES (?, ?)", [(device_id, secret)])
            )

            def resolve(_base: int) -> Any:
                self._secrets[device_id] = secret
                return {
                    "device_id": device_id,
                    "secret": secret.hex(),
                    "user": user,
                    "slot": slot,
                    "broker_auth": bool(self.broker_info.get("auth")),
                    "tls_ca": self.broker_info.get("tls_ca"),
                }

            return resolve

        return await self._credentials_changed(await self._submit(plan, 1))

    async def revoke(self, device_id: str, reason: str | None = None) -> dict[str, Any]:
        def plan(batch: _Batch) -> Callable[[int], Any]:
            info = self.state.devices.get(device_id)
            if info is None:
                raise SynvoiceError("not_found", f"no device {device_id!r}")
            changed = not info.revoked
            if changed:
                batch.add(
                    self._engine_event(
                        "settings.device_revoked", DeviceRevoked(device_id=device_id, reason=reason)
                    )
                )
            return lambda _base: {"device_id": device_id, "revoked": True, "changed": changed}

        reply = await self._submit(plan, 1)
        if reply["changed"]:
            reply = await self._credentials_changed(reply)
        return reply

    async def register(self, key: str) -> dict[str, Any]:
        """Verify a registration key and record it (``settings.registered``)."""
        lic = license.verify(key, self.trusted_keys, today=date.today())

        def plan(batch: _Batch) -> Callable[[int], Any]:
            before = self.edition()
            reg = self.state.registration
            changed = reg is None or reg.get("fingerprint") != lic.fingerprint
            if changed:
                batch.add(
                    self._engine_event(
                        "settings.registered",
                        Registered.model_validate(
                            {**lic.record(), "previous": before.edition.name}
                        ),
                    )
                )

            def resolve(_base: int) -> Any:
                out = {"changed": changed, **self.edition().status(), "usage": self._usage()}
                if self.config_license is not None:
                    out["edition_note"] = (
                        "recorded, but the license key in the configuration "
                        "(SYNVOICE_LICENSE_KEY) is the one in force"
                    )
                return out

            return resolve

        return await self._submit(plan, 1)

    async def integration(self, action: str, name: str | None) -> dict[str, Any]:
        """add / remove / list integrations (read-only broker users for the stream)."""
        if action == "list":
            return {
                "integrations": sorted(self.state.integrations),
                "broker_auth": bool(self.broker_info.get("auth")),
            }
        if action not in ("add", "remove"):
            raise SynvoiceError("bad_request", "action must be add, remove or list")
        if not name:
            raise SynvoiceError("bad_request", "'name' must be a non-empty string")
        try:
            IntegrationRemoved(name=name)
        except Exception:
            raise SynvoiceError(
                "schema", "integration name must be 1-32 of a-z, 0-9, '_' or '-'"
            ) from None
        credential_id = secrets.token_hex(16)

        def plan(batch: _Batch) -> Callable[[int], Any]:
            known = name in self.state.integrations
            if action == "remove":
                if not known:
                    raise SynvoiceError("not_found", f"no integration {name!r}")
                batch.add(
                    self._engine_event(
                        "settings.integration_removed", IntegrationRemoved(name=name)
                    )
                )
                return lambda _b: {"name": name, "removed": True, "changed": True}
            if not known:
                batch.add(
                    self._engine_event(
                        "settings.integration_added",
                        IntegrationAdded(name=name, credential_id=credential_id),
                    )
                )
            return lambda _b: {**self._integration_credentials(name), "changed": not known}

        reply = await self._submit(plan, 1)
        if reply["changed"]:
            reply = await self._credentials_changed(reply)
        return reply

    def _integration_credentials(self, name: str) -> dict[str, Any]:
        assert self.admin_secret is not None
        cred = self.state.integrations[name]
        user = brokerauth.integration_user(name)
        return {
            "name": name,
            "user": user,
            "password": brokerauth.integration_password(self.admin_secret, name, cred),
            "inbox_prefix": brokerauth.inbox_prefix(user),
            # With generated broker users, a mirror in the integration's account.
            "stream": protocol.INTEGRATION_STREAM
            if self.broker_info.get("auth")
            else protocol.STREAM,
            "subjects": protocol.LOG_SUBJECTS,
            "broker_auth": bool(self.broker_info.get("auth")),
            "tls_ca": self.broker_info.get("tls_ca"),
        }

    async def set_mode(self, mode: str, force: bool = False) -> dict[str, Any]:
        try:
            payload = UserModeSet(mode=mode, previous=self.state.mode, forced=force)
        except Exception:
            raise SynvoiceError(
                "schema", "mode must be single, centralized or distributed"
            ) from None

        def plan(batch: _Batch) -> Callable[[int], Any]:
            st = self.state
            previous = st.mode
            if st.mode_set and previous == mode:
                return lambda _b: {"mode": mode, "changed": False}
            if st.documents > 0 and not force:
                raise SynvoiceError(
                    "conflict",
                    f"{st.documents} documents exist: the user mode is set once; "
                    "use --force to change it (the change is recorded in the log)",
                )
            batch.add(
                self._engine_event(
                    "settings.user_mode_set",
                    payload.model_copy(
                        update={"previous": previous, "forced": force and st.documents > 0}
                    ),
                )
            )
            if mode == "centralized":
                # Continue above every number already in use.
                for c in st.counters.values():
                    c.last = max(c.last, c.highest)
                    c.taken.clear()
            return lambda _b: {"mode": mode, "changed": True, "previous": previous}

        return await self._submit(plan, 1)

    def _epochs_stale(self) -> bool:
        """Distributed mode: does an enrolled user lack a slot in the open epochs?

        Epochs are opened lazily, when a device pulls: devices only number in
        epochs they pulled, so until one pulls, no device can be using the
        open epoch's progression, and users enrolled one after the other (the
        seed's set-up) share the first epoch: 1,4,7 / 2,5,8 / 3,6,9.
        """
        st = self.state
        if st.mode != "distributed" or not st.users:
            return False
        # An open epoch capped by a switch away from distributed is closed: numbers
        # given meanwhile by other modes may lie in its range.
        return any(
            not eps or eps[-1].slots != st.users or eps[-1].cap is not None
            for eps in st.epochs.values()
        )

    def _plan_open_epochs(self, batch: _Batch) -> Callable[[int], Any]:
        if self._epochs_stale():  # again inside the writer: another pull may have opened them
            self._open_epochs(batch)
        return lambda _base: {}

    def _open_epochs(self, batch: _Batch) -> None:
        for kind in KINDS:
            eps = self.state.epochs[kind]
            ep = open_epoch(eps, self.state.users, self.config.runway)
            floor = self.state.counters[kind].highest
            if ep.start <= floor:  # a forced switch: start above every number in use
                shift = floor + 1 - ep.start
                ep.start += shift
                ep.end += shift
            batch.add(
                self._engine_event(
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

    def _engine_event(self, type_: str, payload: Any) -> Event:
        return new_event(type_, payload, device_id=ENGINE_DEVICE, user=ENGINE_DEVICE, device_seq=0)

    # --- status ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        st = self.state
        return {
            "version": _version(),
            "head": self.log.head,
            "published": self.published,
            "mode": st.mode,
            "mode_set": st.mode_set,
            "users": st.users,
            "devices": {
                d: {"user": i.user, "name": i.name, "revoked": i.revoked}
                for d, i in st.devices.items()
            },
            "documents": st.documents,
            "events": st.events,
            "data_bytes": st.data_bytes,
            "counters": {k: c.last for k, c in st.counters.items()},
            "epochs": {
                k: [
                    {
                        "epoch": e.epoch,
                        "start": e.start,
                        "increment": e.increment,
                        "slots": e.slots,
                        "end": e.end,
                    }
                    for e in eps
                ]
                for k, eps in st.epochs.items()
            },
            "uptime": round(time.time() - self.started_at, 3),
            **self.edition().status(),
            "usage": self._usage(),
            "integrations": sorted(st.integrations),
            "broker": {
                "auth": bool(self.broker_info.get("auth")),
                "tls": bool(self.broker_info.get("tls_ca")),
            },
            **{key: part() for key, part in self.status_parts.items()},
        }

    def _usage(self) -> dict[str, int]:
        return self.usage().to_dict()

    # --- the writer ------------------------------------------------------------------

    _existing: dict[bytes, int] = {}
    _reserved: dict[bytes, tuple[str, int]] = {}

    async def _submit(
        self,
        plan: Callable[[_Batch], Callable[[int], Any]],
        size: int,
        event_ids: list[bytes] | None = None,
        reserve: list[bytes] | None = None,
    ) -> dict[str, Any]:
        if self._writer is None:
            raise SynvoiceError("unavailable", "engine is not running")
        job = _Job(plan=plan, size=size, lookup_ids=event_ids or [], reserve_ids=reserve or [])
        await self._queue.put(job)
        result: dict[str, Any] = await job.future
        return result

    async def _write_loop(self) -> None:
        while True:
            jobs = [await self._queue.get()]
            size = jobs[0].size
            while not self._queue.empty() and size < self.config.max_batch_events:
                j = self._queue.get_nowait()
                jobs.append(j)
                size += j.size
            try:
                await self._commit(jobs)
            except Exception as exc:
                log.exception("commit failed; reloading state from the log")
                if not await self._reload_state(jobs, exc):
                    return
                if len(jobs) == 1:
                    _fail(jobs[0], exc)
                    continue
                # One job's events may be what failed (e.g. a UNIQUE constraint):
                # commit the jobs one by one so only that one fails.
                for j in jobs:
                    if j.future.done():
                        continue
                    try:
                        await self._commit([j])
                    except Exception as exc1:
                        if not await self._reload_state(jobs, exc1):
                            return
                        _fail(j, exc1)

    async def _reload_state(self, jobs: list[_Job], exc: Exception) -> bool:
        """The state as the log has it, after a failed commit. If even that fails
        the writer stops: every request then gets 'unavailable' rather than wait."""
        try:
            self.state = await load_state(self.log)
            return True
        except Exception:
            log.exception("the engine state cannot be reloaded: writes stop")
            self._writer = None
            for j in jobs:
                _fail(j, exc)
            while not self._queue.empty():
                _fail(self._queue.get_nowait(), exc)
            return False

    async def _commit(self, jobs: list[_Job]) -> None:
        ids = [i for j in jobs for i in j.lookup_ids]
        res = [i for j in jobs for i in j.reserve_ids]
        self._existing, self._reserved = (
            await self.log.prefetch(ids, res) if ids or res else ({}, {})
        )
        batch = _Batch(self.state)
        resolvers: list[tuple[_Job, Callable[[int], Any]]] = []
        for job in jobs:
            mark = len(batch.events)
            try:
                resolvers.append((job, job.plan(batch)))
            except SynvoiceError as exc:
                if len(batch.events) != mark:  # plans validate before adding; be safe anyway
                    raise
                if not job.future.done():  # its caller may be gone (cancelled)
                    job.future.set_exception(exc)
        base = self.log.head
        sealed = self.log.seal(batch.events)
        self.state.data_bytes += sum(len(r.body) for _, r in sealed)
        side = (
            [
                *batch.side,
                (
                    "INSERT INTO meta(key, value) VALUES ('state', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    [(codec.pack(self.state.to_snapshot()),)],
                ),
            ]
            if sealed or batch.side
            else []
        )
        settling: asyncio.Future[None] | None = None
        if batch.engine_events:
            settling = self._settling = asyncio.get_running_loop().create_future()
        try:
            await self.log.append(sealed, side, batch.ids)
        finally:
            if settling is not None:
                settling.set_result(None)
                if self._settling is settling:
                    self._settling = None
        # Committed: from here on nothing may raise to the write loop (it would
        # commit these jobs again one by one).
        for job, resolve in resolvers:
            if not job.future.done():
                try:
                    job.future.set_result(resolve(base))
                except Exception as exc:
                    log.exception("building a reply after commit failed")
                    job.future.set_exception(SynvoiceError("internal", f"reply failed: {exc}"))
        if sealed:
            for listener in self.listeners:
                try:
                    listener(sealed)
                except Exception:
                    log.exception("commit listener failed")


def _fail(job: _Job, exc: Exception) -> None:
    if not job.future.done():
        job.future.set_exception(SynvoiceError("internal", f"commit failed: {exc}"))


async def load_state(log_: EventLog) -> EngineState:
    """The snapshot stored with the last commit (or an empty state for a new log)."""
    raw = await log_.get_meta("state")
    if raw is None:
        if log_.head:
            # A log without a snapshot (e.g. copied from elsewhere): fold it.
            st = EngineState()
            async for rows in log_.iter_records():
                for r in rows:
                    st.apply(r.event(), len(r.body))
            return st
        return EngineState()
    return EngineState.from_snapshot(codec.unpack(raw))


def load_or_create_admin_secret(config: EngineConfig) -> bytes:
    p = config.admin_secret_path
    if p.exists():
        return bytes.fromhex(p.read_text().strip())
    secret = auth.new_secret()
    p.parent.mkdir(parents=True, exist_ok=True)
    p.touch(mode=0o600)
    p.write_text(secret.hex() + "\n")
    return secret


def _version() -> str:
    from engine import __version__

    return __version__


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


def _int(req: dict[str, Any], key: str, default: int, minimum: int = 0) -> int:
    v = req.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum or v > 2**62:
        raise SynvoiceError("bad_request", f"'{key}' must be an integer >= {minimum}")
    return v
