"""A run whose worker and code server are killed ends within its bound, and holds nothing back.

Real processes, as deployed with Docker Compose (``dagster_processes.py``): a standalone
``dagster code-server``, ``dagster-webserver`` and ``dagster-daemon run`` on a copy of
``deploy/dagster.yaml`` (PostgreSQL storage), the loopback Slack server.

1. An alert run (``stale_data_alert_job``, which needs no cost data) is launched from the
   launchpad with a ``dagster/max_runtime`` tag of 30 s (the documented way to give one run its
   own bound). Slack never answers its message: the run is STARTED, inside its send.
2. ``kill -9`` of the code server and, in the same instant, of the run worker it started (the
   whole process group, as when the container is lost): nothing is left to report the run.
   The code server is started again, as Compose's restart policy does.
3. Another alert of the same kind is launched and starts, and succeeds, while the orphaned run
   is still STARTED: no stuck run holds back its kind (issue 12 C12).
4. Run monitoring ends the run FAILURE within the bound: 30 s + ``poll_interval_seconds``, which
   this copy of the instance file lowers from 30 to 2 s (the only change to it) so that the test
   waits seconds, not minutes. The run-failure sensor then posts one notice.
5. Slack received exactly: the hung message, the second alert, the run-failure notice.

The schedules' hours are set 12 hours away, so no schedule or stale-data check fires meanwhile.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from heliox_orchestration_tests.dagster_processes import (
    Deployment,
    deployment,
    finished_run,
    launch_run,
    location_loaded,
    reload_location,
    run_messages,
    runs,
    sensor_ticks,
    slack_texts,
    tags_of,
)
from heliox_orchestration_tests.slack_server import FakeSlackWebhook, Reply

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.timeout(240)]

# The orphaned run's own bound, set at launch: long enough for the code server to restart, the
# location to reload and the second alert to start meanwhile (15-35 s here: each code server
# start loads the definitions, 5-9 s), on a busy 2-core machine.
MAX_RUNTIME = 50
POLL_INTERVAL = 2  # run_monitoring.poll_interval_seconds of this test's instance file
# The daemon's monitoring pass, and storage round trips on a busy 2-core machine, on top.
TOLERANCE = 10


def stale_alert_config(newest_usage_hour: dt.datetime) -> dict[str, object]:
    config = {"newest_usage_hour": newest_usage_hour.isoformat()}
    return {"ops": {"send_stale_data_alert": {"config": config}}}


def run_worker_pid(deploy: Deployment, run_id: str) -> int | None:
    """The pid the code server reported when it started the run's worker process."""
    for message in run_messages(deploy.dagster_engine, run_id):
        if message.startswith("Started process for run (pid: "):
            return int(message.removeprefix("Started process for run (pid: ").rstrip(").").strip())
    return None


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # killed, not reaped yet


