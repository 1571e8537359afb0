"""``synvoice`` subcommands of the projections: replay, project, and the read commands.

* ``replay LOG`` / ``replay --nats-url URL --data DIR|--token T``: the audit (the
  hash chain, the anchors of ``projections.anchors``);
* ``project``: the standalone JetStream projection;
* ``duplicates``, ``gaps``, ``unassigned``, ``renumberings``, ``conflicts``,
  ``history DOC_ID``, ``views``: read the live views (``DATA/views.sqlite``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from engine.cli import CliError, add_data_arg, add_json_arg, print_json
from engine.schema.common import KINDS
from projections.store import ViewsError, ViewStore, lock_views

HELP_UNTIL = "stop at this log position, or at this ISO time (compared with committed_at)"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="audit: verify the log's hash chain and rebuild the views (file or engine)",
        description="Verify the hash chain of a log and rebuild every view from it, from a "
        "log file (LOG) or from a running engine (--nats-url with --data or --token). "
        "Reports duplicates, gaps, unassigned documents, renumberings and conflicts, "
        "and the views digest. Checks the log against the engine's signed checkpoints "
        "(--checkpoints FILE, checkpoints.jsonl beside the log, the stream) and the "
        "stream's Synvoice-Hash headers, and its state snapshot against the log. Exits 1 "
        "if a record was altered, removed or appended, or the snapshot was edited.",
    )
    p.add_argument("log", nargs="?", type=Path, help="log file (DATA/log.sqlite)")
    p.add_argument("--nats-url", help="replay from the engine on this broker instead")
    p.add_argument(
        "--data", type=Path, help="engine data folder (its admin credential; with LOG: anchors)"
    )
    p.add_argument("--token", help="an enrollment token (svd1.…) to pull with")
    p.add_argument(
        "--checkpoints", type=Path, help="checkpoints file (synvoice checkpoints export)"
    )
    p.add_argument("--engine-key", help="the engine's public key (synvoice status) to trust")
    p.add_argument("--until", help=HELP_UNTIL)
    p.add_argument("--views", type=Path, help="keep the rebuilt views in this file")
    p.add_argument("--csv", type=Path, metavar="DIR", help="export every view as CSV into DIR")
    p.add_argument("--kind", choices=KINDS, help="only this kind in the report")
    p.add_argument("--limit", type=int, default=50, help="rows per table on screen (0 = all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_arg(p)
    p.set_defaults(handler=_cmd_replay)

    p = sub.add_parser(
        "project",
        help="run a standalone projection from the JetStream stream into a views file",
    )
    p.add_argument("--nats-url", help="broker URL (default: from the token or DATA/engine.json)")
    p.add_argument("--views", type=Path, required=True, help="views file to keep up to date")
    p.add_argument("--durable", default="synvoice-views", help="durable consumer name")
    p.add_argument("--token", help="enrollment token (svd1.…) used to fill holes")
    p.add_argument("--data", type=Path, help="engine data folder (use its admin credential)")
    p.add_argument("--broker-user", help="integration broker user for the stream (with --token)")
    p.add_argument("--broker-password", help="its password (synvoice integration add)")
    p.set_defaults(handler=_cmd_project)

    for name, what in (
        ("duplicates", "numbers used by more than one document"),
        ("gaps", "missing numbers in each series"),
        ("unassigned", "documents still without a number"),
        ("renumberings", "documents whose number was changed"),
        ("conflicts", "concurrent edits and edits after issue"),
    ):
        p = sub.add_parser(name, help=f"{what} (live views)")
        _views_args(p)
        if name != "conflicts":
            p.add_argument("--kind", choices=KINDS)
        p.add_argument("--limit", type=int, default=0, help="rows on screen (0 = all)")
        p.set_defaults(handler=_cmd_read, section=name)

    p = sub.add_parser("history", help="every event of one document (live views)")
    p.add_argument("doc_id", metavar="DOC", help="its id, an id prefix or kind:number")
    _views_args(p)
    p.set_defaults(handler=_cmd_history)

    p = sub.add_parser("views", help="live views: checkpoint, counts and digest")
    _views_args(p)
    p.set_defaults(handler=_cmd_views)


def _views_args(p: argparse.ArgumentParser) -> None:
    add_data_arg(p)
    p.add_argument("--views", type=Path, help="views file (default: DATA/views.sqlite)")
    add_json_arg(p)


def _open_views(args: argparse.Namespace) -> ViewStore:
    path = args.views or args.data / "views.sqlite"
    try:
        return ViewStore.open_readonly(path)
    except ViewsError as exc:
        raise CliError(f"{exc} (is the engine running with --data {args.data}?)") from None


# --- read commands ----------------------------------------------------------------------


def _cmd_read(args: argparse.Namespace) -> int:
    from rich.console import Console

    from projections.report import print_section

    store = _open_views(args)
    try:
        section = args.section
        kind = getattr(args, "kind", None)
        rows = store.conflicts() if section == "conflicts" else getattr(store, section)(kind)
        position, _ = store.checkpoint()
    finally:
        store.close()
    if args.json:
        print_json({"position": position, section: rows})
    else:
        print_section(Console(), section, rows, args.limit or None)
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    from rich.console import Console

    from projections.report import print_section

    store = _open_views(args)
    try:
        found = store.find(args.doc_id)
        if len(found) > 1:
            raise CliError(
                f"{args.doc_id!r} names {len(found)} documents "
                f"({', '.join(d[:8] for d in found)}): give more of the id"
            )
        doc_id = found[0] if found else args.doc_id
        doc = store.document(doc_id)
        rows = store.history(doc_id)
        conflicts = store.conflicts(doc_id)
        shown = (
            store.numbering().display(doc["kind"], doc["number"], doc["numbered_at"], doc["user"])
            if doc is not None
            else ""
        )
    finally:
        store.close()
    if doc is None and not rows:
        raise CliError(
            f"no document {args.doc_id!r} in the views (give its id, an id prefix or kind:number)"
        )
    if args.json:
        print_json({"document": doc, "history": rows, "conflicts": conflicts})
        return 0
    console = Console()
    if doc is not None:
        console.print(
            f"{doc['kind']} {shown} {doc['doc_id']}: {doc['status']}, "
            f"{doc['customer'] or 'no customer'}, total {doc['total']} {doc['currency']}, "
            f"by {doc['user'] or '?'} on {doc['device_id'] or '?'}"
        )
    print_section(console, "history", rows)
    if conflicts:
        print_section(console, "conflicts", conflicts)
    return 0


def _cmd_views(args: argparse.Namespace) -> int:
    store = _open_views(args)
    try:
        position, last_hash = store.checkpoint()
        out: dict[str, Any] = {
            "views": str(store.path),
            "position": position,
            "last_hash": last_hash.hex(),
            "counts": store.counts(),
            "digest": store.digest(),
        }
    finally:
        store.close()
    if args.json:
        print_json(out)
    else:
        print(f"views  : {out['views']} at position {position}")
        print("counts : " + ", ".join(f"{k} {v}" for k, v in out["counts"].items()))
        print(f"digest : {out['digest']}")
    return 0


# --- replay -------------------------------------------------------------------------------


async def _cmd_replay(args: argparse.Namespace) -> int:
    from rich.console import Console

    from projections.rebuild import parse_until
    from projections.replay import audit_file, audit_remote, replay_file, replay_remote
    from projections.report import collect, print_report

    try:
        until = parse_until(args.until)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    remote = args.nats_url or args.token or args.data
    if args.log is None and not remote:
        raise CliError("give a LOG file, or --data/--token (and --nats-url) to replay an engine")
    progress = not args.no_progress and not args.json
    with tempfile.TemporaryDirectory(prefix="synvoice-replay-") as tmp, ExitStack() as held:
        views = args.views or Path(tmp) / "views.sqlite"
        if args.views is not None:  # a views file a running projection follows is theirs
            try:
                held.callback(os.close, lock_views(args.views, wait=False))
            except ViewsError as exc:
                raise CliError(str(exc)) from None
        if args.log is not None:
            result = await asyncio.to_thread(replay_file, args.log, views, until, progress)
            # With an engine too (--data/--token): the anchors it publishes.
            client = await _engine_client(args) if remote else None
            try:
                audit = await audit_file(
                    args.log,
                    checkpoint_file=args.checkpoints,
                    engine_key=args.engine_key,
                    client=client,
                )
            finally:
                if client is not None:
                    await client.close()
        else:
            client = await _engine_client(args)
            try:
                result = await replay_remote(client, views, until, progress)
                audit = await audit_remote(
                    client,
                    result.head,
                    checkpoint_file=args.checkpoints,
                    engine_key=args.engine_key,
                )
            finally:
                await client.close()
        store = ViewStore.open_readonly(views)
        try:
            rep = collect(store, args.kind)
            if args.csv:
                store.export_csv(args.csv)
        finally:
            store.close()
    broken = result.broken
    rep["chain"] = {
        "verified": result.position,
        "head": result.head,
        "ok": broken is None,
        "broken_at": broken.position if broken else None,
        "reason": broken.reason if broken else None,
    }
    rep["anchors"] = audit.as_dict()
    rep["events"] = result.events
    rep["seconds"] = round(result.seconds, 3)
    if args.json:
        print_json(rep)
    else:
        console = Console()
        print_report(console, rep, args.limit or None)
        if broken is None and not audit.ok:
            console.print(f"hash chain links hold up to {result.position}, but its anchors do not:")
        elif broken is None:
            console.print(
                f"hash chain verified: positions 1..{result.position}"
                + (f" (log head {result.head})" if result.head != result.position else "")
            )
        for line in audit.checked:
            console.print(f"checked: {line}", soft_wrap=True)
        for line in audit.skipped:
            console.print(f"not checked: {line}", soft_wrap=True)
        if audit.engine_key:
            console.print(f"engine key: {audit.engine_key}")
        for f in audit.findings:
            console.print(f"[bold red]TAMPERED[/] {f.message}", highlight=False, soft_wrap=True)
        if args.csv:
            console.print(f"CSV files in {args.csv}")
    if broken is not None:
        raise CliError(
            f"hash chain broken at position {broken.position}: {broken.reason} "
            f"(records 1..{broken.position - 1} verified; views built up to there)"
        )
    if audit.findings:
        kinds = ", ".join(dict.fromkeys(f.kind for f in audit.findings))
        raise CliError(f"the log was tampered with ({kinds}): {audit.findings[0].message}")
    return 0


async def _engine_client(args: argparse.Namespace) -> Any:
    from engine.client import EngineClient

    url, device_id, secret, opts = _credentials(args)
    try:
        return await EngineClient.connect(url, device_id, secret, max_reconnect_attempts=2, **opts)
    except Exception as exc:
        raise CliError(f"cannot reach the engine at {url}: {exc}") from None


def _credentials(args: argparse.Namespace) -> tuple[str, str, bytes, dict[str, Any]]:
    """(broker URL, device id, secret, nats.connect options) from --token, or from
    --data's admin credential (with the broker user and TLS the engine recorded)."""
    from engine.brokermanager import admin_nats_options
    from engine.protocol import ADMIN_DEVICE

    if args.token:
        from engine.enrollment import parse_token

        e = parse_token(args.token)
        return args.nats_url or e.url, e.device_id, e.secret, e.nats_options()
    data: Path | None = args.data
    if data is None:
        raise CliError("give --token or --data (the engine's data folder) to reach the engine")
    url = args.nats_url
    if not url:
        runtime = data / "engine.json"
        if not runtime.exists():
            raise CliError(f"no running engine found in {data}; give --nats-url")
        url = json.loads(runtime.read_text())["nats_url"]
    secret_path = data / "admin.secret"
    if not secret_path.exists():
        raise CliError(f"no admin credential at {secret_path}")
    secret = bytes.fromhex(secret_path.read_text().strip())
    return str(url), ADMIN_DEVICE, secret, admin_nats_options(data, secret)


def _cmd_project(args: argparse.Namespace) -> int:
    from engine.brokerauth import inbox_prefix
    from projections.standalone import run_blocking

    url, device_id, secret, opts = _credentials(args)
    stream_opts = None
    if args.broker_user:
        # An integration's read-only broker user for the stream (``synvoice integration
        # add``); the token's device still fills holes through the engine's pull.
        stream_opts = {k: v for k, v in opts.items() if k == "tls"}
        stream_opts.update(user=args.broker_user, password=args.broker_password or "")
        prefix = inbox_prefix(args.broker_user)
        if prefix:
            stream_opts["inbox_prefix"] = prefix
    try:
        run_blocking(url, args.views, args.durable, device_id, secret, opts, stream_opts)
    except ViewsError as exc:
        raise CliError(str(exc)) from None
    return 0
