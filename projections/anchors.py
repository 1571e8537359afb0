"""The auditor's anchor checks: a log against what was published outside it.

* signed checkpoints (``engine.checkpoints``): from a file the auditor kept
  (``--checkpoints``, or ``checkpoints.jsonl`` beside the log), from the
  ``SYNVOICE_CHECKPOINTS`` stream, or the latest one in the engine's pull reply;
* the event stream's ``Synvoice-Hash`` header of every message still in it;
* the state snapshot in the log's ``meta``, folded again from the log.

Each names what it finds (``engine.checkpoints.Finding``): a cut tail, records
rewritten with recomputed hashes, records appended after every anchor, an
edited snapshot. What each can and cannot see is in the README ("Tamper evidence").
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from engine import checkpoints as cps
from engine import codec, protocol
from engine.state import EngineState, fold_log

CHECKPOINTS_FILE = "checkpoints.jsonl"


@dataclass
class AnchorAudit:
    """What was checked, what could not be, and what was found."""

    checked: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    findings: list[cps.Finding] = field(default_factory=list)
    engine_key: str | None = None

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "engine_key": self.engine_key,
            "checked": self.checked,
            "skipped": self.skipped,
            "findings": [
                {"kind": f.kind, "position": f.position, "message": f.message}
                for f in self.findings
            ],
        }


# --- gathering the anchors ---------------------------------------------------------------


def load_file(path: Path) -> list[cps.Checkpoint]:
    try:
        return cps.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read checkpoints {path}: {exc.strerror}") from None
    except cps.CheckpointError as exc:
        raise ValueError(f"{path}: {exc}") from None


async def _iter_stream(
    nc: Client, stream: str, subject: str, headers_only: bool, batch: int = 1000
) -> AsyncIterator[list[Any]]:
    """Every message of a stream, oldest first, through an ephemeral pull consumer."""
    js = nc.jetstream()
    info = await js.stream_info(stream)
    last = info.state.last_seq
    if not info.state.messages:
        return
    sub = await js.pull_subscribe(
        subject,
        stream=stream,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.NONE,
            headers_only=headers_only,
            inactive_threshold=30.0,
        ),
    )
    try:
        seen = 0
        while seen < last:
            msgs = await sub.fetch(batch, timeout=5)
            if not msgs:
                break
            seen = msgs[-1].metadata.sequence.stream
            yield msgs
    finally:
        await sub.unsubscribe()


async def stream_checkpoints(nc: Client) -> list[cps.Checkpoint]:
    out: list[cps.Checkpoint] = []
    try:
        async for msgs in _iter_stream(
            nc, protocol.CHECKPOINT_STREAM, protocol.CHECKPOINT_SUBJECT, headers_only=False
        ):
            for m in msgs:
                try:
                    out.append(cps.Checkpoint.from_dict(json.loads(m.data)))
                except (ValueError, cps.CheckpointError):
                    continue  # not a checkpoint: the signature check is what counts
    except NotFoundError:
        return []
    out.sort(key=lambda c: c.position)
    return out


async def stream_hashes(nc: Client) -> AsyncIterator[list[tuple[int, bytes]]]:
    """(position, hash) of every event message in the stream, from its headers."""
    async for msgs in _iter_stream(nc, protocol.STREAM, protocol.LOG_SUBJECTS, headers_only=True):
        rows: list[tuple[int, bytes]] = []
        for m in msgs:
            h = m.headers or {}
            try:
                rows.append((int(h[protocol.HDR_POSITION]), bytes.fromhex(h[protocol.HDR_HASH])))
            except (KeyError, ValueError):
                continue
        yield rows


# --- the checks ----------------------------------------------------------------------------


def check_checkpoints(
    audit: AnchorAudit,
    checkpoints: Sequence[cps.Checkpoint],
    head: int,
    hash_at: dict[int, bytes],
    source: str,
) -> list[cps.Checkpoint]:
    """Verify the signatures (with the audit's key, else the first one's) and compare;
    returns the good checkpoints."""
    good, bad = cps.verified(checkpoints, audit.engine_key)
    audit.findings.extend(bad)
    if not good:
        return []
    audit.engine_key = good[0].key
    audit.checked.append(
        f"{len(good)} signed checkpoint(s) from {source} (positions {good[0].position}.."
        f"{good[-1].position})"
    )
    for f in cps.compare(good, head, hash_at, source):
        if f.kind == "rewritten":
            earlier = [c.position for c in good if c.position < f.position and c.position <= head]
            ok_before = [p for p in earlier if hash_at.get(p) == _cp_hash(good, p)]
            lo = max(ok_before, default=0) + 1
            f = cps.Finding(
                f.kind, lo, f"{f.message}; the first altered record is in {lo}..{f.position}"
            )
        audit.findings.append(f)
    return good


def _cp_hash(good: Sequence[cps.Checkpoint], position: int) -> bytes | None:
    return next((c.hash for c in good if c.position == position), None)


def hashes_at(conn: sqlite3.Connection, positions: Sequence[int]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    ps = sorted(set(positions))
    for i in range(0, len(ps), 500):
        chunk = ps[i : i + 500]
        q = f"SELECT position, hash FROM events WHERE position IN ({','.join('?' * len(chunk))})"
        out.update((int(p), bytes(h)) for p, h in conn.execute(q, chunk))
    return out


async def check_stream(audit: AnchorAudit, nc: Client, conn: sqlite3.Connection, head: int) -> int:
    """Compare every ``Synvoice-Hash`` in the stream with the log file; returns the
    highest position the stream vouches for (0: none)."""
    first_bad: int | None = None
    top = 0
    count = 0
    async for rows in stream_hashes(nc):
        if not rows:
            continue
        count += len(rows)
        top = max(top, max(p for p, _ in rows))
        if first_bad is not None:
            continue
        have = hashes_at(conn, [p for p, _ in rows if p <= head])
        for p, h in rows:
            if p <= head and have.get(p) != h:
                first_bad = p
                break
    if not count:
        audit.skipped.append(f"the stream {protocol.STREAM} is empty")
        return 0
    audit.checked.append(f"{count} Synvoice-Hash header(s) of the stream {protocol.STREAM}")
    if first_bad is not None:
        audit.findings.append(
            cps.Finding(
                "rewritten",
                first_bad,
                f"rewritten: at position {first_bad} the log's hash differs from the stream's "
                f"Synvoice-Hash (the record was altered, or removed and its place refilled)",
            )
        )
    if top > head:
        audit.findings.append(
            cps.Finding(
                "truncated",
                head + 1,
                f"tail truncated: the log ends at position {head}, the stream holds "
                f"positions up to {top}: records {head + 1}..{top} are missing from the log",
            )
        )
    return top


def check_unanchored(audit: AnchorAudit, head: int, anchored: int, sources: str) -> None:
    if head > anchored:
        audit.findings.append(
            cps.Finding(
                "unanchored",
                anchored + 1,
                f"forged append? records {anchored + 1}..{head} are in no checkpoint"
                f"{' and not in the stream' if 'stream' in sources else ''} "
                f"(anchored up to position {anchored} by {sources})",
            )
        )


def check_snapshot(audit: AnchorAudit, conn: sqlite3.Connection, head: int) -> None:
    """Fold the engine state from the log and compare it with the stored snapshot."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'state'").fetchone()
    if row is None:
        audit.skipped.append("the log has no state snapshot")
        return
    try:
        outer = codec.unpack(bytes(row[0]))
        sealed = isinstance(outer, dict) and "sealed" in outer
        snap = codec.unpack(outer["sealed"]) if sealed else outer
        stored = EngineState.from_snapshot(snap).to_snapshot()
    except Exception as exc:
        audit.findings.append(
            cps.Finding("snapshot", 0, f"the state snapshot does not load: {exc}")
        )
        return
    if sealed and isinstance(outer.get("position"), int) and outer["position"] != head:
        at = outer["position"]
        what = (
            f"records {head + 1}..{at} were removed"
            if at > head
            else f"records {at + 1}..{head} were appended without the engine"
        )
        audit.findings.append(
            cps.Finding(
                "truncated" if at > head else "unanchored",
                min(at, head) + 1,
                f"the state snapshot was taken at position {at} but the log ends at {head}: {what}",
            )
        )
        return  # a snapshot of another head differs from this log's fold anyway
    cur = conn.execute("SELECT body FROM events ORDER BY position")
    folded = EngineState()
    while rows := cur.fetchmany(10_000):
        fold_log((bytes(b) for (b,) in rows), folded)
    mine = folded.to_snapshot()
    differ = sorted(k for k in mine if k != "extra" and mine[k] != stored.get(k))
    audit.checked.append("the state snapshot against the state folded from the log")
    if differ:
        detail = "; ".join(
            f"{k}: snapshot {_short(stored.get(k))}, log {_short(mine[k])}" for k in differ
        )
        audit.findings.append(
            cps.Finding("snapshot", 0, f"the state snapshot was edited: {detail}")
        )


def _short(v: Any) -> str:
    text = json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:117] + "..."
