"""Sensors and alert jobs on a real test instance, real databases and the loopback Slack server:
one alert per day and level, silent backfills, nothing lost, nothing sent twice."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
from dagster import DagsterInstance, SkipReason, build_run_status_sensor_context, build_schedule_context
from sqlalchemy import Engine

from heliox_orchestration.alerts import ledger
from heliox_orchestration.alerts.delivery import deliver
from heliox_orchestration.alerts.messages import connection_test_message
from heliox_orchestration.definitions import build_defs
from heliox_orchestration.resources.slack import SlackDeliveryError, SlackWebhook
from heliox_orchestration_tests.automation_env import (
    NOW,
    TODAY,
    Heliox,
    keys_of,
    make_heliox,
    requests_of,
)
from heliox_orchestration_tests.crafted import hourly, insert
from heliox_orchestration_tests.slack_server import FakeSlackWebhook, Reply

MIDNIGHT = dt.datetime(2026, 1, 9, tzinfo=dt.UTC)


@pytest.fixture
def heliox(sqlite_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch) -> Heliox:
    return make_heliox(sqlite_engine, slack_server, monkeypatch)


def test_burn_rate_sensor_one_alert_per_day_and_level(heliox: Heliox) -> None:
    heliox.spend("gpu-a", MIDNIGHT, 17, "60.00")  # $1,020 of a $1,000 threshold
    heliox.refresh_today()

    first = heliox.tick("burn_rate_sensor")
    assert keys_of(requests_of(first)) == [f"burn-rate:{TODAY}:100"]

    # The same day refreshed again, still at the same level: nothing more.
    heliox.refresh_today()
    again = heliox.tick("burn_rate_sensor", first.cursor)
    assert requests_of(again) == []

    # A restarted sensor keeps its cursor: still nothing.
    assert requests_of(heliox.tick("burn_rate_sensor", again.cursor)) == []

    # Escalation past 150% of the threshold: one more.
    heliox.spend("gpu-b", MIDNIGHT, 17, "30.00")  # now $1,530
    heliox.refresh_today()
    escalated = heliox.tick("burn_rate_sensor", again.cursor)
    assert keys_of(requests_of(escalated)) == [f"burn-rate:{TODAY}:150"]
    assert json.loads(escalated.cursor or "")["alerted"] == {TODAY: 150}


def test_backfilled_past_days_never_alert(heliox: Heliox) -> None:
    for day in range(1, 8):  # a week of $2,400 days before today
        heliox.spend(f"gpu-{day}", dt.datetime(2026, 1, day, tzinfo=dt.UTC), 24, "100.00")
    result = heliox.run_job("gpu_costs_refresh_job", tags=_range_tags("2026-01-01", "2026-01-07"))
    assert result.success
    assert len(result.get_asset_materialization_events()) == 7
    assert requests_of(heliox.tick("burn_rate_sensor")) == []


def _range_tags(start: str, end: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}


def test_failed_refresh_does_not_alert_on_bad_numbers(heliox: Heliox) -> None:
    heliox.spend("gpu-a", MIDNIGHT, 17, "60.00")
    heliox.spend("gpu-bad", MIDNIGHT, 2, "-5.00")  # negative cost: a blocking input check fails
    result = heliox.run_job("gpu_costs_refresh_job", partition_key=TODAY)
    assert not result.success
    assert requests_of(heliox.tick("burn_rate_sensor")) == []


def test_burn_rate_alert_job_sends_once(heliox: Heliox) -> None:
    heliox.spend("gpu-a", MIDNIGHT, 17, "60.00", model_name="<!channel>")
    heliox.refresh_today()
    (request,) = requests_of(heliox.tick("burn_rate_sensor"))
    assert heliox.run_request(request, "burn_rate_alert_job").success
    assert heliox.run_request(request, "burn_rate_alert_job").success  # a duplicate launch
    (text,) = heliox.texts()
    assert "High Burn Rate Alert" in text and "$1,020.00" in text
    payload = heliox.slack.requests[0].body.decode()
    assert "<!channel>" not in payload and "&lt;!channel&gt;" in payload
    entry = heliox.ledger()[f"burn-rate:{TODAY}:100"]
    assert entry["status"] == "sent" and entry["http_status"] == 200 and entry["payload_sha256"]


def test_escalation_message_names_the_level(heliox: Heliox) -> None:
    heliox.spend("gpu-a", MIDNIGHT, 17, "130.00")  # $2,210: straight past 200%
    heliox.refresh_today()
    (request,) = requests_of(heliox.tick("burn_rate_sensor"))
    assert request.run_key == f"burn-rate:{TODAY}:200"
    assert heliox.run_request(request, "burn_rate_alert_job").success
    (text,) = heliox.texts()
    assert "passed 200% of the threshold" in text
    # Every level the day passed is accounted for by that one message.
    assert {k for k, e in heliox.ledger().items() if e["status"] == "sent"} == {
        f"burn-rate:{TODAY}:{level}" for level in (100, 150, 200)
    }


def test_failed_delivery_is_redelivered_on_a_later_tick_and_said_late(heliox: Heliox) -> None:
    heliox.spend("gpu-a", MIDNIGHT, 17, "60.00")
    heliox.refresh_today()
    (request,) = requests_of(heliox.tick("burn_rate_sensor"))
    heliox.slack.script(*[Reply.error(500, "internal_error")] * 4)
    failed = heliox.run_request(request, "burn_rate_alert_job")
    assert not failed.success
    assert len(heliox.slack.requests) == 4
    assert heliox.ledger()[f"burn-rate:{TODAY}:100"]["status"] == "failed"

    assert requests_of(heliox.tick("alert_redelivery_sensor")) == []  # waits before retrying
    heliox.at(NOW + dt.timedelta(minutes=20))
    (redelivery,) = requests_of(heliox.tick("alert_redelivery_sensor"))
    assert heliox.run_request(redelivery).success
    assert [r.status for r in heliox.slack.requests] == [500] * 4 + [200]
    assert "Late delivery" in heliox.texts()[-1]
    assert heliox.ledger()[f"burn-rate:{TODAY}:100"]["status"] == "sent"
    assert heliox.ledger()[f"burn-rate:{TODAY}:100"]["attempts"] == 5
    assert requests_of(heliox.tick("alert_redelivery_sensor")) == []


def test_failure_no_longer_relevant_is_not_redelivered(heliox: Heliox) -> None:
    heliox.spend("gpu-a", MIDNIGHT, 17, "60.00")
    heliox.refresh_today()
    (request,) = requests_of(heliox.tick("burn_rate_sensor"))
    heliox.slack.script(*[Reply.error(503, "service_unavailable")] * 4)
    assert not heliox.run_request(request, "burn_rate_alert_job").success
    heliox.at(dt.datetime(2026, 1, 10, 1, tzinfo=dt.UTC))  # the next local day
    assert requests_of(heliox.tick("alert_redelivery_sensor")) == []


def test_permanent_refusal_fails_the_run_at_once_with_what_to_fix(heliox: Heliox) -> None:
    heliox.spend("gpu-a", MIDNIGHT, 17, "60.00")
    heliox.refresh_today()
    (request,) = requests_of(heliox.tick("burn_rate_sensor"))
    heliox.slack.script(Reply.error(404, "no_service"))
    result = heliox.run_request(request, "burn_rate_alert_job")
    assert not result.success
    assert len(heliox.slack.requests) == 1
    (failure,) = result.get_step_failure_events()
    message = failure.step_failure_data.error.message if failure.step_failure_data.error else ""
    assert "no_service" in message
    assert heliox.slack.url().split("/services/")[1] not in message


def test_idle_alert_lists_only_new_findings(heliox: Heliox) -> None:
    start = NOW - dt.timedelta(days=14)
    insert(heliox.engine, hourly("idle-h100", start, 14 * 24, "12.29", 0.5, gpu_type="H100"))
    insert(heliox.engine, hourly("idle-l4", start, 14 * 24, "0.80", 1.0, gpu_type="L4"))
    heliox.spend("busy-a100", start, 14 * 24, "4.10", gpu_type="A100")

    refresh = heliox.run_job("idle_recommendations_refresh_job")
    assert refresh.success
    idle_sensor = heliox.defs.resolve_sensor_def("idle_spend_alert_sensor")
    context = build_run_status_sensor_context(
        sensor_name="idle_spend_alert_sensor",
        dagster_event=refresh.get_run_success_event(),
        dagster_instance=heliox.instance,
        dagster_run=refresh.dagster_run,
        resources=heliox.resources(),
    )
    request = idle_sensor(context)
    assert heliox.run_request(request, "idle_spend_alert_job").success
    (text,) = heliox.texts()
    assert "Idle GPU Spend Detected" in text
    sent = heliox.ledger()
    assert set(sent) == {"idle-spend:idle-h100:2026-W02", "idle-spend:idle-l4:2026-W02"}

    # Six hours later: the same findings, already alerted within IDLE_REALERT_DAYS: nothing new.
    heliox.at(NOW + dt.timedelta(hours=6))
    quiet = heliox.run_job("idle_spend_alert_job")
    assert quiet.success and len(heliox.texts()) == 1
    # After the re-alert period they are news again.
    heliox.at(NOW + dt.timedelta(days=8))
    assert heliox.run_job("idle_spend_alert_job").success
    assert len(heliox.texts()) == 2


def test_daily_summary_follows_a_successful_refresh(heliox: Heliox) -> None:
    for day in range(1, 9):
        heliox.spend(f"gpu-{day}", dt.datetime(2026, 1, day, tzinfo=dt.UTC), 24, "10.00")
    schedule = heliox.defs.resolve_schedule_def("daily_summary_schedule")
    context = build_schedule_context(
        scheduled_execution_time=NOW.replace(hour=9), repository_def=heliox.defs.get_repository_def()
    )
    tick = schedule.evaluate_tick(context)
    (refresh_request,) = tick.run_requests or []
    refresh = heliox.run_request(refresh_request, "daily_summary_refresh_job")
    assert refresh.success
    context = build_run_status_sensor_context(
        sensor_name="daily_summary_sensor",
        dagster_event=refresh.get_run_success_event(),
        dagster_instance=heliox.instance,
        dagster_run=refresh.dagster_run,
        resources=heliox.resources(),
    )
    request = heliox.defs.resolve_sensor_def("daily_summary_sensor")(context)
    assert heliox.run_request(request, "daily_summary_job").success
    assert heliox.run_request(request, "daily_summary_job").success
    (text,) = heliox.texts()
    assert "Heliox Daily Summary" in text
    assert heliox.ledger()["daily-summary:2026-01-08"]["status"] == "sent"


def test_alert_sensors_leave_refreshes_of_heliox_run_alone(heliox: Heliox) -> None:
    """`heliox run` runs the alert job after its refresh itself: no second alert run."""
    refresh = heliox.run_job("idle_recommendations_refresh_job", tags={"heliox/started_by": "heliox run"})
    assert refresh.success
    for name in ("idle_spend_alert_sensor", "daily_summary_sensor"):
        context = build_run_status_sensor_context(
            sensor_name=name,
            dagster_event=refresh.get_run_success_event(),
            dagster_instance=heliox.instance,
            dagster_run=refresh.dagster_run,
            resources=heliox.resources(),
        )
        result = heliox.defs.resolve_sensor_def(name)(context)
        assert isinstance(result, SkipReason), name
        assert "heliox run" in (result.skip_message or ""), name


def test_run_failure_sensor_posts_one_message(heliox: Heliox) -> None:
    heliox.spend("gpu-bad", MIDNIGHT, 2, "-5.00")
    failed = heliox.run_job("gpu_costs_refresh_job", partition_key=TODAY)
    assert not failed.success
    sensor = heliox.defs.resolve_sensor_def("run_failure_slack_sensor")
    for _ in range(2):  # evaluated twice for the same run: still one message
        context = build_run_status_sensor_context(
            sensor_name="run_failure_slack_sensor",
            dagster_event=failed.get_run_failure_event(),
            dagster_instance=heliox.instance,
            dagster_run=failed.dagster_run,
            resources=heliox.resources(),
        ).for_run_failure()
        sensor(context)
    (text,) = heliox.texts()
    assert "Heliox Run Failed" in text and "gpu_costs_refresh_job" in text


def test_stale_data_alerts_once_per_gap(heliox: Heliox) -> None:
    heliox.spend("gpu-a", MIDNIGHT, 8, "1.00")  # newest hour 07:00, now 17:00: 9 hours old
    result = heliox.tick("stale_data_sensor")
    (request,) = requests_of(result)
    assert request.run_key == "stale-data:2026-01-09T07:00:00+00:00"
    assert requests_of(heliox.tick("stale_data_sensor", result.cursor)) == []
    assert heliox.run_request(request, "stale_data_alert_job").success
    assert "GPU Cost Data Is Stale" in heliox.texts()[0]

    heliox.spend("gpu-a", MIDNIGHT + dt.timedelta(hours=8), 8, "1.00")  # data arrives again
    assert requests_of(heliox.tick("stale_data_sensor", result.cursor)) == []
    heliox.at(NOW.replace(hour=23))  # outside the checking hours (8-20 local)
    assert requests_of(heliox.tick("stale_data_sensor")) == []


def test_preview_mode_records_previewed_and_never_blocks_a_real_send(
    sqlite_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    heliox = make_heliox(sqlite_engine, slack_server, monkeypatch)
    monkeypatch.delenv("SLACK_WEBHOOK_URL")
    heliox.defs = build_defs(heliox.settings)
    heliox.spend("gpu-a", MIDNIGHT, 17, "60.00")
    heliox.refresh_today()
    (request,) = requests_of(heliox.tick("burn_rate_sensor"))
    result = heliox.run_request(request, "burn_rate_alert_job")
    assert result.success and heliox.slack.requests == []
    assert heliox.ledger()[f"burn-rate:{TODAY}:100"]["status"] == "previewed"
    (materialization,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = materialization.step_output_data.metadata
    assert "High Burn Rate Alert" in str(metadata["slack_preview"].value)

    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack_server.url())
    heliox.defs = build_defs(heliox.settings)
    assert heliox.run_request(request, "burn_rate_alert_job").success
    assert len(heliox.slack.requests) == 1


@pytest.mark.postgres
def test_concurrent_sends_of_one_key_on_postgres_reach_slack_once(
    postgres_engine: Engine, slack_server: FakeSlackWebhook
) -> None:
    slack_server.script(Reply.hang(0.5))  # a slow Slack widens the race window
    slack = SlackWebhook(webhook_url=slack_server.url())
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def send() -> None:
        barrier.wait()
        delivery = deliver(
            postgres_engine,
            slack,
            ["daily-summary:2026-01-08"],
            connection_test_message(),
            alert_type="daily-summary",
            relevant_until=NOW + dt.timedelta(days=1),
            now=NOW,
            timezone="UTC",
        )
        outcomes.append(delivery.status)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["sent"] + ["skipped"] * 5
    assert len(slack_server.requests) == 1


def test_500_then_recover_delivers_exactly_one_message(
    any_engine: Engine, slack_server: FakeSlackWebhook
) -> None:
    slack = SlackWebhook(webhook_url=slack_server.url(), backoff_seconds=0.01)
    slack_server.script(*[Reply.error(500, "internal_error")] * 4)
    args = dict(alert_type="daily-summary", relevant_until=NOW + dt.timedelta(days=1), timezone="UTC")
    with pytest.raises(SlackDeliveryError):
        deliver(any_engine, slack, ["daily-summary:2026-01-08"], connection_test_message(), now=NOW, **args)
    later = NOW + dt.timedelta(minutes=5)
    delivered = deliver(
        any_engine, slack, ["daily-summary:2026-01-08"], connection_test_message(), now=later, **args
    )
    assert delivered.status == "sent" and not delivered.late
    again = deliver(
        any_engine, slack, ["daily-summary:2026-01-08"], connection_test_message(), now=later, **args
    )
    assert again.status == "skipped"
    assert [r.status for r in slack_server.requests] == [500] * 4 + [200]
    (entry,) = ledger.list_entries(any_engine)
    assert entry["status"] == "sent" and entry["attempts"] == 5


def test_instance_event_log_never_holds_the_webhook(heliox: Heliox) -> None:
    heliox.spend("gpu-a", MIDNIGHT, 17, "60.00")
    heliox.refresh_today()
    (request,) = requests_of(heliox.tick("burn_rate_sensor"))
    heliox.slack.script(Reply.error(403, "action_prohibited"))
    heliox.run_request(request, "burn_rate_alert_job")
    secret = heliox.slack.url().split("/services/")[1]
    instance: DagsterInstance = heliox.instance
    for run in instance.get_runs():
        for record in instance.all_logs(run.run_id):
            assert secret not in str(record)
        assert secret not in json.dumps(run.run_config)
    for entry in ledger.list_entries(heliox.engine):
        assert secret not in str(entry)


def test_failed_idle_alert_is_redelivered_once_even_across_a_week_boundary(heliox: Heliox) -> None:
    # Sunday 2026-01-11 23:00 UTC: ISO week 2; the redelivery runs in week 3.
    sunday = dt.datetime(2026, 1, 11, 23, tzinfo=dt.UTC)
    heliox.at(sunday)
    insert(heliox.engine, hourly("idle-h100", sunday - dt.timedelta(days=14), 14 * 24, "12.29", 0.5))
    assert heliox.run_job("idle_recommendations_refresh_job").success
    heliox.slack.script(*[Reply.error(503, "service_unavailable")] * 4)
    assert not heliox.run_job("idle_spend_alert_job").success
    assert heliox.ledger()["idle-spend:idle-h100:2026-W02"]["status"] == "failed"

    heliox.at(sunday + dt.timedelta(hours=2))
    (request,) = requests_of(heliox.tick("alert_redelivery_sensor"))
    assert heliox.run_request(request).success
    assert len(heliox.texts()) == 1 and "Late delivery" in heliox.texts()[0]
    statuses = {k: e["status"] for k, e in heliox.ledger().items()}
    assert statuses == {"idle-spend:idle-h100:2026-W02": "sent", "idle-spend:idle-h100:2026-W03": "sent"}
    assert requests_of(heliox.tick("alert_redelivery_sensor")) == []
