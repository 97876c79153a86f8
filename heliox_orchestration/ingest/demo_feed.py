"""The live demo: the embedded database's demo fleet keeps reporting usage while Dagster runs.

``extend_demo_fleet`` appends the hours since the newest demo row, up to the last completed
hour, generated as the fleet the embedded database seeds itself would have (``FleetSpec``
defaults and the same window start, so the same GPUs, prices and idle streaks; a fleet seeded
by hand with other ``--gpus`` gets the default fleet's hours); running it again in the same
hour appends nothing. ``plant_runaway_job``
adds, once, a runaway training job in today's last completed hour, so a new user sees the
burn-rate alert on the day they start. Both only ever run on the embedded database
(``automation/demo.py`` checks): a database the user named is never written to.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from zoneinfo import ZoneInfo

import pandas as pd
from sqlalchemy import Engine, delete, func, select

from heliox_orchestration.db.bulk import insert_usage_frame
from heliox_orchestration.db.gpu_prices import GPU_PRICES
from heliox_orchestration.db.schema import gpu_resources, gpu_usage_hourly, gpu_usage_rows
from heliox_orchestration.db.usage_store import keys_of_resources
from heliox_orchestration.ingest.demo_fleet import DEMO_PREFIX, FleetSpec, generate_chunks

HOUR = dt.timedelta(hours=1)
RUNAWAY_PREFIX = f"{DEMO_PREFIX}runaway-"
RUNAWAY_PRICE = next(p for p in GPU_PRICES if (p.provider, p.gpu_type) == ("aws", "H100"))
RUNAWAY_SHARE = Decimal("1.1")  # of the burn-rate threshold, in one hour
MAX_RUNAWAY_GPUS = 20_000


@dataclass(frozen=True)
class FeedReport:
    rows: int
    first_hour: dt.datetime | None  # the hours appended, None when nothing was due
    last_hour: dt.datetime | None


def _demo_hours(engine: Engine) -> tuple[dt.datetime | None, dt.datetime | None]:
    fleet = gpu_usage_hourly.c.resource_id.startswith(
        DEMO_PREFIX
    ) & ~gpu_usage_hourly.c.resource_id.startswith(RUNAWAY_PREFIX)
    hour = gpu_usage_hourly.c.usage_hour
    with engine.connect() as conn:
        first, last = conn.execute(select(func.min(hour), func.max(hour)).where(fleet)).one()
    return first, last


def extend_demo_fleet(engine: Engine, timezone: str, now: dt.datetime) -> FeedReport:
    """Append the demo fleet's hours after its newest row through the last completed hour."""
    first, last = _demo_hours(engine)
    current_hour = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    if first is None or last is None or last + HOUR >= current_hour:
        return FeedReport(0, None, None)
    tz = ZoneInfo(timezone)
    window_start = first.astimezone(tz).date()
    today = now.astimezone(tz).date()
    spec = FleetSpec(days=(today - window_start).days + 1, end_date=today, timezone=timezone)
    rows = 0
    with engine.begin() as conn:
        r = gpu_resources.c
        fleet = keys_of_resources(
            r.resource_id.startswith(DEMO_PREFIX), ~r.resource_id.startswith(RUNAWAY_PREFIX)
        )
        new = (gpu_usage_rows.c.usage_hour > last) & gpu_usage_rows.c.resource_key.in_(fleet)
        conn.execute(delete(gpu_usage_rows).where(new))
        for frame in generate_chunks(spec, now):
            due = frame[pd.to_datetime(frame["usage_hour"], utc=True) > pd.Timestamp(last)]
            if len(due):
                insert_usage_frame(conn, due)
                rows += len(due)
    return FeedReport(rows, last + HOUR, current_hour - HOUR)


def plant_runaway_job(engine: Engine, timezone: str, threshold_usd: Decimal, now: dt.datetime) -> int:
    """Once per database: H100s at on-demand price in today's last completed hour, costing
    ``RUNAWAY_SHARE`` of the threshold, so today crosses it. Nothing when today has no completed
    hour yet (the first hour after local midnight) or the threshold needs too many GPUs."""
    hour = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0) - HOUR
    tz = ZoneInfo(timezone)
    if hour.astimezone(tz).date() != now.astimezone(tz).date():
        return 0
    with engine.connect() as conn:
        planted = conn.execute(
            select(func.count()).where(gpu_usage_hourly.c.resource_id.startswith(RUNAWAY_PREFIX))
        ).scalar_one()
    if planted:
        return 0
    price = RUNAWAY_PRICE.usd_per_gpu_hour
    gpus = int((threshold_usd * RUNAWAY_SHARE / price).to_integral_value(ROUND_CEILING))
    if gpus > MAX_RUNAWAY_GPUS:
        return 0
    frame = pd.DataFrame(
        {
            "usage_hour": [hour] * gpus,
            "provider": RUNAWAY_PRICE.provider,
            "region": RUNAWAY_PRICE.regions[0],
            "resource_id": [f"{RUNAWAY_PREFIX}h100-{i:05d}" for i in range(gpus)],
            "gpu_type": RUNAWAY_PRICE.gpu_type,
            "gpu_count": 1,
            "model_name": "Llama 3 fine-tuning (runaway sweep)",
            "team": "research",
            "cost_micros": int(price * 1_000_000),
            "gpu_utilization_pct": 97.0,
        }
    )
    with engine.begin() as conn:
        insert_usage_frame(conn, frame)
    return gpus
