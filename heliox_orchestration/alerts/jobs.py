"""The alert jobs: one job per registered alert kind, each running the one alert op.

The op asks the kind's detection what to send (a plain function over the materialized cost
assets), then hands each alert to ``delivery``, which claims its ledger keys so that nothing is
sent twice. Alert runs carry the spec's 5-minute limit (``dagster/max_runtime``, enforced by run
monitoring) and a retry policy for transient failures; Slack's permanent refusals are not retried.
"""

# No `from __future__ import annotations`: Dagster inspects the op signatures' real types.

import functools
from collections.abc import Mapping, Sequence

from dagster import (
    Backoff,
    Failure,
    JobDefinition,
    MetadataValue,
    OpDefinition,
    OpExecutionContext,
    RetryPolicy,
    job,
    op,
)

from heliox_orchestration import clock
from heliox_orchestration.alerts.catalog import all_kinds
from heliox_orchestration.alerts.delivery import AlertNotDelivered, Delivery, LedgerIncomplete
from heliox_orchestration.alerts.detection import Alert, AlertRun, deliver_alert
from heliox_orchestration.alerts.kinds import ALERT_KEYS_METADATA, SLACK_DELIVERY_METADATA, AlertKind
from heliox_orchestration.costs.common import NotMaterializedError
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.settings import HelioxSettings
from heliox_orchestration.resources.slack import WEBHOOK_URL_VAR, SlackWebhook

ALERT_MAX_RUNTIME_SECONDS = 300
ALERT_RETRY_POLICY = RetryPolicy(max_retries=2, delay=20, backoff=Backoff.EXPONENTIAL)


def alert_tags(kind: str) -> dict[str, str]:
    # heliox/alert: the UI's run filter by alert kind. No concurrency limit uses it: the ledger
    # keeps racing runs to one message (deploy/dagster.yaml).
    return {"dagster/max_runtime": str(ALERT_MAX_RUNTIME_SECONDS), "heliox/alert": kind}


def _slack_failure(exc: AlertNotDelivered, kind: AlertKind) -> Failure:
    """The Slack resource has already retried; the run fails visibly and the redelivery sensor
    sends the alert again while it is relevant, so the op does not retry. A permanent refusal
    waits for another webhook."""
    if exc.refused:
        then = (
            f"it is not sent to this webhook again; once {WEBHOOK_URL_VAR} is fixed it goes out "
            f"while still relevant ({kind.relevance}). `heliox alerts` shows it as refused"
        )
    else:
        then = f"alert_redelivery_sensor sends it again in 5-6 minutes, while relevant ({kind.relevance})"
    return Failure(
        f"{exc} Then: {then}.",
        allow_retries=False,
        metadata={
            "http_status": exc.http_status,
            "attempts": exc.attempts,
            SLACK_DELIVERY_METADATA: "refused" if exc.refused else "failed",
            ALERT_KEYS_METADATA: MetadataValue.json(list(exc.keys)),
        },
    )


def _ledger_failure(exc: LedgerIncomplete, names: Mapping[str, str]) -> Failure:
    """Some keys could not be claimed (their finding was not sent) or recorded (sent, left
    ``sending``: a later run may repeat it, saying so). The others went out and are recorded."""
    not_sent = [f for f in exc.failures if f.stage == "claim"]
    unrecorded = [f for f in exc.failures if f.stage == "record"]
    parts = []
    if not_sent:
        parts.append("not sent: " + "; ".join(f"{names.get(f.key, f.key)} ({f.error})" for f in not_sent))
    if unrecorded:
        parts.append(
            "sent but not recorded, may be repeated with a warning: "
            + "; ".join(f"{names.get(f.key, f.key)} ({f.error})" for f in unrecorded)
        )
    done = len(exc.delivery.keys) - len(unrecorded)
    return Failure(
        f"The alert ledger refused {len(exc.failures)} alert key(s), {'; '.join(parts)}. "
        f"The other {done} key(s) were {exc.delivery.status} and recorded.",
        allow_retries=False,
        metadata={"failed_keys": MetadataValue.json([f.key for f in exc.failures])},
    )


def delivery_metadata(delivery: Delivery, alert: Alert) -> dict[str, object]:
    metadata: dict[str, object] = {
        "delivery": delivery.status,
        "alert_keys": MetadataValue.json(list(delivery.keys)),
        "skipped_keys": MetadataValue.json(list(delivery.skipped_keys)),
        "late": delivery.late,
        "possible_repeat": delivery.possible_repeat,
    }
    if alert.metadata_for is not None:
        metadata.update(alert.metadata_for(delivery.keys))
    if delivery.result is not None:
        metadata.update(delivery.result.to_metadata())
    return metadata


def _log_delivery(context: OpExecutionContext, delivery: Delivery) -> None:
    if delivery.result is not None:
        context.log.info(f"Alert {delivery.status}: {', '.join(delivery.keys)}")
    else:
        context.log.info(
            "Nothing sent: already delivered, being delivered by another run, or no longer relevant "
            f"({', '.join(delivery.skipped_keys)})"
        )


def send_alerts(
    context: OpExecutionContext,
    kind: AlertKind,
    heliox_settings: HelioxSettings,
    heliox_db: HelioxDatabase,
    slack: SlackWebhook,
) -> None:
    """Detect, then deliver each alert once; what happened becomes the op's metadata."""
    settings = heliox_settings.get()
    engine = heliox_db.get_engine()
    now = clock.utc_now()
    config = kind.parse_config(context.op_config or {})
    run = AlertRun(engine, settings, now, config, context.instance, slack.resolved_url(), context.log)
    try:
        detection = kind.detect(run)
    except NotMaterializedError as exc:
        raise Failure(f"Cannot alert: {exc}", allow_retries=False) from None
    if not detection.alerts:
        context.log.info(detection.note)
        context.add_output_metadata({"delivery": detection.status, **detection.metadata})
        return
    metadata: dict[str, object] = dict(detection.metadata)
    for alert in detection.alerts:
        try:
            delivery = deliver_alert(
                kind, engine, slack, alert, now=now, timezone=settings.timezone, run_id=context.run_id
            )
        except AlertNotDelivered as exc:
            raise _slack_failure(exc, kind) from None
        except LedgerIncomplete as exc:
            raise _ledger_failure(exc, alert.names) from None
        _log_delivery(context, delivery)
        metadata.update(delivery_metadata(delivery, alert))
    context.add_output_metadata(metadata)


def alert_op(kind: AlertKind) -> OpDefinition:
    """The alert op of ``kind``: its name and config come from the registry entry."""

    @op(
        name=kind.op_name,
        description=kind.description,
        retry_policy=ALERT_RETRY_POLICY,
        config_schema=kind.config.to_fields_dict() if kind.config is not None else None,
    )
    def send_alert(
        context: OpExecutionContext,
        heliox_settings: HelioxSettings,
        heliox_db: HelioxDatabase,
        slack: SlackWebhook,
    ) -> None:
        send_alerts(context, kind, heliox_settings, heliox_db, slack)

    return send_alert


@functools.cache
def alert_job(kind: AlertKind) -> JobDefinition:
    """The job of ``kind``, one op, tagged with its runtime bound."""
    send = alert_op(kind)

    @job(name=kind.job_name, description=kind.description, tags=alert_tags(kind.name))
    def alert() -> None:
        send()

    return alert


def alert_jobs(kinds: Sequence[AlertKind] | None = None) -> list[JobDefinition]:
    """The jobs of every registered alert kind."""
    return [alert_job(kind) for kind in (kinds if kinds is not None else all_kinds())]
