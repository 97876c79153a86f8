"""``idle_gpu_recommendations``: idle-GPU findings, re-evaluated over the trailing window."""

# No `from __future__ import annotations`: Dagster inspects the real context, config and
# resource annotation types of the decorated functions.

import datetime as dt
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from heliox_orchestration import clock
from heliox_orchestration.assets.checks import INPUT_CHECK, rule_result
from heliox_orchestration.assets.keys import GROUP, IDLE_KEY, KINDS, USAGE_KEY, table_metadata
from heliox_orchestration.costs.common import markdown_table, records_of
from heliox_orchestration.detections.idle import (
    SEVERITIES,
    IdleEvaluation,
    compute_idle_evaluation,
    write_idle_evaluation,
)
from heliox_orchestration.detections.resolution import track_episodes
from heliox_orchestration.ingest.pending import release_due_usage
from heliox_orchestration.money import format_usd
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.settings import HelioxSettings


class IdleRecommendationsConfig(Config):
    as_of: str | None = Field(
        default=None,
        description="Evaluate at this ISO-8601 instant (UTC when it has no offset) instead of now, "
        "e.g. to reproduce a past evaluation. Default: now.",
    )

    def as_of_instant(self) -> dt.datetime:
        if not self.as_of:
            return clock.utc_now()
        try:
            parsed = dt.datetime.fromisoformat(self.as_of)
        except ValueError:
            raise Failure(
                f"as_of={self.as_of!r} is not an ISO-8601 instant; use e.g. '2026-01-21T12:00:00+00:00'."
            ) from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def idle_metadata(evaluation: "IdleEvaluation") -> dict[str, Any]:

    findings = evaluation.findings
    by_severity = {s: int((findings["severity"] == s).sum()) if len(findings) else 0 for s in SEVERITIES}
    savings = sum(findings["monthly_savings_usd"], start=0) if len(findings) else 0
    window = evaluation.window
    metadata: dict[str, Any] = {
        "dagster/row_count": len(findings),
        "evaluated_at": MetadataValue.timestamp(window.as_of),
        "window": f"{window.start:%Y-%m-%d %H:%M} to {window.end:%Y-%m-%d %H:%M} UTC",
        **{f"{s}_severity": n for s, n in by_severity.items()},
        "monthly_savings_usd": MetadataValue.float(float(savings)),
        "preview": MetadataValue.md(
            markdown_table(
                records_of(findings),
                {
                    "severity": str,
                    "title": str,
                    "detail": str,
                    "resource_id": str,
                    "monthly_savings_usd": lambda v: f"{format_usd(v)}/month",
                },
                empty="_No idle GPUs: no resource met the idle rule in the window._",
            )
        ),
    }
    if not evaluation.has_usage:
        metadata["status"] = "No usage data: gpu_usage_hourly has no rows in the window."
    metadata["rightsizing_findings"] = len(evaluation.rightsizing)
    if len(evaluation.rightsizing):
        metadata["rightsizing"] = MetadataValue.md(
            markdown_table(
                records_of(evaluation.rightsizing),
                {
                    "title": str,
                    "detail": str,
                    "resource_id": str,
                    "monthly_savings_usd": lambda v: f"{format_usd(v)}/month",
                },
            )
        )
    metadata["rollup_days_read"] = len(evaluation.rollup_days)
    if evaluation.unrolled_days:
        metadata["days_read_raw"] = unrolled_note(evaluation)
    metadata["withheld_resources"] = len(evaluation.withheld)
    if evaluation.withheld:
        metadata["withheld"] = MetadataValue.md(_withheld_table(evaluation))
    return metadata


def unrolled_note(evaluation: "IdleEvaluation") -> str:
    """One line: the whole days of the window read from the raw hours, why, and what to do."""
    days = ", ".join(d.isoformat() for d in evaluation.unrolled_days)
    return (
        f"Read from the raw hours (slower, same answer): {days}. Their rollup is missing, was "
        "refreshed before the day ended, failed the checks, or was computed with another TIMEZONE "
        "or IDLE_UTILIZATION_PCT; backfill daily_gpu_costs for these days to read the rollup again."
    )


def _withheld_table(evaluation: "IdleEvaluation") -> str:
    return markdown_table(
        [
            {"resource_id": w.resource_id, "failing rows": w.usage_rows, "problems": ", ".join(w.problems)}
            for w in evaluation.withheld
        ],
        {"resource_id": repr, "failing rows": "{:,}".format, "problems": str},
    )


WITHHELD_NAMED = 10  # resources named in the check's description; the metadata lists them all


