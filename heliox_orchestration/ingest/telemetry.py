"""Hourly GPU utilization per resource, from DCGM exporter series in Prometheus.

What one stored value means (resource R, UTC hour h):

* **Samples of one hour.** For every GPU series, Prometheus returns the sum and the count of its
  raw samples with a timestamp in [h, h+1h): ``sum_over_time`` / ``count_over_time`` over a
  range ending 1 ms before h+1h, the range length chosen for the server's range semantics
  (Prometheus 2.x includes the range's start, 3.x does not), at step 1h. No sample, no value:
  a scrape gap is a gap, never a zero.
* **One GPU.** Series of the same GPU (same resource, same ``UUID``, else ``gpu`` index; a MIG
  instance adds ``GPU_I_ID``) are pooled, so a pod rescheduled mid-hour or a label change does
  not make two GPUs. Its mean is sum / count (``DCGM_FI_DEV_GPU_UTIL`` in percent;
  ``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` is a 0-1 ratio and is multiplied by 100). Its *coverage*
  is count / (3600 / ``scrape_interval_seconds``), at most 1: the share of the hour it was
  scraped. A GPU below ``min_coverage`` (default 0.5) does not count for that hour at all;
  a GPU whose mean is not a number in [0, 100] neither (counted in the report).
* **One resource.** The mean of its GPUs counted that hour, each weighted by its coverage
  (and a MIG instance by its compute slices / ``mig_slices_per_gpu``). A GPU that appears or
  disappears mid-window counts only in the hours it was scraped enough. An unallocated GPU
  (no pod) counts like any other. ``gpus`` is the number of physical GPUs counted; ``coverage``
  the weighted mean coverage of those GPUs.
* **Attributes** (GPU type, workload, team, the telemetry label) of a resource-hour are those
  carrying the most samples that hour; a report about a resource takes its latest hour's.

Fetching is bounded twice: ``hours_per_query`` hours per request (never more than Prometheus'
11,000 points per series), and ``resources_per_query`` resource label values per request
(the label values are listed first, then queried in batches with an exact regex). Memory
holds one chunk of hours at a time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from heliox_orchestration.ingest.dcgm_mapping import (
    ENGINE_ACTIVE,
    GPU_UTIL,
    METRIC_SCALE,
    DcgmMapping,
    describe_series,
)
from heliox_orchestration.ingest.prometheus import PrometheusClient, Series

HOUR_MS = 3_600_000
AGGREGATE_LABEL = "heliox_aggregate"
HOUR_COLUMNS = [
    "resource_id",
    "usage_hour",
    "utilization_pct",
    "gpus",
    "coverage",
    "metric",
    "resource_label",
    "gpu_type",
    "model_name",
    "team",
]
# (requests done, requests in all): the command line draws a bar, Dagster logs it.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class QueryBatch:
    """Series of up to ``resources_per_query`` resources: those whose first non-empty resource
    label is ``label`` (the labels before it empty) with one of ``values``."""

    metric: str
    label: str
    empty_labels: tuple[str, ...]
    values: tuple[str, ...]

    def selector(self, mapping: DcgmMapping) -> str:
        matchers = [mapping.selector] if mapping.selector else []
        matchers += [f'{name}=""' for name in self.empty_labels]
        matchers.append(f"{self.label}=~{promql_string('|'.join(map(regex_escape, self.values)))}")
        return f"{self.metric}{{{', '.join(matchers)}}}"


def regex_escape(value: str) -> str:
    """``value`` as an RE2 regex matching exactly itself."""
    return "".join(f"\\{c}" if c in r"\.+*?()|[]{}^$" else c for c in value)


def promql_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def hourly_query(selector: str, range_includes_start: bool) -> str:
    """Sum and count of the raw samples in [t - 1h + 1 ms, t], tagged by ``heliox_aggregate``."""
    window = "3599999ms" if range_includes_start else "1h"
    return " or ".join(
        f'label_replace({fn}_over_time({selector}[{window}]), "{AGGREGATE_LABEL}", "{fn}", "", "")'
        for fn in ("sum", "count")
    )


def hour_chunks(start: dt.datetime, end: dt.datetime, hours: int) -> list[tuple[dt.datetime, dt.datetime]]:
    """[start, end) cut into consecutive pieces of at most ``hours`` hours."""
    step = dt.timedelta(hours=hours)
    return [(s, min(s + step, end)) for s in _range(start, end, step)]


def _range(start: dt.datetime, end: dt.datetime, step: dt.timedelta) -> Iterator[dt.datetime]:
    while start < end:
        yield start
        start += step


def check_hour_range(start: dt.datetime, end: dt.datetime) -> None:
    for name, value in (("start", start), ("end", end)):
        if (
            value.tzinfo is None
            or value.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0) != value
        ):
            raise ValueError(f"{name} must be a timezone-aware whole UTC hour, got {value!r}")
    if end <= start:
        raise ValueError(f"end {end} is not after start {start}")


def _ms(value: dt.datetime) -> int:
    return int(value.timestamp()) * 1000


def plan_batches(
    client: PrometheusClient, mapping: DcgmMapping, start: dt.datetime, end: dt.datetime
) -> list[QueryBatch]:
    """The resource label values with series in [start, end), in batches per metric and label.

    Every series falls in exactly one batch: the one of its first non-empty resource label."""
    metrics = [ENGINE_ACTIVE] if mapping.metric == ENGINE_ACTIVE else [GPU_UTIL]
    if mapping.metric == GPU_UTIL and mapping.engine_active_resources:
        metrics.append(ENGINE_ACTIVE)
    batches: list[QueryBatch] = []
    for metric in metrics:
        for i, label in enumerate(mapping.resource_labels):
            empty = mapping.resource_labels[:i]
            matchers = ([mapping.selector] if mapping.selector else []) + [f'{n}=""' for n in empty]
            match = f"{metric}{{{', '.join(matchers)}}}" if matchers else metric
            values = [
                v
                for v in client.label_values(label, match, _ms(start), _ms(end))
                if mapping.metric_for(v) == metric
            ]
            size = mapping.resources_per_query
            batches += [
                QueryBatch(metric, label, empty, tuple(values[j : j + size]))
                for j in range(0, len(values), size)
            ]
    return batches


@dataclass
class FetchStats:
    """Counts of one fetch (added up over its chunks; series counted once however many chunks
    they appear in)."""

    requests: int = 0
    series: set[int] = field(default_factory=set)  # hashes of label sets
    gpu_hours: int = 0  # GPU (or MIG instance) hours counted
    gpu_hours_low_coverage: int = 0
    gpu_hours_invalid: int = 0
    max_samples_per_gpu_hour: int = 0
    resource_hours: int = 0

    def add(self, other: FetchStats) -> None:
        self.series |= other.series
        self.max_samples_per_gpu_hour = max(self.max_samples_per_gpu_hour, other.max_samples_per_gpu_hour)
        for name in (
            "requests",
            "gpu_hours",
            "gpu_hours_low_coverage",
            "gpu_hours_invalid",
            "resource_hours",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class UtilizationChunk:
    """The resource-hours of [start, end): ``hours`` has ``HOUR_COLUMNS``."""

    start: dt.datetime
    end: dt.datetime
    hours: pd.DataFrame
    stats: FetchStats = field(default_factory=FetchStats)


def fetch_utilization(
    client: PrometheusClient,
    mapping: DcgmMapping,
    start: dt.datetime,
    end: dt.datetime,
    progress: Progress | None = None,
) -> Iterator[UtilizationChunk]:
    """Hourly utilization per resource for the UTC hours [start, end), one chunk of
    ``hours_per_query`` hours at a time (see the module docstring for the semantics)."""
    check_hour_range(start, end)
    batches = plan_batches(client, mapping, start, end)
    includes_start = client.range_includes_start() if batches else False
    chunks = hour_chunks(start, end, mapping.hours_per_query)
    total, done = len(chunks) * len(batches), 0
    if progress:
        progress(0, total)
    for chunk_start, chunk_end in chunks:
        results: list[tuple[str, list[Series]]] = []
        for batch in batches:
            query = hourly_query(batch.selector(mapping), includes_start)
            first_eval = _ms(chunk_start) + HOUR_MS - 1
            last_eval = _ms(chunk_end) - 1
            results.append((batch.metric, client.query_range(query, first_eval, last_eval, 3600)))
            done += 1
            if progress:
                progress(done, total)
        hours, stats = aggregate_hours(results, mapping)
        stats.requests = len(batches)
        yield UtilizationChunk(chunk_start, chunk_end, hours, stats)


def _series_points(
    results: Sequence[tuple[str, Sequence[Series]]],
) -> Iterator[tuple[str, dict[str, str], Any, Any, Any]]:
    """(metric, labels, hour starts in ms, sums, counts) per series, sums and counts aligned."""

    for metric, series_list in results:
        parts: dict[tuple[tuple[str, str], ...], dict[str, Series]] = {}
        for s in series_list:
            labels = dict(s.labels)
            aggregate = labels.pop(AGGREGATE_LABEL, "")
            parts.setdefault(tuple(sorted(labels.items())), {})[aggregate] = s
        for key, by_aggregate in parts.items():
            if "sum" not in by_aggregate or "count" not in by_aggregate:
                continue
            arrays = []
            for aggregate in ("sum", "count"):
                values = by_aggregate[aggregate].values
                ts = np.array([round(float(t) * 1000) for t, _ in values], dtype=np.int64)
                arrays.append((ts, np.array([float(v) for _, v in values], dtype=np.float64)))
            (ts_s, sums), (ts_c, counts) = arrays
            common, i, j = np.intersect1d(ts_s, ts_c, assume_unique=True, return_indices=True)
            yield metric, dict(key), common + 1 - HOUR_MS, sums[i], counts[j]


def aggregate_hours(
    results: Sequence[tuple[str, Sequence[Series]]], mapping: DcgmMapping
) -> tuple[pd.DataFrame, FetchStats]:
    """Resource-hours from the sum/count series of ``hourly_query`` (one entry per request:
    its metric and its series). Pure: the rules of the module docstring, vectorised."""

    stats = FetchStats()
    parts: list[tuple[int, Any, Any, Any]] = []
    infos: list[dict[str, Any]] = []
    for metric, labels, hours, sums, counts in _series_points(results):
        key = hash((metric, *sorted(labels.items())))
        stats.series.add(key)
        info = describe_series(labels, mapping)
        if info is None:  # cannot happen: every batch selects a non-empty resource label
            continue
        parts.append((len(infos), hours, sums, counts))
        infos.append({**vars(info), "metric": metric, "scale": METRIC_SCALE[metric]})
    if not parts:
        return pd.DataFrame(columns=HOUR_COLUMNS), stats
    points = pd.DataFrame(
        {
            "code": np.concatenate([np.full(len(p[1]), p[0]) for p in parts]),
            "hour_ms": np.concatenate([p[1] for p in parts]),
            "sum": np.concatenate([p[2] for p in parts]),
            "count": np.concatenate([p[3] for p in parts]),
        }
    ).join(pd.DataFrame(infos), on="code")
    points["sum"] *= points["scale"]
    points = points[points["count"] > 0]

    # One GPU (or MIG instance): its series pooled.
    keys = ["resource_id", "instance", "hour_ms"]
    gpu = points.groupby(keys, sort=False).agg(
        sum=("sum", "sum"), count=("count", "sum"), weight=("weight", "max"), gpu=("gpu", "first")
    )
    gpu["mean"] = gpu["sum"] / gpu["count"]
    gpu["coverage"] = (gpu["count"] / mapping.expected_samples_per_hour).clip(upper=1.0)
    valid = np.isfinite(gpu["mean"]) & (gpu["mean"] >= 0) & (gpu["mean"] <= 100 + 1e-9)
    enough = gpu["coverage"] >= mapping.min_coverage - 1e-12
    stats.gpu_hours_invalid = int((~valid).sum())
    stats.gpu_hours_low_coverage = int((valid & ~enough).sum())
    stats.max_samples_per_gpu_hour = int(gpu["count"].max())
    gpu = gpu[valid & enough].reset_index()
    stats.gpu_hours = len(gpu)
    if gpu.empty:
        return pd.DataFrame(columns=HOUR_COLUMNS), stats

    # One resource: the coverage-weighted mean of its GPUs.
    gpu["w"] = gpu["weight"] * gpu["coverage"]
    gpu["w_mean"] = gpu["w"] * gpu["mean"].clip(upper=100)
    hours = gpu.groupby(["resource_id", "hour_ms"], sort=True).agg(
        w=("w", "sum"), w_mean=("w_mean", "sum"), weight=("weight", "sum"), gpus=("gpu", "nunique")
    )
    hours["utilization_pct"] = (hours["w_mean"] / hours["w"]).round(2).clip(0, 100)
    hours["coverage"] = (hours["w"] / hours["weight"]).round(4).clip(0, 1)

    # Attributes: the value carrying the most samples among the GPUs counted.
    counted = points.merge(gpu[keys], on=keys)
    counted["samples"] = counted["count"] * counted["weight"]
    for column in ("metric", "resource_label", "gpu_type", "model_name", "team"):
        hours[column] = _heaviest(counted, column)
    hours = hours.reset_index()
    hours["usage_hour"] = pd.to_datetime(hours["hour_ms"], unit="ms", utc=True)
    hours["gpus"] = hours["gpus"].astype("int64")
    stats.resource_hours = len(hours)
    return hours[HOUR_COLUMNS], stats


def _heaviest(points: pd.DataFrame, column: str) -> pd.Series:
    """Per (resource_id, hour_ms): the non-null value of ``column`` with the most samples
    (ties: the smallest value); missing where every value is null."""
    keys = ["resource_id", "hour_ms"]
    weights = (
        points.dropna(subset=[column]).groupby([*keys, column], sort=False)["samples"].sum().reset_index()
    )
    weights = weights.sort_values([*keys, "samples", column], ascending=[True, True, False, True])
    best = weights.drop_duplicates(keys).set_index(keys)[column]
    return best.astype(object)
