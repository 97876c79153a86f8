"""FOCUS charge rules: which rows of an export are GPU usage, what each costs, and how a charge
longer than an hour is spread over its hours (the package docstring says why).

Every value the import uses is checked on every row (``validate_charges``, then
``spread_gpu_charges`` for the rows imported); a bad one raises ``ImportInputError`` with the
file, line and column before anything is written.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from heliox_orchestration.db.gpu_catalog import GpuMatch, normalize_provider, recognize_gpu
from heliox_orchestration.ingest.focus.coded import Coded
from heliox_orchestration.ingest.focus.files import column_picker
from heliox_orchestration.ingest.focus.utilization import HOUR_DTYPE
from heliox_orchestration.ingest.focus.validation import (
    Errors,
    ImportInputError,
    check_costs,
    check_not_future,
    check_text,
    check_times,
    parse_times,
    to_micros,
)

STARTS_IN_THE_FUTURE = (
    "starts in the future: usage cannot be billed before it happens; check the export's time zone"
)
MAX_CHARGE_HOURS = 366 * 24

REQUIRED_COLUMNS = ("ChargePeriodStart", "ChargePeriodEnd", "ChargeCategory", "ResourceId")
COST_COLUMNS = ("EffectiveCost", "BilledCost")  # preferred first
PROVIDER_COLUMNS = ("ServiceProviderName", "ProviderName")  # FOCUS 1.2 name first
OPTIONAL_COLUMNS = ("ChargeClass", "RegionId", "Tags", "BillingCurrency", "PricingCategory")
# Searched, in this order, for an instance type name; every x_ column goes first.
RECOGNITION_COLUMNS = ("SkuMeter", "SkuPriceDetails", "ResourceType", "SkuId", "ChargeDescription")

CATEGORY_NAMES = ("Usage", "Purchase", "Tax", "Credit", "Adjustment")
CATEGORY_CODES = {c.lower(): code for code, c in enumerate(CATEGORY_NAMES)}
# FOCUS PricingCategory in the order a resource-hour's charges decide it: the highest wins, so an
# hour any part of which is Committed is Committed (stopping the GPU would not save the committed
# part). 0 is "not known" (empty), which never outranks a stated category.
PRICING_CATEGORIES = ("Other", "Standard", "Dynamic", "Committed")
PRICING_RANKS = {name.lower(): rank for rank, name in enumerate(PRICING_CATEGORIES, start=1)}

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
SKIP_KEYS = ("", *SKIP_REASONS)  # skip_reasons' codes: 0 = imported


@dataclass(frozen=True)
class TagKeys:
    """Keys of the FOCUS ``Tags`` object that name the workload and the team."""

    model: str = "model"
    team: str = "team"


DEFAULT_TAG_KEYS = TagKeys()


def focus_columns(path: Path) -> Callable[[list[str]], dict[str, int]]:
    """The columns to read from a FOCUS header; refuses a file that is not a FOCUS export."""

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


# --- every row ---------------------------------------------------------------------------------

Columns = dict[str, Coded]  # a chunk of FOCUS rows: its chosen columns, by canonical name


@dataclass(frozen=True)
class Charges:
    """The validated values of a chunk of FOCUS rows, one per row."""

    start: np.ndarray  # datetime64, naive UTC
    end: np.ndarray
    start_hour: np.ndarray  # int64 microseconds: start's hour
    end_hour: np.ndarray  # int64 microseconds: end rounded up to the hour
    category: np.ndarray  # int8: index into CATEGORY_NAMES
    correction: np.ndarray  # ChargeClass is Correction
    cost_text: Coded  # the cost as written, from EffectiveCost or (where ``billed``) BilledCost
    billed: np.ndarray  # the cost is the row's BilledCost
    provider: Coded  # normalized


def _times(raw: Coded, bound: str) -> tuple[np.ndarray, np.ndarray]:
    """Each row's date-time (datetime64, naive UTC, NaT where missing or unparseable) and its
    hour, ``bound`` "floor" or "ceil" (int64 microseconds). Parsed a distinct value at a time, so
    pandas infers the same resolution as for the whole column."""
    parsed = parse_times(pd.Series(raw.values, dtype=object))
    hour = getattr(parsed.dt, bound)("h").astype(HOUR_DTYPE).dt.tz_localize(None).to_numpy()
    times = parsed.dt.tz_localize(None).to_numpy()
    missing = np.datetime64("NaT", "us")
    return (
        np.append(times, missing.astype(times.dtype))[raw.codes],
        np.append(hour, missing).astype(np.int64)[raw.codes],
    )


def validate_charges(columns: Columns, errors: Errors) -> Charges:
    """Check every value the import uses on every row; raise at the first bad one."""
    rows = len(errors.lines)

    def value(column: str) -> Callable[[int], str]:
        return lambda i: f"{columns[column].row(i)!r}"

    start, start_hour = _times(columns["ChargePeriodStart"], "floor")
    end, end_hour = _times(columns["ChargePeriodEnd"], "ceil")
    for column, parsed in (("ChargePeriodStart", start), ("ChargePeriodEnd", end)):
        check_times(errors, columns[column], parsed, column)
    errors.check(end < start, "ChargePeriodEnd", lambda _i: "is before ChargePeriodStart")

    category = columns["ChargeCategory"].map(
        lambda v: CATEGORY_CODES.get(v.strip().lower(), -1), missing=-1, dtype=np.int8
    )
    allowed = ", ".join(CATEGORY_NAMES)
    errors.check(
        category < 0,
        "ChargeCategory",
        lambda i: f"{value('ChargeCategory')(i)} is not a FOCUS ChargeCategory ({allowed})",
    )
    correction = np.zeros(rows, dtype=bool)
    if "ChargeClass" in columns:
        charge_class = columns["ChargeClass"]
        correction = charge_class.map(lambda v: v.strip().lower() == "correction", False, bool)
        errors.check(
            charge_class.notna() & ~correction,
            "ChargeClass",
            lambda i: f"{value('ChargeClass')(i)} is not a FOCUS ChargeClass (Correction, or empty)",
        )

    # EffectiveCost where the row has one, BilledCost otherwise.
    effective, billed = columns.get("EffectiveCost"), columns.get("BilledCost")
    if effective is None:
        assert billed is not None  # the header check requires one of the two
        cost_text, uses_effective = billed, np.zeros(rows, dtype=bool)
    else:
        uses_effective = effective.notna()
        cost_text = effective if billed is None else effective.coalesce(billed)
    both = " and so is BilledCost" if effective is not None and billed is not None else ""
    errors.check(
        cost_text.isna(),
        "EffectiveCost" if effective is not None else "BilledCost",
        lambda _i: "is empty" + both,
    )
    numbers = pd.to_numeric(pd.Series(cost_text.values, dtype=object), errors="coerce").to_numpy(dtype=float)
    cost = np.append(numbers, np.nan)[cost_text.codes]
    check_costs(errors, cost_text, cost, {"EffectiveCost": uses_effective, "BilledCost": ~uses_effective})

    present = [c for c in PROVIDER_COLUMNS if c in columns]
    provider_text = columns[present[0]]
    for column in present[1:]:
        provider_text = provider_text.coalesce(columns[column])
    errors.check(provider_text.isna(), present[0], lambda _i: "is empty")
    errors.raise_first()

    return Charges(
        start=start,
        end=end,
        start_hour=start_hour,
        end_hour=end_hour,
        category=category,
        correction=correction,
        cost_text=cost_text,
        billed=~uses_effective,
        provider=Coded(provider_text.codes, [normalize_provider(n) for n in provider_text.values]),
    )


def skip_reasons(charges: Charges, is_gpu: np.ndarray, has_resource: np.ndarray) -> np.ndarray:
    """Per row, the index into SKIP_KEYS of why it is skipped; 0 for the GPU usage imported."""
    category = charges.category
    conditions = [category == CATEGORY_NAMES.index(c) for c in ("Purchase", "Credit", "Tax", "Adjustment")]
    return np.select(
        [*conditions, ~is_gpu, ~has_resource],
        [SKIP_KEYS.index(k) for k in ("purchase", "credit", "tax", "adjustment", "not_gpu", "no_resource")],
        default=0,
    ).astype(np.int8)


def recognize(columns: Columns, provider: Coded) -> tuple[np.ndarray, np.ndarray]:
    """GPU type (None where no catalogued GPU instance is named) and count of each row. Each
    distinct combination of provider and searched texts is recognized once."""
    names = [c for c in columns if c.lower().startswith("x_")]
    names += [c for c in RECOGNITION_COLUMNS if c in columns]
    searched = [columns[c] for c in names]
    coded = [provider, *searched]
    keys = np.stack([c.codes for c in coded], axis=1)
    sizes = [len(c.values) + 1 for c in coded]  # + 1: missing
    if float(np.prod(sizes, dtype=float)) < 2**62:  # one integer per combination: a 1-d unique
        combined = np.zeros(len(keys), dtype=np.int64)
        for column, size in enumerate(sizes):
            combined = combined * size + keys[:, column] + 1
        _, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
        combos = keys[first]
    else:
        combos, inverse = np.unique(keys, axis=0, return_inverse=True)
    matches: list[GpuMatch | None] = []
    for combo in combos.tolist():
        texts = (c.values[k] if k >= 0 else "" for c, k in zip(searched, combo[1:], strict=True))
        text = "".join(" | " + t for t in texts)
        matches.append(recognize_gpu(provider.values[combo[0]], text))
    inverse = inverse.reshape(-1)
    gpu_type = np.array([m.gpu_type if m else None for m in matches] or [None], dtype=object)[inverse]
    gpu_count = np.array([m.gpu_count if m else 0 for m in matches] or [0], dtype=np.int64)[inverse]
    return gpu_type, gpu_count


# --- the GPU charges imported --------------------------------------------------------------------


@dataclass(frozen=True)
class HourlyParts:
    """GPU charges spread over their hours: one row of ``parts`` per charge-hour."""

    parts: pa.Table  # the columns of an hourly row, plus _pricing, _line, _billed and _gross
    charge: np.ndarray  # the charge (row of the selection) each part comes from
    hours: np.ndarray  # how many hours each charge covers
    codes: np.ndarray  # each charge's cost: an index into exact_values
    exact_values: list[Decimal]  # the distinct costs as written

    def exact(self, charge: int) -> Decimal:
        """The charge's cost as written."""
        return self.exact_values[int(self.codes[charge])]

    def exact_sum(self, charges: np.ndarray) -> Decimal:
        """The exact sum of the costs of ``charges`` (a boolean mask), a distinct cost at a time."""
        counts = np.bincount(self.codes[charges], minlength=len(self.exact_values)).tolist()
        return sum((value * n for value, n in zip(self.exact_values, counts, strict=True) if n), Decimal(0))


