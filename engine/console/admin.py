"""The console's admin connection to the engine: every engine-level change goes
through the engine's normal request path (``EngineClient``), like the operator CLI.

All admin calls of the console live here (one place to adapt when the client's
replies become typed)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from engine.brokermanager import admin_nats_options
from engine.client import EngineClient, plain, public_url
from engine.enrollment import Enrollment
from engine.errors import SynvoiceError
from engine.protocol import ADMIN_DEVICE


def engine_url(data_dir: Path) -> str:
    runtime = data_dir / "engine.json"
    try:
        return str(json.loads(runtime.read_text())["nats_url"])
    except (FileNotFoundError, ValueError, KeyError):
        raise SynvoiceError("unavailable", f"no running engine found in {data_dir}") from None


class AdminLink:
    """One admin client, reconnected when the engine restarts."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._client: EngineClient | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> EngineClient:
        async with self._lock:
            if self._client is not None and self._client.nc.is_connected:
                return self._client
            if self._client is not None:
                await self._drop()
            secret_path = self.data_dir / "admin.secret"
            try:
                secret = bytes.fromhex(secret_path.read_text().strip())
            except (FileNotFoundError, ValueError):
                raise SynvoiceError(
                    "unavailable", f"no admin credential at {secret_path}"
                ) from None
            url = engine_url(self.data_dir)

            async def quiet(_e: Exception) -> None:
                pass

            try:
                self._client = await EngineClient.connect(
                    url,
                    ADMIN_DEVICE,
                    secret,
                    timeout=10.0,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    error_cb=quiet,
                    **admin_nats_options(self.data_dir, secret),
                )
            except Exception as exc:
                raise SynvoiceError("unavailable", f"cannot reach the engine: {exc}") from None
            return self._client

    async def _drop(self) -> None:
        c, self._client = self._client, None
        if c is not None:
            try:
                await c.close()
            except Exception:
                pass

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    async def status(self) -> dict[str, Any]:
        st: dict[str, Any] = plain(await (await self.client()).status())
        return st

    async def enroll(self, user: str, name: str | None) -> tuple[dict[str, Any], str]:
        """Enroll a device: (reply, token)."""
        c = await self.client()
        r = await c.enroll(user, name)
        return plain(r), Enrollment.from_reply(public_url(c), r).token()

    async def revoke(self, device_id: str, reason: str | None) -> dict[str, Any]:
        return plain(await (await self.client()).revoke(device_id, reason))

    async def set_mode(self, mode: str, force: bool) -> dict[str, Any]:
        return plain(await (await self.client()).set_mode(mode, force))

    async def register(self, key: str) -> dict[str, Any]:
        return plain(await (await self.client()).register(key))

    async def integration(self, action: str, name: str | None) -> dict[str, Any]:
        c = await self.client()
        r: dict[str, Any] = plain(await c.integration(action, name))
        if action == "add":
            r["url"] = public_url(c)
        return r
