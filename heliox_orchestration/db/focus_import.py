"""Import FOCUS cost exports and GPU utilization samples into ``gpu_usage_hourly``.

FOCUS (the FinOps Open Cost and Usage Specification, 1.0-1.2) is the billing export format of
AWS, Google Cloud, Azure and Oracle. What is imported, and why (docs/importing.md has more):

* Only ``ChargeCategory`` **Usage** rows of a catalogued GPU instance (``gpu_catalog``) with a
  ``ResourceId`` become rows. Usage includes refunds (negative Usage rows): they net against the
  charge of the same resource-hour, as FOCUS intends.
* **Purchase** rows are skipped: a commitment bought upfront reaches the hours it covers through
  their ``EffectiveCost`` (FOCUS amortizes it and sets the purchase's own EffectiveCost to 0), so
  counting it again would double it. **Tax** and **Adjustment** rows are skipped: they are not
  the cost of running a resource for an hour. **Credit** rows are skipped: FOCUS defines credits
  as granted after the fact and burned down by later usage, not as a lower price of an hour, and
  an idle GPU does not stop wasting money because a credit paid for it. Every skipped GPU charge
  is totalled in the report.
* ``ChargeClass=Correction`` rows correct a previously invoiced billing period, so they usually
  arrive in a later month's file than the hours they correct. A re-import replaces whole
  resource-hours, so netting a correction into an hour the file does not otherwise charge would
  overwrite the original charge with the correction alone. Corrections are therefore netted in
  only when the file also holds regular charges for every hour they cover, and skipped (and
  reported) otherwise.
* Cost is ``EffectiveCost`` (amortized, after discounts), or ``BilledCost`` where EffectiveCost
  is missing; the report counts which. Each charge is rounded once to the micro-dollar (the
  column's precision), then charge periods longer than an hour are spread evenly over their
  hours in integer micro-dollars, so the parts sum exactly to the charge.
* Charges of the same resource-hour are summed into one row (the table's primary key).
* Hours that have not started are held in ``gpu_usage_pending`` until they do (``db/pending``):
  the hourly table never holds an hour that has not happened.
* Everything the database would refuse, and implausible charges, are refused with the file, line
  and column before anything is written (``db/focus_validation``). Reading the files is
  ``db/focus_files``; utilization samples are ``db/focus_utilization``.

Re-importing is idempotent: the rows written replace stored rows of the same (resource_id,
usage_hour), in either table, and nothing else. That scope never deletes what a file does not mention (another
account's export, the demo fleet, earlier months), at the price that a GPU charge removed from a
later version of the same export stays stored. The write is one transaction, and it starts only
after both files have been read and validated: a bad file leaves the database untouched.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from heliox_orchestration import clock
from heliox_orchestration.db.focus_files import (
    DEFAULT_CHUNK_ROWS,
    ProgressFactory,
    chunks,
    column_picker,
    parquet_text,
    progress_bar,
)
from heliox_orchestration.db.focus_utilization import (
    HOUR_DTYPE,
    UtilizationReport,
    apply_utilization,
    read_utilization,
)
from heliox_orchestration.db.focus_validation import (
    Errors,
    ImportInputError,
    check_costs,
    check_hourly_totals,
    check_not_future,
    check_text,
    check_times,
    exact_sum,
    parse_times,
    to_micros,
)
from heliox_orchestration.db.gpu_catalog import GpuMatch, normalize_provider, recognize_gpu
from heliox_orchestration.db.pending import release_due_usage, write_imported_hours
from heliox_orchestration.money import micros_to_dollars

__all__ = [
    "ImportInputError",
    "ImportReport",
    "TagKeys",
    "format_report",
    "import_focus",
    "parquet_text",
    "progress_bar",
    "read_focus",
    "read_utilization",
    "spread_evenly",
]

DEFAULT_MAX_HOURLY_COST_USD = Decimal(10_000)
MAX_HOURLY_COST_SETTING = "HELIOX_MAX_HOURLY_COST_USD"
STARTS_IN_THE_FUTURE = (
    "starts in the future: usage cannot be billed before it happens; check the export's time zone"
)
MAX_CHARGE_HOURS = 366 * 24
HOUR = pd.Timedelta(hours=1)

REQUIRED_COLUMNS = ("ChargePeriodStart", "ChargePeriodEnd", "ChargeCategory", "ResourceId")
COST_COLUMNS = ("EffectiveCost", "BilledCost")  # preferred first
PROVIDER_COLUMNS = ("ServiceProviderName", "ProviderName")  # FOCUS 1.2 name first
OPTIONAL_COLUMNS = ("ChargeClass", "RegionId", "Tags", "BillingCurrency")
# Searched, in this order, for an instance type name; every x_ column goes first.
RECOGNITION_COLUMNS = ("SkuMeter", "SkuPriceDetails", "ResourceType", "SkuId", "ChargeDescription")

CHARGE_CATEGORIES = {c.lower(): c for c in ("Usage", "Purchase", "Tax", "Credit", "Adjustment")}

# Why a row was not imported, in report order.
SKIP_REASONS: dict[str, str] = {
    "not_gpu": "not a GPU instance charge",
    "purchase": "ChargeCategory Purchase (its cost reaches the hours through EffectiveCost)",
    "credit": "ChargeCategory Credit (granted after the fact, not an hourly cost)",
    "tax": "ChargeCategory Tax",
    "adjustment": "ChargeCategory Adjustment",
    "no_resource": "GPU usage without a ResourceId",
    "orphan_correction": "Correction to an hour this file does not otherwise charge",
}


@dataclass(frozen=True)
class TagKeys:
    """Keys of the FOCUS ``Tags`` object that name the workload and the team."""

    model: str = "model"
    team: str = "team"


@dataclass(frozen=True)
class ImportReport:
    path: Path
    rows: int  # every data row of the file = kept + spread + sum(skipped)
    kept: int  # GPU charges of one hour (or less)
    spread: int  # GPU charges longer than an hour, spread over their hours
    skipped: dict[str, int]  # SKIP_REASONS key -> rows
    cost_columns: dict[str, int]  # "EffectiveCost" / "BilledCost" -> rows costed from it
    gpu_skipped: dict[str, tuple[int, Decimal]]  # GPU charges not imported: reason -> rows, cost
    file_gpu_cost_usd: Decimal  # exact sum of the imported charges as written in the file
    imported_cost_usd: Decimal  # sum of the hourly rows (each charge rounded to the micro-dollar)
    resource_hours: int
    resources: int
    first_hour: pd.Timestamp | None
    last_hour: pd.Timestamp | None
    negative_hours: int  # resource-hours whose charges net below zero
    pending_hours: int = 0  # resource-hours that had not started: held in gpu_usage_pending
    pending_until: pd.Timestamp | None = None  # the start of the last of them
    replaced_rows: int = 0
    released_rows: int = 0  # hours held by earlier imports that had started: moved to the table
    dry_run: bool = False
    utilization: UtilizationReport | None = None


# --- FOCUS -----------------------------------------------------------------------------------


def _focus_columns(path: Path) -> Callable[[list[str]], dict[str, int]]:
    def wanted(present: dict[str, str]) -> list[str]:
        missing = [c for c in REQUIRED_COLUMNS if c.lower() not in present]
        if not any(c.lower() in present for c in COST_COLUMNS):
            missing.append(" or ".join(COST_COLUMNS))
        if not any(c.lower() in present for c in PROVIDER_COLUMNS):
            missing.append(" or ".join(PROVIDER_COLUMNS))
        if missing:
            raise ImportInputError(
                path,
                f"is not a FOCUS cost export: missing column(s) {', '.join(missing)}",
                line=1,
            )
        extensions = [name for key, name in present.items() if key.startswith("x_")]
        return [
            *REQUIRED_COLUMNS,
            *COST_COLUMNS,
            *PROVIDER_COLUMNS,
            *OPTIONAL_COLUMNS,
            *extensions,
            *RECOGNITION_COLUMNS,
        ]

    return column_picker(path, wanted)


def spread_evenly(micros: np.ndarray, hours: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split each charge of ``micros`` (integer micro-dollars, may be negative) over ``hours[i]``
    hours. Returns (charge index, hour offset, part) per hour; the parts of a charge differ by at
    most one micro-dollar and sum exactly to it (the remainder goes to the first hours)."""
    micros = np.asarray(micros, dtype=np.int64)
    hours = np.asarray(hours, dtype=np.int64)
    index = np.repeat(np.arange(len(hours)), hours)
    offset = np.arange(len(index)) - np.repeat(np.cumsum(hours) - hours, hours)
    base = micros // hours  # floor division keeps 0 <= remainder < hours for negatives too
    remainder = micros - base * hours
    return index, offset, base[index] + (offset < remainder[index])


