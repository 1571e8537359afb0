"""msgpack on the wire and in the log.

Decoding untrusted bytes is bounded (lengths capped by the input size) and any
failure becomes a ``bad_request`` error rather than an exception type from msgpack.
"""

from __future__ import annotations

from typing import Any

import msgpack

from engine.errors import SynvoiceError


def pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def unpack(data: bytes) -> Any:
    """Decode trusted bytes (our own log)."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


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
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise SynvoiceError(
            "bad_request", f"body is not valid msgpack: {type(exc).__name__}"
        ) from exc
