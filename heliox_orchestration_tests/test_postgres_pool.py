"""The harness's PostgreSQL pool (postgres_pool.py): a database goes back to the pool empty and
at the head schema, and one whose schema a test changed never goes back."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, text

from heliox_orchestration.db.alert_schema import alert_ledger
from heliox_orchestration.db.engine import ensure_schema, make_engine, table_row_counts
from heliox_orchestration.db.schema import metadata
from heliox_orchestration_tests.crafted import hourly, insert
from heliox_orchestration_tests.postgres_pool import PostgresPool, sizes

pytestmark = pytest.mark.postgres


def test_a_released_database_comes_back_empty_and_at_the_head_schema(postgres_pool: PostgresPool) -> None:
    url = postgres_pool.acquire()
    engine = make_engine(url)
    start = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=3)
    insert(engine, hourly("gpu-1", start, 3, "2.00", 0.5))
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    leftover = engine.connect()  # a connection the test forgot: the pool ends it
    leftover.execute(select(func.count()).select_from(alert_ledger))
    postgres_pool.release(url)
    leftover.invalidate()  # ended by the pool: not returned to the engine's own pool
    engine.dispose()

    assert postgres_pool.acquire() == url
    again = make_engine(url)
    ensure_schema(again)  # at the head revision
    assert set(table_row_counts(again).values()) == {0}
    assert len(table_row_counts(again)) == len(metadata.tables)
    with again.connect() as conn:
        analyzed = conn.execute(
            text("SELECT count(*) FROM pg_stats WHERE schemaname = 'public'")
        ).scalar_one()
    assert analyzed == 0
    assert sorted(sizes(again), key=str) == sorted(postgres_pool.sizes, key=str)  # as never analyzed
    again.dispose()
    postgres_pool.release(url)


def test_a_database_whose_schema_changed_is_not_reused(postgres_pool: PostgresPool) -> None:
    url = postgres_pool.acquire()
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE alert_ledger DROP COLUMN sent_at"))
    engine.dispose()
    postgres_pool.release(url)
    assert url not in postgres_pool.free
