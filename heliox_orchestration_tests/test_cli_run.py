"""`heliox run` and `heliox alerts` on the embedded defaults, as a newcomer meets them."""

from __future__ import annotations

import datetime as dt
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from heliox_orchestration.automation.manual import LOCATION_NAME, HelioxLocation, error_line, heliox_location
from heliox_orchestration.cli import cli
from heliox_orchestration.costs.common import utc_hour
from heliox_orchestration.db.engine import ensure_schema, make_engine
from heliox_orchestration.home import EMBEDDED_INSTANCE_FILE
from heliox_orchestration.settings import load_settings
from heliox_orchestration_tests.crafted import hourly, insert
from heliox_orchestration_tests.routed import ML_PATH, RESEARCH_PATH, ROUTING, by_channel
from heliox_orchestration_tests.slack_server import FakeSlackWebhook, Reply

ROOT = Path(__file__).parents[1]
# The filter of a job's Runs tab in the UI: dagster_graphql's GraphenePipeline.resolve_runs, a
# job name and the hidden repository label tag ".dagster/repository" = repository@location.
REPOSITORY_LABEL_TAG = ".dagster/repository"
REPOSITORY_LABEL = f"__repository__@{LOCATION_NAME}"


@pytest.fixture(autouse=True)
def fresh_definitions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each `heliox` command is a new process that loads the code location from its environment;
    here the commands share one process, so the module holding `defs` is loaded anew each time."""
    monkeypatch.delitem(sys.modules, "heliox_orchestration.definitions", raising=False)


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster-home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / EMBEDDED_INSTANCE_FILE).read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def test_run_daily_summary_previews_on_embedded_defaults_then_lists_it(dagster_home: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["run", "daily-summary"])
    assert first.exit_code == 0, first.output
    assert "daily_summary_refresh_job: succeeded" in first.output
    assert "Preview mode" in first.output and "📊 Heliox Daily Summary" in first.output
    assert "Top GPU Consumers (Yesterday):" in first.output

    again = runner.invoke(cli, ["run", "daily-summary"])
    assert again.exit_code == 0, again.output
    assert "already sent or previewed" in again.output

    listing = runner.invoke(cli, ["alerts"])
    assert listing.exit_code == 0, listing.output
    assert "previewed" in listing.output and "daily-summary:" in listing.output
    # The runs are in the instance, for the UI.
    assert any((dagster_home / "history").rglob("*.db"))
    # ... as runs of the code location: what the job pages, the Overview timeline and the
    # run-failure sensor select on.
    with DagsterInstance.get() as instance:
        for job in ("daily_summary_refresh_job", "daily_summary_job"):
            records = instance.get_run_records(
                RunsFilter(job_name=job, tags={REPOSITORY_LABEL_TAG: REPOSITORY_LABEL})
            )
            assert len(records) == 2, job
            for record in records:
                run = record.dagster_run
                assert run.status == DagsterRunStatus.SUCCESS
                assert run.remote_job_origin is not None
                assert run.remote_job_origin.location_name == LOCATION_NAME
                assert run.remote_job_origin.repository_origin.repository_name == "__repository__"
                assert run.tags["heliox/started_by"] == "heliox run"
        (alert,) = instance.get_runs(RunsFilter(job_name="daily_summary_job"), limit=1)
        assert alert.tags["dagster/max_runtime"] == "300"  # the job's own tags come along


def test_heliox_run_uses_the_location_name_of_every_workspace() -> None:
    for path in (ROOT / "workspace.yaml", ROOT / "deploy" / "workspace.yaml"):
        (entry,) = yaml.safe_load(path.read_text())["load_from"]
        (target,) = entry.values()
        assert target["location_name"] == LOCATION_NAME, path


def failure_notices(location: HelioxLocation, instance: DagsterInstance, cursor: str | None) -> str | None:
    """One tick of run_failure_slack_sensor, evaluated as the daemon evaluates it: through the
    code location, which names the location and repository whose runs the sensor watches."""
    data = location.location.get_sensor_execution_data(
        instance, location.repository.handle, "run_failure_slack_sensor", None, None, cursor, None, None
    )
    return data.cursor


def test_failed_heliox_run_is_one_line_and_reported_by_the_run_failure_sensor(
    dagster_home: Path,
    slack_server: FakeSlackWebhook,
    monkeypatch: pytest.MonkeyPatch,
    embedded_demo: Callable[[Path], None],
) -> None:
    """Both failures of a `heliox run` are one line each, and the run-failure sensor sees the
    runs: a refusal by Slack stays in the ledger without a notice (it would go to the same
    refusing Slack), a failed refresh gets its notice."""
    embedded_demo(load_settings().embedded_database_path)
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack_server.url())
    slack_server.script(Reply.error(404, "no_service"))  # the summary; later requests get "ok"
    runner = CliRunner()
    with DagsterInstance.get() as instance, heliox_location(instance) as location:
        cursor = failure_notices(location, instance, None)  # the first tick starts at the end
        result = runner.invoke(cli, ["run", "daily-summary"])
        assert result.exit_code == 1, result.output
        lines = result.output.splitlines()
        assert lines[0] == "daily_summary_refresh_job: succeeded"
        assert lines[1].startswith("daily_summary_job: FAILED: Slack refused the message")
        assert "HTTP 404 no_service" in lines[1]
        assert len(lines) == 2, result.output  # no stack trace, no log lines
        assert slack_server.url().split("/services/")[1] not in result.output
        assert len(slack_server.requests) == 1

        cursor = failure_notices(location, instance, cursor)
        assert len(slack_server.requests) == 1  # the refusal is the ledger's to report

        with sqlite3.connect(load_settings().embedded_database_path) as conn:
            conn.execute(
                "UPDATE gpu_usage_rows SET cost_usd = -1 WHERE rowid = "
                "(SELECT rowid FROM gpu_usage_rows ORDER BY usage_hour DESC LIMIT 1)"
            )
        failed = runner.invoke(cli, ["run", "burn-rate"])
        assert failed.exit_code == 1, failed.output
        failure_notices(location, instance, cursor)
    assert len(slack_server.requests) == 2
    notice = slack_server.requests[1].json["text"]
    assert "Heliox Run Failed" in notice and "gpu_costs_refresh_job" in notice


def test_failed_blocking_check_is_named_with_its_reason(dagster_home: Path) -> None:
    runner = CliRunner()
    seeded = runner.invoke(cli, ["seed-demo", "--gpus", "4", "--days", "2"])
    assert seeded.exit_code == 0, seeded.output
    with sqlite3.connect(load_settings().embedded_database_path) as conn:
        conn.execute(
            "UPDATE gpu_usage_rows SET cost_usd = -1 WHERE rowid = "
            "(SELECT rowid FROM gpu_usage_rows ORDER BY usage_hour DESC LIMIT 1)"
        )
    result = runner.invoke(cli, ["run", "burn-rate"])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    # The asset refuses the rows itself (issue 12): its one-line refusal, then the check it failed.
    assert lines[0].startswith("gpu_costs_refresh_job: FAILED: daily_gpu_costs ")
    assert " was not written: 1 row with negative cost_usd in the local days " in lines[0]
    assert lines[1].startswith(
        "  check daily_gpu_costs:valid_usage_rows failed: 1 row with negative cost_usd"
    )
    assert len(lines) == 2, result.output  # no alert job after a failed refresh


def test_run_daily_summary_sends_once_with_a_webhook(
    dagster_home: Path,
    slack_server: FakeSlackWebhook,
    monkeypatch: pytest.MonkeyPatch,
    embedded_demo: Callable[[Path], None],
) -> None:
    embedded_demo(load_settings().embedded_database_path)
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack_server.url())
    runner = CliRunner()
    result = runner.invoke(cli, ["run", "daily-summary"])
    assert result.exit_code == 0, result.output
    assert "Delivery: sent" in result.output
    assert len(slack_server.requests) == 1
    assert "Heliox Daily Summary" in slack_server.requests[0].json["text"]
    assert slack_server.url().split("/services/")[1] not in result.output


def test_run_refuses_a_production_environment_without_a_webhook_in_one_line(
    dagster_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HELIOX_ENV", "production")
    monkeypatch.setenv("HELIOX_DATABASE_URL", f"sqlite:///{tmp_path}/heliox.db")
    result = CliRunner().invoke(cli, ["run", "daily-summary"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: SLACK_WEBHOOK_URL is not set, and HELIOX_ENV=production")
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert not list(dagster_home.glob("storage/*")), "no run was started"


def test_alerts_on_an_empty_ledger_and_bad_arguments(dagster_home: Path) -> None:
    runner = CliRunner()
    assert "No alerts in the ledger" in runner.invoke(cli, ["alerts", "--since", "2026-01-01"]).output
    bad = runner.invoke(cli, ["alerts", "--since", "yesterday"])
    assert bad.exit_code == 2 and "--since" in bad.output
    assert runner.invoke(cli, ["run", "everything"]).exit_code == 2


@pytest.mark.parametrize(
    ("message", "cls_name", "line"),
    [
        ("dagster._core.definitions.events.Failure: Slack refused it\nmore", "Failure", "Slack refused it"),
        (
            "dagster._core.errors.DagsterAssetCheckFailedError: 1 blocking asset check failed:\n  x",
            "DagsterAssetCheckFailedError",
            "1 blocking asset check failed",
        ),
        ("sqlalchemy.exc.OperationalError: (sqlite3) no such table", "OperationalError", None),
        (
            "dagster._core.errors.DagsterExecutionInterruptedError",
            "DagsterExecutionInterruptedError",
            "interrupted",
        ),
        ("builtins.KeyError", "KeyError", "KeyError"),
    ],
)
def test_error_line_is_the_first_line_without_module_paths(
    message: str, cls_name: str, line: str | None
) -> None:
    from dagster._utils.error import SerializableErrorInfo

    expected = line or "OperationalError: (sqlite3) no such table"
    assert error_line(SerializableErrorInfo(message, [], cls_name)) == expected


def test_run_idle_spend_routes_each_team_and_honours_a_mute_from_the_command_line(
    dagster_home: Path, tmp_path: Path, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI path end to end: `heliox mute` one GPU, `heliox run idle-spend` with a routing
    file sends each team its own findings and the default the rest, `heliox alerts` lists the
    muted one as muted and `heliox doctor` every destination, masked."""
    database = f"sqlite:///{tmp_path}/heliox.db"
    monkeypatch.setenv("HELIOX_DATABASE_URL", database)
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack_server.url())
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING)
    monkeypatch.setenv("HELIOX_ROUTING_FILE", str(routing))
    monkeypatch.setenv("SLACK_WEBHOOK_URL_ML", slack_server.url(ML_PATH))
    monkeypatch.setenv("SLACK_WEBHOOK_URL_RESEARCH", slack_server.url(RESEARCH_PATH))
    engine = make_engine(database)
    ensure_schema(engine)
    start = utc_hour(dt.datetime.now(dt.UTC)) - dt.timedelta(days=14)
    for resource, team in (("ml-h100-1", "ml-platform"), ("ml-h100-2", "ml-platform"), ("orphan-l4", None)):
        insert(engine, hourly(resource, start, 14 * 24, "2.00", 0.5, team=team))
    runner = CliRunner()
    muted = runner.invoke(
        cli, ["mute", "idle-spend", "--resource", "ml-h100-1", "--for", "1d", "--reason", "reimaging"]
    )
    assert muted.exit_code == 0, muted.output

    result = runner.invoke(cli, ["run", "idle-spend"])
    assert result.exit_code == 0, result.output
    received = by_channel(slack_server)
    assert received["ml-platform"] == [
        "⚠️ Idle GPU Spend Detected (team ml-platform): 1 issue, $1,460.00/month potential savings"
    ]
    assert received["default"] == ["⚠️ Idle GPU Spend Detected: 1 issue, $1,460.00/month potential savings"]
    assert received["research"] == []

    listing = runner.invoke(cli, ["alerts"])
    assert listing.exit_code == 0, listing.output
    muted_line = next(line for line in listing.output.splitlines() if " muted " in line)
    assert "idle-spend@ml-platform:ml-h100-1:" in muted_line
    assert "by " in listing.output and ": reimaging (mute 1)" in listing.output

    doctor = runner.invoke(cli, ["doctor"])
    assert "team ml-platform" in doctor.output and "SLACK_WEBHOOK_URL_ML" in doctor.output
    assert "http://127.0.0.1/services/****...aaaa" in doctor.output
    for path in (ML_PATH, RESEARCH_PATH):
        secret = path.rsplit("/", 1)[1]
        assert secret not in doctor.output + result.output + listing.output


