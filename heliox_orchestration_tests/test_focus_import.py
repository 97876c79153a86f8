"""FOCUS cost exports and utilization samples into ``gpu_usage_hourly``: the public FOCUS 1.0
sample, a file built here with GPU rows, every kind of bad input, the command line."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, select

from heliox_orchestration.cli import cli
from heliox_orchestration.db.bulk import replace_usage_hours
from heliox_orchestration.db.engine import make_engine
from heliox_orchestration.db.schema import gpu_usage_hourly, money_sum_micros
from heliox_orchestration.ingest.focus import spool
from heliox_orchestration.ingest.focus.charges import TagKeys, spread_evenly
from heliox_orchestration.ingest.focus.hours import read_focus
from heliox_orchestration.ingest.focus.importer import import_focus
from heliox_orchestration.ingest.focus.report import format_report
from heliox_orchestration.ingest.focus.validation import ImportInputError
from heliox_orchestration.ingest.pending import release_due_usage
from heliox_orchestration.money import CENTS, micros_to_dollars
from heliox_orchestration_tests.focus_files import p5_hours, write_export

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "focus" / "focus_sample.csv"

START = dt.datetime(2026, 1, 13, tzinfo=dt.UTC)
DAYS = 8
AS_OF = START + dt.timedelta(days=DAYS, hours=12)
P5 = "i-0p5idle0000000001"
P4D = "i-0p4dbusy000000002"
ND = "/subscriptions/0000/resourcegroups/ml/providers/microsoft.compute/virtualmachines/nd-h100-01"

FOCUS_HEADER = [
    "BilledCost",
    "BillingCurrency",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "EffectiveCost",
    "ProviderName",
    "RegionId",
    "ResourceId",
    "ResourceType",
    "ServiceName",
    "SkuId",
    "Tags",
    "x_UsageType",
    "x_SkuMeterName",
]


def _iso(instant: dt.datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


def _row(start: dt.datetime, hours: int = 1, *, imported: bool = False, **values: str) -> dict[str, str]:
    """One FOCUS row; ``_imported`` marks the rows whose cost must reach the table."""
    row = dict.fromkeys(FOCUS_HEADER, "")
    row.update(
        ChargeCategory="Usage",
        BillingCurrency="USD",
        ChargePeriodStart=_iso(start),
        ChargePeriodEnd=_iso(start + dt.timedelta(hours=hours)),
    )
    row.update(values)
    row.setdefault("BilledCost", row["EffectiveCost"])
    if not row["BilledCost"]:
        row["BilledCost"] = row["EffectiveCost"]
    row["_imported"] = "yes" if imported else ""
    return row


def gpu_focus_rows() -> list[dict[str, str]]:
    """8 days of an idle AWS p5, a busy AWS p4d and an Azure ND H100 v5 billed daily, with the
    charges FOCUS files mix in: a refund, a credit, a purchase, a tax, corrections, non-GPU."""
    p5_tags = json.dumps({"model": "Llama 3 fine-tuning", "team": "research"})
    p4d_tags = json.dumps({"model": "GPT-4-class LLM serving", "user:team": "llm-platform"})
    rows = []
    for h in range(DAYS * 24):
        hour = START + dt.timedelta(hours=h)
        rows.append(
            _row(
                hour,
                imported=True,
                EffectiveCost="98.32",
                ProviderName="AWS",
                RegionId="us-east-1",
                ResourceId=P5,
                ResourceType="instance",
                ChargeDescription="$98.32 per On Demand Linux p5.48xlarge Instance Hour",
                x_UsageType="USE1-BoxUsage:p5.48xlarge",
                Tags=p5_tags,
            )
        )
        rows.append(
            _row(
                hour,
                imported=True,
                EffectiveCost="32.7726",  # a savings plan: billed at the on-demand rate
                BilledCost="40.96",
                ProviderName="AWS",
                RegionId="us-east-1",
                ResourceId=P4D,
                x_UsageType="USE1-BoxUsage:p4d.24xlarge",
                Tags=p4d_tags,
            )
        )
    aws = {"ProviderName": "AWS", "RegionId": "us-east-1"}
    rows += [
        # A second charge of the same resource-hour: summed into one row.
        _row(
            START,
            imported=True,
            EffectiveCost="0.10",
            ResourceId=P5,
            **aws,
            x_UsageType="EBSOptimized:p5.48xlarge",
        ),
        # An in-period refund (Usage, negative) nets against its hour.
        _row(
            START + dt.timedelta(hours=5),
            imported=True,
            EffectiveCost="-32.7726",
            ResourceId=P4D,
            **aws,
            x_UsageType="USE1-BoxUsage:p4d.24xlarge",
        ),
        # A correction of an hour this file charges: netted in.
        _row(
            START + dt.timedelta(hours=7),
            imported=True,
            EffectiveCost="-1.00",
            ChargeClass="Correction",
            ResourceId=P5,
            **aws,
            x_UsageType="USE1-BoxUsage:p5.48xlarge",
        ),
        # A correction of an earlier month (not in this file): skipped, not allowed to overwrite it.
        _row(
            START - dt.timedelta(days=20),
            EffectiveCost="-5.00",
            ChargeClass="Correction",
            ResourceId=P4D,
            **aws,
            x_UsageType="USE1-BoxUsage:p4d.24xlarge",
        ),
        _row(
            START,
            DAYS * 24,
            ChargeCategory="Credit",
            EffectiveCost="-500.00",
            ResourceId=P5,
            **aws,
            ChargeDescription="Promotional credit p5.48xlarge",
        ),
        _row(
            START,
            ChargeCategory="Purchase",
            EffectiveCost="0",
            BilledCost="10000.00",
            ResourceId="arn:aws:savingsplans::1:savingsplan/sp-1",
            **aws,
            ChargeDescription="1 year No Upfront Compute Savings Plan p5.48xlarge",
        ),
        _row(START, DAYS * 24, ChargeCategory="Tax", EffectiveCost="123.45", ProviderName="AWS"),
        _row(
            START,
            EffectiveCost="0.023",
            ResourceId="arn:aws:s3:::training-data",
            **aws,
            ChargeDescription="$0.023 per GB-Mo for storage",
            ServiceName="Amazon S3",
        ),
    ]
    for day in range(DAYS):
        rows.append(
            _row(
                START + dt.timedelta(days=day),
                24,
                imported=True,
                EffectiveCost="2359.680007",  # not a multiple of 24 micro-dollars
                ProviderName="Microsoft",
                RegionId="eastus",
                ResourceId=ND,
                ResourceType="Virtual machine",
                x_SkuMeterName="ND96isr H100 v5",
                Tags=json.dumps({"model": "GPT-4-class LLM serving", "team": "llm-platform"}),
            )
        )
    return rows


def write_focus(path: Path, rows: list[dict[str, str]], header: list[str] = FOCUS_HEADER) -> Path:
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_utilization(path: Path) -> Path:
    """Samples every 15 minutes: the p5 idle (about 1%), the p4d busy, plus an unknown GPU;
    none for the Azure VM."""
    rng = np.random.default_rng(3)
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["timestamp", "resource_id", "gpu_utilization_pct"])
        for q in range(DAYS * 24 * 4):
            at = START + dt.timedelta(minutes=15 * q)
            writer.writerow([_iso(at), P5, f"{rng.uniform(0, 2):.2f}"])
            writer.writerow([int(at.timestamp()), P4D, f"{rng.uniform(70, 95):.2f}"])  # Unix seconds
        writer.writerow([_iso(START), "i-0notbilled", "50"])
    return path


def expected_gpu_cost(rows: list[dict[str, str]]) -> Decimal:
    return sum((Decimal(r["EffectiveCost"]) for r in rows if r["_imported"]), Decimal(0))


def stored(engine: Engine) -> tuple[int, Decimal]:
    with engine.connect() as conn:
        count, micros = conn.execute(
            select(func.count(), money_sum_micros(gpu_usage_hourly.c.cost_usd))
        ).one()
    return count, micros_to_dollars(micros)


def stored_frame(engine: Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(select(gpu_usage_hourly)).mappings().all())


@pytest.fixture
def gpu_files(tmp_path: Path) -> tuple[Path, Path, list[dict[str, str]]]:
    rows = gpu_focus_rows()
    return write_focus(tmp_path / "focus.csv", rows), write_utilization(tmp_path / "util.csv"), rows


# --- the public FOCUS 1.0 sample -------------------------------------------------------------


@pytest.fixture
def sample() -> Path:
    if not SAMPLE.is_file():
        pytest.skip(f"the public FOCUS sample is not at {SAMPLE} (a fresh clone has no ../shared)")
    return SAMPLE


def test_public_sample_every_row_accounted_for(sample: Path, sqlite_engine: Engine) -> None:
    with open(sample, newline="") as f:
        data_rows = sum(1 for _ in csv.reader(f)) - 1
    assert data_rows == 1000

    report = import_focus(sqlite_engine, sample)

    assert report.rows == 1000
    assert report.kept + report.spread + sum(report.skipped.values()) == 1000
    assert report.cost_columns == {"EffectiveCost": 1000}
    assert report.skipped == {"not_gpu": 989, "credit": 1, "adjustment": 2}
    # Its README says it holds no GPU charges, but eight AWS rows are "On Demand Linux
    # g5.4xlarge Instance Hour": one NVIDIA A10G each. Those, and only those, are imported.
    assert (report.kept, report.spread, report.resources, report.resource_hours) == (8, 0, 8, 8)
    rows = stored_frame(sqlite_engine)
    assert set(rows["gpu_type"]) == {"A10G"} and set(rows["gpu_count"]) == {1}
    assert set(rows["provider"]) == {"aws"}
    assert rows["gpu_utilization_pct"].isna().all()
    assert stored(sqlite_engine) == (8, Decimal("11.000000")) == (8, report.imported_cost_usd)
    assert report.file_gpu_cost_usd == Decimal("11")


# --- a FOCUS file with GPU rows --------------------------------------------------------------


def test_gpu_file_imports_hourly_costs_that_sum_to_the_file(
    any_engine: Engine, gpu_files: tuple[Path, Path, list[dict[str, str]]]
) -> None:
    focus, utilization, rows = gpu_files
    report = import_focus(any_engine, focus, utilization=utilization)

    expected = expected_gpu_cost(rows)
    count, total = stored(any_engine)
    assert count == report.resource_hours == 3 * DAYS * 24
    assert total.quantize(CENTS) == expected.quantize(CENTS)
    assert total == expected == report.imported_cost_usd == report.file_gpu_cost_usd  # to the micro-dollar
    assert report.rows == len(rows) == report.kept + report.spread + sum(report.skipped.values())
    assert report.spread == DAYS  # the Azure daily rows
    assert report.skipped == {
        "not_gpu": 1,
        "purchase": 1,
        "credit": 1,
        "tax": 1,
        "orphan_correction": 1,
    }
    assert report.gpu_skipped == {
        "purchase": (1, Decimal("0")),
        "credit": (1, Decimal("-500.00")),
        "orphan_correction": (1, Decimal("-5.00")),
    }
    assert report.cost_columns == {"EffectiveCost": len(rows)}

    frame = stored_frame(any_engine).set_index(["resource_id", "usage_hour"]).sort_index()
    p5 = frame.loc[P5]
    assert (p5["gpu_type"].unique().tolist(), p5["gpu_count"].unique().tolist()) == (["H100"], [8])
    assert set(p5["model_name"]) == {"Llama 3 fine-tuning"} and set(p5["team"]) == {"research"}
    assert p5.loc[START, "cost_usd"] == Decimal("98.420000")  # two charges of one hour
    assert p5.loc[START + dt.timedelta(hours=7), "cost_usd"] == Decimal("97.320000")  # correction
    assert (p5["gpu_utilization_pct"] < 2.01).all()
    p4d = frame.loc[P4D]
    assert set(p4d["team"]) == {"llm-platform"}  # the "user:" prefix of AWS tags is ignored
    assert p4d.loc[START + dt.timedelta(hours=5), "cost_usd"] == Decimal("0")  # refunded
    assert p4d.loc[START + dt.timedelta(hours=6), "cost_usd"] == Decimal("32.772600")  # EffectiveCost
    assert (p4d["gpu_utilization_pct"] > 69).all()
    nd = frame.loc[ND]
    assert set(nd["provider"]) == {"azure"} and set(nd["gpu_count"]) == {8}
    assert nd["gpu_utilization_pct"].isna().all()  # no samples: unknown, not idle
    day_one = nd.loc[START : START + dt.timedelta(hours=23), "cost_usd"]
    assert len(day_one) == 24 and sum(day_one) == Decimal("2359.680007")
    assert set(day_one) == {Decimal("98.320001"), Decimal("98.320000")}

    assert report.utilization is not None
    assert report.utilization.matched_hours == 2 * DAYS * 24
    assert report.utilization.unmatched_hours == 1
    assert report.utilization.samples == 2 * DAYS * 24 * 4 + 1
    text = "\n".join(format_report(report))
    assert "Credit" in text and "-$500.00" in text and "stay unknown" in text


def test_reimport_replaces_instead_of_doubling(
    any_engine: Engine, gpu_files: tuple[Path, Path, list[dict[str, str]]]
) -> None:
    focus, utilization, rows = gpu_files
    other = pd.DataFrame(
        {
            "usage_hour": pd.to_datetime([START], utc=True),
            "provider": ["aws"],
            "region": [None],
            "resource_id": ["demo-aws-h100-00001"],
            "gpu_type": ["H100"],
            "gpu_count": [1],
            "model_name": [None],
            "team": [None],
            "cost_micros": [12_290_000],
            "gpu_utilization_pct": [50.0],
        }
    )
    with any_engine.begin() as conn:
        replace_usage_hours(conn, other)
    first = import_focus(any_engine, focus)
    second = import_focus(any_engine, focus, utilization=utilization)
    assert first.replaced_rows == 0
    assert second.replaced_rows == first.resource_hours
    count, total = stored(any_engine)
    assert count == first.resource_hours + 1  # the other resource's row is untouched
    assert total == expected_gpu_cost(rows) + Decimal("12.29")
    assert stored_frame(any_engine).query("resource_id == @P5")["gpu_utilization_pct"].notna().all()


def test_chunked_reading_gives_the_same_rows(gpu_files: tuple[Path, Path, list[dict[str, str]]]) -> None:
    focus, _, _ = gpu_files
    whole = read_focus(focus)
    chunked = read_focus(focus, chunk_rows=7)
    pd.testing.assert_frame_equal(whole.rows, chunked.rows)
    assert whole.report == chunked.report


def test_a_spool_of_many_partitions_gives_the_same_import(
    monkeypatch: pytest.MonkeyPatch,
    any_engine: Engine,
    gpu_files: tuple[Path, Path, list[dict[str, str]]],
) -> None:
    """The file's parts spread over many partitions on disk (as a file of gigabytes would):
    the same rows, report (corrections netted, refunds, utilization) and stored rows."""
    focus, utilization, rows = gpu_files
    whole = read_focus(focus, now=AS_OF)
    assert whole.spool.partitions == 1
    monkeypatch.setattr(spool, "SPOOL_BYTES_PER_PARTITION", 8192)
    spread = read_focus(focus, chunk_rows=11, now=AS_OF)
    assert spread.spool.partitions > 10
    pd.testing.assert_frame_equal(whole.rows, spread.rows)
    assert whole.report == spread.report
    report = import_focus(any_engine, focus, utilization=utilization, now=AS_OF, chunk_rows=11)
    assert report.utilization is not None and report.utilization.matched_hours == 2 * DAYS * 24
    assert stored(any_engine) == (3 * DAYS * 24, expected_gpu_cost(rows))


def test_the_first_implausible_hour_is_named_across_partitions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(spool, "SPOOL_BYTES_PER_PARTITION", 64)
    rows = [_one_gpu_row(ResourceId=f"i-0{n:016d}", EffectiveCost="1") for n in range(40)]
    rows[7]["EffectiveCost"] = rows[31]["EffectiveCost"] = "20000"
    path = write_focus(tmp_path / "focus.csv", rows)
    with pytest.raises(ImportInputError, match=r"focus\.csv, line 9, column EffectiveCost: the charges of"):
        read_focus(path, now=AS_OF)


def test_gzip_file_and_custom_tag_keys(tmp_path: Path, sqlite_engine: Engine) -> None:
    rows = [
        _row(
            START,
            imported=True,
            EffectiveCost="1.006",
            ProviderName="AWS",
            ResourceId="i-0g5",
            x_UsageType="BoxUsage:g5.xlarge",
            Tags=json.dumps({"Workload": "Whisper", "cost-center": "speech"}),
        )
    ]
    focus = write_focus(tmp_path / "focus.csv.gz", rows)
    import_focus(sqlite_engine, focus, tag_keys=TagKeys(model="workload", team="cost-center"))
    row = stored_frame(sqlite_engine).iloc[0]
    assert (row["model_name"], row["team"], row["gpu_type"]) == ("Whisper", "speech", "A10G")


def test_billed_cost_is_used_when_there_is_no_effective_cost(tmp_path: Path) -> None:
    header = [c for c in FOCUS_HEADER if c != "EffectiveCost"]
    rows = [
        _row(
            START,
            EffectiveCost="4.10",
            ProviderName="AWS",
            ResourceId="i-1",
            x_UsageType="BoxUsage:p4d.24xlarge",
        )
    ]
    report = read_focus(write_focus(tmp_path / "billed.csv", rows, header)).report
    assert report.cost_columns == {"BilledCost": 1}
    assert report.imported_cost_usd == Decimal("4.10")
    assert "1 from BilledCost" in format_report(report)[0]


def test_dry_run_reads_everything_and_touches_no_database(
    gpu_files: tuple[Path, Path, list[dict[str, str]]],
) -> None:
    focus, utilization, rows = gpu_files

    def never() -> Engine:
        raise AssertionError("a dry run must not open the database")

    report = import_focus(never, focus, utilization=utilization, dry_run=True)
    assert report.dry_run and report.replaced_rows == 0
    assert report.imported_cost_usd == expected_gpu_cost(rows)
    assert format_report(report)[-1] == "Dry run: nothing was written."


def test_a_failed_write_rolls_back_everything(any_engine: Engine) -> None:
    good = pd.DataFrame(
        {
            "usage_hour": pd.to_datetime([START, START + dt.timedelta(hours=1)], utc=True),
            "provider": ["aws", "aws"],
            "region": [None, None],
            "resource_id": ["i-a", "i-a"],
            "gpu_type": ["H100", "H100"],
            "gpu_count": [8, 8],
            "model_name": [None, None],
            "team": [None, None],
            "cost_micros": [1_000_000, 2_000_000],
            "gpu_utilization_pct": [np.nan, 10.0],
        }
    )
    with any_engine.begin() as conn:
        replace_usage_hours(conn, good)
    bad = good.assign(gpu_count=[8, 0], cost_micros=[5_000_000, 5_000_000])  # violates a CHECK
    with pytest.raises(Exception, match=r"(?i)check"), any_engine.begin() as conn:
        replace_usage_hours(conn, bad)
    assert stored(any_engine) == (2, Decimal("3.000000"))
    with any_engine.begin() as conn:  # the pooled connection is usable again (no stale stage)
        assert replace_usage_hours(conn, good) == 2


# --- bad input -------------------------------------------------------------------------------


def _one_gpu_row(**values: str) -> dict[str, str]:
    base = {
        "EffectiveCost": "98.32",
        "ProviderName": "AWS",
        "ResourceId": P5,
        "x_UsageType": "BoxUsage:p5.48xlarge",
    }
    return _row(START, **{**base, **values})


def _bad_focus(tmp_path: Path, bad: dict[str, str], *, at: int = 3) -> Path:
    rows = [_one_gpu_row() for _ in range(5)]
    rows[0]["ChargeDescription"] = "a description\nover two lines"  # physical lines != records
    rows[at] = _one_gpu_row(**bad)
    return write_focus(tmp_path / "bad.csv", rows)


BAD_LINE = 3 + 2 + 1  # row index + header + 1, + the extra line of the two-line description


@pytest.mark.parametrize(
    ("bad", "column", "message"),
    [
        ({"ChargePeriodStart": "yesterday"}, "ChargePeriodStart", "'yesterday' is not an ISO 8601 date-time"),
        ({"ChargePeriodEnd": ""}, "ChargePeriodEnd", "is empty"),
        ({"ChargePeriodEnd": "2020-01-01T00:00:00Z"}, "ChargePeriodEnd", "is before ChargePeriodStart"),
        ({"EffectiveCost": "12,50"}, "EffectiveCost", "'12,50' is not a number"),
        ({"EffectiveCost": "", "BilledCost": "n/a"}, "BilledCost", "'n/a' is not a number"),
        ({"ChargeCategory": "Refund"}, "ChargeCategory", "'Refund' is not a FOCUS ChargeCategory"),
        ({"ChargeClass": "Regular"}, "ChargeClass", "'Regular' is not a FOCUS ChargeClass"),
        ({"Tags": "{team: research}"}, "Tags", "is not a JSON object"),
        ({"BillingCurrency": "EUR"}, "BillingCurrency", "Heliox stores US dollars"),
        ({"ProviderName": ""}, "ProviderName", "is empty"),
    ],
)
def test_bad_focus_values_name_file_line_and_column_and_write_nothing(
    tmp_path: Path, sqlite_engine: Engine, bad: dict[str, str], column: str, message: str
) -> None:
    path = _bad_focus(tmp_path, bad)
    with pytest.raises(ImportInputError) as error:
        import_focus(sqlite_engine, path)
    assert str(error.value).startswith(f"{path}, line {BAD_LINE}, column {column}: ")
    assert message in str(error.value)
    assert stored(sqlite_engine) == (0, Decimal(0))


def test_a_file_that_is_not_focus(tmp_path: Path) -> None:
    path = tmp_path / "invoice.csv"
    path.write_text("date,amount\n2026-01-01,12.00\n")
    with pytest.raises(ImportInputError, match=r"invoice\.csv, line 1: is not a FOCUS cost export"):
        read_focus(path)
    with pytest.raises(ImportInputError, match=r"missing column.*ChargePeriodStart.*ChargeCategory"):
        read_focus(path)


def test_a_row_with_the_wrong_number_of_fields(tmp_path: Path) -> None:
    path = write_focus(tmp_path / "ragged.csv", [_one_gpu_row()])
    path.write_text(path.read_text() + "1,2,3\n")
    with pytest.raises(ImportInputError, match=r"ragged\.csv, line 3: has 3 fields, the header has 17"):
        read_focus(path)


def test_a_truncated_gzip_file_writes_nothing(tmp_path: Path, sqlite_engine: Engine) -> None:
    good = write_focus(tmp_path / "focus.csv.gz", gpu_focus_rows())
    truncated = tmp_path / "truncated.csv.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(
        ImportInputError, match=r"truncated\.csv\.gz, line \d+: is a truncated or corrupt gzip"
    ):
        import_focus(sqlite_engine, truncated, chunk_rows=50)
    assert stored(sqlite_engine) == (0, Decimal(0))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("time,instance,value\n", r"line 1: is not a utilization samples file: missing column"),
        (
            f"timestamp,resource_id,gpu_utilization_pct\n{_iso(START)},{P5},1\nlast week,{P5},1\n",
            r"line 3, column timestamp: 'last week' is not an ISO 8601 date-time or Unix seconds",
        ),
        (
            f"timestamp,resource_id,gpu_utilization_pct\n{_iso(START)},{P5},140\n",
            r"line 2, column gpu_utilization_pct: '140' is not a percentage between 0 and 100",
        ),
        (
            f"timestamp,resource_id,gpu_utilization_pct\n{_iso(START)},,1\n",
            r"line 2, column resource_id: is empty",
        ),
    ],
)
def test_bad_utilization_files_write_nothing(
    tmp_path: Path,
    any_engine: Engine,
    gpu_files: tuple[Path, Path, list[dict[str, str]]],
    content: str,
    expected: str,
) -> None:
    focus, _, _ = gpu_files
    import_focus(any_engine, focus)
    before = stored(any_engine)
    util = tmp_path / "samples.csv"
    util.write_text(content)
    with pytest.raises(ImportInputError, match=rf"samples\.csv, {expected}"):
        import_focus(any_engine, focus, utilization=util)
    assert stored(any_engine) == before


def test_utilization_accepts_the_dcgm_metric_name_and_gzip(
    tmp_path: Path, gpu_files: tuple[Path, Path, list[dict[str, str]]]
) -> None:
    focus, _, _ = gpu_files
    util = tmp_path / "dcgm.csv.gz"
    with gzip.open(util, "wt") as out:
        out.write(
            f"Timestamp,Resource_ID,DCGM_FI_DEV_GPU_UTIL,gpu\n{_iso(START)},{P5},3,0\n{_iso(START)},{P5},4,1\n"
        )
    report = import_focus(None, focus, utilization=util, dry_run=True)
    assert report.utilization is not None and report.utilization.matched_hours == 1


def test_unreadable_utilization_file(
    tmp_path: Path, gpu_files: tuple[Path, Path, list[dict[str, str]]]
) -> None:
    focus, _, _ = gpu_files
    binary = tmp_path / "samples.csv"
    binary.write_bytes(b"timestamp,resource_id,gpu_utilization_pct\n\xff\xfe\x00garbage\n")
    with pytest.raises(ImportInputError, match=r"samples\.csv, line 2: is not UTF-8 text"):
        import_focus(None, focus, utilization=binary, dry_run=True)
    with pytest.raises(ImportInputError, match=r"missing\.csv: cannot be read"):
        import_focus(None, focus, utilization=tmp_path / "missing.csv", dry_run=True)


def _as_parquet(csv_path: Path, parquet_path: Path) -> Path:
    """The CSV's values as Parquet strings, as a FOCUS export in Parquet holds them."""
    with open(csv_path, newline="") as source:
        header = next(csv.reader(source))
    table = pa_csv.read_csv(
        csv_path,
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=False
        ),
    )
    pq.write_table(table, parquet_path)
    return parquet_path


