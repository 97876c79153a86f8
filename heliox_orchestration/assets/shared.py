"""Names and small helpers shared by the cost assets and their checks."""

from __future__ import annotations

import datetime as dt

from dagster import AssetKey, MetadataValue, OpExecutionContext, TableColumn, TableSchema
from sqlalchemy import Table

from heliox_orchestration import clock

GROUP = "gpu_costs"
KINDS = {"pandas", "sql"}
USAGE_KEY = AssetKey("gpu_usage_hourly")
DAILY_COSTS_KEY = AssetKey("daily_gpu_costs")
IDLE_KEY = AssetKey("idle_gpu_recommendations")
SUMMARY_KEY = AssetKey("gpu_cost_summary")


def utc_now() -> dt.datetime:
    return clock.utc_now()


def table_metadata(*tables: Table) -> dict[str, object]:
    """Definition metadata: where the asset lives and its columns, for the asset catalog."""
    main = tables[0]
    columns = [
        TableColumn(c.name, type=str(c.type.compile()).lower(), description=c.comment or None)
        for c in main.columns
    ]
    return {
        "dagster/table_name": main.name,
        "dagster/column_schema": TableSchema(columns=columns),
        "tables": MetadataValue.text(", ".join(t.name for t in tables)),
    }


def partition_days(context: OpExecutionContext) -> tuple[dt.date, dt.date] | None:
    """The local days targeted by the run (one partition or a single-run backfill range),
    or None for an unpartitioned run."""
    if not (context.has_partition_key or context.has_partition_key_range):
        return None
    keys = context.partition_key_range
    return dt.date.fromisoformat(keys.start), dt.date.fromisoformat(keys.end)
