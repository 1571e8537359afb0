"""Raw ceilings, measured in the same run as the figures they bound.

Each one does the least the product's path must also do (an insert, a round
trip, a scan, a replay), with no product code on the path, so the ratio of a
figure to its ceiling says how much the product adds.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiosqlite
import nats
from nats.aio.client import Client
from nats.js.errors import KeyWrongLastSequenceError
from pydantic import BaseModel

from engine import codec
from engine.events import parse_event
from tests.bench.stack import Responder
from tests.bench.stats import percentile, rate


async def sqlite_inserts(
    directory: Path, rows: int, per_txn: int = 1000, body_bytes: int = 460
) -> float:
    """Rows/s: batched aiosqlite inserts into a table with a UNIQUE random key.

    Same settings as the engine's log (WAL, synchronous=FULL), so a commit is
    fsynced; ``body_bytes`` is about the size of a stored document event.
    """
    path = directory / "ceiling-inserts.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")
        await conn.execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, k BLOB NOT NULL UNIQUE, body BLOB NOT NULL)"
        )
        body = os.urandom(body_bytes)
        batches = [
            [(os.urandom(16), body) for _ in range(per_txn)] for _ in range(max(1, rows // per_txn))
        ]
        t0 = time.perf_counter()
        for batch in batches:
            await conn.execute("BEGIN IMMEDIATE")
            await conn.executemany("INSERT INTO t(k, body) VALUES (?, ?)", batch)
            await conn.execute("COMMIT")
        return rate(len(batches) * per_txn, time.perf_counter() - t0)
    finally:
        await conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


async def request_reply(
    url: str,
    in_flight: int,
    requests: int,
    payload: bytes = b"x" * 200,
    own_connections: bool = False,
) -> float:
    """Requests/s: nats-py request/reply to a trivial responder in another process.

    ``own_connections``: each of the ``in_flight`` requesters on a connection of
    its own, as devices are (every request then costs its own socket writes and
    reads, which a single shared connection batches)."""
    subject = "bench.echo"
    async with Responder(url, subject):
        conns = [await nats.connect(url) for _ in range(in_flight if own_connections else 1)]
        try:
            for nc in conns:
                await nc.request(subject, payload, timeout=10)  # warm up the mux inbox
            left = requests

            async def worker(nc: Client) -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    await nc.request(subject, payload, timeout=30)

            t0 = time.perf_counter()
            await asyncio.gather(*(worker(conns[i % len(conns)]) for i in range(in_flight)))
            return rate(requests, time.perf_counter() - t0)
        finally:
            for nc in conns:
                await nc.drain()


async def kv_counter(url: str, writers: int, increments: int, timeout: float = 60.0) -> float:
    """Increments/s: a naive JetStream KV compare-and-set counter (get, update(last=rev)).

    Every writer has its own connection; a lost race is retried. Stops after
    ``increments`` successes (or ``timeout``: then the rate so far).
    """
    conns = [await nats.connect(url) for _ in range(writers)]
    try:
        js = conns[0].jetstream()
        bucket = f"bench_counter_{writers}_{os.getpid()}"
        kv = await js.create_key_value(bucket=bucket, history=1)
        await kv.put("n", b"0")
        done = 0
        deadline = time.perf_counter() + timeout

        async def writer(nc: Client) -> None:
            nonlocal done
            mine = await nc.jetstream().key_value(bucket)
            while done < increments and time.perf_counter() < deadline:
                entry = await mine.get("n")
                value = int(entry.value or b"0") + 1
                try:
                    await mine.update("n", str(value).encode(), last=entry.revision)
                except KeyWrongLastSequenceError:
                    continue
                done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(writer(nc) for nc in conns))
        result = rate(done, time.perf_counter() - t0)
        await js.delete_key_value(bucket)
        return result
    finally:
        for nc in conns:
            await nc.drain()


async def sqlite_scan(log_path: Path, chunk: int = 10_000) -> tuple[int, float]:
    """(rows, rows/s): read every (position, body, hash) of a log with ``fetchmany``."""
    conn = await aiosqlite.connect(f"file:{log_path}?mode=ro", uri=True)
    try:
        n = 0
        t0 = time.perf_counter()
        async with conn.execute("SELECT position, body, hash FROM events ORDER BY position") as cur:
            while rows := list(await cur.fetchmany(chunk)):
                n += len(rows)
        return n, rate(n, time.perf_counter() - t0)
    finally:
        await conn.close()


async def decode_events(log_path: Path, limit: int) -> tuple[float, float]:
    """(msgpack decode/s, decode + parse_event/s) over the first ``limit`` events.

    Any projection that validates what it folds pays at least the second figure.
    """
    conn = await aiosqlite.connect(f"file:{log_path}?mode=ro", uri=True)
    try:
        async with conn.execute(
            "SELECT body FROM events ORDER BY position LIMIT ?", (limit,)
        ) as cur:
            bodies = [bytes(r[0]) for r in list(await cur.fetchall())]
    finally:
        await conn.close()
    t0 = time.perf_counter()
    maps = [codec.unpack(b) for b in bodies]
    t1 = time.perf_counter()
    for m in maps:
        parse_event(m, stored=True).payload(BaseModel)
    t2 = time.perf_counter()
    return rate(len(bodies), t1 - t0), rate(len(bodies), (t1 - t0) + (t2 - t1))


async def jetstream_ordered_read(url: str, subject: str, count: int, timeout: float) -> float:
    """Messages/s: replay ``count`` messages with an ordered push consumer (callback)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        got = 0
        done = asyncio.Event()

        async def cb(msg: object) -> None:
            nonlocal got
            got += 1
            if got >= count:
                done.set()

        t0 = time.perf_counter()
        sub = await js.subscribe(subject, ordered_consumer=True, cb=cb)
        try:
            await asyncio.wait_for(done.wait(), timeout)
        finally:
            took = time.perf_counter() - t0
            await sub.unsubscribe()
        return rate(got, took)
    finally:
        await nc.drain()


