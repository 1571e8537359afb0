"""The wire protocol as an AsyncAPI 3.0 document, generated from the code.

``build()`` assembles it from what the engine actually uses: the subjects
(``engine.protocol``), the request and reply bodies, the error codes
(``engine.errors``), every event type and schema version with its payload model
(``engine.schema``), the envelope (``engine.events``), the signing headers
(``engine.auth``), the token format (``engine.enrollment``) and the stream's
headers (``engine.publisher``). The checked-in copy, ``engine/asyncapi.json``,
is what integrators read; a test regenerates it and fails when they differ
(``synvoice spec --out engine/asyncapi.json`` rewrites it).

Schemas are JSON Schema draft-07 (the AsyncAPI Schema Object's base) over the
*decoded* msgpack values: msgpack ``bin`` values are marked ``x-msgpack: bin``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

import msgspec
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

import engine.schema  # noqa: F401  (registers every event type)
from engine import auth, enrollment, errors, messages, protocol
from engine.core.routes import ROUTES, Route
from engine.events import Event
from engine.schema.common import KINDS, USER_MODES
from engine.schema.registry import REGISTRY

SPEC_FILE = "asyncapi.json"
REF = "#/components/schemas/{model}"
Schema = dict[str, Any]


def spec_path() -> Path:
    """Where the checked-in spec lives (package data of ``engine``)."""
    return Path(str(resources.files("engine").joinpath(SPEC_FILE)))


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(
    props: dict[str, Schema], required: tuple[str, ...] = (), extra: bool = False, **kw: Any
) -> Schema:
    out: Schema = {"type": "object", "properties": props, "additionalProperties": extra}
    if required:
        out["required"] = list(required)
    out.update(kw)
    return out


_INT: Schema = {"type": "integer", "minimum": 0}
_POS: Schema = {"type": "integer", "minimum": 1}
_STR: Schema = {"type": "string"}
_BOOL: Schema = {"type": "boolean"}
_BIN: Schema = {"type": "string", "x-msgpack": "bin", "description": "msgpack bin (raw bytes)"}
_UUID: Schema = {"type": "string", "format": "uuid"}
_KIND: Schema = {"type": "string", "enum": list(KINDS)}


# --- payload models -----------------------------------------------------------------


def _model_schemas() -> tuple[dict[str, Schema], list[tuple[str, int, str]]]:
    """Components for every payload model (all versions) and the envelope; the
    (type, version, component name) of each event schema."""
    models: list[tuple[type[BaseModel], Literal["validation"]]] = [(Event, "validation")]
    names: list[tuple[str, int, str, type[BaseModel]]] = []
    for type_, spec in sorted(REGISTRY.items()):
        versions = {spec.schema_version: spec.model, **dict(spec.old_models)}
        for version, model in sorted(versions.items()):
            names.append((type_, version, model.__name__, model))
            models.append((model, "validation"))
    keymap, top = models_json_schema(models, ref_template=REF)
    defs: dict[str, Schema] = top.get("$defs", {})
    out: dict[str, Schema] = {}
    for _type, _version, name, model in names:
        ref = keymap[(model, "validation")]["$ref"].rsplit("/", 1)[-1]
        out[name] = defs[ref] if ref == name else _ref(ref)
    for key, schema in defs.items():
        out.setdefault(key, schema)
    envelope = out.pop("Event")
    envelope["description"] = (
        "The event envelope, one shape for every type (engine/events.py). `data` is "
        "the payload of `type` at `schema_version`; older versions are upcast on read."
    )
    out["EventEnvelope"] = envelope
    return out, [(t, v, n) for t, v, n, _ in names]


def _event_schemas(names: list[tuple[str, int, str]]) -> dict[str, Schema]:
    out: dict[str, Schema] = {}
    variants: list[Schema] = []
    for type_, version, payload in names:
        spec = REGISTRY[type_]
        props: dict[str, Schema] = {
            "type": {"const": type_},
            "schema_version": {"const": version},
            "data": _ref(payload),
        }
        required = ["type", "data"] + (["schema_version"] if version > 1 else [])
        if spec.document:
            props["doc_id"] = _UUID
            props["kind"] = _KIND
            required += ["doc_id", "kind"]
        name = "Event_" + type_.replace(".", "_") + f"_v{version}"
        out[name] = {
            "description": (
                f"`{type_}` schema version {version}"
                + ("" if version == spec.schema_version else " (upcast on read)")
                + f"; authored by the {spec.origin}"
                + ("; a document event" if spec.document else "")
            ),
            "allOf": [_ref("EventEnvelope")],
            "properties": props,
            "required": required,
            "x-synvoice-origin": spec.origin,
        }
        variants.append(_ref(name))
    out["Event"] = {"description": "Any event (every type and schema version).", "anyOf": variants}
    out["PushedEvent"] = {
        "description": "An event as a device pushes it: position and committed_at are the "
        "engine's. Engine-origin types are refused (`forbidden`).",
        "allOf": [
            _ref("Event"),
            {"not": {"anyOf": [{"required": ["position"]}, {"required": ["committed_at"]}]}},
        ],
    }
    out["StoredEvent"] = {
        "description": "An event as stored in the log, pulled and published on the stream: "
        "the exact stored msgpack bytes (the hash chain covers them).",
        "allOf": [
            _ref("Event"),
            {
                "properties": {
                    "position": _POS,
                    "committed_at": {"type": "string", "format": "date-time"},
                },
                "required": ["position", "committed_at"],
            },
        ],
    }
    return out


# --- request and reply bodies ----------------------------------------------------------


def _reply_types(reply: Any) -> tuple[Any, ...]:
    """A route's reply Struct(s): one type, or the members of a union."""
    return get_args(reply) or (reply,)


