"""Broker-level security for the embedded nats-server.

The engine writes the broker's users from its own state (``DATA/nats/auth.conf``,
mode 0600) and reloads nats-server (SIGHUP to the process it started) whenever
devices or integrations change:

- ``synvoice-engine``: the engine itself, full rights.
- ``synvoice-admin``: the admin CLI (holds ``admin.secret``), full rights.
- one user per active device, named by its device id, that may only publish
  the engine's device requests (push, pull, numbers, status) and subscribe to
  its own reply inbox (``_INBOX.<device id>.>``) and the head notification;
- one user per integration (``int-<name>``) that may only read the event
  stream through JetStream consumers (create/info/next/ack/delete);
- ``synvoice-probe``: no rights; its password changes on every reload, so a
  successful probe login proves the new users are in force.

Passwords are HMAC-SHA256 derivations: a device's from its enrollment secret
(the token carries that secret, so nothing else is given to the device), the
others from the admin secret. nats-server drops the connections of users that a
reload removed: revoking a device cuts it off the broker.

Pure functions first (rendering, permissions); the ``BrokerAuth`` manager does I/O.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import protocol
from engine.errors import SynvoiceError

if TYPE_CHECKING:
    from engine.core import EngineCore
    from engine.natsproc import NatsServer

log = logging.getLogger("synvoice.brokerauth")

ENGINE_USER = "synvoice-engine"
ADMIN_USER = "synvoice-admin"
PROBE_USER = "synvoice-probe"
INTEGRATION_PREFIX = "int-"
AUTH_FILE = "auth.conf"
SERVER_FILE = "broker.conf"

# What a device may publish: exactly the engine's device requests.
DEVICE_PUBLISH = (protocol.PUSH, protocol.PULL, protocol.NUMBERS, protocol.STATUS)
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # one NATS subject token


def derive(secret: bytes, label: str) -> str:
    return hmac.new(secret, label.encode(), hashlib.sha256).hexdigest()


def device_password(secret: bytes) -> str:
    return derive(secret, "nats:device")


def engine_password(admin_secret: bytes) -> str:
    return derive(admin_secret, "nats:engine")


def admin_password(admin_secret: bytes) -> str:
    return derive(admin_secret, "nats:admin")


def integration_user(name: str) -> str:
    return INTEGRATION_PREFIX + name


def integration_password(admin_secret: bytes, name: str, credential_id: str) -> str:
    return derive(admin_secret, f"nats:integration:{name}:{credential_id}")


def inbox_prefix(user: str) -> str | None:
    """The reply-inbox prefix a broker user must use (None: not subject-safe)."""
    return f"_INBOX.{user}" if _TOKEN.match(user) else None


# --- permissions and the generated file (pure) -----------------------------------------


def device_permissions(device_id: str) -> dict[str, Any]:
    return {
        "publish": {"allow": list(DEVICE_PUBLISH)},
        "subscribe": {"allow": [f"_INBOX.{device_id}.>", protocol.HEAD]},
    }


def integration_permissions(name: str) -> dict[str, Any]:
    """Read the mirror in the integration's own account (see "accounts" below)."""
    s = protocol.INTEGRATION_STREAM
    api = "$JS.API"
    return {
        "publish": {
            "allow": [
                f"{api}.INFO",
                f"{api}.STREAM.NAMES",
                f"{api}.STREAM.INFO.{s}",
                f"{api}.STREAM.MSG.GET.{s}",
                f"{api}.CONSUMER.CREATE.{s}",
                f"{api}.CONSUMER.CREATE.{s}.>",
                f"{api}.CONSUMER.DURABLE.CREATE.{s}.>",
                f"{api}.CONSUMER.INFO.{s}.>",
                f"{api}.CONSUMER.NAMES.{s}",
                f"{api}.CONSUMER.LIST.{s}",
                f"{api}.CONSUMER.MSG.NEXT.{s}.>",
                f"{api}.CONSUMER.DELETE.{s}.>",
                f"$JS.ACK.{s}.>",
                f"$JS.FC.{s}.>",  # flow-control replies of push consumers
                # The one thing an integration may send: sales for the Invoice
                # Manager (validated and recorded by the engine, never raw events).
                protocol.BILLING_SALES_IN,
            ]
        },
        "subscribe": {"allow": [f"_INBOX.{integration_user(name)}.>", protocol.HEAD]},
    }