def test_orphaned_alert_run_ends_within_its_bound_and_blocks_nothing(
    tmp_path: Path, create_postgres_database: Callable[[str], str], slack_server: FakeSlackWebhook
) -> None:
    now = dt.datetime.now(dt.UTC)
    quiet_hour = (now.hour + 12) % 24  # the schedules (and the stale-data check hours) are far away
    settings_env = {
        "TIMEZONE": "UTC",
        "BURN_RATE_CHECK_CRON": f"0 {quiet_hour} * * *",
        "IDLE_SPEND_CHECK_CRON": f"0 {quiet_hour} * * *",
        "DAILY_SUMMARY_HOUR": str(quiet_hour),
    }
    hour = now.replace(minute=0, second=0, microsecond=0)
    orphan_hour, other_hour = hour - dt.timedelta(hours=30), hour - dt.timedelta(hours=31)
    overrides = {"run_monitoring": {"poll_interval_seconds": POLL_INTERVAL}}

    with deployment(
        tmp_path,
        create_postgres_database,
        slack_server,
        settings_env,
        instance_overrides=overrides,
        standalone_code_server=True,
    ) as deploy:
        gql = deploy.graphql
        code_server = deploy.code_server
        assert code_server is not None and code_server.popen is not None
        # A run status sensor ignores runs that end before its first tick.
        deploy.wait_for("the sensor's first tick", lambda: sensor_ticks(gql, "run_failure_slack_sensor"))

        # --- 1. an alert run stuck in its Slack send
        slack_server.script(Reply.hang(600))
        orphan = launch_run(
            gql,
            "stale_data_alert_job",
            stale_alert_config(orphan_hour),
            {"dagster/max_runtime": str(MAX_RUNTIME)},
        )
        deploy.wait_for("the stuck run's Slack request", lambda: slack_server.requests)
        (stuck,) = runs(gql, runIds=[orphan])
        assert stuck["status"] == "STARTED"
        assert tags_of(stuck)["dagster/max_runtime"] == str(MAX_RUNTIME)
        assert tags_of(stuck)["heliox/alert"] == "stale-data"
        worker = run_worker_pid(deploy, orphan)
        assert worker is not None and os.getpgid(worker) == code_server.popen.pid
        deploy.log(f"run {orphan[:8]} STARTED, its worker (pid {worker}) waiting on Slack")

        # --- 2. kill -9 of the code server and the run worker, then the code server restarts.
        # Before the Slack client's 10 s timeout: the run never retries its message.
        code_server.kill_process_group()
        deploy.wait_for("the run worker to be gone", lambda: process_gone(worker), 10)
        code_server.start("dagster-code-server-restarted")
        deploy.wait_for_code_server()
        # The webserver may still hold the location as unreachable: reconnect it before launching.
        reload_location(gql)
        deploy.wait_for("the code location to reload", lambda: location_loaded(gql))
        deploy.log("code server and run worker SIGKILLed; code server restarted")

        # --- 3. the same kind of alert is not held back by the orphaned run
        other = launch_run(gql, "stale_data_alert_job", stale_alert_config(other_hour), {})
        assert deploy.wait_for("the second alert run", lambda: finished_run(gql, other)) == "SUCCESS"
        deploy.log(f"run {other[:8]} of the same kind succeeded")

        # --- 4. the run ends FAILURE within its bound, and the failure is posted
        assert deploy.wait_for("the orphaned run to end", lambda: finished_run(gql, orphan)) == "FAILURE"
        (ended,) = runs(gql, runIds=[orphan])
        runtime = ended["endTime"] - ended["startTime"]
        deploy.log(f"run {orphan[:8]} ended FAILURE after {runtime:.1f} s")
        assert MAX_RUNTIME <= runtime <= MAX_RUNTIME + POLL_INTERVAL + TOLERANCE, runtime
        (second,) = runs(gql, runIds=[other])
        assert second["startTime"] < ended["endTime"], "the second alert waited for the orphaned run"
        messages = run_messages(deploy.dagster_engine, orphan)
        assert f"Canceling due to exceeding maximum runtime of {MAX_RUNTIME} seconds." in messages
        assert any(m.startswith("This job is being forcibly marked as failed.") for m in messages), messages

        def notice() -> list[str]:
            return [t for t in slack_texts(slack_server) if "Heliox Run Failed" in t]

        deploy.wait_for("the run-failure notice", notice)
        deploy.log("run-failure notice posted")

    # --- 5. exactly what Slack received
    bodies = [r.body.decode() for r in slack_server.requests]
    assert len(bodies) == 3, bodies
    hung, second, failure = (r.json["text"] for r in slack_server.requests)
    assert "Stale" in hung and orphan_hour.strftime("%Y-%m-%d %H:%M") in bodies[0]
    assert "Stale" in second and other_hour.strftime("%Y-%m-%d %H:%M") in bodies[1]
    assert "Heliox Run Failed" in failure and "stale_data_alert_job" in failure
    assert [r.status for r in slack_server.requests[1:]] == [200, 200]