def _reply_name(route: Route) -> str:
    """A reply's component: the Struct's name, or for a union one named by the route."""
    if isinstance(route.reply, type):
        return route.reply.__name__
    words = route.name.removeprefix("admin-").split("-")
    return "".join(w.capitalize() for w in words) + "Reply"


# What the Structs cannot say (value ranges, enums, what an event is), by Struct
# and field; the descriptions are the bodies' rules. A refinement of a field the
# Struct does not have fails the generation (and so the spec test).
_REFINE: dict[str, Schema] = {
    "PushRequest": {
        "description": "Atomic: one invalid event refuses the whole push, nothing is "
        "appended. Each event at most SYNVOICE_MAX_EVENT_BYTES (64 KiB) of msgpack.",
        "properties": {"events": {"type": "array", "items": _ref("PushedEvent"), "maxItems": 5000}},
    },
    "PushResult": {
        "description": "`duplicate`: already stored (the same event id); `position` is where.",
        "properties": {"event_id": _UUID, "position": _POS},
    },
    "PushReply": {"properties": {"head": _INT}},
    "PullRequest": {
        "description": "Events after position `after`; the page is capped by `limit`, "
        "SYNVOICE_PULL_LIMIT and SYNVOICE_PULL_MAX_BYTES.",
        "properties": {
            "after": {**_INT, "default": 0},
            "limit": {"type": ["integer", "null"], "minimum": 1, "default": None},
        },
    },
    "PullReply": {
        "description": "`events` are positions after+1, after+2, ... without holes; `more`: "
        "ask again with after = the last position received. `hashes` (with hashes=true): "
        "each record's chain hash, 32 bytes.",
        "properties": {
            "head": _INT,
            "events": {"type": "array", "items": _ref("StoredEvent")},
            "hashes": {"type": "array", "items": _BIN},
        },
    },
    "NumbersRequest": {
        "description": "Centralized mode only (else `mode`). The same document asked again "
        "gets the same number; `fresh` asks for a new one (renumbering).",
        "properties": {
            "items": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1000,
                "items": _ref("NumberItem"),
            }
        },
    },
    "NumberItem": {"properties": {"kind": _KIND, "doc_id": _UUID}},
    "NumbersReply": {
        "description": "One number per item, in item order; each new one is also a "
        "`document.number_assigned` event (source `server`) in the log.",
        "properties": {"numbers": {"type": "array", "items": _POS}},
    },
    "StatusReply": {
        "properties": {"mode": {"type": "string", "enum": list(USER_MODES)}},
    },
    "EnrollRequest": {"properties": {"name": {"type": ["string", "null"], "maxLength": 100}}},
    "EnrollReply": {
        "description": "`secret` (hex) signs the device's requests; `synvoice enroll` turns "
        "this reply into an enrollment token.",
        "properties": {"secret": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
    },
    "ModeRequest": {"properties": {"mode": {"type": "string", "enum": list(USER_MODES)}}},
    "ModeReply": {"description": "`previous` only when the mode changed."},
    "IntegrationRequest": {
        "properties": {
            "action": {"type": "string", "enum": ["add", "remove", "list"]},
            "name": {"type": ["string", "null"], "pattern": "^[a-z0-9][a-z0-9_-]{0,31}$"},
        }
    },
    "IntegrationCredentials": {
        "description": "The integration's broker credentials: log in as `user`/`password`, "
        "take replies under `inbox_prefix`, read `stream` through JetStream consumers.",
        "properties": {
            "stream": {
                "enum": [protocol.INTEGRATION_STREAM, protocol.STREAM],
                "description": "the stream to read: with the embedded broker's generated "
                f"users, `{protocol.INTEGRATION_STREAM}` (a mirror in the integration's own "
                f"account); on an operator's broker, `{protocol.STREAM}` itself",
            },
            "subjects": {"const": protocol.LOG_SUBJECTS},
        },
    },
    "ErrorReply": {
        "description": "A refusal: nothing was changed. Also flagged with the nats.micro "
        "headers Nats-Service-Error (message) and Nats-Service-Error-Code (status).",
    },
    "ErrorBody": {
        "properties": {"code": {"type": "string", "enum": list(errors.ERROR_CODES)}},
        "x-synvoice-status": dict(errors.ERROR_CODES),
    },
    "HeadNotice": {"properties": {"head": _INT}},
}


