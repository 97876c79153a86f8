"""Rightsizing: multi-GPU resources that work, but far below their size (issue 17).

Over the idle rule's window (``IDLE_LOOKBACK_DAYS`` of completed hours, read from the rollup),
a resource is a rightsizing finding when

* it has more than one GPU (``gpu_count`` of its last observed hour),
* its GPU-hour weighted mean utilization (sum of utilization x gpu_count over the hours with a
  utilization, divided by their GPU-hours) is below ``RIGHTSIZE_UTILIZATION_PCT``,
* it is not an idle finding (idle is the stronger advice), and
* fewer GPUs would have carried its peak: the peak hourly load is the largest
  ``gpu_count x utilization / 100`` over its hours (GPUs' worth of work in the busiest hour); the
  recommended count is ``ceil(peak load)`` (at least 1), since one GPU carries at most 100%.

Estimated saving = (gpu_count - recommended) x the per-GPU hourly cost (window cost / window
GPU-hours) x 730. Severity is always ``medium``: advice, not a fire. Committed capacity is
advised to reallocate the spare GPUs, with $0 savings from shrinking (as for idle findings).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import pandas as pd

from heliox_orchestration.costs.common import HOURS_PER_MONTH, as_int, micros_ratio
from heliox_orchestration.costs.rollup import COMMITTED
from heliox_orchestration.db.gpu_prices import PROVIDER_LABELS
from heliox_orchestration.settings import Settings

SEVERITY = "medium"
RIGHTSIZE_COLUMNS = [
    "resource_id",
    "provider",
    "region",
    "gpu_type",
    "gpu_count",
    "recommended_gpu_count",
    "model_name",
    "team",
    "severity",
    "mean_utilization_pct",
    "peak_gpu_load",
    "observed_hours",
    "hourly_cost_per_gpu_usd",
    "monthly_savings_usd",
    "action",
    "title",
    "detail",
]


def recommended_gpus(peak_gpu_load: Decimal) -> int:
    """The smallest GPU count that would have carried the peak hourly load."""
    return max(1, math.ceil(peak_gpu_load))


def rightsizing_record(r: dict[str, Any], settings: Settings) -> dict[str, Any] | None:
    """The finding of one per-resource row of ``rollup_candidates_query``, or None."""
    gpu_count, util_gpu_hours = as_int(r["gpu_count"]), as_int(r["utilization_gpu_hours"])
    if gpu_count <= 1 or not util_gpu_hours or r["peak_gpu_load"] is None:
        return None
    mean = Decimal(str(r["utilization_x_gpu_hours"])) / util_gpu_hours
    if mean >= settings.rightsize_utilization_pct:
        return None
    peak = Decimal(str(r["peak_gpu_load"]))
    needed = recommended_gpus(peak)
    if needed >= gpu_count:
        return None
    cost_micros, gpu_hours = as_int(r["window_cost_micros"]), as_int(r["window_gpu_hours"])
    committed = r["pricing_category"] == COMMITTED
    per_gpu = micros_ratio(cost_micros, gpu_hours)
    spare = gpu_count - needed
    savings = Decimal(0) if committed else micros_ratio(cost_micros * spare * HOURS_PER_MONTH, gpu_hours)
    mean_pct = float(round(mean, 1))
    provider = PROVIDER_LABELS.get(r["provider"], r["provider"].upper())
    detail = (
        f"{mean_pct:g}% mean utilization on {gpu_count} GPUs, peak {float(peak):g} GPUs' worth: "
        f"{needed} would do"
    )
    return {
        **{k: r[k] for k in ("resource_id", "provider", "region", "gpu_type", "model_name", "team")},
        "gpu_count": gpu_count,
        "recommended_gpu_count": needed,
        "severity": SEVERITY,
        "mean_utilization_pct": mean_pct,
        "peak_gpu_load": float(peak),
        "observed_hours": as_int(r["observed_hours"]),
        "hourly_cost_per_gpu_usd": per_gpu,
        "monthly_savings_usd": savings,
        "action": "reallocate" if committed else "rightsize",
        "title": f"Oversized GPU node: {gpu_count}x {r['gpu_type']} on {provider}",
        "detail": detail + ("; committed capacity: reallocate the spare GPUs" if committed else ""),
    }


def rightsizing_frame(rows: Iterable[dict[str, Any]], settings: Settings) -> pd.DataFrame:
    """The rightsizing findings, highest savings first."""
    records = [rec for r in rows if (rec := rightsizing_record(r, settings)) is not None]
    records.sort(key=lambda r: (-r["monthly_savings_usd"], r["resource_id"]))
    return pd.DataFrame(records, columns=RIGHTSIZE_COLUMNS, dtype=object)
