"""Small helpers shared by the benchmark driver and its worker processes (standard library only,
so that the naive worker does not pay for importing Dagster or Heliox)."""

from __future__ import annotations

import json
import resource
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (``VmHWM``), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def write_result(path: str, result: dict[str, Any]) -> None:
    """A worker's answer: its measurements plus its own peak RSS, as JSON in ``path``."""
    Path(path).write_text(json.dumps({**result, "peak_rss_mb": peak_rss_mb()}, default=str))


def worker_args() -> tuple[dict[str, Any], str]:
    """``python -m benchmarks.<worker> PARAMS_JSON RESULT_PATH``."""
    if len(sys.argv) != 3:
        raise SystemExit(f"usage: python -m {sys.argv[0]} PARAMS_JSON RESULT_PATH")
    return json.loads(sys.argv[1]), sys.argv[2]
