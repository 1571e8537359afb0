"""Invoices on the event path: billing creates them through the device agent.

The billing home holds its own device agent (``home/agent``), enrolled like any
other device, so invoices are ordinary documents numbered by the user mode.

Batching with the agent's public API: after one sync (so single/distributed
numbering knows the latest numbers) the agent goes offline and the invoices are
created locally (in centralized mode they get number 0, like any offline
document), then one "Assign Number" request numbers them all and one sync
pushes them. That avoids one number round trip and one engine commit per
invoice. Issuing delivered invoices also happens offline; the final sync
pushes it. Commands given together share the agent's store transactions.

Never twice: the invoice of a sale gets doc id uuid5(sale id) (passed to the
agent's ``create``), so a re-run after a crash finds that document, and in
centralized mode the engine hands out the same reserved number again. The notes
("Sale <id> ...") are a second, human-visible link, also used to find the
invoice when an agent cannot take a doc id.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any, Protocol

from devices.billing.plan import Work
from engine.document import DocumentView
from engine.errors import SynvoiceError
from engine.schema.settings import SellerSet

NOTE_PREFIX = "Sale "
NUMBER_ROUNDS = 20  # distributed mode: numbering may need a few sync rounds (epoch runway)


class InvoiceBackend(Protocol):
    async def begin(self) -> None: ...

    async def create(self, work: Work, issue_date: date, due_date: date) -> DocumentView: ...

    async def number_and_push(self, doc_ids: Sequence[str]) -> None: ...

    async def views(self, doc_ids: Sequence[str]) -> dict[str, DocumentView]: ...

    async def all_invoices(self) -> list[DocumentView]: ...

    async def issue(self, doc_id: str) -> None: ...

    async def sync(self) -> None: ...

    async def close(self) -> None: ...


def note_for(work: Work) -> str:
    s = work.sale
    return f"{NOTE_PREFIX}{s.sale_id}" + (f" - {s.title}" if s.title else "")


def sale_of_note(notes: str | None) -> str | None:
    """The sale id a billing invoice's notes name (sale ids hold no spaces)."""
    if not notes or not notes.startswith(NOTE_PREFIX):
        return None
    rest = notes[len(NOTE_PREFIX) :].split()
    return rest[0] if rest else None


class AgentBackend:
    """``InvoiceBackend`` over ``devices.agent.DeviceAgent``."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self._takes_doc_id = "doc_id" in inspect.signature(agent.create).parameters

    @staticmethod
    async def init(agent_home: Path, token: str) -> None:
        from devices.agent import DeviceAgent

        agent = await DeviceAgent.init(agent_home, token)
        await agent.close()

    @classmethod
    async def open(cls, agent_home: Path) -> AgentBackend:
        from devices.agent import DeviceAgent

        if not (agent_home / "device.sqlite").exists():
            raise SynvoiceError(
                "not_found", f"no device agent in {agent_home} (run: synvoice billing init)"
            )
        return cls(await DeviceAgent.open(agent_home))

    @property
    def device_id(self) -> str:
        return str(self.agent.device_id)

    async def _online(self) -> None:
        if not await self.agent.connect(timeout=10.0):
            raise SynvoiceError("unavailable", "the billing device cannot reach the engine")

    async def begin(self) -> None:
        """Learn the latest numbers and mode, then work offline for the batch."""
        await self._online()
        await self.agent.sync()
        await self.agent.disconnect()

    async def create(self, work: Work, issue_date: date, due_date: date) -> DocumentView:
        s = work.sale
        kw: dict[str, Any] = {
            "currency": s.currency,
            "issue_date": issue_date,
            "due_date": due_date,
            "notes": note_for(work),
        }
        if self._takes_doc_id:
            kw["doc_id"] = work.doc_id
        view: DocumentView = await self.agent.create("invoice", s.customer, list(s.lines), **kw)
        return view

    async def number_and_push(self, doc_ids: Sequence[str]) -> None:
        """Number what is still unnumbered (one request per 1000 in centralized mode)
        and push everything; then go offline again."""
        await self._online()
        await self.agent.sync()
        for _ in range(NUMBER_ROUNDS):
            zeros = [d for d, v in (await self.views(doc_ids)).items() if v.number == 0]
            if not zeros:
                break
            got = await self.agent.assign_numbers(zeros)
            await self.agent.sync()  # distributed: the push extends the epochs
            if not got:
                break
        await self.agent.disconnect()

    async def all_invoices(self) -> list[DocumentView]:
        """This device's invoices (its own, and others it has pulled)."""
        docs: list[DocumentView] = self.agent.documents("invoice")
        return docs

    async def views(self, doc_ids: Sequence[str]) -> dict[str, DocumentView]:
        out: dict[str, DocumentView] = {}
        for d in doc_ids:
            try:
                out[d] = self.agent.document(d)
            except SynvoiceError:
                pass
        return out

    async def issue(self, doc_id: str) -> None:
        await self.agent.issue(doc_id)

    async def seller(self) -> SellerSet | None:
        """The seller profile this device last synced."""
        from devices.seller import read_seller

        return await read_seller(self.agent.store)

    def display_number(self, view: DocumentView) -> str:
        """The invoice's display number (its series' pattern, e.g. INV-2026-0042)."""
        return str(self.agent.display_number(view))

    async def sync(self) -> None:
        await self._online()
        await self.agent.sync()

    async def close(self) -> None:
        await self.agent.close()
