"""Integration credentials are read-only, against the embedded broker itself:
an integration's JetStream requests stay in its own account (its mirror of the
stream), so it can make the broker deliver nothing into the engine's subjects,
a device's or the admin's inbox, and cannot touch another integration's
consumers. Generated attacks (random JetStream API subjects and configs) too."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.aio.msg import Msg

from engine import brokerauth, codec, protocol
from tests.support.harness import DeviceCreds, EngineHarness, wait_for
from tests.support.security import Errors, raw_connect

S = protocol.STREAM
M = protocol.INTEGRATION_STREAM


@dataclass
class Scene:
    """The engine with a device, two integrations and spies on what must stay quiet."""

    alice: DeviceCreds
    ledger: Client  # the attacker
    other: Client  # another integration, with a durable consumer of its own
    errors: Errors
    leaked: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)


async def _integration(eng: EngineHarness, name: str, errors: Errors | None = None) -> Client:
    admin = await eng.admin()
    creds = await admin.integration("add", name)
    nc = await raw_connect(
        eng.url,
        errors,
        user=creds.user,
        password=creds.password,
        inbox_prefix=creds.inbox_prefix,
    )
    js = nc.jetstream()
    total = (await admin.nc.jetstream().stream_info(S)).state.messages

    async def mirrored() -> bool:
        return bool((await js.stream_info(M)).state.messages == total)

    await wait_for(mirrored, timeout=15)
    return nc


async def scene(eng: EngineHarness) -> Scene:
    cached: Scene | None = getattr(eng, "_isolation_scene", None)
    if cached is not None:
        return cached
    alice = await eng.device("alice")
    await alice.client.push([alice.created(), alice.created()])
    assert eng.server.publisher is not None
    await eng.server.publisher.drain()
    errors = Errors()
    other = await _integration(eng, "other")
    await other.jetstream().pull_subscribe(protocol.LOG_SUBJECTS, durable="books", stream=M)
    ledger = await _integration(eng, "ledger", errors)
    sc = Scene(alice, ledger, other, errors)
    sc.targets = [
        protocol.HEAD,
        f"_INBOX.{alice.device_id}.stolen",
        protocol.ADMIN_INBOX + ".stolen",
        protocol.PUSH,
        protocol.NUMBERS,
        "synvoice.v1.log.invoice.document.created",
        "_INBOX.int-other.stolen",
    ]
    admin = await eng.admin()  # full rights in the engine's account: sees what leaks there

    async def spy(msg: Msg) -> None:
        # The engine's own head notifications are plain {"head": n} maps.
        if msg.subject == protocol.HEAD and not msg.headers and not msg.reply:
            if set(codec.unpack(msg.data)) == {"head"}:
                return
        sc.leaked.append(msg.subject)

    for subject in sc.targets[:-1]:
        await admin.nc.subscribe(subject if "stolen" not in subject else subject + ".>", cb=spy)
        if "stolen" in subject:
            await admin.nc.subscribe(subject, cb=spy)
    await admin.nc.flush()
    # The other integration's inbox, from its own connection.
    await other.subscribe("_INBOX.int-other.stolen", cb=spy)
    await other.subscribe("_INBOX.int-other.stolen.>", cb=spy)
    await other.flush()
    eng._isolation_scene = sc  # type: ignore[attr-defined]
    return sc


async def attempt(nc: Client, subject: str, body: bytes, timeout: float = 0.4) -> Any:
    """A request; a permission violation gets no reply (None)."""
    try:
        msg = await nc.request(subject, body, timeout=timeout)
    except Exception:
        return None
    try:
        return json.loads(msg.data) if msg.data else {}
    except ValueError:
        return msg.data


async def engine_consumers(eng: EngineHarness) -> list[Any]:
    js = (await eng.admin()).nc.jetstream()
    return list(await js.consumers_info(S))


async def assert_contained(eng: EngineHarness, sc: Scene) -> None:
    await asyncio.sleep(0.15)  # let anything the broker would deliver arrive
    assert sc.leaked == []
    # In the engine's account, only the mirrors' consumers exist, delivering to
    # their integration's mirror subjects.
    for c in await engine_consumers(eng):
        assert (c.config.deliver_subject or "").startswith("synvoice.mirror."), c.config
    # The other integration's durable is untouched.
    info = await sc.other.jetstream().consumer_info(M, "books")
    assert info.name == "books"


async def test_push_consumers_deliver_only_inside_the_integration(
    secure_engine: EngineHarness,
) -> None:
    eng = secure_engine
    sc = await scene(eng)
    head_before = eng.core.log.head
    for i, target in enumerate(sc.targets):
        name = f"atk{i}"
        cfg = {"name": name, "deliver_subject": target, "ack_policy": "none"}
        body = json.dumps({"stream_name": M, "config": cfg}).encode()
        # In its own account the create may succeed: the consumer delivers there.
        await attempt(sc.ledger, f"$JS.API.CONSUMER.CREATE.{M}.{name}", body)
        legacy = {"stream_name": M, "config": {"deliver_subject": target}}
        await attempt(sc.ledger, f"$JS.API.CONSUMER.CREATE.{M}", json.dumps(legacy).encode())
        # The engine's stream and API are not in its account at all.
        await attempt(sc.ledger, f"$JS.API.CONSUMER.CREATE.{S}.{name}", body)
        await attempt(sc.ledger, f"{brokerauth.MIRROR_API}.CONSUMER.CREATE.{S}", body)
    await assert_contained(eng, sc)
    assert eng.core.log.head == head_before
    assert sc.errors.has("permissions violation")


async def test_another_integrations_consumer_is_out_of_reach(
    secure_engine: EngineHarness,
) -> None:
    eng = secure_engine
    sc = await scene(eng)
    for subject in (
        f"$JS.API.CONSUMER.INFO.{M}.books",
        f"$JS.API.CONSUMER.DELETE.{M}.books",
        f"$JS.API.CONSUMER.MSG.NEXT.{M}.books",
        f"$JS.API.CONSUMER.INFO.{S}.books",
        f"$JS.API.CONSUMER.DELETE.{S}.books",
    ):
        reply = await attempt(sc.ledger, subject, b"")
        # Not found in its own account, or not allowed at all.
        assert reply is None or "error" in reply, (subject, reply)
    await assert_contained(eng, sc)


async def test_sales_replies_cannot_write_into_the_stream(secure_engine: EngineHarness) -> None:
    """An integration asking for the intake's reply on a stream subject."""
    eng = secure_engine
    sc = await scene(eng)
    admin = await eng.admin()
    ejs = admin.nc.jetstream()
    before = (await ejs.stream_info(S)).state.messages
    sale = {"sale_id": "s-1", "customer": {"name": "Acme"}, "lines": []}
    for reply in ("synvoice.v1.log.sale.sale.recorded", "synvoice.v1.log.>", protocol.HEAD):
        await sc.ledger.publish(protocol.BILLING_SALES_IN, json.dumps(sale).encode(), reply=reply)
    await sc.ledger.flush()
    await asyncio.sleep(0.5)
    after = (await ejs.stream_info(S)).state
    assert eng.server.publisher is not None
    await eng.server.publisher.drain()
    stored = [m for m in range(before + 1, after.last_seq + 1)]
    for seq in stored:  # whatever was added is an event the engine published
        msg = await ejs.get_msg(S, seq)
        assert msg.headers and protocol.HDR_POSITION in msg.headers
    # A sale sent as a request still gets its reply (through the account import).
    good = {"id": "ISO-1", "customer": "Initech", "stage": "Closed/Won", "amount": "250"}
    good.update(close_date="2011-11-03", email="ap@initech.example")
    answer = await sc.ledger.request(
        protocol.BILLING_SALES_IN, json.dumps(good).encode(), timeout=10
    )
    assert json.loads(answer.data)["ok"] is True
    await assert_contained(eng, sc)


