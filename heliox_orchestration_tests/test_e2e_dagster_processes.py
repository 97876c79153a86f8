"""End to end on real processes: ``dagster-webserver`` and ``dagster-daemon run`` on the production
instance file (``deploy/dagster.yaml``, storage in PostgreSQL), driven through the webserver's
GraphQL API the way the UI drives it, against a fresh Heliox database in PostgreSQL and the
loopback Slack server.

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
5. Backfills the same 14 days again, SIGKILLs the daemon once the backfill's run exists and
   before the backfill is done, restarts it, and checks that the backfill completes with one run,
   every day materialized once and stored once, and nothing more in Slack.

The instance file is ``deploy/dagster.yaml`` unmodified: the intervals that set the pace (the
daemon's 30-second sensor and backfill loops) are not instance settings. The runs the test
launches run their steps in process (see ``IN_PROCESS``); everything else is as in production.

The schedules run by default, so an hourly burn-rate check (or the 10:00/16:00 idle check, or the
09:00 summary) may fire while the test runs. The test is built to hold either way: no usage exists
for today (so today is never over the threshold), and any summary the 09:00 schedule requests is
for the same day, which the alert ledger sends only once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from sqlalchemy import Engine, create_engine, func, select, text

from heliox_orchestration.db.schema import daily_gpu_cost_days, daily_gpu_costs, gpu_usage_hourly
from heliox_orchestration.settings import ENVIRONMENT_VARIABLES
from heliox_orchestration_tests.dagster_storage import dagster_storage_env
from heliox_orchestration_tests.slack_server import FakeSlackWebhook

# The whole test, fixtures included, stays under 5 minutes (about 2.5 on a 2-CPU machine).
pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
INSTANCE_FILE = ROOT / "deploy" / "dagster.yaml"
WORKSPACE_FILE = ROOT / "workspace.yaml"
LOCATION = "heliox_orchestration"  # workspace.yaml's location_name
REPOSITORY = "__repository__"  # the repository of a Definitions object
BACKFILL_DAYS = 14
# Every backfilled demo day costs about $2,000: over this threshold, so an alert on a past day
# would show. Today has no usage at all, so the hourly check can never alert either.
BURN_RATE_THRESHOLD = Decimal("1000")

# Safety nets only (the daemon's backfill loop runs every 30 s, its sensors every 30 s).
STARTUP_TIMEOUT = 120.0
RUN_TIMEOUT = 150.0
POLL_SECONDS = 0.25

FINISHED_RUN = {"SUCCESS", "FAILURE", "CANCELED"}
UNFINISHED_RUN = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"]
BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}

# Runs the test launches execute their steps in the run worker's process. Dagster's default
# executor starts one more process per step, each importing Heliox again (about 3 CPU-seconds):
# on a 2-CPU machine the first half of the test alone then took over 3 minutes. The launchpad and the
# backfill dialog take the same run config; the runs the sensors launch keep the default.
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}

T = TypeVar("T")


# --- processes -------------------------------------------------------------------------------------


@dataclass
class Service:
    """A Dagster process in its own process group, its output in a log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log_dir: Path
    popen: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    process_groups: list[int] = field(default_factory=list)

    def start(self, log_name: str | None = None) -> None:
        self.log_path = self.log_dir / f"{log_name or self.name}.log"
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the code server and runs too
            )
        self.process_groups.append(self.popen.pid)

    def assert_alive(self) -> None:
        assert self.popen is not None
        code = self.popen.poll()
        assert code is None, f"{self.name} exited with {code}:\n{self.tail()}"

    def kill_main_process(self) -> None:
        """SIGKILL the process itself, as a crash would; its children are left to themselves."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=30)

    def stop(self) -> None:
        """Terminate every process group this service ever had (orphaned code servers included)."""
        for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
            for group in self.process_groups:
                with suppress(ProcessLookupError):
                    os.killpg(group, sig)
            if self.popen is not None:
                with suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=grace)

    def tail(self, lines: int = 60) -> str:
        if self.log_path is None or not self.log_path.exists():
            return f"({self.name}: no output)"
        content = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- last {len(content)} lines of {self.log_path.name} ---\n" + "\n".join(content)


@dataclass
class Deployment:
    webserver: Service
    daemon: Service
    graphql: GraphQL
    dagster_engine: Engine
    heliox_engine: Engine
    slack: FakeSlackWebhook
    started_at: float = field(default_factory=time.monotonic)

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started_at:6.1f}s] {message}", flush=True)

    def assert_alive(self) -> None:
        self.webserver.assert_alive()
        self.daemon.assert_alive()

    def tails(self) -> str:
        return "\n".join(s.tail() for s in (self.webserver, self.daemon))

    def wait_for(self, what: str, probe: Callable[[], T | None], timeout: float = RUN_TIMEOUT) -> T:
        """Poll ``probe`` until it returns something truthy; the timeout is only a safety net."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            self.assert_alive()
            last = probe()
            if last:
                return last
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up after {timeout:.0f}s waiting for {what}\n{self.tails()}")
            time.sleep(POLL_SECONDS)


