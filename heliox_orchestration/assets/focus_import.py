"""``focus_import_job``: one FOCUS export file of ``HELIOX_FOCUS_DIR`` into ``gpu_usage_hourly``.

``focus_landing_sensor`` launches one run per new or changed file; the run config names the file
(relative to the folder) and what the sensor saw of it (size, modification time, SHA-256). The op
calls ``import_focus``, which reads and validates the whole file before one write transaction:
a bad file fails the run with the file, line and column, not retried, and writes nothing. Then
the telemetry already stored for those hours is copied into the new cost rows (the join with
``gpu_utilization_hourly``), and the run records:

* an observation of ``focus_exports``: the file, its SHA-256 and the import report;
* a materialization of ``gpu_usage_hourly`` (``usage_landed``) when rows were written: the
  report, and the UTC hours touched, from which ``new_usage_sensor`` refreshes the daily costs.

A file that changed (or disappeared) between the sensor's look and the run is not imported by
this run: the sensor has seen the change and requested another run, which imports it. Import
runs carry the tag ``heliox/usage_import=focus``, which the instance limits to one at a time
(deploy/dagster.yaml), so two versions of a file are imported in the order they were seen.
"""

# No `from __future__ import annotations`: Dagster inspects the real context, config and
# resource annotation types of the decorated functions.

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dagster import (
    AssetObservation,
    Config,
    DagsterLogManager,
    Failure,
    MetadataValue,
    OpExecutionContext,
    job,
    op,
)
from pydantic import Field

from heliox_orchestration.assets.sources import FOCUS_EXPORTS_KEY, usage_landed
from heliox_orchestration.ingest.focus.files import ProgressFactory
from heliox_orchestration.ingest.focus.importer import import_focus
from heliox_orchestration.ingest.focus.report import ImportReport, format_report
from heliox_orchestration.ingest.focus.validation import ImportInputError
from heliox_orchestration.ingest.landing import landing_file
from heliox_orchestration.ingest.utilization import fill_usage_utilization
from heliox_orchestration.money import format_usd
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.settings import HelioxSettings

FOCUS_IMPORT_JOB = "focus_import_job"
IMPORT_OP = "import_focus_export"
USAGE_IMPORT_TAG = "heliox/usage_import"
# Run monitoring fails an import still going after this (docs/operations.md, "Run limits"): the
# longest bound of a Heliox job, since an import's time grows with its file.
IMPORT_MAX_RUNTIME_SECONDS = 1800
IMPORT_TAGS = {USAGE_IMPORT_TAG: "focus", "dagster/max_runtime": str(IMPORT_MAX_RUNTIME_SECONDS)}
LOG_PROGRESS_BYTES = 8 * 1024 * 1024
HOUR = dt.timedelta(hours=1)


class FocusExportConfig(Config):
    file: str = Field(description="The export file, as a path inside HELIOX_FOCUS_DIR.")
    sha256: str = Field(default="", description="SHA-256 of the content the sensor saw (recorded).")
    size_bytes: int = Field(default=-1, description="Size the sensor saw; -1: import whatever is there.")
    mtime_ns: int = Field(default=-1, description="Modification time (ns) the sensor saw.")


def logged_progress(log: DagsterLogManager) -> ProgressFactory:
    """The import's progress in the run's log, every quarter of a file big enough to wait for."""

    @contextmanager
    def progress(path: Path, size: int) -> Iterator[Callable[[int], None]]:
        read, next_quarter = 0, 1

        def update(n: int) -> None:
            nonlocal read, next_quarter
            read += n
            while size >= LOG_PROGRESS_BYTES and next_quarter <= 4 and read * 4 >= size * next_quarter:
                log.info(f"Reading {path.name}: {next_quarter * 25}% of {size / 2**20:,.0f} MiB")
                next_quarter += 1

        yield update

    return progress


