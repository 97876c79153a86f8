"""``gpu_cost_summary``: the numbers of the daily Slack summary, per report date."""

# No `from __future__ import annotations`: Dagster inspects the real context, config and
# resource annotation types of the decorated functions.

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
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
    Failure,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)
from sqlalchemy import Engine

from heliox_orchestration import clock
from heliox_orchestration.assets.checks import INPUT_CHECK, refusal, rule_result
from heliox_orchestration.assets.keys import (
    DAILY_COSTS_KEY,
    GROUP,
    IDLE_KEY,
    KINDS,
    SUMMARY_KEY,
    partition_days,
    table_metadata,
)
from heliox_orchestration.costs.common import NotMaterializedError, markdown_table
from heliox_orchestration.costs.daily_costs import materialized_or_computed
from heliox_orchestration.costs.quality import days_text, usage_rule_report
from heliox_orchestration.costs.summary import (
    SUMMARY_DAYS,
    StoredSummary,
    build_cost_summary,
    summary_range,
    with_month_budget,
    write_cost_summary,
)
from heliox_orchestration.detections.budget import month_start
from heliox_orchestration.detections.idle import (
    IdleEvaluation,
    compute_idle_evaluation,
    idle_finding_rule_report,
    load_idle_evaluation,
)
from heliox_orchestration.ingest.pending import release_due_usage
from heliox_orchestration.money import format_usd
from heliox_orchestration.partitions import local_range_bounds
from heliox_orchestration.reports import CostSummary
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.settings import HelioxSettings
from heliox_orchestration.settings import Settings

SUMMARY_DESCRIPTION = """The daily-summary numbers of a report date: the partition, a local day in `TIMEZONE`
(the daily summary schedule materializes yesterday's).

Yesterday's cost, the last 7 and last 30 complete local days ending with the report date, the
top 3 models of the report date ("Unattributed" for usage without a model name), the number of
high-severity idle-GPU recommendations and their monthly savings (the idle alert's figure), with
`MONTHLY_BUDGET_USD` the month to date, the budget and the forecast, and the daily series
(days without usage data are flagged as gaps, not shown as $0). Reads the materialized
`daily_gpu_costs` days (days never materialized are computed from `gpu_usage_hourly` and listed
in the metadata) and the latest `idle_gpu_recommendations` evaluation.

Every number is checked before it is computed, however the asset is launched: `valid_usage_rows`
validates the raw `gpu_usage_hourly` rows of all 30 days (one scan of the range, whether a day's
aggregate is read or computed: a row fixed or broken after its day was materialized counts too),
and `valid_findings` the stored idle findings it counts (findings computed now come from checked
rows). A failing row anywhere blocks the summary alone: nothing is written and the run fails
naming the rows; the burn-rate and idle alerts are not affected."""

FINDINGS_CHECK = "valid_findings"


def summary_metadata(
    summary: CostSummary,
    computed_days: tuple[dt.date, ...],
    evaluation: "IdleEvaluation",
    evaluated_now: bool,
) -> dict[str, Any]:

    top = summary.top_models[0] if summary.top_models else None
    metadata: dict[str, Any] = {
        "report_date": summary.report_date.isoformat(),
        "yesterday_cost_usd": MetadataValue.float(float(summary.yesterday_cost_usd)),
        "last_7_days_cost_usd": MetadataValue.float(float(summary.last_7_days_cost_usd)),
        "last_30_days_cost_usd": MetadataValue.float(float(summary.last_30_days_cost_usd)),
        "top_model": f"{top.label}: {format_usd(top.cost_usd)}" if top else "none (no usage data)",
        "high_severity_count": summary.high_severity_count,
        "rightsizing_count": summary.rightsizing_count,
        "potential_savings_monthly_usd": MetadataValue.float(float(summary.potential_savings_monthly_usd)),
        "recommendations_as_of": MetadataValue.timestamp(evaluation.as_of),
        "days_without_data": ", ".join(d.isoformat() for d in summary.gap_days) or "none",
        "days_computed_from_usage": ", ".join(d.isoformat() for d in computed_days) or "none",
        "preview": MetadataValue.md(_preview(summary)),
    }
    if evaluated_now:
        metadata["recommendations_source"] = "computed now: idle_gpu_recommendations was never materialized"
    if len(summary.gap_days) == SUMMARY_DAYS:
        metadata["status"] = "No usage data in the 30 days ending with the report date."
    return metadata


