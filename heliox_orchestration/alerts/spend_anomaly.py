"""📈 GPU Spend Anomaly: a local day's spend (today's so far) in total, of a model or of a team,
well above its baseline (``detections/anomaly.py``), read from the ``spend_anomalies`` asset.

``spend_anomalies_sensor`` (automation/anomaly_sensor.py) materializes today's (or yesterday's)
partition after each checked refresh of ``daily_gpu_costs``; the sensor built from this entry's
trigger then launches the alert. Each spike is one ledger key per destination, day, dimension
and value, so it alerts once per day whether it was caught on the partial day or the whole one.
A team's spike goes to the team's channel when the routing file names the team (and also to
the default one with ``copy_to_default``); the fleet's and models' spikes to the default."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from dagster import Config, DagsterRun
from pydantic import Field
from sqlalchemy import Engine

from heliox_orchestration.alerts import ledger
from heliox_orchestration.alerts.detection import Alert, AlertRun, Detection, Subject, nothing
from heliox_orchestration.alerts.kinds import (
    AfterRefresh,
    AlertKind,
    KeyField,
    ManualRun,
    end_of_day,
    register,
)
from heliox_orchestration.alerts.messages import SlackMessage
from heliox_orchestration.alerts.preview import Preview, blocked
from heliox_orchestration.alerts.routes import finding_destinations
from heliox_orchestration.alerts.spend_messages import spend_anomaly_message
from heliox_orchestration.assets.refresh import ANOMALIES_REFRESH_JOB
from heliox_orchestration.costs.anomaly_store import evaluate_spend_anomalies, load_anomaly_evaluation
from heliox_orchestration.costs.quality import days_text, usage_rule_report
from heliox_orchestration.costs.spend_series import history_range
from heliox_orchestration.detections.anomaly import MODEL, Anomaly
from heliox_orchestration.partitions import PARTITION_TAG, local_range_bounds, parse_day
from heliox_orchestration.settings import Settings

# Set by spend_anomalies_sensor on the refreshes it launches: only those alert (not backfills).
ALERT_AFTER_TAG = "heliox/alert_after"


class SpendAnomalyAlertConfig(Config):
    day: str | None = Field(default=None, description="Local day YYYY-MM-DD. Default: today in TIMEZONE.")


def _subject(anomaly: Anomaly) -> Subject:
    return Subject(team=anomaly.team, model=anomaly.value if anomaly.dimension == MODEL else None)


def destinations(anomalies: Sequence[Anomaly], settings: Settings) -> dict[str | None, list[Anomaly]]:
    """Each destination's anomalies: a team's in its channel (when routed), the rest in the default."""
    out: dict[str | None, list[Anomaly]] = {}
    for anomaly in anomalies:
        where = finding_destinations(anomaly.team, settings) if anomaly.team is not None else (None,)
        for team in where:
            out.setdefault(team, []).append(anomaly)
    return out


def _alert(anomalies: Sequence[Anomaly], team: str | None, settings: Settings) -> Alert:
    keys = {anomaly_key(a, team): a for a in anomalies}

    def message(won: Sequence[str]) -> SlackMessage:
        claimed = [keys[k] for k in keys if k in set(won)]
        return spend_anomaly_message(
            claimed, settings.timezone, team=team, dashboard_url=settings.dashboard_url
        )

    return Alert(
        list(keys),
        message,
        names={k: f"{a.dimension} {a.value}" for k, a in keys.items()},
        metadata_for=lambda won: {"anomalies": len(won)},
        team=team,
        subjects={k: _subject(a) for k, a in keys.items()},
    )


def detect_spend_anomaly(run: AlertRun) -> Detection:
    """The stored anomalies of the day, one message per destination."""
    settings = run.settings
    assert isinstance(run.config, SpendAnomalyAlertConfig)
    day = parse_day(run.config.day, "day") or settings.today(run.now)
    evaluation = load_anomaly_evaluation(run.engine, day, settings.timezone)
    metadata = {"day": day.isoformat(), "baseline": evaluation.baseline_note}
    routed = destinations(evaluation.anomalies, settings)
    current = {anomaly_key(a, team) for team, found in routed.items() for a in found}
    # A failed delivery of a spike the latest evaluation no longer finds is not redelivered.
    for team in (None, *(t.team for t in settings.teams)):
        failed = ledger.failed_keys(run.engine, SPEND_ANOMALY.prefix(day.isoformat(), team=team), run.now)
        ledger.expire(run.engine, [k for k in failed if k not in current], run.now)
    if not evaluation.anomalies:
        return nothing(
            f"{day}: no spend above its baseline ({evaluation.baseline_note})", "no anomaly", **metadata
        )
    alerts = [
        _alert(found, team, settings) for team, found in destinations(evaluation.anomalies, settings).items()
    ]
    return Detection(alerts, metadata=metadata)


def preview_spend_anomaly(engine: Engine, settings: Settings, run_date: dt.date, now: dt.datetime) -> Preview:
    first, tz = history_range(run_date)[0], settings.timezone
    checked = usage_rule_report(
        engine,
        *local_range_bounds(first, run_date, tz),
        max_hourly_cost=settings.max_hourly_cost_usd,
        now=now,
    )
    if not checked.passed:
        return blocked(
            checked, f"spend_anomalies {run_date} would not be written", days_text(first, run_date, tz)
        )
    evaluation = evaluate_spend_anomalies(engine, run_date, settings, now)
    message = spend_anomaly_message(evaluation.anomalies, tz, dashboard_url=settings.dashboard_url)
    if evaluation.anomalies:
        return Preview(
            message, True, f"{run_date}: {len(evaluation.anomalies)} spike(s); {evaluation.baseline_note}"
        )
    return Preview(message, False, f"{run_date}: no spend above its baseline ({evaluation.baseline_note})")


def _day_of(refresh: DagsterRun) -> dict[str, object] | str:
    day = refresh.tags.get(PARTITION_TAG)
    if refresh.tags.get(ALERT_AFTER_TAG) != SPEND_ANOMALY_NAME or not day:
        return (
            "Not a refresh launched by spend_anomalies_sensor (a backfill or a manual "
            "materialization): only today's and yesterday's evaluations alert."
        )
    return {"day": day}


def _today(settings: Settings, now: dt.datetime) -> str:
    return settings.today(now).isoformat()


SPEND_ANOMALY_NAME = "spend-anomaly"
SPEND_ANOMALY = register(
    AlertKind(
        name=SPEND_ANOMALY_NAME,
        job_name="spend_anomaly_alert_job",
        op_name="send_spend_anomaly_alert",
        description="📈 GPU Spend Anomaly: a day's spend well above its baseline (after spend_anomalies).",
        fields=(KeyField("day", 10), KeyField("dimension", 5), KeyField("value")),
        relevance="the local day after its day",
        relevant_until=end_of_day("day", days_after=1),
        detect=detect_spend_anomaly,
        config=SpendAnomalyAlertConfig,
        trigger=AfterRefresh(
            sensor_name="spend_anomaly_alert_sensor",
            refresh_job=ANOMALIES_REFRESH_JOB,
            description="After spend_anomalies_sensor's refresh succeeds, alert on its day's new spikes.",
            config=_day_of,
            tags=lambda config: {"heliox/day": str(config["day"])},
        ),
        manual=ManualRun(
            ANOMALIES_REFRESH_JOB, partition=_today, config=lambda s, now: {"day": _today(s, now)}
        ),
        preview=preview_spend_anomaly,
        redelivery_config=lambda f: {"day": f["day"]},
        redelivery_scope=lambda f: f["day"],
        team_routed=True,
        mute_scopes=("team", "model"),
    )
)


def anomaly_key(anomaly: Anomaly, team: str | None = None) -> str:
    return SPEND_ANOMALY.key(anomaly.day.isoformat(), anomaly.dimension, anomaly.value, team=team)
