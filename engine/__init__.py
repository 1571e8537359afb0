"""Synvoice engine: event schema, tamper-evident event log, numbering and the NATS server."""

__version__ = "0.1.0"
