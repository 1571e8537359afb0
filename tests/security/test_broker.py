"""Broker-level security of the embedded nats-server (real broker, generated users)."""

from __future__ import annotations

import asyncio
import stat
from typing import Any

import pytest
from nats.aio.client import Client

from engine import auth, brokerauth, codec, protocol
from engine.client import EngineClient
from engine.config import EngineConfig
from engine.enrollment import parse_token
from engine.errors import SynvoiceError
from engine.server import EngineServer
from tests.support.harness import DeviceCreds, EngineHarness, wait_for
from tests.support.security import Errors, raw_connect


async def refused_connect(url: str, **opts: Any) -> str:
    with pytest.raises(Exception) as e:
        nc = await raw_connect(url, **opts)
        await nc.close()
    return str(e.value)


async def test_no_or_wrong_credentials_cannot_connect(secure_engine: EngineHarness) -> None:
    url = secure_engine.url
    dev = await secure_engine.device("alice")
    assert "Authorization Violation" in await refused_connect(url)
    assert "Authorization Violation" in await refused_connect(
        url, user=dev.device_id, password="0" * 64
    )
    assert "Authorization Violation" in await refused_connect(
        url, user="dev-000000000000", password=brokerauth.device_password(dev.secret)
    )
    # The engine's and admin's users are not derivable from a device's secret.
    assert "Authorization Violation" in await refused_connect(
        url, user=brokerauth.ENGINE_USER, password=brokerauth.device_password(dev.secret)
    )
    # The device's own credentials work, and it talks to the engine normally.
    assert dev.enrollment is not None and dev.enrollment.broker_auth
    r = await dev.client.push([dev.created()])
    assert r.results[0].position == secure_engine.core.log.head
    assert (await dev.client.pull(0)).head == r.head
    assert (await dev.client.status()).broker.auth is True


async def _violations(nc: Client, errors: Errors, actions: list[tuple[str, str]]) -> None:
    """Run publish/subscribe attempts; each must come back as a permissions violation."""
    for kind, subject in actions:
        if kind == "pub":
            await nc.publish(subject, b"x")
        else:
            await nc.subscribe(subject)
        await nc.flush()
        expected = f'permissions violation for {_word(kind)} to "{subject}"'
        await wait_for(lambda e=expected: errors.has(e), timeout=5)


def _word(kind: str) -> str:
    return "publish" if kind == "pub" else "subscription"


async def test_device_cannot_publish_or_listen_where_it_does_not_belong(
    secure_engine: EngineHarness,
) -> None:
    alice = await secure_engine.device("alice")
    bob = await secure_engine.device("bob")
    admin = await secure_engine.admin()
    # A full-rights listener sees whatever slips through.
    leaked: list[str] = []

    async def spy(msg: Any) -> None:
        leaked.append(msg.subject)

    for subject in ("synvoice.v1.log.>", "synvoice.v1.admin.>", f"_INBOX.{bob.device_id}.>"):
        await admin.nc.subscribe(subject, cb=spy)
    await admin.nc.flush()

    errors = Errors()
    assert alice.enrollment is not None
    nc = await raw_connect(secure_engine.url, errors, **alice.enrollment.nats_options())
    try:
        await _violations(
            nc,
            errors,
            [
                ("pub", "synvoice.v1.log.invoice.document.created"),  # forge the stream
                ("pub", protocol.ADMIN_ENROLL),  # admin endpoints
                ("pub", protocol.ADMIN_REVOKE),
                ("pub", f"_INBOX.{bob.device_id}.abc.1"),  # fake a reply to bob
                ("pub", "$JS.API.STREAM.PURGE.SYNVOICE_EVENTS"),
                ("pub", "$JS.API.STREAM.DELETE.SYNVOICE_EVENTS"),
                ("sub", f"_INBOX.{bob.device_id}.>"),  # read bob's replies
                ("sub", "_INBOX.>"),
                ("sub", "synvoice.v1.log.>"),
                ("sub", "synvoice.v1.events.push"),  # impersonate the engine
                ("sub", ">"),
            ],
        )
        await admin.nc.flush()
        assert leaked == []  # nothing got through to a real subscriber
        # An admin request signed with the device secret is refused by the engine too
        # (here sent over the admin's broker connection, to reach the engine at all).
        # The reply goes to alice's inbox only (engine.replyto), so the spoof
        # connection takes its replies there.
        body = codec.pack({"user": "mallory"})
        headers = auth.sign(alice.device_id, alice.secret, protocol.ADMIN_ENROLL, body)
        spoof = await raw_connect(
            secure_engine.url,
            inbox_prefix=f"_INBOX.{alice.device_id}",
            **secure_engine.server.admin_nats_options(),
        )
        try:
            msg = await spoof.request(protocol.ADMIN_ENROLL, body, headers=headers, timeout=5)
        finally:
            await spoof.close()
        assert codec.unpack(msg.data)["error"]["code"] == "forbidden"
        # The allowed subjects still work on this connection.
        client = EngineClient(nc, alice.device_id, alice.secret)
        assert (await client.status()).head == secure_engine.core.log.head
    finally:
        await nc.close()


