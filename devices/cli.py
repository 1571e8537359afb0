"""``synvoice device …`` and ``synvoice demo``.

Every device command opens the device in ``--home``, tries to go online for
``--timeout`` seconds and syncs if it can; offline it works on the local store
(a centralized-mode invoice then gets number 0) and says so on stderr.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NoReturn

from devices.agent import DeviceAgent, SyncResult
from devices.documents_out import credit_notes_of, credited_of
from devices.progress import SyncProgress
from engine.cli import CliError, add_json_arg, print_json
from engine.crediting import credited_summary
from engine.document import DocumentView
from engine.errors import SynvoiceError
from engine.schema.common import KINDS, Customer, Line

DEFAULT_HOME = os.environ.get("SYNVOICE_DEVICE_HOME", "./device")
try:
    DEFAULT_TIMEOUT = float(os.environ.get("SYNVOICE_DEVICE_TIMEOUT", "2"))
except ValueError:  # a bad value must not break every synvoice command
    DEFAULT_TIMEOUT = 2.0
# Refusals of a sync that leave the device working locally (clock skew, edition
# limit, revoked); `device sync` itself reports them as errors.
REFUSALS = frozenset({"unauthorized", "limit", "revoked", "forbidden"})


class _OneLineParser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr, exit status 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        print(f"synvoice: error: {self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


def _one_line_error(parser: argparse.ArgumentParser) -> None:
    def error(message: str) -> NoReturn:
        print(f"synvoice: error: {parser.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)

    setattr(parser, "error", error)  # noqa: B010 (argparse has no hook for this)


# --- parsing helpers ---------------------------------------------------------------------


def parse_line(text: str) -> Line:
    """``description:quantity:unit price[:tax%]`` (the description may contain ':')."""
    parts = text.split(":")
    if len(parts) < 3:
        raise CliError(f"--line {text!r}: expected description:quantity:price[:tax%]")

    def num(s: str, what: str) -> Decimal:
        try:
            return Decimal(s.strip().rstrip("%"))
        except InvalidOperation:
            raise CliError(f"--line {text!r}: {what} {s!r} is not a number") from None

    tax = Decimal(0)
    if (
        len(parts) >= 4
        and _is_number(parts[-1])
        and _is_number(parts[-2])
        and _is_number(parts[-3])
    ):
        tax = num(parts[-1], "tax")
        parts = parts[:-1]
    desc = ":".join(parts[:-2]).strip()
    try:
        return Line(
            description=desc,
            quantity=num(parts[-2], "quantity"),
            unit_price=num(parts[-1], "price"),
            tax_rate=tax,
        )
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        errs = exc.errors() if hasattr(exc, "errors") else []
        if not errs:
            raise CliError(f"--line {text!r}: {exc}") from None
        field = str(errs[0]["loc"][0]) if errs[0].get("loc") else ""
        what = _LINE_FIELDS.get(field, field)
        raise CliError(f"--line {text!r}: {what}: {errs[0]['msg']}") from None


# The words a --line is written in, for the Line field a message is about.
_LINE_FIELDS = {
    "description": "description",
    "quantity": "quantity",
    "unit_price": "price",
    "tax_rate": "tax rate (percent)",
}


def _is_number(s: str) -> bool:
    try:
        Decimal(s.strip().rstrip("%"))
        return True
    except InvalidOperation:
        return False


def resolve(agent: DeviceAgent, ref: str) -> str:
    """A document from its id, a unique id prefix, ``kind:number`` or its display
    number (``INV-2026-0042``, or ``invoice:INV-2026-0042``)."""
    ref = ref.strip()
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        pass
    m = re.fullmatch(r"(invoice|quote|estimate|credit_note)[:#](.+)", ref)
    kind, shown = (m.group(1), m.group(2)) if m else (None, ref)
    found: list[DocumentView] = []
    if kind is not None and shown.isdigit():
        found = [v for v in agent.documents(kind) if v.number == int(shown)]
    elif kind is None and re.fullmatch(r"[0-9a-fA-F-]{4,}", ref):
        found = [v for v in agent.documents() if v.doc_id.startswith(ref.lower())]
    if not found and agent.numbering.settings.patterns:
        # As the PDF prints it: the one name a customer or the office quotes.
        found = [v for v in agent.documents(kind) if v.number and agent.display_number(v) == shown]
    if not found and kind is None and not re.fullmatch(r"[0-9a-fA-F-]{4,}", ref):
        raise CliError(
            f"{ref!r} is not a document (use its id, an id prefix, kind:number "
            "or its display number)"
        )
    if not found:
        raise CliError(f"no document {ref!r}")
    if len(found) > 1:
        ids = ", ".join(v.doc_id[:8] for v in found)
        raise CliError(
            f"{ref!r} matches {len(found)} documents ({ids}): use the id or the display number"
        )
    return found[0].doc_id


def _customer(args: argparse.Namespace) -> Customer | None:
    if args.customer is None:
        if args.email or args.address or args.country:
            raise CliError("--email, --address and --country need --customer")
        return None
    return _make_customer(
        {
            "name": args.customer,
            "email": args.email,
            "address": args.address,
            "country": args.country,
        }
    )


def _make_customer(fields: dict[str, Any]) -> Customer:
    try:
        return Customer(**fields)
    except ValueError as exc:
        msg = exc.errors()[0]["msg"] if hasattr(exc, "errors") else str(exc)
        raise CliError(f"--customer: {msg}") from None


def label(v: DocumentView, agent: DeviceAgent | None = None) -> str:
    """ "invoice INV-2026-0042" (the display number when the agent is given)."""
    if not v.number:
        return f"{v.kind} (no number yet)"
    return f"{v.kind} {agent.display_number(v) if agent else v.number}"


def _doc_json(agent: DeviceAgent, v: DocumentView) -> dict[str, Any]:
    return {**v.as_dict(), "display_number": agent.display_number(v)}


# --- running a command with the device -----------------------------------------------------

Action = Callable[[DeviceAgent, bool], Awaitable[int]]


async def _run(args: argparse.Namespace, action: Action, *, sync_after: bool = True) -> int:
    """Open the device, go online if possible, run ``action``. Notes about working
    offline go to stderr only when the command succeeds: an error is one line."""
    args.cli_notes = []
    agent = await DeviceAgent.open(args.home, background=False)
    try:
        online = await _go_online(agent, args)
        code = await action(agent, online)
        if online and sync_after and agent.pending_count():
            try:
                await agent.sync()
            except SynvoiceError:
                online = False
        if not online and agent.pending_count() and not getattr(args, "json", False):
            _note(
                args,
                f"offline: {agent.pending_count()} event(s) wait on this device "
                "(they go out with the next `synvoice device sync`)",
            )
        for note in args.cli_notes:
            print(note, file=sys.stderr)
        return code
    finally:
        await agent.close()


async def _go_online(agent: DeviceAgent, args: argparse.Namespace) -> bool:
    if args.offline:
        return False
    if not await agent.connect(timeout=args.timeout):
        why = f" ({agent.status()['last_error']})" if agent.status()["last_error"] else ""
        _note(args, f"offline: cannot reach {agent.enrollment.url}{why}; working locally")
        return False
    try:
        with SyncProgress(enabled=not args.json) as prog:
            await agent.sync(on_progress=prog.update)
        return True
    except SynvoiceError as exc:
        if exc.code == "unavailable":
            _note(args, f"offline: the engine does not answer ({exc.message}); working locally")
            return False
        if exc.code in REFUSALS:  # the device still works on what it has
            _note(args, f"not synced: the engine refused ({exc}); working locally")
            return False
        raise


def _note(args: argparse.Namespace, text: str) -> None:
    notes: list[str] | None = getattr(args, "cli_notes", None)
    if notes is None:
        print(text, file=sys.stderr)
    else:
        notes.append(text)


def _show_docs(docs: list[DocumentView], title: str, agent: DeviceAgent) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for col in ("kind", "number", "status", "customer", "total", "user", "doc"):
        t.add_column(col, justify="right" if col in ("number", "total") else "left")
    for v in docs:
        gross = v.totals[2]
        t.add_row(
            v.kind,
            agent.display_number(v) if v.number else "0 (unassigned)",
            v.status,
            (v.customer or {}).get("name") or "-",
            f"{gross} {v.currency}",
            v.user,
            v.doc_id[:8] + ("" if v.last_position else " *"),
        )
    Console().print(t)
    if any(not v.last_position for v in docs):
        print("* not synced yet")


# --- commands -------------------------------------------------------------------------------


async def _cmd_init(args: argparse.Namespace) -> int:
    agent = await DeviceAgent.init(args.home, args.token, background=False)
    try:
        online = await _go_online(agent, args)
        st = agent.status()
        if args.json:
            print_json(st)
        else:
            print(
                f"device {st['device_id']} for user {st['user']} (slot {st['slot']}) "
                f"set up in {args.home}"
            )
            if online:
                print(f"synced: {st['last_position']} events, user mode {st['mode']}")
        return 0
    finally:
        await agent.close()


async def _cmd_create(args: argparse.Namespace) -> int:
    lines = [parse_line(x) for x in args.line or []]
    customer = _customer(args)

    async def act(agent: DeviceAgent, online: bool) -> int:
        v = await agent.create(
            args.kind,
            customer,
            lines,
            currency=args.currency,
            issue_date=args.issue_date,
            due_date=args.due_date,
            notes=args.notes,
            number=args.number,
            payment_terms=args.payment_terms,
            force=args.force,
        )
        if args.json:
            print_json(_doc_json(agent, v))
        elif v.number:
            print(f"{label(v, agent)} created ({v.doc_id}), total {v.totals[2]} {v.currency}")
            if args.force and any(
                d["kind"] == v.kind and d["number"] == v.number for d in agent.duplicates()
            ):
                _note(args, f"{label(v, agent)} is a duplicate you forced: it shows in duplicates")
        else:
            why = "out of numbers until the next sync" if agent.mode == "distributed" else "offline"
            print(f"{v.kind} created with number 0 ({why}): {v.doc_id}")
            print(f"assign a number later: synvoice device assign {v.doc_id[:8]}")
        return 0

    return await _run(args, act)


async def _cmd_list(args: argparse.Namespace) -> int:
    async def act(agent: DeviceAgent, online: bool) -> int:
        docs = agent.documents(args.kind)
        if args.json:
            print_json([_doc_json(agent, v) for v in docs])
        else:
            _show_docs(docs, f"{len(docs)} documents on {agent.device_id} ({agent.user})", agent)
        return 0

    return await _run(args, act)


async def _cmd_show(args: argparse.Namespace) -> int:
    async def act(agent: DeviceAgent, online: bool) -> int:
        doc_id = resolve(agent, args.doc)
        v = agent.document(doc_id)
        history = await agent.history(doc_id)
        conflicts = [c.as_dict() for c in agent.conflicts(doc_id)]
        if args.json:
            # 1-based lines its live credit notes credit (a void one frees its lines).
            credited = (
                {"credited_lines": credited_of(agent.documents(), v)} if v.kind == "invoice" else {}
            )
            print_json(
                {
                    **_doc_json(agent, v),
                    "credit_notes": [c.doc_id for c in credit_notes_of(agent.documents(), doc_id)],
                    **credited,
                    "conflicts": conflicts,
                    "history": [e.to_wire() for e in history],
                }
            )
            return 0
        net, tax, gross = v.totals
        print(f"{label(v, agent)}  [{v.status}]  {v.doc_id}")
        if v.number:
            print(f"  sequence number {v.number}, numbered at {v.numbered_at or v.created_at}")
        print(f"  created by {v.user} on {v.device_id} at {v.created_at}")
        if v.customer:
            print(
                f"  customer: {v.customer['name']}"
                + (f" <{v.customer['email']}>" if v.customer.get("email") else "")
            )
        for ln in v.lines:
            print(
                f"  - {ln['description']}: {ln['quantity']} x {ln['unit_price']} "
                f"(tax {ln['tax_rate']}%)"
            )
        print(f"  net {net}  tax {tax}  total {gross} {v.currency}")
        if v.issue_date or v.due_date:
            print(f"  issued {v.issue_date or '-'}  due {v.due_date or '-'}")
        if v.converted_from:
            print(f"  converted from {v.converted_from}")
        if v.converted_to:
            print(f"  converted into {v.converted_to}")
        if v.credits:
            print(f"  credit note for {label(agent.document(v.credits))} ({v.credits})")
        notes = credit_notes_of(agent.documents(), v.doc_id)
        for cn in notes:
            print(
                f"  credited by {label(cn)} ({cn.doc_id})"
                + (" [void]" if cn.status == "void" else "")
            )
        if notes:
            print(f"  {credited_summary(credited_of(agent.documents(), v), len(v.lines))}")
        if v.void_reason:
            print(f"  void: {v.void_reason}")
        print(f"  {len(history)} events" + ("" if v.last_position else " (not synced yet)"))
        for c in conflicts:
            print(
                f"  conflict on {c['field']} ({c['kind']}): event {c['winner'][:8]} took effect, "
                f"{c['loser'][:8]} was overridden"
            )
        return 0

    return await _run(args, act)


async def _cmd_sync(args: argparse.Namespace) -> int:
    agent = await DeviceAgent.open(args.home, background=False)
    try:
        if not await agent.connect(timeout=args.timeout):
            raise SynvoiceError(
                "unavailable",
                f"cannot reach {agent.enrollment.url}; {agent.pending_count()} event(s) wait",
            )
        with SyncProgress(enabled=not args.json) as prog:
            r: SyncResult = await agent.sync(on_progress=prog.update)
        if args.json:
            print_json(r.as_dict())
        else:
            print(
                f"synced: pushed {r.pushed} (already there {r.duplicates}), pulled {r.pulled}; "
                f"position {r.position}, {r.pending} pending"
            )
            dups = agent.duplicates()
            if dups:
                print(f"{len(dups)} duplicate number(s): see `synvoice device duplicates`")
        if r.rejected:
            raise CliError(
                f"{r.rejected} event(s) refused by the engine and set aside: "
                "see `synvoice device status`"
            )
        return 0
    finally:
        await agent.close()


async def _cmd_assign(args: argparse.Namespace) -> int:
    async def act(agent: DeviceAgent, online: bool) -> int:
        ids = [resolve(agent, args.doc)] if args.doc else None
        if agent.mode == "centralized" and not online:
            raise CliError("offline: in centralized mode numbers come from the server")
        got = await agent.assign_numbers(ids)
        if args.json:
            print_json(got)
        elif not got:
            print("nothing to assign" if ids is None else "that document already has a number")
        else:
            for doc_id, n in got.items():
                print(f"{agent.document(doc_id).kind} {n} assigned to {doc_id}")
        return 0

    return await _run(args, act)


async def _cmd_renumber(args: argparse.Namespace) -> int:
    async def act(agent: DeviceAgent, online: bool) -> int:
        doc_id = resolve(agent, args.doc)
        old = agent.document(doc_id)
        before = agent.display_number(old) if old.number else "0"
        v = await agent.set_number(doc_id, args.number, args.force)
        if args.json:
            print_json(_doc_json(agent, v))
        else:
            print(f"{v.kind} {before} is now {label(v, agent)} ({doc_id})")
        return 0

    return await _run(args, act)


async def _cmd_edit(args: argparse.Namespace) -> int:
    lines = [parse_line(x) for x in args.line] if args.line else None
    given = {k: getattr(args, k) for k in ("customer", "email", "address", "country")}
    dates = args.issue_date is not None or args.due_date is not None
    if all(v is None for v in given.values()) and lines is None and not dates:
        raise CliError("nothing to change: give --customer, --email, --address, --line or a date")

    async def act(agent: DeviceAgent, online: bool) -> int:
        doc_id = resolve(agent, args.doc)
        if any(v is not None for v in given.values()):
            # What is not given stays as it is (--email alone changes the e-mail).
            fields = dict(agent.document(doc_id).customer or {})
            if given["customer"] is None and not fields.get("name"):
                raise CliError("this document has no customer yet: give --customer")
            fields.update(
                {"name" if k == "customer" else k: v for k, v in given.items() if v is not None}
            )
            await agent.edit_customer(doc_id, _make_customer(fields))
        if lines is not None:
            await agent.edit_lines(doc_id, lines)
        if dates:
            cur = agent.document(doc_id)
            await agent.edit_dates(
                doc_id,
                args.issue_date if args.issue_date is not None else cur.issue_date,
                args.due_date if args.due_date is not None else cur.due_date,
            )
        v = agent.document(doc_id)
        print_json(v.as_dict()) if args.json else print(f"{label(v, agent)} updated")
        return 0

    return await _run(args, act)


def _simple(method: str, done: str) -> Callable[[argparse.Namespace], Awaitable[int]]:
    async def cmd(args: argparse.Namespace) -> int:
        async def act(agent: DeviceAgent, online: bool) -> int:
            doc_id = resolve(agent, args.doc)
            extra: list[Any] = [args.reason] if method == "void" else []
            v: DocumentView = await getattr(agent, method)(doc_id, *extra)
            if args.json:
                print_json(v.as_dict())
            elif method == "convert":
                src = agent.document(doc_id)
                print(f"{label(src, agent)} converted into {label(v, agent)} ({v.doc_id})")
            else:
                print(f"{label(v, agent)} {done}")
            return 0

        return await _run(args, act)

    return cmd


async def _cmd_status(args: argparse.Namespace) -> int:
    async def act(agent: DeviceAgent, online: bool) -> int:
        st = agent.status()
        if args.json:
            print_json(st)
            return 0
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"device {st['device_id']}", show_header=False)
        for key in (
            "user",
            "slot",
            "mode",
            "online",
            "pending",
            "last_sync",
            "last_position",
            "head",
            "documents",
            "unassigned",
            "duplicates",
            "conflicts",
            "rejected",
            "last_error",
            "url",
            "home",
        ):
            t.add_row(key, "-" if st[key] is None else str(st[key]))
        for kind, ser in st["series"].items():
            t.add_row(f"{kind} series", _series_text(ser))
        Console().print(t)
        return 0

    return await _run(args, act, sync_after=False)


def _series_text(ser: dict[str, Any]) -> str:
    """ "slot 2, step 3: next 5, 8, 11" (what this user numbers next)."""
    if ser["mode"] == "centralized":
        return "from the server (0 while offline)"
    nxt = ", ".join(str(n) if n else "0 (sync for more)" for n in ser["next"])
    head = f"slot {ser['slot']}, step {ser['step']}: " if ser["mode"] == "distributed" else ""
    return f"{head}next {nxt}"


async def _cmd_duplicates(args: argparse.Namespace) -> int:
    async def act(agent: DeviceAgent, online: bool) -> int:
        dups = agent.duplicates()
        if args.json:
            print_json(dups)
        elif not dups:
            print("no duplicate numbers")
        else:
            for d in dups:
                who = ", ".join(f"{x['doc_id'][:8]} ({x['user']})" for x in d["documents"])
                shown = d.get("display_number", d["number"])
                print(f"{d['kind']} {shown} is used {len(d['documents'])} times: {who}")
            print("fix with: synvoice device renumber DOC NUMBER")
        return 0

    return await _run(args, act, sync_after=False)


async def _cmd_conflicts(args: argparse.Namespace) -> int:
    async def act(agent: DeviceAgent, online: bool) -> int:
        cs = [c.as_dict() for c in agent.conflicts()]
        if args.json:
            print_json(cs)
        elif not cs:
            print("no conflicts")
        else:
            for c in cs:
                print(
                    f"{c['doc_id'][:8]} {c['field']}: {c['kind']} "
                    f"(kept {c['winner'][:8]}, overridden {c['loser'][:8]})"
                )
        return 0

    return await _run(args, act, sync_after=False)


async def _cmd_demo(args: argparse.Namespace) -> int:
    from devices.demo import run_demo

    await run_demo(as_json=args.json)
    return 0


# --- wiring ---------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, *, json: bool = True) -> None:
    p.add_argument(
        "--home",
        type=Path,
        default=Path(DEFAULT_HOME),
        help="the device's folder (default ./device, or $SYNVOICE_DEVICE_HOME)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds to wait for the broker before working offline (default 2)",
    )
    p.add_argument("--offline", action="store_true", help="do not try to connect")
    if json:
        add_json_arg(p)
    else:
        p.set_defaults(json=False)


def _doc_fields(p: argparse.ArgumentParser) -> None:
    p.add_argument("--customer", help="customer name")
    p.add_argument("--email", help="customer e-mail")
    p.add_argument("--address", help="customer address")
    p.add_argument("--country", help="customer country, ISO 3166 code (e.g. DE)")
    p.add_argument(
        "--line",
        action="append",
        metavar="DESC:QTY:PRICE[:TAX%]",
        help="a line (repeat for more); e.g. 'Consulting:2:150:20'",
    )
    p.add_argument("--issue-date", metavar="YYYY-MM-DD")
    p.add_argument("--due-date", metavar="YYYY-MM-DD")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = sub.add_parser("device", help="the device agent: documents offline, sync, numbering")
    _one_line_error(dev)
    # Subcommands report bad arguments on one line.
    ds = dev.add_subparsers(
        dest="device_command", required=True, metavar="COMMAND", parser_class=_OneLineParser
    )

    p = ds.add_parser("init", help="set up a device from an enrollment token")
    p.add_argument("--token", required=True, help="the token from `synvoice enroll`")
    _common(p)
    p.set_defaults(handler=_cmd_init)

    p = ds.add_parser("create", help="create an invoice, quote or estimate")
    # Credit notes come from an issued invoice: `device credit INVOICE`.
    p.add_argument("--kind", choices=[k for k in KINDS if k != "credit_note"], default="invoice")
    _doc_fields(p)
    p.add_argument("--currency", default="USD")
    p.add_argument("--notes")
    p.add_argument("--payment-terms", help="this document's terms (default: the seller's)")
    p.add_argument("--number", type=int, help="set the number by hand")
    p.add_argument(
        "--force", action="store_true", help="use --number even if it is taken (a duplicate)"
    )
    _common(p)
    p.set_defaults(handler=_cmd_create)

    p = ds.add_parser("list", help="documents on this device")
    p.add_argument("--kind", choices=KINDS)
    _common(p)
    p.set_defaults(handler=_cmd_list)

    p = ds.add_parser("show", help="one document with its history and conflicts")
    p.add_argument("doc", help="document id, id prefix, or kind:number")
    _common(p)
    p.set_defaults(handler=_cmd_show)

    p = ds.add_parser("sync", help="push the outbox and pull new events")
    _common(p)
    p.set_defaults(handler=_cmd_sync)

    p = ds.add_parser("assign", help="assign numbers to one or all unnumbered documents")
    p.add_argument("doc", nargs="?", help="one document (default: all this device made)")
    _common(p)
    p.set_defaults(handler=_cmd_assign)

    p = ds.add_parser("renumber", help="set a document's number by hand")
    p.add_argument("doc")
    p.add_argument("number", type=int)
    p.add_argument("--force", action="store_true", help="even if the number is taken")
    _common(p)
    p.set_defaults(handler=_cmd_renumber)

    p = ds.add_parser("edit", help="change customer, lines (replaces all) or dates")
    p.add_argument("doc")
    _doc_fields(p)
    _common(p)
    p.set_defaults(handler=_cmd_edit)

    p = ds.add_parser("issue", help="issue a document (it needs a number)")
    p.add_argument("doc")
    _common(p)
    p.set_defaults(handler=_simple("issue", "issued"))

    p = ds.add_parser("void", help="void a document")
    p.add_argument("doc")
    p.add_argument("--reason")
    _common(p)
    p.set_defaults(handler=_simple("void", "is void"))

    p = ds.add_parser("convert", help="convert a quote or estimate into an invoice")
    p.add_argument("doc")
    _common(p)
    p.set_defaults(handler=_simple("convert", "converted"))

    p = ds.add_parser("status", help="sync status: pending events, last sync, mode")
    _common(p)
    p.set_defaults(handler=_cmd_status)

    p = ds.add_parser("duplicates", help="numbers used by more than one document")
    _common(p)
    p.set_defaults(handler=_cmd_duplicates)

    p = ds.add_parser("conflicts", help="concurrent edits the merge resolved")
    _common(p)
    p.set_defaults(handler=_cmd_conflicts)

    from devices.documents_cli import add_document_commands

    add_document_commands(ds, sub)

    demo = sub.add_parser("demo", help="a tour: embedded engine, devices, the numbering modes")
    _one_line_error(demo)
    add_json_arg(demo)
    demo.set_defaults(handler=_cmd_demo)
