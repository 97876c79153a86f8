"""Resolution: an alerted idle GPU that gets busy, or disappears from the usage data, is resolved
in every channel its idle alert reached, once, saying what monthly spend stopped; the daily
summary counts the savings realized this month, to the cent, in TIMEZONE."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from dagster import SkipReason
from sqlalchemy import Engine, insert, select

from heliox_orchestration.alerts.daily_summary import DAILY_SUMMARY
from heliox_orchestration.db.alert_schema import idle_gpu_episodes
from heliox_orchestration.db.usage_store import newest_usage_hour_before
from heliox_orchestration.detections.freshness import newest_usage_hour
from heliox_orchestration.detections.resolution import realized_savings
from heliox_orchestration.money import format_usd
from heliox_orchestration_tests.automation_env import NOW, Heliox
from heliox_orchestration_tests.crafted import hourly, utc
from heliox_orchestration_tests.crafted import insert as insert_rows
from heliox_orchestration_tests.routed import (
    by_channel,
    idle_check,
    idle_fleet,
    plain_texts,
    routed_heliox,
)
from heliox_orchestration_tests.slack_server import FakeSlackWebhook

HOUR = dt.timedelta(hours=1)
STILL_IDLE = ("ml-h100-2", "rs-a100", "orphan-l4", "fin-t4")
COSTS = {"ml-h100-1": "12.29", "ml-h100-2": "3.00", "rs-a100": "4.10", "orphan-l4": "0.80", "fin-t4": "0.50"}
TEAMS = {"ml-h100-1": "ml-platform", "ml-h100-2": "ml-platform", "rs-a100": "research", "fin-t4": "finance"}

ML_RESOLVED = """\
✅ Idle GPU Resolved

1 idle GPU of team ml-platform alerted on stopped costing money idle: $8,971.70/month no longer spent.

1. Idle GPU: H100 on AWS
Busy again: utilization at or above 5% for 6 hours (since 2026-01-09 17:00 (UTC))
💰 $8,971.70/month no longer spent
Resource: ml-h100-1 · Team: ml-platform · Model: llama-70b

