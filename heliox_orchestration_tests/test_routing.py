"""Routing: each alert kind's webhook, each team's channel (HELIOX_ROUTING_FILE), one delivery
per destination, and a refusal that waits for that destination's webhook to change."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
from dagster_shared.serdes import serialize_value
from sqlalchemy import Engine

from heliox_orchestration.alerts import kinds
from heliox_orchestration.automation.sensors import redelivery_requests
from heliox_orchestration.environment import check_environment, load_environment
from heliox_orchestration.resources.slack import webhook_fingerprint
from heliox_orchestration.routing import RoutingError, TeamRoute, parse_routing
from heliox_orchestration.settings import SettingsError
from heliox_orchestration_tests.automation_env import NOW, requests_of
from heliox_orchestration_tests.routed import (
    CHANNELS,
    MIDNIGHT,
    ML_PATH,
    RESEARCH_PATH,
    by_channel,
    idle_check,
    idle_fleet,
    op_metadata,
    plain_texts,
    routed_heliox,
)
from heliox_orchestration_tests.slack_server import FakeSlackWebhook, Reply

HOOK = "https://hooks.slack.com/services/T0000000/B0000000/not-a-real-secret-wxyz"

ML_IDLE = """\
⚠️ Idle GPU Spend Detected

High-severity idle spend recommendations found for team ml-platform's GPUs!

• Total Potential Savings: $11,161.70/month
• Number of Issues: 2

1. Idle GPU: H100 on AWS
100% idle for 14 days
💰 Savings: $8,971.70/month
Resource: ml-h100-1 · us-east-1 · Team: ml-platform · Model: llama-70b

2. Idle GPU: H100 on AWS
100% idle for 14 days
💰 Savings: $2,190.00/month
Resource: ml-h100-2 · us-east-1 · Team: ml-platform · Model: whisper"""

ML_BURN = """\
🔥 High Burn Rate Alert

Team ml-platform's daily GPU spending has exceeded the threshold!

• Team: ml-platform
• Date: 2026-01-09
• Daily Cost: $956.93 so far
• Threshold: $500.00
• Over by: $456.93 (91.4%)
• Projected End of Day: $1,350.96 (at the current $56.29/hour over 24 hours)

Top Cost Drivers (2026-01-09):
• llama-70b: $905.93
• whisper: $51.00

💡 Review your GPU usage to identify cost drivers

📈 Escalation: spend has passed 150% of the threshold"""

RESEARCH_IDLE = """\
⚠️ Idle GPU Spend Detected

High-severity idle spend recommendations found for team research's GPUs!

• Total Potential Savings: $2,993.00/month
• Number of Issues: 1

