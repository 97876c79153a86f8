"""A routed Heliox for the routing, mute and resolution tests: two teams with webhooks of their
own on the loopback Slack server (one path per channel), and a fleet with idle and busy GPUs."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from dagster import ExecuteInProcessResult, RunRequest, SkipReason
from sqlalchemy import Engine

from heliox_orchestration.alerts.messages import render_plain_text
from heliox_orchestration.routing import load_routing_file
from heliox_orchestration_tests.automation_env import NOW, SETTINGS, Heliox, make_heliox
from heliox_orchestration_tests.crafted import hourly, insert
from heliox_orchestration_tests.slack_server import DEFAULT_PATH, FakeSlackWebhook

ML_PATH = "/services/TML000000/BML000000/ml-platform-secret-aaaa"
RESEARCH_PATH = "/services/TRS000000/BRS000000/research-secret-bbbbbb"
CHANNELS = {"default": DEFAULT_PATH, "ml-platform": ML_PATH, "research": RESEARCH_PATH}
ROUTING = """\
teams:
  ml-platform:
    webhook_env: SLACK_WEBHOOK_URL_ML
    burn_rate_threshold_usd: 500
  research:
    webhook_env: SLACK_WEBHOOK_URL_RESEARCH
    copy_to_default: true
"""
WINDOW_START = NOW - dt.timedelta(days=14)
MIDNIGHT = dt.datetime(2026, 1, 9, tzinfo=dt.UTC)


def routed_heliox(
    engine: Engine, slack: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **settings: Any
) -> Heliox:
    path = tmp_path / "routing.yaml"
    path.write_text(ROUTING)
    monkeypatch.setenv("HELIOX_ROUTING_FILE", str(path))
    monkeypatch.setenv("SLACK_WEBHOOK_URL_ML", slack.url(ML_PATH))
    monkeypatch.setenv("SLACK_WEBHOOK_URL_RESEARCH", slack.url(RESEARCH_PATH))
    routed = replace(SETTINGS, routing_file=path, teams=load_routing_file(path), **settings)
    return make_heliox(engine, slack, monkeypatch, settings=routed)


def idle_fleet(heliox: Heliox) -> None:
    """14 days up to NOW: four idle GPUs of two routed teams, one of no team and one of a team
    without a channel; a busy one of ml-platform."""
    idle = [
        ("ml-h100-1", "12.29", "ml-platform", "llama-70b"),
        ("ml-h100-2", "3.00", "ml-platform", "whisper"),
        ("rs-a100", "4.10", "research", "alphafold"),
        ("orphan-l4", "0.80", None, None),
        ("fin-t4", "0.50", "finance", None),
    ]
    for resource, cost, team, model in idle:
        insert(heliox.engine, hourly(resource, WINDOW_START, 14 * 24, cost, 0.5, team=team, model_name=model))
    heliox.spend("ml-busy", WINDOW_START, 14 * 24, "1.00", team="ml-platform", model_name="llama-70b")


def by_channel(slack: FakeSlackWebhook) -> dict[str, list[str]]:
    """The fallback text of each message Slack accepted, per channel."""
    paths = {path: name for name, path in CHANNELS.items()}
    received: dict[str, list[str]] = {name: [] for name in CHANNELS}
    for request in slack.requests:
        if request.status == 200:
            received[paths.get(request.path, request.path)].append(request.json["text"])
    return received


def plain_texts(slack: FakeSlackWebhook, channel: str) -> list[str]:
    """The whole readable text of each message a channel accepted."""
    path = CHANNELS[channel]
    return [render_plain_text(r.json) for r in slack.requests if r.status == 200 and r.path == path]


def op_metadata(result: ExecuteInProcessResult) -> dict[str, Any]:
    """The metadata of a job's one op, as plain values."""
    metadata: dict[str, Any] = {}
    for event in result.all_node_events:
        if event.event_type_value == "STEP_OUTPUT" and event.step_output_data.metadata:
            metadata.update({k: getattr(v, "value", v) for k, v in event.step_output_data.metadata.items()})
    return metadata


def idle_check(heliox: Heliox, sensor: str = "idle_spend_alert_sensor") -> RunRequest | SkipReason:
    """The idle refresh, then what ``sensor`` does after it."""
    refresh = heliox.run_job("idle_recommendations_refresh_job")
    assert refresh.success
    return heliox.after_success(sensor, refresh)
