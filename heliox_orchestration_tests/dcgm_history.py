"""Fifteen days of DCGM exporter history for six GPU hosts, as Prometheus would hold it, and the
hourly utilization the documented rules give for it, computed here independently (plain loops
and exact fractions, not the pandas pipeline under test).

Samples every 60 s, timestamps on the minute. The hosts (resource label -> billing id):

1. ``Hostname=gpu-busy-01`` -> i-...0001: 8 x H100, busy (55-100 %), one 8-GPU pod.
2. ``Hostname=i-0a1b2c3d4e5f60002`` (an EC2 id as hostname, no mapping): 8 x A100-80GB, idle
   (0-2 %), unallocated.
3. ``Hostname=gpu-mixed-01`` -> i-...0003: 8 x L4 scraped by a Kubernetes Prometheus (the
   workload in ``exported_*`` labels; ``pod`` names the exporter itself): GPUs 0-3 busy in
   team-a's pod, 4-7 idle and unallocated; GPU 1 moves to team-b's pod at 10-08 14:40; the whole
   host is not scraped 10-05 10:20-12:50 and 10-07 08:00-08:25.
4. ``hostname=gpu-grow-01`` (newer exporters' lower-case label) -> i-...0004: 7 x T4, an eighth
   from 10-06 09:20.
5. ``Hostname=gpu-mig-01`` -> i-...0005: A100-80GB with only DCGM_FI_PROF_GR_ENGINE_ACTIVE;
   GPUs 0-5 whole, GPUs 6 and 7 split into a busy 3g.40gb and an idle 4g.40gb instance.
6. ``instance=10.0.7.7:9400`` (no hostname label) -> i-...0006: 8 x A100-80GB, idle, replaced
   by 8 x H100, busy, at 10-10 00:00 (new UUIDs and modelName, same host).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

START = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
DAYS = 15
STEP_SECONDS = 60
HOURS = DAYS * 24
GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
ENGINE_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
H100, A100_80, L4, T4 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA L4", "Tesla T4"
ID = "i-0a1b2c3d4e5f6000"
RESOURCE_IDS = {
    "gpu-busy-01": f"{ID}1",
    "gpu-mixed-01": f"{ID}3",
    "gpu-grow-01": f"{ID}4",
    "gpu-mig-01": f"{ID}5",
    "10.0.7.7:9400": f"{ID}6",
}
IDLE_HOST, BUSY_HOST, MIXED, GROW, MIG, SWAP = f"{ID}2", f"{ID}1", f"{ID}3", f"{ID}4", f"{ID}5", f"{ID}6"

MAPPING_YAML = f"""\
selector: 'job="dcgm-exporter"'
engine_active_resources: [gpu-mig-01]
resource_ids:
{chr(10).join(f'  "{k}": {v}' for k, v in RESOURCE_IDS.items())}
scrape_interval_seconds: 60
"""


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 10, day, hour, minute, tzinfo=dt.UTC)


def _s(value: dt.datetime) -> int:
    return int(value.timestamp())


@dataclass
class GpuSeries:
    metric: str
    labels: dict[str, str]
    ts: np.ndarray  # seconds
    values: np.ndarray
    resource_id: str  # what the test expects it to map to
    weight: Fraction = Fraction(1)

    @property
    def gpu(self) -> tuple[str, str]:
        return self.labels["UUID"], self.labels.get("GPU_I_ID", "")


ALL_TS = _s(START) + np.arange(DAYS * 24 * 3600 // STEP_SECONDS, dtype=np.int64) * STEP_SECONDS


def _uuid(host: int, gpu: int, generation: int = 0) -> str:
    return f"GPU-{host:02d}{generation}{gpu:05d}-5e1f-4c2b-9a7d-{host * 1000 + gpu:012x}"


def _labels(host: int, gpu: int, model: str, resource: dict[str, str], **extra: str) -> dict[str, str]:
    labels = {
        "gpu": str(gpu),
        "UUID": _uuid(host, gpu, int(extra.pop("generation", "0"))),
        "device": f"nvidia{gpu}",
        "modelName": model,
        "DCGM_FI_DRIVER_VERSION": "550.127.05",
        **resource,
        "instance": f"10.0.{host}.{10 + host}:9400",
        "job": "dcgm-exporter",
        **extra,
    }
    labels.update({k: v for k, v in resource.items() if k == "instance"})
    return labels


def _mask(start: dt.datetime | None = None, end: dt.datetime | None = None) -> np.ndarray:
    keep = np.ones(len(ALL_TS), dtype=bool)
    if start is not None:
        keep &= np.greater_equal(ALL_TS, _s(start))
    if end is not None:
        keep &= np.less(ALL_TS, _s(end))
    return keep


def build_history() -> list[GpuSeries]:
    rng = np.random.default_rng(20261001)
    out: list[GpuSeries] = []

    def add(
        metric: str, labels: dict[str, str], keep: np.ndarray, lo: int, hi: int, rid: str, **kw: object
    ) -> None:
        values = rng.integers(lo, hi + 1, size=len(ALL_TS)).astype(np.float64)
        if metric == ENGINE_ACTIVE:
            values /= 64  # exact binary fractions: sums stay exact
        out.append(GpuSeries(metric, labels, ALL_TS[keep], values[keep], rid, **kw))  # type: ignore[arg-type]

    everything = _mask()
    busy_pod = {"namespace": "llm-serving", "pod": "llama-70b-serve-6d5f8b7c9d-x2k4p", "container": "vllm"}
    for g in range(8):
        add(
            GPU_UTIL,
            _labels(1, g, H100, {"Hostname": "gpu-busy-01"}, **busy_pod),
            everything,
            55,
            100,
            BUSY_HOST,
        )
    for g in range(8):
        add(GPU_UTIL, _labels(2, g, A100_80, {"Hostname": IDLE_HOST}), everything, 0, 2, IDLE_HOST)

    gaps = _mask(None, at(5, 10, 20)) | _mask(at(5, 12, 50))
    gaps &= _mask(None, at(7, 8)) | _mask(at(7, 8, 25))
    exporter = {
        "namespace": "gpu-operator",
        "pod": "nvidia-dcgm-exporter-x7k2p",
        "container": "nvidia-dcgm-exporter",
    }
    team_a = {
        "exported_namespace": "team-a",
        "exported_pod": "whisper-large-5f7d9c8b6d-q2w4z",
        "exported_container": "asr",
    }
    team_b = {
        "exported_namespace": "team-b",
        "exported_pod": "sdxl-render-7c6b5d4f8g-m9n2p",
        "exported_container": "render",
    }
    mixed = {"Hostname": "gpu-mixed-01"}
    move = at(8, 14, 40)
    for g in range(8):
        if g == 1:
            add(
                GPU_UTIL,
                _labels(3, g, L4, mixed, **exporter, **team_a),
                gaps & _mask(None, move),
                40,
                90,
                MIXED,
            )
            add(GPU_UTIL, _labels(3, g, L4, mixed, **exporter, **team_b), gaps & _mask(move), 40, 90, MIXED)
        elif g < 4:
            add(GPU_UTIL, _labels(3, g, L4, mixed, **exporter, **team_a), gaps, 40, 90, MIXED)
        else:
            add(GPU_UTIL, _labels(3, g, L4, mixed, **exporter), gaps, 0, 3, MIXED)

    for g in range(8):
        keep = _mask(at(6, 9, 20)) if g == 7 else everything
        add(GPU_UTIL, _labels(4, g, T4, {"hostname": "gpu-grow-01"}), keep, 10, 30, GROW)

    eval_pod = {"namespace": "research", "pod": "llm-eval-6c8d9f7b5x-k2m4n", "container": "eval"}
    bert_pod = {"namespace": "research", "pod": "bert-finetune-z9x8w", "container": "train"}
    mig = {"Hostname": "gpu-mig-01"}
    for g in range(6):
        add(ENGINE_ACTIVE, _labels(5, g, A100_80, mig, **eval_pod), everything, 16, 48, MIG)
    for g in (6, 7):
        busy = {"GPU_I_PROFILE": "3g.40gb", "GPU_I_ID": "2"}
        idle = {"GPU_I_PROFILE": "4g.40gb", "GPU_I_ID": "1"}
        add(
            ENGINE_ACTIVE,
            _labels(5, g, A100_80, mig, **busy, **bert_pod),
            everything,
            48,
            64,
            MIG,
            weight=Fraction(3, 7),
        )
        add(ENGINE_ACTIVE, _labels(5, g, A100_80, mig, **idle), everything, 0, 3, MIG, weight=Fraction(4, 7))

    swap, by_ip = at(10, 0), {"instance": "10.0.7.7:9400"}
    for g in range(8):
        add(GPU_UTIL, _labels(6, g, A100_80, by_ip), _mask(None, swap), 0, 2, SWAP)
        add(GPU_UTIL, _labels(6, g, H100, by_ip, generation="1"), _mask(swap), 70, 99, SWAP)
    return out


def write_openmetrics(history: list[GpuSeries], path: Path) -> int:
    """The history as OpenMetrics text for ``promtool tsdb create-blocks-from openmetrics``:
    one family's samples together, each series in time order, seconds, ``# EOF``. Returns the
    number of samples."""
    samples = 0
    with path.open("w") as out:
        for metric in (GPU_UTIL, ENGINE_ACTIVE):
            out.write(f"# TYPE {metric} gauge\n")
            for s in (s for s in history if s.metric == metric):
                labels = ",".join(f'{k}="{v}"' for k, v in s.labels.items())
                prefix = f"{metric}{{{labels}}} "
                values = [repr(v) if metric == ENGINE_ACTIVE else str(int(v)) for v in s.values.tolist()]
                out.writelines(f"{prefix}{v} {t}\n" for v, t in zip(values, s.ts.tolist(), strict=True))
                samples += len(values)
        out.write("# EOF\n")
    return samples


@dataclass(frozen=True)
class Expected:
    utilization: Fraction
    gpus: int
    coverage: Fraction


def expected_hours(
    history: list[GpuSeries], min_coverage: Fraction = Fraction(1, 2)
) -> dict[tuple[str, dt.datetime], Expected]:
    """(resource id, UTC hour) -> the documented rule applied to the raw samples."""
    per_gpu: dict[tuple[str, tuple[str, str], int], list[Fraction]] = defaultdict(
        lambda: [Fraction(0), Fraction(0)]
    )
    weights: dict[tuple[str, tuple[str, str]], Fraction] = {}
    for s in history:
        scale = 100 if s.metric == ENGINE_ACTIVE else 1
        hours = (s.ts - _s(START)) // 3600
        counts = np.bincount(hours, minlength=HOURS).tolist()
        sums = np.bincount(hours, weights=s.values, minlength=HOURS).tolist()  # exact: see add()
        for hour, (count, total) in enumerate(zip(counts, sums, strict=True)):
            if count:
                acc = per_gpu[(s.resource_id, s.gpu, hour)]
                acc[0] += count
                acc[1] += Fraction(total) * scale
        weights[(s.resource_id, s.gpu)] = s.weight
    by_resource: dict[tuple[str, int], list[tuple[Fraction, Fraction, Fraction, str]]] = defaultdict(list)
    for (rid, gpu, hour), (count, total) in per_gpu.items():
        coverage = min(Fraction(1), count / 60)
        if coverage >= min_coverage:
            by_resource[(rid, hour)].append((weights[(rid, gpu)], coverage, total / count, gpu[0]))
    out = {}
    for (rid, hour), gpus in by_resource.items():
        w = sum(weight * cov for weight, cov, _, _ in gpus)
        util = sum(weight * cov * mean for weight, cov, mean, _ in gpus) / w
        out[(rid, START + dt.timedelta(hours=hour))] = Expected(
            util, len({uuid for *_, uuid in gpus}), w / sum(weight for weight, *_ in gpus)
        )
    return out