def _landing_export(tmp_path: Path) -> Path:
    rows = p5_hours(P5, START, 30, "98.32") + p5_hours("i-0p5other0000000003", START, 5, "12.5")
    return write_export(tmp_path / "landing.csv", rows)


@pytest.mark.parametrize("fixture", ["gpu_files", "landing", "sample"])
def test_parquet_imports_exactly_like_its_csv(
    request: pytest.FixtureRequest, tmp_path: Path, any_engine: Engine, fixture: str
) -> None:
    """The same export as CSV and as Parquet: the same rows, to the micro-dollar, and the same
    report; imported into the database, the same stored rows."""
    if fixture == "gpu_files":
        source = request.getfixturevalue("gpu_files")[0]
    elif fixture == "landing":
        source = _landing_export(tmp_path)
    else:
        source = request.getfixturevalue("sample")
    parquet = _as_parquet(source, tmp_path / "export.parquet")
    from_csv, from_parquet = read_focus(source, now=AS_OF), read_focus(parquet, now=AS_OF)
    pd.testing.assert_frame_equal(from_csv.rows, from_parquet.rows)
    assert replace(from_parquet.report, path=source) == from_csv.report
    assert from_csv.report.rows > 0

    import_focus(any_engine, source, now=AS_OF)
    stored_csv = stored_frame(any_engine).sort_values(["resource_id", "usage_hour"], ignore_index=True)
    with any_engine.begin() as conn:
        conn.execute(gpu_usage_hourly.delete())
    import_focus(any_engine, parquet, now=AS_OF)
    stored_parquet = stored_frame(any_engine).sort_values(["resource_id", "usage_hour"], ignore_index=True)
    pd.testing.assert_frame_equal(stored_csv, stored_parquet)


