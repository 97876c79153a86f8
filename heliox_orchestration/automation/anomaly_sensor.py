"""``spend_anomalies_sensor``: after each successful, checked refresh of today's (or yesterday's)
``daily_gpu_costs``, materialize the same day of ``spend_anomalies``; the alert follows that
refresh (``spend_anomaly_alert_sensor``, built from the kind's trigger). Older days (backfills)
are not evaluated by it, so they never alert."""

# No `from __future__ import annotations`: Dagster inspects the sensor functions' parameter types.

import datetime as dt
import json

from dagster import (
    AssetRecordsFilter,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from heliox_orchestration import clock
from heliox_orchestration.alerts.mutes import switched_off
from heliox_orchestration.alerts.spend_anomaly import ALERT_AFTER_TAG, SPEND_ANOMALY
from heliox_orchestration.assets.keys import DAILY_COSTS_KEY
from heliox_orchestration.assets.refresh import spend_anomalies_refresh_job
from heliox_orchestration.automation.burn_rate_sensor import EVENTS_PER_TICK, input_check_passed
from heliox_orchestration.resources.settings import HelioxSettings

ANOMALIES_INTERVAL_SECONDS = 30


def _cursor(text: str | None) -> int | None:
    return json.loads(text).get("after_storage_id") if text else None


@sensor(
    name="spend_anomalies_sensor",
    job=spend_anomalies_refresh_job,
    minimum_interval_seconds=ANOMALIES_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="After each successful, checked refresh of today's or yesterday's "
    "daily_gpu_costs, evaluates the same day of spend_anomalies (the spend-anomaly alert follows).",
)
def spend_anomalies_sensor(context: SensorEvaluationContext, heliox_settings: HelioxSettings) -> SensorResult:
    settings = heliox_settings.get()
    now = clock.utc_now()
    today = settings.today(now)
    wanted = {today.isoformat(), (today - dt.timedelta(days=1)).isoformat()}
    after = _cursor(context.cursor)
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=DAILY_COSTS_KEY, after_storage_id=after),
        limit=EVENTS_PER_TICK,
        ascending=True,
    ).records
    refreshed: dict[str, int] = {}
    for record in records:
        run = context.instance.get_run_by_id(record.run_id)
        if run is not None and not run.is_finished:
            break  # its blocking checks have not spoken yet: look again next tick
        after = record.storage_id
        day = record.partition_key
        if day not in wanted or run is None or run.status != DagsterRunStatus.SUCCESS:
            continue
        if input_check_passed(context.instance, record.run_id):
            refreshed[day] = record.storage_id
    cursor = json.dumps({"after_storage_id": after})
    if not refreshed:
        return SensorResult(
            skip_reason="No new checked refresh of today's or yesterday's daily_gpu_costs.", cursor=cursor
        )
    off = switched_off(SPEND_ANOMALY.name, settings)
    if off is not None:
        return SensorResult(skip_reason=off, cursor=cursor)
    requests = [
        RunRequest(
            run_key=f"spend-anomalies:{day}:{storage_id}",
            partition_key=day,
            tags={ALERT_AFTER_TAG: SPEND_ANOMALY.name},
        )
        for day, storage_id in sorted(refreshed.items())
    ]
    return SensorResult(run_requests=requests, cursor=cursor)
