"""``synvoice``: the command line (server side here; other packages add theirs).

Subcommands from the packages above the engine come from the ``synvoice.cli``
entry points (``engine.plugins``): each is a ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from engine.client import plain, public_url
from engine.config import EngineConfig
from engine.errors import SynvoiceError
from engine.schema.common import KINDS

Handler = Callable[[argparse.Namespace], Awaitable[int] | int]


class CliError(Exception):
    """A one-line error for the person at the terminal (exit status 1)."""


def add_data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=EngineConfig().data_dir, help="data folder")


def add_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


# --- checkpoints ----------------------------------------------------------------------


def _engine_public_key(data: Path) -> str:
    from engine.checkpoints import public_key_text
    from engine.enginekey import KEY_FILE, load_or_create_key

    if not (data / KEY_FILE).exists():
        raise CliError(f"no engine key in {data} (DATA/{KEY_FILE} is made by synvoice serve)")
    return public_key_text(load_or_create_key(data))


def _cmd_checkpoints_export(args: argparse.Namespace) -> int:
    from engine import checkpoints as cps
    from engine.anchor import CHECKPOINTS_FILE, read_checkpoint_file

    key = _engine_public_key(args.data)
    try:
        good, bad = cps.verified(read_checkpoint_file(args.data / CHECKPOINTS_FILE), key)
    except cps.CheckpointError as exc:
        raise CliError(f"{args.data / CHECKPOINTS_FILE}: {exc}") from None
    if bad:
        raise CliError(f"{args.data / CHECKPOINTS_FILE}: {bad[0].message}")
    text = cps.dumps(good)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
        print(f"{len(good)} checkpoints written to {args.out} (engine key {key})")
    return 0


def _cmd_checkpoints_key(args: argparse.Namespace) -> int:
    print(_engine_public_key(args.data))
    return 0


# --- serve ------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    from engine.server import EngineServer

    cfg = EngineConfig(data_dir=args.data)
    if args.nats_url:
        cfg.nats_url = args.nats_url
    if args.nats_port is not None:
        cfg.nats_port = args.nats_port
    if args.nats_host:
        cfg.nats_host = args.nats_host
    if args.no_broker_auth:
        cfg.broker_auth = False
    for name in ("tls_cert", "tls_key", "tls_ca"):
        if getattr(args, name):
            setattr(cfg, name, getattr(args, name))
    if args.stream_replicas is not None:
        cfg.stream_replicas = args.stream_replicas
    if args.sync:
        cfg.sync = args.sync
    if args.no_publish:
        cfg.publish = False
    if args.accept_log_rollback:
        cfg.accept_log_rollback = True
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    def ready(server: EngineServer) -> None:
        assert server.core is not None
        st = server.core.state
        where = (
            f" (embedded nats-server, JetStream in {cfg.nats_dir})" if server.nats_server else ""
        )
        if server.broker is not None:
            security = "per-device broker users (generated)"
        elif server.nats_server is not None:
            security = "NONE: broker authentication is off"
        else:
            security = "external broker: secured by its operator"
        if server.tls is not None:
            security += ", TLS"
        from engine.editions import describe

        ed = server.core.edition()
        print(
            f"synvoice engine ready\n"
            f"  broker : {server.nats_url}{where}\n"
            f"  access : {security}\n"
            f"  log    : {cfg.log_path} (head {server.core.log.head})\n"
            f"  mode   : {st.mode}{'' if st.mode_set else ' (default)'}\n"
            f"  edition: {ed.edition.title} ({describe(ed.limits)})"
            f"{' - ' + ed.note if ed.note else ''}\n"
            f"  admin  : {cfg.admin_secret_path}\n"
            f"Enroll a device: synvoice enroll USER --data {cfg.data_dir}\n"
            f"Stop with Ctrl-C.",
            flush=True,
        )

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(EngineServer(cfg).run_forever(ready))
    return 0


# --- admin commands over NATS -------------------------------------------------------


async def admin_client(args: argparse.Namespace) -> Any:
    """An EngineClient with the admin credential of the engine in ``args.data``
    (broker user and TLS as the running engine recorded in engine.json)."""
    from engine.brokermanager import admin_nats_options
    from engine.client import EngineClient
    from engine.protocol import ADMIN_DEVICE

    data: Path = args.data
    url = getattr(args, "nats_url", None)
    if not url:
        runtime = data / "engine.json"
        if not runtime.exists():
            raise CliError(f"no running engine found in {data} (start it with: synvoice serve)")
        url = json.loads(runtime.read_text())["nats_url"]
    secret_path = data / "admin.secret"
    if not secret_path.exists():
        raise CliError(f"no admin credential at {secret_path}")
    secret = bytes.fromhex(secret_path.read_text().strip())

    async def quiet(_e: Exception) -> None:
        pass

    try:
        return await EngineClient.connect(
            url,
            ADMIN_DEVICE,
            secret,
            max_reconnect_attempts=2,
            error_cb=quiet,
            **admin_nats_options(data, secret),
        )
    except Exception as exc:
        raise CliError(f"cannot reach the engine at {url}: {exc}") from None


async def _cmd_enroll(args: argparse.Namespace) -> int:
    from engine.enrollment import Enrollment

    client = await admin_client(args)
    try:
        reply = await client.enroll(args.user, args.name)
        url = args.device_url or public_url(client)
    finally:
        await client.close()
    token = Enrollment.from_reply(url, reply).token()
    r = plain(reply)
    if args.json:
        print_json({**r, "token": token, "url": url})
    else:
        print(f"enrolled device {r['device_id']} for user {r['user']} (slot {r['slot']})")
        print("give this token to the device (synvoice device init --token ...):")
        print(token)
    return 0


async def _cmd_revoke(args: argparse.Namespace) -> int:
    client = await admin_client(args)
    try:
        r = plain(await client.revoke(args.device_id, args.reason))
    finally:
        await client.close()
    print_json(r) if args.json else print(f"device {r['device_id']} revoked")
    return 0


async def _cmd_mode(args: argparse.Namespace) -> int:
    client = await admin_client(args)
    try:
        if args.mode is None:
            st = plain(await client.status())
            r = {"mode": st["mode"], "mode_set": st["mode_set"]}
            print_json(r) if args.json else print(st["mode"])
            return 0
        r = plain(await client.set_mode(args.mode, args.force, args.team))
    finally:
        await client.close()
    if args.json:
        print_json(r)
    elif r["changed"]:
        print(f"user mode is now {r['mode']} (was {r['previous']})")
    else:
        print(f"user mode is already {r['mode']}")
    if args.team is not None and not args.json:
        print(f"team size {args.team}: slot k numbers k, k+{args.team}, k+{2 * args.team}, ...")
    return 0


async def _cmd_numbering(args: argparse.Namespace) -> int:
    client = await admin_client(args)
    try:
        if args.action == "team":
            await client.set_numbering(team=args.size)
        elif args.action == "pattern":
            await client.set_numbering(
                kind=args.kind, pattern=args.pattern, reset=args.reset, tz=args.tz
            )
        st = plain(await client.status())
    finally:
        await client.close()
    r = {
        "mode": st["mode"],
        "team": st.get("team", 0),
        "users": st["users"],
        "patterns": st.get("patterns", {}),
        "epochs": st["epochs"],
    }
    if args.json:
        print_json(r)
        return 0
    team = r["team"]
    users = len(r["users"])
    print(f"user mode      {r['mode']}")
    if not team:
        print(f"team size      not stated (new epochs step by the users enrolled: {max(users, 1)})")
    elif users > team:
        print(f"team size      {team} ({users} users enrolled: new epochs step by {users})")
    else:
        print(f"team size      {team}")
    if r["mode"] == "distributed":
        for user, slot in sorted(r["users"].items(), key=lambda u: u[1]):
            print(f"  {user}: slot {slot}")
        for kind, eps in sorted(r["epochs"].items()):
            if eps:  # the last epoch is the one numbers are made in now
                e = eps[-1]
                print(
                    f"  {kind}: epoch {e['epoch']}, {e['start']}..{e['end']}, step {e['increment']}"
                )
    for kind in KINDS:
        p = r["patterns"].get(kind)
        if p is None:
            print(f"{kind:<14} {{SEQ}}  (no pattern: bare numbers)")
        else:
            print(f"{kind:<14} {p['pattern']}  reset {p['reset']}, {p['tz']}, since {p['since']}")
    return 0


async def _cmd_status(args: argparse.Namespace) -> int:
    client = await admin_client(args)
    try:
        st = plain(await client.status())
    finally:
        await client.close()
    if args.json:
        print_json(st)
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title="synvoice engine", show_header=False)
    t.add_row("version", st["version"])
    t.add_row("log head", str(st["head"]))
    t.add_row("published", str(st["published"]))
    t.add_row("user mode", st["mode"] + ("" if st["mode_set"] else " (default)"))
    t.add_row("documents", str(st["documents"]))
    t.add_row("data", f"{st['data_bytes']:,} bytes")
    t.add_row("users", ", ".join(f"{u} (slot {s})" for u, s in st["users"].items()) or "-")
    active = sum(1 for d in st["devices"].values() if not d["revoked"])
    t.add_row("devices", f"{active} active, {len(st['devices']) - active} revoked")
    t.add_row("counters", ", ".join(f"{k} {v}" for k, v in st["counters"].items()))
    anchor = st.get("anchor")
    if anchor:  # engine.anchor: what devices pin and auditors check against
        t.add_row("engine key", anchor["engine_key"])
        cp = anchor.get("checkpoint")
        t.add_row("checkpoint", f"position {cp['position']} at {cp['time']}" if cp else "-")
    for key, value in _edition_rows(st):
        t.add_row(key, value)
    views = st.get("views")
    if views:  # the live views worker (projections.live)
        state = f"at {views['position']}" + (
            f", {views['behind']} behind" if views["behind"] else ", up to date"
        )
        if views.get("worker_pid") is None:
            state += ", worker not running"
        if views.get("restarts"):
            state += f", restarted {views['restarts']}x"
        if views.get("error"):
            state += f", last error: {views['error']}"
        t.add_row("live views", state)
    Console().print(t)
    return 0


def _edition_rows(st: dict[str, Any]) -> list[tuple[str, str]]:
    """Edition, limits and usage for the status table."""
    from engine.editions import human_bytes

    if "edition" not in st:
        return []
    title = st.get("edition_title") or st["edition"]
    if st.get("edition_licensee"):
        title += f", registered to {st['edition_licensee']}"
    if st.get("edition_expires"):
        title += f", expires {st['edition_expires']}"
    if st.get("edition_source") == "config":
        title += " (key from configuration)"
    rows = [("edition", title)]
    if st.get("edition_note"):
        rows.append(("edition note", str(st["edition_note"])))
    lim, use = st.get("limits") or {}, st.get("usage") or {}

    def cap(n: int | None, fmt: Any = str) -> str:
        return "unlimited" if n is None else str(fmt(n))

    rows.append(
        (
            "usage / limits",
            f"users {use.get('users', 0)} / {cap(lim.get('users'))}, "
            f"devices {use.get('devices', 0)} / {cap(lim.get('devices'))}, "
            f"data {human_bytes(use.get('data_bytes', 0))} / "
            f"{cap(lim.get('data_bytes'), human_bytes)}",
        )
    )
    broker = st.get("broker") or {}
    if broker:
        rows.append(
            (
                "broker",
                ("per-device users" if broker.get("auth") else "no broker authentication")
                + (", TLS" if broker.get("tls") else ""),
            )
        )
    if st.get("integrations"):
        rows.append(("integrations", ", ".join(st["integrations"])))
    return rows


# --- editions: register, vendor tools ------------------------------------------------


async def _cmd_register(args: argparse.Namespace) -> int:
    from engine.editions import Limits, describe, edition

    client = await admin_client(args)
    try:
        r = plain(await client.register(args.key))
    finally:
        await client.close()
    if args.json:
        print_json(r)
        return 0
    ed = edition(r["edition"])
    lim = Limits(**r["limits"])
    who = f" for {r['edition_licensee']}" if r.get("edition_licensee") else ""
    until = f", until {r['edition_expires']}" if r.get("edition_expires") else ""
    verb = "registered" if r["changed"] else "already registered"
    print(f"{verb}: {ed.title} edition{who} ({describe(lim)}{until})")
    if r.get("edition_note"):
        print(f"note: {r['edition_note']}")
    return 0


def _cmd_editions(args: argparse.Namespace) -> int:
    from engine.editions import EDITIONS, describe

    rows = [
        {"name": e.name, "title": e.title, "limits": e.limits.to_dict(), "sold": not e.vendor_only}
        for e in EDITIONS.values()
    ]
    if args.json:
        print_json(rows)
        return 0
    for e in EDITIONS.values():
        note = " (issued by the vendor for sites)" if e.vendor_only else ""
        print(f"{e.name:8} {e.title:12} {describe(e.limits)}{note}")
    return 0


def _cmd_vendor_keygen(args: argparse.Namespace) -> int:
    from engine.license import keygen

    priv, pub = keygen(args.out, force=args.force)
    if args.json:
        print_json({"private_key": str(priv), "public_key": str(pub)})
    else:
        print(f"private key: {priv} (keep it secret: it issues registration keys)")
        print(f"public key : {pub} -> {pub.read_text().strip()}")
        print("servers trust it via SYNVOICE_VENDOR_PUBLIC_KEY (or build it in)")
    return 0


def _cmd_vendor_issue(args: argparse.Namespace) -> int:
    from datetime import date

    from engine.editions import parse_bytes
    from engine.license import issue, load_private_key

    expires = None
    if args.expires:
        try:
            expires = date.fromisoformat(args.expires)
        except ValueError:
            raise CliError(
                f"--expires must be a date like 2027-12-31, not {args.expires!r}"
            ) from None
    key = issue(
        load_private_key(args.private_key),
        args.edition,
        args.licensee,
        expires=expires,
        max_users=args.max_users,
        max_devices=args.max_devices,
        max_data_bytes=parse_bytes(args.max_data) if args.max_data else None,
    )
    print(key)
    return 0


def _cmd_vendor_show(args: argparse.Namespace) -> int:
    from engine.errors import SynvoiceError as _Err
    from engine.license import inspect, trusted_keys, verify

    extra = args.public_key.read_text().strip() if args.public_key else None
    payload = inspect(args.key)
    try:
        verify(args.key, trusted_keys(extra or EngineConfig().vendor_public_key))
        payload["genuine"] = True
    except _Err as exc:
        payload["genuine"] = False
        payload["problem"] = exc.message
    print_json(payload)
    return 0 if payload["genuine"] else 1


# --- integrations --------------------------------------------------------------------


async def _cmd_integration(args: argparse.Namespace) -> int:
    client = await admin_client(args)
    try:
        r = plain(await client.integration(args.action, args.name))
        url = args.url or public_url(client)
    finally:
        await client.close()
    if args.action == "add":
        r["url"] = url
    if args.json:
        print_json(r)
        return 0
    if args.action == "list":
        print("\n".join(r["integrations"]) or "no integrations")
    elif args.action == "remove":
        print(f"integration {r['name']} removed: its broker user is gone")
    else:
        print(
            f"integration {r['name']}{'' if r['changed'] else ' (existing)'}: read-only access "
            f"to stream {r['stream']} ({r['subjects']})\n"
            f"  url          {url}\n  user         {r['user']}\n  password     {r['password']}\n"
            f"  inbox_prefix {r['inbox_prefix']}"
        )
        if not r["broker_auth"]:
            print("warning: this broker does not check users (external or auth off)")
    return 0


# --- wiring -----------------------------------------------------------------------------


def build_parser(plugins: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synvoice", description="Synvoice: event-sourced sync engine for invoices"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the engine (embedded nats-server unless --nats-url)")
    add_data_arg(p)
    p.add_argument("--nats-url", help="use this NATS server instead of embedding one")
    p.add_argument("--nats-port", type=int, help="port of the embedded broker (0 = any free)")
    p.add_argument("--sync", choices=["full", "normal"], help="SQLite synchronous mode")
    p.add_argument("--no-publish", action="store_true", help="do not publish to JetStream")
    p.add_argument("--nats-host", help="listen address of the embedded broker (default 127.0.0.1)")
    p.add_argument(
        "--no-broker-auth",
        action="store_true",
        help="embedded broker without per-device users (trusted single machine only)",
    )
    p.add_argument("--tls-cert", type=Path, help="PEM certificate for the embedded broker")
    p.add_argument("--tls-key", type=Path, help="PEM private key for the embedded broker")
    p.add_argument("--tls-ca", type=Path, help="CA that clients trust (default: --tls-cert)")
    p.add_argument("--stream-replicas", type=int, help="JetStream replicas (3 on a cluster)")
    p.add_argument(
        "--accept-log-rollback",
        action="store_true",
        help="start on a log older than what was published (a restored backup): the "
        "missing published positions are skipped, never reused, and the rollback is logged",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(handler=_cmd_serve)

    p = sub.add_parser("enroll", help="enroll a device for a user; prints its token")
    p.add_argument("user")
    p.add_argument("--name", help="a name for the device (e.g. 'office PC')")
    p.add_argument("--device-url", help="broker URL to put in the token (default: the engine's)")
    add_data_arg(p)
    p.add_argument("--nats-url")
    add_json_arg(p)
    p.set_defaults(handler=_cmd_enroll)

    p = sub.add_parser("revoke", help="revoke a device")
    p.add_argument("device_id")
    p.add_argument("--reason")
    add_data_arg(p)
    p.add_argument("--nats-url")
    add_json_arg(p)
    p.set_defaults(handler=_cmd_revoke)

    p = sub.add_parser("mode", help="show or set the user mode (single/centralized/distributed)")
    p.add_argument("mode", nargs="?", choices=["single", "centralized", "distributed"])
    p.add_argument("--force", action="store_true", help="change even though documents exist")
    p.add_argument(
        "--team", type=int, help="the team size: distributed slot k numbers k, k+N, k+2N…"
    )
    add_data_arg(p)
    p.add_argument("--nats-url")
    add_json_arg(p)
    p.set_defaults(handler=_cmd_mode)

    p = sub.add_parser("numbering", help="number series: team size and number patterns")
    nsub = p.add_subparsers(dest="action", required=True)
    q = nsub.add_parser("show", help="the team size, slots and each kind's pattern")
    q = nsub.add_parser("team", help="state the team size (the seed's Increment Number)")
    q.add_argument("size", type=int)
    q = nsub.add_parser(
        "pattern", help="set how a kind's numbers are shown, e.g. INV-{YYYY}-{SEQ:4}"
    )
    q.add_argument("kind", choices=list(KINDS))
    q.add_argument("pattern", help="tokens: {SEQ} {SEQ:n} {YYYY} {YY} {MM} {USER} {SLOT}")
    q.add_argument("--reset", choices=["never", "yearly", "monthly"], default="never")
    q.add_argument(
        "--tz", default="UTC", help="the business's time zone (IANA, e.g. Europe/Berlin)"
    )
    for q in nsub.choices.values():
        add_data_arg(q)
        q.add_argument("--nats-url")
        add_json_arg(q)
        q.set_defaults(handler=_cmd_numbering)

    p = sub.add_parser("status", help="engine status (incl. edition, limits and usage)")
    add_data_arg(p)
    p.add_argument("--nats-url")
    add_json_arg(p)
    p.set_defaults(handler=_cmd_status)

    p = sub.add_parser("register", help="register an edition key on the server")
    p.add_argument("key", help="the registration key (svk1.…)")
    add_data_arg(p)
    p.add_argument("--nats-url")
    add_json_arg(p)
    p.set_defaults(handler=_cmd_register)

    p = sub.add_parser("editions", help="list the editions and their limits")
    add_json_arg(p)
    p.set_defaults(handler=_cmd_editions)

    p = sub.add_parser("integration", help="read-only broker credentials for integrations")
    p.add_argument("action", choices=["add", "remove", "list"])
    p.add_argument("name", nargs="?", help="integration name (a-z, 0-9, '_', '-')")
    p.add_argument("--url", help="broker URL to print (default: the engine's)")
    add_data_arg(p)
    p.add_argument("--nats-url")
    add_json_arg(p)
    p.set_defaults(handler=_cmd_integration)

    cp = sub.add_parser("checkpoints", help="the engine's signed checkpoints (for auditors)")
    csub = cp.add_subparsers(dest="checkpoints_command", required=True, metavar="ACTION")
    p = csub.add_parser("export", help="write the checkpoints (JSON lines) an auditor keeps")
    add_data_arg(p)
    p.add_argument("--out", type=Path, help="file to write (default: standard output)")
    p.set_defaults(handler=_cmd_checkpoints_export)
    p = csub.add_parser("key", help="print the engine's public key (what devices pin)")
    add_data_arg(p)
    p.set_defaults(handler=_cmd_checkpoints_key)

    vendor = sub.add_parser("vendor", help="vendor tools: signing keys, issuing registration keys")
    vsub = vendor.add_subparsers(dest="vendor_command", required=True, metavar="ACTION")
    p = vsub.add_parser("keygen", help="make a vendor key pair (Ed25519)")
    p.add_argument("--out", type=Path, required=True, help="folder for the key files")
    p.add_argument("--force", action="store_true", help="replace existing key files")
    add_json_arg(p)
    p.set_defaults(handler=_cmd_vendor_keygen)
    p = vsub.add_parser("issue", help="issue (sign) a registration key; prints it")
    p.add_argument("--private-key", type=Path, required=True, help="vendor-private.pem")
    p.add_argument("--edition", required=True, help="trial, single, five or site")
    p.add_argument("--licensee", required=True, help="customer name")
    p.add_argument("--expires", help="last valid day, YYYY-MM-DD (default: never)")
    p.add_argument("--max-users", type=int, help="override the edition's user limit")
    p.add_argument("--max-devices", type=int, help="override the edition's device limit")
    p.add_argument("--max-data", help="override the edition's data limit, e.g. 50GB")
    p.set_defaults(handler=_cmd_vendor_issue)
    p = vsub.add_parser("show", help="decode a registration key and check its signature")
    p.add_argument("key")
    p.add_argument("--public-key", type=Path, help="also trust this vendor-public.txt")
    p.set_defaults(handler=_cmd_vendor_show)

    from engine import speccli

    speccli.register(sub)

    if plugins:
        from engine import plugins as plugin_registry

        for _name, register in plugin_registry.load(plugin_registry.CLI_GROUP):
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if argv is None and "COLUMNS" not in os.environ and not sys.stdout.isatty():
        # Rich lays tables out 80 columns wide off a terminal: ids and display
        # numbers then wrap over lines in a pipe or a file (programs use --json).
        os.environ["COLUMNS"] = "160"
    # `serve` needs none of the other commands: skip importing them (start-up
    # time and resident memory of the engine process).
    try:
        parser = build_parser(plugins=not (words[:1] == ["serve"] and "-h" not in words))
    except SynvoiceError as exc:
        print(f"synvoice: error: {exc}", file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except (CliError, SynvoiceError, OSError, RuntimeError, sqlite3.Error) as exc:
        # OSError covers missing or unwritable paths and connection failures.
        text = " ".join(str(exc).split())
        if isinstance(exc, SynvoiceError):  # the protocol's code, as scripts match it
            text = f"{exc.code}: {text}"
        elif isinstance(exc, OSError) and exc.strerror and exc.filename:
            text = f"{exc.strerror}: {exc.filename}"  # no "[Errno 2]"
        print(f"synvoice: error: {text}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