def _no_rights() -> dict[str, Any]:
    return {"publish": {"deny": [">"]}, "subscribe": {"deny": [">"]}}


# --- accounts: integrations are isolated from the engine's subjects ----------------------
#
# nats-server does not check the deliver subject of a push consumer against the
# creating user's permissions, nor can a subject permission see a consumer's
# config: with the engine's account, an integration could have the broker deliver
# the stream into ``synvoice.v1.head``, a device's inbox or the engine's push
# subject, and use other integrations' consumers. So each integration gets an
# account of its own: the engine's account (SYNVOICE) exports only what an
# integration needs (the sales intake, the head notification, and, for its
# account alone, what a mirror of SYNVOICE_EVENTS needs); the engine keeps that
# mirror in the integration's account under the same stream name. Whatever an
# integration does with JetStream then happens in its own account: its consumers
# are its own and can deliver nowhere else.

ENGINE_ACCOUNT = "SYNVOICE"
MIRROR_API = "$JS.synvoice.API"  # the engine account's consumer API, as integrations import it
MIRROR_USER_PREFIX = "synvoice-mirror-"  # the engine's own user in an integration's account


def integration_account(name: str) -> str:
    return f"integration-{name}"


def mirror_user(name: str) -> str:
    return MIRROR_USER_PREFIX + name


def mirror_password(admin_secret: bytes, name: str) -> str:
    return derive(admin_secret, f"nats:mirror:{name}")


def mirror_deliver(name: str) -> str:
    return f"synvoice.mirror.{name}"


def _engine_exports(names: list[str]) -> list[dict[str, Any]]:
    s = protocol.STREAM
    out: list[dict[str, Any]] = [
        {"service": protocol.BILLING_SALES_IN},
        {"stream": protocol.HEAD},
    ]
    if names:
        accounts = [integration_account(n) for n in names]
        for subject in (
            f"$JS.API.CONSUMER.CREATE.{s}",
            f"$JS.API.CONSUMER.CREATE.{s}.>",
            f"$JS.API.CONSUMER.INFO.{s}.>",
            f"$JS.API.CONSUMER.DELETE.{s}.>",
            f"$JS.FC.{s}.>",
        ):
            out.append({"service": subject, "accounts": accounts})
        for n in names:
            out.append({"stream": mirror_deliver(n) + ".>", "accounts": [integration_account(n)]})
    return out


def _integration_imports(name: str) -> list[dict[str, Any]]:
    s = protocol.STREAM
    eng = ENGINE_ACCOUNT
    out: list[dict[str, Any]] = [
        {"service": {"account": eng, "subject": protocol.BILLING_SALES_IN}},
        {"stream": {"account": eng, "subject": protocol.HEAD}},
        {"stream": {"account": eng, "subject": mirror_deliver(name) + ".>"}},
        {"service": {"account": eng, "subject": f"$JS.FC.{s}.>"}},
    ]
    for tail in (f"CREATE.{s}", f"CREATE.{s}.>", f"INFO.{s}.>", f"DELETE.{s}.>"):
        out.append(
            {
                "service": {"account": eng, "subject": f"$JS.API.CONSUMER.{tail}"},
                "to": f"{MIRROR_API}.CONSUMER.{tail}",
            }
        )
    return out


def mirror_permissions() -> dict[str, Any]:
    """The engine's user in an integration's account: creates and inspects the
    mirror stream, nothing else (the mirror's own traffic is the server's)."""
    s = protocol.INTEGRATION_STREAM
    return {
        "publish": {
            "allow": [f"$JS.API.STREAM.CREATE.{s}", f"$JS.API.STREAM.INFO.{s}", "$JS.API.INFO"]
        },
        "subscribe": {"allow": ["_INBOX.>"]},
    }