_API_OPS = [
    "STREAM.CREATE",
    "STREAM.UPDATE",
    "STREAM.DELETE",
    "STREAM.PURGE",
    "STREAM.INFO",
    "STREAM.MSG.GET",
    "STREAM.MSG.DELETE",
    "CONSUMER.CREATE",
    "CONSUMER.DURABLE.CREATE",
    "CONSUMER.INFO",
    "CONSUMER.DELETE",
    "CONSUMER.MSG.NEXT",
    "CONSUMER.LIST",
    "CONSUMER.NAMES",
]
_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=8)


@st.composite
def attacks(draw: st.DrawFn) -> tuple[str, bytes]:
    prefix = draw(st.sampled_from(["$JS.API", brokerauth.MIRROR_API, "$JS.synvoice.API"]))
    op = draw(st.sampled_from(_API_OPS))
    stream = draw(st.sampled_from([S, M, "OTHER"]) | _token)
    parts = [prefix, op, stream]
    if op.startswith("CONSUMER") and op not in ("CONSUMER.LIST", "CONSUMER.NAMES"):
        parts.append(draw(st.sampled_from(["books", "ledger", "mirror"]) | _token))
    target = draw(
        st.sampled_from(
            [
                protocol.HEAD,
                protocol.PUSH,
                "_INBOX.dev-000000000000.x",
                protocol.ADMIN_INBOX + ".stolen.1",
                "synvoice.v1.log.invoice.document.created",
                "_INBOX.int-other.stolen",
                "synvoice.mirror.other.x",
            ]
        )
        | _token
    )
    config: dict[str, Any] = {
        "deliver_subject": target,
        "ack_policy": draw(st.sampled_from(["none", "explicit", "all"])),
        "filter_subject": draw(st.sampled_from([protocol.LOG_SUBJECTS, ">", "x.>"])),
    }
    if draw(st.booleans()):
        config["durable_name"] = parts[-1]
    body: dict[str, Any] = {"stream_name": stream, "config": config}
    if op.startswith("STREAM.CREATE") or op.startswith("STREAM.UPDATE"):
        external = {
            "api": draw(st.sampled_from([brokerauth.MIRROR_API, "$JS.API"])),
            "deliver": target,
        }
        body = {"name": stream, "mirror": {"name": S, "external": external}}
    return ".".join(parts), json.dumps(body).encode()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(attacks(), min_size=1, max_size=4))
async def test_generated_jetstream_attacks_stay_in_the_integrations_account(
    secure_engine: EngineHarness, batch: list[tuple[str, bytes]]
) -> None:
    eng = secure_engine
    sc = await scene(eng)
    head = eng.core.log.head
    for subject, body in batch:
        await attempt(sc.ledger, subject, body, timeout=0.2)
    await assert_contained(eng, sc)
    assert eng.core.log.head == head
    # The integration still reads its mirror.
    assert (await sc.ledger.jetstream().stream_info(M)).state.messages >= 2
