"""Integrations: by event id is wrong after a crash; by position with a checkpoint is right.

After a consumer restarts, JetStream redelivers the messages it had not
acknowledged *after* newer ones. An integration that applies each event as it
comes, skipping ids it has seen (what the README used to say), lets an older
edit win. ``projections.consumer`` (ordering by position, holding rows after a
hole, acknowledging only what is applied) ends equal to the replay.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nats
from nats.js.api import AckPolicy, ConsumerConfig

from engine import codec, protocol
from engine.document import DocumentView, fold_wire
from projections.consumer import Row, Sequencer, StreamConsumer
from tests.support.exports import diff, edits, export_row, replay_documents
from tests.support.harness import EngineHarness

ACK_WAIT = 1.5


class Export:
    """An integration's export: document views by id (a real one commits them
    with the checkpoint in one transaction)."""

    def __init__(self) -> None:
        self.docs: dict[str, DocumentView] = {}
        self.position = 0

    def fold(self, body: bytes) -> None:
        ev = codec.unpack(body)
        if ev.get("doc_id") is None:
            return  # engine events: nothing to export
        v = self.docs.get(ev["doc_id"]) or DocumentView(doc_id=ev["doc_id"], kind=ev["kind"])
        self.docs[ev["doc_id"]] = v
        fold_wire(v, ev, [])

    async def apply(self, rows: Sequence[Row]) -> None:
        for _, body, _ in rows:
            self.fold(body)
        self.position = rows[-1][0]

    def rows(self) -> dict[str, dict[str, object]]:
        return {d: export_row(v) for d, v in self.docs.items()}


async def _consumer_config(js: nats.js.JetStreamContext, durable: str) -> None:
    await js.add_consumer(
        protocol.STREAM,
        ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=ACK_WAIT),
    )


async def test_by_event_id_is_wrong_after_a_crash_by_position_is_right(
    engine: EngineHarness, tmp_path: Path
) -> None:
    dev = await engine.device("alice")
    docs = [dev.created() for _ in range(40)]
    await dev.client.push(docs)
    ids = [d.doc_id for d in docs if d.doc_id is not None]
    publisher = engine.server.publisher
    assert publisher is not None
    await publisher.drain()
    url = engine.url

    # Both integrations are up to date with the first batch.
    nc = await nats.connect(url)
    js = nc.jetstream()
    naive_seen: set[str] = set()
    naive = Export()
    for name in ("naive", "ordered"):
        await _consumer_config(js, name)
    sub = await js.pull_subscribe(protocol.LOG_SUBJECTS, durable="naive", stream=protocol.STREAM)
    for m in await sub.fetch(len(docs), timeout=5):
        naive_seen.add(m.headers["Nats-Msg-Id"])  # type: ignore[index]
        naive.fold(m.data)
        await m.ack()
    ordered = Export()
    consumer = StreamConsumer(js, "ordered", ordered, ack_wait=ACK_WAIT)
    await consumer.run_until(engine.core.log.head)
    await nc.close()

    # Batch B is delivered to both, which die before applying it (no ack).
    await dev.client.push(edits(dev, ids, "B", engine.core.log.head))
    await publisher.drain()
    nc = await nats.connect(url)
    js = nc.jetstream()
    for name in ("naive", "ordered"):
        s = await js.pull_subscribe(protocol.LOG_SUBJECTS, durable=name, stream=protocol.STREAM)
        assert len(await s.fetch(2 * len(ids), timeout=5)) == 2 * len(ids)
    await nc.close()  # the crash: delivered, never acknowledged

    # Batch C edits the same documents again; then both restart.
    await dev.client.push(edits(dev, ids, "C", engine.core.log.head))
    await publisher.drain()
    head = engine.core.log.head
    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        sub = await js.pull_subscribe(
            protocol.LOG_SUBJECTS, durable="naive", stream=protocol.STREAM
        )
        arrival: list[int] = []
        while len(naive_seen) < head:  # until it has seen every event id
            for m in await sub.fetch(100, timeout=10):
                arrival.append(int(m.headers[protocol.HDR_POSITION]))  # type: ignore[index]
                if m.headers["Nats-Msg-Id"] not in naive_seen:  # type: ignore[index]
                    naive_seen.add(m.headers["Nats-Msg-Id"])  # type: ignore[index]
                    naive.fold(m.data)
                await m.ack()
        assert arrival != sorted(arrival), "the redelivery came in order: no crash shown"

        consumer = StreamConsumer(js, "ordered", ordered, ack_wait=ACK_WAIT)
        await consumer.run_until(head, timeout=30)
    finally:
        await nc.close()

    replay = replay_documents(engine.core.config.log_path, tmp_path)
    wrong = diff(naive.rows(), replay)
    assert wrong, "applying by event id gave the replay's documents: the test shows nothing"
    assert diff(ordered.rows(), replay) == []


async def test_sequencer_orders_holds_and_fills() -> None:
    rows = [(p, f"b{p}".encode(), bytes(32)) for p in range(1, 11)]
    seq = Sequencer(0)
    assert await seq.take([rows[2], rows[0]]) == [rows[0]]  # 3 waits behind the hole at 2
    assert seq.waiting_for == (2, 2)
    assert await seq.take([rows[1], rows[0]]) == [rows[1], rows[2]]  # 1 again: dropped
    assert seq.position == 3 and seq.waiting_for is None

    async def fill(after: int, upto: int) -> list[Row]:
        return rows[after:upto]

    filled = Sequencer(3, fill=fill)
    assert [r[0] for r in await filled.take([rows[9], rows[6]])] == list(range(4, 11))
    assert filled.filled == 5
