"""Synvoice projections: views rebuilt from the event log, audits and batch billing."""
