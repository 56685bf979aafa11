"""Alembic environment for the registry: run on the connection `bertops.registry.upgrade` passes."""

from alembic import context

from bertops.registry import VERSION_TABLE, metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
