"""Alembic revisions of the Heliox schema (run through ``heliox_orchestration.db.schema_version``)."""
