"""How DCGM exporter series map to Heliox: the YAML file named by ``HELIOX_DCGM_MAPPING``.

Every key is optional; without a file the defaults below apply (docs/importing.md shows a
complete example). Resource identity is the resource label's value, through ``resource_ids``,
and nothing else: pods, namespaces or GPU models changing over time never split a resource or
merge two. ``describe_series`` turns one series' labels into what the aggregation needs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"  # percent, 0-100
ENGINE_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"  # ratio, 0-1: read x 100
METRIC_SCALE = {GPU_UTIL: 1.0, ENGINE_ACTIVE: 100.0}
MAPPING_VAR = "HELIOX_DCGM_MAPPING"

# Kubernetes pod names: <deployment>-<pod-template-hash>-<5 chars> or <job>-<5 chars>, in the
# alphabet Kubernetes generates them from; the default keeps the part before the suffixes.
_K8S = "bcdfghjklmnpqrstvwxz2456789"
DEFAULT_POD_PATTERN = rf"(?P<value>.+?)(?:-[{_K8S}]{{6,10}})?-[{_K8S}]{{5}}"
# With honor_labels off, Prometheus renames the exporter's namespace/pod/container to
# exported_*, and namespace/pod/container then name the exporter's own pod.
WORKLOAD_LABEL_SETS = (
    ("exported_namespace", "exported_pod", "exported_container"),
    ("namespace", "pod", "container"),
)
WORKLOAD_FIELDS = ("namespace", "pod", "container")

# DCGM's modelName -> Heliox GPU type, the names of db/gpu_catalog.py; first match wins.
GPU_TYPE_RULES: tuple[tuple[str, str], ...] = (
    (r"H200", "H200"),
    (r"H100", "H100"),
    (r"A100.*80\s*GB", "A100-80GB"),
    (r"A100", "A100"),
    (r"L40S", "L40S"),
    (r"\bL4\b", "L4"),
    (r"A10G", "A10G"),
    (r"\bT4\b", "T4"),
    (r"V100", "V100"),
)
_COMPILED_GPU_RULES = tuple((re.compile(p, re.IGNORECASE), t) for p, t in GPU_TYPE_RULES)
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_MATCHER = r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*'
_SELECTOR = re.compile(rf"(?:{_MATCHER}(?:,{_MATCHER})*)?,?\s*")
_MIG_SLICES = re.compile(r"(\d+)g\.")


class MappingError(ValueError):
    """The mapping file is unusable; the message names the file, the key and what is allowed."""


@dataclass(frozen=True)
class AttributeRule:
    """Where a workload attribute comes from: ``label`` (``namespace``, ``pod``, ``container``
    of the workload, or any other series label, e.g. an exported pod label) and an optional
    ``pattern`` whose group ``value`` (or first group) is kept when it matches in full."""

    label: str
    pattern: str | None = None

    def read(self, labels: Mapping[str, str], workload: Mapping[str, str] | None) -> str | None:
        if self.label in WORKLOAD_FIELDS:
            raw = workload.get(self.label) if workload else None
        else:
            raw = labels.get(self.label)
        if not raw:
            return None
        if self.pattern:
            m = re.fullmatch(self.pattern, raw)
            if m:
                raw = m.group("value") if "value" in m.re.groupindex else (m.group(1) if m.re.groups else raw)
        return raw or None


@dataclass(frozen=True)
class DcgmMapping:
    metric: str = GPU_UTIL
    engine_active_resources: frozenset[str] = frozenset()
    selector: str = ""
    resource_labels: tuple[str, ...] = ("Hostname", "hostname", "instance")
    resource_ids: Mapping[str, str] = field(default_factory=dict)
    gpu_labels: tuple[str, ...] = ("UUID", "uuid", "gpu_uuid", "gpu")
    gpu_types: Mapping[str, str] = field(default_factory=dict)
    exporter_pod: str = r"(nvidia-)?dcgm-exporter.*"
    model_name: AttributeRule | None = AttributeRule("pod", DEFAULT_POD_PATTERN)
    team: AttributeRule | None = AttributeRule("namespace")
    scrape_interval_seconds: float = 60.0
    min_coverage: float = 0.5
    hours_per_query: int = 24
    resources_per_query: int = 50
    mig_slices_per_gpu: int = 7

    @property
    def expected_samples_per_hour(self) -> float:
        return 3600.0 / self.scrape_interval_seconds

    def metric_for(self, label_value: str) -> str:
        """The metric read for a resource label value (ENGINE_ACTIVE where configured)."""
        if self.metric == ENGINE_ACTIVE:
            return ENGINE_ACTIVE
        listed = self.engine_active_resources
        if label_value in listed or self.resource_id(label_value) in listed:
            return ENGINE_ACTIVE
        return GPU_UTIL

    def resource_id(self, label_value: str) -> str:
        return self.resource_ids.get(label_value, label_value)[:255]

    def gpu_type(self, model_name: str | None) -> str | None:
        """``modelName`` -> GPU type: ``gpu_types`` first, then the built-in rules, else the
        name without its NVIDIA/Tesla prefix."""
        if not model_name:
            return None
        if model_name in self.gpu_types:
            return self.gpu_types[model_name]
        for pattern, gpu_type in _COMPILED_GPU_RULES:
            if pattern.search(model_name):
                return gpu_type
        return re.sub(r"^(NVIDIA|Tesla)\s+", "", model_name.strip())[:32] or None


@dataclass(frozen=True)
class SeriesInfo:
    """What one series means to Heliox."""

    resource_label: str  # "Hostname=gpu-node-1": the label and value that identified it
    resource_id: str
    gpu: str  # the physical GPU (UUID, else index)
    instance: str  # the GPU, or its MIG instance
    weight: float  # 1 for a whole GPU; compute slices / mig_slices_per_gpu for a MIG instance
    gpu_type: str | None
    model_name: str | None
    team: str | None


def workload_labels(labels: Mapping[str, str], exporter_pod: str) -> dict[str, str] | None:
    """namespace/pod/container of the workload on the GPU, or None for an unallocated GPU."""
    for names in WORKLOAD_LABEL_SETS:
        pod = labels.get(names[1], "")
        if pod and not re.fullmatch(exporter_pod, pod):
            return dict(zip(WORKLOAD_FIELDS, (labels.get(n, "") for n in names), strict=True))
    return None


def resource_label(labels: Mapping[str, str], resource_labels: Sequence[str]) -> tuple[str, str] | None:
    """(label, value) of the first non-empty resource label, or None."""
    for name in resource_labels:
        value = labels.get(name)
        if value:
            return name, value
    return None


def describe_series(labels: Mapping[str, str], mapping: DcgmMapping) -> SeriesInfo | None:
    """The series' resource, GPU, weight and attributes; None without a resource label."""
    found = resource_label(labels, mapping.resource_labels)
    if found is None:
        return None
    name, value = found
    gpu = next((labels[n] for n in mapping.gpu_labels if labels.get(n)), "")
    instance = labels.get("GPU_I_ID", "")
    weight = 1.0
    if instance:
        slices = _MIG_SLICES.match(labels.get("GPU_I_PROFILE", ""))
        weight = min(1.0, int(slices.group(1)) / mapping.mig_slices_per_gpu) if slices else 1.0
    workload = workload_labels(labels, mapping.exporter_pod)
    model = mapping.model_name.read(labels, workload) if mapping.model_name else None
    team = mapping.team.read(labels, workload) if mapping.team else None
    return SeriesInfo(
        resource_label=f"{name}={value}"[:255],
        resource_id=mapping.resource_id(value),
        gpu=gpu,
        instance=f"{gpu}/{instance}" if instance else gpu,
        weight=weight,
        gpu_type=mapping.gpu_type(labels.get("modelName")),
        model_name=model[:255] if model else None,
        team=team[:128] if team else None,
    )