def _tag_lookup(tags: dict[str, Any], key: str) -> str | None:
    """A tag by exact key, else case-insensitively and ignoring AWS's ``user:`` prefix."""
    if key in tags:
        value = tags[key]
    else:
        wanted = key.strip().lower()
        value = next(
            (v for k, v in tags.items() if str(k).strip().lower().removeprefix("user:") == wanted), None
        )
    text = None if value is None else str(value).strip()
    return text or None


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


_KEY = ["resource_id", "usage_hour"]
_FIRST = ["provider", "region", "gpu_type", "gpu_count", "model_name", "team"]
# Carried per resource-hour for validation only: the first line charging it (and whether that
# line's cost is its BilledCost), and the float sum of its charges' absolute micro-dollars.
_CHECKED = ["_line", "_billed", "_gross"]


def _empty_rows() -> pd.DataFrame:
    empty = pd.DataFrame({c: [] for c in [*_KEY, *_FIRST, "cost_micros", *_CHECKED]}, dtype=object)
    return empty.astype(
        {
            "usage_hour": HOUR_DTYPE,
            "gpu_count": np.int64,
            "cost_micros": np.int64,
            "_line": np.int64,
            "_billed": bool,
            "_gross": float,
        }
    )


def _aggregate(parts: pd.DataFrame) -> pd.DataFrame:
    """One row per resource-hour: costs summed, attributes from the first charge naming them."""
    if parts.empty:
        return parts[[*_KEY, *_FIRST, "cost_micros", *_CHECKED]]
    spec: dict[str, Any] = {c: "first" for c in [*_FIRST, "_line", "_billed"]}
    spec["cost_micros"] = "sum"  # exact while _gross < 2**62 (check_hourly_totals refuses the rest)
    spec["_gross"] = "sum"
    return parts.groupby(_KEY, sort=False, as_index=False).agg(spec)


