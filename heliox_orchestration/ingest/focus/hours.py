"""A FOCUS export read into resource-hours: chunk by chunk, each charge checked and spread
(``charges``), the parts spooled to disk by resource (``spool``); once the whole file is read,
each partition's parts of a resource-hour are summed into one row, corrections netted in or
skipped, hourly totals checked, and the final rows spooled for the write. Memory follows a chunk
and a partition, not the file."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from heliox_orchestration import clock
from heliox_orchestration.ingest.focus.charges import (
    COST_COLUMNS,
    DEFAULT_TAG_KEYS,
    SKIP_KEYS,
    SKIP_REASONS,
    Columns,
    Selected,
    TagKeys,
    focus_columns,
    pricing_names,
    recognize,
    skip_reasons,
    spread_gpu_charges,
    validate_charges,
)
from heliox_orchestration.ingest.focus.files import DEFAULT_CHUNK_ROWS, ProgressFactory, coded_chunks, located
from heliox_orchestration.ingest.focus.report import ImportReport
from heliox_orchestration.ingest.focus.spool import Spool, partition_count, spool_directory
from heliox_orchestration.ingest.focus.utilization import HOUR_DTYPE
from heliox_orchestration.ingest.focus.validation import (
    Errors,
    ImportInputError,
    exact_sum,
    hourly_total_error,
    implausible_hours,
)
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
_TEXT = ["resource_id", "provider", "region", "gpu_type", "model_name", "team"]
_HOUR_TYPE = pa.timestamp("us", tz="UTC")
# A chunk's hourly parts on disk: regular charges summed per chunk, corrections as they are.
PARTS_SCHEMA = pa.schema(
    [
        *(
            (c, pa.string() if c in _TEXT else _HOUR_TYPE if c == "usage_hour" else pa.int64())
            for c in [*_KEY, *_FIRST]
        ),
        ("cost_micros", pa.int64()),
        (_PRICING, pa.int8()),
        ("_line", pa.int64()),
        ("_billed", pa.bool_()),
        ("_gross", pa.float64()),
        ("_correction", pa.bool_()),
    ]
)
# The final rows: the columns of an hourly row (but utilization), cost in micro-dollars.
ROWS_SCHEMA = pa.schema(
    [
        *(f for f in PARTS_SCHEMA if f.name in {*_KEY, *_FIRST, "cost_micros"}),
        ("pricing_category", pa.string()),
    ]
)


@dataclass
class FocusState:
    rows: int = 0
    kept: int = 0
    spread: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    cost_columns: Counter[str] = field(default_factory=Counter)
    gpu_skipped_rows: Counter[str] = field(default_factory=Counter)
    gpu_skipped_cost: dict[str, Decimal] = field(default_factory=dict)
    file_gpu_cost: Decimal = Decimal(0)
    # line -> (exact cost, spread?) of correction rows, decided once the whole file is read
    correction_lines: dict[int, tuple[Decimal, bool]] = field(default_factory=dict)

    def skip_gpu(self, reason: str, rows: int, cost: Decimal) -> None:
        self.gpu_skipped_rows[reason] += rows
        self.gpu_skipped_cost[reason] = self.gpu_skipped_cost.get(reason, Decimal(0)) + cost


def _aggregate(parts: pd.DataFrame) -> pd.DataFrame:
    """One row per resource-hour: costs summed, attributes from the first charge naming them."""
    if parts.empty:
        return parts[[*_KEY, *_FIRST, "cost_micros", _PRICING, *_CHECKED]]
    spec: dict[str, Any] = {c: "first" for c in [*_FIRST, "_line", "_billed"]}
    spec["cost_micros"] = "sum"  # exact while _gross < 2**62 (check_hourly_totals refuses the rest)
    spec[_PRICING] = "max"
    spec["_gross"] = "sum"
    return parts.groupby(_KEY, sort=False, as_index=False).agg(spec)


def _aggregate_arrow(parts: pa.Table) -> pa.Table:
    """``_aggregate`` in pyarrow: groups in the order of their first row, "first" skipping nulls
    like pandas' (both need one thread for that order)."""
    spec = [
        *((c, "first") for c in [*_FIRST, "_line", "_billed"]),
        ("cost_micros", "sum"),
        (_PRICING, "max"),
        ("_gross", "sum"),
    ]
    summed = parts.group_by(_KEY, use_threads=False).aggregate(spec)
    names = {f"{c}_{how}": c for c, how in spec}
    return summed.rename_columns([names.get(n, n) for n in summed.column_names])


