"""``synvoice billing ...``: the Invoice Manager on the command line.

Step one: pick a saved scenario (and, for this run, adjust its rule values with
the same flags ``scenario save`` takes). Step two: ``fetch`` lists the sales it
picks with their invoice status; ``process`` invoices them all in one go.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from devices.billing import rules as rules_mod
from devices.billing import service
from devices.billing.config import BillingConfig, load_config
from devices.billing.fold import STATUSES, SaleStatus
from devices.billing.home import DEFAULT_HOME, BillingHome
from devices.billing.plan import Plan, parse_action
from engine.cli import CliError, add_json_arg, print_json
from engine.errors import SynvoiceError
from engine.schema.billing import FILTER_OPS, Action, FieldFilter, ScenarioRules, ScenarioSaved

# --- argument helpers ---------------------------------------------------------------


def _date_arg(s: str) -> date:
    try:
        return date.fromisoformat(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a date (YYYY-MM-DD)") from None


def _decimal_arg(s: str) -> Decimal:
    try:
        return Decimal(s)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None


def _period_arg(s: str) -> str:
    p = rules_mod.normalize_period(s)
    try:
        rules_mod.period_range(p, date.today())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return p


_WHERE = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*(!=|>=|<=|\^=|=|~|>|<|\s+in\s+|\s+exists\s*$)\s*(.*)$"
)
_SYMBOLS = {"=": "eq", "!=": "ne", "~": "contains", "^=": "startswith", ">": "gt", ">=": "ge"}
_SYMBOLS.update({"<": "lt", "<=": "le", "in": "in", "exists": "exists"})


def parse_where(text: str) -> FieldFilter:
    """``region=EMEA``, ``owner!=bob``, ``title~renewal``, ``code^=EU``,
    ``seats>=10``, ``region in EMEA,APAC``, ``po_number exists``."""
    m = _WHERE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(
            f"cannot read filter {text!r} (e.g. region=EMEA, seats>=10, po exists; "
            f"operators: {', '.join(FILTER_OPS)})"
        )
    field, sym, value = m.group(1), m.group(2).strip(), m.group(3).strip()
    try:
        return FieldFilter(field=field, op=_SYMBOLS[sym], value=value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"filter {text!r}: {exc}") from None


def add_home_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--home",
        type=Path,
        default=DEFAULT_HOME,
        help="billing home folder (default $SYNVOICE_BILLING_HOME or ./billing)",
    )
    p.add_argument("--engine-url", help="broker URL (default: the one in the device token)")


def add_rule_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("billing rules")
    g.add_argument("--stage", action="append", help="stage to pick (repeat for several)")
    g.add_argument("--from", dest="close_from", type=_date_arg, help="closed on or after DATE")
    g.add_argument("--to", dest="close_to", type=_date_arg, help="closed on or before DATE")
    g.add_argument(
        "--period",
        type=_period_arg,
        help="close-date period: 'last month', 'this quarter', 'last 30 days', 2011-11, 2011-Q4",
    )
    a = g.add_mutually_exclusive_group()
    a.add_argument("--approved", dest="approved", action="store_const", const=True)
    a.add_argument("--not-approved", dest="approved", action="store_const", const=False)
    a.add_argument(
        "--any-approval", dest="approved", action="store_const", const="any", help="drop the rule"
    )
    g.add_argument("--customer", help="customer name contains TEXT")
    g.add_argument("--currency", type=str.upper)
    g.add_argument("--min-total", type=_decimal_arg)
    g.add_argument("--max-total", type=_decimal_arg)
    g.add_argument(
        "--where", action="append", type=parse_where, help="other field filter, e.g. region=EMEA"
    )


def rule_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.stage:
        out["stages"] = [s.strip() for s in args.stage if s.strip()]
    for k in ("close_from", "close_to", "period", "customer", "currency", "min_total"):
        if getattr(args, k) is not None:
            out[k] = getattr(args, k)
    if args.max_total is not None:
        out["max_total"] = args.max_total
    if args.approved is not None:
        out["approved"] = None if args.approved == "any" else args.approved
    if args.where:
        out["where"] = args.where
    return out


def _today(args: argparse.Namespace) -> date:
    t: date | None = getattr(args, "today", None)
    return t or date.today()


def _home(args: argparse.Namespace) -> BillingHome:
    return BillingHome(args.home)


def _console() -> Any:
    from rich.console import Console

    return Console()


# --- init / import / sales --------------------------------------------------------


async def _cmd_init(args: argparse.Namespace) -> int:
    token = args.token
    if token == "-":
        token = sys.stdin.readline().strip()
    home = _home(args)
    await service.init_home(home, token)
    if args.json:
        print_json({"home": str(home.root), "config": str(home.config_path)})
    else:
        print(f"billing home ready in {home.root} (settings: {home.config_path})")
    return 0


async def _cmd_import(args: argparse.Namespace) -> int:
    items = service.read_sales_file(args.file, args.format)
    async with service.session(_home(args), url=args.engine_url) as s:
        r = await service.record_sales(s, items)
    if args.json:
        print_json(r)
    else:
        print(
            f"{r['sales']} sales read from {args.file.name}: {r['recorded']} recorded, "
            f"{r['unchanged']} unchanged"
        )
    return 0


async def _cmd_sales(args: argparse.Namespace) -> int:
    async with service.session(_home(args), online=not args.offline, url=args.engine_url) as s:
        rows = [s.state.status_of(sid) for sid in sorted(s.state.sales)]
    if args.status:
        rows = [r for r in rows if r.status == args.status]
    if args.json:
        print_json({"sales": [r.as_dict() for r in rows]})
    else:
        _sales_table(rows, "sales")
    return 0


async def _cmd_rebuild(args: argparse.Namespace) -> int:
    async with service.session(_home(args), url=args.engine_url, rebuild=True) as s:
        n, pos = len(s.state.sales), s.state.position
    if args.json:
        print_json({"sales": n, "position": pos})
    else:
        print(f"billing view rebuilt from the log: {n} sales (log position {pos})")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.home, overrides=_config_overrides(args))
    if args.json:
        print_json(cfg.public())
    else:
        for k, v in cfg.public().items():
            print(f"{k:18} {v}")
    return 0


# --- scenarios --------------------------------------------------------------------


def _scenario_dict(sc: ScenarioSaved, today: date) -> dict[str, Any]:
    lo, hi = rules_mod.close_range(sc.rules, today)
    return {
        "name": sc.name,
        "description": sc.description,
        "default_action": sc.default_action,
        "rules": sc.rules.model_dump(mode="json", exclude_defaults=True),
        "summary": rules_mod.describe(sc.rules),
        "close_range": [lo.isoformat() if lo else None, hi.isoformat() if hi else None],
    }


async def _cmd_scenario_save(args: argparse.Namespace) -> int:
    edit = args.scenario_command == "edit"
    async with service.session(_home(args), url=args.engine_url) as s:
        if edit:
            cur = service.get_scenario(s.state, args.name)
            data = cur.rules.model_dump()
            for k in args.clear or []:
                data[k] = ScenarioRules.model_fields[k].get_default(call_default_factory=True)
            rules = service.effective_rules(
                ScenarioSaved(name=cur.name, rules=ScenarioRules.model_validate(data)),
                rule_overrides(args),
            )
            name = cur.name
            desc = cur.description if args.description is None else args.description
            action = cur.default_action if args.action is None else args.action
        else:
            if s.state.scenario(args.name) is not None:
                raise CliError(
                    f"scenario {args.name!r} exists (use: synvoice billing scenario edit)"
                )
            rules = service.effective_rules(
                ScenarioSaved(name="x", rules=ScenarioRules()), rule_overrides(args)
            )
            name, desc, action = args.name, args.description, args.action or "email"
        try:
            sc = ScenarioSaved(name=name, description=desc, rules=rules, default_action=action)
        except ValueError as exc:
            raise CliError(f"invalid scenario: {service._first_error(exc)}") from None
        changed = await service.save_scenario(s, sc)
    if args.json:
        print_json({**_scenario_dict(sc, _today(args)), "changed": changed})
    else:
        verb = "edited" if edit else "saved"
        print(
            f"scenario {sc.name!r} {verb if changed else 'unchanged'}: "
            f"{rules_mod.describe(sc.rules)}"
        )
    return 0


async def _cmd_scenario_list(args: argparse.Namespace) -> int:
    async with service.session(_home(args), online=not args.offline, url=args.engine_url) as s:
        items = sorted((e.scenario for e in s.state.scenarios.values()), key=lambda x: x.name)
    today = _today(args)
    if args.json:
        print_json({"scenarios": [_scenario_dict(sc, today) for sc in items]})
        return 0
    from rich.table import Table

    t = Table(title="billing scenarios")
    for col in ("name", "rules", "default action", "description"):
        t.add_column(col)
    for sc in items:
        t.add_row(sc.name, rules_mod.describe(sc.rules), sc.default_action, sc.description or "")
    _console().print(t)
    return 0


async def _cmd_scenario_show(args: argparse.Namespace) -> int:
    async with service.session(_home(args), online=not args.offline, url=args.engine_url) as s:
        sc = service.get_scenario(s.state, args.name)
    d = _scenario_dict(sc, _today(args))
    if args.json:
        print_json(d)
    else:
        print(f"{sc.name}: {rules_mod.describe(sc.rules, _today(args))}")
        print(f"  default action: {sc.default_action}")
        if sc.description:
            print(f"  {sc.description}")
    return 0


async def _cmd_scenario_delete(args: argparse.Namespace) -> int:
    async with service.session(_home(args), url=args.engine_url) as s:
        await service.delete_scenario(s, args.name)
    print_json({"deleted": args.name}) if args.json else print(f"scenario {args.name!r} deleted")
    return 0


# --- fetch ----------------------------------------------------------------------------


def _sales_table(rows: list[SaleStatus], title: str) -> None:
    from rich.table import Table

    t = Table(title=title)
    for col in ("sale", "customer", "closed", "total", "status", "invoice", "pdf", "channel"):
        t.add_column(
            col,
            justify="right" if col in ("total", "invoice") else "left",
            no_wrap=col in ("sale", "closed", "total", "invoice", "channel"),
        )
    for r in rows:
        d = r.as_dict()
        status = {"Processed": "[green]Processed[/]", "Failed": "[red]Failed[/]"}.get(
            d["status"], d["status"]
        )
        t.add_row(
            d["sale_id"],
            d["customer"],
            d["close_date"] or "",
            f"{d['currency']} {d['total']}",
            status + (f"\n[dim]{d['reason']}[/]" if d["reason"] else ""),
            str(d["invoice_number"] or ""),
            Path(d["pdf"]).name if d["pdf"] and d["status"] == "Processed" else "",
            d["channel"] or "",
        )
    _console().print(t)


async def _cmd_fetch(args: argparse.Namespace) -> int:
    today = _today(args)
    async with service.session(_home(args), online=not args.offline, url=args.engine_url) as s:
        sc = service.get_scenario(s.state, args.scenario)
        rules = service.effective_rules(sc, rule_overrides(args))
        rows = service.fetch(s.state, rules, today)
        counts = s.state.counts(rows)
    if args.status:
        rows = [r for r in rows if r.status == args.status]
    lo, hi = rules_mod.close_range(rules, today)
    if args.json:
        print_json(
            {
                "scenario": sc.name,
                "rules": rules.model_dump(mode="json", exclude_defaults=True),
                "close_range": [lo.isoformat() if lo else None, hi.isoformat() if hi else None],
                "counts": counts,
                "sales": [r.as_dict() for r in rows],
            }
        )
        return 0
    _sales_table(rows, f"{sc.name}: {rules_mod.describe(rules, today)}")
    print(", ".join(f"{v} {k}" for k, v in counts.items()))
    return 0


# --- process --------------------------------------------------------------------------


def _config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = (
        "smtp_host",
        "smtp_port",
        "smtp_starttls",
        "smtp_ssl",
        "smtp_cafile",
        "smtp_user",
        "smtp_from",
        "smtp_connections",
        "print_command",
        "spool",
        "company",
    )
    return {k: getattr(args, k, None) for k in keys}


def add_delivery_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("delivery (else $SYNVOICE_SMTP_* / billing.toml)")
    g.add_argument("--smtp-host")
    g.add_argument("--smtp-port", type=int)
    g.add_argument("--smtp-starttls", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--smtp-ssl", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--smtp-cafile", help="CA bundle to verify the SMTP server's certificate")
    g.add_argument("--smtp-user", help="login (password: $SYNVOICE_SMTP_PASSWORD or the file)")
    g.add_argument("--smtp-from", help="sender address")
    g.add_argument("--smtp-connections", type=int, help="parallel SMTP sessions")
    g.add_argument("--print-command", help="e.g. 'lp -d office {file}' (default: spool folder)")
    g.add_argument("--spool", help="spool folder when no print command is set")
    g.add_argument("--company", help="seller name on the PDF")


def _read_actions(path: Path) -> dict[str, Action]:
    """sale_id,action rows (CSV) or {"SALE": "print", ...} (JSON)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    out: dict[str, Action] = {}
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CliError(f"{path.name}: not valid JSON ({exc})") from None
        for k, v in doc.items():
            out[str(k)] = parse_action(str(v))
        return out
    for n, line in enumerate(text.splitlines(), 1):
        parts = [p.strip() for p in re.split(r"[,;\t]", line)]
        if not line.strip() or (n == 1 and parts[0].lower() in ("sale_id", "id", "sale")):
            continue
        if len(parts) != 2:
            raise CliError(f"{path.name} line {n}: expected sale_id,action")
        try:
            out[parts[0]] = parse_action(parts[1])
        except SynvoiceError as exc:
            raise CliError(f"{path.name} line {n}: {exc.message}") from None
    return out


