"""Subjects and names of the wire protocol (version 1).

All request and reply bodies are msgpack maps. Replies are either the result
map or ``{"error": {"code", "message", "details"?}}``.
"""

from __future__ import annotations

PREFIX = "synvoice.v1"
SERVICE_NAME = "synvoice-engine"

PUSH = f"{PREFIX}.events.push"  # {"events": [event, ...]}
PULL = f"{PREFIX}.events.pull"  # {"after": int, "limit": int, "hashes": bool}
NUMBERS = f"{PREFIX}.numbers.next"  # {"items": [{"kind", "doc_id", "fresh"?}]}
STATUS = f"{PREFIX}.status"  # {}
ADMIN_ENROLL = f"{PREFIX}.admin.enroll"  # {"user", "name"?}
ADMIN_REVOKE = f"{PREFIX}.admin.revoke"  # {"device_id", "reason"?}
ADMIN_MODE = f"{PREFIX}.admin.mode"  # {"mode", "force"?, "team"?}
# {"team"?, "kind"?, "pattern"?, "reset"?, "tz"?}: team size, number patterns
ADMIN_NUMBERING = f"{PREFIX}.admin.numbering"
ADMIN_REGISTER = f"{PREFIX}.admin.register"  # {"key"}
ADMIN_INTEGRATION = f"{PREFIX}.admin.integration"  # {"action": add|remove|list, "name"?}

# Integrations publish sales for the Invoice Manager here (request/reply).
BILLING_SALES_IN = f"{PREFIX}.billing.sales.in"

HEAD = f"{PREFIX}.head"  # core NATS notification after each commit: {"head": int}

# Committed events on JetStream, one subject per kind and type, e.g.
# synvoice.v1.log.invoice.document.created / synvoice.v1.log.engine.settings.user_mode_set
STREAM = "SYNVOICE_EVENTS"
# With the embedded broker's generated users, each integration reads a mirror of
# STREAM kept by the engine in the integration's own broker account, under this
# name (engine.brokerauth): what it does with JetStream stays in that account.
INTEGRATION_STREAM = "SYNVOICE_EVENTS_MIRROR"
LOG_SUBJECTS = f"{PREFIX}.log.>"
HDR_POSITION = "Synvoice-Position"
HDR_HASH = "Synvoice-Hash"

# Signed checkpoints of the log's head (engine.checkpoints), one message each (JSON).
CHECKPOINT_STREAM = "SYNVOICE_CHECKPOINTS"
CHECKPOINT_SUBJECT = f"{PREFIX}.checkpoints"

# The engine's default limit on one stored event (SYNVOICE_MAX_EVENT_BYTES); the
# device agent refuses bigger edits before making them.
MAX_EVENT_BYTES = 64 * 1024
ADMIN_DEVICE = "admin"
# The admin tools' reply inbox: not under ``_INBOX.``, which the device and reader
# users of a hand-secured broker may read (enroll replies carry device secrets).
ADMIN_INBOX = "_INBOX_ADMIN"


def log_subject(kind: str | None, type_: str) -> str:
    return f"{PREFIX}.log.{kind or 'engine'}.{type_}"
