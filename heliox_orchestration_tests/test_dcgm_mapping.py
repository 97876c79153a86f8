"""The DCGM label mapping, the aggregation rules on hand-made series, and the configuration of
the Prometheus source: pure functions, no server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from heliox_orchestration.db.gpu_catalog import GPU_FAMILIES
from heliox_orchestration.ingest.dcgm_mapping import (
    ENGINE_ACTIVE,
    GPU_TYPE_RULES,
    GPU_UTIL,
    DcgmMapping,
    MappingError,
    describe_series,
    load_mapping,
    parse_mapping,
    workload_labels,
)
from heliox_orchestration.ingest.prometheus import PrometheusClient, PrometheusConfigError, Series
from heliox_orchestration.ingest.telemetry import (
    QueryBatch,
    aggregate_hours,
    hour_chunks,
    hourly_query,
    promql_string,
    regex_escape,
)
from heliox_orchestration.ingest.utilization import IngestReport
from heliox_orchestration.secrets import mask_secret, redact_secrets
from heliox_orchestration.settings import SettingsError, load_settings
from heliox_orchestration_tests.crafted import utc

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("model", "gpu_type"),
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA A100-SXM4-40GB", "A100"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA L40S", "L40S"),
        ("Tesla T4", "T4"),
        ("NVIDIA A10G", "A10G"),
        ("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada Generation"),
    ],
)
def test_model_names_map_to_the_gpu_types_of_the_catalog(model: str, gpu_type: str) -> None:
    assert DcgmMapping().gpu_type(model) == gpu_type
    assert DcgmMapping(gpu_types={model: "Custom"}).gpu_type(model) == "Custom"


def test_every_built_in_gpu_type_is_a_catalog_name() -> None:
    catalog = {f.gpu_type for f in GPU_FAMILIES} | {"A100-80GB"}
    assert {gpu_type for _, gpu_type in GPU_TYPE_RULES} <= catalog


def test_workload_comes_from_the_pod_not_from_the_exporter() -> None:
    exporter = {
        "namespace": "gpu-operator",
        "pod": "nvidia-dcgm-exporter-x7k2p",
        "container": "nvidia-dcgm-exporter",
    }
    exported = {"exported_namespace": "team-a", "exported_pod": "whisper-large-5f7d9c8b6d-q2w4z"}
    assert workload_labels({**exporter, **exported}, DcgmMapping().exporter_pod) == {
        "namespace": "team-a",
        "pod": "whisper-large-5f7d9c8b6d-q2w4z",
        "container": "",
    }
    assert workload_labels(exporter, DcgmMapping().exporter_pod) is None  # an unallocated GPU
    labels = {
        "Hostname": "n1",
        "UUID": "GPU-1",
        "namespace": "ml",
        "pod": "trainer-0",
        "modelName": "NVIDIA L4",
    }
    info = describe_series(labels, DcgmMapping())
    assert info is not None and (info.model_name, info.team) == ("trainer-0", "ml")  # no suffix to strip
    for pod, model in [
        ("llama-70b-serve-6d5f8b7c9d-x2k4p", "llama-70b-serve"),  # Deployment
        ("bert-finetune-z9x8w", "bert-finetune"),  # Job
    ]:
        info = describe_series({**labels, "pod": pod}, DcgmMapping())
        assert info is not None and info.model_name == model


def test_attributes_from_exported_pod_labels_and_patterns() -> None:
    m = parse_mapping(
        {
            "workload": {
                "model_name": {"label": "label_app_kubernetes_io_name"},
                "team": {"label": "namespace", "pattern": "team-(?P<value>.+)"},
            }
        }
    )
    labels = {"hostname": "n1", "gpu": "3", "namespace": "team-vision", "pod": "p-abcde"}
    info = describe_series({**labels, "label_app_kubernetes_io_name": "yolo"}, m)
    assert info is not None and (info.model_name, info.team, info.instance) == ("yolo", "vision", "3")
    assert info.resource_label == "hostname=n1" and info.resource_id == "n1"


def test_resource_identity_is_the_label_and_the_map_only() -> None:
    m = DcgmMapping(resource_ids={"node-a": "i-0aaa"})
    first = describe_series(
        {"Hostname": "node-a", "UUID": "GPU-1", "pod": "x-abcde", "modelName": "Tesla T4"}, m
    )
    later = describe_series({"Hostname": "node-a", "UUID": "GPU-2", "modelName": "NVIDIA H100 80GB HBM3"}, m)
    assert first is not None and later is not None and first.resource_id == later.resource_id == "i-0aaa"
    assert describe_series({"instance": "10.0.0.1:9400", "gpu": "0"}, m).resource_id == "10.0.0.1:9400"  # type: ignore[union-attr]
    assert describe_series({"gpu": "0"}, m) is None
    mig = describe_series({"Hostname": "n", "UUID": "GPU-9", "GPU_I_PROFILE": "3g.40gb", "GPU_I_ID": "2"}, m)
    assert mig is not None and (mig.gpu, mig.instance, mig.weight) == ("GPU-9", "GPU-9/2", 3 / 7)


def test_engine_active_where_configured() -> None:
    m = DcgmMapping(engine_active_resources=frozenset({"mig-1", "i-0bbb"}), resource_ids={"node-b": "i-0bbb"})
    assert [m.metric_for(v) for v in ("mig-1", "node-b", "node-c")] == [
        ENGINE_ACTIVE,
        ENGINE_ACTIVE,
        GPU_UTIL,
    ]
    assert DcgmMapping(metric=ENGINE_ACTIVE).metric_for("node-c") == ENGINE_ACTIVE


def series(labels: dict[str, str], hour_end_s: int, total: float, count: int) -> list[Series]:
    t = (hour_end_s - 0.001, "")
    return [
        Series({**labels, "heliox_aggregate": "sum"}, [(t[0], repr(total))]),
        Series({**labels, "heliox_aggregate": "count"}, [(t[0], str(count))]),
    ]


def test_the_weighting_rule_on_hand_made_series() -> None:
    end = int(utc(2026, 1, 1, 1).timestamp())
    host = {"Hostname": "n1", "modelName": "NVIDIA L4"}
    results = [
        (
            GPU_UTIL,
            [
                *series({**host, "UUID": "GPU-a", "pod": "old-x2k4p"}, end, 40 * 80, 40),  # moved mid-hour:
                *series({**host, "UUID": "GPU-a", "pod": "new-x2k4p"}, end, 20 * 20, 20),  # one GPU
                *series({**host, "UUID": "GPU-b"}, end, 30 * 10.0, 30),  # half the hour: counts half
                *series({**host, "UUID": "GPU-c"}, end, 29 * 100.0, 29),  # under half: not counted
                *series({**host, "UUID": "GPU-d"}, end, 60 * 150.0, 60),  # not a percentage
                *series({"Hostname": "n2", "UUID": "GPU-e"}, end, 0.0, 60),  # an idle GPU is 0, counted
            ],
        ),
        (ENGINE_ACTIVE, series({"Hostname": "n3", "UUID": "GPU-f"}, end, 60 * 0.25, 60)),
    ]
    hours, stats = aggregate_hours(results, DcgmMapping())
    got = {r["resource_id"]: r for r in hours.to_dict("records")}
    # n1: GPU-a mean (3200+400)/60 = 60 over the whole hour, GPU-b 10 over half of it.
    assert got["n1"]["utilization_pct"] == round((60 * 1 + 10 * 0.5) / 1.5, 2)
    assert (got["n1"]["gpus"], got["n1"]["coverage"]) == (2, 0.75)
    assert got["n1"]["model_name"] == "old"  # the pod with the most samples
    assert got["n2"]["utilization_pct"] == 0 and got["n3"]["utilization_pct"] == 25
    assert got["n3"]["metric"] == ENGINE_ACTIVE and got["n1"]["usage_hour"] == utc(2026, 1, 1, 0)
    assert (stats.gpu_hours, stats.gpu_hours_low_coverage, stats.gpu_hours_invalid) == (4, 1, 1)


def test_queries_escape_label_values_exactly() -> None:
    value = 'a.b|c"d\\e(f)*'
    assert re.fullmatch(regex_escape(value), value) and not re.fullmatch(regex_escape(value), "aXb|c")
    assert promql_string('x"y\\z') == '"x\\"y\\\\z"'
    batch = QueryBatch(GPU_UTIL, "instance", ("Hostname", "hostname"), ("10.0.0.1:9400", "10.0.0.2:9400"))
    selector = batch.selector(DcgmMapping(selector='job="dcgm"'))
    assert selector == (
        'DCGM_FI_DEV_GPU_UTIL{job="dcgm", Hostname="", hostname="", '
        'instance=~"10\\\\.0\\\\.0\\\\.1:9400|10\\\\.0\\\\.0\\\\.2:9400"}'
    )
    assert "[3599999ms]" in hourly_query(selector, True) and "[1h]" in hourly_query(selector, False)
    assert hour_chunks(utc(2026, 1, 1), utc(2026, 1, 2, 1), 10) == [
        (utc(2026, 1, 1, 0), utc(2026, 1, 1, 10)),
        (utc(2026, 1, 1, 10), utc(2026, 1, 1, 20)),
        (utc(2026, 1, 1, 20), utc(2026, 1, 2, 1)),
    ]


def test_the_documented_example_mapping_is_valid() -> None:
    text = (ROOT / "docs" / "importing.md").read_text()
    example = re.search(r"```yaml\n(# HELIOX_DCGM_MAPPING.*?)```", text, re.S)
    assert example, "docs/importing.md lacks the example mapping"
    m = parse_mapping(yaml.safe_load(example.group(1)), "docs")
    assert m.resource_ids and m.engine_active_resources and m.selector


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metrics: x\n", "metrics: unknown key; allowed: "),
        ("metric: DCGM_FI_DEV_POWER_USAGE\n", "metric: 'DCGM_FI_DEV_POWER_USAGE' is not supported"),
        ("selector: 'job=dcgm'\n", "selector: expected PromQL label matchers"),
        ("resource_labels: [Host-name]\n", "resource_labels: expected a non-empty list of label names"),
        ("resource_ids: {a: ''}\n", "resource_ids.a: expected a non-empty name"),
        (
            "gpu_types: {x: a-very-long-gpu-type-name-over-32-chars}\n",
            "gpu_types.x: expected a non-empty name",
        ),
        (
            "workload: {team: {label: ns, pattern: '('}}\n",
            "workload.team.pattern: '(' is not a regular expression",
        ),
        ("workload: {owner: x}\n", "workload: expected a mapping with keys"),
        ("min_coverage: 0\n", "min_coverage: 0 is out of range; allowed: 0.01 to 1."),
        ("hours_per_query: 2.5\n", "hours_per_query: 2.5 is not a whole number"),
        ("scrape_interval_seconds: .nan\n", "scrape_interval_seconds: nan is not a number"),
        ("resource_ids: [a, b\n", "line 2: expected ',' or ']'"),
        ("- a list\n", "expected a mapping of keys at the top level"),
    ],
)
def test_a_bad_mapping_is_one_line_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "dcgm.yaml"
    path.write_text(text)
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    assert str(caught.value).startswith(f"HELIOX_DCGM_MAPPING={path}")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_no_file_means_the_defaults(tmp_path: Path) -> None:
    assert load_mapping(None) == load_mapping("") == DcgmMapping()
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    assert load_mapping(tmp_path / "empty.yaml") == DcgmMapping()
    with pytest.raises(MappingError, match="cannot read the file"):
        load_mapping(tmp_path / "missing.yaml")


def test_prometheus_settings_are_validated() -> None:
    assert load_settings({"PROMETHEUS_URL": "http://prom:9090/"}).prometheus_url == "http://prom:9090"
    for url, message in [
        ("prom:9090", "must start with http:// or https://"),
        ("http://user:hunter2@prom:9090", "must not contain credentials"),
    ]:
        with pytest.raises(SettingsError, match=message) as caught:
            load_settings({"PROMETHEUS_URL": url})
        assert "hunter2" not in str(caught.value)
    for kwargs, message in [
        ({"bearer_token": "t", "username": "u", "password": "p"}, "not both"),
        ({"username": "u"}, "PROMETHEUS_PASSWORD is not set"),
        ({"password": "p"}, "PROMETHEUS_USERNAME is not set"),
    ]:
        with pytest.raises(PrometheusConfigError, match=message):
            PrometheusClient("http://prom:9090", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(PrometheusConfigError, match="PROMETHEUS_URL is not set"):
        PrometheusClient.from_env({})
    token = "eyJhbGciOiJIUzI1NiJ9.secret-part-wxyz"
    assert (
        PrometheusClient("https://prom", bearer_token=token).describe()
        == "https://prom (bearer token ****...wxyz)"
    )


def test_secrets_are_masked_and_redacted() -> None:
    assert mask_secret("short") == "****" and mask_secret(None) == "(not set)"
    assert mask_secret("a-long-secret-token-wxyz", tail=False) == "****"
    assert redact_secrets("user pw hunter2 and aHVudGVyMg==", ["hunter2", "aHVudGVyMg==", None]) == (
        "user pw **** and ****"
    )


def test_more_samples_than_the_scrape_interval_allows_is_a_warning() -> None:
    report = IngestReport(utc(2026, 1, 1), utc(2026, 1, 2), expected_samples_per_hour=60)
    assert report.warnings() == []
    report.stats.max_samples_per_gpu_hour = 240  # scraped every 15 s, configured 60 s
    [warning] = report.warnings()
    assert "up to 240 samples of one GPU in an hour, 60 expected" in warning
