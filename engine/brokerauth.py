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
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # one NATS subject token
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
    return f"_INBOX.{user}" if _TOKEN.match(user) else None


# --- permissions and the generated file (pure) -----------------------------------------


def device_permissions(device_id: str) -> dict[str, Any]:
    return {
        "publish": {"allow": [*DEVICE_PUBLISH, *DISCOVERY]},
        "subscribe": {"allow": [f"_INBOX.{device_id}.>", protocol.HEAD]},
    }


def integration_permissions(name: str) -> dict[str, Any]:
    s = protocol.STREAM
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


def render_auth(
    *,
    engine_pw: str,
    admin_pw: str,
    probe_pw: str,
    devices: Iterable[tuple[str, str]],
    integrations: Iterable[tuple[str, str]],
) -> str:
    """The ``authorization`` block (nats-server accepts JSON values)."""
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
    for name, pw in integrations:
        users.append(
            {
                "user": integration_user(name),
                "password": pw,
                "permissions": integration_permissions(name),
            }
        )
    lines = ",\n".join("    " + json.dumps(u, sort_keys=True) for u in users)
    return (
        "# Generated by the Synvoice engine from its state; rewritten on every change.\n"
        "# Do not edit: enroll, revoke and `synvoice integration` change it.\n"
        f"authorization {{\n  users = [\n{lines}\n  ]\n}}\n"
    )
