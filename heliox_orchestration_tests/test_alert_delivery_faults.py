"""Alert delivery under faults, in process against real databases and the loopback Slack server:
keys that overflow, a ledger that refuses one key, a run that dies mid-send, Slack down then up,
a webhook that refuses, a run that dies after delivering. Each test backs a row of the
"What happens when" table in docs/operations.md."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from dagster import ExecuteInProcessResult, RunRequest
from sqlalchemy import Engine, text

from heliox_orchestration.alerts import ledger
from heliox_orchestration.alerts.burn_rate import burn_rate_key
from heliox_orchestration.alerts.idle_spend import idle_key
from heliox_orchestration.automation.sensors import REDELIVERY_INTERVAL_SECONDS
from heliox_orchestration.cli import cli
from heliox_orchestration.resources.slack import webhook_fingerprint
from heliox_orchestration_tests.automation_env import NOW, Heliox, make_heliox, requests_of
from heliox_orchestration_tests.crafted import engine_url, hourly, insert
from heliox_orchestration_tests.slack_server import FakeSlackWebhook, Reply

MIDNIGHT = dt.datetime(2026, 1, 9, tzinfo=dt.UTC)
BURN_KEY = burn_rate_key(dt.date(2026, 1, 9), 100)
LONG_ID = "projects/ml-prod/zones/us-central1-a/instances/" + "gpu-node-" * 21 + "h100-a"  # 242


@pytest.fixture
def heliox(sqlite_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch) -> Heliox:
    return make_heliox(sqlite_engine, slack_server, monkeypatch)


def _over_threshold(heliox: Heliox) -> None:
    heliox.spend("gpu-a", MIDNIGHT, 17, "60.00")  # $1,020 of a $1,000 threshold
    heliox.refresh_today()


def _burn_request(heliox: Heliox) -> RunRequest:
    _over_threshold(heliox)
    (request,) = requests_of(heliox.tick("burn_rate_sensor"))
    return request


def _run_fast(heliox: Heliox, request: RunRequest, job_name: str | None = None) -> ExecuteInProcessResult:
    """The requested run with the test's Slack resource: same webhook, 10 ms retry backoff."""
    return heliox.run_job(
        job_name or request.job_name or "",
        run_config=request.run_config,
        tags=request.tags,
        resources=heliox.resources(),
    )


def _idle_findings(heliox: Heliox, *resource_ids: str) -> None:
    start = NOW - dt.timedelta(days=14)
    for resource_id in resource_ids:
        insert(heliox.engine, hourly(resource_id, start, 14 * 24, "12.29", 0.5, gpu_type="H100"))
    assert heliox.run_job("idle_recommendations_refresh_job").success


def _alerts_listing(heliox: Heliox) -> str:
    result = CliRunner().invoke(cli, ["alerts"])
    assert result.exit_code == 0, result.output
    assert heliox.slack.url(heliox.webhook_path).split("/services/")[1] not in result.output
    return result.output


# --- A2: every key fits; one finding's failure never drops the others -------------------------