def _process_chunk(
    columns: Columns,
    lines: np.ndarray,
    path: Path,
    parquet: bool,
    tag_keys: TagKeys,
    now: dt.datetime,
    state: FocusState,
) -> pa.Table | None:
    """The chunk's GPU charges, validated and spread over their hours (with ``_correction``)."""
    charges = validate_charges(columns, Errors(path, lines, parquet))
    gpu_type, gpu_count = recognize(columns, charges.provider)
    is_gpu = pd.notna(gpu_type)
    reason = skip_reasons(charges, is_gpu, columns["ResourceId"].notna())

    state.rows += len(lines)
    billed = int(charges.billed.sum())
    state.cost_columns.update({"BilledCost": billed, "EffectiveCost": len(lines) - billed})
    counts = np.bincount(reason, minlength=len(SKIP_KEYS)).tolist()
    state.skipped.update({SKIP_KEYS[code]: n for code, n in enumerate(counts) if code and n})
    for code in np.unique(reason[is_gpu]).tolist():
        if not code:
            continue
        key = SKIP_KEYS[code]
        rows = np.flatnonzero(is_gpu & (reason == code))
        cost = sum((Decimal(charges.cost_text.row(i)) for i in rows.tolist()), Decimal(0))
        state.skip_gpu(key, len(rows), cost)

    take = np.flatnonzero(reason == 0)
    if not len(take):
        return None
    sel = Selected(
        columns={name: column.take(take) for name, column in columns.items()},
        start=charges.start[take],
        start_hour=charges.start_hour[take],
        end_hour=charges.end_hour[take],
        cost_text=charges.cost_text.take(take),
        provider=charges.provider.take(take),
        gpu_type=gpu_type[take],
        gpu_count=gpu_count[take],
        billed=charges.billed[take],
    )
    errors = Errors(path, lines[take], parquet)
    spread = spread_gpu_charges(sel, errors, tag_keys, now)
    correction, hours = charges.correction[take], spread.hours
    regular = ~correction
    correction_part = correction[spread.charge]
    state.file_gpu_cost += spread.exact_sum(regular)
    state.spread += int((hours[regular] > 1).sum())
    state.kept += int((hours[regular] == 1).sum())
    for i in np.flatnonzero(correction).tolist():
        state.correction_lines[int(errors.lines[i])] = (spread.exact(i), bool(hours[i] > 1))
    return spread.parts.append_column("_correction", pa.array(correction_part))


def _net_corrections(hourly: pd.DataFrame, corrections: pd.DataFrame, state: FocusState) -> pd.DataFrame:
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


class FocusData:
    """A FOCUS file read and validated: the report, and its hourly GPU rows (``cost_micros``)
    in a spool on disk, a partition at a time (``frames``) or all at once (``rows``, for small
    files). ``close`` removes the spool."""

    def __init__(
        self,
        report: ImportReport,
        spool: Spool,
        directory: Any,
    ) -> None:
        self.report, self.spool, self._directory = report, spool, directory

    def frames(self) -> Iterator[pd.DataFrame]:
        yield from self.spool

    @property
    def rows(self) -> pd.DataFrame:
        frames = list(self.spool)
        rows = pd.concat(frames, ignore_index=True) if frames else self.spool.read(0)
        return rows.sort_values(_KEY, ignore_index=True)

    def close(self) -> None:
        self._directory.cleanup()


def _finish_partition(parts: pa.Table, state: FocusState) -> tuple[pa.Table | pd.DataFrame, pa.Table]:
    """(resource-hours with the checked columns, the final rows) of one partition."""
    correction = parts.column("_correction").to_numpy()
    parts = parts.drop_columns(["_correction"])
    if correction.any():  # rare: netted on pandas
        frame = Spool.frame(parts)
        hourly = _aggregate(frame[~correction])
        hourly = _net_corrections(hourly, frame[correction], state)
        final = hourly.drop(columns=_CHECKED).sort_values(_KEY, ignore_index=True)
        final["pricing_category"] = pricing_names(final.pop(_PRICING))
        return hourly, pa.Table.from_pandas(
            final[ROWS_SCHEMA.names], schema=ROWS_SCHEMA, preserve_index=False
        )
    # Most exports charge each resource-hour once: then the parts are the resource-hours.
    summed = parts if distinct_hours(parts) else _aggregate_arrow(parts)
    return checked_hours(summed), final_rows(summed.sort_by([(c, "ascending") for c in _KEY]))


def checked_hours(summed: pa.Table) -> pa.Table:
    """Resource-hours with what ``hourly_total_error`` checks."""
    return summed.select([*_KEY, "cost_micros", *_CHECKED])


def final_rows(summed: pa.Table) -> pa.Table:
    """The rows to write (``ROWS_SCHEMA``) of resource-hours summed from their parts."""
    pricing = pa.array(pricing_names(summed.column(_PRICING).to_numpy()), type=pa.string())
    final = summed.select([*_KEY, *_FIRST, "cost_micros"]).append_column("pricing_category", pricing)
    return final.cast(ROWS_SCHEMA)


def total_error(
    hourly: pa.Table | pd.DataFrame, path: Path, parquet: bool, max_hourly_cost_usd: Decimal
) -> tuple[int, pd.Timestamp, ImportInputError] | None:
    if isinstance(hourly, pa.Table):
        micros, gross = (hourly.column(c).to_numpy() for c in ("cost_micros", "_gross"))
        if not implausible_hours(micros, gross, max_hourly_cost_usd).any():
            return None
        hourly = Spool.frame(hourly)
    return hourly_total_error(hourly, path, parquet, max_hourly_cost_usd, MAX_HOURLY_COST_SETTING)


