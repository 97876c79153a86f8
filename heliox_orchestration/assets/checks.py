"""Asset checks on the input (``gpu_usage_hourly``) and the outputs of the cost assets.

Blocking checks fail with ERROR severity: in a run that includes them, nothing downstream of
the checked asset executes (no cost aggregate from bad rows, no alert from a bad aggregate). The
usage checks are not part of an asset's own checks (Dagster does not materialize
``gpu_usage_hourly``): jobs select them with ``cost_input_checks()``.
"""

# No `from __future__ import annotations`: Dagster inspects the real context, config and
# resource annotation types of the decorated functions.

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    MetadataValue,
    asset_check,
)

from heliox_orchestration.analytics.common import markdown_table
from heliox_orchestration.assets.recommendations import IdleRecommendationsConfig
from heliox_orchestration.assets.shared import (
    DAILY_COSTS_KEY,
    IDLE_KEY,
    USAGE_KEY,
    partition_days,
    utc_now,
)
from heliox_orchestration.partitions import local_range_bounds
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.settings import Settings

# The SQL modules (analytics.quality, analytics.idle: SQLAlchemy) load when a check runs, not
# with the definitions.
if TYPE_CHECKING:
    from heliox_orchestration.analytics.quality import RuleReport

UNPARTITIONED_DAYS = 30  # days judged by an output check run without a partition


def rule_result(
    report: "RuleReport",
    scope: str,
    consequence: str,
    severity: AssetCheckSeverity,
    passed_text: str | None = None,
) -> AssetCheckResult:
    metadata: dict[str, Any] = {"scope": scope, "rows_checked": report.rows_checked}
    metadata |= {rule: n for rule, n in report.violations.items()}
    if report.passed:
        text = passed_text or f"{report.rows_checked:,} rows in {scope}: all valid."
        return AssetCheckResult(passed=True, metadata=metadata, description=text)
    metadata["examples"] = MetadataValue.md(_samples_table(report.samples))
    return AssetCheckResult(
        passed=False,
        severity=severity,
        metadata=metadata,
        description=f"{report.summary()} in {scope}. {consequence}",
    )


def _samples_table(samples: Sequence[Mapping[str, Any]]) -> str:
    if not samples:
        return "_none_"
    return markdown_table(samples, {name: _cell for name in samples[0]})


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, dt.datetime):
        return f"{value.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"
    return repr(value) if isinstance(value, str) and not value.strip() else str(value)


def _usage_scope(
    context: AssetCheckExecutionContext, settings: Settings, now: dt.datetime
) -> tuple[dt.datetime, dt.datetime, str]:
    days = partition_days(context.op_execution_context)
    if days is not None:
        start, end = local_range_bounds(*days, settings.timezone)
        span = days[0].isoformat() if days[0] == days[1] else f"{days[0]} to {days[1]}"
        return start, end, f"the local days {span} ({settings.timezone})"
    from heliox_orchestration.analytics.idle import idle_window

    window = idle_window(settings, _idle_as_of(context) or now)
    return window.start, window.end, f"the idle window ending {window.end:%Y-%m-%d %H:%M} UTC"


def _idle_as_of(context: AssetCheckExecutionContext) -> dt.datetime | None:
    """The ``as_of`` the run configured for idle_gpu_recommendations, so that the check judges
    the very window the asset evaluates."""
    run_config: Mapping[str, Any] = context.op_execution_context.run.run_config
    ops: Mapping[str, Any] = run_config.get("ops", {})
    config: Mapping[str, Any] = ops.get(IDLE_KEY.path[-1], {}).get("config", {})
    return IdleRecommendationsConfig(**config).as_of_instant() if config.get("as_of") else None


def _output_days(
    context: AssetCheckExecutionContext, settings: Settings, now: dt.datetime
) -> tuple[dt.date, dt.date]:
    days = partition_days(context.op_execution_context)
    if days is not None:
        return days
    today = settings.today(now)
    return today - dt.timedelta(days=UNPARTITIONED_DAYS), today


