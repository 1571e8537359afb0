"""The engine over a real nats-server: push/pull, idempotency, group commit, numbers."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import nats
import pytest

from engine import codec, protocol
from engine.errors import SynvoiceError
from engine.events import parse_event
from engine.natsproc import NatsServer
from engine.schema.common import KINDS
from tests.support.harness import EngineHarness, running_engine

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


async def test_push_pull_round_trip(engine: EngineHarness) -> None:
    dev = await engine.device("alice")
    events = [dev.created(number=i + 1) for i in range(3)]
    r = await dev.client.push(events)
    assert [x.duplicate for x in r.results] == [False] * 3
    positions = [x.position for x in r.results]
    assert positions == sorted(positions)
    page = await dev.client.pull(after=0)
    got = [parse_event(e, stored=True) for e in page.events]
    docs = [e for e in got if e.type == "document.created"]
    assert [e.event_id for e in docs] == [e.event_id for e in events]
    assert [e.position for e in docs] == positions
    assert all(e.committed_at is not None for e in docs)
    assert page.head == positions[-1]
    assert page.more is False
    # paging resumes exactly after the given position
    page2 = await dev.client.pull(after=positions[0], limit=1)
    assert [e["position"] for e in page2.events] == [positions[1]]
    assert page2.more is True


async def test_duplicate_push_is_stored_once(engine: EngineHarness) -> None:
    dev = await engine.device("alice")
    ev = dev.created(number=7)
    first = await dev.client.push([ev])
    again = await dev.client.push([ev, ev])
    assert first.results[0].duplicate is False
    assert [x.duplicate for x in again.results] == [True, True]
    assert {x.position for x in again.results} == {first.results[0].position}
    page = await dev.client.pull(after=0)
    ids = [e["event_id"] for e in page.events]
    assert ids.count(str(ev.event_id)) == 1


async def test_same_event_twice_in_one_request(engine: EngineHarness) -> None:
    dev = await engine.device("alice")
    ev = dev.created()
    r = await dev.client.push([ev, ev])
    assert [x.duplicate for x in r.results] == [False, True]
    assert r.results[0].position == r.results[1].position


async def test_eight_concurrent_pushers_exactly_once_with_valid_chain(
    engine: EngineHarness,
) -> None:
    devices = [await engine.device(f"user{i}") for i in range(8)]
    acked: dict[str, int] = {}

    async def pusher(dev: object) -> None:
        for _ in range(25):
            batch = [dev.created() for _ in range(20)]  # type: ignore[attr-defined]
            r = await dev.client.push(batch)  # type: ignore[attr-defined]
            for x in r.results:
                acked[x.event_id] = x.position

    await asyncio.gather(*(pusher(d) for d in devices))
    assert len(acked) == 8 * 25 * 20
    assert engine.core is not None
    checked, broken = await engine.core.log.verify()
    assert broken is None
    assert checked == engine.core.log.head
    stored: dict[str, int] = {}
    async for rows in engine.core.log.iter_records():
        for rec in rows:
            eid = codec.unpack(rec.body)["event_id"]
            assert eid not in stored
            stored[eid] = rec.position
    for eid, pos in acked.items():
        assert stored[eid] == pos
    # group commit really grouped: far fewer transactions than requests is not
    # observable directly, but all 200 requests of 20 landed in order per device.


async def test_64_concurrent_number_requests_are_1_to_n(engine: EngineHarness) -> None:
    devices = [await engine.device(f"u{i % 4}") for i in range(8)]
    docs = [uuid.uuid4() for _ in range(64)]

    async def ask(i: int, doc: uuid.UUID) -> int:
        return (await devices[i % 8].client.next_numbers([("invoice", doc)]))[0]

    numbers = await asyncio.gather(*(ask(i, d) for i, d in enumerate(docs)))
    assert sorted(numbers) == list(range(1, 65))
    # asking again for the same document returns the same number
    again = await asyncio.gather(*(ask(i, d) for i, d in enumerate(docs)))
    assert again == numbers
    # each series is separate
    q = await devices[0].client.next_numbers([("quote", uuid.uuid4())])
    assert q == [1]
    st = await devices[0].client.status()
    assert st.counters["invoice"] == 64


async def test_server_number_skips_numbers_set_by_hand(engine: EngineHarness) -> None:
    dev = await engine.device("alice")
    await dev.client.push([dev.created(number=2, number_source="manual")])
    nums = await dev.client.next_numbers([("invoice", uuid.uuid4()) for _ in range(3)])
    assert nums == [1, 3, 4]


async def test_numbers_refused_outside_centralized_mode(engine: EngineHarness) -> None:
    admin = await engine.admin()
    dev = await engine.device("alice")
    await admin.set_mode("single")
    with pytest.raises(SynvoiceError) as err:
        await dev.client.next_numbers([("invoice", uuid.uuid4())])
    assert err.value.code == "mode"


async def test_user_mode_is_set_once_unless_forced(engine: EngineHarness) -> None:
    admin = await engine.admin()
    dev = await engine.device("alice")
    assert (await admin.set_mode("single")).changed is True
    await dev.client.push([dev.created(number=1)])
    with pytest.raises(SynvoiceError) as err:
        await admin.set_mode("centralized")
    assert err.value.code == "conflict"
    r = await admin.set_mode("centralized", force=True)
    assert r.changed is True and r.previous == "single"
    page = await dev.client.pull(after=0)
    modes = [e for e in page.events if e["type"] == "settings.user_mode_set"]
    assert [m["data"]["mode"] for m in modes] == ["single", "centralized"]
    assert modes[-1]["data"]["forced"] is True
    # the forced switch continues above the numbers in use
    assert await dev.client.next_numbers([("invoice", uuid.uuid4())]) == [2]


async def test_events_are_published_to_jetstream(engine: EngineHarness) -> None:
    dev = await engine.device("alice")
    assert engine.server.publisher is not None
    events = []
    for _ in range(3):  # the first batch is published with acks, later ones the fast way
        batch = [dev.created() for _ in range(50)]
        await dev.client.push(batch)
        await engine.server.publisher.drain()
        events += batch
    nc = await nats.connect(engine.url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(f"{protocol.PREFIX}.log.invoice.>", ordered_consumer=True)
        seen = []
        for _ in range(150):
            msg = await sub.next_msg(timeout=5)
            seen.append(msg.headers["Nats-Msg-Id"])  # type: ignore[index]
            assert msg.subject == "synvoice.v1.log.invoice.document.created"
        assert seen == [str(e.event_id) for e in events]
        info = await js.stream_info(protocol.STREAM)
        assert info.state.messages == engine.core.log.head
        # Every message is the stored record: same bytes, position and chain hash.
        everything = await js.subscribe(f"{protocol.PREFIX}.log.>", ordered_consumer=True)
        records = await engine.core.log.read(0, 1000)
        for r in records:
            msg = await everything.next_msg(timeout=5)
            assert msg.data == r.body
            assert msg.headers is not None
            assert msg.headers[protocol.HDR_POSITION] == str(r.position)
            assert msg.headers[protocol.HDR_HASH] == r.hash.hex()
    finally:
        await nc.close()


async def test_micro_service_discovery(engine: EngineHarness) -> None:
    nc = await nats.connect(engine.url)
    try:
        msg = await nc.request("$SRV.INFO.synvoice-engine", b"", timeout=5)
        info = json.loads(msg.data)
        subjects = {e["subject"] for e in info["endpoints"]}
        assert protocol.PUSH in subjects and protocol.NUMBERS in subjects
    finally:
        await nc.close()


async def test_head_notification(engine: EngineHarness) -> None:
    dev = await engine.device("alice")
    nc = await nats.connect(engine.url)
    try:
        sub = await nc.subscribe(protocol.HEAD)
        r = await dev.client.push([dev.created()])
        msg = await sub.next_msg(timeout=5)
        assert codec.unpack(msg.data)["head"] == r.head
    finally:
        await nc.close()


async def test_distributed_epochs_open_when_devices_pull(engine: EngineHarness) -> None:
    """Seed set-up order: distributed mode first, then the users; the first pull
    opens one epoch for all of them (1,4,7 / 2,5,8 / 3,6,9)."""
    admin = await engine.admin()
    await admin.set_mode("distributed")
    devs = [await engine.device(u) for u in ("ann", "bob", "cy")]
    st = await devs[0].client.status()
    assert st.epochs["invoice"] == []  # nothing opened before a device pulls
    await devs[0].client.pull(after=0)
    st = await devs[0].client.status()
    (ep,) = st.epochs["invoice"]
    assert (ep.start, ep.increment, ep.slots) == (1, 3, {"ann": 1, "bob": 2, "cy": 3})
    # a fourth user: the open epoch is closed at its end, the next starts after it
    await engine.device("dan")
    await devs[1].client.pull(after=0)
    st = await devs[1].client.status()
    first, second = st.epochs["invoice"]
    assert second.start == first.end + 1 and second.increment == 4


async def test_concurrent_first_pulls_all_see_the_epochs(engine: EngineHarness) -> None:
    """The epochs are opened (and applied to the engine's state) by the first pull's
    commit: pulls arriving while it commits must wait for it, not read a log
    without them (a device would then be in distributed mode with no epoch)."""
    admin = await engine.admin()
    await admin.set_mode("distributed")
    devs = [await engine.device(u) for u in ("ann", "bob", "cy") for _ in range(4)]
    for round_ in range(5):
        pulls = []
        for d in devs:  # spread over the first pull's commit
            pulls.append(asyncio.create_task(d.client.pull(after=0)))
            await asyncio.sleep(0.0005)
        for page in await asyncio.gather(*pulls):
            types = [e["type"] for e in page.events]
            # one epoch per kind (credit notes have their own series) per round
            assert types.count("numbering.epoch_opened") == len(KINDS) * (round_ + 1)
        await engine.device(f"user{round_}")  # a new user: the next pulls open new epochs


async def test_pull_pages_fit_a_broker_with_the_stock_1mb_payload(tmp_path: Path) -> None:
    conf = tmp_path / "stock.conf"
    conf.write_text(
        (DEPLOY / "nats-server.conf").read_text().replace("max_payload: 8MB", "max_payload: 1MB")
    )
    srv = NatsServer(tmp_path / "nats", config=conf).start()
    try:
        async with running_engine(tmp_path / "data", srv.url) as engine:
            dev = await engine.device("alice")
            for _ in range(4):  # ~2 MB of events in all
                await dev.client.push([dev.created(notes="x" * 4000) for _ in range(120)])
            after, pulled = 0, 0
            while True:
                page = await dev.client.pull(after, 5000)
                pulled += len(page.events)
                if not page.events or not page.more:
                    break
                after = page.events[-1]["position"]
            assert pulled == engine.core.log.head
    finally:
        srv.stop()


async def test_publishing_restarts_right_after_a_purge_and_on_another_log(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    async def stream_messages() -> int:
        nc = await nats.connect(nats_server.url)
        try:
            return int((await nc.jetstream().stream_info(protocol.STREAM)).state.messages)
        finally:
            await nc.close()

    async def push_and_publish(data: str, user: str, n: int) -> tuple[int, int]:
        """An engine on ``data`` takes ``n`` events and publishes everything:
        (its log head, its published mark)."""
        async with running_engine(tmp_path / data, nats_server.url) as engine:
            dev = await engine.device(user)
            await dev.client.push([dev.created() for _ in range(n)])
            assert engine.server.publisher is not None
            await engine.server.publisher.drain()
            return engine.core.log.head, engine.core.published

    head, _ = await push_and_publish("data", "alice", 20)
    nc = await nats.connect(nats_server.url)
    await nc.jetstream().purge_stream(protocol.STREAM)  # an operator's purge
    await nc.close()
    # The stream's last message is gone: start from the saved mark, go on publishing.
    head2, published = await push_and_publish("data", "bob", 5)
    assert published == head2 > head
    assert await stream_messages() == head2 - head
    # A new log on a broker whose stream holds another log's events: its own
    # events are published from position 1 (the stream's last one is not its own).
    before = await stream_messages()
    other_head, published = await push_and_publish("other", "carol", 3)
    assert published == other_head
    assert await stream_messages() == before + other_head


async def test_a_document_keeps_its_series_and_a_renumber_names_the_previous_number(
    engine: EngineHarness,
) -> None:
    dev = await engine.device("alice")
    doc = uuid.uuid4()
    assert await dev.client.next_numbers([("invoice", doc)]) == [1]
    with pytest.raises(SynvoiceError) as err:
        await dev.client.next_numbers([("quote", doc)])
    assert err.value.code == "conflict" and "numbered in the invoice series" in err.value.message
    with pytest.raises(SynvoiceError):  # two series for one document in one request
        await dev.client.next_numbers([("quote", (other := uuid.uuid4())), ("estimate", other)])
    assert await dev.client.next_numbers([("invoice", doc)]) == [1]  # same again
    assert await dev.client.next_numbers([("invoice", doc)], fresh=True) == [2]
    page = await dev.client.pull(0, 100)
    assigned = [e for e in page.events if e["type"] == "document.number_assigned"]
    assert [(e["data"]["number"], e["data"]["previous"]) for e in assigned] == [(1, None), (2, 1)]