def render_auth(
    *,
    engine_pw: str,
    admin_pw: str,
    probe_pw: str,
    devices: Iterable[tuple[str, str]],
    integrations: Iterable[tuple[str, str]],
    mirror_passwords: dict[str, str] | None = None,
) -> str:
    """The ``accounts`` block (nats-server accepts JSON values): the engine's
    account with the engine, admin, probe and device users, and one account per
    integration with its user (and the engine's mirror user when given)."""
    users: list[dict[str, Any]] = [
        {"user": ENGINE_USER, "password": engine_pw},
        {"user": ADMIN_USER, "password": admin_pw},
        {"user": PROBE_USER, "password": probe_pw, "permissions": _no_rights()},
    ]
    for device_id, pw in devices:
        if not _TOKEN.match(device_id):  # never produce a subject we cannot confine
            log.warning("device id %r is not subject-safe: no broker user", device_id)
            continue
        perms = device_permissions(device_id)
        users.append({"user": device_id, "password": pw, "permissions": perms})
    ints = [(n, pw) for n, pw in integrations if _TOKEN.match(n)]
    accounts: dict[str, Any] = {
        ENGINE_ACCOUNT: {
            "jetstream": "enabled",
            "users": users,
            "exports": _engine_exports([n for n, _ in ints]),
        }
    }
    for name, pw in ints:
        int_users: list[dict[str, Any]] = [
            {
                "user": integration_user(name),
                "password": pw,
                "permissions": integration_permissions(name),
            }
        ]
        mpw = (mirror_passwords or {}).get(name)
        if mpw is not None:
            int_users.append(
                {"user": mirror_user(name), "password": mpw, "permissions": mirror_permissions()}
            )
        accounts[integration_account(name)] = {
            # One stream (the mirror), bounded consumers and memory.
            "jetstream": {"max_mem": 64 * 1024 * 1024, "max_streams": 1, "max_consumers": 128},
            "users": int_users,
            "imports": _integration_imports(name),
        }
    body = ",\n".join(
        f"  {json.dumps(acc)}: {json.dumps(conf, sort_keys=True)}" for acc, conf in accounts.items()
    )
    return (
        "# Generated by the Synvoice engine from its state; rewritten on every change.\n"
        "# Do not edit: enroll, revoke and `synvoice integration` change it.\n"
        f"accounts {{\n{body}\n}}\n"
    )


def render_server(
    base: Path, conf_dir: Path, auth: bool, tls: tuple[Path, Path] | None = None
) -> str:
    """The embedded broker's config: deploy/nats-server.conf plus auth (and TLS)."""
    rel = os.path.relpath(base.resolve(), conf_dir.resolve())  # nats-server: relative includes
    out = [
        "# Generated by the Synvoice engine at each start: the single-node broker",
        f"# ({base.name}) plus the broker users the engine generates ({AUTH_FILE}).",
        f"include {json.dumps(rel)}",
    ]
    if auth:
        out.append(f"include {json.dumps(AUTH_FILE)}")
    if tls is not None:
        cert, key = tls
        out += [
            "tls {",
            f"  cert_file: {json.dumps(str(cert.resolve()))}",
            f"  key_file: {json.dumps(str(key.resolve()))}",
            "  timeout: 5",
            "}",
        ]
    return "\n".join(out) + "\n"