# --- loading and validating the file ---------------------------------------------------------

_KEYS = {
    "metric",
    "engine_active_resources",
    "selector",
    "resource_labels",
    "resource_ids",
    "gpu_labels",
    "gpu_types",
    "workload",
    "scrape_interval_seconds",
    "min_coverage",
    "hours_per_query",
    "resources_per_query",
    "mig_slices_per_gpu",
}
_WORKLOAD_KEYS = {"exporter_pod", "model_name", "team"}


def load_mapping(path: str | Path | None) -> DcgmMapping:
    """The mapping in ``path`` (a YAML file), or the defaults when ``path`` is None or empty.
    Raises ``MappingError`` with one line naming the file and the key."""
    if path is None or not str(path).strip():
        return DcgmMapping()
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MappingError(f"{MAPPING_VAR}={path}: cannot read the file ({exc.strerror}).") from None
    except UnicodeDecodeError:
        raise MappingError(f"{MAPPING_VAR}={path}: the file is not UTF-8 text.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise MappingError(f"{MAPPING_VAR}={path}{where}: {problem}.") from None
    return parse_mapping(raw or {}, str(path))


def parse_mapping(raw: Any, source: str = "mapping") -> DcgmMapping:
    """Validate a parsed mapping document (see ``load_mapping``)."""

    def fail(key: str, message: str) -> MappingError:
        return MappingError(f"{MAPPING_VAR}={source}: {key}: {message}")

    if not isinstance(raw, dict):
        raise MappingError(f"{MAPPING_VAR}={source}: expected a mapping of keys at the top level.")
    unknown = sorted(set(map(str, raw)) - _KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown key; allowed: {', '.join(sorted(_KEYS))}.")
    d = DcgmMapping()
    metric = raw.get("metric", d.metric)
    if metric not in METRIC_SCALE:
        raise fail("metric", f"{metric!r} is not supported; use {GPU_UTIL} or {ENGINE_ACTIVE}.")
    selector = str(raw.get("selector") or "").strip()
    if selector.startswith("{") and selector.endswith("}"):
        selector = selector[1:-1]
    if not _SELECTOR.fullmatch(selector):
        raise fail(
            "selector", 'expected PromQL label matchers such as job="dcgm-exporter", cluster=~"prod.*".'
        )
    workload = raw.get("workload") or {}
    if not isinstance(workload, dict) or set(map(str, workload)) - _WORKLOAD_KEYS:
        raise fail("workload", f"expected a mapping with keys {', '.join(sorted(_WORKLOAD_KEYS))}.")
    exporter_pod = str(workload.get("exporter_pod", d.exporter_pod))
    _regex(exporter_pod, fail, "workload.exporter_pod")
    return DcgmMapping(
        metric=metric,
        engine_active_resources=frozenset(
            _strings(raw.get("engine_active_resources"), fail, "engine_active_resources")
        ),
        selector=selector.strip().rstrip(",").strip(),
        resource_labels=_labels(raw.get("resource_labels"), d.resource_labels, fail, "resource_labels"),
        resource_ids=_string_map(raw.get("resource_ids"), fail, "resource_ids", 255),
        gpu_labels=_labels(raw.get("gpu_labels"), d.gpu_labels, fail, "gpu_labels"),
        gpu_types=_string_map(raw.get("gpu_types"), fail, "gpu_types", 32),
        exporter_pod=exporter_pod,
        model_name=_rule(workload, "model_name", d.model_name, fail),
        team=_rule(workload, "team", d.team, fail),
        scrape_interval_seconds=_number(
            raw, "scrape_interval_seconds", d.scrape_interval_seconds, 1, 3600, fail
        ),
        min_coverage=_number(raw, "min_coverage", d.min_coverage, 0.01, 1, fail),
        hours_per_query=int(_number(raw, "hours_per_query", d.hours_per_query, 1, 10_000, fail, whole=True)),
        resources_per_query=int(
            _number(raw, "resources_per_query", d.resources_per_query, 1, 1000, fail, whole=True)
        ),
        mig_slices_per_gpu=int(
            _number(raw, "mig_slices_per_gpu", d.mig_slices_per_gpu, 1, 64, fail, whole=True)
        ),
    )


def _strings(value: Any, fail: Any, key: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) and str(v) for v in value):
        raise fail(key, "expected a list of non-empty strings.")
    return [str(v) for v in value]


def _labels(value: Any, default: tuple[str, ...], fail: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return default
    names = _strings(value, fail, key)
    bad = [n for n in names if not _LABEL_NAME.fullmatch(n)]
    if not names or bad:
        raise fail(
            key, f"expected a non-empty list of label names{f'; {bad[0]!r} is not one' if bad else ''}."
        )
    return tuple(names)


def _string_map(value: Any, fail: Any, key: str, max_len: int) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(key, "expected a mapping of label value: name.")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(v, (str, int)) or not str(v).strip() or len(str(v)) > max_len:
            raise fail(f"{key}.{k}", f"expected a non-empty name of at most {max_len} characters.")
        out[str(k)] = str(v).strip()
    return out


def _rule(
    workload: dict[str, Any], key: str, default: AttributeRule | None, fail: Any
) -> AttributeRule | None:
    if key not in workload:
        return default
    value = workload[key]
    if value is None:
        return None
    if isinstance(value, str):
        value = {"label": value}
    if not isinstance(value, dict) or set(value) - {"label", "pattern"} or "label" not in value:
        raise fail(f"workload.{key}", "expected {label: NAME, pattern: REGEX} (pattern optional) or null.")
    label = str(value["label"])
    if not _LABEL_NAME.fullmatch(label):
        raise fail(f"workload.{key}.label", f"{label!r} is not a label name.")
    pattern = value.get("pattern")
    if pattern is not None:
        _regex(str(pattern), fail, f"workload.{key}.pattern")
    return AttributeRule(label, None if pattern is None else str(pattern))


def _regex(pattern: str, fail: Any, key: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise fail(key, f"{pattern!r} is not a regular expression ({exc}).") from None


def _number(
    raw: dict[str, Any], key: str, default: float, lo: float, hi: float, fail: Any, whole: bool = False
) -> float:
    value = raw.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or (whole and value != int(value))
    ):
        raise fail(key, f"{value!r} is not a {'whole ' if whole else ''}number; allowed: {lo:g} to {hi:g}.")
    if not lo <= value <= hi:
        raise fail(key, f"{value:g} is out of range; allowed: {lo:g} to {hi:g}.")
    return float(value)
