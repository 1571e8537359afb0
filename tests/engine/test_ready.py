"""Ready means subscribed: once ``EngineServer.start()`` returns, the first
request is answered (no "no engine is answering" for a request sent at once)."""

from __future__ import annotations

from pathlib import Path

from engine import auth, protocol
from engine.client import EngineClient
from engine.natsproc import NatsServer
from engine.server import EngineServer
from tests.support.harness import engine_config

STARTS = 10


async def test_the_first_admin_request_after_each_start_is_answered(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    secret = auth.new_secret()
    # Connected before the engine starts, so the request leaves the moment
    # start() returns: it races the engine's subscriptions.
    admin = await EngineClient.connect(nats_server.url, protocol.ADMIN_DEVICE, secret, timeout=5)
    try:
        for i in range(STARTS):
            data = tmp_path / f"data{i}"
            data.mkdir(mode=0o700)
            (data / "admin.secret").write_text(secret.hex() + "\n")
            server = EngineServer(engine_config(data, nats_server.url, live_views=False))
            await server.start()
            try:
                listed = await admin.integration("list")  # at once: no retry, no sleep
                assert listed.integrations == []
                assert (await admin.status()).head == 0
            finally:
                await server.stop()
    finally:
        await admin.close()
