"""Refuse a second copy of a signed request that is not idempotent.

A captured request stays valid for the signature's freshness window
(``auth.MAX_SKEW_SECONDS``). Pushes are idempotent (event ids), pulls and
status change nothing; but a resent ``numbers.next`` with ``fresh: true``
renumbers the document again and a resent ``admin.enroll`` makes another
device. For those subjects the engine remembers each request's signed nonce
until its timestamp leaves the window, and refuses a nonce it has seen with
``replayed``.

Memory is bounded: at most ``per_device`` remembered nonces per device; a
device over it gets ``limit`` until its oldest expire.

Across restarts: the nonce of a guarded request is stored in the log's
``nonces`` table in the same transaction as the request's effect (the writer
takes it from ``PENDING`` when the request's plan is submitted), and a
starting engine loads the ones still in the window. A request whose effect
never committed is not stored: a copy of it after a crash does what the
original never did, once. Refused requests are remembered in memory only.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar

from engine import protocol
from engine.auth import HDR_NONCE, HDR_TIME, MAX_SKEW_SECONDS
from engine.errors import SynvoiceError

# Requests whose effect a copy would repeat.
GUARDED_PREFIXES = (protocol.NUMBERS, f"{protocol.PREFIX}.admin.")


# (device, nonce, forget after) of the guarded request being handled in this task:
# what the writer stores with the request's effect.
Nonce = tuple[str, str, int]
PENDING: ContextVar[Nonce | None] = ContextVar("synvoice_pending_nonce", default=None)


def guarded(subject: str) -> bool:
    return subject.startswith(GUARDED_PREFIXES)


class ReplayGuard:
    def __init__(self, per_device: int = 20_000, window: int = MAX_SKEW_SECONDS) -> None:
        self.per_device = per_device
        self.window = window
        self._seen: dict[tuple[str, str], float] = {}  # (device, nonce) -> forget after
        self._expiry: list[tuple[float, str, str]] = []  # heap of (forget after, device, nonce)
        self._count: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def check(
        self, subject: str, headers: Mapping[str, str], device: str, now: float | None = None
    ) -> Nonce | None:
        """Record the (already authenticated) request, or raise ``replayed``; the
        nonce to store with its effect (None: not a guarded request)."""
        if not guarded(subject):
            return None
        current = time.time() if now is None else now
        self._forget(current)
        nonce = headers.get(HDR_NONCE, "")
        key = (device, nonce)
        if key in self._seen:
            raise SynvoiceError(
                "replayed", "this signed request was already received (a replayed copy)"
            )
        if self._count.get(device, 0) >= self.per_device:
            raise SynvoiceError(
                "limit", f"device {device!r} sent too many requests on {subject}; retry later"
            )
        # verify() accepted the time: an integer within the window.
        forget_after = int(headers.get(HDR_TIME, "0")) + self.window + 1
        self._remember(device, nonce, forget_after)
        return (device, nonce, forget_after)

    def load(self, stored: Iterable[Nonce], now: float | None = None) -> None:
        """The nonces a previous run stored (``EventLog.nonces``), still in the window."""
        current = time.time() if now is None else now
        for device, nonce, forget_after in stored:
            if forget_after >= current and (device, nonce) not in self._seen:
                self._remember(device, nonce, forget_after)

    def _remember(self, device: str, nonce: str, forget_after: int) -> None:
        self._seen[(device, nonce)] = forget_after
        self._count[device] = self._count.get(device, 0) + 1
        heapq.heappush(self._expiry, (forget_after, device, nonce))

    def _forget(self, now: float) -> None:
        exp = self._expiry
        while exp and exp[0][0] < now:
            _, device, nonce = heapq.heappop(exp)
            if self._seen.pop((device, nonce), None) is not None:
                left = self._count[device] - 1
                if left:
                    self._count[device] = left
                else:
                    del self._count[device]
