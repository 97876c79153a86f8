"""Reference on-demand GPU prices for the demo fleet, kept as data so they are easy to change.

AWS rows: on-demand Linux prices in us-east-1 as published by AWS and collected ("Q1 2026") in
the open-source gpuaudit project's rule tables (see docs/demo-data.md); per GPU-hour is the
instance price divided by its GPU count. GCP and Azure rows are the same order of magnitude,
taken from their public list prices for the comparable machine families (a3/a2/g2, ND H100 v5 /
NC A100 v4 / NV); they may be stale and only serve to make demo numbers realistic.
Monthly cost convention everywhere in Heliox: hourly x 730.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple


class GpuPrice(NamedTuple):
    provider: str
    gpu_type: str
    instance_family: str
    usd_per_gpu_hour: Decimal
    regions: tuple[str, ...]


GPU_PRICES: tuple[GpuPrice, ...] = (
    GpuPrice("aws", "H100", "p5.48xlarge", Decimal("12.29"), ("us-east-1", "us-west-2")),
    GpuPrice("aws", "A100", "p4d.24xlarge", Decimal("4.10"), ("us-east-1", "us-west-2")),
    GpuPrice("aws", "A100-80GB", "p4de.24xlarge", Decimal("5.12"), ("us-east-1",)),
    GpuPrice("aws", "L40S", "g6e.xlarge", Decimal("1.86"), ("us-east-1", "us-west-2")),
    GpuPrice("aws", "A10G", "g5.xlarge", Decimal("1.006"), ("us-east-1", "eu-west-1")),
    GpuPrice("aws", "L4", "g6.xlarge", Decimal("0.8048"), ("us-east-1",)),
    GpuPrice("aws", "T4", "g4dn.xlarge", Decimal("0.526"), ("us-east-1", "eu-west-1")),
    GpuPrice("gcp", "H100", "a3-highgpu-8g", Decimal("11.06"), ("us-central1", "europe-west4")),
    GpuPrice("gcp", "A100", "a2-highgpu-1g", Decimal("3.67"), ("us-central1",)),
    GpuPrice("gcp", "L4", "g2-standard-4", Decimal("0.71"), ("us-central1", "europe-west4")),
    GpuPrice("azure", "H100", "ND96isr_H100_v5", Decimal("12.29"), ("eastus", "westeurope")),
    GpuPrice("azure", "A100", "NC24ads_A100_v4", Decimal("3.67"), ("eastus",)),
    GpuPrice("azure", "T4", "NC4as_T4_v3", Decimal("0.526"), ("eastus",)),
)

PROVIDER_LABELS = {"aws": "AWS", "gcp": "GCP", "azure": "Azure", "oci": "OCI"}
