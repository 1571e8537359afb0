"""Delivering invoice PDFs: e-mail over SMTP (stdlib smtplib) and printing.

Blocking I/O, meant to run in worker threads: each thread keeps one SMTP
session open and sends many messages on it (a session per message would cap
throughput at the cost of TCP + EHLO + TLS for every invoice).
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import shutil
import smtplib
import ssl
import subprocess
import threading
import uuid
from email.header import Header
from email.utils import formatdate
from pathlib import Path

from devices.billing.config import BillingConfig

# Deliberately simple: one '@', no spaces, a dot in the domain. The SMTP server
# has the last word (a refused recipient is a failure with the server's reason).
_ADDRESS = re.compile(r"^[^@\s<>,;\"]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


class DeliveryError(Exception):
    """A delivery that failed, with a reason a person can act on."""


def check_address(addr: str | None) -> str | None:
    """The reason an address cannot be used, or None when it looks deliverable."""
    if not addr:
        return "the customer has no e-mail address"
    if not addr.isascii() or not _ADDRESS.match(addr) or ".." in addr:
        return f"invalid e-mail address {addr!r}"
    return None


def _header(value: str) -> str:
    return value if value.isascii() else Header(value, "utf-8").encode()


def _b64_lines(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def build_message(
    sender: str,
    to: str,
    subject: str,
    body: str,
    pdf: bytes,
    filename: str,
    message_id: str,
) -> bytes:
    """The MIME message (text + PDF attachment) as SMTP-ready bytes (CRLF lines).

    Built directly rather than with ``email.message.EmailMessage``: the
    generic builder costs more per invoice than rendering the PDF.
    """
    boundary = f"=_synvoice_{uuid.uuid4().hex}"
    head = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {_header(subject)}",
        f"Date: {formatdate(localtime=True)}",
        # Derived from the invoice: a re-sent invoice (after a crash) has the same
        # id, so mail systems can tell it is the same message.
        f"Message-ID: {message_id}",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/mixed; boundary="{boundary}"',
        "",
        f"--{boundary}",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: base64",
        "",
    ]
    out = "\r\n".join(head).encode() + b"\r\n" + _b64_lines(body.encode())
    out += (
        f"--{boundary}\r\n"
        f'Content-Type: application/pdf; name="{filename}"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        f'Content-Disposition: attachment; filename="{filename}"\r\n\r\n'
    ).encode()
    return out + _b64_lines(pdf) + f"--{boundary}--\r\n".encode()


class SmtpSender:
    """Thread-safe sender: one SMTP session per worker thread, reused."""

    def __init__(self, cfg: BillingConfig) -> None:
        self.cfg = cfg
        self._local = threading.local()
        self._all: list[smtplib.SMTP] = []
        self._lock = threading.Lock()

    def _where(self) -> str:
        return f"{self.cfg.smtp_host}:{self.cfg.smtp_port}"

    def _connect(self) -> smtplib.SMTP:
        cfg = self.cfg
        try:
            # Certificates are always verified (system CAs, or the configured bundle).
            ctx = ssl.create_default_context(cafile=cfg.smtp_cafile or None)
        except (OSError, ssl.SSLError) as exc:
            raise DeliveryError(f"cannot use SMTP CA file {cfg.smtp_cafile}: {exc}") from None
        try:
            smtp: smtplib.SMTP
            if cfg.smtp_ssl:
                smtp = smtplib.SMTP_SSL(
                    cfg.smtp_host, cfg.smtp_port, timeout=cfg.smtp_timeout, context=ctx
                )
            else:
                smtp = smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.smtp_timeout)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"SMTP server {self._where()} unreachable: {exc}") from None
        try:
            if cfg.smtp_starttls and not cfg.smtp_ssl:
                smtp.starttls(context=ctx)
            if cfg.smtp_user:
                smtp.login(cfg.smtp_user, cfg.smtp_password or "")
        except smtplib.SMTPAuthenticationError as exc:
            smtp.close()
            raise DeliveryError(
                f"SMTP login to {self._where()} refused: {_smtp_reason(exc)}"
            ) from None
        except ssl.SSLError as exc:
            smtp.close()
            raise DeliveryError(f"TLS with SMTP server {self._where()} failed: {exc}") from None
        except (OSError, smtplib.SMTPException) as exc:
            smtp.close()
            raise DeliveryError(
                f"SMTP server {self._where()} refused the session: {_smtp_reason(exc)}"
            ) from None
        with self._lock:
            self._all.append(smtp)
        return smtp

    def _session(self) -> smtplib.SMTP:
        smtp: smtplib.SMTP | None = getattr(self._local, "smtp", None)
        if smtp is None:
            smtp = self._connect()
            self._local.smtp = smtp
        return smtp

    def _drop(self) -> None:
        smtp = getattr(self._local, "smtp", None)
        self._local.smtp = None
        if smtp is not None:
            try:
                smtp.close()
            except Exception:
                pass

    def send(self, msg: bytes, to: str) -> None:
        for attempt in (1, 2):
            smtp = self._session()
            try:
                refused = smtp.sendmail(self.cfg.smtp_from, [to], msg)
                if refused:
                    raise DeliveryError(f"recipient {to} refused: {refused}")
                return
            except smtplib.SMTPRecipientsRefused as exc:
                code_msg = exc.recipients.get(to)
                self._reset(smtp)
                reason = _smtp_reason(code_msg) if code_msg else "refused"
                raise DeliveryError(f"recipient {to} refused: {reason}") from None
            except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
                self._reset(smtp)
                raise DeliveryError(
                    f"SMTP server refused the message: {_smtp_reason(exc)}"
                ) from None
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                # A kept session may have timed out: reconnect once, then give up.
                self._drop()
                if attempt == 2:
                    raise DeliveryError(f"SMTP server {self._where()} failed: {exc}") from None
        raise AssertionError("unreachable")

    def _reset(self, smtp: smtplib.SMTP) -> None:
        try:
            smtp.rset()
        except Exception:
            self._drop()

    def close(self) -> None:
        with self._lock:
            sessions, self._all = self._all, []
        for smtp in sessions:
            try:
                smtp.quit()
            except Exception:
                try:
                    smtp.close()
                except Exception:
                    pass


def _smtp_reason(exc: object) -> str:
    code = getattr(exc, "smtp_code", None)
    err = getattr(exc, "smtp_error", None)
    if isinstance(exc, tuple) and len(exc) == 2:
        code, err = exc
    if isinstance(err, bytes):
        err = err.decode(errors="replace")
    if code is not None:
        return f"{code} {err}".strip()
    return str(exc)


def print_pdf(path: Path, cfg: BillingConfig, spool: Path) -> str:
    """Print one PDF; returns where it went. Without a print command the PDF is
    copied into the spool folder (written under a temporary name, then renamed,
    so a spooler never picks up half a file)."""
    if cfg.print_command:
        args = shlex.split(cfg.print_command)
        if any("{file}" in a for a in args):
            args = [a.replace("{file}", str(path)) for a in args]
        else:
            args.append(str(path))
        try:
            done = subprocess.run(args, capture_output=True, timeout=120, check=False)
        except FileNotFoundError:
            raise DeliveryError(f"print command not found: {args[0]}") from None
        except subprocess.TimeoutExpired:
            raise DeliveryError(f"print command timed out: {args[0]}") from None
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace").strip().splitlines()
            raise DeliveryError(
                f"print command exited {done.returncode}" + (f": {err[-1]}" if err else "")
            )
        return args[0]
    try:
        spool.mkdir(parents=True, exist_ok=True)
        tmp = spool / f".{path.name}.part"
        shutil.copyfile(path, tmp)
        os.replace(tmp, spool / path.name)
    except OSError as exc:
        raise DeliveryError(f"cannot write to the spool folder {spool}: {exc}") from None
    return str(spool / path.name)