def _set_arg(s: str) -> tuple[str, Action]:
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"{s!r}: expected SALE_ID=ACTION")
    sid, action = s.rsplit("=", 1)
    try:
        return sid.strip(), parse_action(action)
    except SynvoiceError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


class RichReporter:
    """Two progress bars: creating invoices, then PDF + delivery."""

    LABELS = {"create": "creating invoices", "deliver": "PDF + delivery"}

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def phase(self, name: str, total: int) -> None:
        self.tasks[name] = self.progress.add_task(self.LABELS.get(name, name), total=total)

    def advance(self, name: str, n: int = 1) -> None:
        self.progress.advance(self.tasks[name], n)


@contextmanager
def _progress(enabled: bool) -> Iterator[RichReporter | None]:
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("{task.description:20}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_console(),
        transient=False,
    ) as p:
        yield RichReporter(p)


def _plan_output(plan: Plan, sc: ScenarioSaved, json_out: bool) -> None:
    if json_out:
        print_json(
            {
                "dry_run": True,
                "scenario": sc.name,
                "summary": plan.summary(),
                "sales": [w.as_dict() for w in plan.todo],
                "already_processed": [r.sale.sale_id for r in plan.skipped],
            }
        )
        return
    from rich.table import Table

    t = Table(title=f"dry run: {sc.name} (nothing is created or sent)")
    for col in ("sale", "customer", "total", "status", "action", "invoice", "problem"):
        t.add_column(col, no_wrap=col in ("sale", "total", "action"))
    for w in plan.todo:
        d = w.as_dict()
        t.add_row(
            d["sale_id"],
            d["customer"],
            f"{d['currency']} {d['total']}",
            d["status"],
            d["action"],
            d["invoice"],
            d["problem"] or "",
        )
    _console().print(t)
    print(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in plan.summary().items()))