@dataclass(frozen=True)
class _Charges:
    """The validated values of a chunk of FOCUS rows, one per row."""

    start: pd.Series
    end: pd.Series
    category: np.ndarray  # canonical ChargeCategory
    correction: np.ndarray  # ChargeClass is Correction
    cost_text: pd.Series  # the cost as written, from cost_column
    cost_column: np.ndarray  # "EffectiveCost" or "BilledCost"
    provider: pd.Series  # normalized


def _validate_charges(frame: pd.DataFrame, errors: Errors) -> _Charges:
    """Check every value the import uses on every row; raise at the first bad one."""

    def value(column: str) -> Callable[[int], str]:
        return lambda i: f"{frame[column].iloc[i]!r}"

    start = parse_times(frame["ChargePeriodStart"])
    end = parse_times(frame["ChargePeriodEnd"])
    for column, parsed in (("ChargePeriodStart", start), ("ChargePeriodEnd", end)):
        check_times(errors, frame[column], parsed, column)
    errors.check(end < start, "ChargePeriodEnd", lambda _i: "is before ChargePeriodStart")

    category = frame["ChargeCategory"].str.strip().str.lower().map(CHARGE_CATEGORIES)
    allowed = ", ".join(CHARGE_CATEGORIES.values())
    errors.check(
        category.isna(),
        "ChargeCategory",
        lambda i: f"{value('ChargeCategory')(i)} is not a FOCUS ChargeCategory ({allowed})",
    )
    correction = np.zeros(len(frame), dtype=bool)
    if "ChargeClass" in frame:
        charge_class = frame["ChargeClass"].str.strip().str.lower()
        correction = (charge_class == "correction").fillna(False).to_numpy(dtype=bool)
        errors.check(
            charge_class.notna() & ~correction,
            "ChargeClass",
            lambda i: f"{value('ChargeClass')(i)} is not a FOCUS ChargeClass (Correction, or empty)",
        )

    # EffectiveCost where the row has one, BilledCost otherwise.
    effective: pd.Series | None = frame.get("EffectiveCost")
    billed: pd.Series | None = frame.get("BilledCost")
    if effective is None:
        assert billed is not None  # the header check requires one of the two
        cost_text, uses_effective = billed, np.zeros(len(frame), dtype=bool)
    else:
        uses_effective = effective.notna().to_numpy()
        cost_text = effective if billed is None else effective.where(effective.notna(), billed)
    both = " and so is BilledCost" if effective is not None and billed is not None else ""
    errors.check(
        cost_text.isna(),
        "EffectiveCost" if effective is not None else "BilledCost",
        lambda _i: "is empty" + both,
    )
    cost = pd.to_numeric(cost_text, errors="coerce").to_numpy(dtype=float)
    check_costs(errors, cost_text, cost, {"EffectiveCost": uses_effective, "BilledCost": ~uses_effective})

    present = [c for c in PROVIDER_COLUMNS if c in frame]
    provider_text = frame[present[0]]
    for column in present[1:]:
        provider_text = provider_text.fillna(frame[column])
    errors.check(provider_text.isna(), present[0], lambda _i: "is empty")
    errors.raise_first()

    codes, names = pd.factorize(provider_text)
    provider = np.array([normalize_provider(n) for n in names], dtype=object)[codes]
    return _Charges(
        start=start,
        end=end,
        category=category.to_numpy(dtype=object),
        correction=correction,
        cost_text=cost_text,
        cost_column=np.where(uses_effective, "EffectiveCost", "BilledCost"),
        provider=pd.Series(provider, index=frame.index),
    )


