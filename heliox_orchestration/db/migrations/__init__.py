"""Alembic revisions of the Heliox schema (run by ``heliox_orchestration.db.migrate``)."""