@dataclass(frozen=True)
class Selected:
    """The imported rows of a chunk: their columns and what validation made of them."""

    columns: Columns
    start: np.ndarray
    start_hour: np.ndarray
    end_hour: np.ndarray
    cost_text: Coded
    provider: Coded
    gpu_type: np.ndarray
    gpu_count: np.ndarray
    billed: np.ndarray  # the cost is the row's BilledCost


_HOUR_US = 3_600_000_000


def spread_gpu_charges(sel: Selected, errors: Errors, tag_keys: TagKeys, now: dt.datetime) -> HourlyParts:
    """Validate what only imported rows need, then spread each charge over its hours."""
    columns, rows = sel.columns, len(errors.lines)
    if "BillingCurrency" in columns:
        currency = columns["BillingCurrency"]
        not_usd = currency.map(lambda v: v.strip().upper() != "USD", False, bool)
        errors.check(
            not_usd,
            "BillingCurrency",
            lambda i: (
                f"{currency.row(i)!r}: Heliox stores US dollars; export in USD or convert the file first"
            ),
        )
    check_not_future(
        errors, columns["ChargePeriodStart"], sel.start, "ChargePeriodStart", now, STARTS_IN_THE_FUTURE
    )
    pricing = pricing_ranks(columns, errors, rows)
    # Provider and GPU type need no check: an imported row's are the catalog's own short names.
    resource = columns["ResourceId"]
    check_text(errors, resource, "ResourceId", 255)
    region = columns.get("RegionId", Coded.missing(rows))
    check_text(errors, region, "RegionId", 64)
    start_hour = sel.start_hour
    hours = np.maximum((sel.end_hour - start_hour) // _HOUR_US, 1)
    errors.check(
        hours > MAX_CHARGE_HOURS, "ChargePeriodEnd", lambda _i: "makes a charge period longer than a year"
    )
    models, teams = tag_columns(columns.get("Tags", Coded.missing(rows)), tag_keys, errors)
    errors.raise_first()

    # check_costs has refused non-finite and oversized costs: the micro-dollars fit int64.
    # Prices repeat (an instance type's hourly rate): each distinct text is converted once.
    converted = [to_micros(text) for text in sel.cost_text.values]
    codes = sel.cost_text.codes
    micros = np.array([value for _, value in converted] or [0], dtype=np.int64)[codes]
    index, offset, part = spread_evenly(micros, hours)
    usage_hour = start_hour[index] + offset * _HOUR_US
    parts = pa.table(
        {
            "resource_id": resource.arrow(index),
            "usage_hour": pa.array(usage_hour, type=pa.timestamp("us", tz="UTC")),
            "provider": sel.provider.arrow(index),
            "region": region.arrow(index),
            "gpu_type": pa.array(sel.gpu_type[index], type=pa.string()),
            "gpu_count": pa.array(sel.gpu_count[index], type=pa.int64()),
            "model_name": models.arrow(index),
            "team": teams.arrow(index),
            "cost_micros": pa.array(part, type=pa.int64()),
            "_pricing": pa.array(pricing[index], type=pa.int8()),
            "_line": pa.array(errors.lines[index].astype(np.int64)),
            "_billed": pa.array(sel.billed[index], type=pa.bool_()),
            "_gross": pa.array(np.abs(part).astype(float)),
        }
    )
    return HourlyParts(
        parts=parts, charge=index, hours=hours, codes=codes, exact_values=[e for e, _ in converted]
    )


def pricing_ranks(columns: Columns, errors: Errors, rows: int) -> np.ndarray:
    """Rank (``PRICING_CATEGORIES``, 1-based; 0 = not known) of each row's PricingCategory,
    matched case-insensitively; any other value is refused."""
    if "PricingCategory" not in columns:
        return np.zeros(rows, dtype=np.int8)
    raw = columns["PricingCategory"]
    ranks = raw.map(lambda v: PRICING_RANKS.get(v.strip().lower(), -1), 0, np.int8)
    allowed = ", ".join(PRICING_CATEGORIES)
    errors.check(
        ranks < 0,
        "PricingCategory",
        lambda i: f"{raw.row(i)!r} is not a FOCUS PricingCategory ({allowed}, or empty)",
    )
    return np.maximum(ranks, 0)


def pricing_names(ranks: Any) -> np.ndarray:
    """Ranks back to the stored spelling (None for 0, not known)."""
    names = np.array([None, *PRICING_CATEGORIES], dtype=object)
    return names[np.asarray(ranks, dtype=np.int64)]


# --- tags ----------------------------------------------------------------------------------------


def tag_columns(tags: Coded, keys: TagKeys, errors: Errors) -> tuple[Coded, Coded]:
    """Model and team of each row from its Tags (parsed once per distinct value)."""
    parsed = [_parse_tags(str(text), keys) for text in tags.values]
    failed = np.array([isinstance(p, str) for p in parsed] + [False])[tags.codes]
    errors.check(failed, "Tags", lambda i: str(parsed[tags.codes[i]]))
    pairs = [p if isinstance(p, tuple) else (None, None) for p in parsed]
    # Tag values are free text (AWS allows 256 characters): a longer one is cut to the column
    # rather than refusing the whole export for a label. What the database cannot store is refused.
    models = _recoded(tags.codes, [model[:255] if model else None for model, _ in pairs])
    teams = _recoded(tags.codes, [team[:128] if team else None for _, team in pairs])
    check_text(errors, models, "Tags", 255, subject=f"the {keys.model!r} tag")
    check_text(errors, teams, "Tags", 128, subject=f"the {keys.team!r} tag")
    return models, teams


def _recoded(codes: np.ndarray, values: list[str | None]) -> Coded:
    """Rows coded by ``codes`` into ``values``, where a value may be None (missing)."""
    missing = np.array([v is None for v in values] + [True])
    return Coded(np.where(missing[codes], -1, codes), [v if v is not None else "" for v in values])


def _parse_tags(raw: str, keys: TagKeys) -> tuple[str | None, str | None] | str:
    """(model, team), or an error message."""
    try:
        tags = json.loads(raw)
    except json.JSONDecodeError as exc:
        return f"is not a JSON object ({exc.msg} at character {exc.pos + 1})"
    if not isinstance(tags, dict):
        return f"is JSON {type(tags).__name__}, not an object of tag keys and values"
    return _tag_lookup(tags, keys.model), _tag_lookup(tags, keys.team)


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
