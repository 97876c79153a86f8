"""The Slack webhook resource against a loopback Slack: every fault, pacing, preview, URL checks.

The real slack-sdk ``WebhookClient`` talks HTTP to ``slack_server.FakeSlackWebhook``; nothing of
slack-sdk is mocked. Backoffs and timeouts are shortened through the resource's fields.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable

import pytest
from dagster import build_init_resource_context, get_dagster_logger

from heliox_orchestration.alerts.messages import connection_test_message, section
from heliox_orchestration.resources import slack as slack_module
from heliox_orchestration.resources.definitions import heliox_resources
from heliox_orchestration.resources.slack import (
    PREVIEW_LINE,
    SlackConfigError,
    SlackDeliveryError,
    SlackSendResult,
    SlackWebhook,
    enabled_line,
    payload_sha256,
    validate_webhook_url,
)
from heliox_orchestration.resources.slack_types import retry_after_seconds
from heliox_orchestration.secrets import mask_webhook_url, redact_webhook_url
from heliox_orchestration.settings import Settings
from heliox_orchestration_tests.slack_server import FakeSlackWebhook, Reply

MakeSlack = Callable[..., SlackWebhook]


@pytest.fixture
def make_slack(slack_server: FakeSlackWebhook) -> MakeSlack:
    """The resource pointed at the loopback server, with test-sized waits."""

    def make(**overrides: object) -> SlackWebhook:
        config: dict = {
            "webhook_url": slack_server.url(),
            "timeout_seconds": 1,
            "backoff_seconds": 0.01,
            "min_interval_seconds": 0,
            **overrides,
        }
        return SlackWebhook(**config)

    return make


def send_timed(slack: SlackWebhook) -> tuple[float, SlackSendResult | SlackDeliveryError]:
    started = time.monotonic()
    try:
        outcome: SlackSendResult | SlackDeliveryError = slack.send(connection_test_message())
    except SlackDeliveryError as exc:
        outcome = exc
    return time.monotonic() - started, outcome


def test_delivers_and_reports_the_result(make_slack: MakeSlack, slack_server: FakeSlackWebhook) -> None:
    message = connection_test_message()
    result = make_slack().send(message)
    assert result.status == "sent" and result.attempts == 1 and result.http_status == 200
    assert result.webhook == "http://127.0.0.1/services/****...wxyz"
    assert result.payload_sha256 == payload_sha256(message.to_payload())
    (request,) = slack_server.requests
    assert request.json == message.to_payload()
    assert request.headers["Content-Type"].startswith("application/json")
    metadata = result.to_metadata()
    assert metadata["slack_status"].value == "sent" and metadata["slack_http_status"].value == 200


@pytest.mark.parametrize(
    "fault",
    [
        Reply.error(500, "internal_error"),
        Reply.error(502, "bad_gateway"),
        Reply.error(503, "service_unavailable"),
        Reply.error(504, "gateway_timeout"),
        Reply.rate_limited("0"),
    ],
    ids=["500", "502", "503", "504", "429"],
)
def test_transient_errors_are_retried_until_delivered(
    make_slack: MakeSlack, slack_server: FakeSlackWebhook, fault: Reply
) -> None:
    slack_server.script(fault, fault)
    elapsed, result = send_timed(make_slack())
    assert isinstance(result, SlackSendResult)
    assert result.attempts == 3 and result.http_status == 200
    assert [r.status for r in slack_server.requests] == [fault.status, fault.status, 200]
    assert elapsed < 2


def test_gives_up_after_three_retries(make_slack: MakeSlack, slack_server: FakeSlackWebhook) -> None:
    slack_server.script(*[Reply.error(503, "service_unavailable")] * 10)
    elapsed, error = send_timed(make_slack())
    assert isinstance(error, SlackDeliveryError)
    assert error.attempts == 4 and error.http_status == 503 and error.retryable
    assert len(slack_server.requests) == 4
    assert "HTTP 503 service_unavailable" in str(error) and "after 4 attempts" in str(error)
    assert elapsed < 2


def test_backoff_is_exponential(make_slack: MakeSlack, slack_server: FakeSlackWebhook) -> None:
    slack_server.script(*[Reply.error(500, "internal_error")] * 4)
    send_timed(make_slack(backoff_seconds=0.1))
    times = [r.received_at for r in slack_server.requests]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # 0.1, 0.2, 0.4 s, each plus up to 25% jitter.
    for gap, base in zip(gaps, (0.1, 0.2, 0.4), strict=True):
        assert base <= gap < base * 1.25 + 0.15


def test_429_waits_for_retry_after(make_slack: MakeSlack, slack_server: FakeSlackWebhook) -> None:
    slack_server.script(Reply.rate_limited("1"))
    elapsed, result = send_timed(make_slack())
    assert isinstance(result, SlackSendResult) and result.attempts == 2
    first, second = slack_server.requests
    assert second.received_at - first.received_at >= 1.0
    assert elapsed < 2


def test_429_asking_for_a_long_wait_fails_at_once(
    make_slack: MakeSlack, slack_server: FakeSlackWebhook
) -> None:
    slack_server.script(Reply.rate_limited("120"))
    elapsed, error = send_timed(make_slack())
    assert isinstance(error, SlackDeliveryError)
    assert error.attempts == 1 and error.http_status == 429 and error.retryable
    assert "Retry-After" in str(error)
    assert elapsed < 1


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = dt.datetime(2026, 1, 9, 12, 0, tzinfo=dt.UTC)
    assert retry_after_seconds({"Retry-After": ["3"]}) == 3
    assert retry_after_seconds({"retry-after": "1.5"}) == 1.5
    assert retry_after_seconds({"Retry-After": "Fri, 09 Jan 2026 12:00:30 GMT"}, now=now) == 30
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({}) is None


@pytest.mark.parametrize(
    ("status", "slack_error", "advice"),
    [
        (400, "invalid_payload", "Heliox bug"),
        (403, "action_prohibited", "Slack admin"),
        (404, "channel_not_found", "create a new Incoming Webhook"),
        (404, "no_service", "SLACK_WEBHOOK_URL"),
        (410, "channel_is_archived", "unarchive"),
        (403, "invalid_token", "revoked"),
        (418, "something_new", "SLACK_WEBHOOK_URL"),
    ],
)
def test_permanent_refusals_raise_at_once_with_what_to_fix(
    make_slack: MakeSlack, slack_server: FakeSlackWebhook, status: int, slack_error: str, advice: str
) -> None:
    slack_server.script(Reply.error(status, slack_error))
    elapsed, error = send_timed(make_slack())
    assert isinstance(error, SlackDeliveryError)
    assert error.attempts == 1 and error.http_status == status and error.slack_error == slack_error
    assert not error.retryable
    assert len(slack_server.requests) == 1
    assert f"HTTP {status} {slack_error}" in str(error) and advice in str(error)
    assert "http://127.0.0.1/services/****...wxyz" in str(error)
    assert elapsed < 1


def test_the_server_refuses_what_slack_refuses(make_slack: MakeSlack, slack_server: FakeSlackWebhook) -> None:
    """The loopback server validates like Slack, so the resource reports Slack's own verdict."""
    too_long_header = {"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}

    class Raw:
        def to_payload(self) -> dict:
            return {"text": "x", "blocks": [too_long_header]}

        def to_plain_text(self) -> str:
            return "x"

    with pytest.raises(SlackDeliveryError, match="HTTP 400 invalid_blocks") as raised:
        make_slack().send(Raw())
    assert raised.value.attempts == 1


def test_unexpected_success_body_is_not_success(
    make_slack: MakeSlack, slack_server: FakeSlackWebhook
) -> None:
    slack_server.script(Reply(status=200, body="<html>captive portal</html>"))
    with pytest.raises(SlackDeliveryError, match="unexpected answer"):
        make_slack().send(connection_test_message())


def test_read_timeout_is_retried(make_slack: MakeSlack, slack_server: FakeSlackWebhook) -> None:
    slack_server.script(Reply.hang(5))
    elapsed, result = send_timed(make_slack(timeout_seconds=1))
    assert isinstance(result, SlackSendResult) and result.attempts == 2
    assert len(slack_server.requests) == 2
    assert 1 <= elapsed < 2.5


def test_timeouts_on_every_attempt_give_up(make_slack: MakeSlack, slack_server: FakeSlackWebhook) -> None:
    slack_server.script(*[Reply.hang(5)] * 3)
    elapsed, error = send_timed(make_slack(timeout_seconds=1, max_retries=1))
    assert isinstance(error, SlackDeliveryError)
    assert error.attempts == 2 and error.http_status is None and error.retryable
    assert "could not be reached after 2 attempts" in str(error) and "timed out" in str(error)
    # Nothing of urllib's exception, which may quote the URL, is chained to ours.
    assert error.__context__ is None and error.__cause__ is None
    assert 2 <= elapsed < 3.5


def test_connection_refused_is_retried_then_raised() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    slack = SlackWebhook(
        webhook_url=f"http://127.0.0.1:{port}/services/T1/B1/refusedrefusedrefused",
        backoff_seconds=0.01,
        min_interval_seconds=0,
    )
    elapsed, error = send_timed(slack)
    assert isinstance(error, SlackDeliveryError) and error.attempts == 4
    assert "Connection refused" in str(error) and "refusedrefused" not in str(error)
    assert elapsed < 2


def test_each_failed_attempt_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """One line per retry, Heliox's (attempt, reason, wait); slack-sdk's own "Failed to send a
    request" line about the same failure is dropped. The last failure is the error raised."""
    caplog.set_level(logging.WARNING)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    slack = SlackWebhook(
        webhook_url=f"http://127.0.0.1:{port}/services/T1/B1/refusedrefusedrefused",
        max_retries=2,
        backoff_seconds=0.01,
        min_interval_seconds=0,
    )
    _, error = send_timed(slack)
    assert isinstance(error, SlackDeliveryError) and error.attempts == 3
    lines = [record.getMessage() for record in caplog.records]
    assert [line.split(" failed")[0] for line in lines] == [
        "Slack webhook http://127.0.0.1/services/****...used: attempt 1",
        "Slack webhook http://127.0.0.1/services/****...used: attempt 2",
    ]
    assert all("Connection refused" in line and "retrying in" in line for line in lines)


def test_the_default_policy_is_the_spec() -> None:
    slack = SlackWebhook()
    assert (slack.timeout_seconds, slack.max_retries, slack.min_interval_seconds) == (10, 3, 1.0)


# --- one message per second per webhook ------------------------------------------------------


def test_sends_to_one_webhook_are_a_second_apart(slack_server: FakeSlackWebhook) -> None:
    slack = SlackWebhook(webhook_url=slack_server.url())
    for _ in range(3):
        slack.send(connection_test_message())
    times = [r.received_at for r in slack_server.requests]
    assert len(times) == 3
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(times))


