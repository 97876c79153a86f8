"""A FOCUS export read into resource-hours: chunk by chunk, each charge checked and spread
(``charges``), the parts of a resource-hour summed into one row, corrections netted in or
skipped once the whole file is known. Memory grows with the GPU resource-hours found, not with
the rows of the file."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from heliox_orchestration import clock
from heliox_orchestration.ingest.focus.charges import (
    COST_COLUMNS,
    DEFAULT_TAG_KEYS,
    SKIP_REASONS,
    TagKeys,
    focus_columns,
    pricing_names,
    recognize,
    skip_reasons,
    spread_gpu_charges,
    validate_charges,
)
from heliox_orchestration.ingest.focus.files import DEFAULT_CHUNK_ROWS, ProgressFactory, chunks
from heliox_orchestration.ingest.focus.report import ImportReport
from heliox_orchestration.ingest.focus.utilization import HOUR_DTYPE
from heliox_orchestration.ingest.focus.validation import Errors, check_hourly_totals, exact_sum
from heliox_orchestration.money import micros_to_dollars

DEFAULT_MAX_HOURLY_COST_USD = Decimal(10_000)
MAX_HOURLY_COST_SETTING = "HELIOX_MAX_HOURLY_COST_USD"

_KEY = ["resource_id", "usage_hour"]
_FIRST = ["provider", "region", "gpu_type", "gpu_count", "model_name", "team"]
# The highest PricingCategory rank of a resource-hour's charges (charges.PRICING_CATEGORIES).
_PRICING = "_pricing"
# Carried per resource-hour for validation only: the first line charging it (and whether that
# line's cost is its BilledCost), and the float sum of its charges' absolute micro-dollars.
_CHECKED = ["_line", "_billed", "_gross"]


@dataclass
class _FocusState:
    rows: int = 0
    kept: int = 0
    spread: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    cost_columns: Counter[str] = field(default_factory=Counter)
    gpu_skipped_rows: Counter[str] = field(default_factory=Counter)
    gpu_skipped_cost: dict[str, Decimal] = field(default_factory=dict)
    file_gpu_cost: Decimal = Decimal(0)
    hourly: list[pd.DataFrame] = field(default_factory=list)
    corrections: list[pd.DataFrame] = field(default_factory=list)
    # line -> (exact cost, spread?) of correction rows, decided once the whole file is read
    correction_lines: dict[int, tuple[Decimal, bool]] = field(default_factory=dict)

    def skip_gpu(self, reason: str, rows: int, cost: Decimal) -> None:
        self.gpu_skipped_rows[reason] += rows
        self.gpu_skipped_cost[reason] = self.gpu_skipped_cost.get(reason, Decimal(0)) + cost


def _empty_rows() -> pd.DataFrame:
    empty = pd.DataFrame({c: [] for c in [*_KEY, *_FIRST, "cost_micros", _PRICING, *_CHECKED]}, dtype=object)
    return empty.astype(
        {
            "usage_hour": HOUR_DTYPE,
            "gpu_count": np.int64,
            "cost_micros": np.int64,
            _PRICING: np.int8,
            "_line": np.int64,
            "_billed": bool,
            "_gross": float,
        }
    )


def _aggregate(parts: pd.DataFrame) -> pd.DataFrame:
    """One row per resource-hour: costs summed, attributes from the first charge naming them."""
    if parts.empty:
        return parts[[*_KEY, *_FIRST, "cost_micros", _PRICING, *_CHECKED]]
    spec: dict[str, Any] = {c: "first" for c in [*_FIRST, "_line", "_billed"]}
    spec["cost_micros"] = "sum"  # exact while _gross < 2**62 (check_hourly_totals refuses the rest)
    spec[_PRICING] = "max"
    spec["_gross"] = "sum"
    return parts.groupby(_KEY, sort=False, as_index=False).agg(spec)


def _process_chunk(
    frame: pd.DataFrame, path: Path, parquet: bool, tag_keys: TagKeys, now: dt.datetime, state: _FocusState
) -> None:
    lines = frame["_line"].to_numpy()
    charges = validate_charges(frame, Errors(path, lines, parquet))
    gpu_type, gpu_count = recognize(frame, charges.provider)
    is_gpu = gpu_type.notna().to_numpy()
    reason = skip_reasons(charges, is_gpu, frame["ResourceId"].notna().to_numpy())

    state.rows += len(frame)
    state.cost_columns.update(charges.cost_column.tolist())
    state.skipped.update(r for r in reason.tolist() if r)
    for key in set(reason[is_gpu].tolist()) - {""}:
        rows = np.flatnonzero(is_gpu & (reason == key))
        state.skip_gpu(key, len(rows), sum((Decimal(charges.cost_text.iloc[i]) for i in rows), Decimal(0)))

    take = np.flatnonzero(reason == "")
    if not len(take):
        return
    sel = frame.iloc[take].assign(
        _provider=charges.provider.iloc[take],
        _gpu_type=gpu_type.iloc[take],
        _gpus=gpu_count.iloc[take],
        _billed=charges.cost_column[take] == "BilledCost",
    )
    errors = Errors(path, lines[take], parquet)
    spread = spread_gpu_charges(
        sel,
        errors,
        charges.start.iloc[take],
        charges.end.iloc[take],
        charges.cost_text.iloc[take],
        tag_keys,
        now,
    )
    correction, hours = charges.correction[take], spread.hours
    regular = ~correction
    state.hourly.append(_aggregate(spread.parts[regular[spread.charge]]))
    state.file_gpu_cost += sum((spread.exact[i] for i in np.flatnonzero(regular)), Decimal(0))
    state.spread += int((hours[regular] > 1).sum())
    state.kept += int((hours[regular] == 1).sum())
    if correction.any():
        state.corrections.append(spread.parts[correction[spread.charge]])
        for i in np.flatnonzero(correction):
            state.correction_lines[int(errors.lines[i])] = (spread.exact[i], bool(hours[i] > 1))
    if len(state.hourly) >= 20:  # bound memory by resource-hours, not by charges
        state.hourly = [_aggregate(pd.concat(state.hourly, ignore_index=True))]


def _net_corrections(hourly: pd.DataFrame, corrections: pd.DataFrame, state: _FocusState) -> pd.DataFrame:
    """Net in the corrections whose every hour has regular charges in this file; skip the rest.
    A correction usually arrives in a later month's file than the hours it corrects, and a
    re-import replaces whole resource-hours: netted into an hour the file does not otherwise
    charge, it would overwrite the original charge with the correction alone."""
    charged = hourly[_KEY].assign(_charged=True)
    marked = corrections.merge(charged, on=_KEY, how="left")
    complete = marked.groupby("_line")["_charged"].agg(lambda s: bool(s.notna().all()))
    for line, ok in zip(complete.index.tolist(), complete.tolist(), strict=True):
        exact, spread = state.correction_lines[int(line)]
        if ok:
            state.file_gpu_cost += exact
            state.spread += spread
            state.kept += not spread
        else:
            state.skipped["orphan_correction"] += 1
            state.skip_gpu("orphan_correction", 1, exact)
    netted = corrections[corrections["_line"].map(complete)]
    return _aggregate(pd.concat([hourly, netted], ignore_index=True)) if len(netted) else hourly


@dataclass(frozen=True)
class FocusData:
    """A FOCUS file read and validated: hourly GPU rows (``cost_micros``) and the report."""

    rows: pd.DataFrame
    report: ImportReport


def read_focus(
    path: Path | str,
    *,
    tag_keys: TagKeys = DEFAULT_TAG_KEYS,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: ProgressFactory | None = None,
    now: dt.datetime | None = None,
    max_hourly_cost_usd: Decimal = DEFAULT_MAX_HOURLY_COST_USD,
) -> FocusData:
    """Read, validate and aggregate a FOCUS export, a chunk of rows at a time. Raises
    ImportInputError at the first unusable value. ``now`` (default: the clock) decides which
    charges start in the future."""
    path = Path(path)
    now = now or clock.utc_now()
    state = _FocusState()
    parquet = False
    for frame, parquet in chunks(path, focus_columns(path), chunk_rows, progress):
        _process_chunk(frame, path, parquet, tag_keys, now, state)

    hourly = _aggregate(pd.concat(state.hourly, ignore_index=True)) if state.hourly else _empty_rows()
    if state.corrections:
        hourly = _net_corrections(hourly, pd.concat(state.corrections, ignore_index=True), state)
    check_hourly_totals(hourly, path, parquet, max_hourly_cost_usd, MAX_HOURLY_COST_SETTING)
    hourly = hourly.drop(columns=_CHECKED).sort_values(_KEY, ignore_index=True)
    hourly["pricing_category"] = pricing_names(hourly.pop(_PRICING))
    hourly["cost_micros"] = hourly["cost_micros"].astype(np.int64)
    hourly["gpu_count"] = hourly["gpu_count"].astype(np.int64)
    for column in ("resource_id", "provider", "region", "gpu_type", "model_name", "team"):
        hourly[column] = hourly[column].astype(object).where(hourly[column].notna(), None)
    hours = hourly["usage_hour"]
    report = ImportReport(
        path=path,
        rows=state.rows,
        kept=state.kept,
        spread=state.spread,
        skipped={k: state.skipped[k] for k in SKIP_REASONS if state.skipped[k]},
        cost_columns={k: state.cost_columns[k] for k in COST_COLUMNS if state.cost_columns[k]},
        gpu_skipped={
            k: (state.gpu_skipped_rows[k], state.gpu_skipped_cost[k])
            for k in SKIP_REASONS
            if state.gpu_skipped_rows[k]
        },
        file_gpu_cost_usd=state.file_gpu_cost,
        imported_cost_usd=micros_to_dollars(exact_sum(hourly["cost_micros"].to_numpy())),
        resource_hours=len(hourly),
        resources=hourly["resource_id"].nunique(),
        first_hour=hours.min() if len(hourly) else None,
        last_hour=hours.max() if len(hourly) else None,
        negative_hours=int((hourly["cost_micros"] < 0).sum()),
    )
    return FocusData(rows=hourly, report=report)
