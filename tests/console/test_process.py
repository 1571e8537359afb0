"""The console process on its own: HTTPS with the configured certificate, its
cookie then ``Secure``, it ends when its stdin closes (the engine that started
it ended), and a taken port is reported once, not retried."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from engine.console.users import Users
from tests.support.harness import self_signed_cert

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def start(data: Path, *extra: str, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.console",
            "--data",
            str(data),
            "--host",
            "127.0.0.1",
            *extra,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
    )


def listening(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode().strip()
        if line.startswith("listening "):
            return line.split(" ", 1)[1]
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"console did not start (exit {proc.poll()})")


def test_https_secure_cookie_and_ends_with_its_stdin(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # No engine needed for these pages: the admin link connects on first use.
    (data / "engine.json").write_text(json.dumps({"nats_url": "nats://127.0.0.1:1"}))
    Users(data / "console" / "users.json").set_password("operator", "correct horse battery")
    cert, key = self_signed_cert(tmp_path)
    proc = start(
        data, "--port", "0", "--tls-cert", str(cert), "--tls-key", str(key),
        SYNVOICE_CONSOLE_METRICS_TOKEN="scrape-me",
    )  # fmt: skip
    try:
        url = listening(proc)
        assert url.startswith("https://127.0.0.1:")
        u = urllib.parse.urlsplit(url)
        ctx = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection("127.0.0.1", u.port, context=ctx, timeout=10)
        conn.request("GET", "/ping")
        assert conn.getresponse().read() == b"ok"
        conn.request("GET", "/metrics")  # a token is set: a scraper must bring it
        r = conn.getresponse()
        assert r.status == 401 and b"Bearer" in r.read()
        conn.request("GET", "/metrics", headers={"Authorization": "Bearer scrape-me"})
        r = conn.getresponse()
        assert r.status == 200 and b"synvoice_engine_up 0" in r.read()  # no engine here
        conn.request("GET", "/")
        r = conn.getresponse()
        r.read()
        assert r.status == 303 and r.getheader("location", "").startswith("/signin")
        form = {"user": "operator", "password": "correct horse battery"}
        conn.request("POST", "/signin", urllib.parse.urlencode(form), FORM)
        r = conn.getresponse()
        assert r.status == 403 and b"security token" in r.read()  # login CSRF refused
        conn.request("GET", "/signin")
        r = conn.getresponse()
        page = r.read().decode()
        pre = (r.getheader("set-cookie") or "").split(";", 1)[0]
        m = re.search(r'name="csrf" value="([^"]+)"', page)
        assert m is not None
        conn.request(
            "POST",
            "/signin",
            urllib.parse.urlencode({**form, "csrf": m.group(1)}),
            {**FORM, "Cookie": pre},
        )
        r = conn.getresponse()
        r.read()
        cookie = (r.getheader("set-cookie") or "").lower()
        assert r.status == 303 and "secure" in cookie and "httponly" in cookie
        assert "samesite=strict" in cookie
        assert r.getheader("content-security-policy", "").startswith("default-src 'self'")
        conn.close()
        assert proc.stdin is not None
        proc.stdin.close()  # the engine ended
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_taken_port_is_reported(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "engine.json").write_text(json.dumps({"nats_url": "nats://127.0.0.1:1"}))
    Users(data / "console" / "users.json").set_password("operator", "correct horse battery")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = start(data, "--port", str(taken.getsockname()[1]))
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert b"cannot listen" in out