def test_concurrent_sends_from_threads_are_paced_too(slack_server: FakeSlackWebhook) -> None:
    # Separate resource instances, as separate ops in one process would have.
    slacks = [SlackWebhook(webhook_url=slack_server.url()) for _ in range(4)]
    threads = [threading.Thread(target=s.send, args=(connection_test_message(),)) for s in slacks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    times = sorted(r.received_at for r in slack_server.requests)
    assert len(times) == 4
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(times))
    assert times[-1] - times[0] >= 3.0


def test_pacing_is_per_webhook(slack_server: FakeSlackWebhook) -> None:
    other = SlackWebhook(webhook_url=slack_server.url("/services/T2/B2/anotheranotheranother"))
    SlackWebhook(webhook_url=slack_server.url()).send(connection_test_message())
    started = time.monotonic()
    other.send(connection_test_message())
    assert time.monotonic() - started < 0.5


# --- preview mode ----------------------------------------------------------------------------


def test_preview_mode_sends_nothing_and_returns_the_text(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    message = connection_test_message()
    result = SlackWebhook().send(message)
    assert result.status == "previewed" and result.attempts == 0 and result.http_status is None
    assert result.preview_text == message.to_plain_text()
    assert result.webhook == "(not set)"
    assert result.to_metadata()["slack_preview"].value == message.to_plain_text()
    assert "Test from Heliox" in caplog.text and "not sent" in caplog.text


def test_blank_url_is_preview_mode() -> None:
    assert SlackWebhook(webhook_url="  ").send(connection_test_message()).status == "previewed"


def test_start_up_lines() -> None:
    url = "https://hooks.slack.com/services/T000/B000/abcdefghijklmnopwxyz"
    assert (
        enabled_line(url)
        == "Slack notifications enabled (webhook https://hooks.slack.com/services/****...wxyz)"
    )
    assert PREVIEW_LINE.startswith("Slack notifications disabled (preview mode)")


# --- URL validation and masking --------------------------------------------------------------

SECRET = "Zq7SECRETtoken42"


@pytest.mark.parametrize(
    "url",
    [
        f"ftp://hooks.slack.com/services/T0/B0/{SECRET}",
        f"http://hooks.slack.com/services/T0/B0/{SECRET}",
        f"hooks.slack.com/services/T0/B0/{SECRET}",
        "https://hooks.slack.com",
        "https:///services/x",
        f"https://user:{SECRET}@hooks.slack.com/services/T0/B0/x",
        f"https://hooks.slack.com/services/T0/B0/{SECRET} extra",
        f"https://hooks.slack.com:99999/services/T0/B0/{SECRET}",
        f"https://hooks.slack.com/services/T0/B0/{SECRET}é",
        f"http://10.0.0.1/services/T0/B0/{SECRET}",
    ],
)
def test_a_bad_url_is_a_config_error_that_names_the_variable_not_the_value(url: str) -> None:
    with pytest.raises(SlackConfigError) as raised:
        validate_webhook_url(url)
    assert "SLACK_WEBHOOK_URL" in str(raised.value)
    assert SECRET not in str(raised.value) and "T0/B0" not in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.slack.com/services/T0/B0/x",
        "http://127.0.0.1:8080/services/x",
        "http://127.9.9.9/services/x",
        "http://localhost/x",
        "http://[::1]:9000/x",
    ],
)
def test_good_urls_pass(url: str) -> None:
    assert validate_webhook_url(f"  {url}\n") == url