1. Idle GPU: H100 on AWS
100% idle for 14 days
💰 Savings: $2,993.00/month
Resource: rs-a100 · us-east-1 · Team: research · Model: alphafold"""


def test_three_channels_get_exactly_their_own_alerts(
    any_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two teams and the default, each a webhook of the loopback Slack: the fleet's burn rate
    to the default, ml-platform's own (its $500 threshold) to ml-platform; each team's idle GPUs
    to its channel with its top 3 and total; the rest, and research's (copy_to_default), to the
    default. Run again: nothing more anywhere."""
    heliox = routed_heliox(any_engine, slack_server, monkeypatch, tmp_path)
    idle_fleet(heliox)
    heliox.spend("ml-train", MIDNIGHT, 17, "40.00", team="ml-platform", model_name="llama-70b")

    heliox.refresh_today()
    (burn,) = requests_of(heliox.tick("burn_rate_sensor"))
    assert burn.run_key == "burn-rate:2026-01-09:100,burn-rate@ml-platform:2026-01-09:150"
    assert heliox.run_request(burn, "burn_rate_alert_job").success
    idle = idle_check(heliox)
    result = heliox.run_request(idle, "idle_spend_alert_job")
    assert result.success

    received = by_channel(slack_server)
    assert received["default"] == [
        "🔥 High Burn Rate Alert: GPU spend on 2026-01-09 is $1,048.73 so far, over the $1,000.00 threshold "
        "by $48.73 (4.9%)",
        "⚠️ Idle GPU Spend Detected: 3 issues, $3,942.00/month potential savings",
    ]
    assert received["ml-platform"] == [
        "🔥 High Burn Rate Alert: team ml-platform's GPU spend on 2026-01-09 is $956.93 so far, over the "
        "$500.00 threshold by $456.93 (91.4%)\n📈 Escalation: spend has passed 150% of the threshold",
        "⚠️ Idle GPU Spend Detected (team ml-platform): 2 issues, $11,161.70/month potential savings",
    ]
    assert received["research"] == [
        "⚠️ Idle GPU Spend Detected (team research): 1 issue, $2,993.00/month potential savings"
    ]
    assert plain_texts(slack_server, "ml-platform") == [ML_BURN, ML_IDLE]
    assert plain_texts(slack_server, "research") == [RESEARCH_IDLE]
    default_idle = plain_texts(slack_server, "default")[1]
    for resource in ("rs-a100", "orphan-l4", "fin-t4"):  # no team, a team without a channel, a copy
        assert f"Resource: {resource}" in default_idle
    assert "ml-h100" not in default_idle

    # One finding alerted to its team and to the default is two keys, each delivered once.
    assert {k: e["status"] for k, e in heliox.ledger().items()} == dict.fromkeys(
        [
            "burn-rate:2026-01-09:100",
            "burn-rate@ml-platform:2026-01-09:100",
            "burn-rate@ml-platform:2026-01-09:150",
            "idle-spend:rs-a100:2026-W02",
            "idle-spend:orphan-l4:2026-W02",
            "idle-spend:fin-t4:2026-W02",
            "idle-spend@ml-platform:ml-h100-1:2026-W02",
            "idle-spend@ml-platform:ml-h100-2:2026-W02",
            "idle-spend@research:rs-a100:2026-W02",
        ],
        "sent",
    )
    metadata = op_metadata(result)
    assert metadata["delivery"] == metadata["team/ml-platform/delivery"] == "sent"
    assert metadata["findings"] == 3 and metadata["team/ml-platform/findings"] == 2
    heliox.at(NOW + dt.timedelta(hours=6))
    assert heliox.run_request(burn, "burn_rate_alert_job").success
    assert heliox.run_job("idle_spend_alert_job").success
    assert sum(len(texts) for texts in by_channel(slack_server).values()) == 5

    # The teams' webhooks reached the runs through EnvVar: no run or event stores them.
    stored = "".join(
        serialize_value(run) + "".join(serialize_value(e) for e in heliox.instance.all_logs(run.run_id))
        for run in heliox.instance.get_runs()
    )
    assert "http://127.0.0.1/services/****...aaaa" in stored  # the masked ml-platform webhook
    for path in (ML_PATH, RESEARCH_PATH):
        assert path.rsplit("/", 1)[1] not in stored