def _message_schemas() -> dict[str, Schema]:
    """Request and reply bodies: the Structs of ``engine.messages``, refined."""
    types = [r.request for r in ROUTES] + [t for r in ROUTES for t in _reply_types(r.reply)]
    _, comps = msgspec.json.schema_components(
        (*types, messages.ErrorReply, messages.HeadNotice),
        ref_template="#/components/schemas/{name}",
    )
    for name, refine in _REFINE.items():
        schema = comps[name]
        for key, value in refine.items():
            if key == "properties":
                unknown = set(value) - set(schema.get("properties", {}))
                if unknown:
                    raise ValueError(f"{name} has no field {sorted(unknown)} to refine")
                schema["properties"].update(value)
            else:
                schema[key] = value
    for route in ROUTES:
        if not isinstance(route.reply, type):
            names = [t.__name__ for t in _reply_types(route.reply)]
            comps[_reply_name(route)] = {
                "description": f"One of: {', '.join(names)}.",
                "anyOf": [_ref(n) for n in names],
            }
    comps["SalesIn"] = {
        "description": "One sale, a list, or {sales: [...]} in the format of `synvoice "
        "billing import` (JSON or msgpack); recorded as `sale.recorded` events.",
        "anyOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}],
    }
    comps["SalesInReply"] = _obj(
        {
            "ok": {"const": True},
            "sales": _INT,
            "recorded": _INT,
            "unchanged": _INT,
            "results": {"type": "array"},
        },
        ("ok",),
        extra=True,
    )
    return comps


# --- headers, signing, tokens --------------------------------------------------------------


def _header_schemas() -> dict[str, Schema]:
    return {
        "SignedRequestHeaders": _obj(
            {
                auth.HDR_DEVICE: {
                    "type": "string",
                    "description": f"device id (`{protocol.ADMIN_DEVICE}` for the operator)",
                },
                auth.HDR_TIME: {
                    "type": "string",
                    "pattern": "^[0-9]{1,20}$",
                    "description": f"unix seconds, within {auth.MAX_SKEW_SECONDS} s of the "
                    "engine's clock",
                },
                auth.HDR_SIG: {
                    "type": "string",
                    "pattern": "^[0-9a-f]{64}$",
                    "description": "lowercase hex HMAC-SHA256(secret, subject + '\\n' + time "
                    "+ '\\n' + body)",
                },
            },
            (auth.HDR_DEVICE, auth.HDR_TIME, auth.HDR_SIG),
            extra=True,
        ),
        "ErrorReplyHeaders": _obj(
            {"Nats-Service-Error": _STR, "Nats-Service-Error-Code": _STR}, extra=True
        ),
        "StreamHeaders": _obj(
            {
                "Nats-Msg-Id": {**_UUID, "description": "the event id"},
                protocol.HDR_POSITION: {
                    "type": "string",
                    "pattern": "^[1-9][0-9]*$",
                    "description": "the event's log position (decimal)",
                },
                protocol.HDR_HASH: {
                    "type": "string",
                    "pattern": "^[0-9a-f]{64}$",
                    "description": "hex sha256(previous hash || body): the log's hash chain",
                },
            },
            ("Nats-Msg-Id", protocol.HDR_POSITION, protocol.HDR_HASH),
            extra=True,
        ),
    }


