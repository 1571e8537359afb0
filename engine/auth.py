"""Request authentication: HMAC-SHA256 over subject, timestamp, nonce and body.

A device holds ``device_id`` and a secret issued at enrollment. Every request
carries four headers; the engine recomputes the signature with its copy of the
secret. The timestamp bounds replays of a captured request to a short window;
inside it the nonce (random per request, signed) lets the engine refuse a
second copy of a request that is not idempotent (``engine.replay_guard``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping

from engine.errors import SynvoiceError

HDR_DEVICE = "Synvoice-Device"
HDR_TIME = "Synvoice-Time"
HDR_SIG = "Synvoice-Signature"
HDR_NONCE = "Synvoice-Nonce"
MAX_SKEW_SECONDS = 300
_NONCE_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-")


def new_secret() -> bytes:
    return secrets.token_bytes(32)


# One keyed HMAC per secret, copied per request: creating one looks the digest
# up in OpenSSL 3 each time, which costs more than hashing a small request.
_KEYED: dict[bytes, hmac.HMAC] = {}
_KEYED_MAX = 4096


def new_nonce() -> str:
    return secrets.token_hex(16)


def valid_nonce(nonce: str) -> bool:
    return 16 <= len(nonce) <= 64 and all(c in _NONCE_CHARS for c in nonce)


def signature(secret: bytes, subject: str, timestamp: int, body: bytes, nonce: str) -> str:
    keyed = _KEYED.get(secret)
    if keyed is None:
        if len(_KEYED) >= _KEYED_MAX:
            _KEYED.clear()
        keyed = _KEYED[secret] = hmac.new(secret, digestmod=hashlib.sha256)
    h = keyed.copy()
    h.update(f"{subject}\n{timestamp}\n{nonce}\n".encode())
    h.update(body)
    return h.hexdigest()


def sign(device_id: str, secret: bytes, subject: str, body: bytes) -> dict[str, str]:
    ts = int(time.time())
    nonce = new_nonce()
    return {
        HDR_DEVICE: device_id,
        HDR_TIME: str(ts),
        HDR_NONCE: nonce,
        HDR_SIG: signature(secret, subject, ts, body, nonce),
    }


def verify(
    headers: Mapping[str, str] | None,
    subject: str,
    body: bytes,
    secret_of: Callable[[str], bytes | None],
    now: float | None = None,
) -> str:
    """Return the authenticated device id or raise ``unauthorized``."""
    if not headers:
        raise SynvoiceError("unauthorized", "request is not signed (missing Synvoice-* headers)")
    device = headers.get(HDR_DEVICE)
    ts_raw = headers.get(HDR_TIME)
    sig = headers.get(HDR_SIG)
    nonce = headers.get(HDR_NONCE)
    if not device or not ts_raw or not sig or not nonce:
        raise SynvoiceError("unauthorized", "request is not signed (missing Synvoice-* headers)")
    try:
        # Bounded: a 400-digit time would overflow the float comparison below.
        ts = int(ts_raw) if len(ts_raw) <= 20 else None
    except ValueError:
        ts = None
    if ts is None:
        raise SynvoiceError("unauthorized", "Synvoice-Time is not an integer of seconds")
    if not valid_nonce(nonce):
        raise SynvoiceError("unauthorized", "Synvoice-Nonce must be 16-64 of A-Z, a-z, 0-9, _, -")
    current = time.time() if now is None else now
    if abs(current - ts) > MAX_SKEW_SECONDS:
        raise SynvoiceError("unauthorized", "request timestamp outside the allowed window")
    secret = secret_of(device)
    if secret is None:
        raise SynvoiceError("unauthorized", f"unknown device {device!r}")
    if not hmac.compare_digest(signature(secret, subject, ts, body, nonce), sig):
        raise SynvoiceError("unauthorized", "bad signature")
    return device
