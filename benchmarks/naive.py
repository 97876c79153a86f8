"""The naive way, in its own process: what a user without Heliox would write. Read the raw hourly
rows of the window into pandas (``pd.read_sql``), then ``groupby``.

Imports pandas and SQLAlchemy only (not Dagster, not Heliox), so the process's peak memory is the
naive approach's own. Run as ``python -m benchmarks.naive PARAMS_JSON RESULT_PATH``.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pandas as pd
from sqlalchemy import create_engine, text

from benchmarks.common import median, worker_args, write_result

RAW_ROWS = text("SELECT * FROM gpu_usage_hourly WHERE usage_hour >= :start AND usage_hour < :end")


def read_rows(conn: Any, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    return pd.read_sql(RAW_ROWS, conn, params={"start": start, "end": end})


def naive_daily_costs(rows: pd.DataFrame, timezone: str) -> pd.DataFrame:
    """Cost per local day, provider, GPU type and model (what ``daily_gpu_costs`` stores)."""
    rows["day"] = rows["usage_hour"].dt.tz_convert(timezone).dt.date
    model = rows["model_name"].str.strip()
    rows["model_name"] = model.where(model != "")
    rows["utilization_x_gpus"] = rows["gpu_utilization_pct"] * rows["gpu_count"]
    rows["utilization_gpu_hours"] = rows["gpu_count"].where(rows["gpu_utilization_pct"].notna(), 0)
    return (
        rows.groupby(["day", "provider", "gpu_type", "model_name"], dropna=False)
        .agg(
            cost_usd=("cost_usd", "sum"),
            gpu_hours=("gpu_count", "sum"),
            utilization_x_gpus=("utilization_x_gpus", "sum"),
            utilization_gpu_hours=("utilization_gpu_hours", "sum"),
            usage_rows=("usage_hour", "size"),
            last_usage_hour=("usage_hour", "max"),
        )
        .reset_index()
    )


def naive_idle_findings(rows: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """The idle rule of ``detections.idle`` per resource, in pandas."""
    rows["is_idle"] = rows["gpu_utilization_pct"] < float(params["idle_utilization_pct"])  # NaN: not idle
    by_resource = rows.groupby("resource_id")
    per = by_resource.agg(
        observed_hours=("usage_hour", "size"),
        idle_hours=("is_idle", "sum"),
        last_observed_hour=("usage_hour", "max"),
    )
    per["last_active_hour"] = rows[~rows["is_idle"]].groupby("resource_id")["usage_hour"].max()
    share = float(params["idle_min_idle_share_pct"])
    per = per[
        (per["observed_hours"] >= int(params["idle_min_observed_hours"]))
        & (per["idle_hours"] * 100 >= per["observed_hours"] * share)
    ]
    candidates = rows.merge(per[["last_active_hour"]], left_on="resource_id", right_index=True)
    in_streak = candidates["last_active_hour"].isna() | (
        candidates["usage_hour"] > candidates["last_active_hour"]
    )
    streak = (
        candidates[in_streak]
        .groupby("resource_id")
        .agg(
            streak_hours=("usage_hour", "size"),
            streak_start=("usage_hour", "min"),
            streak_cost_usd=("cost_usd", "sum"),
        )
    )
    last_rows = rows.sort_values("usage_hour").groupby("resource_id").tail(1).set_index("resource_id")
    attributes = last_rows[["provider", "region", "gpu_type", "gpu_count", "model_name", "team"]]
    findings = per.join(streak, how="inner").join(attributes)
    findings["monthly_savings_usd"] = findings["streak_cost_usd"] / findings["streak_hours"] * 730
    return findings.sort_values("monthly_savings_usd", ascending=False)


def main() -> None:
    params, result_path = worker_args()
    start = dt.datetime.fromisoformat(params["start"])
    end = dt.datetime.fromisoformat(params["end"])
    engine = create_engine(params["url"])
    seconds: list[float] = []
    raw_rows = result_rows = 0
    for _ in range(params["repeat"]):
        began = time.perf_counter()
        with engine.connect() as conn:
            rows = read_rows(conn, start, end)
        raw_rows = len(rows)
        if params["task"] == "daily":
            result = naive_daily_costs(rows, params["timezone"])
        else:
            result = naive_idle_findings(rows, params)
        result_rows = len(result)
        seconds.append(time.perf_counter() - began)
        del rows, result
    engine.dispose()
    write_result(
        result_path,
        {"seconds": seconds, "median_s": median(seconds), "raw_rows": raw_rows, "result_rows": result_rows},
    )


if __name__ == "__main__":
    main()