def test_a_team_webhook_that_refuses_waits_for_its_own_variable(
    sqlite_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """research's webhook is gone (404 no_service): its key is refused with that webhook's
    fingerprint while the other destinations get their alerts; the redelivery sensor waits for
    SLACK_WEBHOOK_URL_RESEARCH to change, then sends it there, late."""
    heliox = routed_heliox(sqlite_engine, slack_server, monkeypatch, tmp_path)
    idle_fleet(heliox)
    request = idle_check(heliox)
    # Deliveries go default, ml-platform, research: the third is refused.
    slack_server.script(Reply(), Reply(), Reply.error(404, "no_service"))
    failed = heliox.run_request(request, "idle_spend_alert_job")
    assert not failed.success
    failure = failed.failure_data_for_node("send_idle_spend_alert")
    assert failure is not None and failure.error is not None
    assert (
        "put its URL in SLACK_WEBHOOK_URL_RESEARCH Then: it is not sent to this webhook again; once "
        "SLACK_WEBHOOK_URL_RESEARCH is fixed" in failure.error.message
    )
    refused = heliox.ledger()["idle-spend@research:rs-a100:2026-W02"]
    assert refused["status"] == "failed"
    assert refused["refused_webhook"] == webhook_fingerprint(slack_server.url(RESEARCH_PATH))
    assert heliox.ledger()["idle-spend:rs-a100:2026-W02"]["status"] == "sent"
    assert len(by_channel(slack_server)["ml-platform"]) == 1

    heliox.at(NOW + dt.timedelta(minutes=12))
    tick = heliox.tick("alert_redelivery_sensor")
    assert requests_of(tick) == []
    assert "1 alert(s) refused by the current webhook wait for SLACK_WEBHOOK_URL_RESEARCH to change" in str(
        tick.skip_reason
    )

    new_path = "/services/TRS000000/BRS000001/research-new-secret-cccc"
    monkeypatch.setenv("SLACK_WEBHOOK_URL_RESEARCH", slack_server.url(new_path))
    heliox.use_webhook(CHANNELS["default"])  # reloads the definitions with the new variable
    (redelivery,) = requests_of(heliox.tick("alert_redelivery_sensor"))
    assert heliox.run_request(redelivery).success
    (late,) = [r for r in slack_server.requests if r.path == new_path]
    assert late.json["text"].startswith("⚠️ Idle GPU Spend Detected (team research): 1 issue")
    assert "the webhook configured then refused it" in late.json["text"]
    assert heliox.ledger()["idle-spend@research:rs-a100:2026-W02"]["status"] == "sent"
    assert len([r for r in slack_server.requests if r.status == 200]) == 3  # nothing else again


# --- configuration -----------------------------------------------------------------------------


def _routing_env(tmp_path: Path, text: str, **env: str) -> dict[str, str]:
    path = tmp_path / "routing.yaml"
    path.write_text(text)
    return {"HELIOX_ROUTING_FILE": str(path), **env}


def test_a_team_routed_to_a_missing_variable_stops_loading_naming_both(tmp_path: Path) -> None:
    env = _routing_env(tmp_path, "teams:\n  ml-platform:\n    webhook_env: SLACK_WEBHOOK_URL_ML\n")
    with pytest.raises(SettingsError) as raised:
        load_environment(env)
    message = str(raised.value)
    assert "team 'ml-platform' is routed to SLACK_WEBHOOK_URL_ML, which is not set" in message
    assert str(tmp_path / "routing.yaml") in message
    ok = check_environment({**env, "SLACK_WEBHOOK_URL_ML": HOOK})
    assert ok.problems == ()
    (team,) = [d for d in ok.destinations if d.label == "team ml-platform"]
    assert team.variable == "SLACK_WEBHOOK_URL_ML" and team.webhook_url == HOOK


def test_every_kind_webhook_is_validated_and_falls_back(tmp_path: Path) -> None:
    check = check_environment(
        {"SLACK_WEBHOOK_URL": HOOK, "SLACK_WEBHOOK_URL_IDLE_SPEND": HOOK.replace("wxyz", "idle")}
    )
    assert check.problems == ()
    where = {d.label: (d.variable, d.webhook_url) for d in check.destinations}
    assert where["burn-rate"] == ("SLACK_WEBHOOK_URL", HOOK)
    assert where["idle-spend"][0] == "SLACK_WEBHOOK_URL_IDLE_SPEND"
    assert where["idle-resolved"][0] == "SLACK_WEBHOOK_URL_IDLE_SPEND"  # its fallback kind's
    bad = check_environment({"SLACK_WEBHOOK_URL_RUN_FAILURE": "https://hooks.slack.com/services/"})
    assert bad.problems == (
        "SLACK_WEBHOOK_URL_RUN_FAILURE is not a usable Slack webhook URL: it is incomplete: a Slack "
        "webhook's path is /services/T…/B…/ followed by its secret. Copy it again from Slack (Apps → "
        "Incoming Webhooks); it looks like https://hooks.slack.com/services/T…/B…/…",
    )
    typo = check_environment({"SLACK_WEBHOOK_URL_BURNRATE": HOOK})
    assert len(typo.problems) == 1 and typo.problems[0].startswith(
        "SLACK_WEBHOOK_URL_BURNRATE is set but is neither an alert kind's webhook"
    )
    assert HOOK not in " ".join(typo.problems + bad.problems)


def test_alerts_enabled_names_registered_kinds() -> None:
    assert load_environment({"ALERTS_ENABLED": "burn-rate, daily-summary"}).alerts_enabled == (
        "burn-rate",
        "daily-summary",
    )
    (problem,) = check_environment({"ALERTS_ENABLED": "burn-rate,burnrate"}).problems
    assert problem.startswith("ALERTS_ENABLED names 'burnrate', not an alert kind; choose among ")
    assert load_environment({"ALERTS_ENABLED": "none"}).alerts_enabled == ()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("teams: []", "teams must map at least one team name"),
        ("routes: {}", "expected one top-level key, teams"),
        ("teams:\n  ml: {webhook_env: 'https://hooks.slack.com/x'}", "webhook_env: expected the NAME"),
        ("teams:\n  ml: {webhook_env: A, burn_rate_threshold_usd: -5}", "burn_rate_threshold_usd: expected"),
        (
            "teams:\n  ml: {webhook_env: A, burn_rate_threshold_usd: .nan}",
            "burn_rate_threshold_usd: expected",
        ),
        ("teams:\n  ml: {webhook_env: A, copy_to_default: maybe}", "copy_to_default: expected true or false"),
        ("teams:\n  ml: {webhook_env: A, channel: '#ml'}", "channel: unknown key"),
        ("teams:\n  ' ml': {webhook_env: A}", "must be 1-128 printable characters"),
        ("teams:\n  ml: A", "webhook_env: missing"),
        ("teams: [", "line 1"),
    ],
)
def test_a_bad_routing_file_is_one_line_naming_the_key(tmp_path: Path, text: str, problem: str) -> None:
    (line,) = check_environment(_routing_env(tmp_path, text)).problems
    assert problem in line and line.startswith("HELIOX_ROUTING_FILE=") and "\n" not in line


