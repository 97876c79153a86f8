"""GPU cost aggregates as plain functions (no Dagster): SQL aggregates pushed down through
SQLAlchemy, small pandas frames, and the report models of ``heliox_orchestration.reports``.

``daily_costs`` aggregates local days, ``summary`` builds the burn-rate status and the daily
summary numbers, ``quality`` holds the data-quality rules every cost asset checks its input
with. Compute functions read ``gpu_usage_hourly`` and need no prior materialization; ``load_*``
functions read the tables the assets materialized."""