async def test_revoked_device_is_cut_off_at_once(secure_engine: EngineHarness) -> None:
    eng = secure_engine
    dev = await eng.device("alice")
    other = await eng.device("bob")
    await dev.client.push([dev.created()])
    admin = await eng.admin()
    r = await admin.revoke(dev.device_id, "stolen laptop")
    assert r.revoked and r.broker_warning is None
    # Broker: the connection is dropped and the credentials no longer log in.
    await wait_for(lambda: not dev.client.nc.is_connected, timeout=10)
    assert dev.enrollment is not None
    assert "Authorization Violation" in await refused_connect(
        eng.url, **dev.enrollment.nats_options()
    )
    # Engine: even a signed request that reaches it (over another user's
    # connection) is refused.
    spoof = await EngineClient.connect(
        eng.url, dev.device_id, dev.secret, **eng.server.admin_nats_options()
    )
    try:
        with pytest.raises(SynvoiceError) as e:
            await spoof.push([dev.created()])
    finally:
        await spoof.close()
    assert e.value.code == "revoked"
    # Other devices kept their connections through the reload.
    assert other.client.nc.is_connected
    await other.client.push([other.created()])
    text = (eng.server.config.nats_dir / brokerauth.AUTH_FILE).read_text()
    assert dev.device_id not in text and other.device_id in text


async def test_auth_file_is_private_and_holds_no_secrets(secure_engine: EngineHarness) -> None:
    dev = await secure_engine.device("alice")
    path = secure_engine.server.config.nats_dir / brokerauth.AUTH_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert dev.device_id in text and brokerauth.device_password(dev.secret) in text
    assert dev.secret.hex() not in text  # the request-signing secret stays in the engine
    admin_secret = secure_engine.core.admin_secret
    assert admin_secret is not None and admin_secret.hex() not in text


async def test_integration_reads_the_stream_but_cannot_write(
    secure_engine: EngineHarness,
) -> None:
    eng = secure_engine
    dev = await eng.device("alice")
    await dev.client.push([dev.created(), dev.created()])
    admin = await eng.admin()
    creds = await admin.integration("add", "ledger")
    assert creds.user == "int-ledger" and creds.changed
    again = await admin.integration("add", "ledger")
    assert again.password == creds.password and not again.changed
    assert eng.server.publisher is not None
    await eng.server.publisher.drain()

    errors = Errors()
    nc = await raw_connect(
        eng.url,
        errors,
        user=creds.user,
        password=creds.password,
        inbox_prefix=creds.inbox_prefix,
    )
    try:
        js = nc.jetstream()
        # The integration reads its mirror of the stream, kept in its own account.
        assert creds.stream == protocol.INTEGRATION_STREAM
        total = (await admin.nc.jetstream().stream_info(protocol.STREAM)).state.messages

        async def mirrored() -> bool:
            return bool((await js.stream_info(creds.stream)).state.messages == total)

        await wait_for(mirrored, timeout=15)
        # Read: a durable pull consumer, with acks.
        sub = await js.pull_subscribe(creds.subjects, durable="ledger", stream=creds.stream)
        msgs = await sub.fetch(50, timeout=5)
        types = [codec.unpack(m.data)["type"] for m in msgs]
        assert types.count("document.created") == 2
        for m in msgs:
            await m.ack()
        # Read: an ordered push consumer (what a replaying read model uses).
        seen: list[int] = []
        osub = await js.subscribe(creds.subjects, stream=creds.stream, ordered_consumer=True)
        while len(seen) < len(msgs):
            m = await osub.next_msg(timeout=5)
            seen.append(int((m.headers or {})[protocol.HDR_POSITION]))
        assert seen == sorted(seen)
        await osub.unsubscribe()
        # The engine's own stream, seen from the admin's account.
        ejs = admin.nc.jetstream()
        before = (await ejs.stream_info(protocol.STREAM)).state.messages

        # Write: refused by the broker.
        await _violations(
            nc,
            errors,
            [
                ("pub", "synvoice.v1.log.invoice.document.created"),
                ("pub", protocol.PUSH),
                ("pub", protocol.ADMIN_ENROLL),
                ("pub", "$JS.API.STREAM.PURGE.SYNVOICE_EVENTS"),
                ("pub", "$JS.API.STREAM.DELETE.SYNVOICE_EVENTS"),
                ("pub", "$JS.API.STREAM.UPDATE.SYNVOICE_EVENTS"),
                ("pub", "$JS.API.STREAM.MSG.DELETE.SYNVOICE_EVENTS"),
                ("sub", "synvoice.v1.events.push"),
                ("sub", "_INBOX.>"),
            ],
        )
        assert (await ejs.stream_info(protocol.STREAM)).state.messages == before
    finally:
        await nc.close()

    # Removing the integration cuts its connection and its login.
    nc2 = await raw_connect(
        eng.url,
        user=creds.user,
        password=creds.password,
        inbox_prefix=creds.inbox_prefix,
    )
    mirrors = list(eng.server.config.data_dir.glob(f"**/streams/{protocol.INTEGRATION_STREAM}"))
    assert len(mirrors) == 1  # the ledger's copy of every event, in its account
    await admin.integration("remove", "ledger")
    await wait_for(lambda: not nc2.is_connected, timeout=10)
    # ... and the copy goes with it (deleted before the account is).
    assert not mirrors[0].exists()
    assert "Authorization Violation" in await refused_connect(
        eng.url, user=creds.user, password=creds.password
    )
    assert (await admin.integration("list")).integrations == []
    with pytest.raises(SynvoiceError) as e:
        await admin.integration("add", "Bad Name!")
    assert e.value.code == "schema"


