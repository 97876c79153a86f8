"""Small FOCUS export files for the landing-folder tests: AWS p5 instance hours (8 x H100)."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import os
from collections.abc import Iterable
from pathlib import Path

HEADER = [
    "BilledCost",
    "BillingCurrency",
    "ChargeCategory",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "EffectiveCost",
    "ProviderName",
    "RegionId",
    "ResourceId",
    "ResourceType",
    "Tags",
    "x_UsageType",
]


def _iso(instant: dt.datetime) -> str:
    return instant.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def p5_hours(resource_id: str, start: dt.datetime, hours: int, cost: str) -> list[dict[str, str]]:
    """``hours`` hourly p5.48xlarge charges of ``cost`` each, from ``start``."""
    rows = []
    for h in range(hours):
        hour = start + dt.timedelta(hours=h)
        rows.append(
            {
                "BilledCost": cost,
                "BillingCurrency": "USD",
                "ChargeCategory": "Usage",
                "ChargePeriodEnd": _iso(hour + dt.timedelta(hours=1)),
                "ChargePeriodStart": _iso(hour),
                "EffectiveCost": cost,
                "ProviderName": "AWS",
                "RegionId": "us-east-1",
                "ResourceId": resource_id,
                "ResourceType": "instance",
                "Tags": '{"model": "llama-70b-serve", "team": "llm-serving"}',
                "x_UsageType": "USE1-BoxUsage:p5.48xlarge",
            }
        )
    return rows


def focus_text(rows: Iterable[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, HEADER, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_export(path: Path, rows: Iterable[dict[str, str]], *, age_seconds: float = 60.0) -> Path:
    """The rows as a FOCUS CSV (gzip when the name ends in .gz), written through a temporary name
    and renamed, as an upload tool does; its modification time ``age_seconds`` in the past (older
    than the landing folder's settle time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = focus_text(rows).encode()
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    temporary = path.with_name(path.name + ".part")
    temporary.write_bytes(data)
    temporary.replace(path)
    set_age(path, age_seconds)
    return path


def set_age(path: Path, age_seconds: float) -> None:
    stamp = dt.datetime.now(dt.UTC).timestamp() - age_seconds
    os.utime(path, (stamp, stamp))
