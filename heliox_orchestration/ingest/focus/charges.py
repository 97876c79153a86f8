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

from heliox_orchestration.db.gpu_catalog import GpuMatch, normalize_provider, recognize_gpu
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
HOUR = pd.Timedelta(hours=1)

REQUIRED_COLUMNS = ("ChargePeriodStart", "ChargePeriodEnd", "ChargeCategory", "ResourceId")
COST_COLUMNS = ("EffectiveCost", "BilledCost")  # preferred first
PROVIDER_COLUMNS = ("ServiceProviderName", "ProviderName")  # FOCUS 1.2 name first
OPTIONAL_COLUMNS = ("ChargeClass", "RegionId", "Tags", "BillingCurrency", "PricingCategory")
# Searched, in this order, for an instance type name; every x_ column goes first.
RECOGNITION_COLUMNS = ("SkuMeter", "SkuPriceDetails", "ResourceType", "SkuId", "ChargeDescription")

CHARGE_CATEGORIES = {c.lower(): c for c in ("Usage", "Purchase", "Tax", "Credit", "Adjustment")}
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


@dataclass(frozen=True)
class Charges:
    """The validated values of a chunk of FOCUS rows, one per row."""

    start: pd.Series
    end: pd.Series
    category: np.ndarray  # canonical ChargeCategory
    correction: np.ndarray  # ChargeClass is Correction
    cost_text: pd.Series  # the cost as written, from cost_column
    cost_column: np.ndarray  # "EffectiveCost" or "BilledCost"
    provider: pd.Series  # normalized


def validate_charges(frame: pd.DataFrame, errors: Errors) -> Charges:
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
    return Charges(
        start=start,
        end=end,
        category=category.to_numpy(dtype=object),
        correction=correction,
        cost_text=cost_text,
        cost_column=np.where(uses_effective, "EffectiveCost", "BilledCost"),
        provider=pd.Series(provider, index=frame.index),
    )


def skip_reasons(charges: Charges, is_gpu: np.ndarray, has_resource: np.ndarray) -> np.ndarray:
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


def recognize(frame: pd.DataFrame, provider: pd.Series) -> tuple[pd.Series, pd.Series]:
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


# --- the GPU charges imported --------------------------------------------------------------------


@dataclass(frozen=True)
class HourlyParts:
    """GPU charges spread over their hours: one row of ``parts`` per charge-hour."""

    parts: pd.DataFrame  # the columns of an hourly row, plus _line, _billed and _gross
    charge: np.ndarray  # the charge (row of the selection) each part comes from
    exact: tuple[Decimal, ...]  # each charge as written
    hours: np.ndarray  # how many hours each charge covers


def spread_gpu_charges(
    sel: pd.DataFrame,
    errors: Errors,
    start: pd.Series,
    end: pd.Series,
    cost_text: pd.Series,
    tag_keys: TagKeys,
    now: dt.datetime,
) -> HourlyParts:
    """Validate what only imported rows need, then spread each charge over its hours. ``sel``
    holds the imported rows with ``_provider``, ``_gpu_type``, ``_gpus`` and ``_billed``."""
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
    pricing = pricing_ranks(sel, errors)
    # Provider and GPU type need no check: an imported row's are the catalog's own short names.
    check_text(errors, sel["ResourceId"], "ResourceId", 255)
    region = sel["RegionId"].to_numpy(dtype=object) if "RegionId" in sel else np.full(len(sel), None)
    check_text(errors, region, "RegionId", 64)
    start_hour = start.dt.floor("h")
    hours = ((end.dt.ceil("h") - start_hour) // HOUR).clip(lower=1).to_numpy(dtype=np.int64)
    errors.check(
        hours > MAX_CHARGE_HOURS, "ChargePeriodEnd", lambda _i: "makes a charge period longer than a year"
    )
    models, teams = tag_columns(sel, tag_keys, errors)
    errors.raise_first()

    # check_costs has refused non-finite and oversized costs: the micro-dollars fit int64.
    # Prices repeat (an instance type's hourly rate): each distinct text is converted once.
    codes, texts = pd.factorize(cost_text.to_numpy(dtype=object))
    converted = [to_micros(text) for text in texts.tolist()]
    exact = tuple(converted[c][0] for c in codes.tolist())
    micros = np.array([value for _, value in converted], dtype=np.int64)[codes]
    index, offset, part = spread_evenly(micros, hours)
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
            "_pricing": pricing[index],
            "_line": errors.lines[index].astype(np.int64),
            "_billed": sel["_billed"].to_numpy(dtype=bool)[index],
            "_gross": np.abs(part).astype(float),
        }
    )
    parts["usage_hour"] = parts["usage_hour"].dt.tz_localize("UTC").astype(HOUR_DTYPE)
    return HourlyParts(parts=parts, charge=index, exact=exact, hours=hours)


def pricing_ranks(sel: pd.DataFrame, errors: Errors) -> np.ndarray:
    """Rank (``PRICING_CATEGORIES``, 1-based; 0 = not known) of each row's PricingCategory,
    matched case-insensitively; any other value is refused."""
    if "PricingCategory" not in sel:
        return np.zeros(len(sel), dtype=np.int8)
    raw = sel["PricingCategory"]
    ranks = raw.str.strip().str.lower().map(PRICING_RANKS)
    allowed = ", ".join(PRICING_CATEGORIES)
    errors.check(
        raw.notna() & ranks.isna(),
        "PricingCategory",
        lambda i: f"{raw.iloc[i]!r} is not a FOCUS PricingCategory ({allowed}, or empty)",
    )
    return ranks.fillna(0).to_numpy(dtype=np.int8)


def pricing_names(ranks: Any) -> np.ndarray:
    """Ranks back to the stored spelling (None for 0, not known)."""
    names = np.array([None, *PRICING_CATEGORIES], dtype=object)
    return names[np.asarray(ranks, dtype=np.int64)]


# --- tags ----------------------------------------------------------------------------------------


def tag_columns(sel: pd.DataFrame, keys: TagKeys, errors: Errors) -> tuple[np.ndarray, np.ndarray]:
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
