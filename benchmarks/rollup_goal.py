"""Goal G1 (issue 18): ``idle_gpu_recommendations`` on the daily rollup vs the raw-table idle query.

The driver side (``measure``, ``extend``) is called by ``benchmarks.run``; the measured side runs in
its own process (``python -m benchmarks.rollup_worker PARAMS_JSON RESULT_PATH``):

1. setup, untimed: the rollup of every local day of the 14-day window, written as the
   ``daily_gpu_costs`` refresh writes it (``write_daily_costs`` with ``IDLE_UTILIZATION_PCT``);
2. the raw-row rule and the rollup rule evaluated once each: their findings must be identical
   (same resources, severities, streaks, savings to the micro-dollar);
3. ``repeat`` rounds (after a warm-up), interleaved: the bare raw-table 14-day idle query
   (``idle_candidates_query``, all rows fetched) and the whole ``idle_gpu_recommendations``
   materialization (warm, in process), whose ratio is G1 (<= 0.25).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import median

G1_TARGET = 0.25
WORKER = "benchmarks.rollup_worker"


def measure(
    run_worker: Callable[[str, dict[str, Any], Path], dict[str, Any]],
    url: str,
    as_of: dt.datetime,
    timezone: str,
    repeat: int,
    workdir: Path,
) -> dict[str, Any]:
    """The rollup worker's answer (``run_worker`` is the driver's: a fresh process)."""
    params = {"task": "rollup_idle", "url": url, "as_of": as_of.isoformat(), "timezone": timezone}
    return run_worker(WORKER, {**params, "repeat": repeat}, workdir)


def extend(summary: dict[str, Any], result: dict[str, Any], goal: Callable[..., Any]) -> dict[str, Any]:
    """``summary`` (``benchmarks.run._summarize``'s) with the rollup measurement and its goals
    (``goal`` is ``benchmarks.run.Goal``)."""
    samples = result["samples"]
    ratio = median(
        [a / b for a, b in zip(samples["materialization_s"], samples["bare_raw_query_s"], strict=True)]
    )
    m = result["median"]
    summary["measurements"]["rollup_idle"] = {
        "bare_raw_idle_query_s": m["bare_raw_query_s"],
        "materialization_s": m["materialization_s"],
        "step_compute_s": m["step_s"],
        "materialization_vs_bare_raw_ratio": ratio,
        "rollup_days_read": result["counts"]["rollup_days"],
        "raw_days_read": result["counts"]["raw_days"],
        "rollup_rows_read": result["counts"]["rollup_rows"],
        "rollup_setup_s": result["setup_s"],
        "findings": result["counts"]["findings"],
        "rightsizing_findings": result["counts"]["rightsizing"],
        "findings_identical_to_raw_rule": bool(result["identical"]),
    }
    summary["plans"]["rollup_idle_query"] = result["plan"]
    summary["goals"] += [
        goal("G1", "idle on the rollup / bare raw 14-day idle query", ratio, "<=", G1_TARGET),
        goal(
            "G1b", "rollup idle findings identical to the raw rule", bool(result["identical"]), "is", True, ""
        ),
    ]
    return summary