def test_run_and_preview_spend_anomaly_and_budget_on_the_demo(
    dagster_home: Path,
    slack_server: FakeSlackWebhook,
    monkeypatch: pytest.MonkeyPatch,
    embedded_demo: Callable[[Path], None],
) -> None:
    """The demo's research team doubles on its latest two days: yesterday's preview shows it;
    `heliox run` refreshes spend_anomalies then alerts (today's hours so far); with a budget,
    `heliox run budget` alerts once per level."""
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack_server.url())
    monkeypatch.setenv("MONTHLY_BUDGET_USD", "1000")
    embedded_demo(load_settings().embedded_database_path)  # what `heliox seed-demo` writes
    runner = CliRunner()
    yesterday = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    preview = runner.invoke(cli, ["preview", "spend-anomaly", "--date", yesterday])
    assert preview.exit_code == 0, preview.output
    assert "📈 GPU Spend Anomaly" in preview.output and "Team research" in preview.output
    assert "median of the same weekday over the previous 4 weeks" in preview.output
    run = runner.invoke(cli, ["run", "spend-anomaly"])
    assert run.exit_code == 0, run.output
    assert "spend_anomalies_refresh_job: succeeded" in run.output
    assert "spend_anomaly_alert_job: succeeded" in run.output
    budget = runner.invoke(cli, ["run", "budget"])
    assert budget.exit_code == 0, budget.output
    assert "budget_alert_job: succeeded" in budget.output and "Delivery: sent" in budget.output
    texts = [r.json["text"] for r in slack_server.requests]
    assert sum("GPU Budget Alert" in t for t in texts) == 1
    again = runner.invoke(cli, ["run", "budget"])
    assert again.exit_code == 0 and len(slack_server.requests) == len(texts)