async def _cmd_process(args: argparse.Namespace) -> int:
    home = _home(args)
    cfg: BillingConfig = load_config(home.root, overrides=_config_overrides(args))
    overrides: dict[str, Action] = {}
    if args.actions:
        overrides.update(_read_actions(args.actions))
    overrides.update(dict(args.set or []))
    show_progress = args.progress or (not args.json and sys.stdout.isatty())
    async with service.session(home, url=args.engine_url) as s:
        with _progress(show_progress and not args.dry_run) as rep:
            run = await service.process_scenario(
                s,
                args.scenario,
                cfg,
                today=_today(args),
                action=args.action,
                overrides=overrides,
                rule_values=rule_overrides(args),
                dry_run=args.dry_run,
                reporter=rep,
                einvoice=args.einvoice,
            )
    if run.result is None:
        _plan_output(run.plan, run.scenario, args.json)
        return 0
    sc, res = run.scenario, run.result
    summary = res.summary()
    failures = [o for o in res.outcomes if not o.ok]
    if args.json:
        print_json(
            {
                "scenario": sc.name,
                "summary": summary,
                "outcomes": [o.as_dict() for o in res.outcomes],
            }
        )
    else:
        print(
            f"{summary['processed']} processed, {summary['failed']} failed, "
            f"{summary['already_processed']} already processed "
            f"({summary['invoices_created']} invoices created, "
            f"{summary['seconds'].get('total', 0):.1f} s)"
        )
        for o in failures:
            print(f"  {o.work.sale.sale_id}: Failed at {o.step}: {o.reason}")
    if failures:
        print(
            f"synvoice: {len(failures)} sale(s) failed; fix and re-run to retry them",
            file=sys.stderr,
        )
        return 2
    return 0


