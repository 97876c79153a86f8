"""Real Dagster processes for the end-to-end tests: ``dagster-webserver`` and ``dagster-daemon run``
(and, as in Docker Compose, a standalone ``dagster code-server``) on a copy of the production
instance file (``deploy/dagster.yaml``, storage in PostgreSQL), driven through the webserver's
GraphQL API the way the UI drives it, against a Heliox database in PostgreSQL and the loopback
Slack server.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, redirect_stdout, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests
import yaml
from sqlalchemy import Engine, create_engine, text

from heliox_orchestration.settings import ENVIRONMENT_VARIABLES
from heliox_orchestration_tests.dagster_storage import dagster_storage_env
from heliox_orchestration_tests.slack_server import FakeSlackWebhook

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
INSTANCE_FILE = ROOT / "deploy" / "dagster.yaml"
WORKSPACE_FILE = ROOT / "workspace.yaml"
LOCATION = "heliox_orchestration"  # workspace.yaml's location_name
REPOSITORY = "__repository__"  # the repository of a Definitions object

# Safety nets only (the daemon's backfill loop runs every 30 s, its sensors every 30 s).
STARTUP_TIMEOUT = 120.0
RUN_TIMEOUT = 150.0
POLL_SECONDS = 0.25

FINISHED_RUN = {"SUCCESS", "FAILURE", "CANCELED"}
UNFINISHED_RUN = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"]

# The run config the tests add to the runs they launch: none. The code location's executor runs
# every run's steps in its worker process (heliox_orchestration/definitions.py), as launched from
# the launchpad, the backfill dialog, a schedule or a sensor alike.
IN_PROCESS: dict[str, Any] = {}

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

    def kill_process_group(self) -> None:
        """SIGKILL every process of the current group at once (the process, its children and the
        runs it started), as a lost container or ``kill -9`` of each would: none of them cleans up."""
        assert self.popen is not None
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)

    def kill_main_process(self) -> None:
        """SIGKILL the process itself, as a crash would; its children are left to themselves."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=30)

    def stop(self) -> None:
        """SIGKILL every process group this service ever had (orphaned code servers and run
        workers included): the test is over, and a graceful shutdown only costs seconds."""
        for group in self.process_groups:
            with suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        if self.popen is not None:
            with suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=10)

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
    code_server: Service | None = None  # a standalone code server, as in Docker Compose
    code_server_port: int | None = None

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started_at:6.1f}s] {message}", flush=True)

    def assert_alive(self) -> None:
        """The webserver and the daemon, once started, are still running."""
        for service in (self.webserver, self.daemon):
            if service.popen is not None:
                service.assert_alive()

    def tails(self) -> str:
        services = (self.webserver, self.daemon, *([self.code_server] if self.code_server else []))
        return "\n".join(s.tail() for s in services)

    def wait_for_code_server(self) -> None:
        port = self.code_server_port
        assert port is not None
        self.wait_for("the code server's health check", lambda: code_server_serving(port), STARTUP_TIMEOUT)

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


def code_server_serving(port: int) -> bool:
    """What ``dagster api grpc-health-check`` asks (the compose health check), in this process."""
    from dagster._grpc.client import DagsterGrpcClient

    with redirect_stdout(io.StringIO()):  # it prints the gRPC error while the server is down
        return DagsterGrpcClient(port=port, host="127.0.0.1").health_check_query() == "SERVING"


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

