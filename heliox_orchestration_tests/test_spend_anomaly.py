"""Spend anomalies on crafted series whose answer is known: a doubling team the fixed threshold
misses, a weekly pattern that is not an anomaly, a partial-day spike, both thresholds; and the
alert from the refresh through the sensors to Slack, exactly once per destination."""

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
from heliox_orchestration.alerts.mutes import add_mute
from heliox_orchestration.alerts.spend_messages import spend_anomaly_message
from heliox_orchestration.costs.anomaly_store import (
    evaluate_spend_anomalies,
    load_anomaly_evaluation,
    write_anomaly_evaluation,
)
from heliox_orchestration.costs.spend_series import load_spend_series
from heliox_orchestration.costs.summary import burn_rate_status
from heliox_orchestration.db.schema import gpu_usage_hourly
from heliox_orchestration.detections.anomaly import (
    RECENT,
    WEEKDAY,
    Anomaly,
    Baseline,
    ResourceDriver,
    find_anomalies,
    median_micros,
)
from heliox_orchestration.settings import Settings
from heliox_orchestration_tests.automation_env import NOW, TODAY, requests_of
from heliox_orchestration_tests.crafted import hourly, insert
from heliox_orchestration_tests.routed import CHANNELS, routed_heliox
from heliox_orchestration_tests.slack_server import FakeSlackWebhook, Reply, validate_payload

TZ = "America/New_York"
SETTINGS = Settings(timezone=TZ)  # burn-rate threshold $10,000, ANOMALY_PCT 50, ANOMALY_MIN_USD 500
DAY = dt.date(2026, 1, 9)  # a Friday; NOW is 12:00 there


def local(day: dt.date, hour: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), ZoneInfo(TZ)).astimezone(dt.UTC)


def daily(
    engine: Engine,
    resource: str,
    first: dt.date,
    last: dt.date,
    hourly_cost: str,
    *,
    hours: int = 24,
    team: str | None = "llm",
    model: str | None = "GPT-4",
    skip_weekends: bool = False,
) -> None:
    """``hours`` hourly rows from local midnight of each day ``first``..``last``."""
    rows = []
    day = first
    while day <= last:
        if not (skip_weekends and day.weekday() >= 5):
            rows += hourly(resource, local(day), hours, hourly_cost, 50.0, team=team, model_name=model)
        day += dt.timedelta(days=1)
    insert(engine, rows)


def keys_of(anomalies: list[Anomaly] | tuple[Anomaly, ...]) -> set[tuple[str, str]]:
    return {(a.dimension, a.value) for a in anomalies}


HISTORY = DAY - dt.timedelta(days=35)
YESTERDAY = DAY - dt.timedelta(days=1)


def test_a_doubling_team_under_the_fixed_threshold_is_an_anomaly(any_engine: Engine) -> None:
    """$800 -> $1,600 a day: the $10,000 threshold never sees it, the anomaly rule does."""
    daily(any_engine, "prod-1", HISTORY, DAY, "200", team="prod", model="GPT-4")  # $4,800/day
    daily(any_engine, "rs-1", HISTORY, DAY, "33.333333", team="research", model="alphafold")
    daily(any_engine, "rs-2", DAY, DAY, "33.333333", team="research", model="alphafold")
    after_day = local(DAY + dt.timedelta(days=1), 1)
    evaluation = evaluate_spend_anomalies(any_engine, DAY, SETTINGS, after_day)
    assert evaluation.baseline_kind == WEEKDAY and evaluation.partial_until is None
    assert keys_of(evaluation.anomalies) == {("team", "research"), ("model", "alphafold")}
    team = next(a for a in evaluation.anomalies if a.dimension == "team")
    assert team.current_usd == Decimal("1599.999984") and team.baseline_usd == Decimal("799.999992")
    assert team.excess_pct == 100
    assert team.baseline_days == tuple(DAY - dt.timedelta(weeks=w) for w in (4, 3, 2, 1))
    assert [d.resource_id for d in team.drivers] == ["rs-2"]  # rs-1 spent as usual
    # The fleet: +$800 is 14% of $5,600, not an anomaly; nor over the burn-rate threshold.
    assert ("total", "all") not in keys_of(evaluation.anomalies)
    assert not burn_rate_status(any_engine, DAY, SETTINGS, after_day).is_over
    # Stored and read back exactly.
    write_anomaly_evaluation(any_engine, evaluation, after_day)
    assert load_anomaly_evaluation(any_engine, DAY, TZ) == evaluation


