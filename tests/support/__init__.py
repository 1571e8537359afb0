"""Importable test support: harnesses, fixtures' building blocks, log builders."""
