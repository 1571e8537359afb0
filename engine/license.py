"""Registration keys: Ed25519-signed edition grants.

A key is ``svk1.`` + base64url(payload) + ``.`` + base64url(signature), where
the payload is compact JSON::

    {"v": 1, "edition": "single", "licensee": "Acme Ltd", "issued": "2026-11-21",
     "expires": null, "key_id": "3f9c…", "max_users": null, ...}

The vendor signs with a private key that never leaves the vendor
(``synvoice vendor keygen`` / ``vendor issue``); a server trusts the vendor
public key built in below, plus one given by ``EngineConfig.vendor_public_key``
(``SYNVOICE_VENDOR_PUBLIC_KEY``) for tests, benchmarks and private builds.
Any change to the payload, or a signature by any other key, fails verification.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from engine import editions
from engine.errors import SynvoiceError

PREFIX = "svk1."
MAX_KEY_CHARS = 4096

# The Synvoice vendor key (public half; the private half is kept by the vendor).
VENDOR_PUBLIC_KEY = "zv596cKIberMk9vW5gUN0tTfUTGMI7oSjKe0VYko2Ms="

PRIVATE_FILE = "vendor-private.pem"
PUBLIC_FILE = "vendor-public.txt"


@dataclass(frozen=True)
class License:
    edition: str
    licensee: str
    issued: date
    expires: date | None
    key_id: str
    fingerprint: str  # sha256 of the key string: identifies it without revealing it
    max_users: int | None = None
    max_devices: int | None = None
    max_data_bytes: int | None = None

    def record(self) -> dict[str, Any]:
        """The fields kept in the log (``settings.registered``) and the status."""
        return {
            "edition": self.edition,
            "licensee": self.licensee,
            "issued": self.issued.isoformat(),
            "expires": self.expires.isoformat() if self.expires else None,
            "key_id": self.key_id,
            "fingerprint": self.fingerprint,
            "max_users": self.max_users,
            "max_devices": self.max_devices,
            "max_data_bytes": self.max_data_bytes,
        }


# --- keys ---------------------------------------------------------------------------


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_key_text(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def load_public_key(text: str) -> Ed25519PublicKey:
    """A public key from its base64 text (standard or url-safe)."""
    t = text.strip()
    try:
        raw = base64.b64decode(t.replace("-", "+").replace("_", "/") + "=" * (-len(t) % 4))
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error):
        raise SynvoiceError(
            "bad_request", "vendor public key must be 32 bytes of base64 (vendor-public.txt)"
        ) from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise SynvoiceError("bad_request", f"{path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SynvoiceError("bad_request", f"{path} is not an Ed25519 private key")
    return key


def keygen(out_dir: Path, force: bool = False) -> tuple[Path, Path]:
    """Write a new vendor key pair: the private key (mode 0600) and the public key."""
    out_dir.mkdir(parents=True, exist_ok=True)
    priv, pub = out_dir / PRIVATE_FILE, out_dir / PUBLIC_FILE
    if not force and (priv.exists() or pub.exists()):
        raise SynvoiceError("conflict", f"{priv} or {pub} exists (use --force to replace)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = priv.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.replace(tmp, priv)
    pub.write_text(public_key_text(key.public_key()) + "\n")
    return priv, pub


def issue(
    private_key: Ed25519PrivateKey,
    edition: str,
    licensee: str,
    *,
    expires: date | None = None,
    issued: date | None = None,
    max_users: int | None = None,
    max_devices: int | None = None,
    max_data_bytes: int | None = None,
) -> str:
    """Sign a registration key for ``edition``; optional overrides of its limits."""
    ed = editions.edition(edition)
    licensee = licensee.strip()
    if not 1 <= len(licensee) <= 200:
        raise SynvoiceError("bad_request", "licensee must be 1-200 characters")
    for name, v in (
        ("max_users", max_users),
        ("max_devices", max_devices),
        ("max_data_bytes", max_data_bytes),
    ):
        if v is not None and v < 0:
            raise SynvoiceError("bad_request", f"{name} must be >= 0")
    payload = {
        "v": 1,
        "edition": ed.name,
        "licensee": licensee,
        "issued": (issued or date.today()).isoformat(),
        "expires": expires.isoformat() if expires else None,
        "key_id": secrets.token_hex(8),
        "max_users": max_users,
        "max_devices": max_devices,
        "max_data_bytes": max_data_bytes,
    }
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return PREFIX + _b64e(raw) + "." + _b64e(private_key.sign(raw))


# --- verification ---------------------------------------------------------------------


def trusted_keys(extra: str | None = None) -> list[Ed25519PublicKey]:
    keys = [load_public_key(VENDOR_PUBLIC_KEY)]
    if extra:
        keys.append(load_public_key(extra))
    return keys


def _bad(message: str) -> SynvoiceError:
    return SynvoiceError("bad_key", message)


def verify(key: str, trusted: list[Ed25519PublicKey], today: date | None = None) -> License:
    """Check a key's signature and contents; ``today`` also refuses an expired key."""
    if not isinstance(key, str):
        raise _bad("a registration key is a text string")
    key = "".join(key.split())  # tolerate line breaks from e-mail
    if len(key) > MAX_KEY_CHARS or not key.startswith(PREFIX):
        raise _bad("not a Synvoice registration key (it starts with 'svk1.')")
    parts = key[len(PREFIX) :].split(".")
    if len(parts) != 2:
        raise _bad("registration key is damaged: copy it again in full")
    try:
        raw, sig = _b64d(parts[0]), _b64d(parts[1])
    except (ValueError, binascii.Error):
        raise _bad("registration key is damaged: copy it again in full") from None
    for pk in trusted:
        try:
            pk.verify(sig, raw)
            break
        except InvalidSignature:
            continue
    else:
        raise _bad(
            "registration key is not genuine: its signature does not match "
            "(the key was altered or not issued by the vendor)"
        )
    lic = _parse_payload(raw, hashlib.sha256(key.encode()).hexdigest())
    if today is not None and lic.expires is not None and today > lic.expires:
        raise _bad(f"registration key expired on {lic.expires.isoformat()}")
    return lic


