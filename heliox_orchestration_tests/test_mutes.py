"""Mutes by kind, team, resource and model: sensors skip saying "muted until ... by ...: reason",
jobs drop muted alerts and say so, `heliox alerts` shows them as muted, mutes expire by
themselves; `ALERTS_ENABLED` switches kinds off; `heliox mute`, `unmute` and `mutes`."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from dagster import SensorResult, SkipReason
from sqlalchemy import Engine, func, select

from heliox_orchestration.alerts.burn_rate import BURN_RATE
from heliox_orchestration.alerts.detection import Alert, Detection, Subject
from heliox_orchestration.alerts.messages import connection_test_message
from heliox_orchestration.alerts.mutes import (
    Mute,
    MuteError,
    active_mutes,
    add_mute,
    end_mute,
    hold_back,
    muted_entries,
)
from heliox_orchestration.alerts.run_failure import notify_run_failure
from heliox_orchestration.cli import cli
from heliox_orchestration.db.alert_schema import alert_mutes
from heliox_orchestration_tests.automation_env import NOW, SETTINGS, TODAY, Heliox, make_heliox, requests_of
from heliox_orchestration_tests.crafted import engine_url, hourly, insert
from heliox_orchestration_tests.routed import (
    MIDNIGHT,
    by_channel,
    idle_check,
    idle_fleet,
    op_metadata,
    routed_heliox,
)
from heliox_orchestration_tests.slack_server import FakeSlackWebhook

REASON = "planned training run"


def mute(
    heliox: Heliox, kind: str, hours: int = 2, scope: str | None = None, value: str | None = None
) -> Mute:
    return add_mute(
        heliox.engine,
        kind,
        scope=scope,
        value=value,
        until=NOW + dt.timedelta(hours=hours),
        reason=REASON,
        by="alice",
        now=NOW,
    )


def skipped_because(tick: SensorResult) -> str:
    assert isinstance(tick.skip_reason, SkipReason), tick
    return tick.skip_reason.skip_message or ""


def test_which_alerts_a_mute_holds_back() -> None:
    until = NOW + dt.timedelta(days=1)
    team = Mute(1, "idle-spend", "team", "ml", NOW, until, REASON, "alice")
    resource = Mute(2, "idle-spend", "resource", "gpu-b", NOW, until, REASON, "bob")
    ml_a, rs_b, none_c = Subject("ml", "gpu-a", "llama"), Subject("rs", "gpu-b", None), Subject(None, "gpu-c")
    alert = Alert(["a", "b", "c"], connection_test_message(), subjects={"a": ml_a, "b": rs_b, "c": none_c})
    kept, muted = hold_back(Detection([alert]), [team, resource])
    assert [a.keys for a in kept.alerts] == [["c"]]
    assert [(key, m.mute_id) for key, m in muted] == [("a", 1), ("b", 2)]
    everything = Mute(3, "idle-spend", None, None, NOW, until, REASON, "carol")
    assert hold_back(Detection([alert]), [everything])[0].alerts == []
    assert Mute(4, "idle-spend", "model", "llama", NOW, until, REASON, "d").matches(ml_a)
    assert not everything.active(until) and everything.active(NOW)
    assert everything.describe("Europe/Berlin") == (
        "muted until 2026-01-10 18:00 (Europe/Berlin) by carol: planned training run (mute 3)"
    )


def test_a_muted_kind_skips_its_sensor_and_job_until_the_mute_expires(
    any_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    heliox = make_heliox(any_engine, slack_server, monkeypatch)
    heliox.spend("gpu-a", MIDNIGHT, 17, "60.00")  # $1,020 of $1,000
    muted = mute(heliox, "burn-rate")
    heliox.refresh_today()
    tick = heliox.tick("burn_rate_sensor")
    assert requests_of(tick) == []
    assert skipped_because(tick) == (
        f"burn-rate is muted until 2026-01-09 19:00 (UTC) by alice: {REASON} (mute {muted.mute_id})."
    )
    # Any other path (`heliox run`, a redelivery) runs the job: it drops the alert and says why.
    run = heliox.run_job("burn_rate_alert_job", run_config=BURN_RATE.run_config(day=TODAY))
    assert run.success and slack_server.requests == []
    metadata = op_metadata(run)
    assert metadata["delivery"] == "muted"
    assert [m["key"] for m in metadata["muted"]] == ["burn-rate:2026-01-09:100"]
    assert [e["alert_key"] for e in muted_entries(heliox.engine)] == ["burn-rate:2026-01-09:100"]
    assert heliox.ledger() == {}

    # The mute ends by itself: the next checked refresh alerts on what is still true.
    heliox.at(NOW + dt.timedelta(hours=2, minutes=1))
    assert active_mutes(heliox.engine, NOW + dt.timedelta(hours=2), "burn-rate") == []
    heliox.refresh_today()
    (request,) = requests_of(heliox.tick("burn_rate_sensor", tick.cursor))
    assert request.run_key == "burn-rate:2026-01-09:100"
    assert heliox.run_request(request, "burn_rate_alert_job").success
    assert len(heliox.texts()) == 1


def test_team_resource_and_model_mutes_hold_back_only_their_alerts(
    any_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    heliox = routed_heliox(any_engine, slack_server, monkeypatch, tmp_path)
    idle_fleet(heliox)
    heliox.spend("ml-train", MIDNIGHT, 17, "40.00", team="ml-platform", model_name="llama-70b")
    team = mute(heliox, "burn-rate", scope="team", value="ml-platform")
    mute(heliox, "idle-spend", scope="resource", value="ml-h100-1")
    mute(heliox, "idle-spend", scope="model", value="alphafold")

    heliox.refresh_today()
    first = heliox.tick("burn_rate_sensor")
    (burn,) = requests_of(first)
    assert burn.run_key == "burn-rate:2026-01-09:100"  # the fleet's; ml-platform's own is muted
    burn_run = heliox.run_request(burn, "burn_rate_alert_job")
    assert burn_run.success
    assert [m["key"] for m in op_metadata(burn_run)["muted"]] == [
        "burn-rate@ml-platform:2026-01-09:150",
        "burn-rate@ml-platform:2026-01-09:100",
    ]
    idle = heliox.run_request(idle_check(heliox), "idle_spend_alert_job")
    assert idle.success
    assert sorted(m["key"] for m in op_metadata(idle)["muted"]) == [
        "idle-spend:rs-a100:2026-W02",
        "idle-spend@ml-platform:ml-h100-1:2026-W02",
        "idle-spend@research:rs-a100:2026-W02",
    ]
    received = by_channel(slack_server)
    assert received["ml-platform"] == [
        "⚠️ Idle GPU Spend Detected (team ml-platform): 1 issue, $2,190.00/month potential savings"
    ]
    assert received["research"] == []  # its one finding is muted
    assert received["default"] == [
        "🔥 High Burn Rate Alert: GPU spend on 2026-01-09 is $1,048.73 so far, over the $1,000.00 "
        "threshold by $48.73 (4.9%)",
        "⚠️ Idle GPU Spend Detected: 2 issues, $949.00/month potential savings",
    ]

    # The next refresh: the fleet was alerted, ml-platform's level is muted: the sensor says both.
    heliox.refresh_today()
    skipped = heliox.tick("burn_rate_sensor", first.cursor)
    assert requests_of(skipped) == []
    assert skipped_because(skipped) == (
        "2026-01-09: already alerted at 100% of the threshold. burn-rate for team ml-platform is muted "
        f"until 2026-01-09 19:00 (UTC) by alice: {REASON} (mute {team.mute_id})."
    )


def test_an_idle_sensor_skips_when_every_finding_is_muted(
    sqlite_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    heliox = make_heliox(sqlite_engine, slack_server, monkeypatch)
    insert(
        heliox.engine,
        hourly("gpu-idle", NOW - dt.timedelta(days=14), 14 * 24, "2.00", 0.5, team="ml-platform"),
    )
    muted = mute(heliox, "idle-spend", scope="team", value="ml-platform")
    skipped = idle_check(heliox)
    assert isinstance(skipped, SkipReason)
    assert skipped.skip_message == (
        f"idle-spend for team ml-platform is muted until 2026-01-09 19:00 (UTC) by alice: {REASON} "
        f"(mute {muted.mute_id})."
    )
    assert [e["alert_key"] for e in muted_entries(heliox.engine)] == ["idle-spend:gpu-idle:2026-W02"]

    end_mute(heliox.engine, muted.mute_id, by="bob", now=NOW + dt.timedelta(minutes=5))
    heliox.at(NOW + dt.timedelta(minutes=5))
    request = idle_check(heliox)
    assert not isinstance(request, SkipReason)
    assert heliox.run_request(request, "idle_spend_alert_job").success
    assert heliox.texts() == ["⚠️ Idle GPU Spend Detected: 1 issue, $1,460.00/month potential savings"]


def test_stale_data_and_run_failure_notices_honour_mutes(
    sqlite_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    heliox = make_heliox(sqlite_engine, slack_server, monkeypatch)
    heliox.spend("gpu-a", NOW - dt.timedelta(hours=12), 2, "1.00")  # newest hour 10 h old
    stale = mute(heliox, "stale-data")
    tick = heliox.tick("stale_data_sensor")
    assert requests_of(tick) == []
    assert skipped_because(tick).startswith("stale-data is muted until 2026-01-09 19:00 (UTC) by alice")
    assert [e["alert_key"] for e in muted_entries(heliox.engine)] == ["stale-data:2026-01-09T06:00:00+00:00"]

    notice = mute(heliox, "run-failure")
    failed = heliox.run_job("burn_rate_alert_job", run_config=BURN_RATE.run_config(day="not-a-day"))
    assert not failed.success
    outcome = notify_run_failure(
        heliox.engine, heliox.resources()["slack"], heliox.instance, failed.run_id, heliox.settings, NOW
    )
    assert (
        outcome
        == f"run-failure is muted until 2026-01-09 19:00 (UTC) by alice: {REASON} (mute {notice.mute_id})."
    )
    assert slack_server.requests == []
    assert stale.mute_id != notice.mute_id


def test_alerts_enabled_switches_a_kind_off(
    sqlite_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    heliox = make_heliox(
        sqlite_engine, slack_server, monkeypatch, settings=replace(SETTINGS, alerts_enabled=("burn-rate",))
    )
    skipped = idle_check(heliox)
    assert isinstance(skipped, SkipReason)
    assert skipped.skip_message == "idle-spend alerts are switched off: ALERTS_ENABLED=burn-rate."
    run = heliox.run_job("idle_spend_alert_job")
    assert run.success and op_metadata(run)["delivery"] == "disabled"
    assert slack_server.requests == [] and heliox.ledger() == {}


# --- the command line ---------------------------------------------------------------------------


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(alert_mutes)).scalar_one())


def test_mute_unmute_and_mutes_from_the_command_line(
    any_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIMEZONE", "America/New_York")
    monkeypatch.setenv("USER", "carol")
    monkeypatch.setenv("LOGNAME", "carol")
    url = engine_url(any_engine)
    runner = CliRunner()
    until = (dt.datetime.now(ZoneInfo("America/New_York")) + dt.timedelta(days=10)).date()
    first = runner.invoke(
        cli,
        [
            "mute",
            "idle-spend",
            "--team",
            "ml-platform",
            "--until",
            until.isoformat(),
            "--reason",
            REASON,
            "--database-url",
            url,
        ],
    )
    assert first.exit_code == 0, first.output
    local_midnight = dt.datetime.combine(until, dt.time(), ZoneInfo("America/New_York"))
    (stored,) = active_mutes(any_engine, dt.datetime.now(dt.UTC), "idle-spend")
    assert stored.muted_until == local_midnight.astimezone(dt.UTC) and stored.created_by == "carol"
    assert first.output.splitlines()[0] == (
        f"Muted idle-spend for team ml-platform until {until} 00:00 (America/New_York): {REASON} "
        f"(mute {stored.mute_id})."
    )
    second = runner.invoke(
        cli,
        [
            "mute",
            "burn-rate",
            "--for",
            "7d",
            "--reason",
            "budget review",
            "--by",
            "dave",
            "--database-url",
            url,
        ],
    )
    assert second.exit_code == 0, second.output
    listing = runner.invoke(cli, ["mutes", "--database-url", url])
    assert listing.exit_code == 0, listing.output
    lines = listing.output.splitlines()
    assert len(lines) == 2 and lines[0].startswith("mute ") and "burn-rate until" in lines[0]
    assert lines[1].endswith(
        f"idle-spend for team ml-platform until {until} 00:00 (America/New_York) by carol: {REASON}"
    )

    ended = runner.invoke(cli, ["unmute", str(stored.mute_id), "--database-url", url])
    assert ended.exit_code == 0 and "Ended mute" in ended.output
    again = runner.invoke(cli, ["unmute", str(stored.mute_id), "--database-url", url])
    assert again.exit_code == 2 and again.output.strip() == (
        f"Error: mute {stored.mute_id} (idle-spend for team ml-platform) was ended by carol; nothing to do."
    )
    assert "[ended " in runner.invoke(cli, ["mutes", "--all", "--database-url", url]).output

    before = _count(any_engine)
    refused = {
        ("daily-summary", "--team", "x", "--for", "1d"): "daily-summary alerts cannot be muted by team",
        ("idle-spend", "--team", "a", "--model", "b", "--for", "1d"): "give at most one of --team",
        ("idle-spend", "--for", "0d"): "is out of range; a mute lasts 1m to 366d",
        ("idle-spend", "--for", "1y"): "is not a duration",
        ("idle-spend", "--for", "1d", "--until", "2030-01-01"): "give either --for",
        ("idle-spend", "--until", "2000-01-01"): "is not in the future",
        ("idle-spend", "--until", "2999-01-01"): "at most 366 days from now",
        ("idle-spend", "--resource", "x" * 300, "--for", "1d"): "--resource must be 1-255 printable",
    }
    for args, problem in refused.items():
        result = runner.invoke(cli, ["mute", *args, "--reason", "r", "--database-url", url])
        assert result.exit_code == 2, (args, result.output)
        assert problem in result.output and "Traceback" not in result.output, (args, result.output)
    assert _count(any_engine) == before  # nothing half-written


def test_heliox_alerts_lists_muted_alerts_as_muted(
    sqlite_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    heliox = make_heliox(sqlite_engine, slack_server, monkeypatch)
    heliox.spend("gpu-a", MIDNIGHT, 17, "60.00")
    muted = mute(heliox, "burn-rate")
    heliox.refresh_today()
    heliox.tick("burn_rate_sensor")
    listing = CliRunner().invoke(cli, ["alerts"])
    assert listing.exit_code == 0, listing.output
    lines = listing.output.splitlines()
    assert lines[1].split() == ["2026-01-09", "17:00", "muted", "burn-rate:2026-01-09:100"]
    assert lines[2].strip() == f"muted until 2026-01-09 19:00 (UTC) by alice: {REASON} (mute {muted.mute_id})"


def test_a_mute_the_database_would_refuse_is_refused_before_writing(sqlite_engine: Engine) -> None:
    with pytest.raises(MuteError, match="burn-rate alerts cannot be muted by resource; allowed: --team"):
        add_mute(
            sqlite_engine,
            "burn-rate",
            scope="resource",
            value="gpu",
            until=NOW + dt.timedelta(days=1),
            reason=REASON,
            by="alice",
            now=NOW,
        )
    with pytest.raises(MuteError, match="--reason must be 1-500"):
        add_mute(
            sqlite_engine,
            "burn-rate",
            scope=None,
            value=None,
            until=NOW + dt.timedelta(days=1),
            reason="x" * 501,
            by="alice",
            now=NOW,
        )
    assert _count(sqlite_engine) == 0