def distinct_hours(parts: pa.Table) -> bool:
    """No two parts of the same resource-hour."""
    resources = pc.dictionary_encode(parts.column("resource_id")).combine_chunks().indices.to_numpy()
    hours = parts.column("usage_hour").cast(pa.int64()).to_numpy()
    span = int(hours.max() - hours.min()) // 3_600_000_000 + 1 if len(hours) else 1
    keys = resources.astype(np.int64) * span + (hours - (hours.min() if len(hours) else 0)) // 3_600_000_000
    return bool(pd.Series(keys).is_unique)  # a hash table, not a sort


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
    charges start in the future, and which hours are held."""
    path = Path(path)
    now = now or clock.utc_now()
    state = FocusState()
    directory = spool_directory()
    try:
        with located(path):
            return _read(path, directory, tag_keys, chunk_rows, progress, now, max_hourly_cost_usd, state)
    except BaseException:
        directory.cleanup()
        raise


def charge_parts(
    path: Path,
    tag_keys: TagKeys,
    chunk_rows: int,
    progress: ProgressFactory | None,
    now: dt.datetime,
    state: FocusState,
) -> Iterator[tuple[pa.Table, bool]]:
    """(parts, is_parquet) of each chunk: its GPU charges validated and spread over their hours
    (``PARTS_SCHEMA``; no rows when the chunk has none). Raises ImportInputError at the first
    unusable value."""
    for columns, lines, parquet in coded_chunks(path, focus_columns(path), chunk_rows, progress):
        parts = _process_chunk(columns, lines, path, parquet, tag_keys, now, state)
        yield (PARTS_SCHEMA.empty_table() if parts is None else parts), parquet


@dataclass
class Totals:
    """What the report says of the rows written, added up a batch of final rows at a time."""

    now: dt.datetime
    micros: int = 0
    resource_hours: int = 0
    resources: int = 0
    negative: int = 0
    held: int = 0
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None
    held_until: pd.Timestamp | None = None

    def add(self, final: pa.Table, resources: int) -> None:
        """``final`` rows (``ROWS_SCHEMA``) of ``resources`` resources not counted before."""
        hours = pd.Series(final.column("usage_hour").to_numpy(), dtype=HOUR_DTYPE)
        cost = final.column("cost_micros").to_numpy()
        self.micros += exact_sum(cost)
        self.resource_hours += final.num_rows
        self.resources += resources
        self.negative += int((cost < 0).sum())
        first, last = hours.min(), hours.max()
        self.first = first if self.first is None else min(self.first, first)
        self.last = last if self.last is None else max(self.last, last)
        pending = hours[hours > pd.Timestamp(self.now)]
        self.held += len(pending)
        if len(pending):
            until = pending.max()
            self.held_until = until if self.held_until is None else max(self.held_until, until)

    def report(self, path: Path, state: FocusState) -> ImportReport:
        return ImportReport(
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
            imported_cost_usd=micros_to_dollars(self.micros),
            resource_hours=self.resource_hours,
            resources=self.resources,
            first_hour=self.first,
            last_hour=self.last,
            negative_hours=self.negative,
            pending_hours=self.held,
            pending_until=self.held_until,
        )


def _read(
    path: Path,
    directory: Any,
    tag_keys: TagKeys,
    chunk_rows: int,
    progress: ProgressFactory | None,
    now: dt.datetime,
    max_hourly_cost_usd: Decimal,
    state: FocusState,
) -> FocusData:
    parquet = False
    parts: Spool | None = None
    for chunk, parquet in charge_parts(path, tag_keys, chunk_rows, progress, now, state):
        if parts is None:
            parts = Spool(Path(directory.name), "parts", PARTS_SCHEMA, partition_count(path, parquet))
        # Parts are summed per resource-hour once the partition is read back (_finish_partition).
        parts.append(chunk)
    parts = parts or Spool(Path(directory.name), "parts", PARTS_SCHEMA, 1)
    parts.finish()
    rows = Spool(Path(directory.name), "rows", ROWS_SCHEMA, parts.partitions)
    errors = []
    totals = Totals(now)
    for k in range(parts.partitions):
        hourly, final = _finish_partition(parts.read_arrow(k), state)
        error = total_error(hourly, path, parquet, max_hourly_cost_usd)
        if error is not None:
            errors.append(error)
        if errors or not final.num_rows:
            continue
        rows.append(final, partition=k)
        # A resource is in one partition.
        totals.add(final, pc.count_distinct(final.column("resource_id")).as_py())
    if errors:
        raise min(errors, key=lambda e: (e[0], e[1]))[2]
    rows.finish()
    return FocusData(totals.report(path, state), rows, directory)
