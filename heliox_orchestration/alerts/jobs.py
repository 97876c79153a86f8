"""The alert jobs: one job per registered alert kind, each running the one alert op.

The op asks the kind's detection what to send (a plain function over the materialized cost
assets), drops what a mute holds back (``alerts/mutes.py``; a kind off in ``ALERTS_ENABLED``
sends nothing), then hands each alert to ``delivery`` with the webhook of its destination
(``alerts/routes.py``), which claims its ledger keys so that nothing is sent twice. One
destination's Slack failing does not hold back the others: the run fails after trying them all.
Alert runs carry the spec's 5-minute limit (``dagster/max_runtime``, enforced by run monitoring)
and a retry policy for transient failures; Slack's permanent refusals are not retried.
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
from heliox_orchestration.alerts import ledger
from heliox_orchestration.alerts.catalog import all_kinds
from heliox_orchestration.alerts.delivery import AlertNotDelivered, Delivery, LedgerIncomplete
from heliox_orchestration.alerts.detection import Alert, AlertRun, deliver_alert
from heliox_orchestration.alerts.kinds import ALERT_KEYS_METADATA, SLACK_DELIVERY_METADATA, AlertKind
from heliox_orchestration.alerts.mutes import (
    active_mutes,
    hold_back,
    muted_summary,
    record_muted,
    switched_off,
)
from heliox_orchestration.alerts.routes import webhook_for
from heliox_orchestration.costs.common import NotMaterializedError
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.resources.settings import HelioxSettings
from heliox_orchestration.resources.slack import SlackRoutes

ALERT_MAX_RUNTIME_SECONDS = 300
ALERT_RETRY_POLICY = RetryPolicy(max_retries=2, delay=20, backoff=Backoff.EXPONENTIAL)


def alert_tags(kind: str) -> dict[str, str]:
    # heliox/alert: the UI's run filter by alert kind. No concurrency limit uses it: the ledger
    # keeps racing runs to one message (deploy/dagster.yaml).
    return {"dagster/max_runtime": str(ALERT_MAX_RUNTIME_SECONDS), "heliox/alert": kind}


def _slack_failure(failures: Sequence[tuple[AlertNotDelivered, str]], kind: AlertKind) -> Failure:
    """The Slack resource has already retried; the run fails visibly and the redelivery sensor
    sends each alert again while it is relevant, so the op does not retry. A permanent refusal
    waits for another webhook in the variable its destination reads."""
    texts = []
    for exc, variable in failures:
        if exc.refused:
            then = (
                f"it is not sent to this webhook again; once {variable} is fixed it goes out "
                f"while still relevant ({kind.relevance}). `heliox alerts` shows it as refused"
            )
        else:
            then = f"alert_redelivery_sensor sends it again in 5-6 minutes, while relevant ({kind.relevance})"
        texts.append(f"{exc} Then: {then}.")
    first = failures[0][0]
    return Failure(
        " ".join(texts),
        allow_retries=False,
        metadata={
            "http_status": first.http_status,
            "attempts": sum(exc.attempts for exc, _ in failures),
            SLACK_DELIVERY_METADATA: "refused" if all(exc.refused for exc, _ in failures) else "failed",
            ALERT_KEYS_METADATA: MetadataValue.json([k for exc, _ in failures for k in exc.keys]),
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


def _prefixed(metadata: Mapping[str, object], team: str | None) -> dict[str, object]:
    """The default destination's metadata as it always was; a team's under ``team/<name>/``."""
    return dict(metadata) if team is None else {f"team/{team}/{k}": v for k, v in metadata.items()}


def send_alerts(
    context: OpExecutionContext,
    kind: AlertKind,
    heliox_settings: HelioxSettings,
    heliox_db: HelioxDatabase,
    slack: SlackRoutes,
) -> None:
    """Detect, drop what is muted, then deliver each alert once to its destination; what
    happened becomes the op's metadata."""
    settings = heliox_settings.get()
    off = switched_off(kind.name, settings)
    if off is not None:
        context.log.info(f"{off} Nothing sent.")
        context.add_output_metadata({"delivery": "disabled"})
        return
    engine = heliox_db.get_engine()
    now = clock.utc_now()
    config = kind.parse_config(context.op_config or {})
    run = AlertRun(engine, settings, now, config, context.instance, slack.resolved_url(), context.log)
    try:
        detection = kind.detect(run)
    except NotMaterializedError as exc:
        raise Failure(f"Cannot alert: {exc}", allow_retries=False) from None
    detection, muted = hold_back(detection, active_mutes(engine, now, kind.name))
    metadata: dict[str, object] = dict(detection.metadata)
    if muted:
        record_muted(engine, kind.name, muted, now)
        # A muted alert is not redelivered either.
        ledger.expire(engine, [key for key, _ in muted], now)
        context.log.info(
            f"Muted, not sent: {'; '.join(f'{k} ({m.describe(settings.timezone)})' for k, m in muted)}"
        )
        metadata["muted"] = MetadataValue.json(muted_summary(muted, settings.timezone))
    if not detection.alerts:
        note = f"All {len(muted)} alert key(s) muted." if muted else detection.note
        context.log.info(note)
        context.add_output_metadata({"delivery": "muted" if muted else detection.status, **metadata})
        return
    slack_failures: list[tuple[AlertNotDelivered, str]] = []
    ledger_failures: list[Failure] = []
    for alert in detection.alerts:
        webhook = webhook_for(slack, kind, alert.team, settings)
        try:
            delivery = deliver_alert(
                kind, engine, webhook, alert, now=now, timezone=settings.timezone, run_id=context.run_id
            )
        except AlertNotDelivered as exc:
            slack_failures.append((exc, webhook.variable))
            continue
        except LedgerIncomplete as exc:
            ledger_failures.append(_ledger_failure(exc, alert.names))
            delivery = exc.delivery
        _log_delivery(context, delivery)
        if alert.on_delivered is not None and delivery.result is not None:
            alert.on_delivered(delivery)
        metadata.update(_prefixed(delivery_metadata(delivery, alert), alert.team))
    if ledger_failures:
        raise ledger_failures[0]
    if slack_failures:
        raise _slack_failure(slack_failures, kind)
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
        slack: SlackRoutes,
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