def withheld_result(evaluation: "IdleEvaluation") -> AssetCheckResult:
    """Warning: the resources left out of the evaluation because their rows fail the rules."""
    window = evaluation.window
    scope = f"the idle window {window.start:%Y-%m-%d %H:%M} to {window.end:%Y-%m-%d %H:%M} UTC"
    report = evaluation.usage_report
    if report is None or report.passed:
        rows = report.rows_checked if report else 0
        return AssetCheckResult(
            check_name=INPUT_CHECK,
            asset_key=IDLE_KEY,
            passed=True,
            metadata={"scope": scope, "rows_checked": rows, "withheld_resources": 0},
            description=f"{rows:,} rows in {scope}: all valid; every GPU was judged.",
        )
    withheld = evaluation.withheld
    named = "; ".join(
        f"{w.resource_id!r} ({w.usage_rows:,} rows: {', '.join(w.problems)})"
        for w in withheld[:WITHHELD_NAMED]
    )
    more = f" and {len(withheld) - WITHHELD_NAMED:,} more" if len(withheld) > WITHHELD_NAMED else ""
    return rule_result(
        report,
        scope,
        f"{len(withheld):,} GPU{'s' if len(withheld) != 1 else ''} not judged, so no finding for "
        f"them: {named}{more}. Every other GPU was judged. Fix or delete these rows in "
        "gpu_usage_hourly.",
        AssetCheckSeverity.WARN,
        check_name=INPUT_CHECK,
        asset_key=IDLE_KEY,
        extra_metadata={
            "withheld_resources": len(withheld),
            "withheld": MetadataValue.md(_withheld_table(evaluation)),
        },
    )


IDLE_DESCRIPTION = """Idle-GPU recommendations: one row per GPU resource that costs money while idle.

Evaluated over the trailing `IDLE_LOOKBACK_DAYS` (14) days of completed hours: an hour is idle
below `IDLE_UTILIZATION_PCT` (5%) utilization (unknown utilization is never idle); a resource
with at least `IDLE_MIN_OBSERVED_HOURS` (24) observed hours, at least `IDLE_MIN_IDLE_SHARE_PCT`
(95%) of them idle and idle now is a finding. "Idle for N days" is its trailing idle streak in
hours // 24; savings are the streak's mean hourly cost x 730; severity high from 7 days, medium
from 3. On committed capacity (`pricing_category` Committed) a finding says "reallocate" and its
savings are $0. Each evaluation is kept (`idle_gpu_evaluations`); the latest one's findings are the
open recommendations.

Rightsizing (`rightsizing_recommendations`, medium): multi-GPU resources that are not idle, with a
GPU-hour weighted mean utilization below `RIGHTSIZE_UTILIZATION_PCT` (30%), whose busiest hour fits
on ceil(peak GPU load) GPUs; savings = spare GPUs x the window's cost per GPU-hour x 730.

The window's whole local days are read from the daily rollup (`daily_resource_usage`) where it was
computed with the current `TIMEZONE` and `IDLE_UTILIZATION_PCT` after the day ended; the partial
days and any other day from `gpu_usage_hourly`, with identical findings.

Before judging, the asset checks the usage rows of the window (`valid_usage_rows`, the same rules
as `daily_gpu_costs`). A GPU with a failing row is not judged: it is withheld from the evaluation
(`idle_gpu_withheld_resources`, a warning naming it and its rows, and a line in the idle alert),
and every other GPU is judged as usual."""


@asset(
    key=IDLE_KEY,
    description=IDLE_DESCRIPTION,
    deps=[USAGE_KEY],
    group_name=GROUP,
    kinds=KINDS,
    metadata=table_metadata(
        "idle_gpu_recommendations",
        "idle_gpu_evaluations",
        "idle_gpu_withheld_resources",
        "rightsizing_recommendations",
    ),
    check_specs=[
        AssetCheckSpec(
            INPUT_CHECK,
            asset=IDLE_KEY,
            description="Warning. Run by the asset itself, however it is launched: the rows of "
            "gpu_usage_hourly in the idle window, by the rules of daily_gpu_costs:valid_usage_rows. "
            "A GPU with a failing row is withheld (not judged) and named here with its rows; "
            "every other GPU is judged and alerted on as usual.",
        )
    ],
)
def idle_gpu_recommendations(
    context: AssetExecutionContext,
    config: IdleRecommendationsConfig,
    heliox_db: HelioxDatabase,
    heliox_settings: HelioxSettings,
) -> MaterializeResult:
    engine = heliox_db.get_engine()
    settings = heliox_settings.get()
    release_due_usage(engine, clock.utc_now())  # imported hours that have started since
    evaluation = compute_idle_evaluation(engine, settings, config.as_of_instant())
    written = write_idle_evaluation(engine, evaluation)
    context.log.info(
        f"idle_gpu_recommendations: {written} findings as of {evaluation.as_of:%Y-%m-%d %H:%M} UTC"
    )
    if evaluation.withheld:
        context.log.warning(f"{len(evaluation.withheld)} GPUs not judged: their usage rows fail checks")
    if evaluation.unrolled_days:
        context.log.warning(unrolled_note(evaluation))
    # Alerted idle GPUs that stopped costing money idle (detections/resolution.py).
    changes = track_episodes(engine, evaluation, settings)
    for episode in changes.resolved:
        context.log.info(f"Resolved idle GPU {episode.resource_id!r}: {episode.resolution_detail}")
    metadata = {
        **idle_metadata(evaluation),
        "alerted_gpus_still_idle": changes.still_idle,
        "alerted_gpus_resolved": len(changes.resolved),
        "resolved_gpus_idle_again": changes.reopened,
    }
    return MaterializeResult(metadata=metadata, check_results=[withheld_result(evaluation)])
