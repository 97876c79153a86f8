"""End to end on real processes: ``dagster-webserver`` and ``dagster-daemon run`` on the production
instance file (``deploy/dagster.yaml``, storage in PostgreSQL), driven through the webserver's
GraphQL API the way the UI drives it, against a fresh Heliox database in PostgreSQL and the
loopback Slack server (the harness: ``dagster_processes.py``).

What it does (docs/operations.md, "Run it by hand against PostgreSQL", is the same by hand):

1. Two fresh databases (Dagster storage, Heliox), a demo fleet of 20 GPUs x 20 days ending
   yesterday (``heliox seed-demo``).
2. ``dagster-webserver -w workspace.yaml`` and ``dagster-daemon run -w workspace.yaml`` as
   subprocesses, ``DAGSTER_HOME`` holding an unmodified copy of ``deploy/dagster.yaml``.
3. Launches ``daily_summary_refresh_job`` for yesterday's partition (``launchPipelineExecution``,
   as the launchpad does); the daemon's ``daily_summary_sensor`` launches ``daily_summary_job``
   after it. At the same time a backfill of 14 past days of ``daily_gpu_costs``
   (``launchPartitionBackfill``, as the asset page's "Materialize" dialog does; single-run policy,
   so one run). Then ``daily_summary_job`` is launched once more by hand for the same day.
4. Checks the aggregates (each day once, totals equal to the usage), Slack (exactly one daily
   summary, no burn-rate alert although every backfilled day is over the threshold, no message
   twice), and the runs and backfills in Dagster's PostgreSQL storage.
5. Real signals in, with no command: two FOCUS exports dropped into ``HELIOX_FOCUS_DIR`` (a CSV
   charging today over the threshold, and October for two GPU hosts of the test Prometheus:
   Parquet) and a backfill of one day of
   ``gpu_utilization_hourly`` from the real Prometheus (``prometheus_server.py``; without it,
   this step runs without Prometheus, except under ``CI=true``). The daemon imports each file
   (``focus_landing_sensor``), refreshes the days they touched (``new_usage_sensor``), and the
   burn-rate alert for today reaches Slack at most 90 s after today's import run ends; October's
   hosts get their utilization; past days never alert.
6. Backfills the same 14 days again, SIGKILLs the daemon once the backfill's run exists and
   before the backfill is done, restarts it, and checks that the backfill completes with one run,
   every day materialized once and stored once, and nothing more in Slack.

The instance file is ``deploy/dagster.yaml`` unmodified: the intervals that set the pace (the
daemon's sensor and backfill loops, the sensors' minimum intervals) are not instance settings.
Everything is as in production.

The schedules run by default, so an hourly burn-rate check (or the 10:00/16:00 idle check, the
09:00 summary, the hourly utilization pull) may fire while the test runs. The test is built to hold
either way: until step 5 no usage exists for today (so today is not over the threshold), today's
alert is sent once whoever checks first (the ledger), any summary the 09:00 schedule requests is
for the same day, which the alert ledger sends only once, and the test Prometheus holds no recent
hours to pull.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from heliox_orchestration.db.schema import daily_gpu_cost_days, daily_gpu_costs, gpu_usage_hourly
from heliox_orchestration_tests.dagster_processes import (
    BACKFILL,
    BIN,
    FINISHED_RUN,
    IN_PROCESS,
    LAUNCH_BACKFILL,
    STARTUP_TIMEOUT,
    GraphQL,
    daemons_heartbeating_since,
    deployment,
    finished_run,
    launch_run,
    ledger,
    no_run_in_progress,
    runs,
    sensor_ticks,
    slack_texts,
    tags_of,
)
from heliox_orchestration_tests.e2e_ingestion import (
    assert_telemetry_joined,
    ingestion_env,
    land_real_signals,
    optional_prometheus,
)
from heliox_orchestration_tests.slack_server import FakeSlackWebhook

# The whole test, fixtures included, stays under 7 minutes (about 4 on a 2-CPU machine).
pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.timeout(420)]

BACKFILL_DAYS = 14
# Every backfilled demo day costs about $2,000: over this threshold, so an alert on a past day
# would show. Today has no usage at all, so the hourly check can never alert either.
BURN_RATE_THRESHOLD = Decimal("1000")
BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
SETTINGS_ENV = {
    "TIMEZONE": "UTC",
    "BURN_RATE_THRESHOLD_USD": str(BURN_RATE_THRESHOLD),
    # The fleet ends yesterday: no stale-data alert for the hours of today without usage.
    "STALE_DATA_HOURS": "48",
}


# --- GraphQL: backfills ----------------------------------------------------------------------------


def launch_backfill(gql: GraphQL, days: list[dt.date]) -> str:
    # What Assets > daily_gpu_costs > Materialize... > (a range of partitions) > Launch sends.
    data = gql(
        LAUNCH_BACKFILL,
        backfillParams={
            "assetSelection": [{"path": ["daily_gpu_costs"]}],
            "partitionNames": [day.isoformat() for day in days],
            "fromFailure": False,
            "tags": [],
            "runConfigData": IN_PROCESS,
        },
    )["launchPartitionBackfill"]
    assert data["__typename"] == "LaunchBackfillSuccess", data
    return data["backfillId"]


def backfill(gql: GraphQL, backfill_id: str) -> dict[str, Any]:
    data = gql(BACKFILL, backfillId=backfill_id)["partitionBackfillOrError"]
    assert data["__typename"] == "PartitionBackfill", data
    return data


def finished_backfill(gql: GraphQL, backfill_id: str) -> dict[str, Any] | None:
    data = backfill(gql, backfill_id)
    return data if data["status"] in BACKFILL_DONE else None


# --- what the databases and Slack hold -------------------------------------------------------------


def stored_days(engine: Engine, days: list[dt.date]) -> dict[dt.date, dict[str, Any]]:
    t = daily_gpu_cost_days.c
    query = select(t.day, t.has_data, t.cost_usd, t.usage_rows, t.computed_at).where(
        t.day.between(days[0], days[-1])
    )
    with engine.connect() as conn:
        return {row["day"]: dict(row) for row in conn.execute(query).mappings()}


def assert_days_stored_once(engine: Engine, days: list[dt.date]) -> dict[dt.date, dict[str, Any]]:
    """Each day: one day row, unique cost rows, and totals equal to the usage they aggregate."""
    d, c, u = daily_gpu_cost_days.c, daily_gpu_costs.c, gpu_usage_hourly.c
    key = (c.day, c.provider, c.gpu_type, func.coalesce(c.model_name, ""))
    with engine.connect() as conn:
        per_day = dict(
            conn.execute(
                select(d.day, func.count()).where(d.day.between(days[0], days[-1])).group_by(d.day)
            ).all()
        )
        duplicate_keys = conn.execute(
            select(*key, func.count()).group_by(*key).having(func.count() > 1)
        ).all()
        cost_rows = dict(
            conn.execute(
                select(c.day, func.sum(c.cost_usd)).where(c.day.between(days[0], days[-1])).group_by(c.day)
            ).all()
        )
        usage = {}
        for day in days:
            start = dt.datetime.combine(day, dt.time(), dt.UTC)
            in_day = (u.usage_hour >= start) & (u.usage_hour < start + dt.timedelta(days=1))
            usage[day] = conn.execute(select(func.sum(u.cost_usd)).where(in_day)).scalar_one()
    assert per_day == dict.fromkeys(days, 1), per_day
    assert duplicate_keys == [], duplicate_keys
    stored = stored_days(engine, days)
    for day in days:
        assert stored[day]["has_data"], day
        assert stored[day]["cost_usd"] == cost_rows[day] == usage[day], (day, stored[day], usage[day])
    return stored


def materializations_per_partition(dagster_engine: Engine, backfill_id: str) -> dict[str, int]:
    """ASSET_MATERIALIZATION events of daily_gpu_costs in the backfill's runs, per partition."""
    with dagster_engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT e.partition, count(*) FROM event_logs e "
                "JOIN run_tags t ON t.run_id = e.run_id AND t.key = 'dagster/backfill' AND t.value = :id "
                "WHERE e.dagster_event_type = 'ASSET_MATERIALIZATION' AND e.asset_key = :key "
                "GROUP BY e.partition"
            ),
            {"id": backfill_id, "key": json.dumps(["daily_gpu_costs"])},
        ).all()
    return {str(partition): int(count) for partition, count in rows}


