"""A really full disk: the data folder (log and JetStream store) on a small tmpfs.

Pushes are refused with ``unavailable: disk full`` and change nothing; once
space is freed, pushes are accepted again and JetStream publishing catches up
by itself, without a restart. Needs root for the mount (CI runs as root); the
mount is removed however the test ends.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.config import EngineConfig
from engine.errors import SynvoiceError
from engine.events import Event, new_event
from engine.schema.common import Customer, Line
from engine.schema.documents import DocumentCreated
from engine.server import EngineServer
from tests.support.harness import DeviceCreds, EngineHarness, wait_for

pytestmark = pytest.mark.broker

DISK = "24m"  # room for the engine and its broker, filled up by the test


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK},mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        with contextlib.suppress(OSError):  # kept for a failure's post-mortem
            shutil.copy(mnt / "data" / "nats" / "nats-server.log", tmp_path)
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> None:
    """Write ``path`` until the file system has no byte left."""
    chunk = b"\0" * (64 * 1024)
    with open(path, "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(chunk)
        with contextlib.suppress(OSError):  # the last partial block
            while True:
                f.write(b"\0" * 512)


def big_event(dev: DeviceCreds) -> Event:
    """About 45 KB (50 lines of 900 characters): the log outgrows its free pages fast."""
    dev.seq += 1
    return new_event(
        "document.created",
        DocumentCreated(
            number=0,
            customer=Customer(name="Acme Ltd"),
            lines=[
                Line(description=f"{i}" + "x" * 900, quantity=1, unit_price=1, tax_rate=0)
                for i in range(50)
            ],
        ),
        device_id=dev.device_id,
        user=dev.user,
        device_seq=dev.seq,
        doc_id=uuid.uuid4(),
        kind="invoice",
    )


def make_room_in_log(log_path: Path, mb: int = 3) -> None:
    """Leave free pages in the log (and a long WAL to reuse): with the disk full,
    the log still takes some commits that the broker can no longer store."""
    con = sqlite3.connect(log_path, isolation_level=None)
    try:
        con.execute("PRAGMA busy_timeout=10000")
        con.execute("CREATE TABLE scratch (b BLOB)")
        con.executemany("INSERT INTO scratch VALUES (?)", [(os.urandom(65536),)] * (mb * 16))
        con.execute("DROP TABLE scratch")
        con.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        con.close()


async def test_disk_full_is_unavailable_and_recovers_by_itself(small_disk: Path) -> None:
    cfg = EngineConfig(data_dir=small_disk / "data", nats_url=None, nats_port=0)
    cfg.live_views = False
    server = EngineServer(cfg)
    await server.start()
    h = EngineHarness(server, server.nats_url)
    try:
        dev = await h.device("alice")
        core, publisher = server.core, server.publisher
        assert core is not None and publisher is not None
        await dev.client.push([big_event(dev)])
        await publisher.drain()
        make_room_in_log(cfg.log_path)
        filler = small_disk / "filler"
        fill(filler)
        with pytest.raises(OSError) as full:
            (small_disk / "probe").write_bytes(b"\0" * 8192)
        assert full.value.errno == errno.ENOSPC

        # Bounded: the log's free pages take some events, then it is full too.
        accepted = 0
        refusal: SynvoiceError | None = None
        for _ in range(200):
            head = core.log.head
            try:
                await dev.client.push([big_event(dev)])
                accepted += 1
            except SynvoiceError as exc:
                refusal = exc
                break
        assert refusal is not None, "the full disk never refused a push"
        assert refusal.code == "unavailable"
        assert "disk full" in refusal.message
        assert core.log.head == head  # changed nothing
        assert (await dev.client.status()).head == head  # still serving
        assert accepted > 0 and core.published < core.log.head  # the broker is full too

        filler.unlink()
        r = await dev.client.push([big_event(dev)])
        assert r.results[0].position == head + 1
        # JetStream catches up by itself (no restart of the engine).
        await wait_for(lambda: core.published == core.log.head, timeout=30)
        await publisher.drain()
    finally:
        await h.close()
        await server.stop()


async def test_a_full_log_is_unavailable_without_root(engine: EngineHarness) -> None:
    """The same refusal where no tmpfs can be mounted: SQLite's page limit on the
    writer's connection makes a commit fail with SQLITE_FULL as a full disk does."""
    core = engine.core
    dev = await engine.device("alice")
    await dev.client.push([big_event(dev)])
    w = core.log._w
    pages = await core.log._call(lambda: w.execute("PRAGMA page_count").fetchone()[0])
    await core.log._call(lambda: w.execute(f"PRAGMA max_page_count = {pages + 2}"))
    head = core.log.head
    with pytest.raises(SynvoiceError) as refused:
        for _ in range(5):  # bounded: a page or two of room first
            await dev.client.push([big_event(dev)])
    assert refused.value.code == "unavailable"
    assert refused.value.message.startswith("disk full")
    assert core.log.head == head
    # Numbers too: nothing reserved, nothing counted.
    last = core.state.counters["invoice"].last
    with pytest.raises(SynvoiceError, match="disk full"):
        await dev.client.next_numbers([("invoice", uuid.uuid4()) for _ in range(200)])
    assert core.state.counters["invoice"].last == last

    await core.log._call(lambda: w.execute("PRAGMA max_page_count = 4294967294"))
    r = await dev.client.push([big_event(dev)])
    assert r.results[0].position == head + 1
    assert await dev.client.next_numbers([("invoice", uuid.uuid4())]) == [last + 1]
