"""``heliox send-test`` against the loopback Slack."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from heliox_orchestration.cli import cli
from heliox_orchestration_tests.slack_server import FakeSlackWebhook, Reply

SECRET = "Zq7SECRETtoken42"


def send_test(url: str | None) -> tuple[int, str, str]:
    env = {"SLACK_WEBHOOK_URL": url}
    result = CliRunner().invoke(cli, ["send-test"], env=env)
    return result.exit_code, result.stdout, result.stderr


def test_send_test_posts_test_from_heliox(slack_server: FakeSlackWebhook) -> None:
    code, out, err = send_test(slack_server.url())
    assert code == 0, err
    assert "Posting 'Test from Heliox' to http://127.0.0.1/services/****...wxyz" in out
    assert "HTTP 200 ok: delivered (1 attempt" in out
    (request,) = slack_server.requests
    assert request.json["text"] == "Test from Heliox"


@pytest.mark.parametrize(
    ("status", "slack_error"), [(404, "no_service"), (410, "channel_is_archived"), (403, "action_prohibited")]
)
def test_send_test_reports_a_refusal_with_exit_2(
    slack_server: FakeSlackWebhook, status: int, slack_error: str
) -> None:
    slack_server.script(Reply.error(status, slack_error))
    code, out, err = send_test(slack_server.url(f"/services/T0/B0/{SECRET}"))
    assert code == 2
    assert f"HTTP {status} {slack_error}" in err and "****..." in err
    assert SECRET not in out + err


def test_send_test_without_a_url_exits_2() -> None:
    code, _, err = send_test(None)
    assert code == 2 and "SLACK_WEBHOOK_URL is not set" in err


def test_send_test_with_a_bad_url_exits_2_without_echoing_it() -> None:
    code, out, err = send_test(f"http://hooks.slack.com/services/T0/B0/{SECRET}")
    assert code == 2 and "SLACK_WEBHOOK_URL is not a usable Slack webhook URL" in err
    assert SECRET not in out + err
