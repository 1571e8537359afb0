"""Console accounts (argon2 hashes in ``DATA/console/users.json``) and sign-in limits.

Roles: ``operator`` may change things, ``auditor`` only reads. The file is
owner-only; a password change also changes the account's ``gen`` so sessions
signed in with the old password end.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from engine.errors import SynvoiceError

ROLES = ("operator", "auditor")
USER_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
MIN_PASSWORD = 8
# argon2id at OWASP's recommended minimum (19 MiB, 2 passes, 1 lane): a sign-in
# costs tens of milliseconds on a loaded 2-core server, not a second. The
# parameters are stored in each hash, so raising them later keeps old ones valid.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# An unknown name is checked against this, so the reply time does not tell
# which names exist.
_DUMMY = _hasher.hash("synvoice: no such account")


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    hash: str
    gen: str


class Users:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Account]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return {
            n: Account(n, str(a["role"]), str(a["hash"]), str(a.get("gen", "")))
            for n, a in raw.items()
        }

    def _save(self, accounts: dict[str, Account]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            body = {
                a.name: {"role": a.role, "hash": a.hash, "gen": a.gen} for a in accounts.values()
            }
            json.dump(body, f, indent=2)
        os.replace(tmp, self.path)

    def set_password(self, name: str, password: str, role: str | None = None) -> Account:
        if not USER_NAME.match(name):
            raise SynvoiceError("bad_request", f"user name {name!r}: use a-z, 0-9, '.', '_', '-'")
        if len(password) < MIN_PASSWORD:
            raise SynvoiceError("bad_request", f"a password needs {MIN_PASSWORD}+ characters")
        accounts = self.load()
        old = accounts.get(name)
        role = role or (old.role if old else "operator")
        if role not in ROLES:
            raise SynvoiceError("bad_request", f"role must be one of {', '.join(ROLES)}")
        acc = Account(name, role, _hasher.hash(password), secrets.token_hex(8))
        accounts[name] = acc
        self._save(accounts)
        return acc

    def first_start(self) -> tuple[str, str] | None:
        """Make the operator account when there is none: (name, password), once."""
        if self.load():
            return None
        password = secrets.token_urlsafe(12)
        self.set_password("operator", password, "operator")
        return "operator", password

    def check(self, name: str, password: str) -> Account | None:
        acc = self.load().get(name)
        if acc is None:
            try:
                _hasher.verify(_DUMMY, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                pass
            return None
        try:
            _hasher.verify(acc.hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return acc


class SigninLimiter:
    """At most ``attempts`` failed sign-ins per user name per ``window`` s, and four
    times as many per client address (one office shares an address: a guesser at
    one name must not lock everyone out)."""

    def __init__(self, attempts: int = 5, window: float = 60.0) -> None:
        self.attempts = attempts
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _limit(self, key: str) -> int:
        return self.attempts * 4 if key.startswith("addr:") else self.attempts

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def wait(self, keys: list[str], now: float | None = None) -> float:
        """Seconds until another attempt is allowed (0: now)."""
        now = time.monotonic() if now is None else now
        worst = 0.0
        for k in keys:
            q = self._recent(k, now)
            if len(q) >= self._limit(k):
                worst = max(worst, q[0] + self.window - now)
        return worst

    def failed(self, keys: list[str], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for k in keys:
            self._recent(k, now).append(now)
        if len(self._failures) > 10_000:  # bounded memory under a spray of names
            self._failures = {k: q for k, q in self._failures.items() if q}
