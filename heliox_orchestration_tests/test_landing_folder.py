"""The FOCUS landing folder (``HELIOX_FOCUS_DIR``): which files are new or changed
(``ingest/landing.py``, on real files), and ``focus_landing_sensor`` with ``focus_import_job``
run in process against a real SQLite database: one run per new or changed file, the same
content once, a bad file failing its run with the file, line and column and writing nothing."""

from __future__ import annotations

import datetime as dt
import gzip
import shutil
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DagsterEventType, ExecuteInProcessResult, SensorResult
from sqlalchemy import Engine, func, select

from heliox_orchestration.automation.manual import error_line
from heliox_orchestration.db.schema import gpu_usage_hourly
from heliox_orchestration.definitions import build_defs
from heliox_orchestration.ingest.landing import (
    SETTLE_SECONDS,
    LandingPlan,
    LandingState,
    file_sha256,
    landing_file,
    plan_landing,
    scan_folder,
)
from heliox_orchestration.settings import Settings, SettingsError, load_settings
from heliox_orchestration_tests.automation_env import NOW, Heliox, make_heliox, requests_of
from heliox_orchestration_tests.focus_files import focus_text, p5_hours, set_age, write_export
from heliox_orchestration_tests.slack_server import FakeSlackWebhook

TODAY = dt.datetime(2026, 1, 9, tzinfo=dt.UTC)
SEEN_STATE = LandingState()


