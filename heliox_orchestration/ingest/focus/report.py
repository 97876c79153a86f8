"""What an import did, and its text: every row of the file counted once, every dollar exact."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pandas as pd

from heliox_orchestration.ingest.focus.charges import SKIP_REASONS
from heliox_orchestration.ingest.focus.utilization import UtilizationReport
from heliox_orchestration.money import format_usd


@dataclass(frozen=True)
class ImportReport:
    path: Path
    rows: int  # every data row of the file = kept + spread + sum(skipped)
    kept: int  # GPU charges of one hour (or less)
    spread: int  # GPU charges longer than an hour, spread over their hours
    skipped: dict[str, int]  # SKIP_REASONS key -> rows
    cost_columns: dict[str, int]  # "EffectiveCost" / "BilledCost" -> rows costed from it
    gpu_skipped: dict[str, tuple[int, Decimal]]  # GPU charges not imported: reason -> rows, cost
    file_gpu_cost_usd: Decimal  # exact sum of the imported charges as written in the file
    imported_cost_usd: Decimal  # sum of the hourly rows (each charge rounded to the micro-dollar)
    resource_hours: int
    resources: int
    first_hour: pd.Timestamp | None
    last_hour: pd.Timestamp | None
    negative_hours: int  # resource-hours whose charges net below zero
    pending_hours: int = 0  # resource-hours that had not started: held in gpu_usage_pending
    pending_until: pd.Timestamp | None = None  # the start of the last of them
    replaced_rows: int = 0
    released_rows: int = 0  # hours held by earlier imports that had started: moved to the table
    dry_run: bool = False
    utilization: UtilizationReport | None = None


def format_report(report: ImportReport) -> list[str]:
    """The report as lines of text; every input row is counted once."""
    used = ", ".join(f"{n:,} from {column}" for column, n in report.cost_columns.items()) or "none"
    lines = [
        f"Read {report.path}: {report.rows:,} rows (cost: {used})",
        f"  imported: {report.kept:,} GPU charges of one hour, "
        f"{report.spread:,} longer charges spread evenly over their hours",
    ]
    for reason, n in report.skipped.items():
        lines.append(f"  skipped:  {n:,} {SKIP_REASONS[reason]}")
    for reason, (n, cost) in report.gpu_skipped.items():
        lines.append(f"  GPU charges not imported: {n:,} x {SKIP_REASONS[reason]}, {format_usd(cost)}")
    if report.resource_hours:
        verb = "Would write" if report.dry_run else "Wrote"
        lines.append(
            f"{verb} {report.resource_hours:,} resource-hours of {report.resources:,} GPU resources, "
            f"{report.first_hour:%Y-%m-%d %H:%M} to {report.last_hour:%Y-%m-%d %H:%M} UTC: "
            f"{format_usd(report.imported_cost_usd)} (the file's GPU charges: "
            f"{format_usd(report.file_gpu_cost_usd)})"
        )
    else:
        lines.append("No GPU usage found: nothing to write.")
    if report.pending_hours:
        lines.append(
            f"  held until their hours start: {report.pending_hours:,} resource-hours up to "
            f"{report.pending_until:%Y-%m-%d %H:%M} UTC (in gpu_usage_pending; each reaches "
            "gpu_usage_hourly, and the burn rate, when its hour starts)"
        )
    if report.negative_hours:
        lines.append(
            f"  note: {report.negative_hours:,} resource-hours net below $0 (refunds or corrections)"
        )
    if report.utilization is not None:
        u = report.utilization
        lines.append(
            f"Utilization from {u.path}: {u.samples:,} samples; {u.matched_hours:,} of "
            f"{report.resource_hours:,} resource-hours have a value, "
            f"{report.resource_hours - u.matched_hours:,} stay unknown (never judged idle); "
            f"{u.unmatched_hours:,} sampled hours have no GPU cost in this file and were ignored"
        )
    if report.dry_run:
        lines.append("Dry run: nothing was written.")
    elif report.replaced_rows:
        lines.append(f"Replaced {report.replaced_rows:,} stored rows of the same resource-hours.")
    if report.released_rows:
        lines.append(
            f"Released {report.released_rows:,} resource-hours held by earlier imports: "
            "their hours have started."
        )
    return lines
