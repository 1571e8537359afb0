"""``synvoice device pdf|send|einvoice|credit`` and ``synvoice seller show|set``.

Kept beside ``devices.cli`` (which wires them in) so the document commands
share its device handling (``_run``: open, go online, sync) and references
(``resolve``), without growing that module.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
from pathlib import Path
from typing import Any

from devices import documents_out
from devices.agent import DeviceAgent
from devices.billing.config import load_config
from devices.billing.einvoice import FORMATS
from devices.cli import _common, _one_line_error, _OneLineParser, _run, label, resolve
from devices.seller import FIELDS, merged, push_seller, read_seller
from engine.cli import CliError, print_json
from engine.crediting import credited_summary


async def _cmd_pdf(args: argparse.Namespace) -> int:
    async def act(agent: DeviceAgent, online: bool) -> int:
        path = await documents_out.write_pdf(agent, resolve(agent, args.doc), args.out)
        if args.json:
            print_json({"pdf": str(path)})
        else:
            print(f"wrote {path}")
        return 0

    return await _run(args, act, sync_after=False)


async def _cmd_einvoice(args: argparse.Namespace) -> int:
    async def act(agent: DeviceAgent, online: bool) -> int:
        doc = resolve(agent, args.doc)
        path = await documents_out.write_einvoice(agent, doc, args.format, args.out)
        if args.json:
            print_json({"file": str(path), "format": args.format})
        else:
            print(f"wrote {path} ({args.format}, checked against its XSD)")
        return 0

    return await _run(args, act, sync_after=False)


async def _cmd_send(args: argparse.Namespace) -> int:
    async def act(agent: DeviceAgent, online: bool) -> int:
        doc = resolve(agent, args.doc)
        data = await documents_out.data_of(agent, doc)
        to = args.to or data.customer.get("email")
        if not to:
            raise CliError(f"{data.heading}: the customer has no e-mail address (use --to)")
        cfg = load_config(args.home)
        sent = await asyncio.to_thread(documents_out.send_blocking, data, doc, to, cfg)
        if args.json:
            print_json({"to": sent.to, "attachment": sent.pdf_name})
        else:
            print(f"sent {data.heading} to {sent.to} ({sent.pdf_name})")
        return 0

    return await _run(args, act, sync_after=False)


async def _cmd_credit(args: argparse.Namespace) -> int:
    async def act(agent: DeviceAgent, online: bool) -> int:
        inv = resolve(agent, args.invoice)
        view = await documents_out.credit(agent, inv, args.line or (), force=args.force)
        if args.json:
            print_json(view.as_dict())
        else:
            invoice = agent.document(inv)
            print(f"{label(view)} credits invoice {invoice.number}  {view.doc_id}")
            done = documents_out.credited_of(agent.documents(), invoice)
            print(f"  invoice {credited_summary(done, len(invoice.lines))}")
        return 0

    return await _run(args, act)


def _seller_changes(args: argparse.Namespace) -> dict[str, Any]:
    changes = {f: getattr(args, f) for f in FIELDS if f != "logo" and getattr(args, f) is not None}
    if args.logo is not None:
        if args.logo == "":
            changes["logo"] = ""
        else:
            try:
                raw = Path(args.logo).read_bytes()
            except OSError as exc:
                raise CliError(f"--logo {args.logo}: {exc.strerror}") from None
            if not raw.startswith((b"\x89PNG", b"\xff\xd8")):
                raise CliError(f"--logo {args.logo}: not a PNG or JPEG file")
            changes["logo"] = base64.b64encode(raw).decode()
    return changes


async def _cmd_seller_show(args: argparse.Namespace) -> int:
    async def act(agent: DeviceAgent, online: bool) -> int:
        seller = await read_seller(agent.store)
        if args.json:
            print_json(seller.model_dump(mode="json") if seller else None)
        elif seller is None:
            print("no seller profile (set it with: synvoice seller set --legal-name NAME ...)")
        else:
            for k, v in seller.model_dump().items():
                if v is not None:
                    shown = (
                        f"({len(v) * 3 // 4} bytes)" if k == "logo" else str(v).replace("\n", ", ")
                    )
                    print(f"{k.replace('_', ' ')}: {shown}")
        return 0

    return await _run(args, act, sync_after=False)


async def _cmd_seller_set(args: argparse.Namespace) -> int:
    changes = _seller_changes(args)
    if not changes:
        raise CliError("nothing to set (see synvoice seller set --help)")

    async def act(agent: DeviceAgent, online: bool) -> int:
        if not online:
            raise CliError("setting the seller needs the engine (it is not reachable)")
        profile = merged(await read_seller(agent.store), changes)
        await push_seller(agent, profile)
        if args.json:
            print_json(profile.model_dump(mode="json"))
        else:
            print(f"seller profile set: {profile.legal_name}")
        return 0

    return await _run(args, act, sync_after=False)


def add_document_commands(ds: Any, sub: Any) -> None:
    """Called by ``devices.cli.register`` with its ``device`` subparsers and the top level."""
    p = ds.add_parser("pdf", help="write a document's PDF (invoice, quote, estimate, credit note)")
    p.add_argument("doc")
    p.add_argument("--out", type=Path, help="the PDF file (default ./KIND-NUMBER.pdf)")
    _common(p)
    p.set_defaults(handler=_cmd_pdf)

    p = ds.add_parser("send", help="e-mail a document's PDF through the configured SMTP")
    p.add_argument("doc")
    p.add_argument("--to", help="recipient (default: the customer's e-mail)")
    _common(p)
    p.set_defaults(handler=_cmd_send)

    p = ds.add_parser(
        "credit",
        help="a credit note for an issued invoice (lines not credited yet, or chosen ones)",
    )
    p.add_argument("invoice")
    p.add_argument(
        "--line", type=int, action="append", metavar="N", help="credit line N only (repeat)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="credit lines already credited (recorded in the credit note's notes)",
    )
    _common(p)
    p.set_defaults(handler=_cmd_credit)

    p = ds.add_parser("einvoice", help="export an invoice or credit note as an EN 16931 e-invoice")
    p.add_argument("doc")
    p.add_argument("--format", choices=FORMATS, default="facturx")
    p.add_argument("--out", type=Path, help="the file (default ./KIND-NUMBER.xml|.facturx.pdf)")
    _common(p)
    p.set_defaults(handler=_cmd_einvoice)

    seller = sub.add_parser("seller", help="the seller profile printed on every document")
    _one_line_error(seller)
    ss = seller.add_subparsers(
        dest="seller_command", required=True, metavar="COMMAND", parser_class=_OneLineParser
    )
    p = ss.add_parser("show", help="the profile in force on this device")
    _common(p)
    p.set_defaults(handler=_cmd_seller_show)
    p = ss.add_parser("set", help="change fields of the profile ('' clears one); needs the engine")
    for f in FIELDS:
        p.add_argument(f"--{f.replace('_', '-')}", dest=f, metavar="FILE" if f == "logo" else None)
    _common(p)
    p.set_defaults(handler=_cmd_seller_set)