def test_a_255_character_resource_id_among_normal_findings(
    any_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    heliox = make_heliox(any_engine, slack_server, monkeypatch)
    longest = "r" * 255  # the longest id gpu_usage_hourly.resource_id accepts
    assert 235 < len(LONG_ID) < 255
    _idle_findings(heliox, "idle-h100", longest, LONG_ID)
    assert heliox.run_job("idle_spend_alert_job").success
    (request,) = slack_server.requests
    assert "Number of Issues: 3" in request.body.decode()
    today = dt.date(2026, 1, 9)
    expected = {idle_key(r, today) for r in ("idle-h100", longest, LONG_ID)}
    assert {k: e["status"] for k, e in heliox.ledger().items()} == dict.fromkeys(expected, "sent")
    assert all(len(k) <= 255 for k in expected)
    # The long ids are recognised as alerted: nothing is sent again within IDLE_REALERT_DAYS.
    heliox.at(NOW + dt.timedelta(hours=6))
    assert heliox.run_job("idle_spend_alert_job").success and len(slack_server.requests) == 1


_SQLITE_TRIGGERS = [
    "CREATE TRIGGER refuse_claim BEFORE INSERT ON alert_ledger WHEN NEW.alert_key LIKE '%poison-claim%' "
    "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END",
    "CREATE TRIGGER refuse_record BEFORE UPDATE ON alert_ledger WHEN NEW.alert_key LIKE '%poison-record%' "
    "AND NEW.status = 'sent' BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END",
]
_POSTGRES_TRIGGERS = [
    "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused by a test trigger'; "
    "END $$ LANGUAGE plpgsql",
    "CREATE TRIGGER refuse_claim BEFORE INSERT ON alert_ledger FOR EACH ROW "
    "WHEN (NEW.alert_key LIKE '%poison-claim%') EXECUTE FUNCTION refuse()",
    "CREATE TRIGGER refuse_record BEFORE UPDATE ON alert_ledger FOR EACH ROW "
    "WHEN (NEW.alert_key LIKE '%poison-record%' AND NEW.status = 'sent') EXECUTE FUNCTION refuse()",
]


def test_one_findings_ledger_failure_never_drops_the_others(
    any_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    heliox = make_heliox(any_engine, slack_server, monkeypatch)
    _idle_findings(heliox, "idle-h100", "poison-claim-gpu", "poison-record-gpu", "idle-a100")
    with any_engine.begin() as conn:
        for statement in _SQLITE_TRIGGERS if any_engine.dialect.name == "sqlite" else _POSTGRES_TRIGGERS:
            conn.execute(text(statement))

    result = heliox.run_job("idle_spend_alert_job")
    assert not result.success
    # One message, with every finding whose key could be claimed.
    (request,) = slack_server.requests
    body = request.body.decode()
    assert "Number of Issues: 3" in body and "poison-claim-gpu" not in body
    statuses = {k.split(":")[1]: e["status"] for k, e in heliox.ledger().items()}
    assert statuses == {"idle-h100": "sent", "idle-a100": "sent", "poison-record-gpu": "sending"}
    # The run fails visibly, naming both findings and what happened to each.
    (failure,) = result.get_step_failure_events()
    error = failure.step_failure_data.error.message if failure.step_failure_data.error else ""
    assert "not sent: resource poison-claim-gpu" in error
    assert "sent but not recorded, may be repeated with a warning: resource poison-record-gpu" in error
    assert "The other 2 key(s) were sent and recorded" in error
    # A failure that is not Slack's gets its run-failure notice.
    heliox.run_failure_tick(result.run_id)
    assert len(slack_server.requests) == 2 and "Heliox Run Failed" in heliox.texts()[-1]


# --- C9: an abandoned send is taken over, and the message says it may be a repeat -------------


def test_takeover_of_an_abandoned_send_says_it_may_be_a_repeat(heliox: Heliox) -> None:
    _over_threshold(heliox)
    stopped = NOW - dt.timedelta(minutes=11)
    claim = ledger.claim(
        heliox.engine,
        BURN_KEY,
        alert_type="burn-rate",
        relevant_until=NOW + dt.timedelta(hours=6),
        now=stopped,
        run_id="dead-run",
    )
    assert claim is not None
    ledger.count_attempt(heliox.engine, [BURN_KEY], stopped)  # the dead run's HTTP attempt

    (request,) = requests_of(heliox.tick("alert_redelivery_sensor"))
    assert heliox.run_request(request).success
    (text_,) = heliox.texts()
    assert "⚠️ Possible repeat: a run stopped while sending this alert at 16:49 (UTC)" in text_
    assert "it may already be in this channel" in text_
    assert "Late delivery" not in text_ and "could not be reached" not in text_
    entry = heliox.ledger()[BURN_KEY]
    assert entry["status"] == "sent" and entry["attempts"] == 2


_DIE_MID_SEND = """
import datetime as dt, os
from heliox_orchestration.alerts.delivery import deliver
from heliox_orchestration.alerts.messages import connection_test_message
from heliox_orchestration.db.engine import make_engine
from heliox_orchestration.resources.slack import SlackWebhook
now = dt.datetime.fromisoformat(os.environ["NOW"])
deliver(make_engine(os.environ["HELIOX_DATABASE_URL"]),
        SlackWebhook(webhook_url=os.environ["SLACK_WEBHOOK_URL"], timeout_seconds=60, max_retries=0),
        [os.environ["KEY"]], connection_test_message(), alert_type="burn-rate",
        relevant_until=now + dt.timedelta(hours=6), now=now, timezone="UTC")
"""


def test_a_process_killed_mid_send_leaves_its_attempt_counted_and_the_repeat_marked(
    heliox: Heliox, slack_server: FakeSlackWebhook
) -> None:
    _over_threshold(heliox)
    slack_server.script(Reply.hang(60))  # Slack receives the message and has not answered yet
    env = {
        **os.environ,
        "NOW": NOW.isoformat(),
        "KEY": BURN_KEY,
        "HELIOX_DATABASE_URL": engine_url(heliox.engine),
        "SLACK_WEBHOOK_URL": slack_server.url(),
    }
    worker = subprocess.Popen([sys.executable, "-c", _DIE_MID_SEND], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not slack_server.requests and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(slack_server.requests) == 1, worker.stderr.read() if worker.stderr else ""
    worker.kill()  # kill -9 mid-send
    worker.wait(timeout=10)
    entry = heliox.ledger()[BURN_KEY]
    assert entry["status"] == "sending" and entry["attempts"] == 1

    heliox.at(NOW + ledger.STALE_SENDING - dt.timedelta(seconds=1))
    assert requests_of(heliox.tick("alert_redelivery_sensor")) == []  # it might still be sending
    heliox.at(NOW + ledger.STALE_SENDING + dt.timedelta(seconds=REDELIVERY_INTERVAL_SECONDS))
    (request,) = requests_of(heliox.tick("alert_redelivery_sensor"))
    assert heliox.run_request(request).success
    assert len(slack_server.requests) == 2
    assert "Possible repeat: a run stopped while sending this alert at 17:00 (UTC)" in heliox.texts()[-1]
    entry = heliox.ledger()[BURN_KEY]
    assert entry["status"] == "sent" and entry["attempts"] == 2
    assert "sent" in _alerts_listing(heliox).splitlines()[1]


# --- C10 + C13: Slack down then up: no loop, one notice per failed run, redelivered in 5-6 min ---


def test_slack_down_then_up_delivers_each_alert_and_notice_once(
    heliox: Heliox, slack_server: FakeSlackWebhook
) -> None:
    sensor = heliox.defs.resolve_sensor_def("alert_redelivery_sensor")
    assert sensor.minimum_interval_seconds == REDELIVERY_INTERVAL_SECONDS == 60
    request = _burn_request(heliox)
    slack_server.outage(Reply.error(503, "service_unavailable"))

    # An alert run that failed because Slack failed: its alert is tracked, no notice about it.
    alert_run = _run_fast(heliox, request, "burn_rate_alert_job")
    assert not alert_run.success and len(slack_server.requests) == 4
    heliox.run_failure_tick(alert_run.run_id)
    assert len(slack_server.requests) == 4

    # Another run fails (a blocking check on yesterday): its notice cannot be delivered either.
    heliox.spend("gpu-bad", MIDNIGHT - dt.timedelta(hours=3), 2, "-5.00")
    refresh = heliox.run_job("gpu_costs_refresh_job", partition_key="2026-01-08")
    assert not refresh.success
    heliox.run_failure_tick(refresh.run_id)  # does not raise: the ledger has the notice as failed
    assert len(slack_server.requests) == 8
    notice_key = f"run-failure:{refresh.run_id}"
    assert heliox.ledger()[notice_key]["status"] == "failed"

    # Redelivery comes 5 minutes after the failure, not before; Slack is still down.
    heliox.at(NOW + dt.timedelta(minutes=5) - dt.timedelta(seconds=1))
    assert requests_of(heliox.tick("alert_redelivery_sensor")) == []
    heliox.at(NOW + dt.timedelta(minutes=5))
    retries = requests_of(heliox.tick("alert_redelivery_sensor"))
    assert sorted(r.job_name or "" for r in retries) == ["burn_rate_alert_job", "run_failure_notice_job"]
    for retry in retries:
        run = _run_fast(heliox, retry)
        assert not run.success
        heliox.run_failure_tick(run.run_id)  # neither failure produces a notice of its own
    assert len(slack_server.requests) == 16

    # Slack is back: each alert and the one notice arrive once, marked late.
    slack_server.outage(None)
    heliox.at(NOW + dt.timedelta(minutes=10))
    for retry in requests_of(heliox.tick("alert_redelivery_sensor")):
        assert _run_fast(heliox, retry).success
    texts = heliox.texts()
    assert len(texts) == 2 and all("Late delivery" in t for t in texts)
    assert sum("High Burn Rate Alert" in t for t in texts) == 1
    (notice,) = [t for t in texts if "Heliox Run Failed" in t]
    assert "gpu_costs_refresh_job" in notice
    assert {heliox.ledger()[k]["status"] for k in (BURN_KEY, notice_key)} == {"sent"}
    assert [k for k in heliox.ledger() if k.startswith("run-failure:")] == [notice_key]
    heliox.at(NOW + dt.timedelta(minutes=30))
    assert requests_of(heliox.tick("alert_redelivery_sensor")) == []


def test_no_failure_notice_when_the_run_delivered_before_its_process_died(heliox: Heliox) -> None:
    request = _burn_request(heliox)
    result = heliox.run_request(request, "burn_rate_alert_job")
    assert result.success and len(heliox.texts()) == 1
    # Run monitoring marks the run failed: its worker died after the step had delivered.
    run = heliox.instance.get_run_by_id(result.run_id)
    assert run is not None
    heliox.instance.report_run_failed(run, "Run worker process exited unexpectedly")
    heliox.run_failure_tick(result.run_id)
    assert len(heliox.slack.requests) == 1
    assert not any(k.startswith("run-failure:") for k in heliox.ledger())


# --- C11: a permanent refusal waits for a new webhook --------------------------------------


def test_a_refused_alert_is_not_retried_until_the_webhook_changes(heliox: Heliox) -> None:
    request = _burn_request(heliox)
    heliox.slack.script(Reply.error(404, "no_service"))
    result = heliox.run_request(request, "burn_rate_alert_job")
    assert not result.success and len(heliox.slack.requests) == 1
    (failure,) = result.get_step_failure_events()
    error = failure.step_failure_data.error.message if failure.step_failure_data.error else ""
    assert "no_service" in error and "it is not sent to this webhook again" in error
    entry = heliox.ledger()[BURN_KEY]
    assert entry["status"] == "failed" and entry["refused_webhook"] == webhook_fingerprint(heliox.slack.url())

    heliox.run_failure_tick(result.run_id)  # the failed run already says what to fix
    heliox.at(NOW + dt.timedelta(minutes=20))
    tick = heliox.tick("alert_redelivery_sensor")
    assert requests_of(tick) == [] and tick.skip_reason is not None
    assert "refused by the current webhook wait for SLACK_WEBHOOK_URL" in str(tick.skip_reason.skip_message)
    assert len(heliox.slack.requests) == 1
    listing = _alerts_listing(heliox)
    assert "refused" in listing and "the webhook was disabled or removed" in listing
    assert "not retried while SLACK_WEBHOOK_URL is this webhook" in listing

    # The operator puts a new webhook in place: the alert goes out, still relevant today.
    heliox.use_webhook("/services/T00000000/B11111111/YYYYYYYYYYYYYYYYYYYYabcd")
    assert "has changed since" in _alerts_listing(heliox)
    (redelivery,) = requests_of(heliox.tick("alert_redelivery_sensor"))
    assert heliox.run_request(redelivery).success
    assert heliox.slack.requests[-1].path.startswith("/services/T00000000/B11111111/")
    assert "the webhook configured then refused it" in heliox.texts()[-1]
    assert heliox.ledger()[BURN_KEY]["status"] == "sent"
    (line,) = [line for line in _alerts_listing(heliox).splitlines() if line.endswith(BURN_KEY)]
    assert " sent " in line
