"""msgpack on the wire and in the log.

Decoding untrusted bytes is bounded (lengths capped by the input size) and any
failure becomes a ``bad_request`` error rather than an exception type from msgpack.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import msgspec

from engine.errors import SynvoiceError

# msgspec writes the same msgpack as msgpack.packb(use_bin_type=True) for our
# values (shortest ints, str/bin types, maps in insertion order; a test checks
# it) at about twice the speed: the engine packs every event it stores.
pack: Callable[[Any], bytes] = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


def unpack(data: bytes) -> Any:
    """Decode trusted bytes (our own log)."""
    return _decode(data)


def unpack_request(data: bytes, max_bytes: int) -> dict[str, Any]:
    """Decode an untrusted request body into a map, or raise a wire error."""
    if len(data) > max_bytes:
        raise SynvoiceError("too_large", f"request is {len(data)} bytes, limit is {max_bytes}")
    if not data:
        return {}
    obj = unpack_untrusted(data)
    if not isinstance(obj, dict):
        raise SynvoiceError("bad_request", "body must be a msgpack map")
    return obj


def unpack_untrusted(data: bytes) -> Any:
    """Decode untrusted bytes (any msgpack value), or raise a wire error."""
    try:
        # unpackb caps every length by len(data), so a hostile header cannot
        # make it allocate more than the input itself.
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise SynvoiceError(
            "bad_request", f"body is not valid msgpack: {type(exc).__name__}"
        ) from exc
    check_depth(obj)
    return obj


# No valid request nests deeper than ~8 levels (request, events, event, data,
# lines, line). Validators and encoders recurse: a 1,000-level body would reach
# Python's recursion limit in them, so it is refused here, where it comes in.
MAX_DEPTH = 32


def check_depth(obj: Any, limit: int = MAX_DEPTH) -> None:
    """Raise ``bad_request`` if lists/maps in ``obj`` nest deeper than ``limit``
    (iterative: the check itself must not recurse)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list | tuple):
            children = value
        else:
            continue
        if depth > limit:
            raise SynvoiceError("bad_request", f"body nests deeper than {limit} levels")
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list | tuple))
