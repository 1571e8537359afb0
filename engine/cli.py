"""``synvoice``: the command line (server side here; other packages add theirs).

Subcommands from other packages are found by importing the modules in
``PLUGINS`` and calling their ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from engine.config import EngineConfig
from engine.errors import SynvoiceError

PLUGINS = ("devices.cli", "projections.cli", "projections.billing_cli", "engine.bench")

Handler = Callable[[argparse.Namespace], Awaitable[int] | int]


class CliError(Exception):
    """A one-line error for the person at the terminal (exit status 1)."""


def add_data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=EngineConfig().data_dir, help="data folder")


def add_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


# --- serve ------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    from engine.server import EngineServer

    cfg = EngineConfig(data_dir=args.data)
    if args.nats_url:
        cfg.nats_url = args.nats_url
    if args.nats_port is not None:
        cfg.nats_port = args.nats_port
    if args.sync:
        cfg.sync = args.sync
    if args.no_publish:
        cfg.publish = False
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
        print(
            f"synvoice engine ready\n"
            f"  broker : {server.nats_url}{where}\n"
            f"  log    : {cfg.log_path} (head {server.core.log.head})\n"
            f"  mode   : {st.mode}{'' if st.mode_set else ' (default)'}\n"
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
    try:
        return await EngineClient.connect(url, ADMIN_DEVICE, secret, max_reconnect_attempts=2)
    except Exception as exc:
        raise CliError(f"cannot reach the engine at {url}: {exc}") from None


async def _cmd_enroll(args: argparse.Namespace) -> int:
    from engine.enrollment import Enrollment

    client = await admin_client(args)
    try:
        r = await client.enroll(args.user, args.name)
        url = args.device_url or client.nc.connected_url.geturl()
    finally:
        await client.close()
    secret = bytes.fromhex(r["secret"])
    token = Enrollment(url, r["device_id"], secret, r["user"], r["slot"]).token()
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
        r = await client.revoke(args.device_id, args.reason)
    finally:
        await client.close()
    print_json(r) if args.json else print(f"device {r['device_id']} revoked")
    return 0


async def _cmd_mode(args: argparse.Namespace) -> int:
    client = await admin_client(args)
    try:
        if args.mode is None:
            st = await client.status()
            r = {"mode": st["mode"], "mode_set": st["mode_set"]}
            print_json(r) if args.json else print(st["mode"])
            return 0
        r = await client.set_mode(args.mode, args.force)
    finally:
        await client.close()
    if args.json:
        print_json(r)
    elif r["changed"]:
        print(f"user mode is now {r['mode']} (was {r['previous']})")
    else:
        print(f"user mode is already {r['mode']}")
    return 0


async def _cmd_status(args: argparse.Namespace) -> int:
    client = await admin_client(args)
    try:
        st = await client.status()
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
    for key, value in st.items():
        if key.startswith("edition") or key in ("limits", "usage"):
            t.add_row(key, json.dumps(value))
    Console().print(t)
    return 0


# --- wiring -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
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
    add_data_arg(p)
    p.add_argument("--nats-url")
    add_json_arg(p)
    p.set_defaults(handler=_cmd_mode)

    p = sub.add_parser("status", help="engine status")
    add_data_arg(p)
    p.add_argument("--nats-url")
    add_json_arg(p)
    p.set_defaults(handler=_cmd_status)

    for mod_name in PLUGINS:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name == mod_name:
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except (CliError, SynvoiceError, FileNotFoundError, RuntimeError, ConnectionError) as exc:
        print(f"synvoice: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
