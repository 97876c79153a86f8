"""Monthly budgets on a crafted series whose answer is known: $120 a day against a $3,000 budget
in America/New_York, across the DST change (March 8) and the month boundary. The forecast
crosses on March 1 (before any actual level), 50 % on the 13th, 80 % on the 20th, 100 % on the
25th; each exactly once, and April starts over."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from dagster import RunRequest, SkipReason
from sqlalchemy import Engine

from heliox_orchestration.alerts.catalog import preview_message
from heliox_orchestration.alerts.messages import daily_summary_message
from heliox_orchestration.alerts.spend_messages import budget_message
from heliox_orchestration.costs.budget_spend import budgets
from heliox_orchestration.costs.summary import load_cost_summary
from heliox_orchestration.detections.budget import budget_status, levels_crossed
from heliox_orchestration.routing import RoutingError, parse_routing
from heliox_orchestration.settings import Settings, SettingsError, load_settings
from heliox_orchestration_tests.automation_env import make_heliox
from heliox_orchestration_tests.crafted import insert, row
from heliox_orchestration_tests.slack_server import FakeSlackWebhook, validate_payload

TZ = "America/New_York"
SETTINGS = Settings(timezone=TZ, monthly_budget_usd=Decimal(3000))


def late_evening(day: dt.date) -> dt.datetime:
    """23:00 local: in UTC, already the next day (04:00 or 05:00), so UTC days would be wrong."""
    return dt.datetime.combine(day, dt.time(23), ZoneInfo(TZ)).astimezone(dt.UTC)


def spend_daily(engine: Engine, first: dt.date, last: dt.date, cost: str = "120", team: str = "llm") -> None:
    days = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
    insert(engine, [row(f"gpu-{team}", late_evening(d), cost, team=team) for d in days])


def test_the_forecast_crosses_before_the_actual_levels_across_the_month_boundary(any_engine: Engine) -> None:
    spend_daily(any_engine, dt.date(2026, 2, 20), dt.date(2026, 3, 31))
    march_1 = budgets(
        any_engine,
        dt.date(2026, 3, 1),
        SETTINGS,
        late_evening(dt.date(2026, 3, 1)) + dt.timedelta(minutes=30),
    )
    status = march_1.statuses[None]
    # February's spend is not March's; its last 7 days make the trailing mean.
    assert status.month_to_date_usd == Decimal(120) and status.daily_mean_usd == Decimal(120)
    assert status.days_left == 30 and status.forecast_usd == Decimal(3720) and status.forecast_over
    assert levels_crossed(status, (50, 80, 100)) == []
    crossings = {}
    for n in range(1, 32):
        day = dt.date(2026, 3, n)
        now = late_evening(day) + dt.timedelta(minutes=30)
        level = levels_crossed(budgets(any_engine, day, SETTINGS, now).statuses[None], (50, 80, 100))
        if level and level[-1] not in crossings:
            crossings[level[-1]] = n
    assert crossings == {50: 13, 80: 20, 100: 25}


def test_each_level_alerts_once_per_month_through_slack(
    any_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    spend_daily(any_engine, dt.date(2026, 2, 20), dt.date(2026, 4, 2))
    heliox = make_heliox(any_engine, slack_server, monkeypatch, settings=SETTINGS)
    sent: dict[str, list[str]] = {}
    for day in [dt.date(2026, 3, 1) + dt.timedelta(days=n) for n in range(33)]:
        heliox.at(late_evening(day) + dt.timedelta(minutes=30))
        before = len(slack_server.requests)
        assert heliox.run_job("budget_alert_job").success
        texts = [r.json["text"] for r in slack_server.requests[before:]]
        assert all(r.status == 200 for r in slack_server.requests[before:])
        if texts:
            sent[day.isoformat()] = texts
    assert list(sent) == ["2026-03-01", "2026-03-13", "2026-03-20", "2026-03-25", "2026-04-01"]
    assert sent["2026-03-01"] == [
        "🔮 GPU Budget Forecast Alert: the fleet's March 2026 forecast $3,720.00 exceeds the $3,000.00 budget"
    ]
    assert sent["2026-03-13"] == [
        "💰 GPU Budget Alert: the fleet's March 2026 spend $1,560.00 passed 50% of the $3,000.00 budget"
    ]
    assert "passed 100%" in sent["2026-03-25"][0]
    assert sent["2026-04-01"][0].startswith(
        "🔮 GPU Budget Forecast Alert: the fleet's April 2026 forecast $3,600.00"
    )
    assert set(heliox.ledger()) == {
        "budget:2026-03:forecast",
        "budget:2026-03:50",
        "budget:2026-03:80",
        "budget:2026-03:100",
        "budget:2026-04:forecast",
    }
    body = slack_server.requests[0].json
    assert "Forecast = month to date + trailing 7-day daily mean $120.00 × 30 days left" in json.dumps(
        body["blocks"], ensure_ascii=False
    )


def test_a_team_budget_from_the_routing_file_alerts_in_its_channel(
    sqlite_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(
        "teams:\n  research:\n    webhook_env: SLACK_WEBHOOK_URL_RS\n    monthly_budget_usd: 1000\n"
    )
    team_path = "/services/TRS/BRS/research-budget-secret"
    monkeypatch.setenv("SLACK_WEBHOOK_URL_RS", slack_server.url(team_path))
    settings = load_settings({"TIMEZONE": TZ, "HELIOX_ROUTING_FILE": str(path)})
    assert settings.monthly_budget_usd is None and settings.teams[0].monthly_budget_usd == Decimal(1000)
    spend_daily(sqlite_engine, dt.date(2026, 3, 1), dt.date(2026, 3, 5), cost="120", team="research")
    spend_daily(sqlite_engine, dt.date(2026, 3, 1), dt.date(2026, 3, 5), cost="900", team="prod")
    heliox = make_heliox(sqlite_engine, slack_server, monkeypatch, settings=settings)
    heliox.at(late_evening(dt.date(2026, 3, 5)) + dt.timedelta(minutes=30))
    assert heliox.run_job("budget_alert_job").success
    # 50 % reached, and at $120 a day the month ends far over: both are news, in its channel only.
    actual, forecast = slack_server.requests
    assert {actual.path, forecast.path} == {team_path}
    assert actual.json["text"].startswith(
        "💰 GPU Budget Alert: team research's March 2026 spend $600.00 passed 50%"
    )
    assert forecast.json["text"].startswith(
        "🔮 GPU Budget Forecast Alert: team research's March 2026 forecast"
    )
    assert set(heliox.ledger()) == {"budget@research:2026-03:50", "budget@research:2026-03:forecast"}


def test_budget_settings_are_validated_in_one_line() -> None:
    with pytest.raises(SettingsError, match=r"^MONTHLY_BUDGET_USD='lots' is not a number"):
        load_settings({"MONTHLY_BUDGET_USD": "lots"})
    with pytest.raises(SettingsError, match=r"^BUDGET_ALERT_LEVELS='50,x' must be comma-separated"):
        load_settings({"BUDGET_ALERT_LEVELS": "50,x"})
    with pytest.raises(SettingsError, match="ANOMALY_PCT=0 is out of range"):
        load_settings({"ANOMALY_PCT": "0"})
    assert load_settings({"BUDGET_ALERT_LEVELS": "100, 75"}).budget_alert_levels == (75, 100)
    with pytest.raises(RoutingError, match="team 'rs': monthly_budget_usd: expected dollars"):
        parse_routing({"teams": {"rs": {"webhook_env": "X", "monthly_budget_usd": "-5"}}})


def test_budget_messages_stay_within_block_kit_limits() -> None:
    status = budget_status(
        dt.date(2026, 3, 31), {dt.date(2026, 3, 31): 10**18}, {dt.date(2026, 3, 31)}, Decimal("0.01"), TZ
    )
    for level in (None, 50, 100):
        message = budget_message(status, level, team="<!channel>" + "t" * 300)
        payload = json.dumps(message.to_payload())
        assert validate_payload(payload.encode()) is None and "<!channel>" not in payload
        assert "inf" not in message.to_plain_text().lower()


def test_preview_budget_on_a_fleet_without_a_budget_still_shows_the_month(any_engine: Engine) -> None:
    spend_daily(any_engine, dt.date(2026, 2, 20), dt.date(2026, 3, 5))
    now = late_evening(dt.date(2026, 3, 5)) + dt.timedelta(minutes=30)
    unset = preview_message(
        "budget", any_engine, replace(SETTINGS, monthly_budget_usd=None), dt.date(2026, 3, 5), now
    )
    assert not unset.would_send and unset.message is not None
    assert "Month to date: $600.00" in unset.message.to_plain_text() and "forecast $3,720.00" in unset.note
    preview = preview_message("budget", any_engine, SETTINGS, dt.date(2026, 3, 5), now)
    assert preview.would_send and "Forecast" in preview.message.to_plain_text()  # type: ignore[union-attr]


def test_the_daily_summary_gains_the_month_to_date_line(
    sqlite_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    spend_daily(sqlite_engine, dt.date(2026, 2, 20), dt.date(2026, 3, 5))
    heliox = make_heliox(sqlite_engine, slack_server, monkeypatch, settings=SETTINGS)
    heliox.at(dt.datetime(2026, 3, 6, 15, tzinfo=dt.UTC))  # 10:00 in New York
    assert heliox.run_job("daily_summary_refresh_job", partition_key="2026-03-05").success
    stored = load_cost_summary(sqlite_engine, dt.date(2026, 3, 5))
    # Mar 1-5 at $120; the 7 days ending Mar 5 average $120; 26 days left: $600 + $3,120.
    assert (stored.month_to_date_usd, stored.monthly_budget_usd, stored.month_forecast_usd) == (
        Decimal(600),
        Decimal(3000),
        Decimal(3720),
    )
    assert heliox.run_job("daily_summary_job", run_config=_summary_config("2026-03-05")).success
    (request,) = slack_server.requests
    assert request.status == 200
    line = "Month to date: $600.00 of $3,000.00 budget, forecast $3,720.00"
    assert line in json.dumps(request.json["blocks"], ensure_ascii=False)
    assert request.json["text"].endswith("; month to date: $600.00 of $3,000.00 budget, forecast $3,720.00")
    # Without a budget, nothing of it: the spec's message is unchanged.
    plain = daily_summary_message(replace(stored, monthly_budget_usd=None)).to_plain_text()
    assert "Month to date" not in plain


def _summary_config(report_date: str) -> dict:
    return {"ops": {"send_daily_summary": {"config": {"report_date": report_date}}}}


def test_the_budget_sensor_follows_todays_refresh_and_a_bad_row_holds_it_back(
    sqlite_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    spend_daily(sqlite_engine, dt.date(2026, 2, 20), dt.date(2026, 3, 12))
    heliox = make_heliox(sqlite_engine, slack_server, monkeypatch, settings=SETTINGS)
    heliox.at(late_evening(dt.date(2026, 3, 13)) - dt.timedelta(hours=1))
    insert(sqlite_engine, [row("gpu-llm", late_evening(dt.date(2026, 3, 13)) - dt.timedelta(hours=2), "120")])
    refresh = heliox.refresh_today("2026-03-13")
    request = heliox.after_success("budget_alert_sensor", refresh)
    assert isinstance(request, RunRequest)
    assert heliox.run_request(request, "budget_alert_job").success
    assert [r.json["text"] for r in slack_server.requests] == [
        "💰 GPU Budget Alert: the fleet's March 2026 spend $1,560.00 passed 50% of the $3,000.00 budget",
        "🔮 GPU Budget Forecast Alert: the fleet's March 2026 forecast $3,720.00 exceeds the "
        "$3,000.00 budget",
    ]
    assert set(heliox.ledger()) == {"budget:2026-03:50", "budget:2026-03:forecast"}
    # A refresh of a day long past is a backfill: no budget alert after it.
    backfill = heliox.run_job("gpu_costs_refresh_job", partition_key="2026-03-01")
    assert isinstance(heliox.after_success("budget_alert_sensor", backfill), SkipReason)
    # A bad row in the month holds the budgets back, and only them.
    insert(sqlite_engine, [row("bad", late_evening(dt.date(2026, 3, 2)) - dt.timedelta(hours=5), "-3")])
    result = heliox.run_job("budget_alert_job")
    assert result.success and len(slack_server.requests) == 2
    logs = [e.user_message for e in heliox.instance.all_logs(result.run_id) if "held back" in e.user_message]
    assert logs and "negative cost_usd" in logs[0]
