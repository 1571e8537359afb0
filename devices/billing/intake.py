"""Engine plugin: sales published by integrations on the broker become events.

Integrations publish on ``synvoice.v1.billing.sales.in`` (a request, or a plain
publish when they need no answer). The body is JSON (or msgpack): one sale
object, a list of them, or ``{"sales": [...]}``, in the format of
``synvoice billing import`` (see ``devices.billing.sales``). A valid message
is recorded through the engine core's push path, so it is validated, group
committed and acknowledged only once durable; the reply (same encoding as the
request) is ``{"ok": true, "sales", "recorded", "unchanged", "results"}`` or
``{"error": {"code", "message"}}``. Nothing is recorded from a bad message.

The events are authored by the engine's own identity (device and user
"engine"): the broker connection, not a device signature, is what let the
integration in, so access to this subject is a broker permission.
Re-sending the same sale is idempotent: event ids derive from the sale id, its
content and the version it replaces (``devices.billing.ids``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
from nats.aio.msg import Msg

from devices.billing import sales
from devices.billing.fold import sale_digest
from engine import codec, protocol, replyto
from engine.core import Caller, EngineCore
from engine.errors import SynvoiceError
from engine.events import Event
from engine.log import Record, open_readonly
from engine.messages import PushRequest
from engine.schema.common import ENGINE_DEVICE

log = logging.getLogger("synvoice.billing.intake")

SUBJECT = protocol.BILLING_SALES_IN
QUEUE = "synvoice-billing-intake"


@dataclass
class Known:
    digest: str
    event_id: str
    position: int


class SalesIntake:
    def __init__(self, core: EngineCore) -> None:
        self.core = core
        self.known: dict[str, Known] = {}
        self.ready = asyncio.Event()
        self.sub: Any = None
        self._loader: asyncio.Task[None] | None = None

    # --- the index of current sale versions --------------------------------------

    def _learn(self, ev: Event) -> None:
        if ev.type != "sale.recorded":
            return
        from engine.schema.billing import SaleRecorded

        sale = ev.payload(SaleRecorded)
        pos = ev.position or 0
        cur = self.known.get(sale.sale_id)
        if cur is None or pos > cur.position:  # the scan and live commits may overlap
            self.known[sale.sale_id] = Known(sale_digest(sale), str(ev.event_id), pos)

    def on_commit(self, sealed: Sequence[tuple[Event, Record]]) -> None:
        for ev, _ in sealed:
            self._learn(ev)

    async def _load(self) -> None:
        try:
            conn = await open_readonly(self.core.config.log_path)
            try:
                async with conn.execute(
                    "SELECT body FROM events WHERE type = 'sale.recorded' ORDER BY position"
                ) as cur:
                    while rows := await cur.fetchmany(5000):
                        for (body,) in rows:
                            self._learn(Record(0, bytes(body), b"").event())
            finally:
                await conn.close()
        except Exception:
            log.exception("billing intake: cannot read recorded sales; recording without them")
        finally:
            self.ready.set()

    # --- life cycle ---------------------------------------------------------------

    async def start(self, nc: Any) -> None:
        self.core.listeners.append(self.on_commit)
        self._loader = asyncio.create_task(self._load(), name="billing-intake-load")
        self.sub = await nc.subscribe(SUBJECT, queue=QUEUE, cb=self._on_msg)

    async def stop(self) -> None:
        if self.sub is not None:
            try:
                await self.sub.unsubscribe()
            except Exception:
                pass
        if self._loader is not None:
            await self._loader
        if self.on_commit in self.core.listeners:
            self.core.listeners.remove(self.on_commit)

    # --- messages -----------------------------------------------------------------

    async def handle(self, body: bytes) -> dict[str, Any]:
        """Record the sales in one message body; raises SynvoiceError on bad input."""
        if len(body) > self.core.config.max_request_bytes:
            raise SynvoiceError(
                "too_large",
                f"message is {len(body)} bytes, limit is {self.core.config.max_request_bytes}",
            )
        doc = decode(body)
        items = sales.sales_from_doc(doc, "message", source="broker")
        if not items:
            raise SynvoiceError("schema", "message: no sales")
        await self.ready.wait()
        events, unchanged = sales.sale_events(
            items, self.known, device_id=ENGINE_DEVICE, user=ENGINE_DEVICE
        )
        results: list[dict[str, Any]] = []
        caller = Caller(ENGINE_DEVICE, ENGINE_DEVICE)
        step = self.core.config.max_batch_events
        for i in range(0, len(events), step):
            chunk = events[i : i + step]
            reply = await self.core.push(caller, PushRequest([e.to_wire() for e in chunk]))
            for ev, r in zip(chunk, reply.results, strict=True):
                results.append(
                    {
                        "sale_id": ev.data["sale_id"],
                        "event_id": r.event_id,
                        "position": r.position,
                        "duplicate": r.duplicate,
                    }
                )
        recorded = sum(1 for r in results if not r["duplicate"])
        return {
            "ok": True,
            "sales": len(items),
            "recorded": recorded,
            "unchanged": unchanged + len(results) - recorded,
            "results": results,
        }

    async def _on_msg(self, msg: Msg) -> None:
        if msg.reply and not replyto.inbox_reply_allowed(msg.reply, imported=True):
            # The reply is published with the engine's rights: a reply subject
            # such as the event stream's would have the intake write there.
            log.warning("billing intake: message with reply subject %r ignored", msg.reply[:80])
            return
        as_json = _is_json(msg.data)
        try:
            reply: dict[str, Any] = await self.handle(msg.data)
        except SynvoiceError as exc:
            reply = exc.to_wire()
            log.info("billing intake refused a message: %s", exc)
        except Exception as exc:  # never let a bad message stop the subscription
            log.exception("billing intake failed")
            reply = SynvoiceError("internal", f"intake failed: {type(exc).__name__}").to_wire()
        if msg.reply:
            data = json.dumps(reply).encode() if as_json else codec.pack(reply)
            try:
                await msg.respond(data)
            except Exception:
                log.warning("billing intake: cannot reply to %s", msg.reply)


def _is_json(body: bytes) -> bool:
    return body.lstrip()[:1] in (b"{", b"[")


def decode(body: bytes) -> Any:
    if not body.strip():
        raise SynvoiceError("bad_request", "empty message")
    if _is_json(body):
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SynvoiceError("bad_request", f"message is not valid JSON: {exc}") from None
        except RecursionError:  # json's decoder recurses per level
            raise SynvoiceError("bad_request", "message nests too deeply") from None
    else:
        try:
            # Untrusted bytes: lengths are capped by the body size, map keys must be plain.
            doc = msgpack.unpackb(body, raw=False, strict_map_key=True)
        except Exception as exc:
            raise SynvoiceError(
                "bad_request", f"message is neither JSON nor msgpack ({type(exc).__name__})"
            ) from None
    codec.check_depth(doc)
    return doc


async def attach(server: Any) -> None:
    if server.core is None or server.nc is None:
        return
    intake = SalesIntake(server.core)
    await intake.start(server.nc)
    server.billing_intake = intake
    server.on_stop.append(intake.stop)
