"""A realistic, deterministic demo GPU fleet.

Every GPU is one resource with one row per hour (``--gpus 10000 --days 90`` is 21.6 million rows,
less the few GPUs that were provisioned late). What makes it realistic:

* prices from ``gpu_prices`` (AWS published on-demand rates; GCP/Azure list prices);
* named workloads per GPU type, with teams, and a few unattributed GPUs;
* diurnal utilization for inference, flat high utilization for training, nightly batch jobs;
* 40% of the fleet on spot capacity whose price moves day to day, with "capacity crunch" days
  at the on-demand price: those are the days whose spend crosses the $10,000 burn threshold at
  the default fleet size;
* GPUs that sit idle: one for the whole 14-day window, one provisioned 7 days ago and never
  used, one for 4 days and one for 2 days (high / high / medium / low idle findings);
* committed capacity (FOCUS ``PricingCategory`` ``Committed``: reservations, savings plans) on a
  fifth of the on-demand GPUs, spot as ``Dynamic``, the rest ``Standard``; among the committed
  ones a reserved H100 idle for 5 days (a medium finding that says "reallocate", $0 savings);
* an 8-GPU node whose work never needs more than 2 of them (a rightsizing finding);
* a team whose spend doubles on the latest two local days (its busy GPUs scale out to two
  GPUs each): a spend anomaly the fixed burn-rate threshold does not see.

The same ``seed`` gives the same rows. Costs are generated as integer micro-dollars, so the
reported total is exact.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from sqlalchemy import Engine, delete

from heliox_orchestration.db.bulk import insert_usage_frame
from heliox_orchestration.db.gpu_prices import GPU_PRICES
from heliox_orchestration.db.schema import gpu_resources, gpu_usage_rows
from heliox_orchestration.db.usage_partitions import ensure_usage_partitions
from heliox_orchestration.db.usage_store import keys_of_resources
from heliox_orchestration.money import micros_to_dollars
from heliox_orchestration.settings import DEMO_WINDOW_DAYS

DEMO_PREFIX = "demo-"
DEFAULT_GPUS = 85
DEFAULT_DAYS = DEMO_WINDOW_DAYS
# The command line's bounds: wide enough for any benchmark (10,000 GPUs x 90 days is 21.6 million
# rows), narrow enough that a typo cannot fill the disk.
MAX_DEMO_GPUS = 100_000
MAX_DEMO_DAYS = 3650
MAX_DEMO_ROWS = 100_000_000
MAX_DEMO_SEED = 2**32 - 1
EARLIEST_DEMO_DATE = dt.date(2000, 1, 1)
CHUNK_ROWS = 500_000

# (workload, team, kind) per GPU type; kind picks the utilization profile.
WORKLOADS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "H100": (
        ("GPT-4-class LLM serving", "llm-platform", "inference"),
        ("Llama 3 fine-tuning", "research", "training"),
    ),
    "A100": (
        ("Llama 3 fine-tuning", "research", "training"),
        ("Stable Diffusion XL", "imaging", "inference"),
        ("GPT-4-class LLM serving", "llm-platform", "inference"),
    ),
    "A100-80GB": (("Llama 3 fine-tuning", "research", "training"),),
    "L40S": (("Stable Diffusion XL", "imaging", "inference"),),
    "A10G": (
        ("Stable Diffusion XL", "imaging", "inference"),
        ("Whisper", "speech", "inference"),
    ),
    "L4": (("Whisper", "speech", "inference"), ("BERT", "search", "batch")),
    "T4": (("BERT", "search", "batch"), ("Whisper", "speech", "inference")),
}
# Share of each price row in the fleet (same order as GPU_PRICES).
FLEET_WEIGHTS = (14, 10, 4, 8, 10, 6, 6, 7, 6, 6, 7, 8, 8)
UNATTRIBUTED_SHARE = 0.06
SPOT_SHARE = 0.40
# Idle GPUs planted at fixed fleet positions: (index, provider, gpu_type, idle hours, provisioned
# at the start of the idle streak?).
IDLE_PLAN = (
    (0, "aws", "H100", 15 * 24, False),  # idle through the whole 14-day window
    (1, "gcp", "A100", 7 * 24 + 5, True),  # new 7 days ago, never used
    (2, "azure", "T4", 4 * 24 + 2, True),  # medium
    (3, "aws", "L4", 2 * 24 + 3, True),  # low
)
# The spend-anomaly demo: this team's busy GPUs run two GPUs each on the latest local days.
SURGE_TEAM = "research"
SURGE_DAYS = 2

# A committed (reserved) GPU bought 5 days and 4 hours ago and never used: reallocate it.
COMMITTED_IDLE = (4, "aws", "H100", 5 * 24 + 4)
# An 8-GPU node at about 9% mean utilization, 25% at its busiest: 8 x 25% = 2 GPUs would do.
RIGHTSIZE_NODE = (5, "aws", "A100", 8)
COMMITTED, STANDARD, DYNAMIC = "Committed", "Standard", "Dynamic"


@dataclass(frozen=True)
class FleetSpec:
    gpus: int = DEFAULT_GPUS
    days: int = DEFAULT_DAYS
    end_date: dt.date | None = None  # last local day; default: today
    seed: int = 42
    timezone: str = "UTC"

    def hour_range(self, now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
        """UTC [start, end) of the generated hours: local midnights, never past the current hour."""
        tz = ZoneInfo(self.timezone)
        now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        end_date = self.end_date or now.astimezone(tz).date()
        first = end_date - dt.timedelta(days=self.days - 1)
        start = dt.datetime.combine(first, dt.time(), tz).astimezone(dt.UTC)
        end = dt.datetime.combine(end_date + dt.timedelta(days=1), dt.time(), tz).astimezone(dt.UTC)
        # Only completed hours: the current hour is still being billed.
        current_hour = now.replace(minute=0, second=0, microsecond=0)
        return start, max(start, min(end, current_hour))


@dataclass(frozen=True)
class SeedReport:
    rows: int
    total_cost_usd: Decimal
    replaced_rows: int
    start: dt.datetime
    end: dt.datetime
    gpus: int


def plan_fleet(spec: FleetSpec) -> pd.DataFrame:
    """One row per GPU: identity, price, workload, utilization profile, idle plan."""
    rng = np.random.default_rng(spec.seed)
    weights = np.array(FLEET_WEIGHTS, dtype=float)
    price_idx = rng.choice(len(GPU_PRICES), size=spec.gpus, p=weights / weights.sum())
    rows = []
    for i, p_idx in enumerate(price_idx):
        price = GPU_PRICES[int(p_idx)]
        idle_hours, late, committed, gpus, kind = 0, False, False, 1, None
        plans = [*IDLE_PLAN, (*COMMITTED_IDLE, True)]
        for idx, provider, gpu_type, hours, provisioned_late in plans:
            if i == idx:
                price = _price(provider, gpu_type)
                idle_hours, late, committed = hours, provisioned_late, idx == COMMITTED_IDLE[0]
        if i == RIGHTSIZE_NODE[0]:
            price, gpus, kind = _price(*RIGHTSIZE_NODE[1:3]), RIGHTSIZE_NODE[3], "oversized"
        workload, team, profile = WORKLOADS[price.gpu_type][rng.integers(len(WORKLOADS[price.gpu_type]))]
        unattributed = rng.random() < UNATTRIBUTED_SHARE and idle_hours == 0
        rows.append(
            {
                "resource_id": f"{DEMO_PREFIX}{price.provider}-{price.gpu_type.lower()}-{i:05d}",
                "provider": price.provider,
                "region": price.regions[rng.integers(len(price.regions))],
                "gpu_type": price.gpu_type,
                "price_micros": int(price.usd_per_gpu_hour * 1_000_000),
                "model_name": None if unattributed else workload,
                "team": None if unattributed else team,
                "kind": kind or profile,
                "spot": (spot := idle_hours == 0 and rng.random() < SPOT_SHARE and gpus == 1),
                # No random draw: the rest of the fleet stays what the same seed always gave.
                "committed": committed or (not spot and idle_hours == 0 and i % 5 == 2),
                "gpu_count": gpus,
                "base_util": rng.uniform(40, 75),
                "idle_hours": idle_hours,
                "provisioned_late": late,
            }
        )
    return pd.DataFrame(rows)


def _price(provider: str, gpu_type: str) -> Any:
    return next(p for p in GPU_PRICES if (p.provider, p.gpu_type) == (provider, gpu_type))


def _spot_factors(rng: np.random.Generator, n_days: int) -> np.ndarray:
    """Daily spot price as a share of on-demand: 0.35-0.6, with capacity-crunch days at 1.0."""
    factors = rng.uniform(0.35, 0.6, size=n_days)
    crunch = rng.random(n_days) < 0.10
    factors[crunch] = 1.0
    return factors


def _surge_gpus(block: pd.DataFrame, local_dates: np.ndarray) -> np.ndarray:
    """GPUs per row (GPU x hour): 2 for ``SURGE_TEAM``'s busy GPUs on the latest ``SURGE_DAYS``
    local days of the range, else 1."""
    # Single-GPU resources only: the rightsizing node keeps its shape.
    surging = (
        (block["team"] == SURGE_TEAM) & (block["idle_hours"] == 0) & (block["gpu_count"] == 1)
    ).to_numpy()[:, None]
    latest = (local_dates >= local_dates[-1] - np.timedelta64(SURGE_DAYS - 1, "D"))[None, :]
    return np.where(surging & latest, 2, 1)


def generate_chunks(
    spec: FleetSpec, now: dt.datetime | None = None, chunk_rows: int = CHUNK_ROWS
) -> Iterator[pd.DataFrame]:
    """Yield frames of hourly rows, a block of GPUs at a time (bounded memory at any fleet size).

    ``cost_micros`` is the exact cost in micro-dollars; ``usage_hour`` is UTC.
    """
    fleet = plan_fleet(spec)
    start, end = spec.hour_range(now)
    hours = pd.date_range(start, end, freq="h", inclusive="left", tz="UTC")
    n_hours = len(hours)
    if n_hours == 0:
        return
    local_hour = hours.tz_convert(spec.timezone).hour.to_numpy()
    local_dates = (
        hours.tz_convert(spec.timezone).tz_localize(None).normalize().to_numpy().astype("datetime64[D]")
    )
    day_index = ((hours - hours[0]) // pd.Timedelta(days=1)).to_numpy()
    factors = _spot_factors(np.random.default_rng(spec.seed + 1), int(day_index[-1]) + 1)
    hour_factor = factors[day_index]
    diurnal = np.sin((local_hour - 8) / 24 * 2 * np.pi)  # peaks mid-afternoon local time
    nightly = ((local_hour >= 22) | (local_hour < 6)).astype(float)

    per_chunk = max(1, chunk_rows // n_hours)
    for first in range(0, len(fleet), per_chunk):
        block = fleet.iloc[first : first + per_chunk]
        rng = np.random.default_rng([spec.seed, first])
        g = len(block)
        base = block["base_util"].to_numpy()[:, None]
        kind = block["kind"].to_numpy()[:, None]
        noise = rng.normal(0, 7, size=(g, n_hours))
        util = np.where(
            kind == "training",
            90 + noise / 2,
            np.where(kind == "batch", 15 + nightly * 70 + noise, base + 25 * diurnal + noise),
        )
        # The oversized node: light work by day, never idle, at most 25% of its 8 GPUs.
        util = np.where(kind == "oversized", np.clip(9 + 12 * diurnal + noise / 4, 5.5, 25), util)
        # Idle streaks at the end of the range; "late" GPUs have no rows before their streak.
        idle_hours = block["idle_hours"].to_numpy()[:, None]
        position_from_end = n_hours - 1 - np.arange(n_hours)[None, :]
        idle = position_from_end < idle_hours
        util = np.where(idle, rng.uniform(0, 2, size=(g, n_hours)), util)
        util = np.clip(np.round(util, 2), 0, 100)
        exists = ~(block["provisioned_late"].to_numpy()[:, None] & ~idle)

        gpu_count = block["gpu_count"].to_numpy()[:, None]
        price = block["price_micros"].to_numpy()[:, None].astype(float) * gpu_count
        factor = np.where(block["spot"].to_numpy()[:, None], hour_factor[None, :], 1.0)
        surge = _surge_gpus(block, local_dates)
        cost_micros = np.rint(price * factor).astype(np.int64) * surge
        spot, committed = block["spot"].to_numpy(), block["committed"].to_numpy()
        category = np.where(committed, COMMITTED, np.where(spot, DYNAMIC, STANDARD))

        mask = exists.ravel()
        frame = pd.DataFrame(
            {
                "usage_hour": np.tile(hours.to_numpy(), g)[mask],
                "provider": np.repeat(block["provider"].to_numpy(), n_hours)[mask],
                "region": np.repeat(block["region"].to_numpy(), n_hours)[mask],
                "resource_id": np.repeat(block["resource_id"].to_numpy(), n_hours)[mask],
                "gpu_type": np.repeat(block["gpu_type"].to_numpy(), n_hours)[mask],
                "gpu_count": (gpu_count * surge).ravel()[mask],
                "model_name": np.repeat(block["model_name"].to_numpy(), n_hours)[mask],
                "team": np.repeat(block["team"].to_numpy(), n_hours)[mask],
                "cost_micros": np.broadcast_to(cost_micros, (g, n_hours)).ravel()[mask],
                "gpu_utilization_pct": util.ravel()[mask],
                "pricing_category": np.repeat(category, n_hours)[mask],
            }
        )
        yield frame


def seed_demo(
    engine: Engine,
    spec: FleetSpec,
    *,
    now: dt.datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> SeedReport:
    """Replace the demo rows of the spec's hour range with freshly generated ones, in one
    transaction; rows of real (non-demo) resources are never touched."""
    start, end = spec.hour_range(now)
    rows = 0
    total_micros = 0
    with engine.begin() as conn:
        ensure_usage_partitions(conn, start, end - dt.timedelta(hours=1))
        u = gpu_usage_rows.c
        demo = u.resource_key.in_(keys_of_resources(gpu_resources.c.resource_id.startswith(DEMO_PREFIX)))
        in_range = (u.usage_hour >= start) & (u.usage_hour < end) & demo
        replaced = conn.execute(delete(gpu_usage_rows).where(in_range)).rowcount or 0
        for frame in generate_chunks(spec, now):
            insert_usage_frame(conn, frame, progress=progress)  # COPY, a batch at a time
            rows += len(frame)
            total_micros += int(frame["cost_micros"].sum())
    return SeedReport(
        rows=rows,
        total_cost_usd=micros_to_dollars(total_micros),
        replaced_rows=replaced,
        start=start,
        end=end,
        gpus=spec.gpus,
    )


def expected_rows(spec: FleetSpec, now: dt.datetime | None = None) -> int:
    """Upper bound of rows (every GPU every hour), for progress bars."""
    start, end = spec.hour_range(now)
    return spec.gpus * int((end - start) / dt.timedelta(hours=1))