The daily summary counts the savings realized this month."""


def alerted(heliox: Heliox) -> None:
    """The fleet of routed.py, alerted on at NOW in every channel."""
    idle_fleet(heliox)
    assert heliox.run_request(idle_check(heliox), "idle_spend_alert_job").success


def keep_reporting(
    heliox: Heliox, resources: tuple[str, ...], hours: int, busy: tuple[str, ...] = ()
) -> None:
    for resource in resources:
        util = 60.0 if resource in busy else 0.5
        insert_rows(
            heliox.engine, hourly(resource, NOW, hours, COSTS[resource], util, team=TEAMS.get(resource))
        )


def resolution_check(heliox: Heliox) -> list[str]:
    """The idle refresh, the resolution sensor and its run: the keys it sent."""
    request = idle_check(heliox, "idle_resolved_sensor")
    if isinstance(request, SkipReason):
        return []
    assert heliox.run_request(request, "idle_resolved_alert_job").success
    return sorted(
        k for k, e in heliox.ledger().items() if k.startswith("idle-resolved") and e["status"] == "sent"
    )


def test_a_gpu_busy_again_is_resolved_in_its_channel_once(
    any_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    heliox = routed_heliox(any_engine, slack_server, monkeypatch, tmp_path)
    alerted(heliox)
    keep_reporting(heliox, ("ml-h100-1", *STILL_IDLE), 6, busy=("ml-h100-1",))

    heliox.at(NOW + 5 * HOUR)  # 5 busy hours: not yet
    assert resolution_check(heliox) == []
    heliox.at(NOW + 6 * HOUR)
    assert resolution_check(heliox) == ["idle-resolved@ml-platform:ml-h100-1:20260109T1700Z"]
    assert plain_texts(slack_server, "ml-platform")[-1] == ML_RESOLVED
    assert by_channel(slack_server)["ml-platform"][-1] == (
        "✅ Idle GPU Resolved: ml-h100-1, $8,971.70/month no longer spent"
    )
    assert len(by_channel(slack_server)["default"]) == 1  # its idle alert never went there

    # Once per resolution: the next idle check says nothing more, nor re-alerts it as idle.
    heliox.at(NOW + 7 * HOUR)
    assert resolution_check(heliox) == ["idle-resolved@ml-platform:ml-h100-1:20260109T1700Z"]
    assert heliox.run_job("idle_spend_alert_job").success
    assert sum(len(texts) for texts in by_channel(slack_server).values()) == 4

    # The daily summary of that day counts 7 hours (17:00-23:59 UTC) x $12.29.
    heliox.at(dt.datetime(2026, 1, 10, 9, 5, tzinfo=dt.UTC))
    assert heliox.run_job("daily_summary_refresh_job", partition_key="2026-01-09").success
    summary = heliox.run_job(
        "daily_summary_job", run_config=DAILY_SUMMARY.run_config(report_date="2026-01-09")
    )
    assert summary.success
    fields = [f["text"] for b in slack_server.requests[-1].json["blocks"] for f in b.get("fields", [])]
    assert "*Savings Realized This Month:*\n$86.03" in fields

    # Idle again from 23:00: the savings stop there, and the GPU is news again.
    insert_rows(heliox.engine, hourly("ml-h100-1", NOW + 6 * HOUR, 4, "12.29", 0.5, team="ml-platform"))
    for resource in STILL_IDLE:
        rows = hourly(resource, NOW + 6 * HOUR, 4, COSTS[resource], 0.5, team=TEAMS.get(resource))
        insert_rows(heliox.engine, rows)
    heliox.at(NOW + 18 * HOUR)  # after the summary's own idle evaluation
    assert heliox.run_job("idle_recommendations_refresh_job").success
    with any_engine.connect() as conn:
        (reopened,) = conn.execute(
            select(idle_gpu_episodes.c.reopened_at).where(idle_gpu_episodes.c.resource_id == "ml-h100-1")
        ).scalars()
    assert reopened == NOW + 6 * HOUR
    assert realized_savings(any_engine, dt.date(2026, 1, 9), "UTC").amount_usd == Decimal("12.29") * 6


def test_a_gpu_gone_from_the_usage_data_is_resolved_where_its_alert_went(
    any_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """rs-a100 (research, copied to the default channel) stops reporting at NOW: once the rest of
    the fleet has reported for 24 hours without it, both channels hear it is resolved. A stalled
    import (nobody reports) resolves nothing."""
    heliox = routed_heliox(any_engine, slack_server, monkeypatch, tmp_path)
    alerted(heliox)
    heliox.at(NOW + 30 * HOUR)
    assert resolution_check(heliox) == []  # no newer data at all: a stalled import, not a shutdown

    others = ("ml-h100-1", "ml-h100-2", "orphan-l4", "fin-t4")
    keep_reporting(heliox, others, 23)
    assert resolution_check(heliox) == []  # 23 hours without it
    keep_reporting_from = NOW + 23 * HOUR
    for resource in others:
        insert_rows(
            heliox.engine,
            hourly(resource, keep_reporting_from, 1, COSTS[resource], 0.5, team=TEAMS.get(resource)),
        )
    assert resolution_check(heliox) == [
        "idle-resolved:rs-a100:20260109T1700Z",
        "idle-resolved@research:rs-a100:20260109T1700Z",
    ]
    research, default = by_channel(slack_server)["research"][-1], by_channel(slack_server)["default"][-1]
    assert research == default == "✅ Idle GPU Resolved: rs-a100, $2,993.00/month no longer spent"
    assert (
        "Gone from the usage data: no usage data for 24 hours (since 2026-01-09 17:00 (UTC))"
        in (plain_texts(slack_server, "research")[-1])
    )
    # The idle rule still counts its old rows; it is resolved, so it is not alerted as idle again.
    heliox.at(NOW + 40 * HOUR)
    assert heliox.run_job("idle_spend_alert_job").success
    assert all("rs-a100" not in text for text in by_channel(slack_server)["research"][1:-1])
    assert len(by_channel(slack_server)["research"]) == 2

    # Back, still idle, in the ISO week of its first alert: news again in both channels, under
    # keys of their own (the week's are taken by the first alert), once however often it runs.
    back = NOW + 40 * HOUR
    for resource in ("rs-a100", *others):
        insert_rows(heliox.engine, hourly(resource, back, 2, COSTS[resource], 0.5, team=TEAMS.get(resource)))
    heliox.at(back + 2 * HOUR)
    for _ in range(2):
        request = idle_check(heliox)
        if not isinstance(request, SkipReason):
            assert heliox.run_request(request, "idle_spend_alert_job").success
    assert [len(by_channel(slack_server)[c]) for c in ("research", "default")] == [3, 3]
    assert by_channel(slack_server)["research"][-1].startswith("⚠️ Idle GPU Spend Detected (team research)")
    again = sorted(
        k for k, e in heliox.ledger().items() if ":rs-a100:2026-W02." in k and e["status"] == "sent"
    )
    assert [k.split(":")[0] for k in again] == ["idle-spend", "idle-spend@research"]


# --- savings realized: the rule, to the cent, across a month boundary in TIMEZONE ---------------


def _episode(
    engine: Engine, resource: str, hourly_cost: str, resolved_at: dt.datetime, **more: object
) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(idle_gpu_episodes).values(
                resource_id=resource,
                provider="aws",
                gpu_type="H100",
                title="Idle GPU: H100 on AWS",
                alerted_at=resolved_at - dt.timedelta(days=1),
                hourly_cost_usd=Decimal(hourly_cost),
                monthly_savings_usd=Decimal(hourly_cost) * 730,
                resolved_at=resolved_at,
                resolution="gone",
                resolution_found_at=resolved_at + dt.timedelta(days=1),
                **more,
            )
        )


def test_savings_realized_this_month_to_the_cent_in_timezone(any_engine: Engine) -> None:
    tz = "America/Los_Angeles"  # UTC-8; DST starts 2026-03-08 (a 23-hour day)
    # Resolved 2026-01-31 20:00 local = 2026-02-01 04:00 UTC, at $1.611111 an hour.
    _episode(any_engine, "gpu-a", "1.611111", utc(2026, 2, 1, 4))
    # Resolved 2026-02-01 10:00 local, idle again 2026-02-02 10:00 UTC (02:00 local).
    _episode(any_engine, "gpu-b", "0.333333", utc(2026, 2, 1, 18), reopened_at=utc(2026, 2, 2, 10))
    # A resolution after the report date counts nothing.
    _episode(any_engine, "gpu-c", "100.00", utc(2026, 3, 20, 0))

    def realized(day: dt.date) -> tuple[Decimal, int]:
        savings = realized_savings(any_engine, day, tz)
        return savings.amount_usd, savings.gpus

    # January's last local day: 4 hours (04:00-07:59 UTC) of gpu-a.
    assert realized(dt.date(2026, 1, 31)) == (Decimal("6.444444"), 1)
    # February 1 (local, from 08:00 UTC): 24 hours of gpu-a, 14 of gpu-b (18:00-07:59 UTC).
    assert realized(dt.date(2026, 2, 1)) == (Decimal("1.611111") * 24 + Decimal("0.333333") * 14, 2)
    assert format_usd(realized(dt.date(2026, 2, 1))[0]) == "$43.33"
    # February 2: gpu-b stopped at 10:00 UTC (16 hours in all); gpu-a 48 hours.
    assert realized(dt.date(2026, 2, 2)) == (Decimal("1.611111") * 48 + Decimal("0.333333") * 16, 2)
    assert format_usd(realized(dt.date(2026, 2, 28))[0]) == format_usd(
        Decimal("1.611111") * 28 * 24 + Decimal("0.333333") * 16
    )
    # March through the 8th: 7 days of 24 hours and the 23-hour DST day.
    assert realized(dt.date(2026, 3, 8)) == (Decimal("1.611111") * (7 * 24 + 23), 1)
    assert realized(dt.date(2026, 1, 30)) == (Decimal(0), 0)


def test_the_fleets_newest_hour_is_found_however_far_back(any_engine: Engine) -> None:
    last = utc(2026, 1, 20, 5)
    with any_engine.connect() as conn:
        assert newest_usage_hour_before(conn, last) is None  # no rows at all
    insert_rows(
        any_engine, [*hourly("old", utc(2025, 6, 1), 3, "1", 0.0), *hourly("gpu", last - HOUR, 2, "1", 0.0)]
    )
    cases = {
        last + HOUR: last,  # in the last hour
        last: last - HOUR,  # the row at the end is not before it
        last + 5 * HOUR: last,
        last + dt.timedelta(days=3): last,
        last + dt.timedelta(days=30): last,
        last + dt.timedelta(days=400): last,  # before every range searched
        utc(2026, 1, 1): utc(2025, 6, 1, 2),
        utc(2025, 6, 1): None,
    }
    with any_engine.connect() as conn:
        assert {end: newest_usage_hour_before(conn, end) for end in cases} == cases
    # The stale-data sensor's: hours that have begun, the hour at now included.
    assert newest_usage_hour(any_engine, last) == last
    assert newest_usage_hour(any_engine, last - dt.timedelta(minutes=1)) == last - HOUR
    assert newest_usage_hour(any_engine, last + dt.timedelta(days=90)) == last
