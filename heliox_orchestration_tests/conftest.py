"""Shared fixtures: isolated embedded data folders, real SQLite and real PostgreSQL databases."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from heliox_orchestration.db.engine import ensure_schema, make_engine
from heliox_orchestration.ingest.demo_fleet import FleetSpec, seed_demo
from heliox_orchestration_tests.postgres_pool import PostgresPool
from heliox_orchestration_tests.prometheus_server import (
    PrometheusServer,
    build_blocks,
    prometheus_binaries,
    run_prometheus,
)
from heliox_orchestration_tests.slack_server import FakeSlackWebhook

PROMETHEUS_VARIABLES = (
    "PROMETHEUS_URL",
    "PROMETHEUS_BEARER_TOKEN",
    "PROMETHEUS_USERNAME",
    "PROMETHEUS_PASSWORD",
    "HELIOX_DCGM_MAPPING",
)
POSTGRES_ADMIN_URL = os.environ.get(
    "HELIOX_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


# Process-level tests take one to four minutes each, mostly waiting on their processes. xdist
# hands tests out in collection order, so they go first: each runs beside the quick tests of
# the other worker instead of after them, at the tail of the run.
SLOW_MODULES = ("test_e2e_dagster_processes", "test_benchmark_smoke", "test_e2e_run_faults")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def slowness(item: pytest.Item) -> int:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if module in SLOW_MODULES:
            return SLOW_MODULES.index(module)
        return len(SLOW_MODULES) if item.get_closest_marker("integration") else len(SLOW_MODULES) + 1

    items.sort(key=slowness)  # stable: the rest keep their order


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's own settings, secrets or embedded database."""
    for name in (
        "SLACK_WEBHOOK_URL",
        "HELIOX_DATABASE_URL",
        "HELIOX_ENV",
        "TIMEZONE",
        "DAILY_SUMMARY_HOUR",
        "DAGSTER_HOME",  # `make test` exports the checkout's
        *PROMETHEUS_VARIABLES,
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HELIOX_DATA_DIR", str(tmp_path / "heliox-data"))
    # Not the checkout: a command's default Dagster home (.dagster) is under the test's folder.
    project = Path(tmp_path) / "heliox-home"
    project.mkdir(exist_ok=True)
    monkeypatch.setenv("HELIOX_HOME", str(project))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database at the head schema, made once per worker by ``ensure_schema``: each
    test's database is a copy of it (creating the schema costs ~0.5 s, a copy a few ms)."""
    path = tmp_path_factory.mktemp("schema-template") / "heliox-template.db"
    engine = make_engine(f"sqlite:///{path}")
    ensure_schema(engine)
    engine.dispose()
    with sqlite3.connect(path) as conn:  # everything in the file itself, no -wal beside it
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


@pytest.fixture
def sqlite_engine(tmp_path: os.PathLike[str], sqlite_template: Path) -> Iterator[Engine]:
    path = Path(tmp_path) / "heliox-test.db"
    shutil.copyfile(sqlite_template, path)
    engine = make_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


def _postgres_available() -> str | None:
    """None when the server answers, else the reason it does not."""
    try:
        engine = create_engine(POSTGRES_ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except OperationalError as exc:
        return str(exc.orig).strip().splitlines()[0]


@pytest.fixture(scope="session")
def _seeded_demos(tmp_path_factory: pytest.TempPathFactory) -> dict[dt.datetime, Path]:
    return {}


@pytest.fixture
def embedded_demo(
    _seeded_demos: dict[dt.datetime, Path], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[Path], None]:
    """``place(path)``: the demo fleet the embedded database seeds itself with (UTC, up to the last
    complete hour) at ``path``, a copy of one seeded once per worker and hour (seeding takes
    10-20 s). Self-seeding itself is tested in test_cli_foundation.py and test_cli_run.py."""

    def place(path: Path) -> None:
        hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
        template = _seeded_demos.get(hour)
        if template is None:
            template = tmp_path_factory.mktemp("demo") / "heliox.db"
            engine = make_engine(f"sqlite:///{template}")
            ensure_schema(engine)
            seed_demo(engine, FleetSpec())
            engine.dispose()
            with sqlite3.connect(template) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            _seeded_demos[hour] = template
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, path)

    return place


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    reason = _postgres_available()
    if reason is not None:
        message = (
            f"PostgreSQL is not reachable at {make_url(POSTGRES_ADMIN_URL).render_as_string()} "
            f"({reason}); set HELIOX_TEST_POSTGRES_URL or start the server."
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message + " Under CI=true this is a failure, not a skip.")
        pytest.skip(message)
    return POSTGRES_ADMIN_URL


@pytest.fixture(scope="session")
def create_postgres_database(postgres_admin_url: str) -> Iterator[Callable[..., str]]:
    """Factory: a fresh PostgreSQL database, empty or a copy of ``template``; returns its URL.
    Dropped at session end."""
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def create(prefix: str = "heliox_test", template: str | None = None) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
        created.append(name)
        return make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)

    yield create
    with admin.connect() as conn:
        for name in created:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def postgres_pool(
    postgres_admin_url: str, create_postgres_database: Callable[..., str]
) -> Iterator[PostgresPool]:
    """This worker's test databases (postgres_pool.py): copies of a template made once by
    ``ensure_schema``, emptied and reused after each test that left their schema as it was."""
    template = create_postgres_database("heliox_template")
    engine = make_engine(template)
    ensure_schema(engine)
    engine.dispose()  # a template must have no open connection
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    yield PostgresPool(admin, create_postgres_database, template)
    admin.dispose()


@pytest.fixture
def postgres_engine(postgres_pool: PostgresPool) -> Iterator[Engine]:
    url = postgres_pool.acquire()
    engine = make_engine(url)
    yield engine
    engine.dispose()
    postgres_pool.release(url)


@pytest.fixture(params=["sqlite", "postgres"])
def any_engine(request: pytest.FixtureRequest) -> Engine:
    """The same test on real SQLite and real PostgreSQL."""
    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
    return request.getfixturevalue(f"{request.param}_engine")


@pytest.fixture
def slack_server() -> Iterator[FakeSlackWebhook]:
    """A loopback Slack Incoming Webhook endpoint (see slack_server.py), one per test."""
    with FakeSlackWebhook() as server:
        yield server


@pytest.fixture(scope="session")
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A real Prometheus holding the DCGM history of dcgm_history.py, basic auth required
    (prometheus_server.py). Skips without the binaries; fails under CI=true."""
    prometheus, promtool = prometheus_binaries()
    base = tmp_path_factory.getbasetemp()
    # xdist workers share the parent of their own base folder: the blocks are built once.
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "prometheus-history"
    blocks = build_blocks(shared, promtool)
    with run_prometheus(prometheus, blocks, tmp_path_factory.mktemp("prometheus")) as server:
        yield server
