"""Signed checkpoints: the log's head (position, chain hash, time) signed by the engine.

A checkpoint anchors the hash chain outside the log file: whoever keeps one
(the stream, a device, an auditor's file) can later tell whether a log still
holds that record with that hash. Each check is a comparison of a log against
the checkpoints held; what it finds is a ``Finding``. Pure: no I/O (the engine's
key file and the publishing are in ``engine.anchor``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

DOMAIN = b"synvoice-checkpoint-v1\n"

FindingKind = Literal["truncated", "rewritten", "unanchored", "bad_signature", "snapshot"]


class CheckpointError(ValueError):
    """A checkpoint that does not parse or whose signature does not verify."""


@dataclass(frozen=True)
class Checkpoint:
    position: int
    hash: bytes
    time: str  # ISO 8601, UTC
    signature: bytes
    key: str  # the signer's public key (base64), to tell keys apart

    def message(self) -> bytes:
        return signed_message(self.position, self.hash, self.time)

    def verify(self, public_key: str) -> None:
        """Raise ``CheckpointError`` unless ``public_key`` signed this checkpoint."""
        if public_key != self.key:
            raise CheckpointError(
                f"checkpoint at position {self.position} is signed by another key "
                f"({self.key[:12]}…, expected {public_key[:12]}…)"
            )
        try:
            load_public_key(public_key).verify(self.signature, self.message())
        except InvalidSignature:
            raise CheckpointError(
                f"checkpoint at position {self.position}: the signature does not verify"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "hash": self.hash.hex(),
            "time": self.time,
            "signature": base64.b64encode(self.signature).decode(),
            "key": self.key,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Checkpoint:
        if not isinstance(d, Mapping):
            raise CheckpointError("a checkpoint is a map")
        pos, h, t, sig, key = (d.get(k) for k in ("position", "hash", "time", "signature", "key"))
        if type(pos) is not int or pos < 1:
            raise CheckpointError("checkpoint 'position' must be a positive integer")
        if not all(isinstance(v, str) for v in (h, t, sig, key)):
            raise CheckpointError("checkpoint 'hash', 'time', 'signature', 'key' must be strings")
        assert isinstance(h, str) and isinstance(t, str)
        assert isinstance(sig, str) and isinstance(key, str)
        try:
            hb, sb = bytes.fromhex(h), base64.b64decode(sig, validate=True)
        except (ValueError, binascii.Error):
            raise CheckpointError("checkpoint 'hash' is hex and 'signature' base64") from None
        if len(hb) != 32 or len(sb) != 64:
            raise CheckpointError("checkpoint hash must be 32 bytes and signature 64")
        return cls(pos, hb, t, sb, key)


def signed_message(position: int, hash_: bytes, time: str) -> bytes:
    return DOMAIN + f"{position}\n{hash_.hex()}\n{time}".encode()


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def load_public_key(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error):
        raise CheckpointError("an engine key is 32 bytes of base64") from None


def sign(key: Ed25519PrivateKey, position: int, hash_: bytes, time: str) -> Checkpoint:
    sig = key.sign(signed_message(position, hash_, time))
    return Checkpoint(position, hash_, time, sig, public_key_text(key))


def dumps(checkpoints: Iterable[Checkpoint]) -> str:
    """Checkpoints as JSON lines (the file format auditors keep)."""
    return "".join(json.dumps(c.to_dict(), sort_keys=True) + "\n" for c in checkpoints)


def loads(text: str) -> list[Checkpoint]:
    """Checkpoints from JSON lines (blank lines skipped), in position order."""
    out: list[Checkpoint] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(Checkpoint.from_dict(json.loads(line)))
        except (json.JSONDecodeError, CheckpointError) as exc:
            raise CheckpointError(f"line {n}: {exc}") from None
    out.sort(key=lambda c: c.position)
    return out


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    position: int
    message: str

    def __str__(self) -> str:
        return self.message


def verified(
    checkpoints: Iterable[Checkpoint], public_key: str | None
) -> tuple[list[Checkpoint], list[Finding]]:
    """The checkpoints ``public_key`` signed (all, if no key is pinned: the first
    checkpoint's key is then the one trusted), and a finding per other one."""
    good: list[Checkpoint] = []
    bad: list[Finding] = []
    for c in checkpoints:
        key = public_key if public_key is not None else c.key
        try:
            c.verify(key)
        except CheckpointError as exc:
            bad.append(Finding("bad_signature", c.position, str(exc)))
            continue
        public_key = key
        good.append(c)
    return good, bad


def compare(
    checkpoints: Sequence[Checkpoint], head: int, hash_at: Mapping[int, bytes], source: str
) -> list[Finding]:
    """What the checkpoints say of a log ending at ``head`` (``hash_at``: the log's
    hash at each checkpointed position it holds)."""
    out: list[Finding] = []
    beyond = [c for c in checkpoints if c.position > head]
    if beyond:
        top = max(beyond, key=lambda c: c.position)
        out.append(
            Finding(
                "truncated",
                head + 1,
                f"tail truncated: the log ends at position {head}, but {source} "
                f"(signed {top.time}) holds position {top.position}: "
                f"records {head + 1}..{top.position} are missing",
            )
        )
    for c in checkpoints:
        if c.position > head:
            continue
        have = hash_at.get(c.position)
        if have != c.hash:
            what = "has no record" if have is None else "has another hash"
            out.append(
                Finding(
                    "rewritten",
                    c.position,
                    f"rewritten: at position {c.position} the log {what} than {source} "
                    f"signed {c.time} (records were altered and their hashes recomputed)",
                )
            )
            break  # later checkpoints only repeat it
    return out


def unanchored(checkpoints: Sequence[Checkpoint], head: int, source: str) -> Finding | None:
    """Records after the last checkpoint: forged appends, or committed after it."""
    last = max((c.position for c in checkpoints), default=0)
    if head <= last:
        return None
    return Finding(
        "unanchored",
        last + 1,
        f"records {last + 1}..{head} are not covered by {source} (last at position {last}): "
        "appended after the last checkpoint (forged, or not anchored yet)",
    )
