"""The engine on the 3-node JetStream cluster from deploy/cluster/ (stream R3)."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import nats
import pytest

from engine import protocol
from engine.config import EngineConfig
from engine.errors import SynvoiceError
from engine.natsproc import NatsCluster, server_list
from engine.publisher import Publisher
from engine.server import EngineServer
from tests.support.harness import EngineHarness, wait_for


async def jetstream_ready(url: str, timeout: float = 30.0) -> None:
    """Wait until the cluster elected its JetStream meta leader."""
    nc = await nats.connect(server_list(url))
    try:
        js = nc.jetstream(timeout=2)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                await js.account_info()
                return
            except Exception:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await nc.close()


# The publisher must create the stream with EngineConfig.stream_replicas (changing
# the replicas of a live stream stalls the first publishes).
PUBLISHER_TAKES_REPLICAS = "stream_replicas" in inspect.getsource(Publisher.start)


@pytest.mark.skipif(
    not PUBLISHER_TAKES_REPLICAS,
    reason="engine/publisher.py: Publisher.start must call "
    "ensure_stream(self.js, self.core.config.stream_replicas)",
)
async def test_engine_on_three_node_cluster_survives_a_node(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path / "cluster")
    await asyncio.to_thread(cluster.start)
    server: EngineServer | None = None
    h: EngineHarness | None = None
    try:
        await jetstream_ready(cluster.url)
        cfg = EngineConfig(data_dir=tmp_path / "data", nats_url=cluster.url, stream_replicas=3)
        server = EngineServer(cfg)
        await server.start()
        h = EngineHarness(server, cluster.nodes[0].url)
        dev = await h.device("alice")
        await dev.client.push([dev.created() for _ in range(5)])
        assert server.publisher is not None and server.nc is not None
        await server.publisher.drain(timeout=20)
        js = server.nc.jetstream()
        info = await js.stream_info(protocol.STREAM)
        assert info.config.num_replicas == 3
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        assert info.state.messages == server.core.log.head

        # One node down (maybe the engine's): the stream keeps its quorum (2 of 3)
        # and takes new events. While the engine reconnects to another node a
        # push may find no responder: devices retry, and a retry is idempotent.
        await asyncio.to_thread(cluster.nodes[2].kill)
        batch = [dev.created() for _ in range(3)]

        async def pushed() -> bool:
            try:
                await dev.client.push(batch)
                return True
            except SynvoiceError as exc:
                assert exc.code == "unavailable", exc
                return False

        await wait_for(pushed, timeout=30, interval=0.2)
        await server.publisher.drain(timeout=30)

        async def all_in_stream() -> bool:
            try:
                st = await js.stream_info(protocol.STREAM)
            except Exception:
                return False
            return bool(st.state.messages == server.core.log.head)

        await wait_for(all_in_stream, timeout=30)
    finally:
        if h is not None:
            await h.close()
        if server is not None:
            await server.stop()
        await asyncio.to_thread(cluster.stop)