def write_private(path: Path, text: str) -> None:
    """Replace a file atomically, readable by its owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


# --- client side ---------------------------------------------------------------------------


def tls_context(ca_pem: str | None = None, ca_file: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None, cadata=ca_pem)
    return ctx


def admin_nats_options(data_dir: Path, admin_secret: bytes | None = None) -> dict[str, Any]:
    """``nats.connect`` options for the operator's tools on the server machine:
    broker credentials and TLS, as the running engine recorded in engine.json."""
    runtime = data_dir / "engine.json"
    try:
        info = json.loads(runtime.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    opts: dict[str, Any] = {}
    if info.get("broker_auth"):
        if admin_secret is None:
            admin_secret = bytes.fromhex((data_dir / "admin.secret").read_text().strip())
        opts.update(user=ADMIN_USER, password=admin_password(admin_secret))
    if info.get("tls_ca"):
        opts["tls"] = tls_context(ca_file=Path(info["tls_ca"]))
    return opts


# --- the manager ----------------------------------------------------------------------------


class BrokerAuth:
    """Keeps ``auth.conf`` in step with the engine state and reloads nats-server."""

    def __init__(self, conf_dir: Path, core: EngineCore, tls: ssl.SSLContext | None) -> None:
        assert core.admin_secret is not None
        self.conf_dir = conf_dir
        self.core = core
        self.admin_secret = core.admin_secret
        self.tls = tls
        self.server: NatsServer | None = None
        self._generation = 0
        self._wanted = 0  # bumped by every change request
        self._applied = 0
        self._lock = asyncio.Lock()
        self.reloads = 0
        self._accounts: frozenset[str] = frozenset()  # integrations the broker runs with

    @property
    def path(self) -> Path:
        return self.conf_dir / AUTH_FILE

    def engine_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"user": ENGINE_USER, "password": engine_password(self.admin_secret)}
        if self.tls is not None:
            opts["tls"] = self.tls
        return opts

    def admin_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"user": ADMIN_USER, "password": admin_password(self.admin_secret)}
        if self.tls is not None:
            opts["tls"] = self.tls
        return opts

    def _probe_password(self) -> str:
        return derive(self.admin_secret, f"nats:probe:{os.getpid()}:{self._generation}")

    def write(self) -> None:
        """Render the users of the current state into auth.conf."""
        st = self.core.state
        devices = []
        for device_id, info in sorted(st.devices.items()):
            secret = self.core.credential(device_id)
            if not info.revoked and secret is not None:
                devices.append((device_id, device_password(secret)))
        integrations = [
            (name, integration_password(self.admin_secret, name, cred))
            for name, cred in sorted(st.integrations.items())
        ]
        self._generation += 1
        if self.server is None:  # the broker starts with these accounts
            self._accounts = frozenset(name for name, _ in integrations)
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        write_private(
            self.path,
            render_auth(
                engine_pw=engine_password(self.admin_secret),
                admin_pw=admin_password(self.admin_secret),
                probe_pw=self._probe_password(),
                devices=devices,
                integrations=integrations,
                mirror_passwords={
                    name: mirror_password(self.admin_secret, name) for name, _ in integrations
                },
            ),
        )

    async def refresh(self, timeout: float = 15.0) -> None:
        """Write the users of the current state, reload nats-server and wait
        until the new users are in force. Concurrent callers share a reload."""
        self._wanted += 1
        wanted = self._wanted
        async with self._lock:
            if self._applied >= wanted:
                return  # a reload that started after our change covered it
            target = self._wanted
            self.write()
            if self.server is None:
                self._applied = target
                return
            self.server.reload()
            await self._wait_for_probe(timeout)
            accounts = frozenset(self.core.state.integrations)
            if accounts != self._accounts:
                # nats-server (2.15) wires the imports of an account that a reload
                # added only at the next reload: without this one the new
                # integration's sales requests and mirror get no responders.
                self.write()
                self.server.reload()
                await self._wait_for_probe(timeout)
                self._accounts = accounts
            self.reloads += 1
            self._applied = target
            await self.ensure_mirrors()

    async def ensure_mirrors(self) -> None:
        """Create the mirror of the event stream in each integration's account
        (idempotent: an existing mirror is left as it is)."""
        import nats
        from nats.js.api import ExternalStream, StreamConfig, StreamSource

        if self.server is None:
            return
        for name in sorted(self.core.state.integrations):
            if not _TOKEN.match(name):
                continue
            try:
                nc = await nats.connect(
                    self.server.url,
                    user=mirror_user(name),
                    password=mirror_password(self.admin_secret, name),
                    tls=self.tls,
                    allow_reconnect=False,
                    connect_timeout=5,
                )
            except Exception as exc:
                log.warning("cannot reach the account of integration %r: %s", name, exc)
                continue
            try:
                js = nc.jetstream()
                try:
                    await js.stream_info(protocol.INTEGRATION_STREAM)
                except Exception:
                    source = StreamSource(
                        name=protocol.STREAM,
                        external=ExternalStream(api=MIRROR_API, deliver=mirror_deliver(name)),
                    )
                    await js.add_stream(
                        StreamConfig(name=protocol.INTEGRATION_STREAM, mirror=source)
                    )
            except Exception as exc:
                log.warning("mirror for integration %r not created: %s", name, exc)
            finally:
                await nc.close()

    async def _wait_for_probe(self, timeout: float) -> None:
        import nats

        assert self.server is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        password = self._probe_password()

        async def quiet(_e: Exception) -> None:
            pass

        while True:
            try:
                nc = await nats.connect(
                    self.server.url,
                    user=PROBE_USER,
                    password=password,
                    tls=self.tls,
                    allow_reconnect=False,
                    connect_timeout=2,
                    max_reconnect_attempts=0,
                    error_cb=quiet,
                )
                await nc.close()
                return
            except Exception as exc:
                if loop.time() > deadline:
                    raise SynvoiceError(
                        "unavailable",
                        f"nats-server did not apply the new broker users within {timeout}s "
                        f"({exc}); see {self.server.log_file}",
                    ) from None
                await asyncio.sleep(0.02)