def test_a_bad_parquet_row_is_refused_with_its_row_and_column(tmp_path: Path, sqlite_engine: Engine) -> None:
    source = _bad_focus(tmp_path, {"EffectiveCost": "12,50"})
    parquet = _as_parquet(source, tmp_path / "bad.parquet")
    with pytest.raises(ImportInputError) as error:
        import_focus(sqlite_engine, parquet)
    assert str(error.value).startswith(f"{parquet}, row 4, column EffectiveCost: '12,50' is not a number")
    assert stored(sqlite_engine) == (0, Decimal(0))


def test_blank_lines_and_line_breaks_keep_the_line_numbers(tmp_path: Path) -> None:
    """pyarrow reads the CSV; the lines named are still the physical lines of the file."""
    path = _bad_focus(tmp_path, {"EffectiveCost": "12,50"})
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join([lines[0], "\n", "\r\n", *lines[1:]]))  # two blank lines after the header
    with pytest.raises(ImportInputError, match=rf"bad\.csv, line {BAD_LINE + 2}, column EffectiveCost"):
        read_focus(path, chunk_rows=2)


@pytest.mark.parametrize("name", ["bad.csv", "bad.csv.gz"])
def test_line_breaks_in_columns_not_read_still_count(tmp_path: Path, name: str) -> None:
    """Only the columns Heliox uses are converted; the line named is found by a scan of the file."""
    rows = [_one_gpu_row() for _ in range(5)]
    rows[0]["ChargeDescription"] = "a description\nover two lines"
    rows[1]["ServiceName"] = "a service\r\nover\nthree lines"  # a column the import does not read
    rows[3] = _one_gpu_row(EffectiveCost="12,50")
    path = write_focus(tmp_path / name, rows)
    with pytest.raises(ImportInputError, match=rf"{name}, line {BAD_LINE + 2}, column EffectiveCost"):
        read_focus(path, chunk_rows=2)


