"""Synvoice device agent: local store, outbox, sync and numbering on the device."""