SIGNING = {
    "algorithm": "HMAC-SHA256",
    "key": "the device secret: 32 bytes (the token's `secret`; for admin, the bytes "
    "whose hex is in admin.secret)",
    "input": "UTF-8 subject, '\\n', the Synvoice-Time value, '\\n', the Synvoice-Nonce value, "
    "'\\n', then the exact body bytes",
    "output": "lowercase hex",
    # In this order: device, time, nonce, signature.
    "headers": [auth.HDR_DEVICE, auth.HDR_TIME, auth.HDR_NONCE, auth.HDR_SIG],
    "nonce": "16 to 64 characters of A-Z a-z 0-9 _ -, random per request: a copy of a "
    "numbers.next or admin request with a nonce already seen in the time window is "
    "refused (replayed)",
    "max_skew_seconds": auth.MAX_SKEW_SECONDS,
    "reply_subjects": "replies go to the caller's own inbox only: `_INBOX.<device id>.` for "
    "a device, `_INBOX_ADMIN.` for the admin credential; a request with any other reply "
    "subject is neither answered nor handled. An integration's inbox is `_INBOX.int-<name>.`",
}


def _token_schemas() -> dict[str, Schema]:
    base: dict[str, Schema] = {
        "url": {"type": "string", "description": "broker URL(s), comma-separated"},
        "device_id": _STR,
        "secret": {**_BIN, "description": "32 bytes: signs requests (HMAC key)"},
        "user": _STR,
        "slot": _POS,
        "tls_ca": {"type": "string", "description": "PEM of the CA of the broker's certificate"},
    }
    return {
        "EnrollmentTokenV2": _obj(
            {
                **base,
                "v": {"const": 2},
                "inbox_prefix": {
                    "type": "string",
                    "description": "the reply-inbox prefix the device must use "
                    "(`_INBOX.<device id>`): the broker lets it subscribe there only",
                },
                "broker_user": {
                    "type": "string",
                    "description": "present when the broker checks users",
                },
                "broker_password": {"type": "string", "description": "with broker_user"},
            },
            ("v", "url", "device_id", "secret", "user", "slot", "inbox_prefix"),
            extra=True,
            description=f"`{enrollment.PREFIX}` + base64url (no padding) of this msgpack map. "
            "A credential: `synvoice token show` prints it without the secrets.",
        ),
        "EnrollmentTokenV1": _obj(
            {**base, "broker_auth": _BOOL},
            ("url", "device_id", "secret", "user", "slot"),
            extra=True,
            description=f"`{enrollment.PREFIX_V1}` + base64url (no padding) of this msgpack map "
            "(still accepted). The broker user is `device_id`, its password "
            "hex(HMAC-SHA256(secret, 'nats:device')) when `broker_auth`; the inbox prefix "
            "`_INBOX.<device_id>`.",
        ),
    }


# --- the document ---------------------------------------------------------------------------


def _msg(
    name: str, payload: str, title: str, headers: str | None = None, **kw: Any
) -> tuple[str, Schema]:
    m: Schema = {"name": name, "title": title, "payload": _ref(payload)}
    if headers:
        m["headers"] = _ref(headers)
    m.update(kw)
    return name, m


# Titles of the endpoints (by route name); the routes themselves are the core's.
SUMMARIES = {
    "push": "Append events",
    "pull": "Read the log by position",
    "numbers": "Server numbers",
    "status": "Engine status",
    "admin-enroll": "Enroll a device",
    "admin-revoke": "Revoke a device",
    "admin-mode": "Set the user mode",
    "admin-register": "Register a licence key",
    "admin-integration": "Add, remove or list integrations",
}


