"""Where the engine may send a reply: only into the caller's own inbox.

The engine publishes replies with its own broker rights, so the reply subject
of a request is a destination the caller picks. It is accepted only when it is
the inbox of the identity the request names: ``_INBOX.<device id>.`` for a
device (the inbox its broker user may read), ``_INBOX_ADMIN.`` for the admin
credential. A request naming another device's inbox, the event stream or any
other subject gets no reply at all (and is not handled). The device named in
``Synvoice-Device`` is then authenticated by the signature, so a reply can only
reach the inbox of the device whose secret signed the request.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine import brokerauth, protocol
from engine.auth import HDR_DEVICE


def inbox_of(device_id: str) -> str | None:
    """The reply-inbox prefix of a device id (with the trailing dot), or None."""
    if device_id == protocol.ADMIN_DEVICE:
        return protocol.ADMIN_INBOX + "."
    prefix = brokerauth.inbox_prefix(device_id)
    return prefix + "." if prefix is not None else None


def reply_allowed(reply: str | None, headers: Mapping[str, str] | None) -> bool:
    """May a reply to this request go to ``reply``?"""
    if not reply or "*" in reply or ">" in reply or " " in reply:
        return False
    device = (headers or {}).get(HDR_DEVICE)
    if not device:
        # Unsigned: the engine only answers "unauthorized"; any inbox will do,
        # but never a subject outside the inboxes.
        return inbox_reply_allowed(reply)
    prefix = inbox_of(device)
    return prefix is not None and reply.startswith(prefix) and len(reply) > len(prefix)


def inbox_reply_allowed(reply: str | None, imported: bool = False) -> bool:
    """A reply subject for a request that carries no identity (the billing
    intake's sales): some inbox, never e.g. the event stream's subjects, since
    the reply is published with the engine's rights. ``imported``: also the
    ``_R_.`` subjects nats-server gives requests that arrive through an account's
    service import (an integration's), which lead back into that account only."""
    if not reply or "*" in reply or ">" in reply or " " in reply:
        return False
    prefixes = ("_INBOX.", protocol.ADMIN_INBOX + ".") + (("_R_.",) if imported else ())
    return any(reply.startswith(p) and len(reply) > len(p) for p in prefixes)
