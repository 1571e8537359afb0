"""A plain wheel serves: ``pip install .`` (not ``-e``) in a fresh venv runs the engine.

The broker configuration must ship inside the package and every plugin must be
reachable through the installed entry points, not through the checkout.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest

from engine.natsproc import DEFAULT_CONFIG, DEPLOY_DIR, free_port, terminate

ROOT = Path(__file__).resolve().parents[2]
_NOT_SOURCES = (".git", ".venv", "build", "*.egg-info", "node_modules", "*cache*", "test-artifacts")


def test_packaged_broker_config_is_the_deploy_copy() -> None:
    assert DEFAULT_CONFIG.parent.name == "engine"
    assert filecmp.cmp(DEFAULT_CONFIG, DEPLOY_DIR / "nats-server.conf", shallow=False)


@pytest.mark.slow
@pytest.mark.broker
def test_wheel_in_a_fresh_venv_serves(tmp_path: Path) -> None:
    # Build from a copy: setuptools writes build/ and egg-info beside the sources.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*_NOT_SOURCES))
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(src)],
        check=True,
        timeout=300,
    )
    (wheel,) = dist.glob("synvoice-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    # Dependencies come from the registry (or pip's cache); the wheel itself from dist.
    subprocess.run([py, "-m", "pip", "install", "--quiet", str(wheel)], check=True, timeout=600)
    work = tmp_path / "run"  # not the checkout: nothing may come from it
    work.mkdir()
    data = work / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.Popen(
        [
            env_dir / "bin" / "synvoice",
            "serve",
            "--data",
            str(data),
            "--nats-port",
            str(free_port()),
        ],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        runtime = data / "engine.json"
        while not runtime.exists():
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "engine did not start from the wheel"
            time.sleep(0.2)
        assert json.loads(runtime.read_text())["embedded_nats"] is True
        status = subprocess.run(
            [env_dir / "bin" / "synvoice", "status", "--data", str(data), "--json"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["mode"] == "centralized"
        # Plugins come from the installed entry points: the device CLI is there.
        help_ = subprocess.run(
            [env_dir / "bin" / "synvoice", "device", "--help"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert help_.returncode == 0, help_.stderr
    finally:
        terminate(proc)
