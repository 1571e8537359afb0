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

This module is the pure half (passwords, users and their permissions, the
rendered ``authorization`` block): no broker connection, no files.
``engine.brokermanager`` does the I/O: it writes the files, reloads nats-server
and builds connect options.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Iterable
from typing import Any

from engine import protocol

log = logging.getLogger("synvoice.brokerauth")

ENGINE_USER = "synvoice-engine"
ADMIN_USER = "synvoice-admin"
PROBE_USER = "synvoice-probe"
INTEGRATION_PREFIX = "int-"
AUTH_FILE = "auth.conf"
SERVER_FILE = "broker.conf"

# What a device may publish: exactly the engine's device requests.
DEVICE_PUBLISH = (protocol.PUSH, protocol.PULL, protocol.NUMBERS, protocol.STATUS)
TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # one NATS subject token
# Service discovery of the engine (nats.micro): $SRV.PING|INFO|STATS, for all
# services, by name, and by instance. The engine answers to inboxes only.
DISCOVERY = tuple(
    f"$SRV.{verb}{suffix}"
    for verb in ("PING", "INFO", "STATS")
    for suffix in ("", f".{protocol.SERVICE_NAME}", f".{protocol.SERVICE_NAME}.*")
)


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
    return f"_INBOX.{user}" if TOKEN.match(user) else None


# --- permissions and the generated file (pure) -----------------------------------------


def device_permissions(device_id: str) -> dict[str, Any]:
    return {
        "publish": {"allow": [*DEVICE_PUBLISH, *DISCOVERY]},
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
                *DISCOVERY,
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


def discovery_subjects() -> list[str]:
    """The engine's ``$SRV`` discovery subjects (nats.micro), with and without its
    name and instance id: integrations reach them through an account import."""
    name = protocol.SERVICE_NAME
    return [
        subject
        for verb in ("PING", "INFO", "STATS")
        for subject in (f"$SRV.{verb}", f"$SRV.{verb}.{name}", f"$SRV.{verb}.{name}.*")
    ]


def _engine_exports(names: list[str]) -> list[dict[str, Any]]:
    s = protocol.STREAM
    out: list[dict[str, Any]] = [
        {"service": protocol.BILLING_SALES_IN},
        {"stream": protocol.HEAD},
        *({"service": subject} for subject in discovery_subjects()),
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
        *({"service": {"account": eng, "subject": subject}} for subject in discovery_subjects()),
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
    """The engine's user in an integration's account: creates, inspects and (when
    the integration is removed) deletes the mirror stream, nothing else (the
    mirror's own traffic is the server's)."""
    s = protocol.INTEGRATION_STREAM
    api = "$JS.API.STREAM"
    return {
        "publish": {
            "allow": [f"{api}.CREATE.{s}", f"{api}.INFO.{s}", f"{api}.DELETE.{s}", "$JS.API.INFO"]
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
        if not TOKEN.match(device_id):  # never produce a subject we cannot confine
            log.warning("device id %r is not subject-safe: no broker user", device_id)
            continue
        perms = device_permissions(device_id)
        users.append({"user": device_id, "password": pw, "permissions": perms})
    ints = [(n, pw) for n, pw in integrations if TOKEN.match(n)]
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
