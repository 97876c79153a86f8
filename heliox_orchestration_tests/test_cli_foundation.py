"""`heliox seed-demo` and `heliox doctor`: usage errors, bad database URLs, masking, and the
embedded default that seeds itself (while a named database is never seeded unasked)."""

from __future__ import annotations

import datetime as dt
import importlib
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from dagster import DagsterInstance
from sqlalchemy import func, select

from heliox_orchestration.cli import cli
from heliox_orchestration.cli.common import COMMANDS
from heliox_orchestration.db.engine import make_engine, usage_is_empty
from heliox_orchestration.db.schema import gpu_usage_hourly
from heliox_orchestration.home import EMBEDDED_INSTANCE_FILE, HomeError, dagster_home, project_home
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.settings import Settings, SettingsError

SECRET = "s3cr3t-Pa55"
ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpus", "0"], "--gpus"),
        (["--days", "-3"], "--days"),
        (["--end-date", "2026-13-45"], "--end-date"),
        (["--gpus", "many"], "--gpus"),
    ],
)
def test_seed_demo_usage_errors(args: list[str], message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["seed-demo", "--database-url", f"sqlite:///{tmp_path}/x.db", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "x.db").exists(), "nothing is written on a usage error"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("not a url at all", "HELIOX_DATABASE_URL cannot be parsed as a database URL"),
        (f"postgresql+psycopg2://heliox:{SECRET}@127.0.0.1:1/heliox", "HELIOX_DATABASE_URL="),
        (f"mysql+nosuchdriver://u:{SECRET}@h/db", "driver"),
    ],
)
def test_bad_database_url_is_one_line_exit_2_without_password(
    url: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HELIOX_DATABASE_URL", url)
    for command in (["doctor"], ["seed-demo", "--gpus", "1", "--days", "1"]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 2, result.output
        assert expected in result.output
        assert SECRET not in result.output
        assert "Traceback" not in result.output
        assert len([line for line in result.output.splitlines() if line.startswith("Error:")]) == 1


def test_seed_demo_reports_and_replaces(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/demo.db"
    args = ["seed-demo", "--database-url", url, "--gpus", "5", "--days", "3", "--end-date", "2026-01-20"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    written = int(re.search(r"Wrote ([\d,]+) rows", first.output).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert 0 < written <= 5 * 72  # GPUs provisioned late (the idle plan) have fewer hours
    second = CliRunner().invoke(cli, args)
    assert f"Replaced {written:,} existing demo rows" in second.output
    with make_engine(url).connect() as conn:
        assert conn.execute(select(func.count()).select_from(gpu_usage_hourly)).scalar_one() == written


def test_doctor_masks_the_webhook_and_counts_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    webhook = "https://hooks.slack.com/services/TFAKE/BFAKE/abcdefghijklmnop-wxyz"
    monkeypatch.setenv("SLACK_WEBHOOK_URL", webhook)
    monkeypatch.setenv("HELIOX_DATABASE_URL", f"sqlite:///{tmp_path}/doc.db")
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 0, result.output
    assert (
        "Slack notifications enabled (webhook https://hooks.slack.com/services/****...wxyz)" in result.output
    )
    assert "abcdefghijklmnop" not in result.output and "TFAKE" not in result.output
    assert "gpu_usage_hourly" in result.output and "alert_ledger" in result.output
    monkeypatch.delenv("SLACK_WEBHOOK_URL")
    assert "Slack notifications disabled (preview mode)" in CliRunner().invoke(cli, ["doctor"]).output


def test_embedded_default_seeds_itself_but_a_named_database_is_never_seeded(tmp_path: Path) -> None:
    embedded = HelioxDatabase()
    assert embedded.is_embedded
    assert not usage_is_empty(embedded.get_engine())

    named = HelioxDatabase(url=f"sqlite:///{tmp_path}/mine.db")
    assert usage_is_empty(named.get_engine())


def _today(timezone: str = "UTC") -> dt.date:
    return dt.datetime.now(ZoneInfo(timezone)).date()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--seed", "-1"], "Invalid value for '--seed': -1 is not in the range 0<=x<=4294967295."),
        (
            ["--seed", str(2**32)],
            "Invalid value for '--seed': 4294967296 is not in the range 0<=x<=4294967295.",
        ),
        (["--days", "3651"], "Invalid value for '--days': 3651 is not in the range 1<=x<=3650."),
        (["--gpus", "100001"], "Invalid value for '--gpus': 100001 is not in the range 1<=x<=100000."),
        (
            ["--gpus", "50000", "--days", "100"],
            "Invalid value for '--gpus' x '--days': 50,000 GPUs x 100 days is 120,000,000 hourly rows; "
            "at most 100,000,000 (lower --gpus or --days).",
        ),
        (
            ["--end-date", "0001-01-01"],
            "Invalid value for '--end-date': 0001-01-01 is out of range; allowed: 2000-01-01 through today "
            "({today} in UTC).",
        ),
        (
            ["--end-date", "{tomorrow}"],
            "Invalid value for '--end-date': {tomorrow} is out of range; allowed: 2000-01-01 through today "
            "({today} in UTC).",
        ),
    ],
)
def test_seed_demo_out_of_range_is_one_line_naming_the_option(
    args: list[str], error: str, tmp_path: Path
) -> None:
    today = _today()
    values = {"today": today.isoformat(), "tomorrow": (today + dt.timedelta(days=1)).isoformat()}
    args = [a.format(**values) for a in args]
    result = CliRunner().invoke(cli, ["seed-demo", "--database-url", f"sqlite:///{tmp_path}/x.db", *args])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.startswith("Error:")] == [
        "Error: " + error.format(**values)
    ]
    assert not (tmp_path / "x.db").exists()


def test_seed_demo_today_in_timezone_writes_only_started_hours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # UTC+14: its "today" is often tomorrow in UTC, and not one of its hours may be in the future.
    monkeypatch.setenv("TIMEZONE", "Pacific/Kiritimati")
    today = _today("Pacific/Kiritimati")
    url = f"sqlite:///{tmp_path}/today.db"
    args = ["seed-demo", "--database-url", url, "--gpus", "2", "--days", "2"]
    result = CliRunner().invoke(cli, [*args, "--end-date", today.isoformat()])
    assert result.exit_code == 0, result.output
    with make_engine(url).connect() as conn:
        last = conn.execute(select(func.max(gpu_usage_hourly.c.usage_hour))).scalar_one()
    assert last is not None and last + dt.timedelta(hours=1) <= dt.datetime.now(dt.UTC)  # ended hours only
    later = CliRunner().invoke(cli, [*args, "--end-date", (today + dt.timedelta(days=1)).isoformat()])
    assert later.exit_code == 2
    assert f"through today ({today} in Pacific/Kiritimati)" in later.output


def heliox_bin() -> str:
    return str(Path(sys.executable).with_name("heliox"))


def test_commands_from_any_folder_share_the_projects_database_and_dagster_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedded_demo: Callable[[Path], None]
) -> None:
    """`heliox run` in one folder, `heliox alerts` in another: both use HELIOX_HOME's
    data/heliox.db and .dagster (DAGSTER_HOME unset), and neither folder gets a database."""
    project = Path(os.environ["HELIOX_HOME"])
    monkeypatch.delenv("HELIOX_DATA_DIR")  # the default, relative: data/ under the project
    embedded_demo(project / "data" / "heliox.db")  # as seeded by itself (tested above), sooner
    (project / EMBEDDED_INSTANCE_FILE).parent.mkdir(parents=True)
    (project / EMBEDDED_INSTANCE_FILE).write_text((ROOT / EMBEDDED_INSTANCE_FILE).read_text())
    elsewhere, other = tmp_path / "elsewhere", tmp_path / "other"
    elsewhere.mkdir()
    other.mkdir()
    ran = subprocess.run(
        [heliox_bin(), "run", "daily-summary"], cwd=elsewhere, capture_output=True, text=True, timeout=240
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    listed = subprocess.run([heliox_bin(), "alerts"], cwd=other, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "daily-summary:" in listed.stdout and "No alerts in the ledger" not in listed.stdout

    # The run's alert is in the project's database, which `heliox alerts` listed from elsewhere.
    with sqlite3.connect(project / "data" / "heliox.db") as conn:
        keys = [key for (key,) in conn.execute("SELECT alert_key FROM alert_ledger")]
    assert len(keys) == 1 and keys[0].startswith("daily-summary:"), keys
    assert keys[0] in listed.stdout, listed.stdout
    assert (project / ".dagster" / "dagster.yaml").read_text() == (ROOT / EMBEDDED_INSTANCE_FILE).read_text()
    with DagsterInstance.from_config(str(project / ".dagster")) as instance:
        jobs = {r.job_name for r in instance.get_runs()}
    assert jobs == {"daily_summary_refresh_job", "daily_summary_job"}
    for folder in (elsewhere, other):
        assert list(folder.iterdir()) == [], f"{folder} got {list(folder.iterdir())}"


def test_without_a_project_folder_the_embedded_database_and_dagster_home_refuse(tmp_path: Path) -> None:
    assert project_home({}, checkout=ROOT) == ROOT  # the checkout the package is installed from
    assert project_home({}, checkout=tmp_path) is None  # a folder without workspace.yaml
    assert project_home({"HELIOX_HOME": str(tmp_path)}, checkout=None) == tmp_path.resolve()
    with pytest.raises(HomeError, match=r"^HELIOX_HOME=.* is not a folder"):
        project_home({"HELIOX_HOME": str(tmp_path / "missing")})

    nowhere = Settings(home=None)
    with pytest.raises(SettingsError, match="set HELIOX_HOME to the checkout, or HELIOX_DATABASE_URL"):
        _ = nowhere.embedded_database_path
    assert Settings(home=None, data_dir=tmp_path).embedded_database_path == tmp_path / "heliox.db"
    assert Settings(home=tmp_path).embedded_database_path == tmp_path / "data" / "heliox.db"
    with pytest.raises(HomeError, match=r"^No Dagster home: set DAGSTER_HOME"):
        dagster_home({}, None)
    assert dagster_home({}, tmp_path) == tmp_path / ".dagster"
    assert dagster_home({"DAGSTER_HOME": str(tmp_path / "x")}, ROOT) == tmp_path / "x"


def test_doctor_shows_the_partitions_start_in_effect(monkeypatch: pytest.MonkeyPatch) -> None:
    demo_start = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=44)
    assert f"HELIOX_START_DATE          {demo_start} (default)" in CliRunner().invoke(cli, ["doctor"]).output
    monkeypatch.setenv("HELIOX_DATABASE_URL", "sqlite:////nonexistent-folder/heliox.db")
    assert "HELIOX_START_DATE          2025-01-01 (default)" in CliRunner().invoke(cli, ["doctor"]).output


def test_each_command_loads_only_its_own_module() -> None:
    """The group's table of commands is exactly what the modules register, and the import commands
    start without Dagster or the alert modules (a fresh interpreter: this one has them loaded)."""
    for module in set(COMMANDS.values()):
        importlib.import_module(f"heliox_orchestration.cli.{module}")
    assert {name: command.callback.__module__ for name, command in cli.commands.items()} == {
        name: f"heliox_orchestration.cli.{module}" for name, module in COMMANDS.items()
    }
    probe = (
        "import sys, click\n"
        "from heliox_orchestration.cli import cli\n"
        "for name in ('import-focus', 'seed-demo', 'migrate'):\n"
        "    assert cli.get_command(click.Context(cli), name) is not None, name\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'dagster'}),"
        " 'heliox_orchestration.alerts' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["[]", "False"], out.stdout + out.stderr