def test_bytes_that_are_not_utf8_are_refused_with_their_line(tmp_path: Path) -> None:
    path = _bad_focus(tmp_path, {"ResourceId": "i-0latin1-PLACEHOLDER"})
    path.write_bytes(path.read_bytes().replace(b"PLACEHOLDER", b"caf\xe9"))
    with pytest.raises(ImportInputError, match=rf"bad\.csv, line {BAD_LINE}: is not UTF-8 text"):
        read_focus(path, chunk_rows=2)


@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
def test_a_header_alone_imports_nothing(tmp_path: Path, ending: str) -> None:
    path = tmp_path / "header.csv"
    path.write_bytes((",".join(FOCUS_HEADER) + ending).encode())
    data = read_focus(path)
    assert data.report.rows == data.report.resource_hours == 0 and data.rows.empty


def test_a_parquet_file_that_is_not_one(tmp_path: Path) -> None:
    path = tmp_path / "focus.parquet"
    path.write_bytes(b"PAR1" + b"\0" * 16 + b"PAR1")
    with pytest.raises(ImportInputError, match=r"focus\.parquet: is not a readable Parquet file"):
        read_focus(path)


# --- PricingCategory -------------------------------------------------------------------------

PRICED_HEADER = [*FOCUS_HEADER, "PricingCategory"]


