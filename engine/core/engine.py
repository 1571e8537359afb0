"""``EngineCore``: the engine without its transport.

``handle(subject, headers, body)`` takes the raw request and returns the raw
reply (or raises ``SynvoiceError``): it checks the size and the signature,
then dispatches by the routing table (``engine.core.routes``) to the
handlers (push, pull, numbers, admin, status), whose writes go through the
group-commit writer (``engine.core.writer``). ``engine.service`` wires it to
NATS; tests and the CLI may call it directly.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine import auth, codec, editions, license, protocol
from engine.config import EngineConfig
from engine.core import push, status
from engine.core.base import Caller
from engine.core.routes import ADMIN_PREFIX, BY_SUBJECT
from engine.core.writer import Batch, CommitListener, Writer, load_state
from engine.enginekey import load_or_create_key, snapshot_key
from engine.errors import SynvoiceError
from engine.events import Event
from engine.log import EventLog
from engine.messages import PushReply, PushRequest, StatusReply, encode
from engine.replay_guard import PENDING, Nonce, ReplayGuard
from engine.state import EngineState


class EngineCore:
    def __init__(
        self,
        config: EngineConfig,
        log_: EventLog,
        state: EngineState,
        engine_key: Ed25519PrivateKey | None = None,
    ) -> None:
        self.config = config
        self.log = log_
        # Signs checkpoints (engine.anchor) and keys the snapshot seal.
        self.engine_key = engine_key or load_or_create_key(config.data_dir)
        self.snapshot_key = snapshot_key(self.engine_key)
        self.checkpoint: dict[str, Any] | None = None  # the latest, sent with pulls
        self.writer = Writer(log_, state, config.max_batch_events, self.snapshot_key)
        self.admin_secret: bytes | None = None
        # Enrollment secrets by device id (the engine signs nothing with them:
        # it verifies the devices' requests and derives their broker passwords).
        self.secrets: dict[str, bytes] = {}
        self._closed = False
        # Plugins' parts of the status reply (e.g. the live views worker), by key:
        # each key is a ``StatusReply`` field.
        self.status_parts: dict[str, Callable[[], msgspec.Struct]] = {}
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

    @property
    def state(self) -> EngineState:
        """The engine state as of the last planned job (the writer owns it)."""
        return self.writer.state

    @property
    def listeners(self) -> list[CommitListener]:
        """Called with the sealed events after each commit."""
        return self.writer.listeners

    # --- life cycle -------------------------------------------------------------------

    @classmethod
    async def open(cls, config: EngineConfig) -> EngineCore:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        log_ = await EventLog.open(config.log_path, sync=config.sync)
        key = load_or_create_key(config.data_dir)
        core = cls(config, log_, await load_state(log_, snapshot_key(key)), key)
        core.secrets = await log_.credentials()
        core.replay.load(await log_.nonces(time.time()))
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
        self.writer.start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.writer.stop()
        await self.log.close()

    # --- the request entry point ---------------------------------------------------

    async def handle(self, subject: str, headers: dict[str, str] | None, body: bytes) -> bytes:
        if len(body) > self.config.max_request_bytes:
            raise SynvoiceError(
                "too_large",
                f"request is {len(body)} bytes, limit is {self.config.max_request_bytes}",
            )
        caller, nonce = self.authenticate(subject, headers, body)
        # Set for this request's task only: the writer stores it with the effect.
        token = PENDING.set(nonce)
        try:
            return await self._dispatch(subject, caller, body)
        finally:
            PENDING.reset(token)

    async def _dispatch(self, subject: str, caller: Caller, body: bytes) -> bytes:
        route = BY_SUBJECT.get(subject)
        if route is not None and route.decode is None:  # push: the handler reads the body
            reply = await route.handle(self, caller, body)
        else:
            req = codec.unpack_request(body, self.config.max_request_bytes)
            admin_only = route.admin if route is not None else subject.startswith(ADMIN_PREFIX)
            if admin_only and not caller.admin:
                raise SynvoiceError("forbidden", "admin requests need the admin credential")
            if route is None or route.decode is None:
                raise SynvoiceError("not_found", f"no endpoint {subject!r}")
            if route.check is not None:
                route.check(self, caller)
            reply = await route.handle(self, caller, route.decode(req))
        return reply if isinstance(reply, bytes) else encode(reply)

    def authenticate(
        self, subject: str, headers: dict[str, str] | None, body: bytes
    ) -> tuple[Caller, Nonce | None]:
        """The caller, and the nonce of a guarded request (``engine.replay_guard``)."""
        device = auth.verify(headers, subject, body, self._secret_of)
        assert headers is not None  # verify() refuses unsigned requests
        nonce = self.replay.check(subject, headers, device)
        if device == protocol.ADMIN_DEVICE:
            return Caller(device, protocol.ADMIN_DEVICE, admin=True), nonce
        info = self.state.devices.get(device)
        if info is None:
            raise SynvoiceError("unauthorized", f"unknown device {device!r}")
        if info.revoked:
            raise SynvoiceError("revoked", f"device {device!r} was revoked")
        return Caller(device, info.user), nonce

    def _secret_of(self, device_id: str) -> bytes | None:
        if device_id == protocol.ADMIN_DEVICE:
            return self.admin_secret
        return self.secrets.get(device_id)

    def credential(self, device_id: str) -> bytes | None:
        """A device's enrollment secret (its broker password derives from it)."""
        return self.secrets.get(device_id)

    # --- for the engine's own callers (plugins, the CLI) ------------------------------

    async def push(self, caller: Caller, req: PushRequest) -> PushReply:
        """Push events as ``caller`` (e.g. the billing intake, as the engine)."""
        return await push.push(self, caller, req)

    def status(self) -> StatusReply:
        return status.status(self)

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

    async def append_engine_events(self, events: list[Event]) -> None:
        """Commit engine events through the writer (e.g. the log rollback record)."""

        def plan(batch: Batch) -> Callable[[int], Any]:
            for ev in events:
                batch.add(ev)
            return lambda _base: {}

        await self.writer.submit(plan, len(events))


def load_or_create_admin_secret(config: EngineConfig) -> bytes:
    p = config.admin_secret_path
    if p.exists():
        return bytes.fromhex(p.read_text().strip())
    secret = auth.new_secret()
    p.parent.mkdir(parents=True, exist_ok=True)
    p.touch(mode=0o600)
    p.write_text(secret.hex() + "\n")
    return secret
