"""7. The engine's per-event hot path, step by step (µs per event, this process).

Calls the engine's own functions on realistic events, so a change to them shows
here: what a push costs before the broker and SQLite are even involved. The raw
rows are msgpack alone, the floor under any step that decodes or encodes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgpack

from engine import auth, codec
from engine.bench.context import Context
from engine.bench.loggen import DocumentEvents, LogSpec
from engine.bench.report import BenchResult, Figure
from engine.events import Event, parse_event
from engine.hashchain import GENESIS, link
from engine.state import EngineState

NAME = "hotpath"
TITLE = "7. engine hot path per event (diagnostic)"


def _us(fn: Callable[[], Any], per: int) -> float:
    """Best of 3 runs, in µs per item (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best / per * 1e6


async def run(ctx: Context) -> BenchResult:
    res = BenchResult(NAME, TITLE)
    n = ctx.n(5000, 200)
    gen = DocumentEvents(LogSpec(events=n, seed=13), ["dev-bench"], ["alice"])
    gen.state = EngineState()
    maps = list(gen.maps(n, 1))
    for m in maps:
        m["seen_position"] = 0
    body = codec.pack({"events": maps})
    events: list[Event] = [parse_event(m) for m in maps]
    at = datetime.now(UTC)

    def seal() -> None:  # what EventLog.seal does per event
        prev = GENESIS
        for pos, ev in enumerate(events, 1):
            sealed = ev.model_copy(update={"position": pos, "committed_at": at})
            prev = link(prev, codec.pack(sealed.to_wire()))

    def apply() -> None:
        st = EngineState()
        for ev in events:
            st.apply(ev)

    push = codec.pack({"events": maps[:200]})
    stored = [
        codec.pack({**m, "position": i, "committed_at": at.isoformat()}) for i, m in enumerate(maps)
    ]
    secret = bytes(32)
    headers = auth.sign("dev-bench", secret, "s", push)
    steps: list[tuple[str, str, float]] = [
        (
            "unpack",
            "unpack the push request (codec.unpack_request)",
            _us(lambda: codec.unpack_request(body, len(body) + 1), n),
        ),
        (
            "size",
            "re-pack each event for its size check",
            _us(lambda: [codec.pack(m) for m in maps], n),
        ),
        (
            "parse",
            "parse_event (envelope + payload validation)",
            _us(lambda: [parse_event(m) for m in maps], n),
        ),
        ("seal", "seal: model_copy + to_wire + pack + hash link", _us(seal, n)),
        ("apply", "EngineState.apply", _us(apply, n)),
        (
            "decode",
            "decode a stored body (publisher, per event)",
            _us(lambda: [codec.unpack(b) for b in stored], n),
        ),
        (
            "auth",
            "HMAC verify of a 200-event push (per request)",
            _us(
                lambda: [auth.verify(headers, "s", push, lambda _d: secret) for _ in range(100)],
                100,
            ),
        ),
    ]
    for key, label, us in steps:
        res.add(Figure(f"hotpath.{key}_us", label, us, "µs", ceiling="hotpath.ceil.msgpack"))
    total = sum(us for key, _, us in steps if key != "auth")
    res.add(
        Figure(
            "hotpath.total_us",
            "sum per pushed event (before broker and SQLite)",
            total,
            "µs",
            note=f"≤ {1e6 / total:,.0f} ev/s on one core",
        ),
        Figure(
            "hotpath.ceil.msgpack",
            "raw msgpack decode + encode of one event",
            _us(lambda: [msgpack.packb(msgpack.unpackb(b)) for b in stored], n),
            "µs",
            raw=True,
        ),
    )
    return res
