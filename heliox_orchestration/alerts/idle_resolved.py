"""✅ Idle GPU Resolved: an idle GPU that was alerted on stopped costing money idle (busy again,
or gone from the usage data: ``detections/resolution.py``, applied by every idle evaluation).
The message goes to each destination its idle alert went to, once per resolution
(``idle-resolved[@team]:<resource>:<resolved hour>``), after each successful idle refresh."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from heliox_orchestration.alerts import ledger
from heliox_orchestration.alerts.detection import Alert, AlertRun, Detection, Subject, nothing
from heliox_orchestration.alerts.idle_spend import IDLE_SPEND
from heliox_orchestration.alerts.kinds import (
    DAY,
    AfterRefresh,
    AlertKind,
    KeyField,
    ManualRun,
    for_,
    register,
)
from heliox_orchestration.alerts.messages import SlackMessage
from heliox_orchestration.alerts.resolution_messages import idle_resolved_message
from heliox_orchestration.assets.refresh import IDLE_REFRESH_JOB
from heliox_orchestration.detections.resolution import Episode, resolved_since


def resolved_hour(instant: dt.datetime) -> str:
    """``20260112T0500Z``: the key field of a resolution (no ``:``)."""
    return f"{instant.astimezone(dt.UTC):%Y%m%dT%H%MZ}"


def _destination_alert(run: AlertRun, team: str | None, episodes: Sequence[Episode]) -> Alert:
    by_key = {}
    for ep in episodes:
        assert ep.resolved_at is not None
        by_key[IDLE_RESOLVED.key(ep.resource_id, resolved_hour(ep.resolved_at), team=team)] = ep

    def message(won: Sequence[str]) -> SlackMessage:
        return idle_resolved_message([by_key[k] for k in won], run.settings.timezone, team=team)

    return Alert(
        list(by_key),
        message,
        names={k: f"resource {ep.resource_id}" for k, ep in by_key.items()},
        metadata_for=lambda won: {"resolved_gpus": len(won)},
        team=team,
        subjects={k: Subject(ep.team, ep.resource_id, ep.model_name) for k, ep in by_key.items()},
    )


def detect_idle_resolved(run: AlertRun) -> Detection:
    """Each resolution found in the last 24 hours, to every destination its idle alert reached."""
    episodes = resolved_since(run.engine, run.now - DAY)
    if not episodes:
        return nothing("No alerted idle GPU resolved in the last 24 hours.", "nothing resolved")
    destinations = (None, *(route.team for route in run.settings.teams))
    alerts = []
    for team in destinations:
        reached = []
        for ep in episodes:
            prefix = IDLE_SPEND.prefix(ep.resource_id, team=team)
            if ledger.recently_sent(run.engine, [prefix], ep.alerted_at, previewed=True):
                reached.append(ep)
        if reached:
            alerts.append(_destination_alert(run, team, reached))
    if not alerts:
        return nothing(
            f"{len(episodes)} resolved idle GPU(s), none alerted to a destination of the routing file.",
            "nothing resolved",
        )
    return Detection(alerts, metadata={"resolved_gpus": len(episodes)})


IDLE_RESOLVED = register(
    AlertKind(
        name="idle-resolved",
        job_name="idle_resolved_alert_job",
        op_name="send_idle_resolved_alert",
        description="✅ Idle GPU Resolved: alerted idle GPUs that stopped costing money "
        "(after each idle refresh).",
        fields=(KeyField("resource"), KeyField("resolved_at", 14)),
        relevance="24 hours after each attempt",
        relevant_until=for_(DAY),
        detect=detect_idle_resolved,
        trigger=AfterRefresh(
            sensor_name="idle_resolved_sensor",
            refresh_job=IDLE_REFRESH_JOB,
            description="After each successful idle refresh, tell each destination that heard about an "
            "idle GPU that it stopped costing money, and how much a month.",
        ),
        manual=ManualRun(IDLE_REFRESH_JOB, partition=lambda s, now: None, config=lambda s, now: {}),
        team_routed=True,
        mute_scopes=("team", "resource", "model"),
        webhook_fallback="idle-spend",
    )
)
