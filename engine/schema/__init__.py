"""Event schemas: the payload models of every event type, by feature.

``common`` holds the shared values, ``registry`` the type registry; importing
this package registers every type (documents, settings/numbering, billing), so
any process that validates events knows all of them. The envelope and parsing
live in ``engine.events``, which imports this package.
"""

from engine.schema import billing, documents, settings

__all__ = ["billing", "documents", "settings"]
