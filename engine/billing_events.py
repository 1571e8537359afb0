"""Event types of the Invoice Manager (batch billing). Registered into ``engine.events``."""
