"""``usage_maintenance_job``: the daily upkeep of ``gpu_usage_hourly`` (db/retention.py).

It drops the month partitions (PostgreSQL) or deletes the rows (SQLite) outside
``HELIOX_RETENTION_DAYS``, and creates the coming month partitions; the counts are in the run's
log and metadata. Scheduled daily in ``TIMEZONE`` (automation/schedules.py).
"""

# No `from __future__ import annotations`: Dagster inspects the real context and resource types.

from dagster import OpExecutionContext, Output, job, op

from heliox_orchestration.clock import utc_now
from heliox_orchestration.db.retention import usage_upkeep
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.settings import HelioxSettings

USAGE_MAINTENANCE_JOB = "usage_maintenance_job"
# Dropping a month is quick; deleting a month of rows one by one (SQLite) is not.
MAINTENANCE_MAX_RUNTIME_SECONDS = 900


@op(
    name="usage_upkeep",
    description="Apply HELIOX_RETENTION_DAYS to gpu_usage_hourly and create the coming month partitions.",
)
def usage_upkeep_op(
    context: OpExecutionContext, heliox_db: HelioxDatabase, heliox_settings: HelioxSettings
) -> Output[None]:
    result = usage_upkeep(heliox_db.get_engine(), heliox_settings.get(), utc_now())
    context.log.info(result.describe())
    return Output(
        None,
        metadata={
            "retention_days": heliox_settings.get().retention_days or "keep all",
            "cutoff_utc": result.cutoff.isoformat() if result.cutoff else "none",
            "partitions_dropped": ", ".join(name for name, _ in result.dropped) or "none",
            "rows_removed": result.removed_rows,
            "rows_deleted": result.deleted_rows,
            "partitions_created": ", ".join(result.created) or "none",
        },
    )


@job(
    name=USAGE_MAINTENANCE_JOB,
    description="Daily upkeep of the usage table: retention (HELIOX_RETENTION_DAYS), month partitions.",
    tags={"dagster/max_runtime": str(MAINTENANCE_MAX_RUNTIME_SECONDS)},
)
def usage_maintenance_job() -> None:
    usage_upkeep_op()