def endpoints() -> list[tuple[str, str, str, str, str, str]]:
    """(endpoint name, subject, request, reply, caller, summary) of every route."""
    return [
        (
            r.name,
            r.subject,
            r.request.__name__,
            _reply_name(r),
            "admin" if r.admin else "device",
            SUMMARIES.get(r.name, r.name),
        )
        for r in ROUTES
    ]


def endpoint_metadata(name: str) -> dict[str, str]:
    """The nats.micro metadata of an endpoint: where its schemas are in the spec."""
    for ep, _subject, req, rep, who, _ in endpoints():
        if ep == name:
            return {
                "spec": f"asyncapi 3.0.0, synvoice spec (engine/{SPEC_FILE})",
                "operation": f"#/operations/{ep}",
                "request": f"#/components/messages/{req}",
                "reply": f"#/components/messages/{rep}",
                "error": "#/components/messages/ErrorReply",
                "caller": who,
            }
    raise KeyError(name)


SERVICE_METADATA = {
    "spec": f"asyncapi 3.0.0, synvoice spec (engine/{SPEC_FILE})",
    "protocol": protocol.PREFIX,
}


def build() -> dict[str, Any]:
    """The AsyncAPI document (deterministic: same code, same bytes)."""
    from engine import __version__

    models, names = _model_schemas()
    schemas: dict[str, Schema] = {
        **models,
        **_event_schemas(names),
        **_message_schemas(),
        **_header_schemas(),
        **_token_schemas(),
    }
    messages: dict[str, Schema] = {}
    channels: dict[str, Schema] = {}
    operations: dict[str, Schema] = {}
    inbox_messages: dict[str, Schema] = {}
    error_name, error_msg = _msg(
        "ErrorReply", "ErrorReply", "Refusal", "ErrorReplyHeaders", correlationId=None
    )
    error_msg.pop("correlationId")
    messages[error_name] = error_msg
    inbox_messages[error_name] = {"$ref": f"#/components/messages/{error_name}"}
    for ep, subject, req, rep, who, summary in endpoints():
        for n, m in (
            _msg(req, req, f"{summary}: request", "SignedRequestHeaders"),
            _msg(rep, rep, f"{summary}: reply"),
        ):
            messages[n] = m
        inbox_messages[rep] = {"$ref": f"#/components/messages/{rep}"}
        channels[ep] = {
            "address": subject,
            "title": summary,
            "messages": {req: {"$ref": f"#/components/messages/{req}"}},
        }
        operations[ep] = {
            "action": "send",
            "title": summary,
            "summary": f"Request/reply; signed; caller: {who}"
            + (" (the admin credential: admin.secret)" if who == "admin" else ""),
            "channel": {"$ref": f"#/channels/{ep}"},
            "messages": [{"$ref": f"#/channels/{ep}/messages/{req}"}],
            "reply": {
                "channel": {"$ref": "#/channels/inbox"},
                "messages": [
                    {"$ref": f"#/channels/inbox/messages/{rep}"},
                    {"$ref": "#/channels/inbox/messages/ErrorReply"},
                ],
            },
            "x-synvoice-endpoint": ep,
        }
    # Integrations' sales for the Invoice Manager (not signed: a broker permission).
    for n, m in (
        _msg("SalesIn", "SalesIn", "Sales in"),
        _msg("SalesInReply", "SalesInReply", "Sales in: reply"),
        _msg("HeadNotice", "HeadNotice", "New head"),
        _msg(
            "LogEvent",
            "StoredEvent",
            "A committed event",
            "StreamHeaders",
            description="Body: the stored msgpack event, byte for byte as in the log.",
        ),
    ):
        messages[n] = m
    inbox_messages["SalesInReply"] = {"$ref": "#/components/messages/SalesInReply"}
    channels["billingSalesIn"] = {
        "address": protocol.BILLING_SALES_IN,
        "title": "Sales for the Invoice Manager",
        "messages": {"SalesIn": {"$ref": "#/components/messages/SalesIn"}},
    }
    operations["billingSalesIn"] = {
        "action": "send",
        "summary": "Integrations send sales (JSON or msgpack; the reply uses the same "
        "encoding); a plain publish is recorded too. Not signed: a broker permission.",
        "channel": {"$ref": "#/channels/billingSalesIn"},
        "messages": [{"$ref": "#/channels/billingSalesIn/messages/SalesIn"}],
        "reply": {
            "channel": {"$ref": "#/channels/inbox"},
            "messages": [
                {"$ref": "#/channels/inbox/messages/SalesInReply"},
                {"$ref": "#/channels/inbox/messages/ErrorReply"},
            ],
        },
    }
    channels["inbox"] = {
        "address": None,
        "title": "Reply inbox",
        "description": "The requester's reply subject: `_INBOX.<device id>.…` for a device, "
        f"`_INBOX.int-<name>.…` for an integration, `{protocol.ADMIN_INBOX}.…` for admin tools.",
        "messages": inbox_messages,
    }
    channels["head"] = {
        "address": protocol.HEAD,
        "title": "Head notifications (core NATS)",
        "messages": {"HeadNotice": {"$ref": "#/components/messages/HeadNotice"}},
    }
    operations["head"] = {
        "action": "receive",
        "summary": "After each commit: the new head position. A hint to pull; may be missed.",
        "channel": {"$ref": "#/channels/head"},
        "messages": [{"$ref": "#/channels/head/messages/HeadNotice"}],
    }
    channels["log"] = {
        "address": protocol.PREFIX + ".log.{kind}.{type}",
        "title": f"JetStream stream {protocol.STREAM}",
        "description": f"Stream `{protocol.STREAM}` on `{protocol.LOG_SUBJECTS}`; kind is "
        "`engine` for engine events. At least once: after a consumer restart, "
        "unacknowledged messages are redelivered after newer ones. Apply by "
        f"`{protocol.HDR_POSITION}` with a checkpoint (README, Integrator's guide).",
        "parameters": {
            "kind": {"enum": [*KINDS, "engine"], "description": "document kind, or engine"},
            "type": {"enum": sorted(REGISTRY), "description": "the event type"},
        },
        "messages": {"LogEvent": {"$ref": "#/components/messages/LogEvent"}},
    }
    operations["log"] = {
        "action": "receive",
        "summary": "Consume committed events (a JetStream consumer on the stream).",
        "channel": {"$ref": "#/channels/log"},
        "messages": [{"$ref": "#/channels/log/messages/LogEvent"}],
    }
    return {
        "asyncapi": "3.0.0",
        "id": "urn:synvoice:wire:v1",
        "info": {
            "title": "Synvoice engine wire protocol",
            "version": f"1 (engine {__version__})",
            "description": "NATS request/reply with msgpack maps both ways, served as the "
            f"nats.micro service `{protocol.SERVICE_NAME}`; events on JetStream. "
            "Generated by `synvoice spec` from the engine's code.",
        },
        "defaultContentType": "application/msgpack",
        "servers": {
            "broker": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "The broker in the enrollment token (`url`).",
                "security": [{"$ref": "#/components/securitySchemes/broker"}],
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "messages": dict(sorted(messages.items())),
            "securitySchemes": {
                "broker": {
                    "type": "userPassword",
                    "description": "Broker users (embedded broker): a device logs in as its "
                    "device id, an integration as int-<name>; see the token format.",
                }
            },
        },
        "x-synvoice-signing": SIGNING,
        "x-synvoice-token": {
            "current": enrollment.PREFIX,
            "accepted": [enrollment.PREFIX, enrollment.PREFIX_V1],
            "encoding": "prefix + base64url without padding of a msgpack map",
            "schemas": {
                enrollment.PREFIX: "#/components/schemas/EnrollmentTokenV2",
                enrollment.PREFIX_V1: "#/components/schemas/EnrollmentTokenV1",
            },
        },
        "x-synvoice-service": {
            "name": protocol.SERVICE_NAME,
            "discovery": ["$SRV.PING", "$SRV.INFO", "$SRV.STATS"],
            "endpoints": {ep: subject for ep, subject, *_ in endpoints()},
        },
    }


def render() -> str:
    return json.dumps(build(), indent=1, sort_keys=False, ensure_ascii=False) + "\n"


def write(path: Path | None = None) -> Path:
    target = path or spec_path()
    target.write_text(render(), encoding="utf-8")
    return target
