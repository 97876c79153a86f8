"""Run-failure notices: which failed runs get one, what it says, and its delivery.

The rule, so that a Slack outage never feeds on itself and no notice is false:

* One notice per failed run, ever: its ledger key is ``run-failure:<run id>``. If Slack does not
  take it, ``alert_redelivery_sensor`` launches ``run_failure_notice_job``, which rebuilds it
  from the run's events and sends it again (marked late) while it is relevant.
* No notice about a run of ``run_failure_notice_job``: its notice's ledger row already tracks it.
* No notice when every failed step failed delivering its alert to Slack and the alert's keys are
  in the ledger: the alert itself is redelivered, marked late, or after a permanent refusal
  waits for a new webhook (``heliox alerts`` says what to fix). A notice would go to the same
  Slack that just failed.
* No notice when no step failed and every key the run holds in the ledger is ``sent`` or
  ``previewed``: the alert was delivered and only the run's process died afterwards.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from dagster import Config, DagsterEventType, DagsterInstance
from pydantic import Field
from sqlalchemy import Engine

from heliox_orchestration.alerts import ledger
from heliox_orchestration.alerts.delivery import Delivery
from heliox_orchestration.alerts.detection import Alert, AlertRun, Detection, deliver_alert, nothing
from heliox_orchestration.alerts.kinds import (
    ALERT_KEYS_METADATA,
    DAY,
    SLACK_DELIVERY_METADATA,
    AlertKind,
    KeyField,
    for_,
    register,
)
from heliox_orchestration.alerts.messages import SlackMessage, run_failure_message
from heliox_orchestration.alerts.mutes import active_mutes, hold_back, record_muted, skip_reason, switched_off
from heliox_orchestration.resources.slack import SlackRoutes
from heliox_orchestration.secrets import redact_webhook_url
from heliox_orchestration.settings import Settings


@dataclass(frozen=True)
class StepFailure:
    step_key: str | None
    error: str
    slack_keys: tuple[str, ...] | None  # a Slack delivery failure of these keys; None: another error


@dataclass(frozen=True)
class FailedRun:
    run_id: str
    job_name: str
    steps: tuple[StepFailure, ...]
    run_error: str


def failed_run(instance: DagsterInstance, run_id: str) -> FailedRun:
    """What the run's events say about its failure (a run no longer stored says so)."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        return FailedRun(run_id, "(unknown job)", (), f"run {run_id} is no longer in Dagster's storage")
    steps: list[StepFailure] = []
    run_error = ""
    kinds = {DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}
    for entry in instance.all_logs(run_id, of_type=kinds):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type != DagsterEventType.STEP_FAILURE:
            run_error = event.message or run_error
            continue
        data = event.step_failure_data
        metadata = data.user_failure_data.metadata if data.user_failure_data else {}
        keys = metadata.get(ALERT_KEYS_METADATA) if SLACK_DELIVERY_METADATA in metadata else None
        values = keys.value if keys is not None else None
        slack_keys = tuple(str(k) for k in values) if isinstance(values, list) and values else None
        error = data.error.message if data.error else (event.message or "")
        steps.append(StepFailure(event.step_key, error, slack_keys))
    return FailedRun(run_id, run.job_name, tuple(steps), run_error)


def why_no_notice(run: FailedRun, run_keys: Mapping[str, str], tracked: Mapping[str, str]) -> str | None:
    """Why ``run`` gets no notice (see the module's rule), or None when it gets one.
    ``run_keys``: the ledger keys the run holds and their status; ``tracked``: the status of the
    keys its failed steps could not deliver."""
    if run.job_name == RUN_FAILURE.job_name:
        return "it is a run-failure notice run; its notice's ledger row tracks it and is redelivered"
    slack_keys = [k for s in run.steps for k in (s.slack_keys or ())]
    if run.steps and all(s.slack_keys for s in run.steps) and all(k in tracked for k in slack_keys):
        return (
            f"Slack did not take its alert ({', '.join(slack_keys)}); the alert ledger tracks it and "
            "alert_redelivery_sensor sends it again while it is relevant (`heliox alerts`)"
        )
    delivered = (ledger.SENT, ledger.PREVIEWED)
    if not run.steps and run_keys and all(status in delivered for status in run_keys.values()):
        return f"its alert was delivered ({', '.join(sorted(run_keys))}); only its process failed afterwards"
    return None


