"""Enrollment tokens: what ``synvoice enroll`` prints and ``synvoice device init`` takes.

A token is ``svd1.`` + base64url(msgpack{url, device_id, secret, user, slot}).
It is a credential: whoever holds it can act as that device until revoked.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from engine import codec
from engine.errors import SynvoiceError

PREFIX = "svd1."


@dataclass(frozen=True)
class Enrollment:
    url: str
    device_id: str
    secret: bytes
    user: str
    slot: int

    def nats_options(self) -> dict[str, object]:
        """Extra ``nats.connect`` options this device needs (broker credentials, TLS)."""
        return {}

    def token(self) -> str:
        raw = codec.pack(
            {
                "url": self.url,
                "device_id": self.device_id,
                "secret": self.secret,
                "user": self.user,
                "slot": self.slot,
            }
        )
        return PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_token(token: str) -> Enrollment:
    token = token.strip()
    if not token.startswith(PREFIX):
        raise SynvoiceError("bad_request", "not an enrollment token (expected 'svd1.…')")
    body = token[len(PREFIX) :]
    try:
        raw = codec.unpack(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        return Enrollment(
            url=str(raw["url"]),
            device_id=str(raw["device_id"]),
            secret=bytes(raw["secret"]),
            user=str(raw["user"]),
            slot=int(raw["slot"]),
        )
    except Exception:
        raise SynvoiceError("bad_request", "enrollment token is damaged") from None
