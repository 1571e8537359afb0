"""Enrollment tokens: what ``synvoice enroll`` prints and ``synvoice device init`` takes.

A token is ``svd2.`` + base64url without padding of a msgpack map: ``v`` (2),
``url``, ``device_id``, ``secret`` (bin, 32 bytes), ``user``, ``slot``,
``inbox_prefix``, and when the broker checks users ``broker_user`` and
``broker_password``; ``tls_ca`` (PEM) when the broker uses TLS. It carries
what a client in any language needs to connect, so nothing is derived on the
device side. It is a credential: whoever holds it can act as that device until
revoked; ``synvoice token show`` prints one without its secrets.

Version 1 (``svd1.``, still read) carried ``broker_auth`` instead: the broker
user is the device id, its password hex(HMAC-SHA256(secret, "nats:device"))
(``engine.brokerauth.device_password``, stable: the broker's users file uses
the same derivation) and the inbox prefix ``_INBOX.<device id>``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from engine import brokerauth, brokermanager, codec
from engine.errors import SynvoiceError
from engine.messages import EnrollReply

PREFIX = "svd2."
PREFIX_V1 = "svd1."
VERSION = 2


@dataclass(frozen=True)
class Enrollment:
    url: str
    device_id: str
    secret: bytes
    user: str
    slot: int
    broker_auth: bool = False  # the broker checks per-device credentials
    tls_ca: str | None = None  # PEM of the CA the broker's certificate is signed by

    @classmethod
    def from_reply(cls, url: str, reply: EnrollReply) -> Enrollment:
        """From the engine's enroll reply (``EngineClient.enroll``)."""
        return cls(
            url=url,
            device_id=reply.device_id,
            secret=bytes.fromhex(reply.secret),
            user=reply.user,
            slot=reply.slot,
            broker_auth=reply.broker_auth,
            tls_ca=reply.tls_ca or None,
        )

    def nats_options(self) -> dict[str, Any]:
        """Extra ``nats.connect`` options this device needs (broker credentials, TLS).

        The reply inbox is ``_INBOX.<device id>``: the broker lets a device
        receive replies there and nowhere else.
        """
        opts: dict[str, Any] = {}
        prefix = brokerauth.inbox_prefix(self.device_id)
        if prefix is not None:
            opts["inbox_prefix"] = prefix
        if self.broker_auth:
            opts["user"] = self.device_id
            opts["password"] = brokerauth.device_password(self.secret)
        if self.tls_ca:
            opts["tls"] = brokermanager.tls_context(ca_pem=self.tls_ca)
        return opts

    def fields(self) -> dict[str, Any]:
        """The token's map (version 2): everything spelled out."""
        out: dict[str, Any] = {
            "v": VERSION,
            "url": self.url,
            "device_id": self.device_id,
            "secret": self.secret,
            "user": self.user,
            "slot": self.slot,
            "inbox_prefix": brokerauth.inbox_prefix(self.device_id) or "_INBOX",
        }
        if self.broker_auth:
            out["broker_user"] = self.device_id
            out["broker_password"] = brokerauth.device_password(self.secret)
        if self.tls_ca:
            out["tls_ca"] = self.tls_ca
        return out

    def token(self) -> str:
        return PREFIX + base64.urlsafe_b64encode(codec.pack(self.fields())).decode().rstrip("=")

    def public(self) -> dict[str, Any]:
        """What ``synvoice token show`` prints: the token's fields, secrets left out."""
        out = {k: v for k, v in self.fields().items() if k not in ("secret", "broker_password")}
        out["secret"] = "(hidden: 32 bytes)"
        if self.broker_auth:
            out["broker_password"] = "(hidden)"
        return out


def parse_token(token: str) -> Enrollment:
    token = token.strip()
    prefix = next((p for p in (PREFIX, PREFIX_V1) if token.startswith(p)), None)
    if prefix is None:
        raise SynvoiceError("bad_request", f"not an enrollment token (expected '{PREFIX}…')")
    body = token[len(prefix) :]
    try:
        raw = codec.unpack(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        ca = raw.get("tls_ca")
        device_id = str(raw["device_id"])
        secret = bytes(raw["secret"])
        if prefix == PREFIX:
            broker_auth = "broker_user" in raw
            if broker_auth and (
                raw["broker_user"] != device_id
                or raw.get("broker_password") != brokerauth.device_password(secret)
            ):
                raise ValueError("broker credentials do not match the device")
        else:
            broker_auth = bool(raw.get("broker_auth", False))
        return Enrollment(
            url=str(raw["url"]),
            device_id=device_id,
            secret=secret,
            user=str(raw["user"]),
            slot=int(raw["slot"]),
            broker_auth=broker_auth,
            tls_ca=str(ca) if ca else None,
        )
    except Exception:
        raise SynvoiceError("bad_request", "enrollment token is damaged") from None
