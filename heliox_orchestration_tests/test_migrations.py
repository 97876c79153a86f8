"""`heliox migrate`: a 0.1 database (frozen schema in schema_v01.py) with rows upgrades in place,
keeps every row, and is refused by writers and readers until it has."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, inspect, select, text

from heliox_orchestration.cli import cli
from heliox_orchestration.cli.common import open_database
from heliox_orchestration.db.engine import DatabaseConfigError, ensure_schema, make_engine
from heliox_orchestration.db.migrate import alembic_config, migrate, script_revisions
from heliox_orchestration.db.schema import gpu_usage_hourly, gpu_usage_pending
from heliox_orchestration.db.schema_version import HEAD_REVISION, REVISIONS, head_revision, schema_status
from heliox_orchestration.db.usage_partitions import month_partitions
from heliox_orchestration.resources.database import HelioxDatabase
from heliox_orchestration.settings import load_settings
from heliox_orchestration_tests import schema_v01

UTC = dt.UTC
HOURS = [dt.datetime(2026, 1, 31, 22, tzinfo=UTC) + dt.timedelta(hours=h) for h in range(4)]  # Jan and Feb


def _usage(resource: str, hour: dt.datetime, cost: str, util: float | None) -> dict[str, Any]:
    return {
        "usage_hour": hour,
        "provider": "aws",
        "region": "us-east-1",
        "resource_id": resource,
        "gpu_type": "H100",
        "gpu_count": 8,
        "model_name": None if util is None else "llama",
        "team": "research",
        "cost_usd": Decimal(cost),
        "gpu_utilization_pct": util,
    }


USAGE = [
    _usage(f"gpu-{n}", hour, f"{n}.12345{h}", None if n == 2 else 10.5 * h)
    for n in range(3)
    for h, hour in enumerate(HOURS)
]
PENDING = [_usage("gpu-9", dt.datetime(2030, 1, 1, tzinfo=UTC), "1.000001", None)]


def _v01_database(url: str) -> str:
    """A database as Heliox 0.1 left it: its tables, no version table, rows in them."""
    engine = create_engine(url)
    schema_v01.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(schema_v01.gpu_usage_hourly.insert(), USAGE)
        conn.execute(schema_v01.gpu_usage_pending.insert(), PENDING)
        conn.execute(
            schema_v01.alert_ledger.insert(),
            [
                {
                    "alert_key": "burn-rate:2026-02-01:100",
                    "alert_type": "burn_rate",
                    "status": "sent",
                    "attempts": 1,
                    "created_at": HOURS[0],
                    "updated_at": HOURS[0],
                }
            ],
        )
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def v01_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
        create: Callable[[str], str] = request.getfixturevalue("create_postgres_database")
        yield _v01_database(create("heliox_v01"))
    else:
        yield _v01_database(f"sqlite:///{tmp_path}/heliox-v01.db")


def _rows(engine: Engine) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    old_columns = [c.name for c in schema_v01.gpu_usage_hourly.columns]
    with engine.connect() as conn:
        usage = conn.execute(
            select(*(gpu_usage_hourly.c[c] for c in old_columns)).order_by(
                gpu_usage_hourly.c.resource_id, gpu_usage_hourly.c.usage_hour
            )
        )
        pending = conn.execute(select(*(gpu_usage_pending.c[c] for c in old_columns)))
        return [dict(r._mapping) for r in usage], [dict(r._mapping) for r in pending]


def test_a_v01_database_is_refused_then_migrated_in_place_keeping_every_row(v01_url: str) -> None:
    engine = make_engine(v01_url)
    with pytest.raises(
        DatabaseConfigError, match=r"schema 0\.1 \(unversioned\).*run `heliox migrate`"
    ) as refused:
        ensure_schema(engine)  # what every writer (import, refresh, runs) does first
    assert "\n" not in str(refused.value)
    with pytest.raises(DatabaseConfigError, match="heliox migrate"):
        open_database(v01_url, load_settings(), read_only=True)  # readers too
    with pytest.raises(DatabaseConfigError, match="heliox migrate"):
        HelioxDatabase(url=v01_url).get_engine()  # the resource of every Dagster run
    doctor = CliRunner(env={"HELIOX_DATABASE_URL": v01_url}).invoke(cli, ["doctor"])
    assert doctor.exit_code == 2 and "run `heliox migrate`" in doctor.output

    report = migrate(engine)

    assert report.before.revision is None and report.after.current
    assert report.after.revision == head_revision()
    usage, pending = _rows(engine)
    assert usage == sorted(USAGE, key=lambda r: (r["resource_id"], r["usage_hour"]))
    assert pending == PENDING
    with engine.connect() as conn:
        assert conn.execute(select(gpu_usage_hourly.c.pricing_category).distinct()).scalars().all() == [None]
        assert conn.execute(text("SELECT count(*) FROM alert_ledger")).scalar() == 1
        # Stored keyed by resource (revision 0004), read through the view of the old name.
        assert "gpu_usage_hourly" in inspect(conn).get_view_names()
        resources = conn.execute(text("SELECT resource_id FROM gpu_resources ORDER BY resource_key"))
        assert resources.scalars().all() == ["gpu-0", "gpu-1", "gpu-2"]
        indexes = {i["name"] for i in inspect(conn).get_indexes("gpu_usage_rows")}
        if conn.dialect.name == "postgresql":
            assert (
                conn.execute(text("SELECT relkind FROM pg_class WHERE relname = 'gpu_usage_rows'")).scalar()
                == "p"
            )
            assert [p.name for p in month_partitions(conn)][:2] == [
                "gpu_usage_hourly_2026_01",
                "gpu_usage_hourly_2026_02",
            ]
            assert conn.execute(text("SELECT count(*) FROM gpu_usage_hourly_2026_02")).scalar() == 6
            assert conn.execute(text("SELECT count(*) FROM gpu_usage_hourly_default")).scalar() == 0
            assert indexes == {"brin_gpu_usage_rows_usage_hour"}  # the primary key aside
            # The 0.1 table's checks came along: NaN is still refused.
            with pytest.raises(Exception, match="ck_gpu_usage_hourly_cost_usd_not_nan"), engine.begin() as c2:
                c2.execute(text("UPDATE gpu_usage_hourly SET cost_usd = 'NaN'"))
        else:
            assert indexes == {"ix_gpu_usage_rows_usage_hour"}
    ensure_schema(engine)  # writers accept it now

    again = migrate(engine)  # idempotent
    assert not again.changed and again.after.current
    assert _rows(engine) == (usage, pending)
    engine.dispose()


def test_heliox_migrate_command_upgrades_then_reports_current(v01_url: str) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["migrate", "--database-url", v01_url])
    assert first.exit_code == 0, first.output
    assert f"Migrated from 0.1 (unversioned) to revision {head_revision()}." in first.output
    # pricing_category comes from its revision; only columns new since then are added by name.
    assert "added column gpu_usage_hourly.pricing_category" not in first.output
    second = runner.invoke(cli, ["migrate", "--database-url", v01_url])
    assert second.exit_code == 0, second.output
    assert f"Already current: schema revision {head_revision()}." in second.output


def test_a_fresh_database_is_created_at_head(any_engine: Engine) -> None:
    with any_engine.connect() as conn:
        status = schema_status(conn)
    assert status.current and status.revision == head_revision()
    assert not migrate(any_engine).changed


def test_a_database_from_a_newer_heliox_is_refused(sqlite_engine: Engine) -> None:
    with sqlite_engine.begin() as conn:
        conn.execute(text("UPDATE heliox_schema_version SET version_num = '9999'"))
    with pytest.raises(DatabaseConfigError, match=r"newer Heliox.*upgrade Heliox"):
        ensure_schema(sqlite_engine)


def test_the_revisions_the_schema_check_knows_are_the_revision_files() -> None:
    # schema_version.py does not import Alembic (the definitions load it): it lists them itself.
    assert script_revisions() == list(REVISIONS) and REVISIONS[-1] == HEAD_REVISION


def test_a_table_new_in_the_schema_is_created_by_migrate_without_a_revision(any_engine: Engine) -> None:
    with any_engine.begin() as conn:
        conn.execute(text("DROP TABLE muted_alerts"))  # as if a newer Heliox had added it
    with pytest.raises(DatabaseConfigError, match=r"lacks tables muted_alerts: run `heliox migrate`"):
        ensure_schema(any_engine)
    report = migrate(any_engine)
    assert report.created_tables == ["muted_alerts"] and report.after.current
    assert "muted_alerts" in inspect(any_engine).get_table_names()


def _at_0003_with_month_partitions(url: str) -> None:
    """A database as Heliox at revision 0003 left it: on PostgreSQL its rows in month partitions
    of the partitioned gpu_usage_hourly (created here as that version's writers did)."""
    engine = create_engine(url)
    with engine.begin() as conn:
        command.stamp(alembic_config(conn), "0001")
        command.upgrade(alembic_config(conn), "0003")
        if conn.dialect.name == "postgresql":
            for name, start, end in (
                ("gpu_usage_hourly_2026_01", "2026-01-01", "2026-02-01"),
                ("gpu_usage_hourly_2026_02", "2026-02-01", "2026-03-01"),
            ):
                bounds = f"usage_hour >= '{start}+00' AND usage_hour < '{end}+00'"
                conn.execute(text(f"CREATE TABLE {name} (LIKE gpu_usage_hourly INCLUDING ALL)"))
                conn.execute(
                    text(
                        f"WITH moved AS (DELETE FROM gpu_usage_hourly_default WHERE {bounds} RETURNING *) "
                        f"INSERT INTO {name} SELECT * FROM moved"
                    )
                )
                conn.execute(
                    text(
                        f"ALTER TABLE gpu_usage_hourly ATTACH PARTITION {name} "
                        f"FOR VALUES FROM ('{start}+00') TO ('{end}+00')"
                    )
                )
    engine.dispose()


def test_a_0003_database_with_month_partitions_migrates_keeping_every_row(v01_url: str) -> None:
    _at_0003_with_month_partitions(v01_url)
    engine = make_engine(v01_url)
    with pytest.raises(DatabaseConfigError, match=r"revision 0003, needs revision 0004.*heliox migrate"):
        ensure_schema(engine)

    report = migrate(engine)

    assert report.before.revision == "0003" and report.after.current
    usage, pending = _rows(engine)
    assert usage == sorted(USAGE, key=lambda r: (r["resource_id"], r["usage_hour"]))
    assert pending == PENDING
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            assert [p.name for p in month_partitions(conn)][:2] == [
                "gpu_usage_hourly_2026_01",
                "gpu_usage_hourly_2026_02",
            ]
            parent = "SELECT inhparent::regclass::text FROM pg_inherits WHERE inhrelid = to_regclass(:p)"
            assert conn.execute(text(parent), {"p": "gpu_usage_hourly_2026_01"}).scalar() == "gpu_usage_rows"
            assert conn.execute(text("SELECT count(*) FROM gpu_usage_hourly_2026_01")).scalar() == 6
            left = "SELECT count(*) FROM pg_class WHERE relname LIKE '%v03%'"
            assert conn.execute(text(left)).scalar() == 0  # the old table and partitions are gone
        # The view takes writes: a new resource gets its key, a deleted row goes.
        hour = dt.datetime(2026, 2, 1, 5, tzinfo=UTC)
        conn.execute(gpu_usage_hourly.insert(), [_usage("gpu-new", hour, "2.000001", 50.0)])
        conn.execute(
            gpu_usage_hourly.update().where(gpu_usage_hourly.c.resource_id == "gpu-new").values(team="infra")
        )
        conn.execute(gpu_usage_hourly.delete().where(gpu_usage_hourly.c.resource_id == "gpu-0"))
        teams = select(gpu_usage_hourly.c.resource_id, gpu_usage_hourly.c.team).distinct()
        assert sorted(conn.execute(teams).all()) == [
            ("gpu-1", "research"),
            ("gpu-2", "research"),
            ("gpu-new", "infra"),
        ]
    ensure_schema(engine)
    engine.dispose()