class GraphQL:
    """POSTs to the webserver's /graphql, as the UI does."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()

    def server_info(self) -> dict[str, Any] | None:
        try:
            response = self.session.get(f"{self.base_url}/server_info", timeout=5)
        except requests.ConnectionError:
            return None
        return response.json() if response.status_code == 200 else None

    def __call__(self, query: str, **variables: Any) -> dict[str, Any]:
        response = self.session.post(
            f"{self.base_url}/graphql", json={"query": query, "variables": variables}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), json.dumps(body["errors"], indent=1)
        return body["data"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- GraphQL: the documents the UI sends (shapes checked against dagster-graphql 1.13.27) ---------

LOCATION_STATUS = """
query LocationStatus {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}"""

DAEMON_HEALTH = """
query DaemonHealth {
  instance {
    daemonHealth {
      allDaemonStatuses { daemonType required healthy lastHeartbeatTime }
    }
  }
}"""

SENSOR_TICKS = """
query SensorTicks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: 10) { status timestamp runIds skipReason } } }
    ... on Error { message }
  }
}"""

LAUNCH_RUN = """
mutation LaunchPipelineExecution($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}"""

LAUNCH_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PartitionKeysNotFoundError { message partitionKeys }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}"""

BACKFILL = """
query Backfill($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill {
      id
      status
      numPartitions
      runs { runId status jobName tags { key value } }
      error { message }
    }
    ... on Error { message }
  }
}"""

RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId jobName status tags { key value } } }
    ... on Error { message }
  }
}"""


def launch_run(gql: GraphQL, job: str, run_config: dict[str, Any], tags: dict[str, str]) -> str:
    data = gql(
        LAUNCH_RUN,
        executionParams={
            "selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "jobName": job},
            "runConfigData": {**run_config, **IN_PROCESS},
            "mode": "default",
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        },
    )["launchPipelineExecution"]
    assert data["__typename"] == "LaunchRunSuccess", data
    return data["run"]["runId"]


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


def runs(gql: GraphQL, **run_filter: Any) -> list[dict[str, Any]]:
    data = gql(RUNS, filter=run_filter)["runsOrError"]
    assert data["__typename"] == "Runs", data
    return data["results"]


def run_status(gql: GraphQL, run_id: str) -> str:
    (run,) = runs(gql, runIds=[run_id])
    return run["status"]


def tags_of(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}


def location_loaded(gql: GraphQL) -> bool:
    workspace = gql(LOCATION_STATUS)["workspaceOrError"]
    assert workspace["__typename"] == "Workspace", workspace
    entries = {e["name"]: e for e in workspace["locationEntries"]}
    entry = entries.get(LOCATION)
    if entry is None or entry["loadStatus"] != "LOADED":
        return False
    location = entry["locationOrLoadError"]
    assert location["__typename"] == "RepositoryLocation", f"{LOCATION} failed to load: {location}"
    return True


def daemons_heartbeating_since(gql: GraphQL, since: float) -> list[str] | None:
    """The required daemons, once each has sent a heartbeat after ``since`` (epoch seconds)."""
    statuses = gql(DAEMON_HEALTH)["instance"]["daemonHealth"]["allDaemonStatuses"]
    required = [s for s in statuses if s["required"]]
    if required and all(s["healthy"] and (s["lastHeartbeatTime"] or 0) > since for s in required):
        return sorted(s["daemonType"] for s in required)
    return None


def sensor_ticks(gql: GraphQL, name: str) -> list[dict[str, Any]]:
    selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": name}
    data = gql(SENSOR_TICKS, selector=selector)["sensorOrError"]
    assert data["__typename"] == "Sensor", data
    assert data["sensorState"]["status"] == "RUNNING", f"{name} is not running by default"
    return data["sensorState"]["ticks"]


def finished_run(gql: GraphQL, run_id: str) -> str | None:
    status = run_status(gql, run_id)
    return status if status in FINISHED_RUN else None


def finished_backfill(gql: GraphQL, backfill_id: str) -> dict[str, Any] | None:
    data = backfill(gql, backfill_id)
    return data if data["status"] in BACKFILL_DONE else None


def no_run_in_progress(gql: GraphQL) -> bool:
    return not runs(gql, statuses=UNFINISHED_RUN)


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


def slack_texts(slack: FakeSlackWebhook) -> list[str]:
    return [r.json["text"] for r in slack.requests if r.status == 200]


def assert_slack_holds_one_summary(slack: FakeSlackWebhook, report_date: dt.date) -> None:
    texts = slack_texts(slack)
    summaries = [t for t in texts if "Heliox Daily Summary" in t]
    assert len(summaries) == 1, texts
    assert report_date.isoformat() in summaries[0], summaries[0]
    assert [t for t in texts if "High Burn Rate" in t] == [], texts
    assert [t for t in texts if "Heliox Run Failed" in t] == [], texts
    bodies = [r.body for r in slack.requests]
    assert len(bodies) == len(set(bodies)), "a Slack message was posted twice"
    assert all(r.status == 200 for r in slack.requests), [(r.status, r.answer) for r in slack.requests]


def ledger(heliox_engine: Engine) -> dict[str, tuple[str, int]]:
    with heliox_engine.connect() as conn:
        rows = conn.execute(text("SELECT alert_key, status, attempts FROM alert_ledger")).all()
    return {key: (status, attempts) for key, status, attempts in rows}


# --- the deployment --------------------------------------------------------------------------------


def process_env(extra: dict[str, str]) -> dict[str, str]:
    """The test's environment without any Dagster or Heliox setting of the developer's, plus ``extra``."""
    heliox_names = {name for name, _, _ in ENVIRONMENT_VARIABLES}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DAGSTER_", "HELIOX_", "PYTEST_")) and k not in heliox_names
    }
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


@contextmanager
def deployment(
    tmp_path: Path,
    create_postgres_database: Callable[[str], str],
    slack: FakeSlackWebhook,
    yesterday: dt.date,
) -> Iterator[Deployment]:
    started = time.monotonic()
    dagster_url = create_postgres_database("heliox_e2e_dagster")
    heliox_url = create_postgres_database("heliox_e2e")
    home = tmp_path / "dagster_home"
    home.mkdir()
    # The production instance file, unmodified: its intervals are the daemon's defaults anyway.
    shutil.copy(INSTANCE_FILE, home / "dagster.yaml")
    cwd = tmp_path / "cwd"  # not the checkout: no developer .env is read
    cwd.mkdir()
    port = free_port()
    env = process_env(
        {
            "DAGSTER_HOME": str(home),
            **dagster_storage_env(dagster_url),
            "HELIOX_DATABASE_URL": heliox_url,
            "SLACK_WEBHOOK_URL": slack.url(),
            "TIMEZONE": "UTC",
            "BURN_RATE_THRESHOLD_USD": str(BURN_RATE_THRESHOLD),
            # The fleet ends yesterday: no stale-data alert for the hours of today without usage.
            "STALE_DATA_HOURS": "48",
            "HELIOX_DATA_DIR": str(tmp_path / "heliox-data"),
            "DAGSTER_WEBSERVER_URL": f"http://127.0.0.1:{port}",
        }
    )
    seed_command = ["seed-demo", "--database-url", heliox_url, "--gpus", "20", "--days", "20"]
    seed = subprocess.run(
        [str(BIN / "heliox"), *seed_command, "--end-date", yesterday.isoformat()],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert seed.returncode == 0, seed.stdout + seed.stderr

    workspace = ["-w", str(WORKSPACE_FILE)]
    webserver = Service(
        "dagster-webserver",
        [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), *workspace],
        env,
        cwd,
        tmp_path,
    )
    daemon = Service("dagster-daemon", [str(BIN / "dagster-daemon"), "run", *workspace], env, cwd, tmp_path)
    dagster_engine = create_engine(dagster_url)
    heliox_engine = create_engine(heliox_url)
    deploy = Deployment(
        webserver, daemon, GraphQL(f"http://127.0.0.1:{port}"), dagster_engine, heliox_engine, slack, started
    )
    deploy.log(f"databases created, fleet seeded: {seed.stdout.strip().splitlines()[-1]}")
    try:
        daemon_started = time.time()
        webserver.start()
        daemon.start()
        deploy.wait_for("GET /server_info", deploy.graphql.server_info, STARTUP_TIMEOUT)
        deploy.wait_for(f"code location {LOCATION}", lambda: location_loaded(deploy.graphql), STARTUP_TIMEOUT)
        daemons = deploy.wait_for(
            "daemon heartbeats",
            lambda: daemons_heartbeating_since(deploy.graphql, daemon_started),
            STARTUP_TIMEOUT,
        )
        deploy.log(f"webserver up, {LOCATION} loaded, daemons heartbeating: {', '.join(daemons)}")
        yield deploy
    except BaseException:
        print(deploy.tails())
        raise
    finally:
        daemon.stop()
        webserver.stop()
        dagster_engine.dispose()
        heliox_engine.dispose()


# --- the test --------------------------------------------------------------------------------------


def test_webserver_and_daemon_on_postgres_end_to_end(
    tmp_path: Path, create_postgres_database: Callable[[str], str], slack_server: FakeSlackWebhook
) -> None:
    today = dt.datetime.now(dt.UTC).date()
    yesterday = today - dt.timedelta(days=1)
    days = [today - dt.timedelta(days=n) for n in range(BACKFILL_DAYS + 1, 1, -1)]  # 14 days before it

    with deployment(tmp_path, create_postgres_database, slack_server, yesterday) as deploy:
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
            {"ops": {"gpu_cost_summary": {"config": {"report_date": yesterday.isoformat()}}}},
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

        # --- 5. the same 14 days again; the daemon dies while the backfill is under way
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
        assert_slack_holds_one_summary(slack_server, yesterday)
        assert ledger(deploy.heliox_engine)[f"daily-summary:{yesterday}"] == ("sent", 1)
        stored = stored_runs(deploy.dagster_engine)
        assert stored[second_run["runId"]][1] == "SUCCESS"
        assert [s for s in stored.values() if s[1] in ("FAILURE", "CANCELED")] == []
        assert stored_backfill_status(deploy.dagster_engine, second_backfill) == "COMPLETED_SUCCESS"
        deploy.log(
            f"checked after the restart: {len(stored)} runs, {len(slack_texts(slack_server))} Slack messages"
        )
