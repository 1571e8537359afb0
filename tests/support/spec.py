"""Test support: validating values against the checked-in wire spec (engine/asyncapi.json)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry
from referencing.jsonschema import DRAFT7

from engine import spec
from engine.config import EngineConfig
from engine.server import EngineServer
from tests.support.harness import EngineHarness

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "tests" / "node"
SPEC_URI = "urn:synvoice:asyncapi"


@functools.cache
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(spec.spec_path().read_text(encoding="utf-8"))
    return loaded


@functools.cache
def _registry() -> Registry[Any]:
    return Registry().with_resource(SPEC_URI, DRAFT7.create_resource(document()))


@functools.cache
def validator(name: str) -> jsonschema.Draft7Validator:
    """A validator for ``#/components/schemas/NAME`` (its $refs resolve in the spec)."""
    assert name in document()["components"]["schemas"], name
    return jsonschema.Draft7Validator(
        {"$ref": f"{SPEC_URI}#/components/schemas/{name}"}, registry=_registry()
    )


def check(name: str, value: Any) -> None:
    """Fail with the first schema error (path and message) if ``value`` is not a NAME."""
    errors = sorted(validator(name).iter_errors(_jsonable(value)), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        raise AssertionError(f"not a {name} at {list(e.absolute_path)}: {e.message[:300]}")


def valid(name: str, value: Any) -> bool:
    return bool(validator(name).is_valid(_jsonable(value)))


def _jsonable(value: Any) -> Any:
    """Decoded msgpack as JSON Schema sees it: bin values become strings."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def need_node() -> str:
    """The ``node`` binary, or skip (fail under CI=true: there it is expected)."""
    node = shutil.which("node")
    modules = NODE_DIR / "node_modules"
    missing = (
        "node (Node.js 20+) is not installed"
        if node is None
        else f"{modules} is missing: run `make node-deps` (npm ci in tests/node)"
        if not modules.is_dir()
        else None
    )
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {missing}: the Node client tests cannot run", pytrace=False)
        pytest.skip(f"NODE CLIENT TESTS NOT RUN: {missing}")
    assert node is not None
    return node


@contextlib.asynccontextmanager
async def embedded_engine(data_dir: Path) -> AsyncIterator[EngineHarness]:
    """The engine with its own nats-server and generated broker users, as
    ``synvoice serve`` runs it (no live-views worker: the tests replay the log)."""
    cfg = EngineConfig(data_dir=data_dir, nats_url=None, nats_port=0)
    cfg.live_views = False
    server = EngineServer(cfg)
    await server.start()
    h = EngineHarness(server, server.nats_url)
    try:
        yield h
    finally:
        await h.close()
        await server.stop()