RELOAD_LOCATION = """
mutation ReloadLocation($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) { __typename }
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
    ... on Runs { results { runId jobName status startTime endTime tags { key value } } }
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


def reload_location(gql: GraphQL) -> None:
    """Ask the webserver to reconnect to the code location now (as the UI's Reload button does)
    instead of waiting for its next check, e.g. after the code server was restarted."""
    result = gql(RELOAD_LOCATION, name=LOCATION)["reloadRepositoryLocation"]
    assert result["__typename"] == "WorkspaceLocationEntry", result


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


def no_run_in_progress(gql: GraphQL) -> bool:
    return not runs(gql, statuses=UNFINISHED_RUN)


# --- what the databases and Slack hold -------------------------------------------------------------


def slack_texts(slack: FakeSlackWebhook) -> list[str]:
    return [r.json["text"] for r in slack.requests if r.status == 200]


def ledger(heliox_engine: Engine) -> dict[str, tuple[str, int]]:
    with heliox_engine.connect() as conn:
        rows = conn.execute(text("SELECT alert_key, status, attempts FROM alert_ledger")).all()
    return {key: (status, attempts) for key, status, attempts in rows}


def run_messages(dagster_engine: Engine, run_id: str) -> list[str]:
    """The messages of a run's event log, oldest first."""
    from dagster import EventLogEntry
    from dagster._serdes import deserialize_value

    with dagster_engine.connect() as conn:
        rows = conn.execute(
            text("SELECT event FROM event_logs WHERE run_id = :id ORDER BY id"), {"id": run_id}
        ).scalars()
        entries = [deserialize_value(row, EventLogEntry) for row in rows]
    return [entry.message for entry in entries]


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


def instance_file(home: Path, overrides: Mapping[str, Mapping[str, Any]] | None) -> None:
    """``deploy/dagster.yaml`` into ``home``: verbatim, or with some settings of its sections replaced."""
    if not overrides:
        (home / "dagster.yaml").write_text(INSTANCE_FILE.read_text())
        return
    config = yaml.safe_load(INSTANCE_FILE.read_text())
    for section, values in overrides.items():
        config[section] = {**config[section], **values}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


@contextmanager
def deployment(
    tmp_path: Path,
    create_postgres_database: Callable[[str], str],
    slack: FakeSlackWebhook,
    settings_env: Mapping[str, str],
    *,
    prepare: Callable[[dict[str, str], Path, str], None] | None = None,
    instance_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    standalone_code_server: bool = False,
) -> Iterator[Deployment]:
    """Fresh Dagster and Heliox databases, then the processes, up and heartbeating.

    ``settings_env``: Heliox settings of every process. ``prepare(env, cwd, heliox_url)`` runs
    before the processes start (e.g. ``heliox seed-demo``). Without a standalone code server the
    webserver and the daemon each start their own from workspace.yaml (as ``dagster dev`` does);
    with one, they load it over gRPC, as deploy/workspace.yaml has them do in Docker Compose.
    """
    started = time.monotonic()
    dagster_url = create_postgres_database("heliox_e2e_dagster")
    heliox_url = create_postgres_database("heliox_e2e")
    home = tmp_path / "dagster_home"
    home.mkdir()
    instance_file(home, instance_overrides)
    cwd = tmp_path / "cwd"  # not the checkout: no developer .env is read
    cwd.mkdir()
    port = free_port()
    env = process_env(
        {
            "DAGSTER_HOME": str(home),
            **dagster_storage_env(dagster_url),
            "HELIOX_DATABASE_URL": heliox_url,
            "SLACK_WEBHOOK_URL": slack.url(),
            "HELIOX_DATA_DIR": str(tmp_path / "heliox-data"),
            "DAGSTER_WEBSERVER_URL": f"http://127.0.0.1:{port}",
            **settings_env,
        }
    )
    if prepare is not None:
        prepare(env, cwd, heliox_url)

    code_server, code_server_port = None, None
    workspace_file = WORKSPACE_FILE
    if standalone_code_server:
        grpc_port = free_port()
        workspace_file = tmp_path / "workspace.yaml"
        server = {"host": "127.0.0.1", "port": grpc_port, "location_name": LOCATION}
        workspace_file.write_text(yaml.safe_dump({"load_from": [{"grpc_server": server}]}))
        code_server_port = grpc_port
        code_server = Service(
            "dagster-code-server",
            [
                str(BIN / "dagster"),
                *("code-server", "start", "-h", "127.0.0.1", "-p", str(grpc_port)),
                *("-m", "heliox_orchestration.definitions", "--location-name", LOCATION),
            ],
            env,
            cwd,
            tmp_path,
        )
    workspace = ["-w", str(workspace_file)]
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
        webserver,
        daemon,
        GraphQL(f"http://127.0.0.1:{port}"),
        dagster_engine,
        heliox_engine,
        slack,
        started,
        code_server,
        code_server_port,
    )
    deploy.log("databases created")
    try:
        daemon_started = time.time()
        if code_server is not None:
            code_server.start()  # first, as compose's depends_on has it
            deploy.wait_for_code_server()
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
        if code_server is not None:
            code_server.stop()
        dagster_engine.dispose()
        heliox_engine.dispose()
