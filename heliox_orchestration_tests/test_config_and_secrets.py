"""Configuration and secrets (issue 12, section D): every credential form of a database URL is
masked everywhere, `heliox doctor` validates exactly what the definitions validate, crons and the
start date are checked when settings load, and read-only commands work on a read-only database."""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from dagster import DagsterInstance
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from heliox_orchestration.cli import cli
from heliox_orchestration.cron import CronError, parse_cron
from heliox_orchestration.db.engine import DatabaseConfigError, ensure_schema, make_engine
from heliox_orchestration.definitions import build_defs
from heliox_orchestration.environment import check_environment, load_environment
from heliox_orchestration.secrets import mask_database_url, redact_database_url
from heliox_orchestration.settings import SettingsError, load_settings

SECRET = "Xy7-secret-42"

# Every form in which SQLAlchemy or libpq accept a credential.
CREDENTIAL_URLS = [
    f"postgresql+psycopg2://heliox:{SECRET}@db.example:5432/heliox",
    f"postgresql+psycopg2://heliox:{SECRET}@@db.example/heliox",  # unescaped '@' in the password
    f"postgresql+psycopg2://heliox:{SECRET[:4]}@{SECRET[4:]}@db.example/heliox",
    f"postgresql+psycopg2://heliox:{SECRET}/x@db.example/heliox",  # unescaped '/'
    f"postgresql+psycopg2://heliox@db.example/heliox?password={SECRET}",
    f"postgresql+psycopg2://heliox@db.example/heliox?sslmode=require&PASSWORD={SECRET}",
    f"postgresql+psycopg2://heliox@db.example/heliox?sslpassword={SECRET}",
    f"postgresql+psycopg2:///heliox?dsn=host%3Ddb.example%20password%3D{SECRET}",
    f"postgresql+psycopg2://heliox:{SECRET.replace('-', '%2D')}@db.example/heliox",
]


@pytest.mark.parametrize("url", CREDENTIAL_URLS)
def test_every_credential_form_is_masked(url: str) -> None:
    masked = mask_database_url(url)
    assert SECRET not in masked and SECRET[4:] not in masked and "%2D" not in masked.split("@")[0]
    assert masked.startswith("postgresql+psycopg2://")
    error = f"could not connect with {url}: the password was refused"
    assert SECRET not in redact_database_url(error, url)
    if "@@" not in url and "%2D" not in url:
        password = url.split("://", 1)[1].rpartition("@")[0].partition(":")[2] or SECRET
        assert password not in redact_database_url(f"password {password} refused", url)


def test_masking_keeps_what_is_not_secret() -> None:
    assert mask_database_url("sqlite:///data/heliox.db") == "sqlite:///data/heliox.db"
    assert (
        mask_database_url(f"postgresql://heliox:{SECRET}@db.example:5432/heliox?sslmode=require")
        == "postgresql://heliox:***@db.example:5432/heliox?sslmode=require"
    )
    assert mask_database_url(f"postgresql://h/db?password={SECRET}&user=u") == (
        "postgresql://h/db?password=***&user=u"
    )


