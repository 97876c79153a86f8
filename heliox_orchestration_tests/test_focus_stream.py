"""The FOCUS import's streaming write on PostgreSQL (``ingest/focus/stream``): each chunk written
while the next is read, in one transaction. It must store exactly what the general import stores
(checked against it on SQLite), fall back to the general import for what it cannot sum chunk by
chunk, and leave the database untouched when a later line is bad."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, select

from heliox_orchestration.cli import cli
from heliox_orchestration.db.schema import gpu_resources, gpu_usage_pending
from heliox_orchestration.ingest.focus.importer import import_focus
from heliox_orchestration.ingest.focus.validation import ImportInputError
from heliox_orchestration_tests.test_focus_import import (
    _row,
    stored,
    stored_frame,
    write_focus,
)

pytestmark = pytest.mark.postgres

START = dt.datetime(2026, 3, 28, 20, tzinfo=dt.UTC)  # the import crosses a month partition
NOW = START + dt.timedelta(hours=30)
IMPORTER_LOG = "heliox_orchestration.ingest.focus.importer"
CHUNK = 7  # rows per chunk: every file below is several chunks


def _gpu(
    resource: str, start: dt.datetime, cost: str = "98.32", hours: int = 1, **values: str
) -> dict[str, str]:
    row = {
        "EffectiveCost": cost,
        "ProviderName": "AWS",
        "RegionId": "us-east-1",
        "ResourceId": resource,
        "ResourceType": "instance",
        "x_UsageType": "USE1-BoxUsage:p5.48xlarge",
        "Tags": '{"model": "llama-70b-serve", "team": "llm-serving"}',
    }
    return _row(start, hours, imported=True, **{**row, **values})


def fleet_rows() -> list[dict[str, str]]:
    """Four GPUs for 30 hours (ordered by hour, as exports are), a day charge spread over its
    hours, a charge of hours that have not started (held), and rows the import skips."""
    rows = []
    for h in range(30):
        for n in range(4):
            rows.append(_gpu(f"i-0stream{n:010d}", START + dt.timedelta(hours=h), f"{30 + n}.25"))
    rows.append(_gpu("i-0daily0000000001", START, "2359.680007", hours=24))
    rows.append(_gpu("i-0ahead0000000001", NOW - dt.timedelta(minutes=30), "12.00", hours=3))
    rows.append(_row(START, ChargeCategory="Tax", EffectiveCost="5.00", ProviderName="AWS"))
    rows.append(_row(START, EffectiveCost="0.02", ProviderName="AWS", ResourceId="arn:aws:s3:::bucket"))
    return rows


def _rows(engine: Engine) -> pd.DataFrame:
    frame = stored_frame(engine)
    return frame.sort_values(["resource_id", "usage_hour"], ignore_index=True)


def _held(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(gpu_usage_pending)).scalar_one()


def _read_again(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == IMPORTER_LOG and "again" in r.getMessage()]


def test_the_stream_stores_what_the_general_import_stores(
    tmp_path: Path, postgres_engine: Engine, sqlite_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=IMPORTER_LOG)
    path = write_focus(tmp_path / "fleet.csv", fleet_rows())
    streamed = import_focus(postgres_engine, path, now=NOW, chunk_rows=CHUNK)
    assert _read_again(caplog) == []
    general = import_focus(sqlite_engine, path, now=NOW, chunk_rows=CHUNK)
    assert streamed == general
    assert streamed.resource_hours == 4 * 30 + 24 + 4 and streamed.pending_hours == 2  # 3 h from :30: 4
    pd.testing.assert_frame_equal(_rows(postgres_engine), _rows(sqlite_engine), check_dtype=False)
    assert _held(postgres_engine) == _held(sqlite_engine) == 2
    assert stored(postgres_engine)[1] == streamed.imported_cost_usd - Decimal("6")  # 2 of 4 hours held


def _split_hour(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """A second charge of the first resource-hour, chunks after the first."""
    return [*rows, _gpu("i-0stream0000000000", START, "0.10", x_UsageType="EBSOptimized:p5.48xlarge")]


def _same_chunk(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [rows[0], _gpu("i-0stream0000000000", START, "0.10"), *rows[1:]]


def _correction(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [
        *rows,
        _gpu("i-0stream0000000001", START + dt.timedelta(hours=2), "-1.00", ChargeClass="Correction"),
    ]


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (_split_hour, "stored already, or charged in two chunks"),
        (_same_chunk, "charged on more than one line"),
        (_correction, "corrects charges"),
    ],
)
def test_what_the_stream_cannot_sum_is_read_again(
    tmp_path: Path,
    postgres_engine: Engine,
    sqlite_engine: Engine,
    caplog: pytest.LogCaptureFixture,
    make: object,
    why: str,
) -> None:
    caplog.set_level(logging.INFO, logger=IMPORTER_LOG)
    path = write_focus(tmp_path / "fleet.csv", make(fleet_rows()))  # type: ignore[operator]
    streamed = import_focus(postgres_engine, path, now=NOW, chunk_rows=CHUNK)
    (message,) = _read_again(caplog)
    assert why in message
    general = import_focus(sqlite_engine, path, now=NOW, chunk_rows=CHUNK)
    assert streamed == general
    pd.testing.assert_frame_equal(_rows(postgres_engine), _rows(sqlite_engine), check_dtype=False)
    assert _held(postgres_engine) == 2


def test_a_reimport_replaces_through_the_general_import(
    tmp_path: Path, postgres_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=IMPORTER_LOG)
    path = write_focus(tmp_path / "fleet.csv", fleet_rows())
    first = import_focus(postgres_engine, path, now=NOW, chunk_rows=CHUNK)
    before = _rows(postgres_engine)
    second = import_focus(postgres_engine, path, now=NOW, chunk_rows=CHUNK)
    assert "stored already" in _read_again(caplog)[0]
    assert second.replaced_rows == first.resource_hours
    pd.testing.assert_frame_equal(_rows(postgres_engine), before)
    assert _held(postgres_engine) == 2


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"EffectiveCost": "12,50"}, "column EffectiveCost: '12,50' is not a number"),
        ({"ResourceId": "i-\x00"}, "column ResourceId: contains a NUL character"),
        ({"EffectiveCost": "20000"}, "column EffectiveCost: the charges of resource 'i-0late"),
    ],
)
def test_a_bad_line_after_written_chunks_leaves_the_database_as_it_was(
    tmp_path: Path, postgres_engine: Engine, bad: dict[str, str], message: str
) -> None:
    rows = fleet_rows()
    rows.append(_gpu("i-0late000000000001", START, **{"BilledCost": "", **bad}))
    path = write_focus(tmp_path / "bad.csv", rows)
    with pytest.raises(ImportInputError, match=f"bad.csv, line {len(rows) + 1}, {message}"):
        import_focus(postgres_engine, path, now=NOW, chunk_rows=CHUNK)
    assert stored(postgres_engine) == (0, Decimal(0))
    assert _held(postgres_engine) == 0
    with postgres_engine.connect() as conn:  # resources registered by the written chunks: rolled back
        assert conn.execute(select(func.count()).select_from(gpu_resources)).scalar_one() == 0


def test_every_value_is_checked_before_an_hourly_total_is_refused(
    tmp_path: Path, postgres_engine: Engine
) -> None:
    """As in the general import: a bad value on a later line is named before an implausible hour."""
    rows = fleet_rows()
    rows[1]["EffectiveCost"] = rows[1]["BilledCost"] = "20000"
    rows.append(_gpu("i-0late000000000001", START, "n/a"))
    path = write_focus(tmp_path / "bad.csv", rows)
    with pytest.raises(ImportInputError, match=f"line {len(rows) + 1}, column EffectiveCost: 'n/a'"):
        import_focus(postgres_engine, path, now=NOW, chunk_rows=CHUNK)
    assert stored(postgres_engine) == (0, Decimal(0))


def test_the_command_line_streams_into_postgres(tmp_path: Path, postgres_engine: Engine) -> None:
    path = write_focus(tmp_path / "fleet.csv", [r for r in fleet_rows() if "ahead" not in r["ResourceId"]])
    url = postgres_engine.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(cli, ["import-focus", str(path), "--database-url", url])
    assert result.exit_code == 0, result.output
    assert "Wrote 144 resource-hours of 5 GPU resources" in result.output
    assert stored(postgres_engine)[0] == 144


def test_a_database_the_stream_cannot_copy_into_gets_the_general_import(
    tmp_path: Path, sqlite_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=IMPORTER_LOG)
    path = write_focus(tmp_path / "fleet.csv", fleet_rows())
    report = import_focus(sqlite_engine, path, now=NOW, chunk_rows=CHUNK, stream=True)
    (message,) = _read_again(caplog)
    assert "COPY needs PostgreSQL through psycopg2, not sqlite" in message
    assert report.resource_hours == stored(sqlite_engine)[0] + report.pending_hours
