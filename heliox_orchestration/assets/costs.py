"""``gpu_usage_hourly`` (the external input) and ``daily_gpu_costs`` (daily aggregates)."""

# No `from __future__ import annotations`: Dagster inspects the real context, config and
# resource annotation types of the decorated functions.

from typing import TYPE_CHECKING, Any

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from heliox_orchestration.analytics.common import markdown_table, model_label, records_of, usd
from heliox_orchestration.assets.shared import (
    DAILY_COSTS_KEY,
    GROUP,
    KINDS,
    USAGE_KEY,
    partition_days,
    table_metadata,
    utc_now,
)
from heliox_orchestration.money import micros_to_dollars
from heliox_orchestration.partitions import daily_partitions
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.settings import Settings

# The SQL modules (SQLAlchemy) and pandas load when a run needs them, not with the definitions.
if TYPE_CHECKING:
    import pandas as pd

    from heliox_orchestration.analytics.daily_costs import DailyCosts

PREVIEW_ROWS = 10

USAGE_DESCRIPTION = """Hourly GPU usage and cost, one row per GPU resource per hour (UTC).

Written outside Dagster (the FOCUS importer, `heliox seed-demo`); Dagster never materializes it.
Its asset checks validate the rows a run is about to aggregate: the run's local days for
`daily_gpu_costs`, the trailing idle window otherwise."""

DAILY_COSTS_DESCRIPTION = """Daily GPU cost: one row per local day, provider, GPU type and model.

A day is a calendar day in `TIMEZONE` (23 or 25 hours on DST change days); today is a partition
too, so the burn-rate alert sees today's spend so far. The database aggregates
`gpu_usage_hourly` (`cost_usd` summed exactly in micro-dollars, GPU-hours, GPU-hour weighted mean
utilization); only the aggregates reach pandas. Materializing a day, or a backfill range in a
single run, replaces those days' rows in one transaction, in the tables `daily_gpu_costs` and
`daily_gpu_cost_days` (one row per day, `has_data = false` for a day without any usage: a gap,
not a $0 day)."""


def usage_spec() -> AssetSpec:
    return AssetSpec(
        USAGE_KEY,
        description=USAGE_DESCRIPTION,
        group_name=GROUP,
        kinds={"sql"},
        metadata=table_metadata("gpu_usage_hourly"),
    )


def daily_costs_metadata(costs: "DailyCosts", rows_written: int) -> dict[str, Any]:
    from heliox_orchestration.analytics.summary import top_drivers

    totals = costs.day_totals()
    total = micros_to_dollars(sum(totals["cost_micros"]))
    gaps = [day.isoformat() for day, has in zip(totals["day"], totals["has_data"], strict=True) if not has]
    top = top_drivers(costs.rows, n=1)
    span = costs.first.isoformat() if costs.first == costs.last else f"{costs.first} to {costs.last}"
    metadata: dict[str, Any] = {
        "dagster/row_count": rows_written,
        "days": len(costs.days),
        "total_cost_usd": MetadataValue.float(float(total)),
        "total_cost": f"{usd(total)} ({total} exact)",
        "top_model": f"{top[0].label}: {usd(top[0].cost_usd)}" if top else "none (no usage data)",
        "days_without_data": ", ".join(gaps) or "none",
        "preview": MetadataValue.md(_preview(costs.rows)),
    }
    if len(costs.days) == 1:
        metadata["hours_in_day"] = costs.days[0].hours
    else:
        metadata["daily_totals"] = MetadataValue.md(
            markdown_table(
                records_of(totals),
                {
                    "day": str,
                    "hours_in_day": str,
                    "has_data": str,
                    "cost_usd": usd,
                    "usage_rows": "{:,}".format,
                },
            )
        )
    if len(gaps) == len(costs.days):
        metadata["status"] = f"No usage data for {span}: gpu_usage_hourly has no rows in those hours."
    return metadata


def _preview(rows: "pd.DataFrame") -> str:
    if rows.empty:
        return "_No usage data: gpu_usage_hourly has no rows for these days._"
    top = sorted(records_of(rows), key=lambda r: -r["cost_micros"])[:PREVIEW_ROWS]
    title = f"Top {len(top)} of {len(rows)} rows by cost\n\n"
    return title + markdown_table(
        top,
        {
            "day": str,
            "provider": str,
            "gpu_type": str,
            "model_name": model_label,
            "cost_usd": usd,
            "gpu_hours": "{:,}".format,
            "avg_utilization_pct": lambda v: "n/a" if v is None else f"{v:.1f}%",
        },
    )


def build_daily_gpu_costs(settings: Settings) -> AssetsDefinition:
    partitions = daily_partitions(settings)

    # multi_asset: its backfill_policy is stable API (on @asset it is still a beta parameter).
    @multi_asset(
        name="daily_gpu_costs",
        specs=[
            AssetSpec(
                DAILY_COSTS_KEY,
                description=DAILY_COSTS_DESCRIPTION,
                deps=[USAGE_KEY],
                group_name=GROUP,
                kinds=KINDS,
                partitions_def=partitions,
                metadata=table_metadata("daily_gpu_costs", "daily_gpu_cost_days"),
            )
        ],
        partitions_def=partitions,
        # One run for a whole backfill range: the SQL aggregates all its days in one query.
        backfill_policy=BackfillPolicy.single_run(),
    )
    def daily_gpu_costs_asset(context: AssetExecutionContext, heliox_db: HelioxDatabase) -> MaterializeResult:
        from heliox_orchestration.analytics.daily_costs import compute_daily_costs, write_daily_costs
        from heliox_orchestration.db.pending import release_due_usage

        release_due_usage(heliox_db.get_engine(), utc_now())  # imported hours that have started since
        days = partition_days(context.op_execution_context)
        assert days is not None, "daily_gpu_costs is partitioned"
        engine = heliox_db.get_engine()
        costs = compute_daily_costs(engine, *days, settings.timezone)
        written = write_daily_costs(engine, costs, computed_at=utc_now())
        context.log.info(f"daily_gpu_costs: {written} rows for {days[0]}..{days[1]} ({settings.timezone})")
        return MaterializeResult(metadata=daily_costs_metadata(costs, written))

    return daily_gpu_costs_asset