def _priced(resource: str, hour: int, category: str, cost: str = "10") -> dict[str, str]:
    return _one_gpu_row(
        ResourceId=resource,
        EffectiveCost=cost,
        PricingCategory=category,
        ChargePeriodStart=_iso(START + dt.timedelta(hours=hour)),
        ChargePeriodEnd=_iso(START + dt.timedelta(hours=hour + 1)),
    )


def test_pricing_category_is_kept_and_committed_wins_the_hour(tmp_path: Path, any_engine: Engine) -> None:
    """Values match case-insensitively and are stored in FOCUS's spelling; charges of one
    resource-hour with different categories: the highest of Committed > Dynamic > Standard >
    Other wins, and an empty category never outranks a stated one."""
    rows = [
        _priced("i-0a", 0, "standard"),
        _priced("i-0a", 1, "STANDARD"),
        _priced("i-0a", 1, " Committed ", cost="2"),  # part of the hour under a commitment
        _priced("i-0b", 0, "Dynamic"),
        _priced("i-0b", 0, "standard"),
        _priced("i-0c", 0, "other"),
        _priced("i-0c", 1, ""),  # not known
        _priced("i-0d", 0, ""),
        _priced("i-0d", 0, "Committed", cost="-1"),  # a refund still says what the hour was
    ]
    path = write_focus(tmp_path / "priced.csv", rows, PRICED_HEADER)
    import_focus(any_engine, path, now=AS_OF)
    with any_engine.connect() as conn:
        stored_rows = conn.execute(
            select(gpu_usage_hourly.c.resource_id, gpu_usage_hourly.c.pricing_category).order_by(
                gpu_usage_hourly.c.resource_id, gpu_usage_hourly.c.usage_hour
            )
        ).all()
    assert [tuple(r) for r in stored_rows] == [
        ("i-0a", "Standard"),
        ("i-0a", "Committed"),
        ("i-0b", "Dynamic"),
        ("i-0c", "Other"),
        ("i-0c", None),
        ("i-0d", "Committed"),
    ]
    parquet = _as_parquet(path, tmp_path / "priced.parquet")
    pd.testing.assert_frame_equal(read_focus(path, now=AS_OF).rows, read_focus(parquet, now=AS_OF).rows)


