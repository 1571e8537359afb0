"""``status``: the engine's state, edition and usage as one reply."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from engine import editions
from engine.messages import (
    BrokerStatus,
    DeviceStatus,
    EditionStatus,
    EpochStatus,
    Limits,
    PatternStatus,
    StatusReply,
    Usage,
)

if TYPE_CHECKING:
    from engine.core.engine import EngineCore


def status(core: EngineCore) -> StatusReply:
    st = core.state
    return StatusReply(
        version=_version(),
        head=core.log.head,
        published=core.published,
        mode=st.mode,
        mode_set=st.mode_set,
        users=dict(st.users),
        devices={d: DeviceStatus(i.user, i.name, i.revoked) for d, i in st.devices.items()},
        documents=st.documents,
        events=st.events,
        data_bytes=st.data_bytes,
        counters={k: c.last for k, c in st.counters.items()},
        epochs={
            k: [EpochStatus(e.epoch, e.start, e.increment, dict(e.slots), e.end) for e in eps]
            for k, eps in st.epochs.items()
        },
        team=st.numbering.team,
        patterns={
            k: PatternStatus(p.text, p.reset, p.tz, p.since)
            for k in st.numbering.patterns
            if (p := st.numbering.pattern(k)) is not None
        },
        uptime=round(time.time() - core.started_at, 3),
        **edition_fields(core.edition()),
        usage=usage_reply(core),
        integrations=sorted(st.integrations),
        broker=BrokerStatus(
            auth=bool(core.broker_info.get("auth")), tls=bool(core.broker_info.get("tls_ca"))
        ),
        # A plugin's part is a StatusReply field (a misnamed one fails loudly).
        **{key: part() for key, part in core.status_parts.items()},  # type: ignore[arg-type]
    )


def usage_reply(core: EngineCore) -> Usage:
    u = core.usage()
    return Usage(users=u.users, devices=u.devices, data_bytes=u.data_bytes)


def edition_fields(active: editions.Active) -> dict[str, Any]:
    """The ``EditionStatus`` fields of the edition in force."""
    fields = active.status()
    lim = active.limits
    fields["limits"] = Limits(users=lim.users, devices=lim.devices, data_bytes=lim.data_bytes)
    assert fields.keys() == set(EditionStatus.__struct_fields__)
    return fields


def _version() -> str:
    from engine import __version__

    return __version__
