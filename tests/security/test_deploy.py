"""deploy/ stays true: the secured standalone broker example and the systemd unit."""

from __future__ import annotations

import asyncio
import configparser
import secrets
import shlex
from pathlib import Path

from nats.aio.msg import Msg

from engine import codec, protocol
from engine.cli import build_parser
from engine.client import EngineClient
from engine.config import EngineConfig
from engine.enrollment import Enrollment, parse_token
from engine.errors import SynvoiceError
from engine.natsproc import DEPLOY_DIR, NatsServer
from engine.server import EngineServer
from tests.security.test_broker import _violations
from tests.support.harness import EngineHarness, self_signed_cert
from tests.support.security import Errors, raw_connect


async def test_secure_example_broker_with_external_engine(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path, "broker")
    pw = {n: secrets.token_hex(16) for n in ("ENGINE", "ADMIN", "DEVICE", "READER")}
    broker = NatsServer(
        tmp_path / "nats",
        config=DEPLOY_DIR / "secure" / "nats-server.conf",
        extra_env={
            **{f"SYNVOICE_{n}_PASSWORD": v for n, v in pw.items()},
            "SYNVOICE_TLS_CERT": str(cert),
            "SYNVOICE_TLS_KEY": str(key),
        },
    ).start()
    hostport = broker.url.removeprefix("nats://")
    server = EngineServer(
        EngineConfig(
            data_dir=tmp_path / "data",
            nats_url=f"tls://synvoice-engine:{pw['ENGINE']}@{hostport}",
            tls_ca=cert,
        )
    )
    h: EngineHarness | None = None
    try:
        await server.start()
        h = EngineHarness(server, f"tls://synvoice-admin:{pw['ADMIN']}@{hostport}")
        admin = await h.admin()
        r = await admin.enroll("alice")
        assert r.broker_auth is False and r.tls_ca  # the engine does not manage users
        # The device's token carries the shared device user in its URL.
        token = Enrollment.from_reply(f"tls://devices:{pw['DEVICE']}@{hostport}", r).token()
        enrollment = parse_token(token)
        dev = await EngineClient.connect_enrolled(enrollment)
        try:
            assert (await dev.status()).head == server.core.log.head
        finally:
            await dev.close()
        errors = Errors()
        nc = await raw_connect(
            f"tls://devices:{pw['DEVICE']}@{hostport}", errors, **enrollment.nats_options()
        )
        try:
            # Devices share one broker user allowed on _INBOX.>: the admin tools'
            # replies (enroll: a new device's secret) are not there to be read.
            seen: list[bytes] = []

            async def keep(msg: Msg) -> None:
                seen.append(msg.data)

            spy = await nc.subscribe("_INBOX.>", cb=keep)
            await nc.flush()
            secret = (await admin.enroll("mallory-target")).secret
            await asyncio.sleep(0.5)
            await spy.unsubscribe()
            assert not [m for m in seen if b"secret" in m or secret.encode() in m]
            await _violations(
                nc,
                errors,
                [("pub", "synvoice.v1.log.x.y"), ("pub", protocol.ADMIN_ENROLL), ("sub", ">")],
            )
        finally:
            await nc.close()
        # Revocation is the engine's here: the shared broker user stays valid.
        await admin.revoke(enrollment.device_id)
        dev = await EngineClient.connect_enrolled(enrollment)
        try:
            try:
                await dev.status()
                raise AssertionError("revoked device was served")
            except SynvoiceError as exc:
                assert exc.code == "revoked"
        finally:
            await dev.close()
        # The reader user follows the stream and cannot write.
        assert server.publisher is not None
        await server.publisher.drain()
        errors = Errors()
        reader = await raw_connect(
            f"tls://reader:{pw['READER']}@{hostport}",
            errors,
            tls=server.tls,
        )
        try:
            js = reader.jetstream()
            sub = await js.pull_subscribe(
                protocol.LOG_SUBJECTS, durable="r", stream=protocol.STREAM
            )
            msgs = await sub.fetch(10, timeout=5)
            assert codec.unpack(msgs[0].data)["type"] == "settings.user_enrolled"
            await _violations(reader, errors, [("pub", "synvoice.v1.log.x.y")])
        finally:
            await reader.close()
        # Without credentials: refused.
        try:
            nc = await raw_connect(f"tls://{hostport}", tls=server.tls)
            await nc.close()
            raise AssertionError("anonymous client was let in")
        except Exception as exc:
            assert "Authorization Violation" in str(exc)
    finally:
        if h is not None:
            await h.close()
        await server.stop()
        broker.stop()


def test_systemd_unit_runs_a_valid_command() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(DEPLOY_DIR / "synvoice.service")
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert Path(argv[0]).name == "synvoice"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve" and str(args.data) == "/var/lib/synvoice"
    assert unit["Service"]["KillMode"] == "mixed"  # the engine stops its own broker