def test_pricing_category_outside_focus_is_refused(tmp_path: Path, sqlite_engine: Engine) -> None:
    rows = [_priced("i-0a", 0, "Standard"), _priced("i-0a", 1, "Spot")]
    path = write_focus(tmp_path / "priced.csv", rows, PRICED_HEADER)
    with pytest.raises(ImportInputError) as error:
        import_focus(sqlite_engine, path, now=AS_OF)
    assert str(error.value).startswith(
        f"{path}, line 3, column PricingCategory: 'Spot' is not a FOCUS PricingCategory "
        "(Other, Standard, Dynamic, Committed, or empty)"
    )
    assert stored(sqlite_engine) == (0, Decimal(0))


def test_held_hours_keep_their_pricing_category(tmp_path: Path, any_engine: Engine) -> None:
    """A charge for hours that have not started waits in gpu_usage_pending with its category
    and reaches gpu_usage_hourly with it."""
    row = _priced("i-0later", 0, "committed")
    row["ChargePeriodEnd"] = _iso(START + dt.timedelta(hours=4))
    path = write_focus(tmp_path / "priced.csv", [row], PRICED_HEADER)
    report = import_focus(any_engine, path, now=START + dt.timedelta(hours=1, minutes=30))
    assert report.pending_hours == 2
    assert release_due_usage(any_engine, START + dt.timedelta(hours=5)) == 2
    with any_engine.connect() as conn:
        categories = conn.execute(select(gpu_usage_hourly.c.pricing_category)).scalars().all()
    assert categories == ["Committed"] * 4


