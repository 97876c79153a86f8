"""``burn_rate_sensor``: after a checked refresh of today's ``daily_gpu_costs``, launch the
burn-rate alert when the fleet, or a team with a threshold of its own (routing file), reaches a
new level today; once per day, destination and level. Past days (backfills) never alert."""

# No `from __future__ import annotations`: Dagster inspects the sensor functions' parameter types.

import datetime as dt
import json
from dataclasses import dataclass, field

from dagster import (
    AssetCheckKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from heliox_orchestration import clock
from heliox_orchestration.alerts.burn_rate import BURN_RATE, burn_rate_key, levels_of, team_statuses
from heliox_orchestration.alerts.detection import Subject
from heliox_orchestration.alerts.jobs import alert_job
from heliox_orchestration.alerts.mutes import active_mutes, mute_of, record_muted, skip_reason, switched_off
from heliox_orchestration.assets.checks import INPUT_CHECK
from heliox_orchestration.assets.keys import DAILY_COSTS_KEY
from heliox_orchestration.costs.common import NotMaterializedError
from heliox_orchestration.costs.summary import load_burn_rate_status
from heliox_orchestration.money import format_usd
from heliox_orchestration.reports import BurnRateStatus
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.settings import HelioxSettings

# Enough for an hour of refreshes and a backfill's events per tick; the rest waits a tick.
EVENTS_PER_TICK = 500
ALERTED_DAYS_KEPT = 3


DAILY_COSTS_INPUT_CHECK = AssetCheckKey(DAILY_COSTS_KEY, INPUT_CHECK)


def input_check_passed(instance: DagsterInstance, run_id: str) -> bool:
    """Did the run evaluate daily_gpu_costs' input check, and pass it? The asset refuses to
    materialize from failing rows, so this only matters for a materialization that did not come
    from the asset's op (defense in depth): no passing evaluation, no alert."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        evaluation = event.asset_check_evaluation_data
        if evaluation.asset_check_key == DAILY_COSTS_INPUT_CHECK:
            return evaluation.passed
    return False


def cursor_key(day: str, team: str | None) -> str:
    """The cursor's entry of a day's level: the fleet's under the day, a team's as day@team."""
    return day if team is None else f"{day}@{team}"


@dataclass
class BurnRateCursor:
    """Where the burn-rate sensor is in the event log, and the level each recent day reached
    (per destination)."""

    after_storage_id: int | None = None
    alerted: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> "BurnRateCursor":
        if not text:
            return cls()
        data = json.loads(text)
        return cls(data.get("after_storage_id"), {k: int(v) for k, v in data.get("alerted", {}).items()})

    def dump(self, today: dt.date) -> str:
        keep = {(today - dt.timedelta(days=n)).isoformat() for n in range(ALERTED_DAYS_KEPT)}
        alerted = {key: level for key, level in self.alerted.items() if key.partition("@")[0] in keep}
        return json.dumps({"after_storage_id": self.after_storage_id, "alerted": alerted}, sort_keys=True)


def today_refreshed(context: SensorEvaluationContext, cursor: BurnRateCursor, today: dt.date) -> bool:
    """Advance ``cursor`` over the new materializations of daily_gpu_costs; True when the latest
    one of today came from a run that succeeded and whose input check passed."""
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=DAILY_COSTS_KEY, after_storage_id=cursor.after_storage_id),
        limit=EVENTS_PER_TICK,
        ascending=True,
    ).records
    refreshed = False
    runs: dict[str, DagsterRun | None] = {}  # a single-run backfill emits one event per day
    checked: dict[str, bool] = {}
    for record in records:
        if record.run_id not in runs:
            runs[record.run_id] = context.instance.get_run_by_id(record.run_id)
        run = runs[record.run_id]
        if run is not None and not run.is_finished:
            break  # its blocking checks have not spoken yet: look again next tick
        cursor.after_storage_id = record.storage_id
        if record.partition_key != today.isoformat():
            continue
        # The latest write of today decides: only the numbers of a run that succeeded and
        # whose input check passed may alert (a failed run's numbers never do).
        succeeded = run is not None and run.status == DagsterRunStatus.SUCCESS
        if succeeded and record.run_id not in checked:
            checked[record.run_id] = input_check_passed(context.instance, record.run_id)
        refreshed = succeeded and checked[record.run_id]
    return refreshed


# Every 15 s: one cheap event-log query per tick, and a refresh that lands today's usage (an
# import, through new_usage_sensor) reaches Slack well inside 90 s.
BURN_RATE_INTERVAL_SECONDS = 15


@sensor(
    name="burn_rate_sensor",
    job=alert_job(BURN_RATE),
    minimum_interval_seconds=BURN_RATE_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Alerts once per local day when today's daily_gpu_costs is over the threshold, "
    "and once more per escalation level; the same for each team with a threshold of its own in "
    "the routing file. Past days (backfills, re-runs) never alert.",
)
def burn_rate_sensor(
    context: SensorEvaluationContext, heliox_db: HelioxDatabase, heliox_settings: HelioxSettings
) -> SensorResult:
    settings = heliox_settings.get()
    cursor = BurnRateCursor.parse(context.cursor)
    now = clock.utc_now()
    today = settings.today(now)
    day = today.isoformat()
    if not today_refreshed(context, cursor, today):
        return SensorResult(
            skip_reason=f"No new successful, checked refresh of today's daily_gpu_costs ({day}).",
            cursor=cursor.dump(today),
        )
    off = switched_off(BURN_RATE.name, settings)
    if off is not None:
        return SensorResult(skip_reason=off, cursor=cursor.dump(today))
    engine = heliox_db.get_engine()
    try:
        status = load_burn_rate_status(engine, today, settings, now)
    except NotMaterializedError:
        return SensorResult(skip_reason=f"{day} is not materialized.", cursor=cursor.dump(today))
    statuses: dict[str | None, BurnRateStatus] = {None: status}
    statuses.update(team_statuses(engine, today, settings, now)[0])
    reasons, crossings = [], {}
    for team, of_team in statuses.items():
        level, alerted = levels_of(of_team, settings), cursor.alerted.get(cursor_key(day, team), 0)
        whose = f"{day}: team {team}'s" if team else f"{day}:"
        if level is None:
            if team is None:
                cost, threshold = format_usd(of_team.cost_usd), format_usd(of_team.threshold_usd)
                reasons.append(f"{whose} {cost} is within the {threshold} threshold.")
        elif level <= alerted:
            reasons.append(f"{whose} already alerted at {alerted}% of the threshold.")
        else:
            crossings[team] = level
    mutes = active_mutes(engine, now, BURN_RATE.name)
    muted = [
        (burn_rate_key(today, level, team), mute)
        for team, level in crossings.items()
        if (mute := mute_of(mutes, Subject(team=team))) is not None
    ]
    if muted:
        record_muted(engine, BURN_RATE.name, muted, now)
        reasons += dict.fromkeys(skip_reason(mute, settings.timezone) for _, mute in muted)
        crossings = {t: lvl for t, lvl in crossings.items() if mute_of(mutes, Subject(team=t)) is None}
    if not crossings:
        return SensorResult(skip_reason=" ".join(reasons), cursor=cursor.dump(today))
    for team, level in crossings.items():
        cursor.alerted[cursor_key(day, team)] = level
    tags = {"heliox/day": day}
    if None in crossings:
        tags["heliox/level_pct"] = str(crossings[None])
    request = RunRequest(
        run_key=",".join(burn_rate_key(today, level, team) for team, level in crossings.items()),
        run_config=BURN_RATE.run_config(day=day),
        tags=tags,
    )
    return SensorResult(run_requests=[request], cursor=cursor.dump(today))
