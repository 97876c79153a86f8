"""`heliox run` and `heliox alerts` on the embedded defaults, as a newcomer meets them."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from heliox_orchestration.cli import cli
from heliox_orchestration_tests.slack_server import FakeSlackWebhook


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster-home"
    home.mkdir()
    (home / "dagster.yaml").write_text((Path(__file__).parents[1] / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def test_run_daily_summary_previews_on_embedded_defaults_then_lists_it(dagster_home: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["run", "daily-summary"])
    assert first.exit_code == 0, first.output
    assert "daily_summary_refresh_job: succeeded" in first.output
    assert "Preview mode" in first.output and "📊 Heliox Daily Summary" in first.output
    assert "Top GPU Consumers (Yesterday):" in first.output

    again = runner.invoke(cli, ["run", "daily-summary"])
    assert again.exit_code == 0, again.output
    assert "already sent or previewed" in again.output

    listing = runner.invoke(cli, ["alerts"])
    assert listing.exit_code == 0, listing.output
    assert "previewed" in listing.output and "daily-summary:" in listing.output
    # The runs are in the instance, for the UI.
    assert any((dagster_home / "history").rglob("*.db"))


def test_run_daily_summary_sends_once_with_a_webhook(
    dagster_home: Path, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack_server.url())
    runner = CliRunner()
    result = runner.invoke(cli, ["run", "daily-summary"])
    assert result.exit_code == 0, result.output
    assert "Delivery: sent" in result.output
    assert len(slack_server.requests) == 1
    assert "Heliox Daily Summary" in slack_server.requests[0].json["text"]
    assert slack_server.url().split("/services/")[1] not in result.output


def test_alerts_on_an_empty_ledger_and_bad_arguments(dagster_home: Path) -> None:
    runner = CliRunner()
    assert "No alerts in the ledger" in runner.invoke(cli, ["alerts", "--since", "2026-01-01"]).output
    bad = runner.invoke(cli, ["alerts", "--since", "yesterday"])
    assert bad.exit_code == 2 and "--since" in bad.output
    assert runner.invoke(cli, ["run", "everything"]).exit_code == 2