async def test_enroll_many_devices_concurrently(secure_engine: EngineHarness) -> None:
    """Concurrent enrollments share broker reloads, and every device can connect."""
    devices: list[DeviceCreds] = await asyncio.gather(
        *(secure_engine.device(f"user{i % 3}") for i in range(8))
    )
    for d in devices:
        assert (await d.client.status()).usage.devices == 8
    assert secure_engine.server.broker is not None
    assert secure_engine.server.broker.reloads <= 8


async def test_restart_regenerates_users_and_tokens_keep_working(
    secure_engine: EngineHarness,
) -> None:
    eng = secure_engine
    dev = await eng.device("alice")
    assert dev.enrollment is not None
    token = dev.enrollment.token()
    revoked = await eng.device("bob")
    await (await eng.admin()).revoke(revoked.device_id)
    cfg = eng.server.config
    port = eng.server.nats_server.port if eng.server.nats_server else 0
    await eng.close()
    await eng.server.stop()
    again = EngineServer(EngineConfig(data_dir=cfg.data_dir, nats_url=None, nats_port=port))
    await again.start()
    try:
        client = await EngineClient.connect_enrolled(parse_token(token))
        try:
            assert (await client.status()).usage.devices == 1
        finally:
            await client.close()
        assert revoked.enrollment is not None
        assert "Authorization Violation" in await refused_connect(
            again.nats_url, **revoked.enrollment.nats_options()
        )
    finally:
        await again.stop()


async def test_admin_cli_on_the_secured_broker(
    secure_engine: EngineHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI finds the broker user and TLS in engine.json; tokens carry device creds."""
    import json

    from engine.cli import main

    data = str(secure_engine.server.config.data_dir)

    async def cli(*argv: str) -> Any:
        assert await asyncio.to_thread(main, [*argv, "--data", data, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    r = await cli("enroll", "alice", "--name", "tablet")
    enrollment = parse_token(r["token"])
    assert enrollment.broker_auth and "@" not in enrollment.url  # no admin creds in tokens
    client = await EngineClient.connect_enrolled(enrollment)
    try:
        assert (await client.status()).usage.devices == 1
    finally:
        await client.close()
    creds = await cli("integration", "add", "mailer")
    assert creds["user"] == "int-mailer" and creds["url"] == secure_engine.url
    nc = await raw_connect(creds["url"], user=creds["user"], password=creds["password"])
    await nc.close()
    assert (await cli("integration", "list"))["integrations"] == ["mailer"]
    st = await cli("status")
    assert st["broker"] == {"auth": True, "tls": False} and st["integrations"] == ["mailer"]
    await cli("revoke", enrollment.device_id)
    assert "Authorization Violation" in await refused_connect(
        secure_engine.url, **enrollment.nats_options()
    )
    runtime = secure_engine.server.config.runtime_path
    assert stat.S_IMODE(runtime.stat().st_mode) == 0o600
