"""The console's actions, done as a device: Assign Number, renumber, a document's
PDF, and the Invoice Manager wizard (seed 002).

Contributed through the ``synvoice.console`` entry point. Changes are events
of the console's own device agents, pushed through the engine like any
device's: one agent for documents (user ``console``), one billing home for the
wizard (user ``billing``), both enrolled once, automatically, by the console's
admin link, their homes inside ``DATA/console``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response

from devices import documents_out
from devices.agent import DeviceAgent
from devices.billing import service
from devices.billing.config import load_config
from devices.billing.home import BillingHome
from devices.billing.invoicer import AgentBackend
from devices.seller import merged, push_seller, read_seller
from engine import codec
from engine.console.app import FormError, gap_key
from engine.errors import SynvoiceError
from engine.events import new_event, parse_event
from engine.schema.billing import ACTIONS, ScenarioRules, ScenarioSaved
from engine.schema.common import KINDS
from engine.schema.documents import GapExplained

if TYPE_CHECKING:
    from engine.console.app import Console

log = logging.getLogger("synvoice.console.devices")
TEMPLATES = Path(__file__).parent / "templates"
MAX_NUMBER = 2**53


def parse_number(raw: object) -> int:
    s = str(raw or "").strip()
    if not (s.isascii() and s.isdigit()) or len(s) > 15 or not 1 <= int(s) <= MAX_NUMBER:
        raise FormError("The new number must be a whole number above 0.")
    return int(s)


def rules_from_form(form: FormData) -> ScenarioRules:
    """Step one's rule fields as ScenarioRules; a bad value is a FormError."""
    data: dict[str, Any] = {}
    stages = [s.strip() for s in str(form.get("stages") or "").split(",") if s.strip()]
    data["stages"] = stages
    for k in ("close_from", "close_to", "period", "customer", "currency", "min_total", "max_total"):
        v = str(form.get(k) or "").strip()
        if v:
            data[k] = v
    approved = str(form.get("approved") or "any")
    if approved in ("yes", "no"):
        data["approved"] = approved == "yes"
    try:
        return ScenarioRules.model_validate(data)
    except ValueError as exc:
        errors = getattr(exc, "errors", None)
        if callable(errors):
            e = errors()[0]
            loc = ".".join(str(p) for p in e.get("loc", ()))
            raise FormError(f"Rule {loc or 'values'}: {e.get('msg')}") from None
        raise FormError(str(exc)) from None


class Agents:
    """The console's one device (user ``console``), enrolled on first use.

    One enrollment for both jobs (an edition counts users and devices): a
    billing home holds it, and its device agent, opened once, serves the
    document actions and the Invoice Manager's runs alike."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.billing = BillingHome(console.home / "device")
        self._agent: DeviceAgent | None = None
        self._lock = asyncio.Lock()
        self.billing_lock = asyncio.Lock()
        self.explained: dict[str, str] = {}  # gap_key -> reason, from the log

    async def billing_home(self) -> BillingHome:
        async with self._lock:
            if not self.billing.exists():
                _r, token = await self.console.admin.enroll("console", "web console")
                await service.init_home(self.billing, token)
        return self.billing

    async def agent(self, sync: bool = True) -> DeviceAgent:
        """The device agent (synced unless ``sync`` is False)."""
        home = await self.billing_home()
        async with self._lock:
            if self._agent is None:
                self._agent = await DeviceAgent.open(home.agent_home)
                await self._agent.connect(timeout=10.0)
            agent = self._agent
        if sync and agent.online:
            try:
                await agent.sync()
            except SynvoiceError as exc:
                log.warning("console device sync: %s", exc.message)
            await self._load_explained(agent)
        return agent

    async def _load_explained(self, agent: DeviceAgent) -> None:
        q = "SELECT body FROM events WHERE type = 'numbering.gap_explained' ORDER BY position"
        out: dict[str, str] = {}
        async with agent.store.conn.execute(q) as cur:
            async for (body,) in cur:
                p = parse_event(codec.unpack(body), stored=True).payload(GapExplained)
                out[gap_key(p.kind, p.series, p.first, p.last, p.period)] = p.reason
        self.explained = out

    async def close(self) -> None:
        if self._agent is not None:
            await self._agent.close()
            self._agent = None


class Progress:
    """A billing run's progress, sent to the open pages (SSE event ``progress``)."""

    def __init__(self, console: Console, run: dict[str, Any]) -> None:
        self.console = console
        self.run = run
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}

    def _send(self, name: str, finished: bool = False) -> None:
        state = {
            "phase": name,
            "done": self.done.get(name, 0),
            "total": self.totals.get(name, 0),
            "finished": finished,
        }
        self.run["progress"] = state
        self.console.hub.publish("progress", state)

    def phase(self, name: str, total: int) -> None:
        self.totals[name], self.done[name] = total, 0
        self._send(name)

    def advance(self, name: str, n: int = 1) -> None:
        self.done[name] = self.done.get(name, 0) + n
        self._send(name)

    def finish(self) -> None:
        n = max(self.totals.values(), default=0)
        self.totals["done"], self.done["done"] = n, n
        self._send("done", finished=True)


