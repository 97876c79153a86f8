"""What the FOCUS import refuses before anything is written (issue 12, B6): implausible and
overflowing costs, non-finite numbers, text the database cannot store, dates out of range, the
future; and the exact money text of both write paths."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, select

from heliox_orchestration.cli import cli
from heliox_orchestration.db.bulk import micros_real, micros_text, replace_usage_hours
from heliox_orchestration.db.engine import make_engine
from heliox_orchestration.db.schema import gpu_usage_hourly, gpu_usage_pending, money_sum_micros
from heliox_orchestration.ingest.focus.files import parquet_text
from heliox_orchestration.ingest.focus.hours import read_focus
from heliox_orchestration.ingest.focus.importer import import_focus
from heliox_orchestration.ingest.focus.validation import ImportInputError, exact_sum
from heliox_orchestration_tests.test_focus_import import (
    BAD_LINE,
    P5,
    START,
    _bad_focus,
    _one_gpu_row,
    _row,
    stored,
    stored_frame,
    write_focus,
)

NOW = dt.datetime(2026, 11, 30, 9, 30, tzinfo=dt.UTC)


def row_counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (gpu_usage_hourly, gpu_usage_pending)
        )


def refused(engine: Engine, path: Path, **kwargs: Any) -> str:
    """Import ``path`` expecting a refusal; the database must be as it was. Returns the message."""
    before = row_counts(engine)
    with pytest.raises(ImportInputError) as error:
        import_focus(engine, path, **kwargs)
    assert row_counts(engine) == before
    return str(error.value)


def _seed(engine: Engine, tmp_path: Path) -> Engine:
    """A database already holding a good import, so a refusal must leave rows untouched."""
    good = write_focus(tmp_path / "good.csv", [_one_gpu_row() for _ in range(3)])
    import_focus(engine, good)
    assert row_counts(engine) == (1, 0)
    return engine


@pytest.fixture
def seeded(sqlite_engine: Engine, tmp_path: Path) -> Engine:
    """Refusals happen before the database is written, whichever it is: most cases run on SQLite,
    and the cases that used to fail inside PostgreSQL run on both (below)."""
    return _seed(sqlite_engine, tmp_path)


# The values that passed validation and then failed inside PostgreSQL (issue 12, B6).
POSTGRES_FAILURES = [
    ({"EffectiveCost": "1e13"}, "EffectiveCost", "'1e13' is more than $1,000,000,000 for one charge"),
    (
        {"EffectiveCost": "999999999999.999999"},
        "EffectiveCost",
        "'999999999999.999999' is more than $1,000,000,000 for one charge",
    ),
    ({"ResourceId": "i-0\x00"}, "ResourceId", "contains a NUL character (\\x00)"),
    ({"Tags": json.dumps({"model": "x\x00"})}, "Tags", "the 'model' tag contains a NUL character"),
]


def test_what_postgres_refused_mid_write_is_refused_first(any_engine: Engine, tmp_path: Path) -> None:
    seeded = _seed(any_engine, tmp_path)
    for i, (bad, column, message) in enumerate(POSTGRES_FAILURES):
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        path = _bad_focus(folder, bad)
        error = refused(seeded, path)
        assert error.startswith(f"{path}, line {BAD_LINE}, column {column}: {message}"), error


# --- through the command line ------------------------------------------------------------------


def _cli(tmp_path: Path, path: Path, *extra: str) -> Any:
    """``heliox import-focus path`` into a database that already holds one imported row."""
    url = f"sqlite:///{tmp_path}/cli.db"
    first = write_focus(tmp_path / "first.csv", [_one_gpu_row()])
    assert CliRunner().invoke(cli, ["import-focus", str(first), "--database-url", url]).exit_code == 0
    result = CliRunner().invoke(cli, ["import-focus", str(path), "--database-url", url, *extra])
    engine = make_engine(url)
    assert row_counts(engine) == (1, 0), "the database is untouched"
    engine.dispose()
    return result


def _one_line_error(result: Any) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return str(lines[0])


@pytest.mark.parametrize(
    ("bad", "column", "message"),
    [
        (
            {"EffectiveCost": "1e13"},
            "EffectiveCost",
            "'1e13' is more than $1,000,000,000 for one charge: not a real cost "
            "(a wrong unit or a corrupt value?)",
        ),
        (
            {"EffectiveCost": "999999999999.999999"},
            "EffectiveCost",
            "'999999999999.999999' is more than $1,000,000,000 for one charge: not a real cost "
            "(a wrong unit or a corrupt value?)",
        ),
        (
            {"ChargePeriodStart": "2099-01-01T00:00:00Z", "ChargePeriodEnd": "2099-01-01T01:00:00Z"},
            "ChargePeriodStart",
            "'2099-01-01T00:00:00Z' starts in the future: usage cannot be billed before it happens; "
            "check the export's time zone",
        ),
    ],
)
def test_cli_refuses_in_one_line_and_writes_nothing(
    tmp_path: Path, bad: dict[str, str], column: str, message: str
) -> None:
    path = _bad_focus(tmp_path, bad)
    line = _one_line_error(_cli(tmp_path, path))
    assert line == f"Error: {path}, line {BAD_LINE}, column {column}: {message}"


def test_cli_two_huge_charges_of_one_hour_are_refused_not_wrapped(tmp_path: Path) -> None:
    # Written as -$8.4 trillion before (5e12 dollars twice is more than int64 micro-dollars).
    rows = [_one_gpu_row(EffectiveCost="5e12"), _one_gpu_row(EffectiveCost="5e12")]
    path = write_focus(tmp_path / "huge.csv", rows)
    line = _one_line_error(_cli(tmp_path, path))
    assert line.startswith(f"Error: {path}, line 2, column EffectiveCost: '5e12' is more than $1,000,000,000")


def test_cli_dry_run_refuses_a_nul_byte_the_database_would_refuse(tmp_path: Path) -> None:
    path = _bad_focus(tmp_path, {"ResourceId": "i-0p5\x00idle"})
    line = _one_line_error(_cli(tmp_path, path, "--dry-run"))
    assert line == (
        f"Error: {path}, line {BAD_LINE}, column ResourceId: contains a NUL character (\\x00), "
        "which a database text column cannot hold"
    )


def test_cli_applies_the_hourly_bound_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_focus(tmp_path / "pricey.csv", [_one_gpu_row(EffectiveCost="150.00")])
    monkeypatch.setenv("HELIOX_MAX_HOURLY_COST_USD", "100")
    line = _one_line_error(_cli(tmp_path, path))
    assert line == (
        f"Error: {path}, line 2, column EffectiveCost: the charges of resource '{P5}' in the hour "
        "2026-01-13 00:00 UTC add up to $150.00, more than HELIOX_MAX_HOURLY_COST_USD=$100 allows for "
        "one resource-hour: check the file (a wrong unit or a duplicated export?), or raise "
        "HELIOX_MAX_HOURLY_COST_USD if the cost is real"
    )
    monkeypatch.setenv("HELIOX_MAX_HOURLY_COST_USD", "-5")
    line = _one_line_error(CliRunner().invoke(cli, ["import-focus", str(path), "--dry-run"]))
    assert line == "Error: HELIOX_MAX_HOURLY_COST_USD=-5 is out of range; allowed: 0.01 to 1000000000."


# --- costs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cost", "message"),
    [
        ("nan", "'nan' is not a finite number: a cost is an amount of US dollars"),
        ("NaN", "'NaN' is not a finite number: a cost is an amount of US dollars"),
        ("Infinity", "'Infinity' is not a finite number: a cost is an amount of US dollars"),
        ("-Infinity", "'-Infinity' is not a finite number: a cost is an amount of US dollars"),
        ("inf", "'inf' is not a finite number: a cost is an amount of US dollars"),
        ("1e400", "'1e400' is more than $1,000,000,000 for one charge"),
        ("-1000000000.01", "'-1000000000.01' is more than $1,000,000,000 for one charge"),
        ("1_000", "'1_000' is not a number"),
        ("١٢", "'١٢' is not a number"),
    ],
)
def test_unusable_costs(seeded: Engine, tmp_path: Path, cost: str, message: str) -> None:
    path = _bad_focus(tmp_path, {"EffectiveCost": cost})
    error = refused(seeded, path)
    assert error.startswith(f"{path}, line {BAD_LINE}, column EffectiveCost: {message}")


def test_a_billed_cost_fallback_is_named_as_such(tmp_path: Path) -> None:
    path = _bad_focus(tmp_path, {"EffectiveCost": "", "BilledCost": "Infinity"})
    with pytest.raises(
        ImportInputError, match=rf"line {BAD_LINE}, column BilledCost: 'Infinity' is not a finite"
    ):
        read_focus(path)


@pytest.mark.parametrize(
    ("rows", "line", "hour", "total"),
    [
        # Three charges of one hour, each plausible, together not.
        ([("4000", 1), ("4000", 1), ("4000.01", 1)], 2, "2026-01-13 00:00", "$12,000.01"),
        # A daily charge spread over its hours: $12,500 an hour.
        ([("300000", 24)], 2, "2026-01-13 00:00", "$12,500.00"),
        # A refund alone is bounded too.
        ([("98.32", 1), ("98.32", 1), ("-10000.01", 24)], 4, "2026-01-13 01:00", "-$416.67"),
    ],
)
def test_the_hourly_bound(
    seeded: Engine, tmp_path: Path, rows: list[tuple[str, int]], line: int, hour: str, total: str
) -> None:
    charges = [_row(START, hours, **_gpu(EffectiveCost=cost)) for cost, hours in rows]
    path = write_focus(tmp_path / "bound.csv", charges)
    limit = Decimal(400) if total.startswith("-") else Decimal(10_000)
    error = refused(seeded, path, max_hourly_cost_usd=limit)
    assert error.startswith(
        f"{path}, line {line}, column EffectiveCost: the charges of resource '{P5}' in the hour {hour} UTC "
        f"add up to {total}, more than HELIOX_MAX_HOURLY_COST_USD=${limit:,}"
    )
    raised = import_focus(seeded, path, max_hourly_cost_usd=Decimal(1_000_000))
    assert raised.resource_hours >= 1


def _gpu(**values: str) -> dict[str, str]:
    return {"ProviderName": "AWS", "ResourceId": P5, "x_UsageType": "BoxUsage:p5.48xlarge", **values}


def test_charges_that_would_wrap_int64_are_refused(tmp_path: Path) -> None:
    # 18,446 charges of $1,000,000,000 and one of $744,073,709.551617 sum to 2**64 + 1
    # micro-dollars: wrapped in int64 that is $0.000001, well inside any hourly bound.
    charges = [_row(START, **_gpu(EffectiveCost="1000000000")) for _ in range(18_446)]
    charges.append(_row(START, **_gpu(EffectiveCost="744073709.551617")))
    micros = np.array([10**15] * 18_446 + [744_073_709_551_617], dtype=np.int64)
    assert int(micros.sum()) == 1 and exact_sum(micros) == 2**64 + 1  # the trap, and the exact sum
    path = write_focus(tmp_path / "wrap.csv", charges)
    with pytest.raises(ImportInputError) as error:
        read_focus(path, max_hourly_cost_usd=Decimal(1_000_000_000))
    assert str(error.value) == (
        f"{path}, line 2, column EffectiveCost: the charges of resource '{P5}' in the hour "
        "2026-01-13 00:00 UTC add up to more than $4.6 trillion in absolute value, more than "
        "HELIOX_MAX_HOURLY_COST_USD=$1,000,000,000 allows for one resource-hour: check the file "
        "(a wrong unit or a duplicated export?), or raise HELIOX_MAX_HOURLY_COST_USD if the cost is real"
    )


def test_the_report_total_is_exact_beyond_int64() -> None:
    micros = np.array([2**62, 2**62, 2**62, -5], dtype=np.int64)
    assert exact_sum(micros) == 3 * 2**62 - 5
    assert exact_sum(np.array([], dtype=np.int64)) == 0


# --- text the database cannot store ------------------------------------------------------------


LONG_REGION = "r" * 65


@pytest.mark.parametrize(
    ("bad", "column", "message"),
    [
        ({"ResourceId": "i-0\x00"}, "ResourceId", "contains a NUL character (\\x00)"),
        ({"ResourceId": "i" * 256}, "ResourceId", "is 256 characters long; the longest Heliox stores is 255"),
        ({"RegionId": "us-east\x00-1"}, "RegionId", "contains a NUL character (\\x00)"),
        ({"RegionId": LONG_REGION}, "RegionId", "is 65 characters long; the longest Heliox stores is 64"),
        (
            {"Tags": json.dumps({"team": "ml\x00ops"})},
            "Tags",
            "the 'team' tag contains a NUL character (\\x00)",
        ),
        (
            {"Tags": '{"model": "llama\\ud800"}'},
            "Tags",
            "the 'model' tag contains U+D800, a lone UTF-16 surrogate that is not valid Unicode text",
        ),
    ],
)
def test_text_the_database_would_refuse(
    seeded: Engine, tmp_path: Path, bad: dict[str, str], column: str, message: str
) -> None:
    path = _bad_focus(tmp_path, bad)
    error = refused(seeded, path)
    assert error.startswith(f"{path}, line {BAD_LINE}, column {column}: {message}")


def test_long_tag_values_are_cut_to_their_column(sqlite_engine: Engine, tmp_path: Path) -> None:
    tags = json.dumps({"model": "m" * 300, "team": "t" * 200})
    import_focus(sqlite_engine, write_focus(tmp_path / "tags.csv", [_one_gpu_row(Tags=tags)]))
    with sqlite_engine.connect() as conn:
        model, team = conn.execute(select(gpu_usage_hourly.c.model_name, gpu_usage_hourly.c.team)).one()
    assert (model, team) == ("m" * 255, "t" * 128)


# --- date-times --------------------------------------------------------------------------------


@pytest.mark.parametrize("start", ["0001-01-01T00:00:00Z", "1999-12-31T23:00:00Z"])
def test_dates_out_of_range(seeded: Engine, tmp_path: Path, start: str) -> None:
    path = _bad_focus(tmp_path, {"ChargePeriodStart": start})
    error = refused(seeded, path)
    assert error == (
        f"{path}, line {BAD_LINE}, column ChargePeriodStart: {start!r} is out of range: "
        "expected a date-time from 2000-01-01 on"
    )


def test_a_charge_may_start_within_the_hour_ahead(tmp_path: Path) -> None:
    """Clock skew: a charge starting at most an hour after now is held, not refused."""
    start = NOW + dt.timedelta(minutes=59)
    ok = write_focus(tmp_path / "soon.csv", [_row(start, **_gpu(EffectiveCost="1"))])
    assert read_focus(ok, now=NOW).report.resource_hours == 2  # 10:29 to 11:29 touches two hours
    late = write_focus(
        tmp_path / "late.csv", [_row(start + dt.timedelta(minutes=2), **_gpu(EffectiveCost="1"))]
    )
    with pytest.raises(
        ImportInputError, match="line 2, column ChargePeriodStart: '2026-11-30T10:31:00Z' starts"
    ):
        read_focus(late, now=NOW)


# --- utilization samples -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "pct", "column", "message"),
    [
        ("2026-01-13T00:00:00Z", "nan", "gpu_utilization_pct", "'nan' is not a percentage between 0 and 100"),
        ("2026-01-13T00:00:00Z", "Infinity", "gpu_utilization_pct", "'Infinity' is not a percentage"),
        ("2026-01-13T00:00:00Z", "1e400", "gpu_utilization_pct", "'1e400' is not a percentage"),
        ("1e400", "1", "timestamp", "'1e400' is out of range: expected a date-time from 2000-01-01 on"),
        ("nan", "1", "timestamp", "'nan' is not an ISO 8601 date-time or Unix seconds"),
        ("1e15", "1", "timestamp", "'1e15' is out of range"),
        ("1999-12-31T23:59:59Z", "1", "timestamp", "'1999-12-31T23:59:59Z' is out of range"),
        (
            "2026-11-30T10:31:00Z",
            "1",
            "timestamp",
            "'2026-11-30T10:31:00Z' is in the future: a sample cannot be measured before it happens; "
            "check the file's time zone",
        ),
        ("1796035860", "1", "timestamp", "'1796035860' is in the future"),  # 2026-12-01 10:51 UTC
    ],
)
def test_unusable_samples(
    seeded: Engine, tmp_path: Path, timestamp: str, pct: str, column: str, message: str
) -> None:
    focus = write_focus(tmp_path / "focus.csv", [_one_gpu_row()])
    util = tmp_path / "util.csv"
    util.write_text(
        f"timestamp,resource_id,gpu_utilization_pct\n2026-01-13T00:10:00Z,{P5},1\n{timestamp},{P5},{pct}\n"
    )
    error = refused(seeded, focus, utilization=util, now=NOW)
    assert error.startswith(f"{util}, line 3, column {column}: {message}")


def test_a_sample_with_a_nul_resource_id(seeded: Engine, tmp_path: Path) -> None:
    focus = write_focus(tmp_path / "focus.csv", [_one_gpu_row()])
    util = tmp_path / "util.csv"
    util.write_text(f"timestamp,resource_id,gpu_utilization_pct\n2026-01-13T00:10:00Z,{P5}\x00,1\n")
    error = refused(seeded, focus, utilization=util)
    assert error.startswith(f"{util}, line 2, column resource_id: contains a NUL character")


# --- Parquet -----------------------------------------------------------------------------------


def test_parquet_values_become_the_text_validation_refuses() -> None:
    """What pyarrow's to_pylist gives, as text: NaN and infinity stay numbers-that-are-not,
    so they are refused like their CSV spelling; null is empty; bad bytes stay detectable."""
    at = dt.datetime(2099, 1, 1, tzinfo=dt.UTC)
    values = [None, float("nan"), float("inf"), 98.32, at, b"i-0\xff", {"team": "ml"}, [("team", "ml")]]
    assert parquet_text(values) == [
        None,
        "nan",
        "inf",
        "98.32",
        "2099-01-01T00:00:00+00:00",
        "i-0\udcff",
        '{"team": "ml"}',
        '{"team": "ml"}',
    ]


def test_parquet_input_is_refused_like_csv(seeded: Engine, tmp_path: Path) -> None:
    rows = [_one_gpu_row() for _ in range(4)]
    frame = pd.DataFrame(rows).drop(columns="_imported")
    starts = pd.to_datetime([START] * 3 + [dt.datetime(2099, 1, 1, tzinfo=dt.UTC)], utc=True)
    cases = {
        "EffectiveCost": (
            frame.assign(EffectiveCost=[98.32, float("inf"), 1.0, 1.0]),
            "'inf' is not a finite",
        ),
        "ResourceId": (frame.assign(ResourceId=[P5, P5, "i-\x00", P5]), "contains a NUL character"),
        "ChargePeriodStart": (  # as Parquet timestamps, not text
            frame.assign(ChargePeriodStart=starts, ChargePeriodEnd=starts + pd.Timedelta(hours=1)),
            "'2099-01-01T00:00:00+00:00' starts in the future",
        ),
    }
    for column, (data, message) in cases.items():
        path = tmp_path / f"{column}.parquet"
        data.to_parquet(path)
        row = {"EffectiveCost": 2, "ResourceId": 3, "ChargePeriodStart": 4}[column]
        error = refused(seeded, path)
        assert error.startswith(f"{path}, row {row}, column {column}: {message}"), error


# --- exact money text on both write paths ------------------------------------------------------


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (-1, "-0.000001"),
        (1, "0.000001"),
        (0, "0.000000"),
        (100_000, "0.100000"),
        (-2_359_680_007, "-2359.680007"),
        (999_999_999_999_999_999, "999999999999.999999"),
    ],
)
def test_micros_text_is_exact(micros: int, text: str) -> None:
    assert micros_text([micros]) == [text]


def test_sqlite_refuses_amounts_its_real_cannot_hold_exactly() -> None:
    assert micros_real([2**31 * 10**6 - 1]) == [2147483647.999999]
    with pytest.raises(ValueError, match="not exact there"):
        micros_real([-(2**31) * 10**6])


@pytest.mark.parametrize("utilization", [np.nan, 42.5], ids=["binary-copy", "csv-copy"])
def test_both_write_paths_store_money_exactly(any_engine: Engine, utilization: float) -> None:
    """On PostgreSQL rows without a utilization go by binary COPY, the others by CSV: both exact."""
    micros = [-1, 1, 100_000, 300_000, -2_359_680_007, 10**15 - 1, -(2**31 * 10**6 - 1)]
    if any_engine.dialect.name == "postgresql":
        micros.append(999_999_999_999_999_999)  # NUMERIC(18, 6)'s largest; SQLite's REAL is a double
    names = ["", None, "Llama 3 ✓ 70B", 'team, "quoted"\nline']
    models = [names[i % len(names)] for i in range(len(micros))]
    frame = pd.DataFrame(
        {
            "usage_hour": pd.to_datetime(
                [START + dt.timedelta(hours=i) for i in range(len(micros))], utc=True
            ),
            "provider": "aws",
            "region": None,
            "resource_id": "i-exact",
            "gpu_type": "H100",
            "gpu_count": 1,
            "model_name": models,
            "team": None,
            "cost_micros": np.array(micros, dtype=np.int64),
            "gpu_utilization_pct": utilization,
        }
    )
    with any_engine.begin() as conn:
        replace_usage_hours(conn, frame)
    stored_rows = stored_frame(any_engine).sort_values("usage_hour")
    assert [None if pd.isna(m) else m for m in stored_rows["model_name"]] == models
    assert (
        stored_rows["gpu_utilization_pct"].isna().all()
        if np.isnan(utilization)
        else (stored_rows["gpu_utilization_pct"] == utilization).all()
    )
    with any_engine.connect() as conn:
        rows = conn.execute(
            select(money_sum_micros(gpu_usage_hourly.c.cost_usd), gpu_usage_hourly.c.cost_usd)
            .group_by(gpu_usage_hourly.c.usage_hour, gpu_usage_hourly.c.cost_usd)
            .order_by(gpu_usage_hourly.c.usage_hour)
        ).all()
    assert [int(m) for m, _ in rows] == micros
    assert [cost for _, cost in rows] == [Decimal(m).scaleb(-6) for m in micros]
    assert stored(any_engine)[0] == len(micros)
