"""Test support: Fixtures for editions and broker security.

Imported by tests and conftest files alike (conftest files only hold fixtures).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.client import Client

from engine import license
from tests.support.harness import EngineHarness


@dataclass
class Vendor:
    private: Ed25519PrivateKey
    public: str  # base64, as SYNVOICE_VENDOR_PUBLIC_KEY takes it

    def issue(self, edition: str, licensee: str = "Acme Ltd", **kw: Any) -> str:
        return license.issue(self.private, edition, licensee, **kw)


MakeEngine = Callable[..., Awaitable[EngineHarness]]


class Errors:
    """Collects asynchronous errors a connection reports (permission violations)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def cb(self, exc: Exception) -> None:  # nats-py wants a coroutine function
        self.seen.append(str(exc))

    def has(self, text: str) -> bool:
        return any(text.lower() in e.lower() for e in self.seen)


async def raw_connect(url: str, errors: Errors | None = None, **opts: Any) -> Client:
    """A plain nats-py connection that does not retry (for refusal tests)."""
    return await nats.connect(
        url,
        allow_reconnect=False,
        max_reconnect_attempts=0,
        connect_timeout=2,
        error_cb=(errors or Errors()).cb,
        **opts,
    )