@pytest.mark.parametrize("url", CREDENTIAL_URLS)
def test_cli_errors_never_show_a_credential(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELIOX_DATABASE_URL", url.replace("db.example", "127.0.0.1:1").replace(":5432", ""))
    for command in (["doctor"], ["alerts"], ["seed-demo", "--gpus", "1", "--days", "1"]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 2, result.output
        assert SECRET not in result.output and SECRET[4:] not in result.output, result.output
        assert "Traceback" not in result.output


@pytest.mark.postgres
def test_password_in_the_query_stays_out_of_output_and_dagster_storage(
    create_postgres_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reachable database named with ``?password=`` (trust auth ignores it): `heliox doctor`
    masks it, and a run (one that succeeds, one that cannot connect) leaves no trace of it in
    Dagster's storage."""
    url = create_postgres_database("heliox_secret")
    ensure_schema(make_engine(url))
    monkeypatch.setenv("HELIOX_DATABASE_URL", f"{url}?password={SECRET}")
    doctor = CliRunner().invoke(cli, ["doctor"])
    assert doctor.exit_code == 0, doctor.output
    assert "password=***" in doctor.output and SECRET not in doctor.output

    home = tmp_path / "dagster-home"
    home.mkdir()
    with DagsterInstance.local_temp(str(home)) as instance:
        defs = build_defs(load_settings())
        ok = defs.resolve_job_def("gpu_costs_refresh_job").execute_in_process(
            instance=instance, partition_key="2026-01-09", raise_on_error=False
        )
        assert ok.success
        unreachable = make_url(url).set(port=1).render_as_string(hide_password=False)
        monkeypatch.setenv("HELIOX_DATABASE_URL", f"{unreachable}?password={SECRET}")
        failed = (
            build_defs(load_settings())
            .resolve_job_def("gpu_costs_refresh_job")
            .execute_in_process(instance=instance, partition_key="2026-01-09", raise_on_error=False)
        )
        assert not failed.success
    stored = b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())
    assert stored, "the instance wrote its storage under DAGSTER_HOME"
    assert SECRET.encode() not in stored


# --- doctor validates exactly what the definitions validate ------------------------------------

BAD_ENVIRONMENTS = [
    {"SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/"},
    {"SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0123/B0123"},
    {"SLACK_WEBHOOK_URL": "https://hooks.slack.com/triggers/T0123/456/abcdef"},
    {"SLACK_WEBHOOK_URL": f"http://hooks.slack.com/services/T0/B0/{SECRET}"},
    {"BURN_RATE_CHECK_CRON": "0 25 * * *"},
    {"IDLE_SPEND_CHECK_CRON": "every hour"},
    {"HELIOX_START_DATE": "0001-01-01"},
    {"HELIOX_START_DATE": "2999-01-01"},
    {"HELIOX_DATABASE_URL": f"postgresql://heliox:{SECRET}@x@db.example/heliox"},
    {"HELIOX_DATABASE_URL": "nonsense"},
    {"HELIOX_ENV": "prod"},
    {"HELIOX_ENV": "production"},
]


@pytest.mark.parametrize("env", BAD_ENVIRONMENTS, ids=lambda e: next(iter(e.values()))[:40])
def test_doctor_refuses_exactly_what_stops_the_definitions(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_environment()
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 2, result.output
    assert f"Error: {raised.value}" in result.output
    assert "Slack notifications enabled" not in result.output
    assert SECRET not in result.output and SECRET not in str(raised.value)
    assert "Traceback" not in result.output


def test_definitions_module_refuses_what_doctor_refuses(tmp_path: Path) -> None:
    """The real import path (a fresh process): the code location does not load, with doctor's line."""
    env = {"PATH": os.environ["PATH"], "HELIOX_DATA_DIR": str(tmp_path)}
    env["SLACK_WEBHOOK_URL"] = "https://hooks.slack.com/services/"
    expected = check_environment(env).problems[0]
    result = subprocess.run(
        [sys.executable, "-c", "import heliox_orchestration.definitions"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert expected in result.stderr


# --- HELIOX_ENV=production ------------------------------------------------------------------------

WEBHOOK = "https://hooks.slack.com/services/T0123ABC/B0456DEF/abcdEFGH1234wxyz"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"HELIOX_DATABASE_URL": "sqlite:///heliox.db"}, "SLACK_WEBHOOK_URL"),
        ({"HELIOX_DATABASE_URL": "sqlite:///heliox.db", "SLACK_WEBHOOK_URL": "  "}, "SLACK_WEBHOOK_URL"),
        ({"SLACK_WEBHOOK_URL": WEBHOOK}, "HELIOX_DATABASE_URL"),
    ],
    ids=["no-webhook", "blank-webhook", "no-database"],
)
def test_production_requires_the_webhook_and_the_database(
    env: dict[str, str], variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HELIOX_ENV", "production")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_environment()
    message = str(raised.value)
    assert message.startswith(f"{variable} is not set, and HELIOX_ENV=production") and "\n" not in message
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 2, result.output
    assert f"Error: {message}" in result.output
    assert "notifications disabled (preview mode)" not in result.output and "Traceback" not in result.output
    assert "HELIOX_ENV" in result.output and "production" in result.output


def test_a_production_deploy_without_a_webhook_does_not_load(tmp_path: Path) -> None:
    """The real import path (a fresh process, as a code server loads it): one line naming the
    variable, not a "preview mode" line."""
    env = {"PATH": os.environ["PATH"], "HELIOX_DATA_DIR": str(tmp_path), "HELIOX_ENV": "production"}
    env["HELIOX_DATABASE_URL"] = f"sqlite:///{tmp_path}/heliox.db"
    result = subprocess.run(
        [sys.executable, "-c", "import heliox_orchestration.definitions"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert (
        "SettingsError: SLACK_WEBHOOK_URL is not set, and HELIOX_ENV=production sends every alert to "
        "Slack (no preview mode)"
    ) in result.stderr
    assert "notifications disabled (preview mode)" not in result.stdout + result.stderr


@pytest.mark.parametrize("value", [None, "development", " Development "])
def test_development_still_previews(value: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if value is not None:
        monkeypatch.setenv("HELIOX_ENV", value)
    check = check_environment()
    assert check.ok and not check.production and check.webhook_url is None and check.database_url is None
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "Slack notifications disabled (preview mode)" in result.output


def test_production_with_both_urls_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELIOX_ENV", "production")
    monkeypatch.setenv("SLACK_WEBHOOK_URL", WEBHOOK)
    monkeypatch.setenv("HELIOX_DATABASE_URL", f"sqlite:///{tmp_path}/heliox.db")
    check = check_environment()
    assert check.ok and check.production
    load_environment()
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "Slack notifications enabled" in result.output


def test_a_complete_slack_webhook_is_accepted_and_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T0123ABC/B0456DEF/abcdEFGH1234wxyz"
    )
    assert check_environment().ok
    result = CliRunner().invoke(cli, ["doctor"])
    assert (
        "Slack notifications enabled (webhook https://hooks.slack.com/services/****...wxyz)" in result.output
    )


# --- crons and the start date -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized", "hours"),
    [
        ("@hourly", "0 * * * *", set(range(24))),
        ("@daily", "0 0 * * *", {0}),
        ("0 8-20 * * *", "0 8-20 * * *", set(range(8, 21))),
        ("15 10,16 * * MON-FRI", "15 10,16 * * MON-FRI", {10, 16}),
        ("0 */6 * * *", "0 */6 * * *", {0, 6, 12, 18}),
        ("0 9-17/4 * * *", "0 9-17/4 * * *", {9, 13, 17}),
    ],
)
def test_cron_strings_are_normalized_and_their_hours_known(
    raw: str, normalized: str, hours: set[int]
) -> None:
    cron = parse_cron(raw)
    assert cron.text == normalized and set(cron.hours) == hours
    settings = load_settings({"BURN_RATE_CHECK_CRON": raw})
    defs = build_defs(settings)  # the schedule and the stale-data sensor accept it
    assert defs.resolve_schedule_def("burn_rate_check_schedule").cron_schedule == normalized


@pytest.mark.parametrize(
    "raw", ["", "0 24 * * *", "0 8-20 * *", "0 20-8 * * *", "0 8 * * FUNDAY", "0 */0 * * *"]
)
def test_unusable_cron_strings_are_refused(raw: str) -> None:
    with pytest.raises(CronError):
        parse_cron(raw)


def test_start_date_must_be_a_day_with_possible_data() -> None:
    today = dt.datetime.now(dt.UTC).date()
    assert load_settings({"HELIOX_START_DATE": today.isoformat()}).start_date == today
    for bad in ("1999-12-31", (today + dt.timedelta(days=2)).isoformat()):
        with pytest.raises(SettingsError, match=r"HELIOX_START_DATE=.* out of range"):
            load_settings({"HELIOX_START_DATE": bad})


# --- databases that cannot be created or written ------------------------------------------------


def test_sqlite_folder_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for url, expected in (
        (f"sqlite:///{blocker}/sub/heliox.db", "cannot create the folder"),
        (f"sqlite:///{tmp_path}", "is a folder, not a SQLite database file"),
    ):
        result = CliRunner().invoke(cli, ["seed-demo", "--database-url", url, "--gpus", "1", "--days", "1"])
        assert result.exit_code == 2, result.output
        assert expected in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1


def _seeded_sqlite(path: Path) -> str:
    url = f"sqlite:///{path}"
    result = CliRunner().invoke(cli, ["seed-demo", "--database-url", url, "--gpus", "3", "--days", "2"])
    assert result.exit_code == 0, result.output
    return url


READ_ONLY_COMMANDS = (
    ["doctor"],
    ["preview", "burn-rate"],
    ["preview", "daily-summary", "--json"],
    ["alerts"],
)


def test_read_only_commands_never_write_to_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "ro" / "heliox.db"
    db.parent.mkdir()
    url = _seeded_sqlite(db)
    gc.collect()  # the seeding engine's pooled connections close (and checkpoint) now, not mid-test
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    monkeypatch.setenv("HELIOX_DATABASE_URL", url)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    for command in READ_ONLY_COMMANDS:
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 0, (command, result.output)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    engine = make_engine(url, read_only=True)
    with pytest.raises(OperationalError, match="readonly"), engine.begin() as conn:
        conn.execute(text("DELETE FROM alert_ledger"))


def _nobody_can_run_python() -> bool:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False
    probe = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            sys.executable,
            "-c",
            "import heliox_orchestration",
        ],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.skipif(
    not _nobody_can_run_python(), reason="needs root, setpriv and a checkout readable by nobody"
)
def test_read_only_commands_work_on_a_file_the_user_cannot_write() -> None:
    """The real case: a read-only file in a read-only folder, read by another user."""
    top = Path(tempfile.mkdtemp(prefix="heliox-ro-"))  # pytest's own tmp folders are private to root
    folder = top / "ro"
    folder.mkdir()
    url = _seeded_sqlite(folder / "heliox.db")
    (folder / "heliox.db").chmod(0o444)
    folder.chmod(0o555)
    top.chmod(0o755)
    env = {**os.environ, "HELIOX_DATABASE_URL": url, "HELIOX_DATA_DIR": str(folder)}
    heliox = [sys.executable, "-m", "heliox_orchestration.cli"]
    for command in READ_ONLY_COMMANDS:
        result = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *heliox, *command],
            env=env,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, (command, result.stderr)
        assert "Traceback" not in result.stderr
    folder.chmod(0o755)
    shutil.rmtree(top)


def test_a_missing_database_is_named_not_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELIOX_DATABASE_URL", f"sqlite:///{tmp_path}/absent/heliox.db")
    preview = CliRunner().invoke(cli, ["preview", "burn-rate"])
    assert preview.exit_code == 2
    assert "does not exist yet" in preview.output and "Traceback" not in preview.output
    alerts = CliRunner().invoke(cli, ["alerts"])
    assert alerts.exit_code == 0 and "No alerts in the ledger: the database" in alerts.output
    doctor = CliRunner().invoke(cli, ["doctor"])
    assert doctor.exit_code == 0 and "does not exist yet" in doctor.output
    assert not (tmp_path / "absent").exists()
    with pytest.raises(DatabaseConfigError, match="does not exist yet"):
        make_engine(f"sqlite:///{tmp_path}/absent/heliox.db", read_only=True)


@pytest.mark.postgres
def test_read_only_commands_work_with_a_read_only_role(
    create_postgres_database: Callable[[str], str],
) -> None:
    url = create_postgres_database("heliox_ro")
    owner = create_engine(url, isolation_level="AUTOCOMMIT")
    ensure_schema(make_engine(url))
    role = f"heliox_reader_{os.getpid()}"
    with owner.connect() as conn:
        conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
    try:
        reader = make_url(url).set(username=role).render_as_string(hide_password=False)
        runner = CliRunner(env={"HELIOX_DATABASE_URL": reader})
        for command in READ_ONLY_COMMANDS:
            result = runner.invoke(cli, command)
            assert result.exit_code == 0, (command, result.output)
    finally:
        with owner.connect() as conn:
            conn.execute(text(f"REASSIGN OWNED BY {role} TO CURRENT_USER"))
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
        owner.dispose()


def test_existing_tables_gain_new_nullable_columns(tmp_path: Path) -> None:
    """An older database lacking a column a newer Heliox defines as nullable is refused by
    writers, then upgraded in place by `heliox migrate`."""
    url = f"sqlite:///{tmp_path}/old.db"
    engine = make_engine(url)
    ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE alert_ledger DROP COLUMN sent_at"))
    with pytest.raises(
        DatabaseConfigError, match=r"lacks columns alert_ledger\.sent_at: run `heliox migrate`"
    ):
        ensure_schema(engine)
    assert CliRunner().invoke(cli, ["migrate", "--database-url", url]).exit_code == 0
    ensure_schema(engine)
    with engine.connect() as conn:
        columns = [row[1] for row in conn.execute(text("PRAGMA table_info(alert_ledger)"))]
    assert "sent_at" in columns
