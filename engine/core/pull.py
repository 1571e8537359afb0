"""``events.pull``: a page of the log, the stored events spliced in as they are."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import msgpack

from engine.core.base import Caller
from engine.core.numbers import epochs_stale, plan_open_epochs
from engine.messages import PullRequest

if TYPE_CHECKING:
    from engine.core.engine import EngineCore


async def pull(core: EngineCore, caller: Caller, req: PullRequest) -> bytes:
    """The reply bytes, in the shape of ``messages.PullReply`` (no re-encoding of
    the stored msgpack bodies)."""
    after = req.after
    limit = min(req.limit or core.config.pull_limit, core.config.pull_limit)
    with_hashes = req.hashes
    settling = core.writer.settling
    if epochs_stale(core):
        await core.writer.submit(plan_open_epochs(core), 1)
    elif settling is not None:
        # Engine events (e.g. the epochs another pull opened) are applied to
        # the state when planned: wait for their commit rather than read a
        # log without them.
        await asyncio.shield(settling)
    records = await core.log.read(after, limit, core.config.pull_max_bytes)
    head = core.log.head
    last = records[-1].position if records else after
    pk = msgpack.Packer(use_bin_type=True)
    parts = [
        pk.pack_map_header(3 + with_hashes + (core.checkpoint is not None)),
        pk.pack("head"),
        pk.pack(head),
        pk.pack("more"),
        pk.pack(last < head),
        pk.pack("events"),
        pk.pack_array_header(len(records)),
    ]
    parts.extend(r.body for r in records)
    if with_hashes:
        parts.append(pk.pack("hashes"))
        parts.append(pk.pack([r.hash for r in records]))
    if core.checkpoint is not None:
        parts.append(pk.pack("checkpoint"))
        parts.append(pk.pack(core.checkpoint))
    return b"".join(parts)