class CountingHasher:
    """``file_sha256``, counting the files it reads."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, path: Path) -> str:
        self.paths.append(path.name)
        return file_sha256(path)


def plan(
    folder: Path,
    state: LandingState,
    hasher: Callable[[Path], str] = file_sha256,
    *,
    hash_budget: float = 20.0,
    max_imports: int = 25,
    monotonic: Callable[[], float] = time.monotonic,
) -> LandingPlan:
    return plan_landing(
        folder,
        state,
        time.time(),
        hash_budget=hash_budget,
        max_imports=max_imports,
        hasher=hasher,
        monotonic=monotonic,
    )


# --- which files (pure, on real files) -----------------------------------------------------------


def test_exports_are_csv_csv_gz_and_parquet_anywhere_below_the_folder(tmp_path: Path) -> None:
    rows = p5_hours("i-1", TODAY, 1, "1.00")
    for name in ("a.csv", "sub/dir/b.CSV.GZ", "c.snappy.parquet"):
        write_export(tmp_path / name, rows)
    for name in ("notes.txt", "d.json", ".hidden.csv", ".cache/e.csv", "f.csv.part", "g.csv.tmp", "h.csv~"):
        write_export(tmp_path / name, rows)
    found = scan_folder(tmp_path)
    assert sorted(f.relative for f in found) == ["a.csv", "c.snappy.parquet", "sub/dir/b.CSV.GZ"]
    assert [f.mtime_ns for f in found] == sorted(f.mtime_ns for f in found), "oldest first"


def test_a_file_is_hashed_only_when_its_size_or_time_changed(tmp_path: Path) -> None:
    write_export(tmp_path / "a.csv", p5_hours("i-1", TODAY, 2, "1.00"))
    write_export(tmp_path / "b.csv.gz", p5_hours("i-2", TODAY, 2, "2.00"))
    hasher = CountingHasher()
    first = plan(tmp_path, SEEN_STATE, hasher)
    assert [e.relative for e in first.imports] == ["a.csv", "b.csv.gz"]
    assert [e.version for e in first.imports] == [1, 1]
    assert first.imports[0].sha256 == file_sha256(tmp_path / "a.csv")
    assert sorted(hasher.paths) == ["a.csv", "b.csv.gz"]

    hasher.paths.clear()
    again = plan(tmp_path, LandingState.parse(first.state.dump()), hasher)
    assert again.imports == [] and again.unchanged == 2
    assert hasher.paths == [], "an unchanged file must not be read again"

    # The same content copied over itself (a new modification time): read, not imported.
    shutil.copyfile(tmp_path / "a.csv", tmp_path / "a.csv.part")
    (tmp_path / "a.csv.part").replace(tmp_path / "a.csv")
    set_age(tmp_path / "a.csv", 30)
    touched = plan(tmp_path, again.state, hasher)
    assert touched.imports == [] and touched.touched == ["a.csv"] and hasher.paths == ["a.csv"]


def test_a_changed_file_is_imported_again_and_every_version_has_its_own_run_key(tmp_path: Path) -> None:
    path = tmp_path / "focus.csv"
    versions = [p5_hours("i-1", TODAY, 2, "1.00"), p5_hours("i-1", TODAY, 2, "1.50")]
    state, keys = SEEN_STATE, []
    for rows in (versions[0], versions[1], versions[0]):  # A, B, then A again
        write_export(path, rows, age_seconds=60 - len(keys))
        result = plan(tmp_path, state)
        (export,) = result.imports
        keys.append(export.run_key)
        state = result.state
    assert [k.rsplit("#", 1)[1] for k in keys] == ["v1", "v2", "v3"]
    assert len(set(keys)) == 3
    assert keys[0].split("#")[0] == keys[2].split("#")[0], "same path and content"


def test_the_same_content_under_another_name_is_imported_once(tmp_path: Path) -> None:
    write_export(tmp_path / "jan.csv", p5_hours("i-1", TODAY, 2, "1.00"))
    first = plan(tmp_path, SEEN_STATE)
    shutil.copy2(tmp_path / "jan.csv", tmp_path / "copy-of-jan.csv")
    second = plan(tmp_path, first.state)
    assert second.imports == [] and second.copies == [("copy-of-jan.csv", "jan.csv")]
    # Removed files are forgotten: the copy stays known, so it is still not imported.
    (tmp_path / "jan.csv").unlink()
    third = plan(tmp_path, second.state)
    assert third.forgotten == ["jan.csv"] and third.imports == [] and third.unchanged == 1


def test_a_file_being_written_waits_and_hashing_is_bounded_per_scan(tmp_path: Path) -> None:
    write_export(tmp_path / "fresh.csv", p5_hours("i-1", TODAY, 1, "1.00"), age_seconds=SETTLE_SECONDS / 5)
    waiting = plan(tmp_path, SEEN_STATE)
    assert waiting.settling == ["fresh.csv"] and waiting.imports == [] and waiting.state.files == {}

    for n in range(3):
        write_export(tmp_path / f"m{n}.csv", p5_hours(f"i-{n}", TODAY, 1, "1.00"), age_seconds=100 - n)
    ticks = iter(range(100))  # each look at the clock: one second later
    bounded = plan(tmp_path, SEEN_STATE, monotonic=lambda: float(next(ticks)), hash_budget=2.5)
    assert [e.relative for e in bounded.imports] == ["m0.csv", "m1.csv"]
    assert bounded.deferred == ["m2.csv"] and bounded.settling == ["fresh.csv"]
    rest = plan(tmp_path, bounded.state, max_imports=1)
    assert [e.relative for e in rest.imports] == ["m2.csv"]


def test_a_file_outside_the_folder_is_refused(tmp_path: Path) -> None:
    assert landing_file(tmp_path, "a/b.csv") == (tmp_path / "a" / "b.csv").resolve()
    for bad in ("../secrets.csv", "/etc/passwd", "a/../../x.csv"):
        with pytest.raises(ValueError, match="landing folder"):
            landing_file(tmp_path, bad)


def test_the_setting_names_a_folder(tmp_path: Path) -> None:
    assert load_settings({"HELIOX_FOCUS_DIR": str(tmp_path)}).focus_dir == tmp_path
    with pytest.raises(SettingsError, match=r"^HELIOX_FOCUS_DIR=.*/nope does not exist; create the folder"):
        load_settings({"HELIOX_FOCUS_DIR": str(tmp_path / "nope")})
    (tmp_path / "file").write_text("x")
    with pytest.raises(SettingsError, match="is not a folder"):
        load_settings({"HELIOX_FOCUS_DIR": str(tmp_path / "file")})
    names = {j.name for j in build_defs(Settings()).resolve_all_job_defs()}
    sensors = {s.name for s in build_defs(Settings()).sensors}
    assert "focus_import_job" not in names and "focus_landing_sensor" not in sensors
    with_folder = build_defs(Settings(focus_dir=tmp_path))
    assert "focus_landing_sensor" in {s.name for s in with_folder.sensors}
    assert with_folder.resolve_job_def("focus_import_job").tags["heliox/usage_import"] == "focus"


# --- the sensor and the import runs (in process, real SQLite) -------------------------------------


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder


@pytest.fixture
def heliox(
    sqlite_engine: Engine, slack_server: FakeSlackWebhook, monkeypatch: pytest.MonkeyPatch, landing: Path
) -> Heliox:
    settings = Settings(burn_rate_threshold_usd=Decimal("1000"), focus_dir=landing)
    return make_heliox(sqlite_engine, slack_server, monkeypatch, settings)


def usage_rows(engine: Engine) -> list[tuple[str, dt.datetime, Decimal]]:
    u = gpu_usage_hourly.c
    with engine.connect() as conn:
        query = select(u.resource_id, u.usage_hour, u.cost_usd).order_by(u.resource_id, u.usage_hour)
        return [(r[0], r[1], r[2]) for r in conn.execute(query)]


def skip_text(result: SensorResult) -> str:
    return result.skip_reason.skip_message or "" if result.skip_reason else ""


def import_all(heliox: Heliox, cursor: str | None) -> tuple[SensorResult, list[ExecuteInProcessResult]]:
    tick = heliox.tick("focus_landing_sensor", cursor)
    return tick, [heliox.run_request(r, "focus_import_job") for r in requests_of(tick)]


def test_each_new_or_changed_file_is_imported_once_with_its_report(heliox: Heliox, landing: Path) -> None:
    write_export(landing / "aws" / "2026-01.csv", p5_hours("i-0aws", TODAY, 17, "98.32"))
    write_export(landing / "older.csv.gz", p5_hours("i-0old", TODAY - dt.timedelta(days=4), 24, "40.96"))
    tick, runs = import_all(heliox, None)
    assert [r.tags["heliox/focus_file"] for r in requests_of(tick)] == ["aws/2026-01.csv", "older.csv.gz"]
    assert all(run.success for run in runs)
    rows = usage_rows(heliox.engine)
    assert len(rows) == 17 + 24
    assert sum((r[2] for r in rows if r[0] == "i-0aws"), Decimal(0)) == Decimal("1671.44")

    # The import report is the run's metadata: an observation of focus_exports, a
    # materialization of gpu_usage_hourly with the hours touched.
    (materialization,) = runs[0].get_asset_materialization_events()
    meta = {k: getattr(v, "value", v) for k, v in materialization.materialization.metadata.items()}
    assert materialization.asset_key == AssetKey("gpu_usage_hourly")
    assert (
        meta["first_hour"] == TODAY.isoformat()
        and meta["last_hour"] == (TODAY + dt.timedelta(hours=16)).isoformat()
    )
    assert meta["resource_hours"] == 17 and meta["imported_cost"] == "$1,671.44"
    assert meta["sha256"] == file_sha256(landing / "aws" / "2026-01.csv")
    assert "Wrote 17 resource-hours of 1 GPU resources" in meta["report"]
    (observation,) = [e for e in runs[0].all_events if e.event_type == DagsterEventType.ASSET_OBSERVATION]
    assert observation.asset_key == AssetKey("focus_exports")

    # Ticks after: nothing new. The same file dropped again (same content): not imported again.
    again, _ = import_all(heliox, tick.cursor)
    assert requests_of(again) == [] and "2 unchanged" in skip_text(again)
    write_export(landing / "aws" / "2026-01.csv", p5_hours("i-0aws", TODAY, 17, "98.32"), age_seconds=20)
    dropped_again, _ = import_all(heliox, again.cursor)
    assert requests_of(dropped_again) == [] and "1 touched, same content" in skip_text(dropped_again)

    # A changed file (AWS rewrote the month): imported again, its hours replaced.
    write_export(landing / "aws" / "2026-01.csv", p5_hours("i-0aws", TODAY, 17, "90.00"), age_seconds=10)
    changed, changed_runs = import_all(heliox, dropped_again.cursor)
    (request,) = requests_of(changed)
    assert request.run_key and request.run_key.endswith("#v2") and changed_runs[0].success
    assert sum((r[2] for r in usage_rows(heliox.engine) if r[0] == "i-0aws"), Decimal(0)) == Decimal(
        "1530.00"
    )


def test_a_bad_file_fails_its_run_with_file_line_and_column_and_writes_nothing(
    heliox: Heliox, landing: Path
) -> None:
    write_export(landing / "good.csv", p5_hours("i-0good", TODAY, 3, "10.00"))
    tick, _ = import_all(heliox, None)
    before = usage_rows(heliox.engine)
    rows = p5_hours("i-0bad", TODAY, 5, "10.00")
    rows[3]["EffectiveCost"] = "12,50"
    write_export(landing / "bad.csv", rows)
    bad_tick, (bad_run,) = import_all(heliox, tick.cursor)
    assert not bad_run.success
    (failure,) = bad_run.get_step_failure_events()
    error = failure.step_failure_data.error
    assert error is not None and error.cls_name == "Failure"
    assert error_line(error) == (
        f"{(landing / 'bad.csv').resolve()}, line 5, column EffectiveCost: '12,50' is not a number"
    ), error.message
    assert usage_rows(heliox.engine) == before
    assert bad_run.get_asset_materialization_events() == []
    # The operator hears of it in Slack: the run-failure notice carries the same line.
    heliox.run_failure_tick(bad_run.run_id)
    (notice,) = heliox.texts()
    assert "focus_import_job" in notice and "line 5, column EffectiveCost: '12,50' is not a number" in notice
    # The same bad file is not retried on every tick; a fixed version is imported.
    assert requests_of(heliox.tick("focus_landing_sensor", bad_tick.cursor)) == []
    rows[3]["EffectiveCost"] = "12.50"
    write_export(landing / "bad.csv", rows, age_seconds=10)
    _, (fixed,) = import_all(heliox, bad_tick.cursor)
    assert fixed.success and len(usage_rows(heliox.engine)) == len(before) + 5


def test_a_file_changed_after_the_sensor_saw_it_is_left_to_the_next_run(
    heliox: Heliox, landing: Path
) -> None:
    path = write_export(landing / "focus.csv", p5_hours("i-1", TODAY, 2, "1.00"))
    tick = heliox.tick("focus_landing_sensor")
    (request,) = requests_of(tick)
    write_export(path, p5_hours("i-1", TODAY, 3, "1.00"), age_seconds=30)  # rewritten meanwhile
    stale = heliox.run_request(request, "focus_import_job")
    assert stale.success and usage_rows(heliox.engine) == []
    (newer,) = requests_of(heliox.tick("focus_landing_sensor", tick.cursor))
    assert heliox.run_request(newer, "focus_import_job").success
    assert len(usage_rows(heliox.engine)) == 3


def test_usage_landing_today_refreshes_todays_costs_and_the_burn_rate_alert_follows(
    heliox: Heliox, landing: Path
) -> None:
    """Detection follows the data: the import run's materialization of gpu_usage_hourly ->
    new_usage_sensor -> today's daily_gpu_costs -> burn_rate_sensor -> Slack."""
    write_export(landing / "today.csv", p5_hours("i-0aws", TODAY, 17, "98.32"))  # $1,671.44 so far
    write_export(landing / "two-days.csv", p5_hours("i-0old", TODAY - dt.timedelta(days=2), 48, "1.00"))
    write_export(landing / "last-week.csv", p5_hours("i-0old", TODAY - dt.timedelta(days=6), 24, "1.00"))
    _, runs = import_all(heliox, None)
    assert all(r.success for r in runs)
    usage = heliox.tick("new_usage_sensor")
    # Adjacent days merge into one range run; a day apart is a run of its own.
    past, refresh = sorted(requests_of(usage), key=lambda r: r.run_key or "")
    assert past.partition_key == "2026-01-03"
    assert refresh.tags["dagster/asset_partition_range_start"] == "2026-01-07"
    assert refresh.tags["dagster/asset_partition_range_end"] == "2026-01-09"
    assert heliox.run_request(past, "gpu_costs_refresh_job").success
    assert heliox.run_request(refresh, "gpu_costs_refresh_job").success
    assert requests_of(heliox.tick("new_usage_sensor", usage.cursor)) == []

    burn = heliox.tick("burn_rate_sensor")
    (alert,) = requests_of(burn)
    assert alert.tags["heliox/day"] == "2026-01-09"
    assert heliox.run_request(alert, "burn_rate_alert_job").success
    (text,) = heliox.texts()
    assert "High Burn Rate" in text and "$1,671.44" in text