# --- spreading -------------------------------------------------------------------------------


@pytest.mark.parametrize("total", [0, 1, 23, 24, 2_359_680_007, -7, -500_000_001])
@pytest.mark.parametrize("hours", [1, 3, 24, 744])
def test_spread_evenly_is_exact(total: int, hours: int) -> None:
    index, offset, parts = spread_evenly(np.array([total]), np.array([hours]))
    assert len(parts) == hours and int(parts.sum()) == total
    assert parts.max() - parts.min() <= 1
    assert offset.tolist() == list(range(hours)) and set(index.tolist()) == {0}


def test_spread_evenly_several_charges() -> None:
    index, offset, parts = spread_evenly(np.array([10, 5, -4]), np.array([3, 1, 2]))
    assert index.tolist() == [0, 0, 0, 1, 2, 2]
    assert offset.tolist() == [0, 1, 2, 0, 0, 1]
    assert parts.tolist() == [4, 3, 3, 5, -2, -2]


# --- the command line ------------------------------------------------------------------------


def _run(*args: str) -> Any:
    return CliRunner().invoke(cli, ["import-focus", *args])


def test_cli_imports_and_prints_the_report(
    tmp_path: Path, gpu_files: tuple[Path, Path, list[dict[str, str]]]
) -> None:
    focus, utilization, rows = gpu_files
    url = f"sqlite:///{tmp_path}/cli.db"
    result = _run(str(focus), "--utilization", str(utilization), "--database-url", url)
    assert result.exit_code == 0, result.output
    assert f"Read {focus}: {len(rows):,} rows" in result.output
    assert "Wrote 576 resource-hours of 3 GPU resources" in result.output
    engine = make_engine(url)
    assert stored(engine) == (576, expected_gpu_cost(rows))
    again = _run(str(focus), "--database-url", url)
    assert "Replaced 576 stored rows" in again.output
    engine.dispose()