def test_a_weekly_pattern_is_not_an_anomaly(any_engine: Engine) -> None:
    """Weekdays at $2,400, weekends idle-ish at $240: Monday after a weekend is no spike."""
    monday = dt.date(2026, 1, 12)
    first = monday - dt.timedelta(days=35)
    daily(any_engine, "batch", first, monday, "100", skip_weekends=True)
    weekend = [d for d in (first + dt.timedelta(days=n) for n in range(36)) if d.weekday() >= 5]
    for day in weekend:
        daily(any_engine, "batch", day, day, "10")
    evaluation = evaluate_spend_anomalies(any_engine, monday, SETTINGS, local(monday + dt.timedelta(days=1)))
    assert evaluation.baseline_kind == WEEKDAY and evaluation.anomalies == ()
    assert "same weekday" in evaluation.baseline_note
    # The same Monday against the previous 14 days (as a young fleet would) is no spike either:
    # the median of 10 weekdays and 4 weekend days is a weekday's spend.
    data = load_spend_series(any_engine, monday, TZ)
    recent = Baseline(RECENT, tuple(monday - dt.timedelta(days=n) for n in range(14, 0, -1)))
    assert find_anomalies(monday, data.series, recent, Decimal(50), Decimal(500)) == []
    # But a weekday's spend on a Saturday is: against previous Saturdays it is ten times as much.
    saturday = monday + dt.timedelta(days=5)
    daily(any_engine, "batch", saturday, saturday, "100")
    spike = evaluate_spend_anomalies(any_engine, saturday, SETTINGS, local(saturday + dt.timedelta(days=1)))
    assert ("total", "all") in keys_of(spike.anomalies)


def test_both_thresholds_must_hold() -> None:
    day = dt.date(2026, 1, 9)
    baseline = Baseline(WEEKDAY, tuple(day - dt.timedelta(weeks=w) for w in (4, 3, 2, 1)))

    def series(before: int, now: int) -> dict[dt.date, int]:
        return {**{d: before * 10**6 for d in baseline.days}, day: now * 10**6}

    found = find_anomalies(
        day,
        {
            ("team", "small"): series(100, 400),  # +300 %, but only +$300
            ("team", "large"): series(5000, 6000),  # +$1,000, but only +20 %
            ("team", "exact"): series(1000, 1500),  # +50 % and +$500: both hold, exactly
            ("team", "new"): series(0, 600),  # from nothing: +$600, no finite percent
        },
        baseline,
        Decimal(50),
        Decimal(500),
    )
    assert keys_of(found) == {("team", "exact"), ("team", "new")}
    new = next(a for a in found if a.value == "new")
    assert new.excess_pct is None
    message = spend_anomaly_message(found, TZ)
    assert validate_payload(json.dumps(message.to_payload()).encode()) is None
    assert "new spend: the baseline is $0.00" in message.to_plain_text()
    assert "inf" not in message.to_plain_text().lower() and "nan" not in message.to_plain_text().lower()
    assert median_micros([4, 1, 3, 2]) == 3 and median_micros([1, 2]) == 2 and median_micros([5]) == 5


def test_a_partial_day_spike_is_caught_before_the_day_ends(any_engine: Engine) -> None:
    """By noon the team has spent what it usually spends in a day: against the whole days it
    looks normal, against the same hours it is double."""
    daily(any_engine, "rs-1", HISTORY, YESTERDAY, "50", team="research", model="alphafold")
    insert(any_engine, hourly("rs-1", local(DAY), 12, "100", 50.0, team="research", model_name="alphafold"))
    evaluation = evaluate_spend_anomalies(any_engine, DAY, SETTINGS, NOW)
    assert evaluation.partial_until == local(DAY, 12)
    team = next(a for a in evaluation.anomalies if a.dimension == "team")
    assert (team.current_usd, team.baseline_usd) == (Decimal(1200), Decimal(600))
    text = spend_anomaly_message(evaluation.anomalies, TZ).to_plain_text()
    assert "00:00-12:00 (America/New_York)" in text and "Spend so far: $1,200.00 vs baseline $600.00" in text
    assert "Team research" in text and "Above baseline by: $600.00 (+100.0%)" in text


def test_a_young_fleet_uses_the_previous_14_days_and_says_so(any_engine: Engine) -> None:
    daily(any_engine, "rs-1", DAY - dt.timedelta(days=14), YESTERDAY, "50", team="research")
    daily(any_engine, "rs-1", DAY, DAY, "100", team="research")
    evaluation = evaluate_spend_anomalies(any_engine, DAY, SETTINGS, local(DAY + dt.timedelta(days=1)))
    assert evaluation.baseline_kind == RECENT
    assert len(evaluation.anomalies[0].baseline_days) == 14
    assert "previous 14 days" in spend_anomaly_message(evaluation.anomalies, TZ).to_plain_text()
    # Less than a week of history: no baseline, nothing alerts, and the evaluation says why.
    too_young = evaluate_spend_anomalies(any_engine, DAY - dt.timedelta(days=9), SETTINGS, NOW)
    assert too_young.anomalies == () and "not enough history" in too_young.baseline_note


