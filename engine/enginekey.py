"""The engine's own Ed25519 key: ``DATA/engine.key`` (PEM, 0600), beside the log.

It signs the checkpoints (``engine.checkpoints``) and keys the seal of the state
snapshot. Kept out of the log file, so whoever edits the log alone cannot
re-sign or re-seal; whoever holds the data folder holds the key (README,
"Tamper evidence").
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY_FILE = "engine.key"


def load_or_create_key(data_dir: Path) -> Ed25519PrivateKey:
    path = data_dir / KEY_FILE
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise RuntimeError(f"{path} is not an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return key


def snapshot_key(key: Ed25519PrivateKey) -> bytes:
    """The MAC key of the state snapshot's seal, derived from the engine key."""
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return hashlib.sha256(b"synvoice-snapshot-key\n" + raw).digest()
