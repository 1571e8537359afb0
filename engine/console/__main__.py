"""``python -m engine.console``: the console process (started by ``synvoice serve``).

Prints ``listening URL`` once it accepts connections; ends when its stdin closes
(the engine that started it ended) or on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import sys
import time
from pathlib import Path

import uvicorn

from engine.console.app import build
from engine.console.config import ConsoleConfig
from engine.console.users import Users

EXIT_NO_PORT = 3  # the supervisor does not retry: the address stays taken


def _wait_for_engine(data: Path, timeout: float = 60.0) -> None:
    """The engine writes engine.json after its plugins attach: wait for it."""
    deadline = time.monotonic() + timeout
    runtime = data / "engine.json"
    while time.monotonic() < deadline:
        try:
            json.loads(runtime.read_text())["nats_url"]
            return
        except (FileNotFoundError, ValueError, KeyError):
            time.sleep(0.1)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Inherited by accepted connections (Linux): uvicorn writes a response's head
    # and body apart, and Nagle held the body for the client's delayed ACK (~40 ms
    # a request, measured by bench_console).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


async def _watch_stdin(server: uvicorn.Server) -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.buffer.read)  # returns at EOF
    server.should_exit = True


async def serve(args: argparse.Namespace) -> int:
    cfg = ConsoleConfig(
        host=args.host, port=args.port, tls_cert=args.tls_cert, tls_key=args.tls_key
    )
    data: Path = args.data
    first = Users(data / "console" / "users.json").first_start()
    if first is not None:
        print(
            f"console: operator account {first[0]!r}, password {first[1]} "
            "(printed once; change it with: synvoice console passwd operator)",
            flush=True,
        )
    _wait_for_engine(data)
    console, app = build(data, cfg)
    try:
        sock = bind(cfg.host, cfg.port)
    except OSError as exc:
        print(f"console: error: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}", flush=True)
        return EXIT_NO_PORT
    kw: dict[str, object] = {}
    if cfg.tls_cert and cfg.tls_key:
        kw = {"ssl_certfile": str(cfg.tls_cert), "ssl_keyfile": str(cfg.tls_key)}
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
        **kw,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    watcher = asyncio.create_task(_watch_stdin(server)) if args.watch_stdin else None

    async def announce() -> None:
        # The socket listens already (bound above): connections queue until served.
        print(f"listening {cfg.scheme}://{shown}:{port}/", flush=True)

    console.startup.append(announce)
    try:
        await server.serve(sockets=[sock])
    finally:
        if watcher is not None:
            watcher.cancel()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.console")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--host", default=ConsoleConfig().host)
    p.add_argument("--port", type=int, default=ConsoleConfig().port)
    p.add_argument("--tls-cert", type=Path)
    p.add_argument("--tls-key", type=Path)
    p.add_argument("--no-watch-stdin", dest="watch_stdin", action="store_false")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return asyncio.run(serve(args))
    except OSError as exc:
        print(f"console: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C in the terminal of `synvoice serve` reaches its whole process
        # group: a stop that was asked for, not a crash to print.
        return 0


if __name__ == "__main__":
    sys.exit(main())