def test_unset_url_is_none() -> None:
    assert validate_webhook_url(None) is None and validate_webhook_url("") is None


def test_a_bad_url_stops_definitions_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"http://hooks.slack.com/services/T0/B0/{SECRET}")
    with pytest.raises(SlackConfigError, match="SLACK_WEBHOOK_URL") as raised:
        heliox_resources(Settings())
    assert SECRET not in str(raised.value)


def test_resource_is_wired_through_envvar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"https://hooks.slack.com/services/T0/B0/{SECRET}")
    slack = heliox_resources(Settings())["slack"]
    assert isinstance(slack, SlackWebhook)
    assert slack.resolved_url() == f"https://hooks.slack.com/services/T0/B0/{SECRET}"
    monkeypatch.delenv("SLACK_WEBHOOK_URL")
    unset = heliox_resources(Settings())["slack"]
    assert isinstance(unset, SlackWebhook) and unset.webhook_url is None


def test_mask_shows_only_the_last_four_characters() -> None:
    url = "https://hooks.slack.com/services/TFAKE/BFAKE/not-a-real-token-wxyz"
    assert mask_webhook_url(url) == "https://hooks.slack.com/services/****...wxyz"
    assert mask_webhook_url(url + "\n") == "https://hooks.slack.com/services/****...wxyz"
    assert mask_webhook_url(None) == "(not set)"
    # A secret too short to keep 12 characters hidden shows no tail at all.
    assert (
        mask_webhook_url("https://hooks.slack.com/services/abcd")
        == "https://hooks.slack.com/services/****..."
    )


