"""``gpu_utilization_hourly``: GPU utilization from Prometheus (NVIDIA DCGM exporter), one
partition per UTC hour. Defined only when ``PROMETHEUS_URL`` is set.

A run pulls the hours of its partitions (one hour, the schedule's few recent hours, or a
backfill's day), with the three calls of ``ingest.utilization``: store the hourly utilization,
copy it into the cost rows of the same resource and hour, and report the join (cost without
telemetry: utilization unknown; telemetry without cost: GPUs the billing does not know) as
metadata. A run that changed cost rows reports a ``gpu_usage_hourly`` materialization too, so
the daily costs of those days are refreshed (``new_usage_sensor``)."""

# No `from __future__ import annotations`: Dagster inspects the real context, config and
# resource annotation types of the decorated functions.

import datetime as dt
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    Config,
    Failure,
    HourlyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    define_asset_job,
    multi_asset,
)
from pydantic import Field

from heliox_orchestration.assets.keys import table_metadata
from heliox_orchestration.assets.sources import SOURCES_GROUP, UTILIZATION_KEY, usage_landed
from heliox_orchestration.ingest.dcgm_mapping import MappingError, load_mapping
from heliox_orchestration.ingest.prometheus import PrometheusConfigError, PrometheusError
from heliox_orchestration.ingest.utilization import (
    FillReport,
    IngestReport,
    JoinReport,
    fill_usage_utilization,
    ingest_utilization,
    utilization_join_report,
)
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.prometheus import PrometheusSource
from heliox_orchestration.resources.settings import HelioxSettings
from heliox_orchestration.settings import Settings

UTILIZATION_PULL_JOB = "gpu_utilization_pull_job"
# A backfill run pulls at most one day of hours: every run stays well inside the 1-hour bound of
# run monitoring, and a failed day is retried alone.
BACKFILL_HOURS_PER_RUN = 24
# The scheduled pull is a few hours; run monitoring fails it after this (docs/operations.md).
PULL_MAX_RUNTIME_SECONDS = 900
PULL_TAGS = {"dagster/max_runtime": str(PULL_MAX_RUNTIME_SECONDS)}
HOUR = dt.timedelta(hours=1)

DESCRIPTION = """Hourly GPU utilization per resource, from Prometheus (NVIDIA DCGM exporter).

Partitioned by UTC hour (a partition is the hour starting at its key). A run pulls its hours
from Prometheus (`DCGM_FI_DEV_GPU_UTIL`, or `DCGM_FI_PROF_GR_ENGINE_ACTIVE` x 100 where the label
mapping says so), stores them in `gpu_utilization_hourly` (replacing the stored rows of those
hours), copies them into `gpu_usage_hourly.gpu_utilization_pct` of the cost rows of the same
resource and hour, and reports cost without telemetry (utilization unknown, never idle) and
telemetry without cost (GPUs the billing does not know) as metadata.

`gpu_utilization_pull_schedule` pulls the last 3 ended hours every hour (re-pulling the two
before the newest, as scrapes land late); a backfill pulls history, one run per UTC day. Gaps
in scraping are gaps (no row), never 0 %. Connection: `PROMETHEUS_URL` and
`PROMETHEUS_BEARER_TOKEN` or `PROMETHEUS_USERNAME`/`PROMETHEUS_PASSWORD`; labels:
`HELIOX_DCGM_MAPPING` (docs/importing.md)."""


class UtilizationPullConfig(Config):
    attribute_workloads: bool = Field(
        default=False,
        description="Also give cost rows without a model name or team the workload and team seen "
        "on their GPUs (a value from the cost export is never replaced).",
    )


def utilization_partitions(settings: Settings) -> HourlyPartitionsDefinition:
    """UTC hours from HELIOX_START_DATE; the newest partition is the last hour that has ended."""
    start = dt.datetime.combine(settings.start_date, dt.time(), dt.UTC)
    return HourlyPartitionsDefinition(start_date=start, timezone="UTC")


def pull_metadata(report: IngestReport, filled: FillReport, join: JoinReport, source: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"prometheus": source, **report.metadata()}
    metadata["cost_rows_given_utilization"] = filled.utilization_rows
    metadata["cost_rows_given_workload_or_team"] = filled.attributed_rows
    join_metadata = join.metadata()
    metadata |= {k: v for k, v in join_metadata.items() if k != "report"}
    metadata["join_report"] = MetadataValue.md("```\n" + join_metadata["report"] + "\n```")
    metadata["pull_report"] = MetadataValue.md("```\n" + "\n".join(report.lines()) + "\n```")
    return metadata


def build_gpu_utilization_hourly(partitions: HourlyPartitionsDefinition) -> AssetsDefinition:

    @multi_asset(
        name="gpu_utilization_hourly",
        specs=[
            AssetSpec(
                UTILIZATION_KEY,
                description=DESCRIPTION,
                group_name=SOURCES_GROUP,
                kinds={"prometheus", "sql"},
                partitions_def=partitions,
                metadata=table_metadata("gpu_utilization_hourly"),
            )
        ],
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.multi_run(BACKFILL_HOURS_PER_RUN),
    )
    def gpu_utilization_hourly(
        context: AssetExecutionContext,
        config: UtilizationPullConfig,
        prometheus: PrometheusSource,
        heliox_db: HelioxDatabase,
        heliox_settings: HelioxSettings,
    ) -> MaterializeResult:
        settings = heliox_settings.get()
        start, end = context.partition_time_window
        start, end = start.astimezone(dt.UTC), end.astimezone(dt.UTC)
        engine = heliox_db.get_engine()
        try:
            mapping = load_mapping(settings.dcgm_mapping_path)
            client = prometheus.client()
        except (MappingError, PrometheusConfigError) as exc:
            raise Failure(str(exc), allow_retries=False) from None
        with client:
            source = client.describe()
            context.log.info(f"Pulling {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC from {source}")

            def progress(done: int, total: int) -> None:
                if done == total or done % max(total // 10, 1) == 0:
                    context.log.info(f"Prometheus queries: {done} of {total}")

            try:
                report = ingest_utilization(engine, client, mapping, start, end, progress=progress)
            except PrometheusError as exc:
                # One line, scrubbed of the credentials; the next scheduled pull re-pulls these hours.
                raise Failure(str(exc)) from None
        filled = fill_usage_utilization(engine, start, end, attribute_workloads=config.attribute_workloads)
        join = utilization_join_report(engine, start, end)
        for line in (*report.lines(), *join.lines()):
            context.log.info(line)
        if filled.utilization_rows or filled.attributed_rows:
            context.log_event(
                usage_landed(
                    start,
                    end - HOUR,
                    {
                        "source": "gpu_utilization_hourly",
                        "cost_rows_given_utilization": filled.utilization_rows,
                        "cost_rows_given_workload_or_team": filled.attributed_rows,
                    },
                )
            )
        metadata = pull_metadata(report, filled, join, source)
        metadata["dagster/row_count"] = report.rows_written
        return MaterializeResult(asset_key=UTILIZATION_KEY, metadata=metadata)

    return gpu_utilization_hourly


gpu_utilization_pull_job = define_asset_job(
    UTILIZATION_PULL_JOB,
    selection=[UTILIZATION_KEY],
    description="Pull recent hours of GPU utilization from Prometheus (the schedule's job).",
    tags=PULL_TAGS,
)
