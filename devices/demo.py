"""``synvoice demo``: a newcomer's tour of the three numbering modes.

For each user mode it starts an embedded engine (its own nats-server on a free
port, data in a temp folder) and three device agents, plays the story the seed
product tells for that mode (devices going offline included) and prints the
numbers each device got and the duplicate report computed from the devices'
own document views. Everything is stopped and removed at the end.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devices.agent import DeviceAgent
from devices.numbering import duplicates
from engine.cli import print_json
from engine.client import EngineClient
from engine.config import EngineConfig
from engine.enrollment import Enrollment
from engine.protocol import ADMIN_DEVICE
from engine.schema.common import Line
from engine.server import EngineServer

LINES = [Line(description="Consulting", quantity=2, unit_price=150, tax_rate=20)]


@dataclass
class Story:
    title: str
    mode: str
    steps: list[str] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)
    duplicates_found: list[dict[str, Any]] = field(default_factory=list)  # before any fix
    duplicates: list[dict[str, Any]] = field(default_factory=list)  # at the end

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "mode": self.mode,
            "steps": self.steps,
            "documents": self.documents,
            "duplicates_found": self.duplicates_found,
            "duplicates": self.duplicates,
        }


@dataclass
class Stage:
    """One embedded engine and the devices of one story."""

    server: EngineServer
    admin: EngineClient
    work: Path
    story: Story
    devices: dict[str, DeviceAgent] = field(default_factory=dict)

    async def device(self, label: str, user: str, online: bool = True) -> DeviceAgent:
        r = await self.admin.enroll(user, label)
        token = Enrollment.from_reply(self.server.nats_url, r).token()
        agent = await DeviceAgent.init(self.work / label, token, background=False)
        self.devices[label] = agent
        if online:
            await agent.connect(timeout=10)
            await agent.sync()
        return agent

    def say(self, text: str) -> None:
        self.story.steps.append(text)

    async def create(self, label: str, customer: str, kind: str = "invoice") -> str:
        agent = self.devices[label]
        v = await agent.create(kind, customer, LINES)
        where = "online" if agent.online else "offline"
        if agent.online:
            await agent.sync()  # an online device sends its events at once
        self.say(
            f"{label} ({agent.user}, {where}) creates {kind} for {customer}: number {v.number}"
        )
        return v.doc_id

    async def offline(self, label: str) -> None:
        await self.devices[label].disconnect()
        self.say(f"{label} goes offline")

    async def online(self, label: str) -> None:
        agent = self.devices[label]
        await agent.connect(timeout=10)
        r = await agent.sync()
        self.say(f"{label} is back online and syncs (pushed {r.pushed}, pulled {r.pulled})")

    async def sync_all(self) -> None:
        for _ in range(2):  # a second round brings what the others pushed in the first
            for agent in self.devices.values():
                if agent.online:
                    await agent.sync()

    def finish(self) -> None:
        first = next(iter(self.devices.values()))
        labels = {a.device_id: label for label, a in self.devices.items()}
        self.story.documents = [
            {
                "kind": v.kind,
                "number": v.number,
                "source": v.number_source,
                "user": v.user,
                "device": labels.get(v.device_id, v.device_id),
                "customer": (v.customer or {}).get("name"),
                "doc_id": v.doc_id,
            }
            for v in first.documents()
        ]
        self.story.duplicates = duplicates(first.documents())
        # Every device ends with the same documents.
        ids = {d["doc_id"] for d in self.story.documents}
        for label, agent in self.devices.items():
            if {v.doc_id for v in agent.documents()} != ids:
                self.say(f"warning: {label} does not have every document")


@asynccontextmanager
async def stage(root: Path, name: str, story: Story) -> AsyncIterator[Stage]:
    cfg = EngineConfig(data_dir=root / name / "engine", nats_port=0, plugins=False)
    cfg.nats_url = None  # always an embedded broker of its own
    server = EngineServer(cfg)
    await server.start()
    assert server.core is not None and server.core.admin_secret is not None
    admin = await EngineClient.connect(
        server.nats_url, ADMIN_DEVICE, server.core.admin_secret, **server.admin_nats_options()
    )
    st = Stage(server, admin, root / name, story)
    try:
        yield st
    finally:
        for agent in st.devices.values():
            await agent.close()
        await admin.close()
        await server.stop()


async def single_user(root: Path) -> Story:
    story = Story("Single user: one person, several devices", "single")
    async with stage(root, "single", story) as s:
        await s.admin.set_mode("single")
        await s.device("desktop", "owner")
        await s.create("desktop", "Acme Ltd")
        await s.create("desktop", "Globex")
        await s.device("tablet", "owner")
        await s.device("phone", "owner")
        s.say("tablet and phone sync before leaving the office (they know invoices 1 and 2)")
        await s.offline("tablet")
        await s.create("tablet", "Initech (at the event site)")
        await s.online("tablet")
        await s.offline("phone")
        s.say("phone forgot to sync after the tablet's trip")
        dup = await s.create("phone", "Umbrella Corp")
        await s.online("phone")
        await s.sync_all()
        phone = s.devices["phone"]
        story.duplicates_found = phone.duplicates()
        for d in story.duplicates_found:
            s.say(f"duplicate reported: {d['kind']} {d['number']} used {len(d['documents'])} times")
        n = phone.numbering.next_number("invoice", phone.user) or 0
        await phone.set_number(dup, n)
        s.say(f"phone renumbers its invoice to {n} (same document, nothing lost)")
        await s.sync_all()
        s.finish()
    return story


async def centralized(root: Path) -> Story:
    story = Story("Multi user, centralized: the server hands out numbers", "centralized")
    async with stage(root, "centralized", story) as s:
        await s.admin.set_mode("centralized")
        await s.device("office-pc", "alice")
        await s.device("office-laptop", "bob")
        await s.device("sales-tablet", "carol")
        await s.create("office-pc", "Acme Ltd")
        await s.offline("sales-tablet")
        doc = await s.create("sales-tablet", "Hooli (customer site, no connection)")
        await s.devices["sales-tablet"].edit_lines(doc, [*LINES, *LINES])
        s.say("sales-tablet keeps working on its invoice numbered 0 (lines edited)")
        await s.create("office-laptop", "Globex")
        await s.create("office-pc", "Initech")
        await s.online("sales-tablet")
        got = await s.devices["sales-tablet"].assign_numbers()
        s.say(f"sales-tablet presses 'Assign Number': {', '.join(map(str, got.values()))}")
        await s.sync_all()
        s.finish()
    return story


async def distributed(root: Path) -> Story:
    story = Story("Multi user, distributed: slots k, k+N, k+2N …", "distributed")
    async with stage(root, "distributed", story) as s:
        for label, user in (("ann-laptop", "ann"), ("ben-laptop", "ben"), ("cat-laptop", "cat")):
            await s.device(label, user)
        await s.admin.set_mode("distributed")
        s.say("the operator enrolls ann, ben and cat (slots 1-3), then sets distributed mode")
        for label in s.devices:
            await s.devices[label].sync()
            await s.offline(label)
        for _ in range(3):
            for label, who in (("ann-laptop", "A"), ("ben-laptop", "B"), ("cat-laptop", "C")):
                await s.create(label, f"Customer of {who}")
        for label in list(s.devices):
            await s.online(label)
        await s.sync_all()
        ann = s.devices["ann-laptop"]
        nxt = ann.numbering.next_number("invoice", ann.user)
        s.say(
            f"no number was typed by hand; ann's next is {nxt}. When a user joins, a new epoch "
            "with N+1 starts after the numbers already handed out: no collision"
        )
        s.finish()
    return story


def _print(stories: list[Story]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    con.rule("[bold]Synvoice demo: three numbering modes, devices online and offline")
    for st in stories:
        con.print()
        con.rule(f"[bold]{st.title}  [dim](user mode {st.mode})")
        for step in st.steps:
            con.print(f"  • {step}")
        t = Table(title="documents (as every device sees them)")
        for col in ("kind", "number", "source", "user", "device", "customer"):
            t.add_column(col, justify="right" if col == "number" else "left")
        for d in st.documents:
            t.add_row(
                d["kind"],
                str(d["number"]),
                d["source"],
                d["user"],
                d["device"],
                d["customer"] or "-",
            )
        con.print(t)
        if st.duplicates_found:
            found = "; ".join(
                f"{d['kind']} {d['number']} used {len(d['documents'])} times"
                for d in st.duplicates_found
            )
            con.print(f"  duplicate report after sync: {found}")
        con.print(
            "  duplicate report now: "
            + (
                "none"
                if not st.duplicates
                else "; ".join(f"{d['kind']} {d['number']}" for d in st.duplicates)
            )
        )


async def run_demo(as_json: bool = False) -> list[Story]:
    with tempfile.TemporaryDirectory(prefix="synvoice-demo-") as tmp:
        root = Path(tmp)
        stories = [await single_user(root), await centralized(root), await distributed(root)]
    if as_json:
        print_json({"stories": [s.as_dict() for s in stories]})
    else:
        _print(stories)
    return stories
