"""Bounds on what one client can make the engine hold: requests and bytes in flight.

Every request is admitted (or refused with ``limit``) before any work is done
on it, by the identity its ``Synvoice-Device`` header names:

- at most ``per_device`` requests and ``per_device_bytes`` of request bodies
  of one device in flight; a device flooding the engine gets ``limit`` for the
  excess at once, without its bodies being verified or decoded, so other
  devices keep getting answers;
- at most ``max_bytes`` of request bodies in flight in all.

Pull replies are the big allocations (a page of stored events is up to
``pull_max_bytes``): building and sending them waits on a byte budget
(``pull_bytes``), so 64 concurrent maximal pulls hold a handful of pages,
not 64. The numbers come from ``EngineConfig`` (``SYNVOICE_LIMIT_*``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from engine import protocol
from engine.errors import SynvoiceError

ADMIN_FACTOR = 16  # the admin credential's requests in flight: 16 x a device's


class Admission:
    """Request counts per device and request bytes in flight (synchronous:
    a request is admitted or refused the moment it arrives)."""

    def __init__(self, per_device: int, per_device_bytes: int, max_bytes: int) -> None:
        self.per_device = per_device
        self.per_device_bytes = per_device_bytes
        self.max_bytes = max_bytes
        self.bytes = 0
        self._count: dict[str, tuple[int, int]] = {}  # device -> (requests, bytes)
        self.refused = 0

    def admit(self, device: str, size: int) -> None:
        """Count the request in, or raise ``limit``."""
        n, held = self._count.get(device, (0, 0))
        # The operator's tools (enrolling a fleet) may run more at once.
        most = self.per_device * (ADMIN_FACTOR if device == protocol.ADMIN_DEVICE else 1)
        # One request alone is always admitted (its size is checked later).
        if n and (n >= most or held + size > self.per_device_bytes):
            self.refused += 1
            raise SynvoiceError(
                "limit",
                f"device {device!r} has {n} requests ({held} bytes) in flight "
                f"(limit {most} requests, {self.per_device_bytes} bytes); "
                "wait for the replies",
            )
        if self.bytes and self.bytes + size > self.max_bytes:
            self.refused += 1
            raise SynvoiceError(
                "limit", f"the engine is busy ({self.bytes} request bytes in flight); retry"
            )
        self._count[device] = (n + 1, held + size)
        self.bytes += size

    def release(self, device: str, size: int) -> None:
        n, held = self._count.get(device, (1, size))
        if n > 1:
            self._count[device] = (n - 1, held - size)
        else:
            self._count.pop(device, None)
        self.bytes -= size

    @property
    def in_flight(self) -> int:
        return sum(n for n, _ in self._count.values())


class ByteBudget:
    """An async semaphore counted in bytes: waiters queue in arrival order."""

    def __init__(self, total: int) -> None:
        self.total = max(1, total)
        self.free = self.total
        self._cond = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        size = min(max(1, size), self.total)  # one oversized holder may run alone
        async with self._cond:
            await self._cond.wait_for(lambda: self.free >= size)
            self.free -= size
        try:
            yield
        finally:
            async with self._cond:
                self.free += size
                self._cond.notify_all()