def notice_message(run: FailedRun, settings: Settings, webhook_url: str | None) -> SlackMessage:
    step = run.steps[0] if run.steps else None
    error = step.error if step else run.run_error
    run_url = f"{settings.webserver_url}/runs/{run.run_id}" if settings.webserver_url else None
    return run_failure_message(
        run.job_name,
        step.step_key if step else None,
        redact_webhook_url(error or "", webhook_url),
        run_url=run_url,
    )


class RunFailureNoticeConfig(Config):
    run_id: str = Field(description="The failed run whose notice is (re)sent.")


def detect_run_failure(run: AlertRun) -> Detection:
    """The notice of a failed run, rebuilt from its events, unless the rule above says none."""
    assert isinstance(run.config, RunFailureNoticeConfig) and run.instance is not None
    failed_run_id = run.config.run_id
    failed = failed_run(run.instance, failed_run_id)
    tracked = ledger.statuses(run.engine, [k for s in failed.steps for k in (s.slack_keys or ())])
    reason = why_no_notice(failed, ledger.keys_of_run(run.engine, failed_run_id), tracked)
    if reason is not None:
        return nothing(
            f"No run-failure notice for {failed.job_name} run {failed_run_id}: {reason}.", "no notice"
        )
    message = notice_message(failed, run.settings, run.webhook_url)
    return Detection(
        [Alert([run_failure_key(failed_run_id)], message)], metadata={"failed_run_id": failed_run_id}
    )


RUN_FAILURE = register(
    AlertKind(
        name="run-failure",
        job_name="run_failure_notice_job",
        op_name="send_run_failure_notice",
        description="🚨 Resends a run-failure notice Slack did not take (launched by the redelivery sensor).",
        fields=(KeyField("run_id"),),
        relevance="24 hours after each attempt",
        relevant_until=for_(DAY),
        detect=detect_run_failure,
        config=RunFailureNoticeConfig,
        redelivery_config=lambda f: {"run_id": f["run_id"]},
        redelivery_scope=lambda f: f["run_id"],
    )
)


def run_failure_key(run_id: str) -> str:
    return RUN_FAILURE.key(run_id)


def notify_run_failure(
    engine: Engine,
    slack: SlackRoutes,
    instance: DagsterInstance,
    failed_run_id: str,
    settings: Settings,
    now: dt.datetime,
) -> Delivery | str:
    """Send the notice of a failed run once (the run-failure sensor) to the run-failure webhook;
    the reason as text when it gets none (switched off, muted, or the rule above). Raises
    ``AlertNotDelivered`` when Slack does not take it (the ledger has it as failed, and the
    redelivery sensor resends it through ``run_failure_notice_job``)."""
    off = switched_off(RUN_FAILURE.name, settings)
    if off is not None:
        return off
    webhook = slack.route(RUN_FAILURE.webhook_variables())
    config = RunFailureNoticeConfig(run_id=failed_run_id)
    detection = detect_run_failure(AlertRun(engine, settings, now, config, instance, webhook.resolved_url()))
    if not detection.alerts:
        return detection.note
    detection, muted = hold_back(detection, active_mutes(engine, now, RUN_FAILURE.name))
    if muted:
        record_muted(engine, RUN_FAILURE.name, muted, now)
        return skip_reason(muted[0][1], settings.timezone)
    return deliver_alert(
        RUN_FAILURE, engine, webhook, detection.alerts[0], now=now, timezone=settings.timezone
    )
