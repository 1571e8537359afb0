"""The engine core, split by job (no transport: ``engine.service`` is the NATS edge).

- ``engine``: ``EngineCore``, the request entry point (size, signature, dispatch);
- ``routes``: the one routing table (subject -> handler, admin flag, message types);
- ``requests``: requests checked into their message types (``engine.messages``);
- ``push``, ``pull``, ``numbers`` (and distributed epochs), ``admin``, ``status``:
  the handlers;
- ``writer``: the group-commit writer, its jobs and batches.
"""

from __future__ import annotations

from engine.core.base import Caller
from engine.core.engine import EngineCore, load_or_create_admin_secret
from engine.core.writer import load_state

__all__ = ["Caller", "EngineCore", "load_or_create_admin_secret", "load_state"]