def test_redact_removes_the_url_and_any_piece_of_its_path() -> None:
    url = f"https://hooks.slack.com/services/T0AAAAAA/B0BBBBBB/{SECRET}"
    text = f"POST {url} failed; path /services/T0AAAAAA/B0BBBBBB/{SECRET}; token {SECRET}; T0AAAAAA"
    redacted = redact_webhook_url(text, url)
    assert SECRET not in redacted and "T0AAAAAA" not in redacted and "B0BBBBBB" not in redacted
    assert "https://hooks.slack.com/services/****...en42" in redacted


def test_sections_can_be_sent_as_a_message(make_slack: MakeSlack, slack_server: FakeSlackWebhook) -> None:
    """Any ``SlackMessage``, not only the alerts, goes through the resource."""
    from heliox_orchestration.alerts.messages import SlackMessage

    make_slack().send(SlackMessage.build("hello", [section("*hello*")]))
    assert slack_server.requests[0].json["blocks"][0]["text"]["text"] == "*hello*"


def test_preview_mode_is_announced_once_per_process_outside_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sensor ticks build the resource every few seconds; the terminal hears preview mode once."""
    monkeypatch.delenv("SLACK_WEBHOOK_URL", raising=False)
    monkeypatch.setattr(slack_module, "_ANNOUNCED", set())
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = get_dagster_logger()
    logger.addHandler(handler)
    try:
        for _ in range(3):
            SlackWebhook().setup_for_execution(build_init_resource_context())
    finally:
        logger.removeHandler(handler)
    assert lines.count(PREVIEW_LINE) == 1