def _parse_payload(raw: bytes, fingerprint: str) -> License:
    # Signed by a trusted key, so well-formed unless the vendor tool changed:
    # still checked, a bad payload must not crash the engine.
    try:
        p = json.loads(raw)
        if p.get("v") != 1:
            raise _bad(f"registration key version {p.get('v')!r} is not supported")
        ed = editions.edition(str(p["edition"]))
        lic = License(
            edition=ed.name,
            licensee=str(p["licensee"]),
            issued=date.fromisoformat(p["issued"]),
            expires=date.fromisoformat(p["expires"]) if p.get("expires") else None,
            key_id=str(p["key_id"]),
            fingerprint=fingerprint,
            max_users=_opt_int(p.get("max_users")),
            max_devices=_opt_int(p.get("max_devices")),
            max_data_bytes=_opt_int(p.get("max_data_bytes")),
        )
    except SynvoiceError as exc:
        raise _bad(exc.message) from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise _bad("registration key content is not valid") from None
    return lic


def _opt_int(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError("limit must be a non-negative integer")
    return v


def inspect(key: str) -> dict[str, Any]:
    """The payload of a key, without verifying it (support, ``vendor show``)."""
    try:
        body = "".join(key.split())[len(PREFIX) :].split(".")[0]
        out: dict[str, Any] = json.loads(_b64d(body))
        return out
    except Exception:
        raise _bad("registration key is damaged: copy it again in full") from None


# --- a site licence for tests, benchmarks and demos -------------------------------------


@functools.cache
def dev_site_license() -> tuple[str, str]:
    """(vendor public key, key) for an unlimited "site" edition, signed by an
    ephemeral vendor key made for this process. The engine honours the key only
    when told to trust that public key (``vendor_public_key``)."""
    private = Ed25519PrivateKey.generate()
    key = issue(private, "site", "Synvoice development")
    return public_key_text(private.public_key()), key


def dev_site_env() -> dict[str, str]:
    """Environment for an engine process to run the unlimited site edition."""
    public, key = dev_site_license()
    return {"SYNVOICE_VENDOR_PUBLIC_KEY": public, "SYNVOICE_LICENSE_KEY": key}
