"""Rendering jobs: PDF file + ready-to-send e-mail bytes for one invoice.

``prepare`` is CPU-bound and self-contained (a picklable job in, a file and
bytes out), so large runs spread it over worker processes: fpdf2 and MIME
building would otherwise hold the GIL and starve the event loop that drives the
device agent and the engine.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from devices.billing import fonts
from devices.billing.delivery import build_message
from devices.billing.einvoice import facturx_pdf, ubl_xml
from devices.billing.pdf import InvoiceData, render

AUTO_PROCESS_MIN = 100  # below this many invoices, worker processes cost more than they save


@dataclass(frozen=True)
class Mail:
    sender: str
    to: str
    subject: str
    body: str
    message_id: str


@dataclass(frozen=True)
class RenderJob:
    data: InvoiceData
    path: str
    mail: Mail | None  # None: print or create only
    einvoice: str | None = None  # "facturx": the PDF is a Factur-X; "ubl": an .xml beside it


@dataclass(frozen=True)
class Prepared:
    path: str
    message: bytes | None


def write_atomic(path: Path, data: bytes) -> None:
    """Readers (spoolers, people) never see half a file."""
    if not path.parent.is_dir():  # said of the file asked for, not of our .part
        raise FileNotFoundError(f"cannot write {path}: there is no folder {path.parent}")
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def prepare(job: RenderJob) -> Prepared:
    path = Path(job.path)
    if job.einvoice == "facturx":
        pdf = facturx_pdf(job.data)
    else:
        pdf = render(job.data)
    if job.einvoice == "ubl":
        write_atomic(path.with_suffix(".xml"), ubl_xml(job.data))
    write_atomic(path, pdf)
    if job.mail is None:
        return Prepared(job.path, None)
    m = job.mail
    msg = build_message(m.sender, m.to, m.subject, m.body, pdf, path.name, m.message_id)
    return Prepared(job.path, msg)


def process_count(setting: int, jobs: int) -> int:
    """How many worker processes to use (0: render in threads)."""
    if setting == -1:
        return (os.cpu_count() or 1) if jobs >= AUTO_PROCESS_MIN else 0
    return min(setting, max(jobs, 1))


def process_pool(n: int) -> Executor:
    # forkserver: the billing process runs threads (SQLite, SMTP); forking it
    # directly could copy a lock held by one of them into the child. Each worker
    # parses the fonts once, before its first invoice.
    return ProcessPoolExecutor(
        max_workers=n,
        mp_context=multiprocessing.get_context("forkserver"),
        initializer=fonts.warm,
    )
