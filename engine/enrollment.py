"""Enrollment tokens: what ``synvoice enroll`` prints and ``synvoice device init`` takes.

A token is ``svd1.`` + base64url(msgpack{url, device_id, secret, user, slot,
broker_auth?, tls_ca?}). It is a credential: whoever holds it can act as that
device until revoked. The device's broker password derives from its secret
(``engine.brokerauth``), so the token carries everything the device needs to
connect: ``nats_options()`` turns it into ``nats.connect`` options.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from engine import brokerauth, brokermanager, codec
from engine.errors import SynvoiceError
from engine.messages import EnrollReply

PREFIX = "svd1."


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

    def token(self) -> str:
        fields: dict[str, Any] = {
            "url": self.url,
            "device_id": self.device_id,
            "secret": self.secret,
            "user": self.user,
            "slot": self.slot,
        }
        if self.broker_auth:
            fields["broker_auth"] = True
        if self.tls_ca:
            fields["tls_ca"] = self.tls_ca
        return PREFIX + base64.urlsafe_b64encode(codec.pack(fields)).decode().rstrip("=")


def parse_token(token: str) -> Enrollment:
    token = token.strip()
    if not token.startswith(PREFIX):
        raise SynvoiceError("bad_request", "not an enrollment token (expected 'svd1.…')")
    body = token[len(PREFIX) :]
    try:
        raw = codec.unpack(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        ca = raw.get("tls_ca")
        return Enrollment(
            url=str(raw["url"]),
            device_id=str(raw["device_id"]),
            secret=bytes(raw["secret"]),
            user=str(raw["user"]),
            slot=int(raw["slot"]),
            broker_auth=bool(raw.get("broker_auth", False)),
            tls_ca=str(ca) if ca else None,
        )
    except Exception:
        raise SynvoiceError("bad_request", "enrollment token is damaged") from None