def stored_runs(dagster_engine: Engine) -> dict[str, tuple[str, str]]:
    with dagster_engine.connect() as conn:
        rows = conn.execute(text("SELECT run_id, pipeline_name, status FROM runs")).all()
    return {run_id: (job, status) for run_id, job, status in rows}


def stored_backfill_status(dagster_engine: Engine, backfill_id: str) -> str:
    with dagster_engine.connect() as conn:
        return conn.execute(
            text("SELECT status FROM bulk_actions WHERE key = :id"), {"id": backfill_id}
        ).scalar_one()


def assert_slack_holds_one_summary(
    slack: FakeSlackWebhook, report_date: dt.date, burn_rate_day: dt.date | None = None
) -> None:
    """One summary; a burn-rate alert for ``burn_rate_day`` only (a backfilled day never alerts)."""
    texts = slack_texts(slack)
    summaries = [t for t in texts if "Heliox Daily Summary" in t]
    assert len(summaries) == 1, texts
    assert report_date.isoformat() in summaries[0], summaries[0]
    burn_rate = [t for t in texts if "High Burn Rate" in t]
    assert len(burn_rate) == (burn_rate_day is not None), texts
    assert all(str(burn_rate_day) in t for t in burn_rate), burn_rate
    assert [t for t in texts if "Heliox Run Failed" in t] == [], texts
    bodies = [r.body for r in slack.requests]
    assert len(bodies) == len(set(bodies)), "a Slack message was posted twice"
    assert all(r.status == 200 for r in slack.requests), [(r.status, r.answer) for r in slack.requests]


