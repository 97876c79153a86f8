"""Rightsizing findings reach Slack through the idle-spend job only with RIGHTSIZE_ALERTS=true:
one message for the oversized nodes beside the idle alert, each node once per IDLE_REALERT_DAYS."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from sqlalchemy import Engine

from heliox_orchestration_tests.automation_env import NOW, SETTINGS, Heliox, make_heliox
from heliox_orchestration_tests.crafted import hourly, insert, row
from heliox_orchestration_tests.slack_server import FakeSlackWebhook

HOURS = 14 * 24


def _daily_load(hour: int) -> float:
    """45% one hour a day, 15% five hours, 20% the rest: a mean of exactly 20%."""
    return 45.0 if hour % 24 == 15 else 15.0 if hour % 24 < 5 else 20.0


def _fleet(heliox: Heliox) -> None:
    start = NOW - dt.timedelta(days=14)
    insert(
        heliox.engine,
        [
            # 4 GPUs at a 20% mean, 45% at the busiest hour: 1.8 GPUs of load -> 2 would carry it.
            *(
                row("oversized-a100", start + dt.timedelta(hours=i), "16", _daily_load(i), gpu_count=4)
                for i in range(HOURS)
            ),
            *hourly("idle-h100", start, HOURS, "12.29", 0.5),
            *hourly("busy-a100", start, HOURS, "4.10", 80.0, gpu_type="A100"),
        ],
    )


@pytest.mark.parametrize("alerts_on", [True, False])
def test_rightsizing_alerts_only_when_configured_and_once(
    sqlite_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch, alerts_on: bool
) -> None:
    settings = dataclasses.replace(SETTINGS, rightsize_alerts=alerts_on)
    heliox = make_heliox(sqlite_engine, slack_server, monkeypatch, settings=settings)
    _fleet(heliox)
    assert heliox.run_job("idle_recommendations_refresh_job").success
    assert heliox.run_job("idle_spend_alert_job").success

    texts = heliox.texts()
    assert any("Idle GPU Spend Detected" in t for t in texts)
    sizing = [t for t in texts if "Oversized GPU Nodes" in t]
    keys = set(heliox.ledger())
    if not alerts_on:
        assert sizing == [] and keys == {"idle-spend:idle-h100:2026-W02"}
        return
    (message,) = sizing
    # One node: 2 spare GPUs x $4.00 per GPU-hour x 730 hours.
    assert "1 multi-GPU node, $5,840.00/month" in message
    assert keys == {"idle-spend:idle-h100:2026-W02", "idle-spend:rightsize-oversized-a100:2026-W02"}

    # Six hours later neither is news: no third message.
    heliox.at(NOW + dt.timedelta(hours=6))
    assert heliox.run_job("idle_spend_alert_job").success and len(heliox.texts()) == 2