def _skip_reasons(charges: _Charges, is_gpu: np.ndarray, has_resource: np.ndarray) -> np.ndarray:
    """SKIP_REASONS key per row; "" for the GPU usage that is imported."""
    category = charges.category
    return np.select(
        [
            category == "Purchase",
            category == "Credit",
            category == "Tax",
            category == "Adjustment",
            ~is_gpu,
            ~has_resource,
        ],
        ["purchase", "credit", "tax", "adjustment", "not_gpu", "no_resource"],
        default="",
    )


def _process_focus_chunk(
    frame: pd.DataFrame, path: Path, parquet: bool, tag_keys: TagKeys, now: dt.datetime, state: _FocusState
) -> None:
    lines = frame["_line"].to_numpy()
    charges = _validate_charges(frame, Errors(path, lines, parquet))
    gpu_type, gpu_count = _recognize(frame, charges.provider)
    is_gpu = gpu_type.notna().to_numpy()
    reason = _skip_reasons(charges, is_gpu, frame["ResourceId"].notna().to_numpy())

    state.rows += len(frame)
    state.cost_columns.update(charges.cost_column.tolist())
    state.skipped.update(r for r in reason.tolist() if r)
    for key in set(reason[is_gpu].tolist()) - {""}:
        rows = np.flatnonzero(is_gpu & (reason == key))
        state.skip_gpu(key, len(rows), sum((Decimal(charges.cost_text.iloc[i]) for i in rows), Decimal(0)))

    take = np.flatnonzero(reason == "")
    if len(take):
        sel = frame.iloc[take].assign(
            _provider=charges.provider.iloc[take],
            _gpu_type=gpu_type.iloc[take],
            _gpus=gpu_count.iloc[take],
            _billed=charges.cost_column[take] == "BilledCost",
        )
        _add_gpu_usage(
            sel,
            Errors(path, lines[take], parquet),
            charges.start.iloc[take],
            charges.end.iloc[take],
            charges.cost_text.iloc[take],
            charges.correction[take],
            tag_keys,
            now,
            state,
        )


