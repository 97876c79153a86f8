"""The asset checks of the cost assets, and the helpers the assets use for their own checks.

Each cost asset validates its input itself, however it is launched (a schedule, a sensor,
`dagster asset materialize`, the UI's Materialize button): its op evaluates the data-quality
rules of ``costs.quality`` over the very ``gpu_usage_hourly`` rows it is about to read,
reports them as the asset's own check (``check_specs``), and refuses to write when they fail
(``refusal``: a non-retryable ``Failure`` naming the rule, the counts and example rows).

The checks defined here judge what the assets wrote (``daily_gpu_costs:valid_rows``,
``no_gap_days``, ``idle_gpu_recommendations:valid_findings``). Blocking checks fail with ERROR
severity: in a run that includes them, nothing downstream of the checked asset executes.
"""

# No `from __future__ import annotations`: Dagster inspects the real context, config and
# resource annotation types of the decorated functions.

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    Failure,
    MetadataValue,
    asset_check,
)

from heliox_orchestration import clock
from heliox_orchestration.assets.keys import DAILY_COSTS_KEY, IDLE_KEY, partition_days
from heliox_orchestration.costs.common import markdown_table
from heliox_orchestration.costs.quality import RuleReport, cell_text, daily_cost_rule_report, gap_days
from heliox_orchestration.detections.idle import idle_finding_rule_report, latest_evaluation
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.settings import HelioxSettings
from heliox_orchestration.settings import Settings

INPUT_CHECK = "valid_usage_rows"


def rule_result(
    report: "RuleReport",
    scope: str,
    consequence: str,
    severity: AssetCheckSeverity,
    passed_text: str | None = None,
    *,
    check_name: str | None = None,
    asset_key: AssetKey | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
) -> AssetCheckResult:
    """The result of a rule report; ``check_name`` and ``asset_key`` for an asset's own check."""
    metadata: dict[str, Any] = {"scope": scope, "rows_checked": report.rows_checked}
    metadata |= {rule: n for rule, n in report.violations.items()}
    metadata |= extra_metadata or {}
    if report.passed:
        text = passed_text or f"{report.rows_checked:,} rows in {scope}: all valid."
        return AssetCheckResult(
            passed=True, metadata=metadata, description=text, check_name=check_name, asset_key=asset_key
        )
    metadata["examples"] = MetadataValue.md(samples_table(report.samples))
    return AssetCheckResult(
        passed=False,
        severity=severity,
        metadata=metadata,
        description=f"{report.summary()} in {scope}. {consequence}",
        check_name=check_name,
        asset_key=asset_key,
    )


def refusal(report: "RuleReport", what: str, scope: str, remedy: str) -> Failure:
    """The asset's refusal to write from rows that fail the rules: one line for the run's error,
    the Run Failed notice and `heliox run`; not retried, because only fixing the rows helps."""
    return Failure(
        description=report.refusal(what, scope, remedy),
        allow_retries=False,
        metadata={"examples": MetadataValue.md(samples_table(report.samples))},
    )


def samples_table(samples: Sequence[Mapping[str, Any]]) -> str:

    if not samples:
        return "_none_"
    return markdown_table(samples, {name: cell_text for name in samples[0]})


UNPARTITIONED_DAYS = 30  # days judged by an output check run without a partition


def _output_days(
    context: AssetCheckExecutionContext, settings: Settings, now: dt.datetime
) -> tuple[dt.date, dt.date]:
    days = partition_days(context.op_execution_context)
    if days is not None:
        return days
    today = settings.today(now)
    return today - dt.timedelta(days=UNPARTITIONED_DAYS), today


@asset_check(
    asset=DAILY_COSTS_KEY,
    name="valid_rows",
    blocking=True,
    description="Blocking. Rows of daily_gpu_costs in the run's days with a negative cost_usd, an "
    "avg_utilization_pct outside 0-100 or a NULL or blank provider/gpu_type; the burn-rate "
    "and summary alerts must not report them. The asset's input check (valid_usage_rows) keeps "
    "such rows out; this one judges what was actually written.",
)
def daily_costs_valid_rows(
    context: AssetCheckExecutionContext, heliox_db: HelioxDatabase, heliox_settings: HelioxSettings
) -> AssetCheckResult:

    first, last = _output_days(context, heliox_settings.get(), clock.utc_now())
    report = daily_cost_rule_report(heliox_db.get_engine(), first, last)
    return rule_result(
        report,
        f"daily_gpu_costs {first}..{last}",
        "Check the usage rows of those days (daily_gpu_costs:valid_usage_rows) and re-materialize them.",
        AssetCheckSeverity.ERROR,
    )


@asset_check(
    asset=DAILY_COSTS_KEY,
    name="no_gap_days",
    description="Warning. Complete local days of the run with no usage rows at all: a gap in the "
    "data (a broken import), not a $0 day. The summary flags such days instead of showing $0.",
)
def daily_costs_no_gap_days(
    context: AssetCheckExecutionContext, heliox_db: HelioxDatabase, heliox_settings: HelioxSettings
) -> AssetCheckResult:

    now = clock.utc_now()
    first, last = _output_days(context, heliox_settings.get(), now)
    gaps = gap_days(heliox_db.get_engine(), first, last, now)
    metadata: dict[str, Any] = {
        "gap_days": len(gaps),
        "days": ", ".join(d.isoformat() for d in gaps) or "none",
    }
    if not gaps:
        return AssetCheckResult(passed=True, metadata=metadata, description=f"No gaps in {first}..{last}.")
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
def idle_valid_findings(context: AssetCheckExecutionContext, heliox_db: HelioxDatabase) -> AssetCheckResult:

    engine = heliox_db.get_engine()
    with engine.connect() as conn:
        latest = latest_evaluation(conn)
    if latest is None:
        return AssetCheckResult(passed=True, description="No evaluation recorded yet: nothing to check.")
    report = idle_finding_rule_report(engine, latest.evaluated_at)
    return rule_result(
        report,
        f"the evaluation of {latest.evaluated_at:%Y-%m-%d %H:%M} UTC",
        "Re-materialize idle_gpu_recommendations; findings computed from checked rows pass, so "
        "a failure here means the stored findings were edited.",
        AssetCheckSeverity.ERROR,
    )


OUTPUT_CHECKS = [daily_costs_valid_rows, daily_costs_no_gap_days, idle_valid_findings]