# --- the deployment -------------------------------------------------------------------------------


def seed_fleet(yesterday: dt.date) -> Callable[[dict[str, str], Path, str], None]:
    """``heliox seed-demo``: 20 GPUs x 20 days ending yesterday, before the processes start."""

    def seed(env: dict[str, str], cwd: Path, heliox_url: str) -> None:
        seed_command = ["seed-demo", "--database-url", heliox_url, "--gpus", "20", "--days", "20"]
        result = subprocess.run(
            [str(BIN / "heliox"), *seed_command, "--end-date", yesterday.isoformat()],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        print(f"fleet seeded: {result.stdout.strip().splitlines()[-1]}", flush=True)

    return seed


# --- the test --------------------------------------------------------------------------------------


def test_webserver_and_daemon_on_postgres_end_to_end(
    tmp_path: Path,
    create_postgres_database: Callable[[str], str],
    slack_server: FakeSlackWebhook,
    request: pytest.FixtureRequest,
) -> None:
    today = dt.datetime.now(dt.UTC).date()
    yesterday = today - dt.timedelta(days=1)
    days = [today - dt.timedelta(days=n) for n in range(BACKFILL_DAYS + 1, 1, -1)]  # 14 days before it
    prometheus = optional_prometheus(request)
    settings_env = {**SETTINGS_ENV, **ingestion_env(tmp_path, prometheus)}

    with deployment(
        tmp_path, create_postgres_database, slack_server, settings_env, prepare=seed_fleet(yesterday)
    ) as deploy:
        gql = deploy.graphql

        # A run status sensor ignores runs that finished before its first tick: let it tick once.
        deploy.wait_for(
            "the first tick of daily_summary_sensor", lambda: sensor_ticks(gql, "daily_summary_sensor")
        )
        deploy.log("daily_summary_sensor has ticked")

        # --- 3. the morning refresh (the sensor sends the summary after it) and a 14-day backfill
        refresh_id = launch_run(
            gql,
            "daily_summary_refresh_job",
            {},
            {"dagster/partition": yesterday.isoformat()},
        )
        first_backfill = launch_backfill(gql, days)
        deploy.log(f"launched refresh run {refresh_id[:8]} and backfill {first_backfill}")

        assert deploy.wait_for("the refresh run", lambda: finished_run(gql, refresh_id)) == "SUCCESS"
        deploy.log("refresh run succeeded")
        # The run the sensor requests for this refresh (its run key names the refresh run).
        summary_run = deploy.wait_for(
            "daily_summary_job launched by daily_summary_sensor",
            lambda: next(
                (
                    r
                    for r in runs(gql, pipelineName="daily_summary_job")
                    if tags_of(r).get("dagster/run_key") == f"daily-summary-after:{refresh_id}"
                    and r["status"] in FINISHED_RUN
                ),
                None,
            ),
        )
        assert tags_of(summary_run)["dagster/sensor_name"] == "daily_summary_sensor"
        assert summary_run["status"] == "SUCCESS"
        assert tags_of(summary_run)["heliox/report_date"] == yesterday.isoformat()
        deploy.log(f"sensor-launched daily_summary_job {summary_run['runId'][:8]} succeeded")

        # The same summary launched again by hand (say, from the launchpad): the ledger sends it once.
        again_id = launch_run(
            gql,
            "daily_summary_job",
            {"ops": {"send_daily_summary": {"config": {"report_date": yesterday.isoformat()}}}},
            {},
        )
        assert (
            deploy.wait_for("the repeated daily_summary_job", lambda: finished_run(gql, again_id))
            == "SUCCESS"
        )

        done = deploy.wait_for("the first backfill", lambda: finished_backfill(gql, first_backfill))
        assert done["status"] == "COMPLETED_SUCCESS", done
        [first_run] = done["runs"]  # single-run backfill policy: one run for the 14 days
        assert first_run["status"] == "SUCCESS"
        assert tags_of(first_run)["dagster/asset_partition_range_start"] == days[0].isoformat()
        assert tags_of(first_run)["dagster/asset_partition_range_end"] == days[-1].isoformat()
        deploy.log(f"backfill {first_backfill} completed with run {first_run['runId'][:8]}")
        deploy.wait_for("no run in progress", lambda: no_run_in_progress(gql))

        # --- 4. checks
        after_first = assert_days_stored_once(deploy.heliox_engine, days)
        assert all(day["cost_usd"] > BURN_RATE_THRESHOLD for day in after_first.values())
        assert_slack_holds_one_summary(slack_server, yesterday)
        alerts = ledger(deploy.heliox_engine)
        assert alerts[f"daily-summary:{yesterday}"] == ("sent", 1)
        assert not [key for key in alerts if key.startswith("burn-rate:")], alerts
        expected = {day.isoformat(): 1 for day in days}
        assert materializations_per_partition(deploy.dagster_engine, first_backfill) == expected
        stored = stored_runs(deploy.dagster_engine)
        for run_id in (refresh_id, summary_run["runId"], again_id, first_run["runId"]):
            assert stored[run_id][1] == "SUCCESS", stored[run_id]
        assert stored[refresh_id][0] == "daily_summary_refresh_job"
        assert {job for job, _ in stored.values()} >= {"daily_summary_refresh_job", "daily_summary_job"}
        assert [s for s in stored.values() if s[1] in ("FAILURE", "CANCELED")] == []
        assert stored_backfill_status(deploy.dagster_engine, first_backfill) == "COMPLETED_SUCCESS"
        deploy.log(f"checked: {len(days)} days once each, 1 summary in Slack, {len(stored)} runs in Postgres")

        # --- 5. real signals in: exports dropped into the landing folder, telemetry backfilled
        landed = land_real_signals(deploy, Path(settings_env["HELIOX_FOCUS_DIR"]), prometheus, today)
        if landed["backfill"] is not None:
            done = deploy.wait_for(
                "the utilization backfill", lambda: finished_backfill(gql, landed["backfill"])
            )
            assert done["status"] == "COMPLETED_SUCCESS", done
            assert [r["status"] for r in done["runs"]] == ["SUCCESS"]  # one run per UTC day
            assert_telemetry_joined(deploy)
        deploy.wait_for("no run in progress", lambda: no_run_in_progress(gql))
        assert_slack_holds_one_summary(slack_server, yesterday, burn_rate_day=today)
        burn_rate_keys = {k: v for k, v in ledger(deploy.heliox_engine).items() if k.startswith("burn-rate:")}
        assert burn_rate_keys == {f"burn-rate:{today}:100": ("sent", 1)}, burn_rate_keys
        assert [
            s for s in stored_runs(deploy.dagster_engine).values() if s[1] in ("FAILURE", "CANCELED")
        ] == []
        deploy.log(
            f"checked: imports, refreshes and today's alert by the daemon alone ({landed['latency']:.1f} s)"
        )

        # --- 6. the same 14 days again; the daemon dies while the backfill is under way
        second_requested = dt.datetime.now(dt.UTC)
        second_backfill = launch_backfill(gql, days)
        # Kill the daemon as soon as the backfill daemon has created the backfill's run: the run is
        # then NOT_STARTED (created on this backfill iteration, not yet submitted to the queue) or
        # QUEUED, and the backfill cannot be complete, since the daemon marks it complete on a
        # later iteration (its loop runs every 30 s) once the run has finished. So the restarted
        # daemon has to finish the job: submit the run the interrupted iteration created (not a
        # new one: the days must not be requested twice), dequeue and launch it (the run queue is
        # in the daemon), and mark the backfill complete. Were the run already started, it would
        # live on in the code server the killed daemon spawned, which waits for its runs before
        # shutting down (in production, runs live in the code server container anyway).
        deploy.wait_for("the second backfill's run", lambda: backfill(gql, second_backfill)["runs"])
        deploy.daemon.kill_main_process()
        at_kill = backfill(gql, second_backfill)
        deploy.log(f"daemon SIGKILLed: backfill {at_kill['status']}, its run {at_kill['runs'][0]['status']}")
        assert at_kill["status"] == "REQUESTED", f"the backfill finished before the kill: {at_kill}"

        restarted = time.time()
        deploy.daemon.start("dagster-daemon-restarted")
        deploy.wait_for(
            "heartbeats of the restarted daemon",
            lambda: daemons_heartbeating_since(gql, restarted),
            STARTUP_TIMEOUT,
        )
        deploy.log("daemon restarted and heartbeating")
        done = deploy.wait_for("the second backfill", lambda: finished_backfill(gql, second_backfill))
        assert done["status"] == "COMPLETED_SUCCESS", done
        [second_run] = done["runs"]
        assert second_run["runId"] == at_kill["runs"][0]["runId"], "the restarted daemon made another run"
        assert second_run["status"] == "SUCCESS"
        deploy.log(f"backfill {second_backfill} completed with run {second_run['runId'][:8]}")
        deploy.wait_for("no run in progress", lambda: no_run_in_progress(gql))

        after_second = assert_days_stored_once(deploy.heliox_engine, days)
        for day in days:
            assert after_second[day]["computed_at"] > second_requested, "the second backfill rewrote it"
            rewritten = {k: v for k, v in after_second[day].items() if k != "computed_at"}
            assert rewritten == {k: v for k, v in after_first[day].items() if k != "computed_at"}
        assert materializations_per_partition(deploy.dagster_engine, second_backfill) == expected
        assert_slack_holds_one_summary(slack_server, yesterday, burn_rate_day=today)
        assert ledger(deploy.heliox_engine)[f"daily-summary:{yesterday}"] == ("sent", 1)
        stored = stored_runs(deploy.dagster_engine)
        assert stored[second_run["runId"]][1] == "SUCCESS"
        assert [s for s in stored.values() if s[1] in ("FAILURE", "CANCELED")] == []
        assert stored_backfill_status(deploy.dagster_engine, second_backfill) == "COMPLETED_SUCCESS"
        deploy.log(
            f"checked after the restart: {len(stored)} runs, {len(slack_texts(slack_server))} Slack messages"
        )