def test_cli_dry_run_creates_no_database(
    tmp_path: Path, gpu_files: tuple[Path, Path, list[dict[str, str]]]
) -> None:
    focus, _, _ = gpu_files
    db = tmp_path / "dry" / "heliox.db"
    result = _run(str(focus), "--dry-run", "--database-url", f"sqlite:///{db}")
    assert result.exit_code == 0, result.output
    assert "Would write 576 resource-hours" in result.output and "Dry run" in result.output
    assert not db.exists()


@pytest.mark.parametrize("kind", ["not-focus", "bad-cost", "bad-utilization", "missing"])
def test_cli_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, gpu_files: tuple[Path, Path, list[dict[str, str]]], kind: str
) -> None:
    focus, _, _ = gpu_files
    db = tmp_path / "cli" / "heliox.db"
    args = ["--database-url", f"sqlite:///{db}"]
    if kind == "not-focus":
        other = tmp_path / "notes.csv"
        other.write_text("a,b\n1,2\n")
        args = [str(other), *args]
    elif kind == "bad-cost":
        args = [str(_bad_focus(tmp_path, {"EffectiveCost": "abc"})), *args]
    elif kind == "bad-utilization":
        util = tmp_path / "u.csv"
        util.write_text("timestamp,resource_id,gpu_utilization_pct\nnow,x,1\n")
        args = [str(focus), "--utilization", str(util), *args]
    else:
        args = [str(tmp_path / "nope.csv"), *args]
    result = _run(*args)
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ")
    assert ("line" in result.stderr) != (kind == "missing")
    assert "Traceback" not in result.output
    assert not db.exists()  # not even created: validation comes before opening the database


# --- end to end: the idle finding ------------------------------------------------------------


def test_imported_usage_produces_the_expected_idle_finding(
    any_engine: Engine, gpu_files: tuple[Path, Path, list[dict[str, str]]]
) -> None:
    from heliox_orchestration.detections.idle import idle_spend_report
    from heliox_orchestration.settings import Settings

    focus, utilization, _ = gpu_files
    import_focus(any_engine, focus, utilization=utilization)
    report = idle_spend_report(any_engine, Settings(), as_of=AS_OF, severities=("high", "medium", "low"))

    # The busy p4d is not idle; the Azure VM has no samples, and unknown is never idle.
    assert [f.resource_id for f in report.findings] == [P5]
    finding = report.findings[0]
    assert (finding.provider, finding.gpu_type, finding.gpu_count) == ("aws", "H100", 8)
    assert (finding.model_name, finding.team, finding.severity) == ("Llama 3 fine-tuning", "research", "high")
    assert (finding.idle_days, finding.idle_pct) == (DAYS, 100)
    streak_cost = Decimal("98.32") * DAYS * 24 + Decimal("0.10") - Decimal("1.00")
    assert abs(finding.monthly_savings_usd - streak_cost / (DAYS * 24) * 730) < Decimal("0.01")
