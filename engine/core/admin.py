"""The admin endpoints: enroll, revoke, user mode, registration, integrations.

Each is one writer job; a change of devices or integrations then has the
broker's users follow (``EngineCore.on_credentials_changed``) before the reply.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from datetime import date
from typing import TYPE_CHECKING, Any, TypeVar, cast

import msgspec

from engine import auth, brokerauth, editions, license, patterns, protocol
from engine.core.base import engine_event
from engine.core.status import edition_fields, usage_reply
from engine.core.writer import Batch, Resolver
from engine.errors import SynvoiceError
from engine.events import now
from engine.messages import (
    CredentialsReply,
    EnrollReply,
    IntegrationCredentials,
    IntegrationList,
    IntegrationRemovedReply,
    IntegrationReply,
    ModeReply,
    NumberingReply,
    PatternStatus,
    RegisterReply,
    RevokeReply,
)
from engine.schema.settings import (
    DeviceEnrolled,
    DeviceRevoked,
    IntegrationAdded,
    IntegrationRemoved,
    NumberPatternSet,
    Registered,
    TeamSizeSet,
    UserEnrolled,
    UserModeSet,
)

if TYPE_CHECKING:
    from engine.core.engine import EngineCore

log = logging.getLogger("synvoice.engine")

_Reply = TypeVar("_Reply", bound=CredentialsReply)


async def credentials_changed(core: EngineCore, reply: _Reply) -> _Reply:
    """Have the broker's users follow a committed change of devices or integrations."""
    if core.on_credentials_changed is not None:
        try:
            await core.on_credentials_changed()
        except Exception as exc:
            # The change is committed and the engine enforces it; say that
            # the broker has not caught up rather than hide it.
            log.exception("broker users not reloaded")
            reply = msgspec.structs.replace(
                reply, broker_warning=f"broker users not reloaded: {exc}"
            )
    return reply


async def enroll(core: EngineCore, user: str, name: str | None = None) -> EnrollReply:
    device_id = "dev-" + uuid.uuid4().hex[:12]
    secret = auth.new_secret()
    try:
        DeviceEnrolled(device_id=device_id, user=user, name=name)
    except Exception:
        raise SynvoiceError(
            "schema", "user must be 1-64 letters, digits, space, '.', '_', '@' or '-'"
        ) from None

    def plan(batch: Batch) -> Resolver:
        st = core.state
        editions.check_enroll(core.edition(), st.active_device_users(), user)
        slot = st.users.get(user)
        if slot is None:
            slot = len(st.users) + 1
            batch.add(engine_event("settings.user_enrolled", UserEnrolled(user=user, slot=slot)))
        batch.add(
            engine_event(
                "settings.device_enrolled",
                DeviceEnrolled(device_id=device_id, user=user, name=name),
            )
        )
        batch.side.append(
            ("INSERT INTO credentials(device_id, secret) VALUES (?, ?)", [(device_id, secret)])
        )

        def resolve(_base: int) -> Any:
            core.secrets[device_id] = secret
            return EnrollReply(
                device_id=device_id,
                secret=secret.hex(),
                user=user,
                slot=slot,
                broker_auth=bool(core.broker_info.get("auth")),
                tls_ca=core.broker_info.get("tls_ca"),
            )

        return resolve

    return await credentials_changed(core, cast(EnrollReply, await core.writer.submit(plan, 1)))


async def revoke(core: EngineCore, device_id: str, reason: str | None = None) -> RevokeReply:
    def plan(batch: Batch) -> Resolver:
        info = core.state.devices.get(device_id)
        if info is None:
            raise SynvoiceError("not_found", f"no device {device_id!r}")
        changed = not info.revoked
        if changed:
            batch.add(
                engine_event(
                    "settings.device_revoked", DeviceRevoked(device_id=device_id, reason=reason)
                )
            )
        return lambda _base: RevokeReply(device_id=device_id, revoked=True, changed=changed)

    reply = cast(RevokeReply, await core.writer.submit(plan, 1))
    if reply.changed:
        reply = await credentials_changed(core, reply)
    return reply


