"""Deployment files, validated by parsing (no Docker engine or cluster runs here).

Covers docker-compose.yml, Dockerfile, .dockerignore, deploy/dagster*.yaml (against Dagster's own
instance schema, and opened for real on PostgreSQL), deploy/workspace.yaml and the Helm values.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from heliox_orchestration.home import EMBEDDED_INSTANCE_FILE
from heliox_orchestration.settings import ENVIRONMENT_VARIABLES
from heliox_orchestration_tests.dagster_processes import free_port
from heliox_orchestration_tests.dagster_storage import dagster_storage_env

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
INSTANCE = ROOT / "deploy" / "dagster.yaml"
INSTANCE_URL = ROOT / "deploy" / "dagster-postgres-url.yaml"
WORKSPACE = ROOT / "deploy" / "workspace.yaml"
INIT_SCRIPT = ROOT / "deploy" / "postgres" / "init-databases.sh"
HELM_VALUES = ROOT / "deploy" / "helm" / "values.yaml"
BIN = Path(sys.executable).parent

DEPLOYMENT_FILES = [COMPOSE, DOCKERFILE, INSTANCE, INSTANCE_URL, WORKSPACE, INIT_SCRIPT, HELM_VALUES]
SECRET_VARIABLES = ("SLACK_WEBHOOK_URL", "HELIOX_DATABASE_URL")
DAGSTER_STORAGE_VARIABLES = (
    "DAGSTER_POSTGRES_HOST",
    "DAGSTER_POSTGRES_PORT",
    "DAGSTER_POSTGRES_USER",
    "DAGSTER_POSTGRES_PASSWORD",
    "DAGSTER_POSTGRES_DB",
)
# The image sets HELIOX_DATA_DIR itself (the embedded SQLite folder is unused in compose); it has
# no checkout, so no project folder (HELIOX_HOME): it names its database and DAGSTER_HOME.
COMPOSE_EXEMPT_SETTINGS = {"HELIOX_DATA_DIR", "HELIOX_HOME"}
INTERPOLATION = re.compile(r"^\$\{(?P<name>[A-Z][A-Z0-9_]*)(?P<op>:?[-?])?(?P<rest>.*)\}$")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "use the mapping form of `environment` (the tests read it)"
    return {str(k): str(v) for k, v in env.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def option(command: list[str], *names: str) -> str:
    for i, part in enumerate(command):
        if part in names:
            return command[i + 1]
    raise AssertionError(f"{names} not in {command}")


# --- docker-compose.yml ---------------------------------------------------------------------------


def test_compose_has_the_four_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"postgres", "user_code", "webserver", "daemon"}


def test_every_service_has_a_health_check(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and check.get("test"), f"{name} has no health check"
        assert not check.get("disable"), name


def test_services_start_in_order_of_health(services: dict[str, dict[str, Any]]) -> None:
    def conditions(name: str) -> dict[str, str]:
        depends = services[name].get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        return {dep: spec["condition"] for dep, spec in depends.items()}

    assert conditions("user_code") == {"postgres": "service_healthy"}
    for name in ("webserver", "daemon"):
        assert conditions(name) == {"postgres": "service_healthy", "user_code": "service_healthy"}


def test_processes_use_commands_of_the_installed_dagster(services: dict[str, dict[str, Any]]) -> None:
    """Every command the compose file runs exists, with those options, in the pinned Dagster."""
    code_server = command_of(services["user_code"])
    webserver = command_of(services["webserver"])
    daemon = command_of(services["daemon"])
    assert code_server[:3] == ["dagster", "code-server", "start"]
    assert option(code_server, "-m", "--module-name") == "heliox_orchestration.definitions"
    assert option(code_server, "-h", "--host") == "0.0.0.0"
    assert webserver[0] == "dagster-webserver" and option(webserver, "-h", "--host") == "0.0.0.0"
    assert daemon[:2] == ["dagster-daemon", "run"]
    health = [services[name]["healthcheck"]["test"][1:] for name in ("user_code", "daemon")]
    depth = {"dagster": 2, "dagster-daemon": 1, "dagster-webserver": 0}
    for argv in (code_server, webserver, daemon, *health):
        program = [str(BIN / argv[0]), *argv[1 : 1 + depth[argv[0]]]]
        result = subprocess.run([*program, "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{argv[:3]}: {result.stderr}"
        for flag in (part for part in argv if part.startswith("-")):
            assert re.search(rf"(^|[\s,]){re.escape(flag)}([\s,]|$)", result.stdout, re.M), (
                f"{' '.join(argv[:3])} has no option {flag}"
            )


def test_webserver_and_daemon_load_the_grpc_workspace(services: dict[str, dict[str, Any]]) -> None:
    from dagster._core.workspace.config_schema import process_workspace_config

    workspace = load_yaml(WORKSPACE)
    assert process_workspace_config(workspace).success
    [entry] = workspace["load_from"]
    server = entry["grpc_server"]
    assert server["host"] == "user_code"
    assert str(server["port"]) == option(command_of(services["user_code"]), "-p", "--port")
    assert server["location_name"] == option(command_of(services["user_code"]), "--location-name")
    assert services["user_code"]["healthcheck"]["test"][-1] == str(server["port"])
    image_workspace = "/opt/dagster/app/deploy/workspace.yaml"
    assert option(command_of(services["webserver"]), "-w", "--workspace") == image_workspace
    assert option(command_of(services["daemon"]), "-w", "--workspace") == image_workspace
    assert "deploy/workspace.yaml" in DOCKERFILE.read_text()


def test_slack_webhook_comes_from_the_environment_only(services: dict[str, dict[str, Any]]) -> None:
    env = env_of(services["user_code"])
    assert env["SLACK_WEBHOOK_URL"] in ("${SLACK_WEBHOOK_URL:-}", "${SLACK_WEBHOOK_URL}")
    # Only the code location (and the runs it starts) ever sees the webhook.
    for name in ("postgres", "webserver", "daemon"):
        assert "SLACK_WEBHOOK_URL" not in env_of(services[name]), name


def test_every_heliox_setting_can_be_set_through_compose(services: dict[str, dict[str, Any]]) -> None:
    env = env_of(services["user_code"])
    for name, _, _ in ENVIRONMENT_VARIABLES:
        if name in COMPOSE_EXEMPT_SETTINGS:
            continue
        assert name in env, f"user_code does not pass {name}"
        match = INTERPOLATION.match(env[name])
        assert match and match["name"] == name, f"{name}={env[name]!r} is not ${{{name}...}}"


def test_dagster_processes_share_one_storage_configuration(services: dict[str, dict[str, Any]]) -> None:
    envs = {name: env_of(services[name]) for name in ("user_code", "webserver", "daemon")}
    for name, env in envs.items():
        storage = {key: env.get(key) for key in DAGSTER_STORAGE_VARIABLES}
        assert None not in storage.values(), f"{name} lacks {storage}"
        assert storage == {key: envs["daemon"][key] for key in DAGSTER_STORAGE_VARIABLES}, name
    assert envs["daemon"]["DAGSTER_POSTGRES_HOST"] == "postgres"


def test_passwords_are_required_interpolations(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for key, value in env_of(service).items():
            # PROMETHEUS_PASSWORD is an external server's, needed only with basic auth.
            if "PASSWORD" in key and key != "PROMETHEUS_PASSWORD":
                match = INTERPOLATION.match(value)
                assert match and match["op"] == ":?", f"{name}.{key}={value!r} must be ${{{key}:?...}}"


def test_heliox_and_dagster_use_separate_databases(services: dict[str, dict[str, Any]]) -> None:
    env = env_of(services["user_code"])
    default_heliox_url = INTERPOLATION.match(env["HELIOX_DATABASE_URL"])
    assert default_heliox_url and default_heliox_url["op"] == ":-"
    heliox_url = default_heliox_url["rest"]
    assert heliox_url.startswith("postgresql+psycopg2://") and heliox_url.endswith("@postgres:5432/heliox")
    assert env["DAGSTER_POSTGRES_DB"] == "dagster"
    script = INIT_SCRIPT.read_text()
    assert "CREATE DATABASE dagster" in script and "CREATE DATABASE heliox" in script
    mounts = services["postgres"]["volumes"]
    assert any(
        m.startswith("./deploy/postgres/init-databases.sh:/docker-entrypoint-initdb.d/") for m in mounts
    )
    assert INIT_SCRIPT.stat().st_mode & 0o111, "init script must be executable"
    result = subprocess.run(["bash", "-n", str(INIT_SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_only_the_webserver_is_published_and_only_on_loopback(services: dict[str, dict[str, Any]]) -> None:
    for name in ("postgres", "user_code", "daemon"):
        assert not services[name].get("ports"), f"{name} must not publish ports"
    [port] = services["webserver"]["ports"]
    assert str(port).startswith("127.0.0.1:")


# --- no secret literal anywhere -------------------------------------------------------------------

SLACK_TOKEN_URL = re.compile(r"hooks\.slack\.com/services/[A-Za-z0-9]+/[A-Za-z0-9]+/[A-Za-z0-9]+")
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^\s/:@]+:(?P<password>[^\s@]+)@")
SECRET_KEY = re.compile(r"password|secret|token|webhook|api_?key", re.I)


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")
    else:
        yield path, node


@pytest.mark.parametrize("path", DEPLOYMENT_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_secret_literal_in_deployment_files(path: Path) -> None:
    content = path.read_text()
    assert not SLACK_TOKEN_URL.search(content), f"{path.name} contains a Slack webhook URL"
    for match in URL_WITH_PASSWORD.finditer(content):
        assert match["password"].startswith("${"), f"{path.name}: literal password in {match[0]!r}"


@pytest.mark.parametrize("path", [COMPOSE, INSTANCE, INSTANCE_URL, HELM_VALUES], ids=lambda p: p.name)
def test_secret_keys_hold_no_literal_value(path: Path) -> None:
    for key_path, value in walk(load_yaml(path)):
        leaf = key_path.rsplit(".", 1)[-1]
        if not SECRET_KEY.search(leaf) or leaf.lower().endswith("name"):
            continue  # not secret-like, or the *name* of a Secret object
        if value in (None, "") or isinstance(value, bool):
            continue
        assert str(value).startswith("${"), f"{path.name}{key_path} holds a literal: {value!r}"


# --- Dockerfile ------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    joined = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_installs_pinned_exactly_like_the_makefile() -> None:
    instructions = dockerfile_instructions()
    args = {v.split("=", 1)[0]: v.split("=", 1)[1] for k, v in instructions if k == "ARG" and "=" in v}
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    assert all(
        v == "${PYTHON_IMAGE}" or v.startswith("${PYTHON_IMAGE} ") for k, v in instructions if k == "FROM"
    )
    runs = " ".join(v for k, v in instructions if k == "RUN")
    assert re.search(r"pip install (\S+ )*-c constraints\.txt \.", runs)
    assert "pip check" in runs
    assert any(k == "COPY" and "constraints.txt" in v for k, v in instructions)
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt" in makefile


def test_dockerfile_runs_as_a_numeric_non_root_user() -> None:
    users = [v for k, v in dockerfile_instructions() if k == "USER"]
    assert users, "no USER instruction"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]
    values = load_yaml(HELM_VALUES)
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["podSecurityContext"]["runAsUser"] == int(uid)


def test_dockerfile_bakes_the_production_instance_into_dagster_home() -> None:
    instructions = dockerfile_instructions()
    env = " ".join(v for k, v in instructions if k == "ENV")
    home = re.search(r"DAGSTER_HOME=(\S+)", env)
    assert home, "DAGSTER_HOME is not set"
    assert any(
        k == "COPY" and v.split() == ["deploy/dagster.yaml", f"{home[1]}/dagster.yaml"]
        for k, v in instructions
    )
    cmd = next(v for k, v in reversed(instructions) if k == "CMD")
    assert '"code-server", "start"' in cmd and '"heliox_orchestration.definitions"' in cmd


def test_dockerfile_k8s_extra_matches_the_pinned_dagster_release() -> None:
    constraints = (ROOT / "constraints.txt").read_text()
    postgres_pin = re.search(r"^dagster-postgres==(\S+)$", constraints, re.M)
    k8s_pin = re.search(r"dagster-k8s==([0-9.]+)", DOCKERFILE.read_text())
    assert postgres_pin and k8s_pin and k8s_pin[1] == postgres_pin[1]


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image() -> None:
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    for entry in (".env", ".venv/", ".git/", "/data/", "/.dagster/", "*.db"):
        assert entry in ignored, entry
    for needed in ("setup.py", "constraints.txt", "heliox_orchestration/", "deploy/"):
        assert needed not in ignored and f"/{needed}" not in ignored, needed


# --- deploy/dagster.yaml: Dagster's own instance schema -----------------------------------------

STORAGE_ENV = {
    "DAGSTER_POSTGRES_HOST": "db.internal",
    "DAGSTER_POSTGRES_PORT": "6543",
    "DAGSTER_POSTGRES_USER": "dagster",
    "DAGSTER_POSTGRES_PASSWORD": "pr0be/p@ss word",
    "DAGSTER_POSTGRES_DB": "dagster_storage",
}
STORAGE_URL = "postgresql+psycopg2://dagster:pr0be%2Fp%40ss%20word@db.internal:6543/dagster_storage"


def dagster_home_with(tmp_path: Path, instance_file: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(instance_file, home / "dagster.yaml")
    return home


@pytest.fixture
def storage_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in STORAGE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", STORAGE_URL)
    return STORAGE_ENV


@pytest.mark.parametrize("instance_file", [INSTANCE, INSTANCE_URL], ids=lambda p: p.name)
def test_instance_file_is_valid_dagster_instance_config(
    instance_file: Path, tmp_path: Path, storage_env: dict[str, str]
) -> None:
    from dagster import DefaultRunLauncher, QueuedRunCoordinator
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.instance.ref import InstanceRef
    from dagster._core.scheduler import DagsterDaemonScheduler

    home = dagster_home_with(tmp_path, instance_file)
    config, custom_class = dagster_instance_config(str(home))
    assert custom_class is None
    ref = InstanceRef.from_dir(str(home))
    for data in (ref.storage_data, ref.run_storage_data, ref.event_storage_data, ref.schedule_storage_data):
        assert data is not None and data.module_name == "dagster_postgres"
    # The classes named in the file load and take their config (no database needed for these).
    coordinator = ref.run_coordinator
    assert isinstance(coordinator, QueuedRunCoordinator)
    queue = coordinator.get_run_queue_config()
    assert queue.max_concurrent_runs > 0
    limited = {limit["key"] for limit in queue.tag_concurrency_limits}
    # Backfills leave slots for alerts; alert runs are not held back by a stuck run of their kind.
    assert "dagster/backfill" in limited and "heliox/alert" not in limited
    assert isinstance(ref.run_launcher, DefaultRunLauncher)
    assert isinstance(ref.scheduler, DagsterDaemonScheduler)
    assert config["run_monitoring"]["enabled"] is True
    assert config["run_retries"]["enabled"] is True
    assert config["telemetry"]["enabled"] is False


@pytest.mark.parametrize(
    "instance_file",
    [INSTANCE, INSTANCE_URL, ROOT / EMBEDDED_INSTANCE_FILE],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_every_run_has_a_runtime_bound(
    instance_file: Path, tmp_path: Path, storage_env: dict[str, str]
) -> None:
    """Each Heliox job carries its own dagster/max_runtime; every other run (backfills, the UI's
    Materialize) gets the instance-wide max_runtime_seconds, which is the longest bound."""
    from dagster._core.instance.config import dagster_instance_config

    from heliox_orchestration.definitions import build_defs
    from heliox_orchestration.settings import Settings

    config, _ = dagster_instance_config(str(dagster_home_with(tmp_path, instance_file)))
    monitoring = config["run_monitoring"]
    assert monitoring["enabled"] is True
    instance_bound = monitoring["max_runtime_seconds"]
    assert instance_bound == 3600
    assert monitoring["poll_interval_seconds"] == 30
    # Every optional source on: the Prometheus pull and the landing folder's imports too.
    defs = build_defs(Settings(prometheus_url="http://prometheus:9090", focus_dir=tmp_path))
    job_bounds = {
        job.name: int(job.tags["dagster/max_runtime"])
        for job in defs.resolve_all_job_defs()
        if not job.name.startswith("__")  # Dagster's implicit asset job: the instance bound
    }
    assert len(job_bounds) == 15, job_bounds  # 8 alert-kind jobs, 4 refreshes, 2 imports, upkeep
    assert {
        name: bound for name, bound in job_bounds.items() if name.endswith("_refresh_job")
    } == dict.fromkeys(
        (
            "gpu_costs_refresh_job",
            "idle_recommendations_refresh_job",
            "daily_summary_refresh_job",
            "spend_anomalies_refresh_job",
        ),
        600,
    )
    assert job_bounds.pop("gpu_utilization_pull_job") == 900
    assert job_bounds.pop("focus_import_job") == 1800
    assert job_bounds.pop("usage_maintenance_job") == 900
    assert {bound for name, bound in job_bounds.items() if not name.endswith("_refresh_job")} == {300}
    assert max(job_bounds.values()) < instance_bound


@pytest.mark.parametrize("instance_file", [INSTANCE, INSTANCE_URL], ids=lambda p: p.name)
def test_storage_connection_comes_from_the_environment(
    instance_file: Path, tmp_path: Path, storage_env: dict[str, str]
) -> None:
    from dagster._config import process_config, resolve_to_config_type
    from dagster._core.instance.ref import InstanceRef
    from dagster._serdes import serialize_value
    from dagster_postgres import DagsterPostgresStorage
    from dagster_postgres.utils import pg_url_from_config

    home = dagster_home_with(tmp_path, instance_file)
    ref = InstanceRef.from_dir(str(home))
    assert ref.storage_data is not None
    result = process_config(
        resolve_to_config_type(DagsterPostgresStorage.config_type()), ref.storage_data.config_dict
    )
    assert result.success, result.errors
    url = pg_url_from_config(result.value)
    assert make_url(url) == make_url(STORAGE_URL)
    # psycopg2 is the installed driver; SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3.
    assert make_url(url).get_driver_name() == "psycopg2"
    # The instance reference handed to every process (and run) names variables, never values.
    assert storage_env["DAGSTER_POSTGRES_PASSWORD"] not in serialize_value(ref)
    assert "pr0be" not in serialize_value(ref)


def test_a_missing_storage_variable_is_named(
    tmp_path: Path, storage_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster._config import process_config, resolve_to_config_type
    from dagster._core.instance.ref import InstanceRef
    from dagster_postgres import DagsterPostgresStorage

    monkeypatch.delenv("DAGSTER_POSTGRES_PASSWORD")
    ref = InstanceRef.from_dir(str(dagster_home_with(tmp_path, INSTANCE)))
    assert ref.storage_data is not None
    result = process_config(
        resolve_to_config_type(DagsterPostgresStorage.config_type()), ref.storage_data.config_dict
    )
    assert not result.success
    assert "DAGSTER_POSTGRES_PASSWORD" in str(result.errors)


def test_instance_files_differ_only_in_storage() -> None:
    main, url = load_yaml(INSTANCE), load_yaml(INSTANCE_URL)
    assert main.pop("storage")["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_POSTGRES_PASSWORD"}
    assert url.pop("storage") == {"postgres": {"postgres_url": {"env": "DAGSTER_POSTGRES_URL"}}}
    assert main == url


def test_compose_sets_every_variable_the_instance_file_reads(services: dict[str, dict[str, Any]]) -> None:
    wanted = {value for path, value in walk(load_yaml(INSTANCE)) if path.endswith(".env")}
    assert wanted == set(DAGSTER_STORAGE_VARIABLES)
    for name in ("user_code", "webserver", "daemon"):
        assert wanted <= set(env_of(services[name])), name


# --- deploy/dagster.yaml opened for real on PostgreSQL -------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("instance_file", [INSTANCE, INSTANCE_URL], ids=lambda p: p.name)
def test_production_instance_stores_runs_in_postgres(
    instance_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    create_postgres_database: Callable[[str], str],
) -> None:
    from dagster import DagsterInstance, DefaultRunLauncher, QueuedRunCoordinator, asset, materialize
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    url = create_postgres_database("heliox_dagster_test")
    env = dagster_storage_env(url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    home = dagster_home_with(tmp_path, instance_file)
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    @asset
    def deploy_probe() -> int:
        return 1

    with DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert isinstance(instance.run_launcher, DefaultRunLauncher)
        assert instance.run_monitoring_enabled and instance.run_retries_enabled
        result = materialize([deploy_probe], instance=instance)
        assert result.success
        run_id = result.run_id

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            status = conn.execute(text("SELECT status FROM runs WHERE run_id = :id"), {"id": run_id})
            assert status.scalar_one() == "SUCCESS"
            events = conn.execute(
                text("SELECT count(*) FROM event_logs WHERE run_id = :id"), {"id": run_id}
            ).scalar_one()
            assert events > 0
    finally:
        engine.dispose()

    # The documented upgrade command works against this instance file.
    migrate = subprocess.run(
        [str(BIN / "dagster"), "instance", "migrate"],
        capture_output=True,
        text=True,
        timeout=180,
        env={"PATH": f"{BIN}:/usr/bin:/bin", "DAGSTER_HOME": str(home), **env},
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr


# --- deploy/helm/values.yaml ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> dict[str, Any]:
    return load_yaml(HELM_VALUES)


def test_helm_values_target_the_pinned_dagster_release(helm: dict[str, Any]) -> None:
    import dagster

    assert f"chart version {dagster.__version__}" in HELM_VALUES.read_text()
    assert f"--version {dagster.__version__}" in HELM_VALUES.read_text()


def test_helm_user_deployment_runs_our_image_with_secrets_from_a_secret(helm: dict[str, Any]) -> None:
    user = helm["dagster-user-deployments"]
    assert user["enabled"] is True
    [deployment] = user["deployments"]
    assert deployment["image"]["repository"] and deployment["image"]["tag"] != "latest"
    args = deployment.get("codeServerArgs") or deployment.get("dagsterApiGrpcArgs")
    assert option(args, "-m", "--module-name") == "heliox_orchestration.definitions"
    secret_names = {ref["name"] for ref in deployment.get("envSecrets", [])}
    env = deployment.get("env") or []
    env_items = env.items() if isinstance(env, dict) else [(e["name"], e) for e in env]
    for name, spec in env_items:
        if name in SECRET_VARIABLES:
            assert isinstance(spec, dict) and "secretKeyRef" in spec.get("valueFrom", {}), name
            secret_names.add(spec["valueFrom"]["secretKeyRef"]["name"])
    assert "heliox-secrets" in secret_names
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True


def test_helm_runs_each_run_in_its_own_pod_with_the_secrets(helm: dict[str, Any]) -> None:
    launcher = helm["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    k8s = launcher["config"]["k8sRunLauncher"]
    assert {ref["name"] for ref in k8s["envSecrets"]} >= {"heliox-secrets"}


def test_helm_daemon_matches_the_production_instance(helm: dict[str, Any]) -> None:
    daemon = helm["dagsterDaemon"]
    instance = load_yaml(INSTANCE)
    assert daemon["enabled"] is True
    assert daemon["runMonitoring"]["enabled"] is True
    assert daemon["runRetries"] == {
        "enabled": instance["run_retries"]["enabled"],
        "maxRetries": instance["run_retries"]["max_retries"],
    }
    coordinator = daemon["runCoordinator"]
    assert coordinator["enabled"] is True and coordinator["type"] == "QueuedRunCoordinator"
    queued = coordinator["config"]["queuedRunCoordinator"]
    assert queued["maxConcurrentRuns"] == instance["run_coordinator"]["config"]["max_concurrent_runs"]
    assert queued["tagConcurrencyLimits"] == instance["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert queued["dequeueUseThreads"] == instance["run_coordinator"]["config"]["dequeue_use_threads"]
    assert queued["dequeueNumWorkers"] == instance["run_coordinator"]["config"]["dequeue_num_workers"]
    # The chart's schema wants every tick status when retention is given per status.
    assert set(helm["retention"]["sensor"]["purgeAfterDays"]) == {"skipped", "success", "failure", "started"}
    assert helm["telemetry"]["enabled"] is False


def test_helm_postgres_password_comes_from_an_existing_secret(helm: dict[str, Any]) -> None:
    assert helm["generatePostgresqlPasswordSecret"] is False
    assert helm["global"]["postgresqlSecretName"]
    assert not helm["postgresql"].get("postgresqlPassword")
    assert helm["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    assert helm["postgresql"]["postgresqlDatabase"] == "dagster"


# --- docs ------------------------------------------------------------------------------------------


def test_operations_doc_covers_the_runbook() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    for needle in (
        "DAGSTER_HOME",
        "dagster instance migrate",
        "heliox doctor",
        "heliox send-test",
        "heliox alerts",
        "docker compose",
        "helm upgrade",
        "K8sRunLauncher",
        "dagster/max_runtime",
    ):
        assert needle in doc, needle
    assert "docs/operations.md" in (ROOT / "README.md").read_text()


# A bound to catch a hang, not a speed claim: devserver.py SIGKILLs what is left GRACE_SECONDS after
# Ctrl-C (measured 3-4 s on 2 busy cores; docs/performance.md).
STOP_SECONDS = 20
UI_SECONDS = 300  # dagster dev's start took up to 330 s with the load average at 12-15
UI_COMMAND = "$(BIN)/python -m heliox_orchestration.devserver -w workspace.yaml -p $(PORT)\n"


def _terminal_like() -> None:
    """Ctrl-C and SIGTERM as a terminal delivers them (this test's runner may ignore both)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _session(sid: int) -> list[str]:
    """The live processes of a session (a terminal's): every process ``make run`` started, in
    whichever process group."""
    listing = subprocess.run(["ps", "-eo", "sid=,pid=,stat=,args="], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if line.split()[0] == str(sid) and " Z" not in line]


@pytest.mark.integration
@pytest.mark.timeout(420)
def test_make_runs_dagster_dev_starts_quietly_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    """`make run`'s last step from the checkout: no warning about a dagster.yaml in the folder,
    preview mode announced once outside runs, and Ctrl-C (SIGINT to the terminal's foreground
    process group) ends dagster dev and every process it started within STOP_SECONDS."""
    project, home = tmp_path / "project", tmp_path / "dagster-home"
    (project / EMBEDDED_INSTANCE_FILE).parent.mkdir(parents=True)
    home.mkdir()
    for folder in (project / EMBEDDED_INSTANCE_FILE, home / "dagster.yaml"):
        shutil.copy(ROOT / EMBEDDED_INSTANCE_FILE, folder)
    assert UI_COMMAND in (ROOT / "Makefile").read_text() and not (ROOT / "dagster.yaml").exists()
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "HELIOX_HOME": str(project)}
    log = (tmp_path / "terminal.log").open("w+")
    ui = ["-m", "heliox_orchestration.devserver", "-w", "workspace.yaml", "-p", str(port)]
    dev = subprocess.Popen(
        [str(BIN / "python"), *ui],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a terminal's session; the wrapper leads its foreground group
        preexec_fn=_terminal_like,
    )
    try:
        deadline = time.monotonic() + UI_SECONDS
        while True:
            assert dev.poll() is None, f"dagster dev exited early: {Path(log.name).read_text()[-3000:]}"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, f"the UI did not answer within {UI_SECONDS} s"
                time.sleep(1)
        # The wrapper, dagster dev, code server (proxy and server), webserver, daemon.
        assert len(_session(dev.pid)) >= 6, _session(dev.pid)
        interrupted = time.monotonic()
        os.killpg(dev.pid, signal.SIGINT)
        while (dev.poll() is None or _session(dev.pid)) and time.monotonic() < interrupted + STOP_SECONDS:
            time.sleep(0.2)
        left = _session(dev.pid)
        assert dev.poll() is not None and not left, f"still running {STOP_SECONDS} s after Ctrl-C: {left}"
        print(f"every process ended {time.monotonic() - interrupted:.1f} s after Ctrl-C")
        assert dev.returncode == -signal.SIGINT
    finally:
        for line in _session(dev.pid):
            with suppress(ProcessLookupError):
                os.kill(int(line.split()[1]), signal.SIGKILL)
        if dev.poll() is None:
            dev.wait()
    terminal = Path(log.name).read_text()
    assert "will not be used to configure Dagster" not in terminal
    announced = [
        line for line in terminal.splitlines() if "resource:slack - Slack notifications disabled" in line
    ]
    assert len(announced) <= 1, announced  # sensor ticks: once per process (runs log their own)