def report_metadata(report: ImportReport) -> dict[str, Any]:
    """The import report as metadata: counts, exact amounts, the hours, and the report's text."""
    metadata: dict[str, Any] = {
        "rows_read": report.rows,
        "gpu_charges_imported": report.kept + report.spread,
        "rows_skipped": sum(report.skipped.values()),
        "resource_hours": report.resource_hours,
        "resources": report.resources,
        "imported_cost": format_usd(report.imported_cost_usd),
        "imported_cost_usd_exact": str(report.imported_cost_usd),
        "replaced_rows": report.replaced_rows,
        "held_until_their_hour": report.pending_hours,
        "report": MetadataValue.md("```\n" + "\n".join(format_report(report)) + "\n```"),
    }
    if report.first_hour is not None and report.last_hour is not None:
        metadata["hours"] = f"{report.first_hour:%Y-%m-%d %H:%M} to {report.last_hour:%Y-%m-%d %H:%M} UTC"
    return metadata


def _not_imported(context: OpExecutionContext, config: FocusExportConfig, why: str) -> None:
    context.log.warning(f"{config.file}: {why}")
    context.log_event(
        AssetObservation(
            FOCUS_EXPORTS_KEY, metadata={"file": config.file, "status": why, "sha256": config.sha256}
        )
    )


@op(
    name=IMPORT_OP,
    description="Import one FOCUS export of HELIOX_FOCUS_DIR into gpu_usage_hourly (all or nothing), "
    "then copy the stored telemetry of those hours into the new rows.",
)
def import_focus_export(
    context: OpExecutionContext,
    config: FocusExportConfig,
    heliox_db: HelioxDatabase,
    heliox_settings: HelioxSettings,
) -> None:
    settings = heliox_settings.get()
    if settings.focus_dir is None:
        raise Failure(
            "HELIOX_FOCUS_DIR is not set: there is no landing folder to import from.", allow_retries=False
        )
    try:
        path = landing_file(settings.focus_dir, config.file)
    except ValueError as exc:
        raise Failure(f"file={config.file!r}: {exc}.", allow_retries=False) from None
    try:
        stat = path.stat()
    except FileNotFoundError:
        _not_imported(context, config, "not imported: the file was removed before this run started")
        return
    if config.size_bytes >= 0 and (stat.st_size, stat.st_mtime_ns) != (config.size_bytes, config.mtime_ns):
        _not_imported(
            context,
            config,
            "not imported by this run: the file changed since it was seen; the next run imports it",
        )
        return
    context.log.info(f"Importing {path} ({stat.st_size:,} bytes, SHA-256 {config.sha256 or 'not given'})")
    try:
        report = import_focus(
            heliox_db.get_engine(),
            path,
            progress=logged_progress(context.log),
            max_hourly_cost_usd=settings.max_hourly_cost_usd,
        )
    except ImportInputError as exc:
        # The file, line and column; nothing was written. Only a new version of the file helps.
        raise Failure(
            str(exc), allow_retries=False, metadata={"file": config.file, "sha256": config.sha256}
        ) from None
    for line in format_report(report):
        context.log.info(line)
    metadata = report_metadata(report)
    file_metadata: dict[str, Any] = {"file": config.file, "sha256": config.sha256, "size_bytes": stat.st_size}
    context.log_event(AssetObservation(FOCUS_EXPORTS_KEY, metadata={**file_metadata, **metadata}))
    if not report.resource_hours or report.first_hour is None or report.last_hour is None:
        return
    first, last = report.first_hour.to_pydatetime(), report.last_hour.to_pydatetime()
    filled = fill_usage_utilization(heliox_db.get_engine(), first, last + HOUR)
    if filled.utilization_rows:
        context.log.info(f"Cost rows given the stored telemetry utilization: {filled.utilization_rows:,}")
    metadata["cost_rows_given_telemetry_utilization"] = filled.utilization_rows
    context.log_event(usage_landed(first, last, {"source": "focus_exports", **file_metadata, **metadata}))


@job(
    name=FOCUS_IMPORT_JOB,
    description="Import one FOCUS export file of HELIOX_FOCUS_DIR (focus_landing_sensor launches one "
    "run per new or changed file).",
    tags=IMPORT_TAGS,
)
def focus_import_job() -> None:
    import_focus_export()
