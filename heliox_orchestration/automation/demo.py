"""``demo_feed_sensor``: the embedded demo is alive while ``dagster dev`` runs.

On the embedded database only (``HELIOX_DATABASE_URL`` unset: a database the user named is never
written to), every minute:

* the demo fleet's usage is appended up to the last completed hour (``ingest/demo_feed.py``),
  and the local days it reached are refreshed, so today's burn rate keeps moving and the
  stale-data alert has nothing to say;
* on its first tick, it fills the demo window: one ``gpu_costs_refresh_job`` run over every
  partition from ``HELIOX_START_DATE`` (the window's first day) through today; once that run has
  ended, it refreshes the idle findings (so they read the window's rollup), and once that has
  ended, yesterday's summary (a tick, a minute, between steps). With the runaway job it plants in
  today's last completed hour, the three alerts follow in preview mode within minutes: the
  burn-rate sensor after today's partition, the idle and summary sensors after their refreshes.
"""

# No `from __future__ import annotations`: Dagster inspects the sensor functions' parameter types.

import datetime as dt

from dagster import (
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from heliox_orchestration import clock
from heliox_orchestration.assets.refresh import (
    daily_summary_refresh_job,
    gpu_costs_refresh_job,
    idle_recommendations_refresh_job,
)
from heliox_orchestration.automation.ingestion import RANGE_END_TAG, RANGE_START_TAG, TRIGGER_TAG
from heliox_orchestration.ingest.demo_feed import FeedReport, extend_demo_fleet, plant_runaway_job
from heliox_orchestration.partitions import local_days_of
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.settings import HelioxSettings

DEMO_FEED_INTERVAL_SECONDS = 60
WINDOW_REQUESTED = "window requested"
IDLE_REQUESTED = "idle findings requested"
FILLED = "window filled"
WINDOW_TRIGGER = "demo-window"
NAMED_DATABASE = "HELIOX_DATABASE_URL names a database: the demo feed never writes to it."


@sensor(
    name="demo_feed_sensor",
    jobs=[gpu_costs_refresh_job, idle_recommendations_refresh_job, daily_summary_refresh_job],
    minimum_interval_seconds=DEMO_FEED_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Embedded demo only: appends the demo fleet's usage up to the last completed hour and "
    "refreshes the days it reached; on its first ticks fills the demo window's partitions in one run, "
    "then refreshes the idle findings, then yesterday's summary. Skips a database the user named.",
)
def demo_feed_sensor(
    context: SensorEvaluationContext, heliox_db: HelioxDatabase, heliox_settings: HelioxSettings
) -> SensorResult:
    if not heliox_db.is_embedded:
        return SensorResult(skip_reason=NAMED_DATABASE, cursor=context.cursor)
    settings = heliox_settings.get()
    engine = heliox_db.get_engine()  # seeds the demo fleet into an empty embedded database
    now = clock.utc_now()
    today = settings.today(now)
    fed = extend_demo_fleet(engine, settings.timezone, now)
    # The first start's steps, one after the other: fill the window, then the idle findings (they
    # read its rollup), then yesterday's summary (it refreshes the idle findings too: never both
    # at once). The cursor names the step last requested.
    steps = {
        WINDOW_REQUESTED: RunRequest(
            run_key=f"demo-window:{settings.start_date}..{today}",
            job_name=gpu_costs_refresh_job.name,
            tags={
                RANGE_START_TAG: settings.start_date.isoformat(),
                RANGE_END_TAG: today.isoformat(),
                TRIGGER_TAG: WINDOW_TRIGGER,
            },
        ),
        IDLE_REQUESTED: RunRequest(
            run_key=f"demo-idle:{today}",
            job_name=idle_recommendations_refresh_job.name,
            tags={TRIGGER_TAG: WINDOW_TRIGGER},
        ),
        FILLED: RunRequest(
            run_key=f"demo-summary:{today}",
            job_name=daily_summary_refresh_job.name,
            partition_key=settings.yesterday(now).isoformat(),
            tags={TRIGGER_TAG: WINDOW_TRIGGER},
        ),
    }
    order = list(steps)
    cursor = context.cursor if context.cursor in steps else None
    requests: list[RunRequest] = []
    waiting = None
    if cursor is None:
        planted = plant_runaway_job(engine, settings.timezone, settings.burn_rate_threshold_usd, now)
        if planted:
            context.log.info(f"Planted a runaway job of {planted} H100s in today's last completed hour.")
        cursor = WINDOW_REQUESTED
        requests.append(steps[cursor])
    else:
        if cursor != FILLED:
            if _step_ended(context.instance, steps[cursor]):
                cursor = order[order.index(cursor) + 1]
                requests.append(steps[cursor])
            else:
                waiting = f"Waiting for the demo's {steps[cursor].job_name} run to end before the next step."
        requests += _feed_requests(fed, settings.timezone, today)
    fed_text = (
        f"appended {fed.rows:,} usage rows through {fed.last_hour:%Y-%m-%d %H:00} UTC" if fed.rows else ""
    )
    skip = None if requests else waiting or f"Demo usage is current{'; ' + fed_text if fed_text else ''}."
    if fed_text and requests:
        context.log.info(f"Demo feed: {fed_text}.")
    return SensorResult(run_requests=requests, skip_reason=skip, cursor=cursor)


def _step_ended(instance: DagsterInstance, step: RunRequest) -> bool:
    """Whether the demo's newest run of the step's job has ended, however (after a failed fill the
    idle findings read the raw hours, and say so); no such run: nothing to wait for."""
    records = instance.get_run_records(
        RunsFilter(job_name=step.job_name, tags={TRIGGER_TAG: WINDOW_TRIGGER}), limit=1
    )
    return not records or records[0].dagster_run.is_finished


def _feed_requests(fed: FeedReport, timezone: str, today: dt.date) -> list[RunRequest]:
    """A refresh of each local day the appended hours reached (up to today)."""
    if fed.first_hour is None or fed.last_hour is None:
        return []
    first_day, last_day = local_days_of(fed.first_hour, fed.last_hour, timezone)
    requests = []
    day = first_day
    while day <= min(last_day, today):
        requests.append(
            RunRequest(
                run_key=f"demo-feed:{fed.last_hour:%Y-%m-%dT%H}:{day}",
                job_name=gpu_costs_refresh_job.name,
                partition_key=day.isoformat(),
                tags={TRIGGER_TAG: "demo-feed"},
            )
        )
        day += dt.timedelta(days=1)
    return requests
