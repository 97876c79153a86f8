"""``daily_gpu_costs``: daily aggregates of ``gpu_usage_hourly`` (whose sources are in ``sources``)."""

# No `from __future__ import annotations`: Dagster inspects the real context, config and
# resource annotation types of the decorated functions.

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    DailyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from heliox_orchestration import clock
from heliox_orchestration.assets.checks import INPUT_CHECK, refusal, rule_result
from heliox_orchestration.assets.keys import (
    DAILY_COSTS_KEY,
    GROUP,
    KINDS,
    USAGE_KEY,
    partition_days,
    table_metadata,
)
from heliox_orchestration.costs.common import markdown_table, model_label, records_of
from heliox_orchestration.costs.daily_costs import DailyCosts, compute_daily_costs, write_daily_costs
from heliox_orchestration.costs.quality import RuleReport, days_text, future_usage_report, usage_rule_report
from heliox_orchestration.costs.rollup import forget_rollup_days
from heliox_orchestration.costs.summary import top_drivers
from heliox_orchestration.ingest.pending import release_due_usage
from heliox_orchestration.money import format_usd, micros_to_dollars
from heliox_orchestration.partitions import local_range_bounds
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.settings import HelioxSettings

PREVIEW_ROWS = 10
FUTURE_CHECK = "no_future_usage"

DAILY_COSTS_DESCRIPTION = """Daily GPU cost: one row per local day, provider, GPU type and model.

A day is a calendar day in `TIMEZONE` (23 or 25 hours on DST change days); today is a partition
too, so the burn-rate alert sees today's spend so far. The database aggregates
`gpu_usage_hourly` (`cost_usd` summed exactly in micro-dollars, GPU-hours, GPU-hour weighted mean
utilization); only the aggregates reach pandas. Materializing a day, or a backfill range in a
single run, replaces those days' rows in one transaction, in the tables `daily_gpu_costs` and
`daily_gpu_cost_days` (one row per day, `has_data = false` for a day without any usage: a gap,
not a $0 day). The same transaction writes the days' per-resource rollup
(`daily_resource_usage`, one row per local day and GPU, with the `TIMEZONE` and
`IDLE_UTILIZATION_PCT` it was computed with in `daily_resource_usage_days`) that the idle rule and
rightsizing read instead of the raw hours.

Before it computes, the asset checks the usage rows of its days (`valid_usage_rows`, however it
is launched): a negative, non-numeric, infinite or implausible cost, a utilization outside 0-100,
an hour not stored as a UTC hour, a blank key, or an hour after now. If any row fails, nothing is
written, the days' rollup is dropped (readers judge those hours themselves), and the run fails
with the rule, the counts and example rows. Usage rows after now outside the run's days change no
number of this run: `no_future_usage` names them (a warning)."""


def daily_costs_metadata(costs: "DailyCosts") -> dict[str, Any]:
    """The figures of one local day (``costs`` holds exactly one): its partition's metadata."""
    (day,) = costs.days
    totals = costs.day_totals()
    total = micros_to_dollars(sum(totals["cost_micros"]))
    top = top_drivers(costs.rows, n=1)
    has_data = bool(totals["has_data"][0])
    metadata: dict[str, Any] = {
        "dagster/row_count": len(costs.rows),
        "total_cost_usd": MetadataValue.float(float(total)),
        "total_cost": f"{format_usd(total)} ({total} exact)",
        "top_model": f"{top[0].label}: {format_usd(top[0].cost_usd)}" if top else "none (no usage data)",
        "hours_in_day": day.hours,
        "days_without_data": "none" if has_data else day.day.isoformat(),
        "preview": MetadataValue.md(_preview(costs.rows)),
    }
    if not has_data:
        metadata["status"] = f"No usage data for {day.day}: gpu_usage_hourly has no rows in those hours."
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
            "cost_usd": format_usd,
            "gpu_hours": "{:,}".format,
            "avg_utilization_pct": lambda v: "n/a" if v is None else f"{v:.1f}%",
        },
    )