async def register(core: EngineCore, key: str) -> RegisterReply:
    """Verify a registration key and record it (``settings.registered``)."""
    lic = license.verify(key, core.trusted_keys, today=date.today())

    def plan(batch: Batch) -> Resolver:
        before = core.edition()
        reg = core.state.registration
        changed = reg is None or reg.get("fingerprint") != lic.fingerprint
        if changed:
            batch.add(
                engine_event(
                    "settings.registered",
                    Registered.model_validate({**lic.record(), "previous": before.edition.name}),
                )
            )

        def resolve(_base: int) -> Any:
            out = RegisterReply(
                changed=changed, **edition_fields(core.edition()), usage=usage_reply(core)
            )
            if core.config_license is not None:
                out.edition_note = (
                    "recorded, but the license key in the configuration "
                    "(SYNVOICE_LICENSE_KEY) is the one in force"
                )
            return out

        return resolve

    return cast(RegisterReply, await core.writer.submit(plan, 1))


async def integration(core: EngineCore, action: str, name: str | None) -> IntegrationReply:
    """add / remove / list integrations (read-only broker users for the stream)."""
    if action == "list":
        return IntegrationList(
            integrations=sorted(core.state.integrations),
            broker_auth=bool(core.broker_info.get("auth")),
        )
    if action not in ("add", "remove"):
        raise SynvoiceError("bad_request", "action must be add, remove or list")
    if not name:
        raise SynvoiceError("bad_request", "'name' must be a non-empty string")
    try:
        IntegrationRemoved(name=name)
    except Exception:
        raise SynvoiceError(
            "schema", "integration name must be 1-32 of a-z, 0-9, '_' or '-'"
        ) from None
    credential_id = secrets.token_hex(16)

    def plan(batch: Batch) -> Resolver:
        known = name in core.state.integrations
        if action == "remove":
            if not known:
                raise SynvoiceError("not_found", f"no integration {name!r}")
            batch.add(engine_event("settings.integration_removed", IntegrationRemoved(name=name)))
            return lambda _b: IntegrationRemovedReply(name=name, removed=True, changed=True)
        if not known:
            batch.add(
                engine_event(
                    "settings.integration_added",
                    IntegrationAdded(name=name, credential_id=credential_id),
                )
            )
        return lambda _b: _integration_credentials(core, name, changed=not known)

    reply = cast(
        IntegrationCredentials | IntegrationRemovedReply, await core.writer.submit(plan, 1)
    )
    if reply.changed:
        reply = await credentials_changed(core, reply)
    return reply


def _integration_credentials(core: EngineCore, name: str, changed: bool) -> IntegrationCredentials:
    assert core.admin_secret is not None
    cred = core.state.integrations[name]
    user = brokerauth.integration_user(name)
    return IntegrationCredentials(
        name=name,
        user=user,
        password=brokerauth.integration_password(core.admin_secret, name, cred),
        inbox_prefix=brokerauth.inbox_prefix(user),
        # With generated broker users, a mirror in the integration's account.
        stream=protocol.INTEGRATION_STREAM if core.broker_info.get("auth") else protocol.STREAM,
        subjects=protocol.LOG_SUBJECTS,
        broker_auth=bool(core.broker_info.get("auth")),
        tls_ca=core.broker_info.get("tls_ca"),
        changed=changed,
    )