def _add_gpu_usage(
    sel: pd.DataFrame,
    errors: Errors,
    start: pd.Series,
    end: pd.Series,
    cost_text: pd.Series,
    correction: np.ndarray,
    tag_keys: TagKeys,
    now: dt.datetime,
    state: _FocusState,
) -> None:
    """Validate what only imported rows need, spread each charge over its hours and add the
    hourly parts to ``state`` (regular charges aggregated, corrections kept aside)."""
    if "BillingCurrency" in sel:
        currency = sel["BillingCurrency"].str.strip().str.upper()
        errors.check(
            currency.notna() & (currency != "USD"),
            "BillingCurrency",
            lambda i: (
                f"{sel['BillingCurrency'].iloc[i]!r}: Heliox stores US dollars; "
                "export in USD or convert the file first"
            ),
        )
    check_not_future(errors, sel["ChargePeriodStart"], start, "ChargePeriodStart", now, STARTS_IN_THE_FUTURE)
    # Provider and GPU type need no check: an imported row's are the catalog's own short names.
    check_text(errors, sel["ResourceId"], "ResourceId", 255)
    region = sel["RegionId"].to_numpy(dtype=object) if "RegionId" in sel else np.full(len(sel), None)
    check_text(errors, region, "RegionId", 64)
    start_hour = start.dt.floor("h")
    hours = ((end.dt.ceil("h") - start_hour) // HOUR).clip(lower=1).to_numpy(dtype=np.int64)
    errors.check(
        hours > MAX_CHARGE_HOURS, "ChargePeriodEnd", lambda _i: "makes a charge period longer than a year"
    )
    models, teams = _tag_columns(sel, tag_keys, errors)
    errors.raise_first()

    # check_costs has refused non-finite and oversized costs: the micro-dollars fit int64.
    exact, micros = zip(*(to_micros(text) for text in cost_text.tolist()), strict=True)
    index, offset, part = spread_evenly(np.array(micros, dtype=np.int64), hours)
    first_hour = start_hour.dt.tz_localize(None).to_numpy()
    parts = pd.DataFrame(
        {
            "resource_id": sel["ResourceId"].to_numpy()[index],
            "usage_hour": first_hour[index] + offset * np.timedelta64(1, "h"),
            "provider": sel["_provider"].to_numpy()[index],
            "region": region[index],
            "gpu_type": sel["_gpu_type"].to_numpy()[index],
            "gpu_count": sel["_gpus"].to_numpy(dtype=np.int64)[index],
            "model_name": models[index],
            "team": teams[index],
            "cost_micros": part,
            "_line": errors.lines[index].astype(np.int64),
            "_billed": sel["_billed"].to_numpy(dtype=bool)[index],
            "_gross": np.abs(part).astype(float),
        }
    )
    parts["usage_hour"] = parts["usage_hour"].dt.tz_localize("UTC").astype(HOUR_DTYPE)

    regular = ~correction
    state.hourly.append(_aggregate(parts[regular[index]]))
    state.file_gpu_cost += sum((exact[i] for i in np.flatnonzero(regular)), Decimal(0))
    state.spread += int((hours[regular] > 1).sum())
    state.kept += int((hours[regular] == 1).sum())
    if correction.any():
        state.corrections.append(parts[correction[index]])
        for i in np.flatnonzero(correction):
            state.correction_lines[int(errors.lines[i])] = (exact[i], bool(hours[i] > 1))
    if len(state.hourly) >= 20:  # bound memory by resource-hours, not by charges
        state.hourly = [_aggregate(pd.concat(state.hourly, ignore_index=True))]


def _tag_columns(sel: pd.DataFrame, keys: TagKeys, errors: Errors) -> tuple[np.ndarray, np.ndarray]:
    """Model and team of each row from its Tags (parsed once per distinct value)."""
    raw: list[str | None] = (
        sel["Tags"].astype(object).where(sel["Tags"].notna(), None).tolist()
        if "Tags" in sel
        else [None] * len(sel)
    )
    parsed: dict[str | None, tuple[str | None, str | None] | str] = {None: (None, None)}
    for text in set(raw) - {None}:
        parsed[text] = _parse_tags(str(text), keys)
    errors.check([isinstance(parsed[t], str) for t in raw], "Tags", lambda i: str(parsed[raw[i]]))
    pairs = [p if isinstance(p, tuple) else (None, None) for p in (parsed[t] for t in raw)]
    # Tag values are free text (AWS allows 256 characters): a longer one is cut to the column
    # rather than refusing the whole export for a label. What the database cannot store is refused.
    models = np.array([model[:255] if model else None for model, _ in pairs], dtype=object)
    teams = np.array([team[:128] if team else None for _, team in pairs], dtype=object)
    check_text(errors, models, "Tags", 255, subject=f"the {keys.model!r} tag")
    check_text(errors, teams, "Tags", 128, subject=f"the {keys.team!r} tag")
    return models, teams


def _parse_tags(raw: str, keys: TagKeys) -> tuple[str | None, str | None] | str:
    """(model, team), or an error message."""
    try:
        tags = json.loads(raw)
    except json.JSONDecodeError as exc:
        return f"is not a JSON object ({exc.msg} at character {exc.pos + 1})"
    if not isinstance(tags, dict):
        return f"is JSON {type(tags).__name__}, not an object of tag keys and values"
    return _tag_lookup(tags, keys.model), _tag_lookup(tags, keys.team)


def _recognize(frame: pd.DataFrame, provider: pd.Series) -> tuple[pd.Series, pd.Series]:
    """GPU type and count of each row (None where no catalogued GPU instance is named)."""
    columns = [c for c in frame.columns if c.lower().startswith("x_")]
    columns += [c for c in RECOGNITION_COLUMNS if c in frame]
    text = pd.Series("", index=frame.index, dtype=object)
    for column in columns:
        text = text + " | " + frame[column].fillna("").astype(str)
    cache: dict[tuple[str, str], GpuMatch | None] = {}  # SKUs repeat: recognize each once

    def match(key: tuple[str, str]) -> GpuMatch | None:
        if key not in cache:
            cache[key] = recognize_gpu(*key)
        return cache[key]

    matches = [match(key) for key in zip(provider.tolist(), text.tolist(), strict=True)]
    return (
        pd.Series([m.gpu_type if m else None for m in matches], index=frame.index, dtype=object),
        pd.Series([m.gpu_count if m else 0 for m in matches], index=frame.index, dtype=np.int64),
    )


@dataclass(frozen=True)
class FocusData:
    """A FOCUS file read and validated: hourly GPU rows (``cost_micros``) and the report."""

    rows: pd.DataFrame
    report: ImportReport


def read_focus(
    path: Path | str,
    *,
    tag_keys: TagKeys = TagKeys(),
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: ProgressFactory | None = None,
    now: dt.datetime | None = None,
    max_hourly_cost_usd: Decimal = DEFAULT_MAX_HOURLY_COST_USD,
) -> FocusData:
    """Read, validate and aggregate a FOCUS export, a chunk of rows at a time. Raises
    ImportInputError at the first unusable value; memory grows with the GPU resource-hours
    found, not with the rows of the file. ``now`` (default: the clock) decides which charges
    start in the future."""
    path = Path(path)
    now = now or clock.utc_now()
    state = _FocusState()
    parquet = False
    for frame, parquet in chunks(path, _focus_columns(path), chunk_rows, progress):
        _process_focus_chunk(frame, path, parquet, tag_keys, now, state)

    hourly = _aggregate(pd.concat(state.hourly, ignore_index=True)) if state.hourly else _empty_rows()
    if state.corrections:
        hourly = _net_corrections(hourly, pd.concat(state.corrections, ignore_index=True), state)
    check_hourly_totals(hourly, path, parquet, max_hourly_cost_usd, MAX_HOURLY_COST_SETTING)
    hourly = hourly.drop(columns=_CHECKED).sort_values(_KEY, ignore_index=True)
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


def _net_corrections(hourly: pd.DataFrame, corrections: pd.DataFrame, state: _FocusState) -> pd.DataFrame:
    """Net in the corrections whose every hour has regular charges in this file; skip the rest."""
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


# --- the import --------------------------------------------------------------------------------


def import_focus(
    database: Engine | Callable[[], Engine] | None,
    path: Path | str,
    *,
    utilization: Path | str | None = None,
    dry_run: bool = False,
    tag_keys: TagKeys = TagKeys(),
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: ProgressFactory | None = None,
    now: dt.datetime | None = None,
    max_hourly_cost_usd: Decimal = DEFAULT_MAX_HOURLY_COST_USD,
) -> ImportReport:
    """Read and validate both files completely, then (unless ``dry_run``) replace the
    resource-hours they hold in one transaction: hours that have started (``usage_hour <=
    now``) in ``gpu_usage_hourly``, the others in ``gpu_usage_pending`` until they start (and,
    in the same transaction, move the held hours of earlier imports that have started).
    ``database`` may be a function that opens it: it is called only once there is something
    valid to write, so a bad file or a dry run never touches (or creates) the database."""
    now = now or clock.utc_now()
    if now.tzinfo is None:
        raise ValueError("import_focus needs a timezone-aware now")
    data = read_focus(
        path,
        tag_keys=tag_keys,
        chunk_rows=chunk_rows,
        progress=progress,
        now=now,
        max_hourly_cost_usd=max_hourly_cost_usd,
    )
    rows = data.rows.assign(gpu_utilization_pct=np.nan)
    util_report = None
    if utilization is not None:
        hourly_util, samples = read_utilization(
            utilization, chunk_rows=chunk_rows, progress=progress, now=now
        )
        rows, util_report = apply_utilization(rows, hourly_util, samples, Path(utilization))
    held = rows["usage_hour"] > pd.Timestamp(now)
    report = replace(
        data.report,
        dry_run=dry_run,
        utilization=util_report,
        pending_hours=int(held.sum()),
        pending_until=rows["usage_hour"][held].max() if held.any() else None,
    )
    if dry_run or not len(rows):
        return report
    if database is None:
        raise ValueError("import_focus needs a database unless dry_run is set")
    engine = database if isinstance(database, Engine) else database()
    with engine.begin() as conn:
        written = write_imported_hours(conn, rows, now)
        released = release_due_usage(conn, now)
    return replace(report, replaced_rows=written.replaced, released_rows=released)


def _dollars(value: Decimal) -> str:
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


def format_report(report: ImportReport) -> list[str]:
    """The report as lines of text; every input row is counted once."""
    used = ", ".join(f"{n:,} from {column}" for column, n in report.cost_columns.items()) or "none"
    lines = [
        f"Read {report.path}: {report.rows:,} rows (cost: {used})",
        f"  imported: {report.kept:,} GPU charges of one hour, "
        f"{report.spread:,} longer charges spread evenly over their hours",
    ]
    for reason, n in report.skipped.items():
        lines.append(f"  skipped:  {n:,} {SKIP_REASONS[reason]}")
    for reason, (n, cost) in report.gpu_skipped.items():
        lines.append(f"  GPU charges not imported: {n:,} x {SKIP_REASONS[reason]}, {_dollars(cost)}")
    if report.resource_hours:
        verb = "Would write" if report.dry_run else "Wrote"
        lines.append(
            f"{verb} {report.resource_hours:,} resource-hours of {report.resources:,} GPU resources, "
            f"{report.first_hour:%Y-%m-%d %H:%M} to {report.last_hour:%Y-%m-%d %H:%M} UTC: "
            f"{_dollars(report.imported_cost_usd)} (the file's GPU charges: "
            f"{_dollars(report.file_gpu_cost_usd)})"
        )
    else:
        lines.append("No GPU usage found: nothing to write.")
    if report.pending_hours:
        lines.append(
            f"  held until their hours start: {report.pending_hours:,} resource-hours up to "
            f"{report.pending_until:%Y-%m-%d %H:%M} UTC (in gpu_usage_pending; each reaches "
            "gpu_usage_hourly, and the burn rate, when its hour starts)"
        )
    if report.negative_hours:
        lines.append(
            f"  note: {report.negative_hours:,} resource-hours net below $0 (refunds or corrections)"
        )
    if report.utilization is not None:
        u = report.utilization
        lines.append(
            f"Utilization from {u.path}: {u.samples:,} samples; {u.matched_hours:,} of "
            f"{report.resource_hours:,} resource-hours have a value, "
            f"{report.resource_hours - u.matched_hours:,} stay unknown (never judged idle); "
            f"{u.unmatched_hours:,} sampled hours have no GPU cost in this file and were ignored"
        )
    if report.dry_run:
        lines.append("Dry run: nothing was written.")
    elif report.replaced_rows:
        lines.append(f"Replaced {report.replaced_rows:,} stored rows of the same resource-hours.")
    if report.released_rows:
        lines.append(
            f"Released {report.released_rows:,} resource-hours held by earlier imports: "
            "their hours have started."
        )
    return lines
