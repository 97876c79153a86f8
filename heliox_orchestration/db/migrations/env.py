"""Alembic environment: always online, on the connection ``db.migrate`` hands over (in its
transaction), with Heliox's own version table."""

from alembic import context

from heliox_orchestration.db.schema import metadata
from heliox_orchestration.db.schema_version import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