async def group_commit_counter(directory: Path, requesters: int, per: int) -> tuple[float, float]:
    """(numbers/s, p99 seconds): a bare group-commit counter in this process.

    ``requesters`` tasks each ask for one number at a time; one writer drains
    the queue, hands out numbers and commits them with the engine's SQLite shape
    (lookup, BEGIN IMMEDIATE, insert reservations, upsert a state row, COMMIT;
    WAL, synchronous=FULL) before answering. No NATS, no events, no validation:
    what the commit pipeline alone allows.
    """
    path = directory / "ceiling-counter.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = await aiosqlite.connect(path, isolation_level=None)
    queue: asyncio.Queue[tuple[bytes, asyncio.Future[int]]] = asyncio.Queue()
    state = b"s" * 300

    async def writer() -> None:
        last = 0
        while True:
            jobs = [await queue.get()]
            while not queue.empty():
                jobs.append(queue.get_nowait())
            rows = [(doc, last + i + 1) for i, (doc, _) in enumerate(jobs)]
            last += len(rows)
            marks = ",".join("?" * len(rows))
            async with conn.execute(
                f"SELECT doc FROM r WHERE doc IN ({marks})", [d for d, _ in rows]
            ) as cur:
                await cur.fetchall()
            await conn.execute("BEGIN IMMEDIATE")
            await conn.executemany("INSERT INTO r(doc, n) VALUES (?, ?)", rows)
            await conn.execute(
                "INSERT INTO meta(k, v) VALUES ('state', ?) "
                "ON CONFLICT(k) DO UPDATE SET v = excluded.v",
                (state,),
            )
            await conn.execute("COMMIT")
            for (_, fut), (_, n) in zip(jobs, rows, strict=True):
                fut.set_result(n)

    latencies: list[float] = []

    async def requester() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(per):
            t0 = time.perf_counter()
            fut: asyncio.Future[int] = loop.create_future()
            await queue.put((os.urandom(16), fut))
            await fut
            latencies.append(time.perf_counter() - t0)

    try:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")
        await conn.execute("CREATE TABLE r (doc BLOB PRIMARY KEY, n INTEGER NOT NULL)")
        await conn.execute("CREATE TABLE meta (k TEXT PRIMARY KEY, v BLOB NOT NULL)")
        task = asyncio.create_task(writer())
        t0 = time.perf_counter()
        await asyncio.gather(*(requester() for _ in range(requesters)))
        result = rate(requesters * per, time.perf_counter() - t0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        latencies.sort()
        return result, percentile(latencies, 99)
    finally:
        await conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