def _preview(summary: CostSummary) -> str:
    lines = [
        f"**Yesterday ({summary.report_date}):** {format_usd(summary.yesterday_cost_usd)}  ",
        f"**Last 7 days:** {format_usd(summary.last_7_days_cost_usd)}  ",
        f"**Last 30 days:** {format_usd(summary.last_30_days_cost_usd)}  ",
        f"**Potential savings:** {format_usd(summary.potential_savings_monthly_usd)}/mo "
        f"({summary.high_severity_count} high-severity)",
        "",
        markdown_table(
            [{"model": d.label, "cost": d.cost_usd} for d in summary.top_models],
            {"model": str, "cost": format_usd},
            empty="_No GPU consumers: no usage data on the report date._",
        ),
        "",
        markdown_table(
            [{"day": p.day, "cost": p.cost_usd, "data": p.has_data} for p in summary.daily_series],
            {"day": str, "cost": format_usd, "data": lambda has: "yes" if has else "**gap**"},
        ),
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class SummaryInputs:
    """The checks of every row the summaries of some report dates read, and what they found."""

    checks: list[AssetCheckResult]
    refusal: Failure | None  # set when a check failed: nothing may be written
    evaluation: IdleEvaluation | None  # None: idle_gpu_recommendations was never materialized


def check_summary_inputs(
    engine: Engine, settings: Settings, first_report: dt.date, last_report: dt.date, now: dt.datetime
) -> SummaryInputs:
    """One scan of the usage rows of every day the summaries read, and the stored idle findings."""
    # The local month of a report date may begin a day before its 30 days (MONTHLY_BUDGET_USD).
    first, last = min(summary_range(first_report)[0], month_start(first_report)), last_report
    scope = days_text(first, last, settings.timezone)
    bounds = local_range_bounds(first, last, settings.timezone)
    usage = usage_rule_report(engine, *bounds, max_hourly_cost=settings.max_hourly_cost_usd, now=now)
    not_written = "The summary was not written"
    checks = [
        rule_result(
            usage,
            scope,
            f"{not_written}; fix or delete these rows in gpu_usage_hourly.",
            AssetCheckSeverity.ERROR,
            check_name=INPUT_CHECK,
            asset_key=SUMMARY_KEY,
        )
    ]
    span = first_report.isoformat() if first_report == last_report else f"{first_report} to {last_report}"
    what = f"gpu_cost_summary of {span} was not written"
    failure = None
    if not usage.passed:
        failure = refusal(usage, what, scope, usage.fix_in("gpu_usage_hourly", "re-run the daily summary"))
    try:
        evaluation: IdleEvaluation | None = load_idle_evaluation(engine)
    except NotMaterializedError:
        evaluation = None
    if evaluation is None:
        checks.append(
            AssetCheckResult(
                check_name=FINDINGS_CHECK,
                asset_key=SUMMARY_KEY,
                passed=True,
                description="idle_gpu_recommendations was never materialized: the findings are "
                "evaluated now, from checked rows.",
            )
        )
        return SummaryInputs(checks, failure, None)
    findings_scope = f"the idle findings of {evaluation.as_of:%Y-%m-%d %H:%M} UTC"
    findings = idle_finding_rule_report(engine, evaluation.as_of)
    checks.append(
        rule_result(
            findings,
            findings_scope,
            f"{not_written}; re-materialize idle_gpu_recommendations.",
            AssetCheckSeverity.ERROR,
            check_name=FINDINGS_CHECK,
            asset_key=SUMMARY_KEY,
        )
    )
    if failure is None and not findings.passed:
        remedy = (
            "Re-materialize idle_gpu_recommendations (it recomputes them from checked usage rows), "
            "then re-run the daily summary."
        )
        failure = refusal(findings, what, findings_scope, remedy)
    return SummaryInputs(checks, failure, evaluation)


SUMMARY_CHECKS = [
    AssetCheckSpec(
        INPUT_CHECK,
        asset=SUMMARY_KEY,
        blocking=True,
        description="Blocking. Run by the asset itself, however it is launched: every row of "
        "gpu_usage_hourly in the 30 local days ending with the report date, by the rules of "
        "daily_gpu_costs:valid_usage_rows. One failing row blocks the summary (nothing "
        "written, the run fails naming the rows) and nothing else.",
    ),
    AssetCheckSpec(
        FINDINGS_CHECK,
        asset=SUMMARY_KEY,
        blocking=True,
        description="Blocking. Run by the asset itself: the stored idle findings the summary "
        "counts, by the rules of idle_gpu_recommendations:valid_findings.",
    ),
]


def build_gpu_cost_summary(partitions: DailyPartitionsDefinition) -> AssetsDefinition:
    """The asset on the same local-day partitions as ``daily_gpu_costs``: a partition is a
    report date; a backfill range runs as one run, like ``daily_gpu_costs``."""

    @multi_asset(
        name="gpu_cost_summary",
        specs=[
            AssetSpec(
                SUMMARY_KEY,
                description=SUMMARY_DESCRIPTION,
                deps=[DAILY_COSTS_KEY, IDLE_KEY],
                group_name=GROUP,
                kinds=KINDS,
                partitions_def=partitions,
                metadata=table_metadata("gpu_cost_summary", "gpu_cost_summary_items"),
            )
        ],
        check_specs=SUMMARY_CHECKS,
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
    )
    def gpu_cost_summary(
        context: AssetExecutionContext, heliox_db: HelioxDatabase, heliox_settings: HelioxSettings
    ) -> Iterator[MaterializeResult | AssetCheckResult]:
        settings = heliox_settings.get()
        now = clock.utc_now()
        engine = heliox_db.get_engine()
        release_due_usage(engine, now)  # imported hours that have started since
        days = partition_days(context.op_execution_context)
        assert days is not None, "gpu_cost_summary is partitioned"
        inputs = check_summary_inputs(engine, settings, *days, now)
        if inputs.refusal is not None:
            yield from inputs.checks
            raise inputs.refusal
        evaluation, evaluated_now = inputs.evaluation, inputs.evaluation is None
        if evaluation is None:
            evaluation = compute_idle_evaluation(engine, settings, now)
        report_date, metadata = days[0], {}
        while report_date <= days[1]:
            metadata = write_summary(context, engine, settings, report_date, evaluation, evaluated_now, now)
            report_date += dt.timedelta(days=1)
        yield MaterializeResult(metadata=metadata, check_results=inputs.checks)

    return gpu_cost_summary


def write_summary(
    context: AssetExecutionContext,
    engine: Engine,
    settings: Settings,
    report_date: dt.date,
    evaluation: IdleEvaluation,
    evaluated_now: bool,
    now: dt.datetime,
) -> dict[str, Any]:
    """Compute and store the summary of one report date; its metadata."""
    costs, computed_days = materialized_or_computed(engine, *summary_range(report_date), settings.timezone)
    summary = build_cost_summary(report_date, costs, evaluation.to_findings(), evaluation.to_rightsizing())
    summary = with_month_budget(engine, summary, settings, now)
    write_cost_summary(engine, StoredSummary(summary, settings.timezone, evaluation.as_of, now), costs)
    if computed_days:
        context.log.info(
            f"{report_date}: {len(computed_days)} days were not materialized; "
            "computed them from gpu_usage_hourly"
        )
    return summary_metadata(summary, computed_days, evaluation, evaluated_now)