def test_the_message_stays_within_block_kit_limits() -> None:
    long = "<!channel>" + "x" * 400
    anomalies = [
        Anomaly(
            DAY,
            "team",
            f"{long}{i}",
            Decimal("123456789.123456"),
            Decimal("1.5"),
            WEEKDAY,
            (DAY,) * 4,
            local(DAY, 12),
            tuple(ResourceDriver(long * 2, Decimal(9), Decimal(1)) for _ in range(3)),
        )
        for i in range(12)
    ]
    message = spend_anomaly_message(anomalies, TZ, team=long, dashboard_url="https://heliox.example/x")
    assert validate_payload(json.dumps(message.to_payload()).encode()) is None
    assert "<!channel>" not in json.dumps(message.to_payload())
    assert "...and 7 more" in message.to_plain_text()


def test_the_alert_runs_from_the_refresh_to_each_destination_exactly_once(
    any_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """research (routed, copy_to_default) doubles by noon: its channel and the default get one
    message each; burn rate stays quiet; a second run and a second tick send nothing."""
    heliox = routed_heliox(
        any_engine,
        slack_server,
        monkeypatch,
        tmp_path,
        timezone=TZ,
        burn_rate_threshold_usd=Decimal(10000),
    )
    daily(any_engine, "prod-1", HISTORY, YESTERDAY, "300", team="prod", model="GPT-4")
    insert(any_engine, hourly("prod-1", local(DAY), 12, "300", 50.0, team="prod", model_name="GPT-4"))
    daily(any_engine, "rs-1", HISTORY, YESTERDAY, "50", team="research", model="alphafold")
    for rid in ("rs-1", "rs-2"):
        insert(any_engine, hourly(rid, local(DAY), 12, "50", 50.0, team="research", model_name="alphafold"))
    heliox.refresh_today(TODAY)
    assert requests_of(heliox.tick("burn_rate_sensor")) == []
    tick = heliox.tick("spend_anomalies_sensor")
    (request,) = requests_of(tick)
    assert request.partition_key == TODAY
    refresh = heliox.run_request(request, "spend_anomalies_refresh_job")
    assert refresh.success
    alert_request = heliox.after_success("spend_anomaly_alert_sensor", refresh)
    assert isinstance(alert_request, RunRequest)
    assert heliox.run_request(alert_request, "spend_anomaly_alert_job").success
    by_path = {p: [r for r in slack_server.requests if r.path == p] for p in CHANNELS.values()}
    assert len(by_path[CHANNELS["research"]]) == 1 and by_path[CHANNELS["research"]][0].status == 200
    defaults = by_path[CHANNELS["default"]]
    assert len(defaults) == 1 and defaults[0].status == 200
    assert by_path[CHANNELS["ml-platform"]] == []
    team_text = by_path[CHANNELS["research"]][0].json["text"]
    assert team_text.startswith("📈 GPU Spend Anomaly: Team research on 2026-01-09 is $1,200.00 so far")
    # The default channel also has the model's spike; the fleet's +$600 is only +17 %.
    assert "Model alphafold" in defaults[0].json["text"] + json.dumps(defaults[0].json["blocks"])
    assert set(heliox.ledger()) == {
        "spend-anomaly@research:2026-01-09:team:research",
        "spend-anomaly:2026-01-09:team:research",
        "spend-anomaly:2026-01-09:model:alphafold",
    }
    # Exactly once: the same alert again, and the next tick, send nothing more.
    assert heliox.run_request(alert_request, "spend_anomaly_alert_job").success
    assert requests_of(heliox.tick("spend_anomalies_sensor", cursor=tick.cursor)) == []
    assert len(slack_server.requests) == 2
    # A refresh the sensor did not launch (a backfill) never alerts.
    backfill = heliox.run_job("spend_anomalies_refresh_job", partition_key="2026-01-02")
    assert isinstance(heliox.after_success("spend_anomaly_alert_sensor", backfill), SkipReason)
    # The preview shows the same spikes from the database.
    preview = preview_message("spend-anomaly", any_engine, replace(heliox.settings), DAY, NOW)
    assert preview.would_send and preview.message is not None
    assert "Team research" in preview.message.to_plain_text()


def test_a_bad_row_in_the_history_blocks_the_anomalies_alone(
    sqlite_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    heliox = routed_heliox(sqlite_engine, slack_server, monkeypatch, tmp_path, timezone=TZ)
    daily(sqlite_engine, "rs-1", HISTORY, YESTERDAY, "50", team="research")
    insert(sqlite_engine, hourly("rs-1", local(DAY), 12, "100", 50.0, team="research"))
    insert(sqlite_engine, hourly("bad", local(DAY - dt.timedelta(days=10)), 1, "-12.29", 50.0))
    heliox.refresh_today(TODAY)  # today's rows are fine: the burn-rate path goes on
    (request,) = requests_of(heliox.tick("spend_anomalies_sensor"))
    refresh = heliox.run_request(request, "spend_anomalies_refresh_job")
    assert not refresh.success
    failure = refresh.get_step_failure_events()[0].event_specific_data.error.message
    assert "spend_anomalies 2026-01-09 was not written: 1 row with negative cost_usd" in failure
    checks = refresh.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [("valid_usage_rows", False)]
    with pytest.raises(LookupError):
        load_anomaly_evaluation(sqlite_engine, DAY, TZ)
    assert slack_server.requests == []
    # The preview applies the same rules: no message, the same refusal.
    preview = preview_message("spend-anomaly", sqlite_engine, heliox.settings, DAY, NOW)
    assert preview.blocked and not preview.would_send
    assert "spend_anomalies 2026-01-09 would not be written: 1 row with negative cost_usd" in preview.note


def test_a_failed_spike_that_went_away_is_not_redelivered(
    sqlite_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    heliox = routed_heliox(sqlite_engine, slack_server, monkeypatch, tmp_path, timezone=TZ)
    daily(sqlite_engine, "rs-1", HISTORY, YESTERDAY, "50", team="ml-platform", model="whisper")
    insert(
        sqlite_engine, hourly("rs-1", local(DAY), 12, "100", 50.0, team="ml-platform", model_name="whisper")
    )
    assert heliox.run_job("spend_anomalies_refresh_job", partition_key=TODAY).success
    slack_server.outage(Reply.error(500, "internal_error"))
    assert not heliox.run_job("spend_anomaly_alert_job").success
    failed = {k for k, e in heliox.ledger().items() if e["status"] == "failed"}
    assert failed == {
        "spend-anomaly:2026-01-09:total:all",
        "spend-anomaly@ml-platform:2026-01-09:team:ml-platform",
        "spend-anomaly:2026-01-09:model:whisper",
    }
    slack_server.outage(None)
    # The data is corrected (the hours were billed twice): the spike is gone, nothing redelivers it.
    with sqlite_engine.begin() as conn:
        conn.execute(
            gpu_usage_hourly.update()
            .where(gpu_usage_hourly.c.usage_hour >= local(DAY))
            .values(cost_usd=Decimal(50))
        )
    assert heliox.run_job("spend_anomalies_refresh_job", partition_key=TODAY).success
    assert heliox.run_job("spend_anomaly_alert_job").success
    heliox.at(NOW + dt.timedelta(minutes=6))  # past the redelivery wait
    assert requests_of(heliox.tick("alert_redelivery_sensor")) == []
    assert all(r.status == 500 for r in slack_server.requests)


def test_a_model_mute_holds_back_that_spike_only(
    sqlite_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    heliox = routed_heliox(sqlite_engine, slack_server, monkeypatch, tmp_path, timezone=TZ)
    daily(sqlite_engine, "prod-1", HISTORY, YESTERDAY, "300", team="prod", model="GPT-4")
    insert(sqlite_engine, hourly("prod-1", local(DAY), 12, "300", 50.0, team="prod", model_name="GPT-4"))
    daily(sqlite_engine, "rs-1", HISTORY, YESTERDAY, "50", team="finance", model="alphafold")
    for rid in ("rs-1", "rs-2"):
        insert(sqlite_engine, hourly(rid, local(DAY), 12, "50", 50.0, team="finance", model_name="alphafold"))
    add_mute(
        sqlite_engine,
        "spend-anomaly",
        scope="model",
        value="alphafold",
        until=NOW + dt.timedelta(days=1),
        reason="planned batch",
        by="alice",
        now=NOW,
    )
    assert heliox.run_job("spend_anomalies_refresh_job", partition_key=TODAY).success
    assert heliox.run_job("spend_anomaly_alert_job").success
    (request,) = slack_server.requests  # finance has no channel: its spike goes to the default
    assert request.json["text"].startswith("📈 GPU Spend Anomaly: Team finance on 2026-01-09")
    assert "alphafold" not in json.dumps(request.json)
    assert set(heliox.ledger()) == {"spend-anomaly:2026-01-09:team:finance"}
