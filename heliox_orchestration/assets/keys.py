"""Names and small helpers shared by the cost assets and their checks."""

from __future__ import annotations

import datetime as dt

from dagster import AssetKey, MetadataValue, OpExecutionContext, TableColumn, TableSchema

from heliox_orchestration.db.schema import metadata as schema
from heliox_orchestration.db.schema import views

GROUP = "gpu_costs"
KINDS = {"pandas", "sql"}
USAGE_KEY = AssetKey("gpu_usage_hourly")
DAILY_COSTS_KEY = AssetKey("daily_gpu_costs")
IDLE_KEY = AssetKey("idle_gpu_recommendations")
SUMMARY_KEY = AssetKey("gpu_cost_summary")
ANOMALIES_KEY = AssetKey("spend_anomalies")


def table_metadata(*tables: str) -> dict[str, object]:
    """Definition metadata: where the asset lives and the columns of its main table (the
    first), for the asset catalog."""
    columns = [
        TableColumn(c.name, type=str(c.type.compile()).lower(), description=c.comment)
        for c in {**views.tables, **schema.tables}[tables[0]].columns
    ]
    return {
        "dagster/table_name": tables[0],
        "dagster/column_schema": TableSchema(columns=columns),
        "tables": MetadataValue.text(", ".join(tables)),
    }


def partition_days(context: OpExecutionContext) -> tuple[dt.date, dt.date] | None:
    """The local days targeted by the run (one partition or a single-run backfill range),
    or None for an unpartitioned run."""
    if not (context.has_partition_key or context.has_partition_key_range):
        return None
    keys = context.partition_key_range
    return dt.date.fromisoformat(keys.start), dt.date.fromisoformat(keys.end)