def test_usage_of_one_past_day_refreshes_that_day_only(heliox: Heliox, landing: Path) -> None:
    write_export(landing / "day.csv", p5_hours("i-0old", TODAY - dt.timedelta(days=2), 24, "1.00"))
    import_all(heliox, None)
    (refresh,) = requests_of(heliox.tick("new_usage_sensor"))
    assert refresh.partition_key == "2026-01-07" and "dagster/asset_partition_range_start" not in refresh.tags


def test_a_parquet_export_is_imported_like_its_csv(heliox: Heliox, landing: Path, tmp_path: Path) -> None:
    rows = p5_hours("i-0pq", TODAY, 5, "98.32")
    pd.DataFrame(rows).to_parquet(landing / "export.snappy.parquet", index=False)
    set_age(landing / "export.snappy.parquet", 60)
    _, (run,) = import_all(heliox, None)
    assert run.success
    assert sum((r[2] for r in usage_rows(heliox.engine)), Decimal(0)) == Decimal("491.60")


def test_a_gzip_export_holds_the_same_rows_as_its_csv(heliox: Heliox, landing: Path) -> None:
    rows = p5_hours("i-0gz", TODAY, 4, "3.25")
    (landing / "plain.csv").write_text(focus_text(rows))
    (landing / "packed.csv.gz").write_bytes(
        gzip.compress(focus_text(p5_hours("i-0gz2", TODAY, 4, "3.25")).encode())
    )
    for name in ("plain.csv", "packed.csv.gz"):
        set_age(landing / name, 60)
    _, runs = import_all(heliox, None)
    assert [r.success for r in runs] == [True, True]
    totals = {}
    for rid, _, cost in usage_rows(heliox.engine):
        totals[rid] = totals.get(rid, Decimal(0)) + cost
    assert totals == {"i-0gz": Decimal("13.00"), "i-0gz2": Decimal("13.00")}
    assert NOW.date() == TODAY.date()
    with heliox.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(gpu_usage_hourly)).scalar_one() == 8