def test_a_routing_file_parses_to_team_routes() -> None:
    raw = {
        "teams": {
            "ml": {"webhook_env": "HOOK_ML", "burn_rate_threshold_usd": "2500.50"},
            "rs": {"webhook_env": "R"},
        }
    }
    assert parse_routing(raw) == (
        TeamRoute("ml", "HOOK_ML", burn_rate_threshold_usd=Decimal("2500.50")),
        TeamRoute("rs", "R"),
    )
    with pytest.raises(RoutingError):
        parse_routing({"teams": {"ml": {"webhook_env": "A", "burn_rate_threshold_usd": True}}})
    assert kinds.destination_label("ml") == "ml"


def test_redelivery_compares_each_key_with_its_own_destination_and_holds_back_the_undeliverable() -> None:
    """A refused key waits while its destination's webhook is the one that refused it; a key
    for a team the routing file no longer names is held back, not relaunched every tick."""
    row = SimpleNamespace(status="failed", attempts=1, updated_at=NOW, refused_webhook="team-fp")
    default_key, team_key, gone_key = (
        "burn-rate:2026-01-09:100",
        "burn-rate@ml-platform:2026-01-09:100",
        "burn-rate@old-team:2026-01-09:100",
    )
    rows = [SimpleNamespace(**{**row.__dict__, "alert_key": k}) for k in (default_key, team_key, gone_key)]
    webhooks = {default_key: "default-fp", team_key: "team-fp"}
    held = {gone_key: "its team is no longer in the routing file"}
    requests, refused, exhausted, held_back = redelivery_requests(rows, webhooks.get, held.get)
    assert refused == [team_key] and held_back == [gone_key] and exhausted == []
    assert list(requests) == [f"redeliver:burn-rate:2026-01-09:{NOW.isoformat()}"]
