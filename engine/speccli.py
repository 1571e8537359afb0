"""``synvoice spec`` and ``synvoice token show``: the wire spec and what a token holds."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _cmd_spec(args: argparse.Namespace) -> int:
    from engine import spec

    text = spec.render()
    if args.check:
        current = spec_file(args.out).read_text(encoding="utf-8")
        if current != text:
            print(
                f"synvoice: error: {spec_file(args.out)} differs from the code: "
                "run `synvoice spec --out FILE` to regenerate it",
                file=sys.stderr,
            )
            return 1
        print(f"{spec_file(args.out)} matches the code")
        return 0
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


def spec_file(out: Path | None) -> Path:
    from engine import spec

    return out if out is not None else spec.spec_path()


def _cmd_token_show(args: argparse.Namespace) -> int:
    from engine.enrollment import parse_token

    token = args.token if args.token != "-" else sys.stdin.read()
    fields: dict[str, Any] = parse_token(token).public()
    fields["format"] = token.strip().split(".", 1)[0]
    if args.json:
        print(json.dumps(fields, indent=2, sort_keys=True))
        return 0
    for key in sorted(fields):
        value = fields[key]
        if key == "tls_ca":
            value = f"PEM, {len(str(value))} characters"
        print(f"{key:16} {value}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("spec", help="print the wire protocol's AsyncAPI document")
    p.add_argument("--out", type=Path, help="write it to FILE (default: stdout)")
    p.add_argument(
        "--check",
        action="store_true",
        help="compare with the checked-in spec (or --out FILE) instead; exit 1 if they differ",
    )
    p.set_defaults(handler=_cmd_spec)

    token = sub.add_parser("token", help="enrollment tokens")
    tsub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    p = tsub.add_parser("show", help="what a token holds, secrets left out")
    p.add_argument("token", help="the token (svd2.… or svd1.…; '-' reads stdin)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_token_show)
