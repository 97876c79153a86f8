"""GPU cost analytics as plain functions (no Dagster): SQL aggregates pushed down through
SQLAlchemy, small pandas frames, and the report models of ``heliox_orchestration.reports``.

Compute functions read ``gpu_usage_hourly`` and need no prior materialization; ``load_*``
functions read the tables the assets materialized.

Import from the modules (``analytics.daily_costs``, ``.idle``, ``.summary``, ``.quality``):
this package imports nothing itself, so that ``analytics.common`` (no SQLAlchemy, no pandas)
stays cheap for the code that loads with the Dagster definitions.
"""
