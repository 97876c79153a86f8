"""G3 of issue 18: fast, bounded FOCUS ingestion.

Writes two FOCUS CSV exports of GPU instance-hours (``FULL_BYTES``: 1 GB and 100 MB; ``--quick``:
``QUICK_BYTES``), every row its own resource-hour, so that the resource-hours grow with the file,
then measures, each in a fresh process that reports its own peak RSS (``VmHWM``):

* ``heliox import-focus`` of each file into a fresh PostgreSQL database (the real command line:
  read, validate, spool, COPY, commit), and
* pyarrow just reading and parsing the big file (``pyarrow.csv.open_csv``, its defaults, every
  batch consumed), the floor any CSV import stands on.

Goals: G3a import time / pyarrow time <= 3 (big file); G3b peak RSS of the big import <= 1.5x
that of the small one (memory follows the batch, not the file).

``python -m benchmarks.ingest_goal import PATH DATABASE_URL RESULT`` and
``python -m benchmarks.ingest_goal pyarrow PATH RESULT`` are the two measured processes;
``python -m benchmarks.ingest_goal measure [--quick]`` runs G3 alone and prints its JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FULL_BYTES = (1 << 30, 100 << 20)
QUICK_BYTES = (4 << 20, 1 << 20)
RESOURCES = 4_000
START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
BLOCK_ROWS = 20_000
# (usage type, hourly cost) of catalogued GPU instances, plus one CPU instance the import skips.
INSTANCES = (
    ("USE1-BoxUsage:p5.48xlarge", "98.32"),
    ("USE1-BoxUsage:p4d.24xlarge", "32.7726"),
    ("USE1-BoxUsage:g5.12xlarge", "5.672"),
    ("USE1-BoxUsage:m5.large", "0.096"),
)
TAGS = (
    '{"model": "llama-70b-serve", "team": "llm-serving"}',
    '{"model": "Llama 3 fine-tuning", "team": "research"}',
    '{"user:team": "imaging"}',
)
PRICING = ("Standard", "Committed", "Dynamic")


@dataclass
class IngestResult:
    measurements: dict[str, Any]
    goals: list[tuple[str, str, float, str, float, str]]  # Goal(id, name, value, op, target, unit)
    raw: dict[str, Any] = field(default_factory=dict)


def write_focus_csv(path: Path, target_bytes: int) -> int:
    """A FOCUS 1.0 CSV of about ``target_bytes``: row i charges resource i % RESOURCES for hour
    i // RESOURCES. Returns the number of rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv

    resources = pa.array([f"i-0bench{n:011d}" for n in range(RESOURCES)])
    kind = np.arange(RESOURCES) % len(INSTANCES)
    usage_types = pa.array([INSTANCES[k][0] for k in kind])
    costs = pa.array([INSTANCES[k][1] for k in kind])
    tags = pa.array([TAGS[n % len(TAGS)] for n in range(RESOURCES)])
    pricing = pa.array([PRICING[n % len(PRICING)] for n in range(RESOURCES)])
    rows, first = 0, 0
    block = min(BLOCK_ROWS, max(1_000, target_bytes // 2_000))  # about a quarter MB per 1 MB asked
    with pa_csv.CSVWriter(str(path), _schema()) as writer:
        while path.stat().st_size < target_bytes:
            index = np.arange(first, first + block)
            who = pa.array(index % RESOURCES)
            hour = pa.array(np.datetime64(START.replace(tzinfo=None), "s") + (index // RESOURCES) * 3600)
            start = pc.strftime(hour, format="%Y-%m-%dT%H:%M:%SZ")
            end = pc.strftime(pc.add(hour, pa.scalar(3600, pa.duration("s"))), format="%Y-%m-%dT%H:%M:%SZ")
            cost = costs.take(who)
            constant = {name: pa.array([value] * block) for name, value in _CONSTANTS.items()}
            columns = {
                **constant,
                "BilledCost": cost,
                "ChargePeriodEnd": end,
                "ChargePeriodStart": start,
                "EffectiveCost": cost,
                "ListCost": cost,
                "PricingCategory": pricing.take(who),
                "ResourceId": resources.take(who),
                "Tags": tags.take(who),
                "x_UsageType": usage_types.take(who),
            }
            writer.write_table(pa.table([columns[f.name] for f in _schema()], schema=_schema()))
            rows += block
            first += block
    return rows


_CONSTANTS = {
    "BillingAccountId": "123456789012",
    "BillingCurrency": "USD",
    "BillingPeriodStart": "2025-01-01T00:00:00Z",
    "ChargeCategory": "Usage",
    "ChargeClass": "",
    "ChargeDescription": "On Demand Linux instance hour",
    "ConsumedQuantity": "1",
    "ConsumedUnit": "Hours",
    "ProviderName": "AWS",
    "PublisherName": "Amazon Web Services, Inc.",
    "RegionId": "us-east-1",
    "ResourceType": "instance",
    "ServiceCategory": "Compute",
    "ServiceName": "Amazon Elastic Compute Cloud",
    "SubAccountId": "210987654321",
}


def _schema() -> Any:
    import pyarrow as pa

    names = sorted(
        [
            *_CONSTANTS,
            "BilledCost",
            "ChargePeriodEnd",
            "ChargePeriodStart",
            "EffectiveCost",
            "ListCost",
            "PricingCategory",
            "ResourceId",
            "Tags",
            "x_UsageType",
        ]
    )
    return pa.schema([(name, pa.string()) for name in names])


# --- the measured processes ----------------------------------------------------------------------


def _import_process(path: str, database_url: str) -> dict[str, Any]:
    from heliox_orchestration.cli import cli

    began = time.perf_counter()
    cli.main(["import-focus", path, "--database-url", database_url], standalone_mode=False)
    return {"seconds": time.perf_counter() - began}


def _pyarrow_process(path: str) -> dict[str, Any]:
    import pyarrow.csv as pa_csv

    began = time.perf_counter()
    rows = sum(batch.num_rows for batch in pa_csv.open_csv(path))
    return {"seconds": time.perf_counter() - began, "rows": rows}


def main(argv: list[str]) -> None:
    from benchmarks.common import write_result

    task, *rest = argv
    if task == "import":
        path, url, result = rest
        write_result(result, _import_process(path, url))
    elif task == "pyarrow":
        path, result = rest
        write_result(result, _pyarrow_process(path))
    elif task == "measure":
        import subprocess
        import tempfile

        def run(argv: list[str], log_path: Path) -> float:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("HELIOX_", "SLACK_"))}
            with log_path.open("ab") as out:
                began = time.perf_counter()
                subprocess.run(argv, stdout=out, stderr=out, env=env, check=True)
                return time.perf_counter() - began

        server = os.environ.get(
            "HELIOX_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
        )
        with tempfile.TemporaryDirectory(prefix="heliox-ingest-") as tmp:
            ingest = measure_ingest(Path(tmp), server, quick="--quick" in rest, run_process=run, log=print)
        print(
            json.dumps(
                {"measurements": ingest.measurements, "goals": ingest.goals, "raw": ingest.raw}, indent=2
            )
        )
    else:
        raise SystemExit(f"unknown task {task!r}")


# --- the driver ----------------------------------------------------------------------------------


def _measured(argv: list[str], result: Path, run_process: Any) -> dict[str, Any]:
    seconds = run_process(
        [sys.executable, "-m", "benchmarks.ingest_goal", *argv, str(result)], result.with_suffix(".log")
    )
    return {**json.loads(result.read_text()), "process_s": seconds}


def measure_ingest(
    workdir: Path, server_url: str, *, quick: bool, run_process: Any, log: Any
) -> IngestResult:
    """Both files written, imported and read; ``run_process(argv, log_path) -> seconds`` runs a
    child (the driver's, so children get its clean environment)."""
    from benchmarks.seeding import create_database_if_missing, drop_database, with_database

    big_bytes, small_bytes = QUICK_BYTES if quick else FULL_BYTES
    files = {}
    for label, size in (("big", big_bytes), ("small", small_bytes)):
        path = workdir / f"focus-{label}.csv"
        began = time.perf_counter()
        rows = write_focus_csv(path, size)
        log(
            f"focus_import: wrote {path.name}, {path.stat().st_size / 2**20:,.0f} MiB, {rows:,} rows "
            f"in {time.perf_counter() - began:.0f} s"
        )
        files[label] = (path, rows)
    # The files were just written: their gigabyte of dirty pages would be flushed to disk while
    # the import runs, competing with the database's own writes (not what production pays, where
    # the export landed long before). Flushed first.
    os.sync()
    raw: dict[str, Any] = {"load_average_before": os.getloadavg()}
    for label in ("small", "big"):
        url = with_database(server_url, f"heliox_bench_ingest_{uuid.uuid4().hex[:8]}")
        create_database_if_missing(url)
        try:
            raw[f"import_{label}"] = _measured(
                ["import", str(files[label][0]), url], workdir / f"import-{label}.json", run_process
            )
        finally:
            drop_database(url)
        log(f"focus_import: imported {label} in {raw[f'import_{label}']['process_s']:.1f} s")
    raw["pyarrow_big"] = _measured(
        ["pyarrow", str(files["big"][0])], workdir / "pyarrow-big.json", run_process
    )
    raw["load_average_after"] = os.getloadavg()  # a shared machine: say how busy it was
    for path, _ in files.values():
        path.unlink()
    big, small, arrow = raw["import_big"], raw["import_small"], raw["pyarrow_big"]
    time_ratio = big["process_s"] / arrow["process_s"]
    rss_ratio = big["peak_rss_mb"] / small["peak_rss_mb"]
    measurements = {
        "big_file_mb": round(big_bytes / 2**20, 1),
        "big_file_rows": files["big"][1],
        "small_file_mb": round(small_bytes / 2**20, 1),
        "import_big_s": big["process_s"],
        "pyarrow_read_big_s": arrow["process_s"],
        "import_vs_pyarrow_ratio": time_ratio,
        "import_big_peak_rss_mb": big["peak_rss_mb"],
        "import_small_peak_rss_mb": small["peak_rss_mb"],
        "pyarrow_read_peak_rss_mb": arrow["peak_rss_mb"],
        "rss_big_vs_small_ratio": rss_ratio,
        "load_average_1m_before": raw["load_average_before"][0],
        "load_average_1m_after": raw["load_average_after"][0],
    }
    goals = [
        ("G3a", "FOCUS import / pyarrow read, big CSV", time_ratio, "<=", 3.0, "x"),
        ("G3b", "FOCUS import peak RSS, big / small file", rss_ratio, "<=", 1.5, "x"),
    ]
    return IngestResult(measurements=measurements, goals=goals, raw=raw)


if __name__ == "__main__":
    main(sys.argv[1:])
