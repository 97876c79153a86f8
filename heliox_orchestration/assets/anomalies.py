"""``spend_anomalies``: each local day's spend (today's so far) in total, per model and per team
against its baseline (``detections/anomaly.py``), per local-day partition."""

# No `from __future__ import annotations`: Dagster inspects the real context, config and
# resource annotation types of the decorated functions.

import datetime as dt
from collections.abc import Iterator
from typing import Any

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
    ANOMALIES_KEY,
    DAILY_COSTS_KEY,
    GROUP,
    KINDS,
    partition_days,
    table_metadata,
)
from heliox_orchestration.costs.anomaly_store import (
    AnomalyEvaluation,
    evaluate_spend_anomalies,
    write_anomaly_evaluation,
)
from heliox_orchestration.costs.common import as_int, markdown_table
from heliox_orchestration.costs.quality import days_text, usage_rule_report
from heliox_orchestration.costs.rollup import rollup_rows_query
from heliox_orchestration.costs.spend_series import check_ranges, history_range
from heliox_orchestration.detections.idle_rollup import merge_reports
from heliox_orchestration.ingest.pending import release_due_usage
from heliox_orchestration.money import format_usd
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.settings import HelioxSettings

ANOMALIES_DESCRIPTION = """Spend anomalies of a local day in `TIMEZONE`: the day's GPU spend in
total, per model and per team against its baseline, the median of the same weekday over the
previous 4 weeks (or of the previous 14 days with data, when a weekday of those 4 weeks has no
usage data). An anomaly is at least `ANOMALY_PCT` % and at least `ANOMALY_MIN_USD` dollars above
the baseline, with the top 3 resources driving the difference. Today is evaluated on its hours
so far, against the same local hours of the baseline days, so a spike is caught before the day
ends. Tables `spend_anomaly_evaluations`, `spend_anomalies`, `spend_anomaly_drivers`.

Its numbers come only from checked rows: `valid_usage_rows` checks every `gpu_usage_hourly`
row of the day and its 28 history days first (the rules of `daily_gpu_costs`); one failing row
blocks this asset alone (nothing written, the run fails naming the rows)."""

ANOMALIES_CHECKS = [
    AssetCheckSpec(
        INPUT_CHECK,
        asset=ANOMALIES_KEY,
        blocking=True,
        description="Blocking. Run by the asset itself: every row of gpu_usage_hourly in the day "
        "and its 28 history days, by the rules of daily_gpu_costs:valid_usage_rows.",
    )
]


def anomalies_metadata(evaluation: AnomalyEvaluation) -> dict[str, Any]:
    rows = [
        {
            "dimension": a.dimension,
            "value": a.value,
            "spend": a.current_usd,
            "baseline": a.baseline_usd,
        }
        for a in evaluation.anomalies
    ]
    metadata: dict[str, Any] = {
        "day": evaluation.day.isoformat(),
        "anomalies": len(evaluation.anomalies),
        "baseline": evaluation.baseline_note,
        "preview": MetadataValue.md(
            markdown_table(
                rows,
                {"dimension": str, "value": str, "spend": format_usd, "baseline": format_usd},
                empty="_No anomaly._",
            )
        ),
    }
    if evaluation.partial_until is not None:
        metadata["partial_until"] = MetadataValue.timestamp(evaluation.partial_until)
    return metadata


def build_spend_anomalies(partitions: DailyPartitionsDefinition) -> AssetsDefinition:
    """The asset on the local-day partitions of ``daily_gpu_costs``, downstream of it."""

    @multi_asset(
        name="spend_anomalies",
        specs=[
            AssetSpec(
                ANOMALIES_KEY,
                description=ANOMALIES_DESCRIPTION,
                deps=[DAILY_COSTS_KEY],
                group_name=GROUP,
                kinds=KINDS,
                partitions_def=partitions,
                metadata=table_metadata(
                    "spend_anomalies", "spend_anomaly_evaluations", "spend_anomaly_drivers"
                ),
            )
        ],
        check_specs=ANOMALIES_CHECKS,
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
    )
    def spend_anomalies(
        context: AssetExecutionContext, heliox_db: HelioxDatabase, heliox_settings: HelioxSettings
    ) -> Iterator[MaterializeResult | AssetCheckResult]:
        settings = heliox_settings.get()
        engine = heliox_db.get_engine()
        now = clock.utc_now()
        release_due_usage(engine, now)
        days = partition_days(context.op_execution_context)
        assert days is not None, "spend_anomalies is partitioned"
        first = history_range(days[0])[0]
        scope = days_text(first, days[1], settings.timezone)
        # Days read from the rollup passed the checks when it was written: only raw hours are scanned.
        ranges, rolled = check_ranges(engine, first, days[1], settings.timezone)
        limit = settings.max_hourly_cost_usd
        reports = [usage_rule_report(engine, a, b, max_hourly_cost=limit, now=now) for a, b in ranges]
        with engine.connect() as conn:
            rolled_rows = as_int(conn.execute(rollup_rows_query(rolled)).scalar_one()) if rolled else 0
        checked = merge_reports(reports, rolled_rows)
        check = rule_result(
            checked,
            scope,
            "Nothing was written; fix or delete these rows in gpu_usage_hourly, then re-run.",
            AssetCheckSeverity.ERROR,
            check_name=INPUT_CHECK,
            asset_key=ANOMALIES_KEY,
        )
        span = days[0].isoformat() if days[0] == days[1] else f"{days[0]} to {days[1]}"
        if not checked.passed:
            yield check
            what = f"spend_anomalies {span} was not written"
            raise refusal(checked, what, scope, checked.fix_in("gpu_usage_hourly", f"re-materialize {span}"))
        day, metadata = days[0], {}
        while day <= days[1]:
            evaluation = evaluate_spend_anomalies(engine, day, settings, now)
            write_anomaly_evaluation(engine, evaluation, now)
            metadata = anomalies_metadata(evaluation)
            day += dt.timedelta(days=1)
        context.log.info(f"spend_anomalies {span}: {metadata.get('anomalies')} anomalies (last day)")
        yield MaterializeResult(metadata=metadata, check_results=[check])

    return spend_anomalies