async def set_mode(
    core: EngineCore, mode: str, force: bool = False, team: int | None = None
) -> ModeReply:
    try:
        payload = UserModeSet(mode=mode, previous=core.state.mode, forced=force)
    except Exception:
        raise SynvoiceError("schema", "mode must be single, centralized or distributed") from None
    check_team(team)

    def plan(batch: Batch) -> Resolver:
        st = core.state
        previous = st.mode
        if mode == "distributed" and previous != mode:
            # Per-user series never restart (see set_numbering): a period's
            # numbers could not be told from the next period's in one progression.
            resetting = sorted(
                k
                for k in st.numbering.patterns
                if (p := st.numbering.pattern(k)) and p.reset != "never"
            )
            if resetting:
                raise SynvoiceError(
                    "mode",
                    f"the {resetting[0]} pattern resets: distributed numbers are per-user "
                    "series that do not reset; set it again with --reset never first",
                )
        add_team(core, batch, team)
        if st.mode_set and previous == mode:
            return lambda _b: ModeReply(mode, changed=False)
        if st.documents > 0 and not force:
            raise SynvoiceError(
                "conflict",
                f"{st.documents} documents exist: the user mode is set once; "
                "use --force to change it (the change is recorded in the log)",
            )
        batch.add(
            engine_event(
                "settings.user_mode_set",
                payload.model_copy(
                    update={"previous": previous, "forced": force and st.documents > 0}
                ),
            )
        )
        if mode == "centralized":
            # Continue above every number already in use.
            for c in [*st.counters.values(), *st.period_counters.values()]:
                c.last = max(c.last, c.highest)
                c.taken.clear()
        return lambda _b: ModeReply(mode, changed=True, previous=previous)

    return cast(ModeReply, await core.writer.submit(plan, 1))


# --- numbering settings -----------------------------------------------------------------


def check_team(team: int | None) -> None:
    if team is not None:
        try:
            TeamSizeSet(size=team)
        except Exception:
            raise SynvoiceError("schema", "the team size is 1 to 10000") from None


def add_team(core: EngineCore, batch: Batch, team: int | None) -> bool:
    """Record a new team size (the next epoch opened steps by it); False if unchanged."""
    previous = core.state.numbering.team
    if team is None or team == previous:
        return False
    batch.add(
        engine_event("settings.team_size_set", TeamSizeSet(size=team, previous=previous or None))
    )
    return True


def numbering_reply(core: EngineCore, changed: bool) -> NumberingReply:
    ns = core.state.numbering
    return NumberingReply(
        changed=changed,
        team=ns.team,
        patterns={
            k: PatternStatus(p.text, p.reset, p.tz, p.since)
            for k in ns.patterns
            if (p := ns.pattern(k)) is not None
        },
    )


async def set_numbering(
    core: EngineCore,
    team: int | None,
    kind: str | None,
    pattern: str | None,
    reset: str = "never",
    tz: str = "UTC",
) -> NumberingReply:
    """The team size and/or one kind's number pattern, recorded as settings events.
    A pattern numbers from now on: numbers issued before keep theirs."""
    check_team(team)
    if kind is not None and pattern is not None:
        try:
            patterns.check_pattern(pattern, reset, tz)
        except patterns.PatternError as exc:
            raise SynvoiceError("schema", f"pattern: {exc}") from None
        if reset != "never" and core.state.mode == "distributed":
            raise SynvoiceError(
                "mode",
                "distributed numbers are per-user series that do not reset: "
                "use {YYYY} and {USER} in the pattern with --reset never",
            )

    def plan(batch: Batch) -> Resolver:
        changed = add_team(core, batch, team)
        if kind is not None and pattern is not None:
            cur = core.state.numbering.pattern(kind)
            if cur is None or (cur.text, cur.reset, cur.tz) != (pattern, reset, tz):
                batch.add(
                    engine_event(
                        "settings.number_pattern_set",
                        NumberPatternSet(
                            kind=kind,
                            pattern=pattern,
                            reset=reset,
                            tz=tz,
                            since=now(),
                            previous=cur.text if cur else None,
                        ),
                    )
                )
                changed = True
        return lambda _b: numbering_reply(core, changed)

    return cast(NumberingReply, await core.writer.submit(plan, 2))
