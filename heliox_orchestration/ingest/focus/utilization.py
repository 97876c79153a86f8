"""GPU utilization samples (``--utilization``): validated, averaged per resource-hour and joined
to the imported hourly rows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from heliox_orchestration import clock
from heliox_orchestration.ingest.focus.files import (
    DEFAULT_CHUNK_ROWS,
    ProgressFactory,
    chunks,
    column_picker,
    located,
)
from heliox_orchestration.ingest.focus.validation import (
    EARLIEST,
    OUT_OF_RANGE,
    Errors,
    ImportInputError,
    check_not_future,
    check_text,
    parse_times,
)

HOUR_DTYPE = "datetime64[us, UTC]"
SAMPLED_IN_THE_FUTURE = (
    "is in the future: a sample cannot be measured before it happens; check the file's time zone"
)
_KEY = ["resource_id", "usage_hour"]

UTILIZATION_COLUMNS = ("timestamp", "resource_id", "gpu_utilization_pct")
_UTILIZATION_ALIASES = {"dcgm_fi_dev_gpu_util": "gpu_utilization_pct"}


@dataclass(frozen=True)
class UtilizationReport:
    path: Path
    samples: int
    sampled_hours: int  # resource-hours with at least one sample
    matched_hours: int  # imported resource-hours that got a utilization value
    unmatched_hours: int  # sampled resource-hours without an imported cost: ignored


def _utilization_columns(path: Path) -> Callable[[list[str]], dict[str, int]]:
    def wanted(present: dict[str, str]) -> list[str]:
        missing = [c for c in UTILIZATION_COLUMNS if c not in present]
        if missing:
            raise ImportInputError(
                path,
                f"is not a utilization samples file: missing column(s) {', '.join(missing)} "
                f"(expected a header {', '.join(UTILIZATION_COLUMNS)})",
                line=1,
            )
        return list(UTILIZATION_COLUMNS)

    choose = column_picker(path, wanted)
    return lambda header: choose([_UTILIZATION_ALIASES.get(h.lower(), h) for h in header])


def _hourly_utilization_sums(
    frame: pd.DataFrame, path: Path, parquet: bool, now: dt.datetime
) -> pd.DataFrame:
    """Validate a chunk of samples; (resource_id, usage_hour) -> sum and count of samples."""
    errors = Errors(path, frame["_line"].to_numpy(), parquet)
    raw_time = frame["timestamp"]
    epoch = pd.to_numeric(raw_time, errors="coerce")
    from_epoch = pd.to_datetime(epoch.where(np.isfinite(epoch)), unit="s", utc=True, errors="coerce")
    stamps = parse_times(raw_time.where(epoch.isna())).where(epoch.isna(), from_epoch)
    errors.check(raw_time.isna(), "timestamp", lambda _i: "is empty")
    errors.check(
        stamps.isna() & raw_time.notna() & epoch.isna(),
        "timestamp",
        lambda i: f"{raw_time.iloc[i]!r} is not an ISO 8601 date-time or Unix seconds",
    )
    errors.check(
        (stamps.isna() & epoch.notna()) | (stamps < EARLIEST),
        "timestamp",
        lambda i: f"{raw_time.iloc[i]!r} {OUT_OF_RANGE}",
    )
    check_not_future(errors, raw_time, stamps, "timestamp", now, SAMPLED_IN_THE_FUTURE)
    errors.check(frame["resource_id"].isna(), "resource_id", lambda _i: "is empty")
    check_text(errors, frame["resource_id"], "resource_id", 255)
    raw_value = frame["gpu_utilization_pct"]
    pct = pd.to_numeric(raw_value, errors="coerce")
    errors.check(
        ~pct.between(0, 100),
        "gpu_utilization_pct",
        lambda i: f"{raw_value.iloc[i]!r} is not a percentage between 0 and 100",
    )
    errors.raise_first()
    hourly = pd.DataFrame(
        {
            "resource_id": frame["resource_id"],
            "usage_hour": stamps.dt.floor("h").astype(HOUR_DTYPE),
            "total": pct,
        }
    )
    return hourly.groupby(_KEY, as_index=False).agg(total=("total", "sum"), n=("total", "size"))


def read_utilization(
    path: Path | str,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: ProgressFactory | None = None,
    now: dt.datetime | None = None,
) -> tuple[pd.DataFrame, int]:
    """Hourly mean GPU utilization per resource from a samples CSV (``timestamp, resource_id,
    gpu_utilization_pct``; timestamps ISO 8601 or Unix seconds, UTC). Returns the frame
    (resource_id, usage_hour, gpu_utilization_pct) and the number of samples."""
    path = Path(path)
    with located(path):
        return _read_utilization(path, chunk_rows, progress, now or clock.utc_now())


def _read_utilization(
    path: Path, chunk_rows: int, progress: ProgressFactory | None, now: dt.datetime
) -> tuple[pd.DataFrame, int]:
    sums: list[pd.DataFrame] = []
    samples = 0
    for frame, parquet in chunks(path, _utilization_columns(path), chunk_rows, progress):
        samples += len(frame)
        sums.append(_hourly_utilization_sums(frame, path, parquet, now))
        if len(sums) >= 20:
            sums = [pd.concat(sums).groupby(_KEY, as_index=False).sum()]
    if not sums:
        empty = pd.DataFrame({"resource_id": [], "usage_hour": [], "gpu_utilization_pct": []})
        return empty.astype({"resource_id": object, "usage_hour": HOUR_DTYPE}), 0
    totals = pd.concat(sums).groupby(_KEY, as_index=False).sum()
    totals["gpu_utilization_pct"] = (totals["total"] / totals["n"]).round(2)
    return totals[[*_KEY, "gpu_utilization_pct"]], samples


def merge_utilization(rows: pd.DataFrame, utilization: pd.DataFrame) -> pd.DataFrame:
    """Rows with ``gpu_utilization_pct`` from the hourly means (NULL where there is none)."""
    return rows.drop(columns="gpu_utilization_pct", errors="ignore").merge(utilization, on=_KEY, how="left")


def apply_utilization(
    rows: pd.DataFrame, utilization: pd.DataFrame, samples: int, path: Path
) -> tuple[pd.DataFrame, UtilizationReport]:
    """Rows with ``gpu_utilization_pct`` from the hourly means; hours without samples stay NULL
    (unknown, which the idle rule never treats as idle)."""
    merged = merge_utilization(rows, utilization)
    matched = int(merged["gpu_utilization_pct"].notna().sum())
    report = UtilizationReport(
        path=path,
        samples=samples,
        sampled_hours=len(utilization),
        matched_hours=matched,
        unmatched_hours=len(utilization) - matched,
    )
    return merged, report
