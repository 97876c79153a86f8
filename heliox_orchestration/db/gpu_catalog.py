"""Which cloud instance types carry GPUs: instance family -> (GPU type, GPUs per instance), as data.

GPU type names are the ones ``gpu_prices`` uses (H100, A100, A100-80GB, L40S, A10G, L4, T4), so
imported and demo rows group together; GPUs without a demo price use NVIDIA's name (V100, H200).
To support another family, add one ``GpuFamily`` row: ``gpus`` is the GPU count of its sizes,
``gpus_by_size`` lists the sizes whose count differs. Family and size are spelled as
``parse_instance_types`` splits an instance type name:

* AWS ``g5.12xlarge`` -> family ``g5``, size ``12xlarge`` (also inside ``BoxUsage:g5.12xlarge``,
  ``ml.g5.12xlarge``);
* GCP ``a3-highgpu-8g`` -> family ``a3-highgpu``, size ``8g``; ``g2-standard-24`` -> ``g2-standard``,
  ``24``;
* Azure ``Standard_NC24ads_A100_v4`` or the meter name ``NC24ads A100 v4`` -> family
  ``nc_a100_v4``, size ``24ads``; ``Standard_ND96asr_v4`` -> ``nd_v4``, ``96asr``.

Matching is case-insensitive and per provider, so an AWS-looking name on an Azure bill is not a GPU.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GpuFamily:
    provider: str  # "aws" | "gcp" | "azure", as normalize_provider returns them
    family: str
    gpu_type: str
    gpus: int  # GPUs per instance of every size not in gpus_by_size
    gpus_by_size: Mapping[str, int] = field(default_factory=dict)


GPU_FAMILIES: tuple[GpuFamily, ...] = (
    # AWS: https://aws.amazon.com/ec2/instance-types/ (accelerated computing)
    GpuFamily("aws", "p5", "H100", 8, {"4xlarge": 1}),
    GpuFamily("aws", "p5e", "H200", 8),
    GpuFamily("aws", "p5en", "H200", 8),
    GpuFamily("aws", "p4d", "A100", 8),
    GpuFamily("aws", "p4de", "A100-80GB", 8),
    GpuFamily("aws", "p3", "V100", 1, {"8xlarge": 4, "16xlarge": 8}),
    GpuFamily("aws", "p3dn", "V100", 8),
    GpuFamily("aws", "g6e", "L40S", 1, {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8}),
    GpuFamily("aws", "g6", "L4", 1, {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8}),
    GpuFamily("aws", "g5", "A10G", 1, {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8}),
    GpuFamily("aws", "g4dn", "T4", 1, {"12xlarge": 4, "metal": 8}),
    # GCP: https://cloud.google.com/compute/docs/gpus (the size suffix is the GPU count)
    GpuFamily("gcp", "a3-highgpu", "H100", 8, {"1g": 1, "2g": 2, "4g": 4}),
    GpuFamily("gcp", "a3-megagpu", "H100", 8),
    GpuFamily("gcp", "a3-edgegpu", "H100", 8),
    GpuFamily("gcp", "a3-ultragpu", "H200", 8),
    GpuFamily("gcp", "a2-highgpu", "A100", 1, {"2g": 2, "4g": 4, "8g": 8}),
    GpuFamily("gcp", "a2-megagpu", "A100", 16),
    GpuFamily("gcp", "a2-ultragpu", "A100-80GB", 1, {"2g": 2, "4g": 4, "8g": 8}),
    GpuFamily("gcp", "g2-standard", "L4", 1, {"24": 2, "48": 4, "96": 8}),
    # Azure: https://learn.microsoft.com/azure/virtual-machines/sizes (GPU accelerated)
    GpuFamily("azure", "nd_h100_v5", "H100", 8),
    GpuFamily("azure", "nc_h100_v5", "H100", 1, {"80adis": 2}),
    GpuFamily("azure", "nd_h200_v5", "H200", 8),
    GpuFamily("azure", "nd_v4", "A100", 8),  # ND96asr_v4
    GpuFamily("azure", "nd_a100_v4", "A100-80GB", 8),  # ND96amsr_A100_v4
    GpuFamily("azure", "nc_a100_v4", "A100", 1, {"48ads": 2, "96ads": 4}),
    GpuFamily("azure", "nc_t4_v3", "T4", 1, {"64as": 4}),
    GpuFamily("azure", "nc_v3", "V100", 1, {"12s": 2, "24s": 4, "24rs": 4}),
)


@dataclass(frozen=True)
class GpuMatch:
    instance_type: str
    gpu_type: str
    gpu_count: int


# Each finds (family, size) candidates in lower-cased free text such as a usage type or a SKU
# description; the catalog decides which candidates are GPUs.
_PATTERNS: dict[str, re.Pattern[str]] = {
    "aws": re.compile(
        r"(?<![a-z0-9])([a-z]+\d[a-z0-9-]*)\.((?:\d*x)?large|medium|small|micro|nano|metal[a-z0-9-]*)"
        r"(?![a-z0-9])"
    ),
    "gcp": re.compile(r"(?<![a-z0-9-])([a-z]\d[a-z]?-[a-z]+)-(\d+g?)(?![a-z0-9-])"),
    "azure": re.compile(
        r"(?<![a-z0-9])(?:standard_)?(n[a-z]?)(\d+)([a-z]*)[_ ]((?:[a-z]+\d+[a-z]*[_ ])?v\d+)(?![a-z0-9])"
    ),
}

_BY_FAMILY: dict[tuple[str, str], GpuFamily] = {(f.provider, f.family.lower()): f for f in GPU_FAMILIES}


def parse_instance_types(provider: str, text: str) -> Iterator[tuple[str, str, str]]:
    """(instance type as written, family, size) of every instance-type-looking name in ``text``."""
    pattern = _PATTERNS.get(provider)
    if pattern is None:
        return
    for m in pattern.finditer(text.lower()):
        if provider == "azure":
            series, number, features, suffix = m.groups()
            yield m.group(0), f"{series}_{suffix.replace(' ', '_')}", f"{number}{features}"
        else:
            yield m.group(0), m.group(1), m.group(2)


def recognize_gpu(provider: str, text: str) -> GpuMatch | None:
    """The first catalogued GPU instance type named in ``text``, or None."""
    for instance_type, family, size in parse_instance_types(provider, text):
        entry = _BY_FAMILY.get((provider, family))
        if entry is not None:
            return GpuMatch(instance_type, entry.gpu_type, entry.gpus_by_size.get(size, entry.gpus))
    return None


_PROVIDER_ALIASES = {
    "aws": "aws",
    "amazon web services": "aws",
    "amazon web services, inc.": "aws",
    "amazon": "aws",
    "microsoft": "azure",
    "azure": "azure",
    "microsoft azure": "azure",
    "google cloud": "gcp",
    "google cloud platform": "gcp",
    "google": "gcp",
    "gcp": "gcp",
    "oracle": "oci",
    "oracle cloud infrastructure": "oci",
    "oci": "oci",
}


def normalize_provider(name: str) -> str:
    """FOCUS ``ProviderName`` ("AWS", "Microsoft", "Google Cloud") -> the short names Heliox
    stores ("aws", "azure", "gcp", "oci"); other providers keep their name, lower-cased."""
    key = " ".join(name.split()).lower()
    return _PROVIDER_ALIASES.get(key, key[:32])
