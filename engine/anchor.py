"""The engine's anchors: its signing key, the checkpoints it makes, and the start check.

* ``DATA/engine.key``: the engine's Ed25519 key (PEM, 0600), beside the log, not
  in it. It signs checkpoints and keys the snapshot seal (``snapshot_key``).
* ``Anchor``: every ``EVERY_EVENTS`` events or ``EVERY_SECONDS`` (when the head
  moved) and at stop, a checkpoint of the head is signed, appended to
  ``DATA/checkpoints.jsonl``, published to the ``SYNVOICE_CHECKPOINTS`` stream and
  handed to devices in pull replies.
* At start the log is compared with what was published before (the local
  checkpoint file, the checkpoint stream, the event stream's last message): a log
  older than them is refused (``LogRollbackError``) unless the operator accepts it
  (``--accept-log-rollback``), which records ``settings.log_rolled_back`` after the
  highest published position, so no published position is used again. A log that
  disagrees with a checkpoint (rewritten) is always refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.client import Client
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from engine import checkpoints as cps
from engine import protocol
from engine.events import Event, new_event, now
from engine.log import Record
from engine.messages import AnchorStatus
from engine.schema.common import ENGINE_DEVICE
from engine.schema.settings import LogRolledBack

log = logging.getLogger("synvoice.anchor")

CHECKPOINTS_FILE = "checkpoints.jsonl"
EVERY_EVENTS = 10_000
EVERY_SECONDS = 5.0


class LogRollbackError(RuntimeError):
    """The log is older than, or disagrees with, what the engine published."""


def read_checkpoint_file(path: Path) -> list[cps.Checkpoint]:
    if not path.exists():
        return []
    return cps.loads(path.read_text())


class Anchor:
    """Makes and publishes the engine's checkpoints; checks the log at start."""

    def __init__(
        self,
        core: Any,  # engine.core.EngineCore (not imported: the core imports this module)
        nc: Client | None,
        *,
        accept_rollback: bool = False,
        every_events: int = EVERY_EVENTS,
        every_seconds: float = EVERY_SECONDS,
    ) -> None:
        self.core = core
        self.nc = nc
        self.js = nc.jetstream() if nc is not None else None
        self.key: Ed25519PrivateKey = core.engine_key
        self.public_key = cps.public_key_text(self.key)
        self.accept_rollback = accept_rollback
        self.every_events = every_events
        self.every_seconds = every_seconds
        self.file = core.config.data_dir / CHECKPOINTS_FILE
        self.last: cps.Checkpoint | None = None
        self._unpublished: cps.Checkpoint | None = None  # made, not yet in the stream
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- start ------------------------------------------------------------------------

    async def start(self) -> None:
        if self.js is not None:
            await self.js_ensure_stream()
        await self.check_log()
        self.core.status_parts["anchor"] = self.status
        self.core.listeners.append(self._on_commit)
        self._task = asyncio.create_task(self._run(), name="synvoice-checkpoints")
        if self._unanchored():
            await self.checkpoint()

    def _unanchored(self) -> bool:
        head: int = self.core.log.head
        return head > 0 and (self.last is None or self.last.position != head)

    async def js_ensure_stream(self) -> None:
        assert self.js is not None
        cfg = StreamConfig(
            name=protocol.CHECKPOINT_STREAM,
            subjects=[protocol.CHECKPOINT_SUBJECT],
            storage=StorageType.FILE,
            duplicate_window=600.0,
            num_replicas=self.core.config.stream_replicas,
        )
        try:
            await self.js.stream_info(protocol.CHECKPOINT_STREAM)
        except NotFoundError:
            await self.js.add_stream(cfg)

    async def published_anchors(self) -> list[tuple[cps.Checkpoint | None, int, bytes, str]]:
        """What was published before: (checkpoint or None, position, hash, where)."""
        out: list[tuple[cps.Checkpoint | None, int, bytes, str]] = []
        local, bad = cps.verified(read_checkpoint_file(self.file), self.public_key)
        for f in bad:
            log.warning("%s: %s (ignored)", self.file, f)
        if local:
            out.append(
                (local[-1], local[-1].position, local[-1].hash, f"checkpoint file {self.file}")
            )
        streamed = await self._stream_checkpoint()
        if streamed is not None:
            out.append((streamed, streamed.position, streamed.hash, "the checkpoint stream"))
            last = await self._stream_last_event()
            if last is not None:
                out.append((None, last[0], last[1], f"the stream {protocol.STREAM}"))
        return out

    async def _stream_checkpoint(self) -> cps.Checkpoint | None:
        """The last checkpoint in the stream if this engine's key signed it."""
        if self.js is None:
            return None
        try:
            msg = await self.js.get_last_msg(
                protocol.CHECKPOINT_STREAM, protocol.CHECKPOINT_SUBJECT
            )
            cp = cps.Checkpoint.from_dict(json.loads(msg.data or b""))
            cp.verify(self.public_key)
        except NotFoundError:
            return None
        except (ValueError, cps.CheckpointError) as exc:
            log.warning("the checkpoint stream's last message is not ours (%s): ignored", exc)
            return None
        return cp

    async def _stream_last_event(self) -> tuple[int, bytes] | None:
        assert self.js is not None
        try:
            info = await self.js.stream_info(protocol.STREAM)
            if not info.state.last_seq:
                return None
            msg = await self.js.get_msg(protocol.STREAM, info.state.last_seq)
            h = msg.headers or {}
            return int(h[protocol.HDR_POSITION]), bytes.fromhex(h[protocol.HDR_HASH])
        except (NotFoundError, KeyError, ValueError):
            return None

    async def check_log(self) -> None:
        head = self.core.log.head
        anchors = await self.published_anchors()
        skipped = await self.core.log.skipped()
        for cp, pos, h, where in anchors:
            if cp is not None and (self.last is None or cp.position > self.last.position):
                self.last = cp
            if pos > head:
                continue
            have = await self._hash_at(pos)
            if have is None and any(lo <= pos <= hi for lo, hi in skipped):
                continue  # published before a rollback that skipped it: not reused
            if have != h:
                raise LogRollbackError(
                    f"the log disagrees with {where} at position {pos}: it was rewritten "
                    "or is another engine's. Restore the log that matches it (or move the "
                    "data folder aside to start a new engine); the engine will not start."
                )
        top = max((a[1] for a in anchors), default=0)
        if top <= head:
            return
        where = ", ".join(a[3] for a in anchors if a[1] == top)
        msg = (
            f"the log ends at position {head} but {where} holds position {top}: the log is "
            "older than what was published (a restored backup or a cut tail)"
        )
        if not self.accept_rollback:
            raise LogRollbackError(
                f"{msg}. Restore the newer log, or start with --accept-log-rollback to "
                f"continue from this one (positions {head + 1}..{top} are then skipped, "
                "never reused, and a settings.log_rolled_back event records it)"
            )
        await self.roll_back(top, msg)

    async def roll_back(self, top: int, why: str) -> None:
        """Continue after ``top`` (a position published before, that this log lacks):
        record ``settings.log_rolled_back`` there (--accept-log-rollback only)."""
        head = self.core.log.head
        if top <= head:
            return
        if not self.accept_rollback:
            raise LogRollbackError(f"{why} (start with --accept-log-rollback to continue)")
        log.warning(
            "%s: accepted (--accept-log-rollback); positions %d..%d skipped", why, head + 1, top
        )
        await self._record_rollback(head, top, why)

    async def _hash_at(self, position: int) -> bytes | None:
        records = await self.core.log.read(position - 1, 1)
        if records and records[0].position == position:
            h: bytes = records[0].hash
            return h
        return None

    async def _record_rollback(self, head: int, top: int, reason: str) -> None:
        ev = new_event(
            "settings.log_rolled_back",
            LogRolledBack(after=head, skipped_to=top, reason=reason),
            device_id=ENGINE_DEVICE,
            user=ENGINE_DEVICE,
            device_seq=0,
        )
        self.core.log.skip_to(top)
        await self.core.append_engine_events([ev])

    # --- checkpoints --------------------------------------------------------------------

    def status(self) -> AnchorStatus:
        return AnchorStatus(self.public_key, self.last.to_dict() if self.last is not None else None)

    def _on_commit(self, sealed: Sequence[tuple[Event, Record]]) -> None:
        if self.last is None or self.core.log.head - self.last.position >= self.every_events:
            self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.every_seconds)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._unanchored() or self._unpublished is not None:
                try:
                    if self._unanchored():
                        await self.checkpoint()
                    else:
                        await self._publish()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("checkpoint not published (%s); retrying", exc)

    async def checkpoint(self) -> cps.Checkpoint:
        """Sign the log head now; keep it in the file, the stream and pull replies."""
        log_ = self.core.log
        if log_.head == 0:
            raise RuntimeError("an empty log has nothing to anchor")
        cp = cps.sign(self.key, log_.head, log_.last_hash, now().isoformat())
        line = cps.dumps([cp])
        await asyncio.to_thread(_append_line, self.file, line)
        self.last = cp
        self.core.checkpoint = cp.to_dict()
        self._unpublished = cp
        await self._publish()
        return cp

    async def _publish(self) -> None:
        """Publish the newest checkpoint not yet in the stream (retried until it is)."""
        cp = self._unpublished
        if cp is None or self.js is None:
            return
        await self.js.publish(
            protocol.CHECKPOINT_SUBJECT,
            cps.dumps([cp]).encode(),
            headers={"Nats-Msg-Id": f"{cp.key}:{cp.position}:{cp.hash.hex()}"},
        )
        if self._unpublished is cp:
            self._unpublished = None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            if self._unanchored():
                await self.checkpoint()
            else:
                await self._publish()
        except Exception as exc:
            log.warning("final checkpoint not published (%s)", exc)


def _append_line(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
