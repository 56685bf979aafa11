"""Alembic migrations of the registry database (see bertops.registry.upgrade)."""
