"""GPU recognition from the instance type names that billing exports carry."""

from __future__ import annotations

import pytest

from heliox_orchestration.db.gpu_catalog import GPU_FAMILIES, normalize_provider, recognize_gpu
from heliox_orchestration.db.gpu_prices import GPU_PRICES


@pytest.mark.parametrize(
    ("provider", "text", "gpu_type", "gpus"),
    [
        ("aws", "USE1-BoxUsage:p5.48xlarge", "H100", 8),
        ("aws", "$98.32 per On Demand Linux p5.48xlarge Instance Hour", "H100", 8),
        ("aws", "BoxUsage:p4d.24xlarge", "A100", 8),
        ("aws", "BoxUsage:p4de.24xlarge", "A100-80GB", 8),
        ("aws", "g6e.xlarge", "L40S", 1),
        ("aws", "g6e.48xlarge", "L40S", 8),
        ("aws", "g6.12xlarge", "L4", 4),
        ("aws", "g5.xlarge", "A10G", 1),
        ("aws", "$5.672 per On Demand Linux g5.12xlarge Instance Hour", "A10G", 4),
        ("aws", "g5.48xlarge", "A10G", 8),
        ("aws", "g4dn.12xlarge", "T4", 4),
        ("aws", "g4dn.metal", "T4", 8),
        ("aws", "ml.p4d.24xlarge", "A100", 8),  # SageMaker
        ("gcp", "a3-highgpu-8g", "H100", 8),
        ("gcp", "a3-highgpu-2g", "H100", 2),
        ("gcp", "a2-highgpu-1g", "A100", 1),
        ("gcp", "a2-ultragpu-4g", "A100-80GB", 4),
        ("gcp", "g2-standard-24", "L4", 2),
        ("gcp", "g2-standard-8", "L4", 1),
        ("azure", "Standard_ND96isr_H100_v5", "H100", 8),
        ("azure", "ND96isr H100 v5", "H100", 8),  # meter name
        ("azure", '{"ServiceType": "Standard_NC48ads_A100_v4"}', "A100", 2),  # SkuPriceDetails
        ("azure", "NC24ads A100 v4 Spot", "A100", 1),
        ("azure", "Standard_NC64as_T4_v3", "T4", 4),
        ("azure", "Standard_ND96asr_v4", "A100", 8),
    ],
)
def test_recognizes_gpu_instance_types(provider: str, text: str, gpu_type: str, gpus: int) -> None:
    match = recognize_gpu(provider, text)
    assert match is not None
    assert (match.gpu_type, match.gpu_count) == (gpu_type, gpus)


@pytest.mark.parametrize(
    ("provider", "text"),
    [
        ("aws", "$0.0416 per On Demand Linux t3.medium Instance Hour"),
        ("aws", "BoxUsage:m5.xlarge"),
        ("aws", "$0.023 per GB - first 50 TB / month of storage used"),
        ("gcp", "n1-standard-8"),
        ("azure", "Standard_D4s_v3"),
        ("azure", "g5.xlarge"),  # an AWS name on an Azure bill is not a GPU
        ("oci", "BM.GPU.H100.8"),  # not catalogued (yet)
        ("aws", ""),
    ],
)
def test_other_instances_and_services_are_not_gpus(provider: str, text: str) -> None:
    assert recognize_gpu(provider, text) is None


def test_every_demo_price_row_is_recognized_with_the_same_gpu_type_name() -> None:
    for price in GPU_PRICES:
        match = recognize_gpu(price.provider, price.instance_family)
        assert match is not None, price
        assert match.gpu_type == price.gpu_type, price


def test_catalog_rows_are_unique_and_sane() -> None:
    keys = [(f.provider, f.family.lower()) for f in GPU_FAMILIES]
    assert len(keys) == len(set(keys))
    assert all(f.gpus >= 1 and all(n >= 1 for n in f.gpus_by_size.values()) for f in GPU_FAMILIES)


@pytest.mark.parametrize(
    ("name", "short"),
    [
        ("AWS", "aws"),
        ("Amazon Web Services", "aws"),
        ("Microsoft", "azure"),
        ("Google Cloud", "gcp"),
        ("Oracle", "oci"),
        ("  CoreWeave ", "coreweave"),
    ],
)
def test_normalize_provider(name: str, short: str) -> None:
    assert normalize_provider(name) == short


def test_docs_list_every_catalogued_family() -> None:
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[1] / "docs" / "importing.md").read_text()
    rows = {f"| {f.provider} | `{f.family}` | {f.gpu_type} | {f.gpus} |" for f in GPU_FAMILIES}
    assert not {row for row in rows if row not in docs}, "docs/importing.md's catalog table is stale"