# --- wiring ---------------------------------------------------------------------------


def register(sub: Any) -> None:
    bp = sub.add_parser("billing", help="Invoice Manager: batch billing of sales")
    bsub = bp.add_subparsers(dest="billing_command", required=True, metavar="COMMAND")

    p = bsub.add_parser("init", help="set up a billing home with an enrollment token")
    p.add_argument(
        "--token", required=True, help="device token from 'synvoice enroll' ('-': stdin)"
    )
    add_home_args(p)
    add_json_arg(p)
    p.set_defaults(handler=_cmd_init)

    p = bsub.add_parser("import", help="record sales from a CSV or JSON file")
    p.add_argument("file", type=Path)
    p.add_argument("--format", choices=["csv", "json"], help="default: from the file name")
    add_home_args(p)
    add_json_arg(p)
    p.set_defaults(handler=_cmd_import)

    p = bsub.add_parser("sales", help="list every recorded sale with its invoice status")
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--offline", action="store_true", help="use the local view, do not pull")
    add_home_args(p)
    add_json_arg(p)
    p.set_defaults(handler=_cmd_sales)

    p = bsub.add_parser("scenario", help="billing scenarios: save, edit, list, show, delete")
    ssub = p.add_subparsers(dest="scenario_command", required=True, metavar="ACTION")
    for name, helptext in (("save", "save a new scenario"), ("edit", "change a scenario")):
        q = ssub.add_parser(name, help=helptext)
        q.add_argument("name")
        q.add_argument("--description")
        q.add_argument("--action", type=parse_action, help="default billing action")
        add_rule_args(q)
        if name == "edit":
            q.add_argument(
                "--clear",
                action="append",
                choices=sorted(ScenarioRules.model_fields),
                help="remove a rule",
            )
        q.add_argument("--today", type=_date_arg, help=argparse.SUPPRESS)
        add_home_args(q)
        add_json_arg(q)
        q.set_defaults(handler=_cmd_scenario_save)
    q = ssub.add_parser("list", help="list scenarios")
    q.add_argument("--offline", action="store_true")
    q.add_argument("--today", type=_date_arg, help="resolve relative periods as of DATE")
    add_home_args(q)
    add_json_arg(q)
    q.set_defaults(handler=_cmd_scenario_list)
    q = ssub.add_parser("show", help="show one scenario")
    q.add_argument("name")
    q.add_argument("--offline", action="store_true")
    q.add_argument("--today", type=_date_arg, help="resolve relative periods as of DATE")
    add_home_args(q)
    add_json_arg(q)
    q.set_defaults(handler=_cmd_scenario_show)
    q = ssub.add_parser("delete", help="delete a scenario")
    q.add_argument("name")
    add_home_args(q)
    add_json_arg(q)
    q.set_defaults(handler=_cmd_scenario_delete)

    p = bsub.add_parser("fetch", help="the sales a scenario picks, with their invoice status")
    p.add_argument("scenario")
    add_rule_args(p)
    p.add_argument("--status", choices=STATUSES, help="only sales with this status")
    p.add_argument("--today", type=_date_arg, help="resolve relative periods as of DATE")
    p.add_argument("--offline", action="store_true", help="use the local view, do not pull")
    add_home_args(p)
    add_json_arg(p)
    p.set_defaults(handler=_cmd_fetch)

    p = bsub.add_parser("process", help="invoice the sales a scenario picks, in one go")
    p.add_argument("scenario")
    add_rule_args(p)
    p.add_argument(
        "--action", type=parse_action, help="default action: email, print or create (only)"
    )
    p.add_argument(
        "--set", action="append", type=_set_arg, metavar="SALE=ACTION", help="per-sale action"
    )
    p.add_argument("--actions", type=Path, help="file of per-sale actions (CSV or JSON)")
    p.add_argument("--dry-run", action="store_true", help="show what would happen; change nothing")
    p.add_argument("--progress", action="store_true", help="progress bars even when piped")
    p.add_argument("--today", type=_date_arg, help="resolve relative periods as of DATE")
    p.add_argument(
        "--einvoice",
        choices=("ubl", "facturx"),
        help="also e-invoices: facturx (the PDF is a Factur-X PDF/A-3) or ubl (an .xml beside it)",
    )
    add_delivery_args(p)
    add_home_args(p)
    add_json_arg(p)
    p.set_defaults(handler=_cmd_process)

    p = bsub.add_parser("rebuild", help="rebuild the billing view from the log")
    add_home_args(p)
    add_json_arg(p)
    p.set_defaults(handler=_cmd_rebuild)

    p = bsub.add_parser("config", help="show the effective delivery settings")
    add_delivery_args(p)
    add_home_args(p)
    add_json_arg(p)
    p.set_defaults(handler=_cmd_config)
