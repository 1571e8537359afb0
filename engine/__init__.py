"""Synvoice engine: event schema, tamper-evident event log, numbering and the NATS server.

Layers go one way (import-linter checks it, ``make lint``):

- ``engine`` imports nothing above it. It holds the shared domain too: the event
  schemas (``engine.schema``), the document fold and merge rule
  (``engine.document``), the numbering rules and settings fold.
- ``devices`` (device agent, Invoice Manager) and ``projections`` (read side,
  replay) import only ``engine``, never each other. ``projections`` writes no
  events.
- The engine and the CLI reach the layers above through entry points
  (``engine.plugins``), never by importing them.
- Tests and benchmarks (``tests/``) may import anything.

Pure modules (hash chain, numbering, state, document fold, schemas) do no I/O.
"""

__version__ = "0.1.0"
