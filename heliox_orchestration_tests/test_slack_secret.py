"""The webhook URL's secret part never shows: not in logs, output, exceptions or Dagster's storage.

A small Dagster job sends through the resource, configured with ``EnvVar`` as in production,
against the loopback Slack, with success, a refusal, timeouts and retried server errors; then
every place the URL could leak to is searched, the instance's files on disk included.
"""

# No ``from __future__ import annotations``: Dagster reads the op's annotations at runtime.
import datetime as dt
import logging
import traceback
from decimal import Decimal
from pathlib import Path

import pytest
from dagster import EnvVar, OpExecutionContext, instance_for_test, job, op
from dagster_shared.serdes import serialize_value

from heliox_orchestration.alerts.messages import burn_rate_message
from heliox_orchestration.reports import BurnRateStatus
from heliox_orchestration.resources.slack import SlackDeliveryError, SlackWebhook
from heliox_orchestration_tests.slack_server import FakeSlackWebhook, Reply

SECRET_PARTS = ("TSECRET7Q", "BSECRET4K", "hunter2-heliox-secret-token")
SECRET_PATH = "/services/TSECRET7Q/BSECRET4K/hunter2-heliox-secret-tokenwxyz"
MASKED = "http://127.0.0.1/services/****...wxyz"


@op
def send_burn_rate_alert(context: OpExecutionContext, slack: SlackWebhook) -> str:
    status = BurnRateStatus(dt.date(2026, 1, 9), Decimal("15234.56"), Decimal("10000"))
    result = slack.send(burn_rate_message(status))
    context.add_output_metadata(result.to_metadata())
    return result.status


@job
def burn_rate_alert_job() -> None:
    send_burn_rate_alert()


def slack_resource() -> SlackWebhook:
    return SlackWebhook(
        webhook_url=EnvVar("SLACK_WEBHOOK_URL"),
        timeout_seconds=1,
        max_retries=1,
        backoff_seconds=0.01,
        min_interval_seconds=0,
    )


def assert_no_secret(where: str, text: str) -> None:
    for part in SECRET_PARTS:
        assert part not in text, f"the webhook secret {part!r} leaked into {where}"


def test_the_secret_never_leaks(
    slack_server: FakeSlackWebhook,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack_server.url(SECRET_PATH))
    caplog.set_level(logging.DEBUG)
    # At DEBUG, slack-sdk logs the URL, body and headers of every request: the mask must hold.
    caplog.set_level(logging.DEBUG, logger="heliox_orchestration.slack_sdk")
    slack_server.script(
        Reply(),  # run 1: delivered
        Reply.error(404, "no_service"),  # run 2: refused
        Reply.hang(3),  # run 3: a timeout, then a server error: given up
        Reply.error(503, "service_unavailable"),
        Reply.error(500, "internal_error"),  # run 4: retried, then delivered
    )
    run_ids: list[str] = []
    exception_texts: list[str] = []
    instance_dir = tmp_path / "dagster-home"
    instance_dir.mkdir()
    with instance_for_test(temp_dir=str(instance_dir)) as instance:
        for expected in ("sent", "no_service", "HTTP 503", "sent"):
            result = burn_rate_alert_job.execute_in_process(
                instance=instance, resources={"slack": slack_resource()}, raise_on_error=False
            )
            run_ids.append(result.run_id)
            if expected == "sent":
                assert result.success and result.output_for_node("send_burn_rate_alert") == "sent"
            else:
                assert not result.success
                failure = result.failure_data_for_node("send_burn_rate_alert")
                assert failure is not None and failure.error is not None
                assert expected in failure.error.to_string()
                exception_texts.append(failure.error.to_string())

        # The exception itself, with everything chained to it, as a caller would see it.
        slack_server.script(Reply.error(410, "channel_is_archived"))
        with pytest.raises(SlackDeliveryError) as raised:
            burn_rate_alert_job.execute_in_process(instance=instance, resources={"slack": slack_resource()})
        exception_texts.append("".join(traceback.format_exception(raised.value)))

        stored: list[str] = []
        for run_id in run_ids:
            run = instance.get_run_by_id(run_id)
            assert run is not None
            stored.append(serialize_value(run))
            stored += [serialize_value(entry) for entry in instance.all_logs(run_id)]
        event_log = "\n".join(stored)

    # The secret really was used: the requests went to the secret path.
    assert {r.path for r in slack_server.requests} == {SECRET_PATH}
    assert len(slack_server.requests) == 7
    # ...and what was logged is the masked form.
    assert f"Slack notifications enabled (webhook {MASKED})" in event_log
    assert f"Slack message sent to {MASKED}" in event_log
    assert "SLACK_WEBHOOK_URL" in event_log  # the run config names the variable only

    captured = capfd.readouterr()
    assert_no_secret("the Python logs", caplog.text)
    assert_no_secret("stdout", captured.out)
    assert_no_secret("stderr", captured.err)
    for text in exception_texts:
        assert MASKED in text
        assert_no_secret("an exception", text)
    assert_no_secret("the Dagster event log", event_log)
    for path in instance_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for part in SECRET_PARTS:
                assert part.encode() not in data, f"the webhook secret leaked into {path}"


def test_preview_mode_is_announced_and_recorded_as_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLACK_WEBHOOK_URL", raising=False)
    with instance_for_test() as instance:
        result = burn_rate_alert_job.execute_in_process(
            instance=instance, resources={"slack": SlackWebhook()}
        )
        messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert result.output_for_node("send_burn_rate_alert") == "previewed"
    assert any("Slack notifications disabled (preview mode)" in m for m in messages)
    assert any("not sent:\n🔥 High Burn Rate Alert" in m for m in messages)
    (output,) = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.step_output_data.metadata
    assert metadata["slack_status"].value == "previewed"
    assert "• Over by: $5,234.56 (52.3%)" in str(metadata["slack_preview"].value)
