"""Billing operations used by the CLI and the benchmark (I/O: engine, agent, files)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from devices.billing import ids, process, sales
from devices.billing.config import BillingConfig
from devices.billing.fold import BillingState, SaleStatus, scenario_digest
from devices.billing.home import BillingHome
from devices.billing.invoicer import AgentBackend, InvoiceBackend, sale_of_note
from devices.billing.plan import ExistingDoc, Plan, make_plan
from devices.billing.remote import EngineLink
from devices.billing.store import BillingStore
from engine.document import DocumentView
from engine.errors import SynvoiceError
from engine.events import new_event
from engine.schema.billing import (
    Action,
    SaleRecorded,
    ScenarioDeleted,
    ScenarioRules,
    ScenarioSaved,
)


@dataclass
class Session:
    home: BillingHome
    link: EngineLink | None
    store: BillingStore
    state: BillingState
    loaded: bool = False

    def need_link(self) -> EngineLink:
        if self.link is None:
            raise SynvoiceError("unavailable", "this needs the engine (drop --offline)")
        return self.link

    async def refresh(self) -> BillingState:
        """Pull what is new from the engine and fold it into the billing view
        (the fold is incremental: only new events are applied)."""
        if not self.loaded:
            self.state = await self.store.state()
            self.loaded = True
        if self.link is not None:
            await self.store.sync(self.link, self.state)
        await self.store.write_view(self.state)
        return self.state


async def init_home(home: BillingHome, token: str) -> None:
    from engine.enrollment import parse_token

    new = parse_token(token)  # refuse a damaged token before writing anything
    if home.exists():
        old = parse_token(home.token())
        if old.device_id != new.device_id:
            raise SynvoiceError(
                "conflict",
                f"{home.root} is set up for device {old.device_id}; use another --home",
            )
    home.create(token)
    if not (home.agent_home / "device.sqlite").exists():
        await AgentBackend.init(home.agent_home, token)


@asynccontextmanager
async def session(
    home: BillingHome, *, online: bool = True, url: str | None = None, rebuild: bool = False
) -> AsyncIterator[Session]:
    token = home.token()
    store = await BillingStore.open(home.db_path)
    link: EngineLink | None = None
    try:
        if rebuild:
            await store.reset()
        if online:
            link = await EngineLink.open(token, url)
        s = Session(home, link, store, BillingState())
        await s.refresh()
        yield s
    finally:
        if link is not None:
            await link.close()
        await store.close()


# --- sales ------------------------------------------------------------------------


def read_sales_file(path: Path, fmt: str | None = None) -> list[SaleRecorded]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SynvoiceError("not_found", f"cannot read {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SynvoiceError(
            "bad_request", f"{path.name}: not UTF-8 text (byte {exc.start})"
        ) from None
    return sales.parse_text(text, fmt or sales.detect_format(path.name, text), path.name)


async def record_sales(s: Session, items: Sequence[SaleRecorded]) -> dict[str, int]:
    link = s.need_link()
    events, unchanged = sales.sale_events(
        items,
        s.state.sales,
        device_id=link.device_id,
        user=link.user,
        seen_position=s.state.position,
    )
    pushed = await link.push(events)
    await s.refresh()
    return {
        "sales": len(items),
        "recorded": pushed.new,
        "unchanged": unchanged + pushed.duplicate,
    }


# --- scenarios --------------------------------------------------------------------


async def save_scenario(s: Session, sc: ScenarioSaved) -> bool:
    """Record a scenario (new or edited); False when it is already saved as is."""
    link = s.need_link()
    key = sc.name.casefold()
    cur = s.state.scenarios.get(key)
    d = scenario_digest(sc)
    if cur is not None and cur.digest == d:
        return False
    ev = new_event(
        "billing.scenario_saved",
        sc,
        device_id=link.device_id,
        user=link.user,
        device_seq=0,
        seen_position=s.state.position,
        event_id=ids.scenario_event_id(sc.name, d, s.state.scenario_last.get(key)),
    )
    await link.push([ev])
    await s.refresh()
    return True


async def delete_scenario(s: Session, name: str) -> None:
    link = s.need_link()
    key = name.casefold()
    if key not in s.state.scenarios:
        raise SynvoiceError("not_found", f"no billing scenario {name!r}")
    ev = new_event(
        "billing.scenario_deleted",
        ScenarioDeleted(name=s.state.scenarios[key].scenario.name),
        device_id=link.device_id,
        user=link.user,
        device_seq=0,
        seen_position=s.state.position,
        event_id=ids.scenario_deleted_id(name, s.state.scenario_last.get(key)),
    )
    await link.push([ev])
    await s.refresh()


def get_scenario(state: BillingState, name: str) -> ScenarioSaved:
    sc = state.scenario(name)
    if sc is None:
        known = ", ".join(sorted(e.scenario.name for e in state.scenarios.values())) or "none"
        raise SynvoiceError("not_found", f"no billing scenario {name!r} (saved: {known})")
    return sc


def effective_rules(sc: ScenarioSaved, overrides: Mapping[str, Any] | None) -> ScenarioRules:
    """The scenario's rules with this run's values (step one of the wizard)."""
    if not overrides:
        return sc.rules
    data = sc.rules.model_dump()
    data.update(overrides)
    try:
        return ScenarioRules.model_validate(data)
    except ValueError as exc:
        raise SynvoiceError("schema", f"invalid rule values: {_first_error(exc)}") from None


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        e = errors()[0]
        loc = ".".join(str(p) for p in e.get("loc", ()))
        return f"{loc}: {e.get('msg')}" if loc else str(e.get("msg"))
    return str(exc)


def fetch(state: BillingState, rules: ScenarioRules, today: date) -> list[SaleStatus]:
    return state.fetch(rules, today)


# --- processing -------------------------------------------------------------------


def existing_docs(views: Sequence[DocumentView], device_id: str) -> dict[str, ExistingDoc]:
    """Invoices this billing device made, keyed by the doc id billing expects.

    Keyed by their own doc id, and by uuid5(sale id) when the notes name the
    sale (the agent makes its own doc ids; this keeps "never twice" after a
    crash). Voided invoices are kept (the plan replaces them) but never matched
    by their notes.
    """
    out: dict[str, ExistingDoc] = {}
    by_note: dict[str, ExistingDoc] = {}
    for v in views:
        if v.device_id != device_id:
            continue
        doc = ExistingDoc(v.doc_id, v.number, v.status)
        out[v.doc_id] = doc
        sid = sale_of_note(v.notes)
        if sid is not None and v.status != "void":
            by_note.setdefault(str(ids.invoice_doc_id(sid)), doc)
    for k, doc in by_note.items():
        out.setdefault(k, doc)
    return out


async def make_run_plan(
    s: Session,
    backend: AgentBackend | None,
    rows: Sequence[SaleStatus],
    default: Action,
    overrides: Mapping[str, Action] | None,
) -> Plan:
    existing = existing_docs(await backend.all_invoices(), backend.device_id) if backend else {}
    return make_plan(rows, s.state, default, overrides, existing)


async def run_plan(
    s: Session,
    plan: Plan,
    cfg: BillingConfig,
    *,
    scenario: str | None,
    today: date,
    backend: InvoiceBackend,
    reporter: process.Reporter | None = None,
    einvoice: str | None = None,
) -> process.RunResult:
    """Run a plan (the caller holds ``home.lock()`` from planning to here)."""
    s.home.pdf_dir.mkdir(parents=True, exist_ok=True)
    res = await process.run(
        plan,
        backend=backend,
        link=s.need_link(),
        ctx=process.RunContext(s.home, cfg, scenario, today, einvoice=einvoice),
        reporter=reporter,
    )
    await s.refresh()
    return res


@dataclass
class ProcessRun:
    scenario: ScenarioSaved
    plan: Plan
    result: process.RunResult | None  # None for a dry run


async def process_scenario(
    s: Session,
    name: str,
    cfg: BillingConfig,
    *,
    today: date,
    action: Action | None = None,
    overrides: Mapping[str, Action] | None = None,
    rule_values: Mapping[str, Any] | None = None,
    dry_run: bool = False,
    reporter: process.Reporter | None = None,
    einvoice: str | None = None,
) -> ProcessRun:
    """Fetch a scenario's sales and process them (or only plan, for a dry run).

    Holds the billing home's lock from planning to the last recorded outcome, so
    two runs cannot plan the same sales.
    """
    lock = None if dry_run else s.home.lock()
    try:
        if not dry_run:
            await s.refresh()  # what another run recorded before we got the lock
        sc = get_scenario(s.state, name)
        rows = fetch(s.state, effective_rules(sc, rule_values), today)
        backend = await AgentBackend.open(s.home.agent_home)
        try:
            plan = await make_run_plan(s, backend, rows, action or sc.default_action, overrides)
            if dry_run:
                return ProcessRun(sc, plan, None)
            res = await run_plan(
                s,
                plan,
                cfg,
                scenario=sc.name,
                today=today,
                backend=backend,
                reporter=reporter,
                einvoice=einvoice,
            )
            return ProcessRun(sc, plan, res)
        finally:
            await backend.close()
    finally:
        if lock is not None:
            lock.close()
