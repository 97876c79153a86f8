"""``heliox preview``: messages computed from a demo fleet as the jobs would on a date."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from heliox_orchestration.alerts.catalog import PREVIEW_KINDS, preview_message
from heliox_orchestration.cli import cli
from heliox_orchestration.db.engine import ensure_schema, make_engine
from heliox_orchestration.ingest.demo_fleet import FleetSpec, seed_demo
from heliox_orchestration.settings import Settings
from heliox_orchestration_tests.slack_server import validate_payload

RUN_DATE = dt.date(2026, 1, 9)
NOW = dt.datetime(2026, 1, 10, 12, 30, tzinfo=dt.UTC)  # the day after RUN_DATE, at noon
SETTINGS = Settings()


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('preview') / 'heliox.db'}"
    engine = make_engine(url)
    ensure_schema(engine)
    seed_demo(engine, FleetSpec(gpus=40, days=40, end_date=NOW.date()), now=NOW)
    engine.dispose()
    return url


@pytest.fixture
def demo_engine(demo_url: str) -> Iterator[Engine]:
    engine = make_engine(demo_url)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("kind", PREVIEW_KINDS)
def test_every_preview_renders_a_payload_slack_accepts(demo_engine: Engine, kind: str) -> None:
    preview = preview_message(kind, demo_engine, SETTINGS, RUN_DATE, now=NOW)
    assert validate_payload(json.dumps(preview.message.to_payload()).encode()) is None
    assert preview.note


def test_burn_rate_below_and_above_the_threshold(demo_engine: Engine) -> None:
    below = preview_message("burn-rate", demo_engine, SETTINGS, RUN_DATE, now=NOW)
    assert not below.would_send and "within the $10,000.00 threshold" in below.note
    assert "• Date: 2026-01-09" in below.message.to_plain_text()

    low_threshold = dataclasses.replace(SETTINGS, burn_rate_threshold_usd=Decimal(100))
    above = preview_message("burn-rate", demo_engine, low_threshold, RUN_DATE, now=NOW)
    assert above.would_send
    assert above.message.to_plain_text().startswith("🔥 High Burn Rate Alert")
    assert "Top Cost Drivers (2026-01-09):" in above.message.to_plain_text()


def test_burn_rate_of_today_is_so_far_with_a_projection(demo_engine: Engine) -> None:
    text = preview_message("burn-rate", demo_engine, SETTINGS, NOW.date(), now=NOW).message.to_plain_text()
    assert "so far" in text and "Projected End of Day:" in text


def test_idle_spend_evaluates_at_the_end_of_a_past_day(demo_engine: Engine) -> None:
    preview = preview_message("idle-spend", demo_engine, SETTINGS, RUN_DATE, now=NOW)
    assert "as of 2026-01-10 00:00 UTC" in preview.note
    expected = "⚠️ Idle GPU Spend Detected" if preview.would_send else "✅ No Idle GPU Spend"
    assert preview.message.to_plain_text().startswith(expected)


def test_daily_summary_reports_the_day_before(demo_engine: Engine) -> None:
    preview = preview_message("daily-summary", demo_engine, SETTINGS, RUN_DATE, now=NOW)
    text = preview.message.to_plain_text()
    assert preview.would_send and "GPU spend of Thursday, 2026-01-08" in text
    assert "Top GPU Consumers (Yesterday):" in text and "7-Day Trend:" in text


def test_a_future_date_is_refused(demo_engine: Engine) -> None:
    with pytest.raises(ValueError, match="after today"):
        preview_message("burn-rate", demo_engine, SETTINGS, NOW.date() + dt.timedelta(days=1), now=NOW)


def test_cli_prints_text_or_the_exact_json(demo_url: str) -> None:
    runner = CliRunner()
    text = runner.invoke(
        cli, ["preview", "daily-summary", "--date", "2026-01-09", "--database-url", demo_url]
    )
    assert text.exit_code == 0, text.output
    assert (
        "📊 Heliox Daily Summary" in text.stdout and "Preview: the daily summary of 2026-01-08" in text.stdout
    )

    as_json = runner.invoke(
        cli, ["preview", "burn-rate", "--date", "2026-01-09", "--json", "--database-url", demo_url]
    )
    assert as_json.exit_code == 0, as_json.output
    payload = json.loads(as_json.stdout)
    assert payload["blocks"][0]["type"] == "header" and payload["text"]
    assert "Preview:" in as_json.stderr


def test_cli_refuses_a_future_date() -> None:
    result = CliRunner().invoke(cli, ["preview", "idle-spend", "--date", "2999-01-01"])
    assert result.exit_code == 2 and "after today" in result.stderr
