"""``make bench`` (``python -m tests.bench``): benchmarks beside same-run raw ceilings.

Each benchmark starts its own nats-server and engine process (``python -m
engine serve``) in a scratch directory, runs its workload from this process,
measures the raw ceilings that bound it (aiosqlite inserts, NATS request/reply,
JetStream KV and replay, SQLite scans) and prints figure, goal, ceiling and
ratio. Benchmarks print; they never fail on a slow figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

DEFAULT_OUT_DIR = Path("bench-results")


def build_parser() -> argparse.ArgumentParser:
    from engine.cli import add_json_arg
    from tests.bench.runner import BENCHES

    p = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description="Run the benchmarks ("
        + ", ".join(BENCHES)
        + ") with a real nats-server and engine process; print each figure beside its "
        "goal and the raw ceiling measured in the same run.",
    )
    p.add_argument("--only", metavar="NAME[,NAME]", help="run only these benchmarks")
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every size by this (e.g. 0.1 for a quick run; default 1)",
    )
    p.add_argument(
        "--json-out",
        type=Path,
        metavar="FILE",
        help="where to write the results (default bench-results/bench-<timestamp>.json)",
    )
    add_json_arg(p)
    p.add_argument("--workdir", type=Path, help="scratch space (default: a new temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the scratch space")
    p.add_argument(
        "--profile",
        action="store_true",
        help="also run append and numbers with the engine, and catchup with the "
        "device agent, under pyinstrument (reports saved beside the JSON; figures "
        "come from the unprofiled run)",
    )
    return p


def _selected(only: str | None) -> list[str]:
    from engine.cli import CliError
    from tests.bench.runner import BENCHES

    if not only:
        return list(BENCHES)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHES]
    if unknown or not names:
        what = ", ".join(unknown) or repr(only)
        raise CliError(f"unknown benchmark {what}; choose from {', '.join(BENCHES)}")
    return names


def _cmd_bench(args: argparse.Namespace) -> int:
    from engine.cli import CliError

    names = _selected(args.only)
    if not args.scale > 0:
        raise CliError("--scale must be greater than 0")
    if args.profile:
        try:
            import pyinstrument  # noqa: F401
        except ImportError:
            raise CliError("--profile needs pyinstrument: pip install pyinstrument") from None
    try:
        import uvloop  # the engine runs on uvloop; so does its client here

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(_main(args, names))


async def _main(args: argparse.Namespace, names: list[str]) -> int:
    from rich.console import Console

    from tests.bench import report, runner
    from tests.bench.context import Context

    err = Console(stderr=True)
    scratch_root = args.workdir
    if scratch_root is not None:
        scratch_root.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="synvoice-bench-", dir=scratch_root))
    ctx = Context(scale=args.scale, workdir=workdir, out_dir=DEFAULT_OUT_DIR, console=err)
    json_out: Path = args.json_out or DEFAULT_OUT_DIR / f"bench-{ctx.stamp}.json"
    ctx.out_dir = json_out.parent
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    ctx.profile = args.profile
    meta = runner.meta(ctx, ["python", "-m", "tests.bench", *sys.argv[1:]])
    try:
        results = await runner.run(ctx, names)
    finally:
        if args.keep:
            err.print(f"scratch space kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    doc = report.to_json(results, meta)
    json_out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
    else:
        out = Console(width=None if sys.stdout.isatty() else 160)
        out.print(report.render(results, f"synvoice bench (scale {args.scale:g})"))
        if any(r.info.get("cpu_share") for r in results):
            out.print(report.render_cpu(results))
        out.print(f"results: {json_out}")
    return 0 if all(r.status != "error" for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    from engine.cli import CliError

    args = build_parser().parse_args(argv)
    try:
        return _cmd_bench(args)
    except CliError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