# The seller profile's fields as the page shows them (the logo is set with the CLI).
SELLER_FIELDS: tuple[tuple[str, str], ...] = (
    ("legal_name", "Legal name"),
    ("address", "Address"),
    ("country", "Country (ISO code)"),
    ("vat_id", "VAT id"),
    ("tax_id", "Tax number"),
    ("registration", "Registration"),
    ("email", "E-mail"),
    ("phone", "Phone"),
    ("iban", "IBAN"),
    ("bic", "BIC"),
    ("payment_terms", "Payment terms"),
)


def register(console: Console) -> None:
    agents = Agents(console)
    console.add_templates(TEMPLATES)
    console.add_nav("/billing", "Invoice Manager", 30)
    console.add_nav("/seller", "Seller", 75)
    console.add_tool("document", "console_document_tools.html")
    console.add_tool("documents", "console_assign_all.html")
    console.add_tool("numbers", "console_assign_all.html")
    console.add_tool("gap", "console_gap_tools.html")
    console.gap_notes = lambda: agents.explained
    console.shutdown.append(agents.close)
    run_state: dict[str, Any] = {
        "running": False,
        "scenario": None,
        "progress": None,
        "summary": None,
        "error": None,
    }

    # --- the seller profile (the seed's Settings) ----------------------------------------

    @console.page("/seller")
    async def seller_page(request: Request) -> Response:
        agent = await agents.agent()
        current = await read_seller(agent.store)
        return console.render(
            request,
            "console_seller.html",
            seller=current.model_dump() if current else None,
            fields=SELLER_FIELDS,
        )

    @console.action("/seller")
    async def seller_save(request: Request, form: FormData) -> Response:
        agent = await agents.agent()
        changes = {name: str(form.get(name) or "").strip() for name, _ in SELLER_FIELDS}
        try:
            profile = merged(await read_seller(agent.store), changes)
        except SynvoiceError as exc:
            raise FormError(exc.message.replace(" (--legal-name)", "")) from None
        await push_seller(agent, profile)
        console.flash(request, "ok", f"Seller profile saved: {profile.legal_name}.")
        return RedirectResponse("/seller", 303)

    # --- numbers -----------------------------------------------------------------------

    @console.action("/actions/assign")
    async def assign(request: Request, form: FormData) -> Response:
        agent = await agents.agent()
        doc_id = str(form.get("doc_id") or "")
        if doc_id:
            got = await agent.assign_numbers([doc_id])
            if not got:
                raise FormError("That document has a number already: nothing changed.")
        else:
            todo = [
                v.doc_id
                for v in agent.documents()
                if v.number == 0 and v.status != "void" and v.created
            ]
            got = await agent.assign_numbers(todo) if todo else {}
            if not got:
                raise FormError("No document is waiting for a number.")
        await agent.wait_synced(timeout=15.0)
        console.flash(
            request,
            "ok",
            ", ".join(f"{d[:8]} → {n}" for d, n in list(got.items())[:20])
            + (f" and {len(got) - 20} more" if len(got) > 20 else "")
            + f": {len(got)} number(s) assigned.",
        )
        return console.back(request, form)

    @console.page("/actions/renumber")
    async def renumber_preview(request: Request) -> Response:
        agent = await agents.agent()
        doc_id = request.query_params.get("doc_id", "")
        number = parse_number(request.query_params.get("number"))
        v = agent.document(doc_id)
        holders = [
            o
            for o in agent.documents(v.kind)
            if o.number == number and o.doc_id != v.doc_id and o.status != "void"
        ]
        return console.render(request, "console_renumber.html", v=v, number=number, holders=holders)

    @console.action("/actions/renumber")
    async def renumber(request: Request, form: FormData) -> Response:
        agent = await agents.agent()
        doc_id = str(form.get("doc_id") or "")
        number = parse_number(form.get("number"))
        v = agent.document(doc_id)
        holders = [
            o
            for o in agent.documents(v.kind)
            if o.number == number and o.doc_id != v.doc_id and o.status != "void"
        ]
        if holders and form.get("confirm") != "yes":
            raise FormError(
                f"{v.kind} {number} is in use: confirm on the preview to use it anyway."
            )
        # Confirmed on the preview: a duplicate on purpose (recorded as forced).
        await agent.set_number(v.doc_id, number, force=form.get("confirm") == "yes")
        await agent.wait_synced(timeout=15.0)
        console.flash(request, "ok", f"{v.kind.capitalize()} {v.number} is now {number}.")
        return RedirectResponse(f"/documents/{v.doc_id}", 303)

    @console.action("/actions/explain-gap")
    async def explain_gap(request: Request, form: FormData) -> Response:
        kind = str(form.get("kind") or "")
        if kind not in KINDS:
            raise FormError(f"Kind must be one of {', '.join(KINDS)}.")
        reason = str(form.get("reason") or "").strip()
        if not reason:
            raise FormError("Write down why these numbers are missing.")
        try:
            payload = GapExplained(
                kind=kind,
                series=str(form.get("series") or ""),
                period=str(form.get("period") or ""),
                first=int(str(form.get("first"))),
                last=int(str(form.get("last"))),
                reason=reason[:500],
            )
        except ValueError:
            raise FormError("That is not a gap of the report: reload the page.") from None
        home = await agents.billing_home()
        async with agents.billing_lock, service.session(home) as s:
            link = s.need_link()
            ev = new_event(
                "numbering.gap_explained",
                payload,
                device_id=link.device_id,
                user=link.user,
                device_seq=0,
                seen_position=s.state.position,
            )
            await link.push([ev])
        await agents.agent()  # pulls the event back: the report shows it explained
        console.flash(request, "ok", f"{kind} {payload.first}-{payload.last} marked explained.")
        return RedirectResponse("/numbers", 303)

    @console.page("/actions/pdf/{doc_id}")
    async def document_pdf(request: Request) -> Response:
        agent = await agents.agent()
        try:
            data = await documents_out.data_of(agent, request.path_params["doc_id"])
            body = await asyncio.to_thread(documents_out.render_pdf, data)
        except SynvoiceError as exc:  # no number yet, void, no seller profile, unprintable
            return PlainTextResponse(f"No PDF: {exc}", status_code=409)
        v = agent.document(request.path_params["doc_id"])
        return Response(
            body,
            media_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="{v.kind}-{v.number}.pdf"'},
        )

    # --- the Invoice Manager wizard ----------------------------------------------------------

    async def billing_state() -> Any:
        home = await agents.billing_home()
        async with agents.billing_lock, service.session(home) as s:
            return s.state

    @console.page("/billing")
    async def step1(request: Request) -> Response:
        state = await billing_state()
        scenarios = sorted((e.scenario for e in state.scenarios.values()), key=lambda sc: sc.name)
        chosen = request.query_params.get("scenario") or (scenarios[0].name if scenarios else "")
        current = state.scenario(chosen) if chosen else None
        return console.render(
            request,
            "console_billing_step1.html",
            scenarios=scenarios,
            current=current,
            actions=ACTIONS,
            sales=len(state.sales),
        )

    @console.action("/billing/scenario")
    async def save_scenario(request: Request, form: FormData) -> Response:
        name = str(form.get("name") or "").strip()
        action = str(form.get("default_action") or "email")
        if action not in ACTIONS:
            raise FormError(f"Billing action must be one of {', '.join(ACTIONS)}.")
        rules = rules_from_form(form)
        try:
            sc = ScenarioSaved(
                name=name,
                description=str(form.get("description") or "").strip() or None,
                rules=rules,
                default_action=action,
            )
        except ValueError:
            raise FormError("A scenario name is 1-64 letters, digits, spaces or ._@/-") from None
        home = await agents.billing_home()
        async with agents.billing_lock, service.session(home) as s:
            changed = await service.save_scenario(s, sc)
        console.flash(
            request, "ok", f"Scenario {name} saved." if changed else f"Scenario {name} unchanged."
        )
        target = "/billing/sales" if form.get("next") == "1" else "/billing"
        return RedirectResponse(f"{target}?scenario={_q(name)}", 303)

    @console.page("/billing/sales")
    async def step2(request: Request) -> Response:
        name = request.query_params.get("scenario", "")
        home = await agents.billing_home()
        if run_state["running"]:
            rows = run_state.get("rows") or []
            sc = None
        else:
            async with agents.billing_lock, service.session(home) as s:
                sc = service.get_scenario(s.state, name)
                rows = [r.as_dict() for r in service.fetch(s.state, sc.rules, date.today())]
        counts = {
            k: sum(1 for r in rows if r["status"] == k) for k in ("Not Done", "Processed", "Failed")
        }
        return console.render(
            request,
            "console_billing_step2.html",
            scenario=name,
            sc=sc,
            rows=rows,
            counts=counts,
            actions=ACTIONS,
            run=run_state,
        )

    @console.page("/billing/pdf/{sale_id}")
    async def sale_pdf(request: Request) -> Response:
        home = await agents.billing_home()
        sid = request.path_params["sale_id"]
        async with agents.billing_lock, service.session(home, online=False) as s:
            entry = s.state.sales.get(sid)
            path = None
            if entry is not None:
                rows = [
                    r for r in s.state.fetch(ScenarioRules(), date.today()) if r.sale.sale_id == sid
                ]
                path = rows[0].as_dict()["pdf"] if rows else None
        root = home.pdf_dir.resolve()
        if not path or not Path(path).resolve().is_relative_to(root) or not Path(path).exists():
            raise FormError(f"No PDF for sale {sid[:60]!r} yet.")
        return FileResponse(Path(path).resolve(), media_type="application/pdf")

    @console.action("/billing/process")
    async def process_invoices(request: Request, form: FormData) -> Response:
        name = str(form.get("scenario") or "")
        default = str(form.get("action_all") or "")
        overrides: dict[str, Any] = {}
        for key, value in form.multi_items():
            if key.startswith("action:"):
                if str(value) not in ACTIONS:
                    raise FormError(f"Billing action must be one of {', '.join(ACTIONS)}.")
                overrides[key[len("action:") :]] = str(value)
        if default and default not in ACTIONS:
            raise FormError(f"Billing action must be one of {', '.join(ACTIONS)}.")
        if default:  # "for all": every sale gets it
            overrides = {k: default for k in overrides}
        if run_state["running"]:
            raise FormError("A run is in progress: wait for it to finish.")
        home = await agents.billing_home()
        async with agents.billing_lock, service.session(home) as s:
            sc = service.get_scenario(s.state, name)
            rows = [r.as_dict() for r in service.fetch(s.state, sc.rules, date.today())]
        run_state.update(
            running=True, scenario=name, summary=None, error=None, rows=rows, progress=None
        )
        task = asyncio.create_task(_run(name, overrides, default or None))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return RedirectResponse(f"/billing/sales?scenario={_q(name)}", 303)

    tasks: set[asyncio.Task[None]] = set()

    async def _run(name: str, overrides: dict[str, Any], default: str | None) -> None:
        rep = Progress(console, run_state)
        try:
            home = await agents.billing_home()
            cfg = load_config(home.root)
            today = date.today()
            agent = await agents.agent(sync=False)
            async with agents.billing_lock, service.session(home) as s:
                # service.process_scenario, with the console's open agent as backend
                lock = s.home.lock()  # two runs never plan the same sales
                try:
                    await s.refresh()
                    sc = service.get_scenario(s.state, name)
                    rows = service.fetch(s.state, sc.rules, today)
                    backend = AgentBackend(agent)
                    action = default or sc.default_action
                    plan = await service.make_run_plan(s, backend, rows, action, overrides)  # type: ignore[arg-type]
                    result = await service.run_plan(
                        s, plan, cfg, scenario=sc.name, today=today, backend=backend, reporter=rep
                    )
                finally:
                    lock.close()
            run_state["summary"] = result.summary()
        except SynvoiceError as exc:
            run_state["error"] = exc.message
            console.errors.append((date.today().isoformat(), "/billing/process", exc.message))
        except Exception as exc:
            log.exception("billing run failed")
            run_state["error"] = f"{type(exc).__name__}: {exc}"
            console.errors.append(
                (date.today().isoformat(), "/billing/process", run_state["error"])
            )
        finally:
            run_state["running"] = False
            rep.finish()

    async def stop_runs() -> None:
        for t in list(tasks):
            t.cancel()

    console.shutdown.append(stop_runs)


def _q(s: str) -> str:
    from urllib.parse import quote

    return quote(s, safe="")
