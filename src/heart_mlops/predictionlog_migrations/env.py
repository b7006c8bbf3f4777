"""Alembic environment of the prediction log: runs on the connection `predictionlog.migrate`
passes (config.attributes["connection"]), with a version table of its own."""

from alembic import context

from heart_mlops.predictionlog import VERSION_TABLE, metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