def build_asset_checks(settings: Settings) -> list[AssetChecksDefinition]:
    @asset_check(
        asset=USAGE_KEY,
        name="valid_rows",
        blocking=True,
        description="Blocking. Rows of gpu_usage_hourly in the run's local days (or the idle window) "
        "with a negative cost_usd, a gpu_utilization_pct outside 0-100, or a NULL or blank "
        "resource_id/provider/gpu_type. Costs and idle findings built on them would be wrong, so "
        "the aggregates and alerts downstream do not run.",
    )
    def usage_valid_rows(context: AssetCheckExecutionContext, heliox_db: HelioxDatabase) -> AssetCheckResult:
        from heliox_orchestration.analytics.quality import usage_rule_report

        start, end, scope = _usage_scope(context, settings, utc_now())
        report = usage_rule_report(heliox_db.get_engine(), start, end)
        return rule_result(
            report,
            scope,
            "Fix or delete these rows in gpu_usage_hourly, then re-run.",
            AssetCheckSeverity.ERROR,
        )

    @asset_check(
        asset=USAGE_KEY,
        name="no_future_hours",
        blocking=True,
        description="Blocking. Rows of gpu_usage_hourly whose usage_hour is later than now: usually "
        "local time stored as UTC by an importer, which shifts every day's total by hours.",
    )
    def usage_no_future_hours(
        context: AssetCheckExecutionContext, heliox_db: HelioxDatabase
    ) -> AssetCheckResult:
        from heliox_orchestration.analytics.quality import future_usage_report

        now = utc_now()
        report = future_usage_report(heliox_db.get_engine(), now)
        return rule_result(
            report,
            f"gpu_usage_hourly (now: {now:%Y-%m-%d %H:%M} UTC)",
            "usage_hour must be the UTC start of a past hour; fix the importer's time zone and re-import.",
            AssetCheckSeverity.ERROR,
            passed_text=f"No usage_hour after {now:%Y-%m-%d %H:%M} UTC.",
        )

    @asset_check(
        asset=DAILY_COSTS_KEY,
        name="valid_rows",
        blocking=True,
        description="Blocking. Rows of daily_gpu_costs in the run's days with a negative cost_usd, an "
        "avg_utilization_pct outside 0-100 or a NULL or blank provider/gpu_type; the burn-rate "
        "and summary alerts must not report them.",
    )
    def daily_costs_valid_rows(
        context: AssetCheckExecutionContext, heliox_db: HelioxDatabase
    ) -> AssetCheckResult:
        from heliox_orchestration.analytics.quality import daily_cost_rule_report

        first, last = _output_days(context, settings, utc_now())
        report = daily_cost_rule_report(heliox_db.get_engine(), first, last)
        return rule_result(
            report,
            f"daily_gpu_costs {first}..{last}",
            "Check the usage rows of those days (gpu_usage_hourly checks) and re-materialize them.",
            AssetCheckSeverity.ERROR,
        )

    @asset_check(
        asset=DAILY_COSTS_KEY,
        name="no_gap_days",
        description="Warning. Complete local days of the run with no usage rows at all: a gap in the "
        "data (a broken import), not a $0 day. The summary flags such days instead of showing $0.",
    )
    def daily_costs_no_gap_days(
        context: AssetCheckExecutionContext, heliox_db: HelioxDatabase
    ) -> AssetCheckResult:
        from heliox_orchestration.analytics.quality import gap_days

        now = utc_now()
        first, last = _output_days(context, settings, now)
        gaps = gap_days(heliox_db.get_engine(), first, last, now)
        metadata: dict[str, Any] = {
            "gap_days": len(gaps),
            "days": ", ".join(d.isoformat() for d in gaps) or "none",
        }
        if not gaps:
            return AssetCheckResult(
                passed=True, metadata=metadata, description=f"No gaps in {first}..{last}."
            )
        return AssetCheckResult(
            passed=False,
            severity=AssetCheckSeverity.WARN,
            metadata=metadata,
            description=f"No usage data at all on {metadata['days']}: import the missing usage, "
            "then re-materialize those days.",
        )

    @asset_check(
        asset=IDLE_KEY,
        name="valid_findings",
        blocking=True,
        description="Blocking. Findings of the latest evaluation with negative savings, an idle_pct "
        "outside 0-100, a severity that does not match idle_days, a streak longer than the observed "
        "hours or a missing key; the idle-spend alert must not send them.",
    )
    def idle_valid_findings(
        context: AssetCheckExecutionContext, heliox_db: HelioxDatabase
    ) -> AssetCheckResult:
        from heliox_orchestration.analytics.idle import latest_evaluation
        from heliox_orchestration.analytics.quality import idle_finding_rule_report

        engine = heliox_db.get_engine()
        with engine.connect() as conn:
            latest = latest_evaluation(conn)
        if latest is None:
            return AssetCheckResult(passed=True, description="No evaluation recorded yet: nothing to check.")
        report = idle_finding_rule_report(engine, latest.evaluated_at)
        return rule_result(
            report,
            f"the evaluation of {latest.evaluated_at:%Y-%m-%d %H:%M} UTC",
            "Usually negative usage costs in the window; fix them and re-materialize.",
            AssetCheckSeverity.ERROR,
        )

    return [
        usage_valid_rows,
        usage_no_future_hours,
        daily_costs_valid_rows,
        daily_costs_no_gap_days,
        idle_valid_findings,
    ]