DAILY_COSTS_CHECKS = [
    AssetCheckSpec(
        INPUT_CHECK,
        asset=DAILY_COSTS_KEY,
        blocking=True,
        description="Blocking. Run by the asset itself, however it is launched: the rows of "
        "gpu_usage_hourly in the run's local days: cost_usd not a number (text, NaN), negative "
        "or above the hourly maximum (Infinity included), gpu_utilization_pct not a number or "
        "outside 0-100, gpu_count below 1, usage_hour not a UTC hour start (or not in the "
        "canonical text form on SQLite), a NULL or blank key, or usage_hour after now. If any "
        "row fails, the asset writes nothing and its run fails naming the rows.",
    ),
    AssetCheckSpec(
        FUTURE_CHECK,
        asset=DAILY_COSTS_KEY,
        description="Warning. Rows of gpu_usage_hourly anywhere whose hour has not started "
        "yet (usually local time stored as UTC, or a mistyped date). One inside the run's "
        "days also fails valid_usage_rows; one after today is in no alert's numbers and "
        "blocks nothing.",
    ),
]


def build_daily_gpu_costs(partitions: DailyPartitionsDefinition) -> AssetsDefinition:
    """The asset on local-day partitions, which follow ``TIMEZONE`` when the definitions load."""

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
                metadata=table_metadata(
                    "daily_gpu_costs",
                    "daily_gpu_cost_days",
                    "daily_resource_usage",
                    "daily_resource_usage_days",
                ),
            )
        ],
        check_specs=DAILY_COSTS_CHECKS,
        partitions_def=partitions,
        # One run for a whole backfill range: the SQL aggregates all its days in one query.
        backfill_policy=BackfillPolicy.single_run(),
    )
    def daily_gpu_costs_asset(
        context: AssetExecutionContext, heliox_db: HelioxDatabase, heliox_settings: HelioxSettings
    ) -> Iterator[MaterializeResult | AssetCheckResult]:
        settings = heliox_settings.get()
        engine = heliox_db.get_engine()
        now = clock.utc_now()
        release_due_usage(engine, now)  # imported hours that have started since
        days = partition_days(context.op_execution_context)
        assert days is not None, "daily_gpu_costs is partitioned"
        span = days[0].isoformat() if days[0] == days[1] else f"{days[0]} to {days[1]}"
        scope = days_text(*days, settings.timezone)
        bounds = local_range_bounds(*days, settings.timezone)
        checked = usage_rule_report(engine, *bounds, max_hourly_cost=settings.max_hourly_cost_usd, now=now)
        checks = [
            rule_result(
                checked,
                scope,
                "Nothing was written; fix or delete these rows in gpu_usage_hourly, then re-run.",
                AssetCheckSeverity.ERROR,
                check_name=INPUT_CHECK,
                asset_key=DAILY_COSTS_KEY,
            ),
            future_rows_result(future_usage_report(engine, now), now),
        ]
        if not checked.passed:
            yield from checks
            # The rollup of these days no longer stands for their rows: readers use the raw rows.
            forget_rollup_days(engine, *days)
            what = f"daily_gpu_costs {span} was not written"
            raise refusal(checked, what, scope, checked.fix_in("gpu_usage_hourly", f"re-materialize {span}"))
        costs = compute_daily_costs(engine, *days, settings.timezone)
        written = write_daily_costs(
            engine, costs, computed_at=now, idle_utilization_pct=settings.idle_utilization_pct
        )
        context.log.info(f"daily_gpu_costs: {written} rows for {days[0]}..{days[1]} ({settings.timezone})")
        # Each partition's materialization carries its own day's figures, also in a range run;
        # what the whole run shares is only which run wrote it.
        for day in costs.days:
            context.add_asset_metadata(
                daily_costs_metadata(costs.for_days(day.day, day.day)), partition_key=day.day.isoformat()
            )
        shared = {} if days[0] == days[1] else {"written_by_range_run": f"{span} ({len(costs.days)} days)"}
        yield MaterializeResult(metadata=shared, check_results=checks)

    return daily_gpu_costs_asset


def future_rows_result(report: "RuleReport", now: dt.datetime) -> AssetCheckResult:
    return rule_result(
        report,
        f"gpu_usage_hourly (now: {now:%Y-%m-%d %H:%M} UTC)",
        "They block only a day they lie in (today's, for an hour later today); fix the importer's "
        "time zone or the dates, or delete them.",
        AssetCheckSeverity.WARN,
        passed_text=f"No usage_hour after {now:%Y-%m-%d %H:%M} UTC.",
        check_name=FUTURE_CHECK,
        asset_key=DAILY_COSTS_KEY,
    )
