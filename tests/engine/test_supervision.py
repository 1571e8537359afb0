"""Process supervision with real processes: ``synvoice serve`` and its children.

The embedded broker and the live-views worker never outlive the engine; a
second engine never opens a data folder in use; the engine restarts a broker
that died under it.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from engine.client import EngineClient
from engine.natsproc import port_in_use
from tests.engine.test_fault import stored_events
from tests.support.harness import DeviceCreds, wait_for
from tests.support.serve import RECONNECT, ServeProcess, alive, all_gone, embedded_broker

pytestmark = pytest.mark.broker


@pytest.fixture
def serve(tmp_path: Path) -> ServeProcess:
    (tmp_path / "data").mkdir(mode=0o700)
    return ServeProcess(tmp_path / "data")


async def _push_one(device: DeviceCreds) -> str:
    r = await device.client.push([device.created()])
    return str(r.results[0].event_id)


async def test_kill9_of_serve_leaves_no_child_and_restarts_on_the_same_port(
    serve: ServeProcess,
) -> None:
    serve.start()
    try:
        broker, worker = await serve.children()
        await wait_for(lambda: alive(worker), timeout=10)
        assert alive(broker) and worker is not None
        # The broker holds the store lock too (what keeps a second broker off it).
        fds = Path(f"/proc/{broker}/fd")
        assert any(os.readlink(fd).endswith("store.lock") for fd in fds.iterdir())
        serve.kill9()
        # The kernel ends both (PR_SET_PDEATHSIG), no clean-up code runs.
        await wait_for(all_gone(broker, worker), timeout=5)
        assert not port_in_use(serve.port)
        serve.start()  # right away, same port, same store
        again, _ = await serve.children()
        assert again != broker
        [enrollment] = await serve.enroll(["alice"])
        client = await EngineClient.connect_enrolled(enrollment, **RECONNECT)
        try:
            assert embedded_broker(await client.status()).restarts == 0
        finally:
            await client.close()
    finally:
        serve.stop()


async def test_a_second_engine_is_refused_and_a_stop_ends_the_children(
    serve: ServeProcess,
) -> None:
    serve.start()
    try:
        second = ServeProcess(serve.data_dir, 0)  # any port: the folder is what is refused
        proc = second.popen()
        assert await asyncio.to_thread(proc.wait, 30) == 1
        # Both engines log into the folder's one output file: the first one's
        # lines may come after the refusal.
        lines = second.output().strip().splitlines()
        assert (
            f"synvoice: error: data folder {serve.data_dir} is in use by another engine "
            f"(pid {serve.pid})"
        ) in lines
        # The first one still serves, its broker untouched.
        assert embedded_broker(await serve.status()).restarts == 0
        broker, worker = await serve.children()
    finally:
        serve.stop()
    assert not alive(broker) and not alive(worker)  # a clean stop ends them too


async def test_kill9_of_the_broker_is_repaired_by_the_engine(serve: ServeProcess) -> None:
    serve.start()
    try:
        [enrollment] = await serve.enroll(["alice"])
        client = await EngineClient.connect_enrolled(enrollment, timeout=2, **RECONNECT)
        device = DeviceCreds(enrollment.device_id, enrollment.user, enrollment.secret, client)
        acked = [await _push_one(device)]
        broker, _ = await serve.children()
        for kill in range(2):
            os.kill(broker, signal.SIGKILL)

            async def serves_again() -> bool:
                try:
                    acked.append(await _push_one(device))
                    return True
                except Exception:
                    return False

            await wait_for(serves_again, timeout=15, interval=0.1)
            st = await client.status()
            assert embedded_broker(st).restarts == kill + 1
            assert embedded_broker(st).pid != broker
            pid = embedded_broker(st).pid
            assert pid is not None
            broker = pid
        # Nothing acknowledged is lost, and the stream catches up with the log.
        await wait_for(lambda: _published(client), timeout=15, interval=0.1)
        await client.close()
    finally:
        serve.stop()
    assert set(acked) <= set(stored_events(serve.data_dir / "log.sqlite"))


async def _published(client: EngineClient) -> bool:
    st = await client.status()
    return bool(st.published == st.head)


async def test_a_store_still_used_by_an_old_broker_is_refused(serve: ServeProcess) -> None:
    """Where the kernel cannot end a broker with its engine (no prctl), a broker
    left behind keeps the store locked: a new engine names it instead of
    opening the same JetStream store twice."""
    import fcntl

    nats_dir = serve.data_dir / "nats"
    nats_dir.mkdir(mode=0o700)
    with open(nats_dir / "store.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242")
        held.flush()
        proc = serve.popen()
        assert await asyncio.to_thread(proc.wait, 30) == 1
    assert serve.output().strip().splitlines()[-1] == (
        f"synvoice: error: a nats-server left by an earlier engine (pid 4242) still uses "
        f"{nats_dir}; stop it, then start the engine again"
    )
